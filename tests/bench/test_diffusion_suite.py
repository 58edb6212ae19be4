"""The diffusion benchmark suite: its peer likelihood paths are exact (what makes the comparison fair), the speed ratio
at matched error is exact on power laws, and the entry point writes the report it promises."""

import importlib
import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from pysens.bench.diffusion import (
    WORKLOADS,
    gaussian_mixture,
    main,
    matched_error_ratios,
    pareto_front,
    scipy_rk45_log_likelihood,
    time_at_error,
    torchdiffeq_log_likelihood,
)
from pysens.bench.diffusion_likelihood import augmented_field
from pysens.bench.matched_error import TimedScore
from pysens.derivatives.autotune import clear_engine_cache
from pysens.diffusion import VP
from pysens.diffusion.divergence import hutchinson_probes
from pysens.diffusion.likelihood import log_likelihood

# the package exports a function named like the module
autotune_module = importlib.import_module("pysens.derivatives.autotune")
HAVE_TORCHDIFFEQ = importlib.util.find_spec("torchdiffeq") is not None
needs_torchdiffeq = pytest.mark.skipif(
    not HAVE_TORCHDIFFEQ, reason="torchdiffeq not installed (pip install torchdiffeq)"
)
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None

TIGHT = 1e-10


@pytest.fixture(scope="module")
def mixture():
    """A 2-D, 3-component exact mixture, 6 points, and their closed-form log p_t0."""
    torch.set_num_threads(1)
    process = VP()
    gmm = gaussian_mixture(2, 3, seed=1, process=process)
    x = gmm.sample_data(6, generator=torch.Generator().manual_seed(2))
    t0 = process.t_eps
    return gmm, process, x, t0, gmm.log_density(x, t0)


def _peer(fn, gmm, process, x, t0, probes=None):
    return fn(
        gmm,
        process,
        x,
        t0=t0,
        rtol=TIGHT,
        atol=TIGHT,
        probes=probes,
        terminal_log_density=lambda z: gmm.log_density(z, process.T),
    )


@needs_torchdiffeq
def test_torchdiffeq_path_matches_the_exact_log_density(mixture):
    gmm, process, x, t0, exact = mixture
    r = _peer(torchdiffeq_log_likelihood, gmm, process, x, t0)
    assert r.retcode == "Success" and r.nf > 0
    assert float((r.log_density - exact).abs().max()) < 1e-6


def test_scipy_round_trip_path_matches_the_exact_log_density(mixture):
    gmm, process, x, t0, exact = mixture
    r = _peer(scipy_rk45_log_likelihood, gmm, process, x, t0)
    assert r.retcode == "Success" and r.nf > 0
    assert float((r.log_density - exact).abs().max()) < 1e-6


