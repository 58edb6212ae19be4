"""The likelihood-speed suite: the peers' re-implemented pipelines are exact (their brute-force divergence is the
trace; their log-likelihoods match the closed-form mixture density at a tight tolerance), and the suite writes the
JSON its table renders from."""

import importlib.util
import json

import pytest
import torch

from pysens.bench.diffusion import gaussian_mixture
from pysens.bench.likelihood_peers import divergence_bf, kdiffusion_log_likelihood, score_sde_log_likelihood
from pysens.bench.likelihood_speed import main
from pysens.bench.tables import render
from pysens.derivatives import jacobian
from pysens.diffusion import VP

needs_torchdiffeq = pytest.mark.skipif(
    importlib.util.find_spec("torchdiffeq") is None, reason="torchdiffeq not installed (pip install torchdiffeq)"
)


def test_divergence_bf_is_the_trace():
    gmm = gaussian_mixture(3, 2, seed=1)
    x = gmm.sample_data(4, generator=torch.Generator().manual_seed(2)).requires_grad_()
    t = torch.full((4,), 0.3, dtype=torch.float64)
    with torch.enable_grad():
        div = divergence_bf(gmm(x, t), x)
    _, J = jacobian(lambda u: gmm(u, t), x.detach())
    assert (div.detach() - J.diagonal(dim1=1, dim2=2).sum(-1)).abs().max() < 1e-12


@pytest.mark.parametrize(
    "path", [pytest.param(kdiffusion_log_likelihood, marks=needs_torchdiffeq), score_sde_log_likelihood]
)
def test_peer_pipelines_match_the_closed_form_density(path):
    process = VP()
    gmm = gaussian_mixture(2, 2, seed=3, process=process)
    x = gmm.sample_data(3, generator=torch.Generator().manual_seed(4))
    t0 = process.t_eps
    r = path(
        lambda u, t: gmm(u, t),
        process,
        x,
        t0=t0,
        rtol=1e-9,
        atol=1e-9,
        terminal_log_density=lambda z: gmm.log_density(z, process.T),
    )
    assert r.retcode == "Success" and r.nf > 0
    # the solver's error at 1e-9 (measured ~1e-8 on these paths); the closed form is exact
    assert (r.log_density - gmm.log_density(x, t0)).abs().max() < 1e-6
    with pytest.raises(ValueError, match="probes"):
        path(gmm, process, x, t0=t0, rtol=1e-3, atol=1e-3, divergence="hutchinson")


def test_engines_part_writes_json_and_renders(tmp_path):
    assert main(["--out", str(tmp_path), "--parts", "engines", "--engine-batch", "4", "--runs-engines", "1"]) == 0
    data = json.loads((tmp_path / "likelihood_speed.json").read_text())
    cases = [(e["case"], e["batch"]) for e in data["engines"]]
    assert cases[:2] == [("mixture d=16", 4), ("mixture d=16 (closed form)", 4)]
    assert ("MLP d=64", 1) in cases and ("MLP d=16", 4) in cases and cases[-1] == ("MLP d=64, plain callable", 4)
    for e in data["engines"]:
        # the model's own divergence goes to "auto" exactly where the model has one (as log_likelihood passes it)
        has_own = e["case"] == "mixture d=16 (closed form)" or e["case"] in ("MLP d=16", "MLP d=64")
        assert ("analytic" in e["ms"]) == has_own
        autodiff = e["auto_chose"] in ("vjp", "grad-batched", "jvp", "loop") or e["auto_chose"].startswith("grad-b")
        assert e["auto_chose"] == "analytic" if has_own else autodiff
        assert max(e["max_abs_diff_vs_loop"].values()) <= 1e-12 * max(1.0, e["scale"])
    table = render("likelihood-speed", tmp_path)
    assert "loop / auto" in table and "| analytic |" in table