def test_peers_integrate_the_same_hutchinson_estimate_as_pysens(mixture):
    # the same probes on every path: at tight tolerance the three agree although the estimate is not exact
    gmm, process, x, t0, exact = mixture
    seed = 5
    probes = hutchinson_probes(1, x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    ours = log_likelihood(
        gmm,
        process,
        x,
        t0=t0,
        rtol=TIGHT,
        atol=TIGHT,
        divergence="hutchinson",
        generator=torch.Generator().manual_seed(seed),
        terminal_log_density=lambda z: gmm.log_density(z, process.T),
    ).log_density
    assert float((ours - exact).abs().max()) > 1e-3  # an estimate, not the density
    fns = [scipy_rk45_log_likelihood] + ([torchdiffeq_log_likelihood] if HAVE_TORCHDIFFEQ else [])
    for fn in fns:
        assert float((_peer(fn, gmm, process, x, t0, probes).log_density - ours).abs().max()) < 1e-6, fn.__name__


def test_matched_rhs_field_uses_pysens_divergence_and_measures_auto_once(mixture, monkeypatch):
    # the peers' matched right-hand side must cost what pysens's does: the mixture's closed-form divergence when the
    # score has one, else "auto" measured once per score (not once per call, which made the peers ~100x slower)
    gmm, process, x, _, _ = mixture
    measured = []
    real = autotune_module.measure_engines

    def counting(*args, **kwargs):
        measured.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(autotune_module, "measure_engines", counting)
    clear_engine_cache()
    times = [torch.tensor(t, dtype=torch.float64) for t in (0.1, 0.4, 0.9)]
    field = augmented_field(gmm, process)
    for t in times:
        dx, ddelta = field(t, x)
        s, div = gmm.score_and_divergence(x, t)
        f, g2 = process.drift_coef(t).to(x.dtype), process.g2(t).to(x.dtype)
        assert torch.allclose(dx, f * x - 0.5 * g2 * s, rtol=1e-14, atol=1e-14)
        assert torch.allclose(ddelta, x.shape[1] * f - 0.5 * g2 * div, rtol=1e-14, atol=1e-14)
    assert measured == []  # the closed form: nothing to measure

    def plain(u, t):  # a user's score without a closed form
        return gmm(u, t)

    field = augmented_field(plain, process)
    for t in times:
        _, ddelta = field(t, x)
        _, div = gmm.score_and_divergence(x, t)
        # autodiff engines vs the closed form: a few ulp of the mixture's O(10) terms
        assert torch.allclose(ddelta, x.shape[1] * process.drift_coef(t) - 0.5 * process.g2(t) * div, atol=1e-10)
    assert len(measured) == 1


def test_timed_score_keeps_the_closed_form_divergence(mixture, monkeypatch):
    # the time-share solve must take the sweep's path: the closed form, one timed call per right-hand side
    gmm, process, x, t0, _ = mixture
    measured = []
    real = autotune_module.measure_engines
    monkeypatch.setattr(autotune_module, "measure_engines", lambda *a, **k: measured.append(a[0]) or real(*a, **k))
    timed = TimedScore(gmm, torch.device("cpu"))
    kwargs = dict(t0=t0, rtol=1e-6, atol=1e-6, terminal_log_density=lambda z: gmm.log_density(z, process.T))
    through = log_likelihood(timed, process, x, **kwargs)
    direct = log_likelihood(gmm, process, x, **kwargs)
    assert torch.equal(through.log_density, direct.log_density)
    assert timed.calls == through.stats.nf and timed.seconds > 0 and measured == []


def test_matched_error_interpolation_is_exact_on_power_laws():
    errors = np.geomspace(1e-1, 1e-7, 7)
    ours = 0.02 * errors**-0.2  # t = c e^-p
    same_order = 0.07 * errors**-0.2
    r = matched_error_ratios((errors, same_order), (errors, ours), n_levels=9)
    assert np.allclose(r["ratios"], 3.5, rtol=1e-12) and math.isclose(r["geomean"], 3.5, rel_tol=1e-12)
    # different orders: the ratio varies with the level as (c2/c1) e^-(p2 - p1), at levels between the samples and
    # only where both fronts reach (1e-7..3e-2)
    peer_errors = np.geomspace(3e-2, 3e-8, 5)
    steeper = 0.01 * peer_errors**-0.3
    r = matched_error_ratios((peer_errors, steeper), (errors, ours), n_levels=6)
    levels = np.array(r["levels"])
    assert math.isclose(levels[0], 1e-7, rel_tol=1e-12) and math.isclose(levels[-1], 3e-2, rel_tol=1e-12)
    assert np.allclose(r["ratios"], 0.5 * levels**-0.1, rtol=1e-12)


def test_time_at_error_uses_the_front_and_is_nan_outside_it():
    # the middle point is dominated (slower and less accurate than its neighbour): the front skips it
    errors, times = [1e-2, 5e-3, 1e-3, float("nan")], [1.0, 3.0, 2.0, 0.1]
    e, t = pareto_front(errors, times)
    assert e.tolist() == [1e-3, 1e-2] and t.tolist() == [2.0, 1.0]
    got = time_at_error(errors, times, [1e-4, 1e-3, math.sqrt(1e-5), 1e-2, 1e-1])
    assert math.isnan(got[0]) and math.isnan(got[-1])
    assert np.allclose(got[1:4], [2.0, math.sqrt(2.0), 1.0], rtol=1e-12)
    assert matched_error_ratios(([1e-1, 1e-2], [1, 2]), ([1e-4, 1e-5], [1, 2]))["geomean"] is None


@pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn not installed (the digits workloads load sklearn's digits)")
def test_entry_point_writes_the_report(tmp_path):
    # a tiny configuration of every workload (the --quick run takes about a minute)
    tiny = [
        *("--quick", "--out", str(tmp_path), "--runs", "1"),
        *("--batch", "4", "--dim", "2", "--components", "2", "--tolerances", "1e-2", "--reference-tol", "1e-4"),
        *("--image-batch", "2", "--train-steps", "2", "--base-channels", "8"),
        *("--sampling-tolerances", "1e-2", "--sampling-reference-tol", "1e-3", "--sensitivity-steps", "2"),
        *("--sde-steps", "2", "4", "--fine-steps", "8"),
    ]
    assert main(tiny, progress=lambda msg: None) == 0
    report = json.loads((tmp_path / "diffusion.json").read_text())
    assert {"benchmark", "config", "device", "versions", "peers", "workloads", "targets", "wall_time"} <= set(report)
    assert set(report["workloads"]) == set(WORKLOADS)
    lik = report["workloads"]["likelihood"]
    assert {"points", "hutchinson", "ratios", "targets", "score_share", "skipped"} <= set(lik)
    assert all(p["retcode"] == "Success" for p in lik["points"]), lik["points"]
    for name in ("sampling", "sde"):
        assert report["workloads"][name]["points"], name
    assert len(report["workloads"]["sensitivity"]["targets"]) == 2
    assert all((tmp_path / f).exists() for f in report["figures"])
