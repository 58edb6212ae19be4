"""Against the authors' artefacts (shared/data/odesdegap; skipped with a reason when absent): their checkpoints load,
their residuals and W2² tables come out as the digest recomputed them (seed001 §5.3), and our samplers reproduce
their ODE–SDE gap at small N."""

import numpy as np
import pytest
import torch

from pysens.fokker_planck import (
    AUTHORS_WEIGHTS,
    Grid,
    authors_checkpoint_path,
    load_authors_checkpoint,
    ode_sde_gap,
    residual_functional,
    sample_toy,
    w2_grid,
)

# seed001 §5.3, recomputed from the authors' files: R̃ of the blob checkpoints under their uniform protocol, and the
# blob W2² table on the 3.5 grid (rows w_R = 0, 0.1, 1, 10; columns ODE–SDE, ODE–truth, SDE–truth).
BLOB_RESIDUAL = {0.0: 12.48, 0.1: 0.00991, 1.0: 0.00352, 10.0: 0.00118}
BLOB_W2_TABLE = {
    0.0: (0.01160, 0.01097, 0.00218),
    0.1: (0.00311, 0.00604, 0.00294),
    1.0: (0.00290, 0.00528, 0.00427),
    10.0: (0.00221, 0.01722, 0.01599),
}


def test_checkpoints_load_and_wrong_shapes_are_refused(authors_dir, tmp_path):
    net = load_authors_checkpoint(authors_checkpoint_path("blob", 0.0, authors_dir), dtype=torch.float64)
    assert (net.dim, net.hidden, net.depth, net.beta) == (2, 80, 3, 100.0)
    with np.load(authors_checkpoint_path("blob", 0.0, authors_dir)) as archive:
        arrays = {k: archive[k] for k in archive.files}
    # φ by hand from the arrays: [t, x1, x2] → Softplus(100) layers → scalar
    x = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([0.01, 4.0], dtype=torch.float64)
    h = torch.cat([t[:, None], x], 1).numpy()
    for name in ("input", "hidden1", "hidden2"):
        z = h @ arrays[f"{name}.weight"].T.astype(np.float64) + arrays[f"{name}.bias"]
        h = np.logaddexp(0.0, 100 * z) / 100
    phi = h @ arrays["output.weight"].T.astype(np.float64) + arrays["output.bias"]
    np.testing.assert_allclose(net.potential(x, t).detach().numpy(), phi[:, 0], rtol=1e-10)

    bad = dict(arrays)
    bad["hidden1.weight"] = np.zeros((80, 79), np.float32)
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match=r"hidden1.weight has shape \(80, 79\), expected \(80, 80\)"):
        load_authors_checkpoint(tmp_path / "bad.npz")
    del bad["output.bias"]
    np.savez(tmp_path / "missing.npz", **bad)
    with pytest.raises(ValueError, match="missing output.bias"):
        load_authors_checkpoint(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        load_authors_checkpoint(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="weight must be one of"):
        authors_checkpoint_path("blob", 0.5, authors_dir)


@pytest.mark.parametrize("weight", AUTHORS_WEIGHTS)
def test_blob_residual_under_the_uniform_protocol(authors_dir, weight):
    # t ~ U[1e-5, 10], x ~ U[−3.5, 3.5]², 200k points, float32 as the authors trained (the float64 values agree to
    # ~1 %): within 10 % of the digest's value, and the standard error resolves that
    net = load_authors_checkpoint(authors_checkpoint_path("blob", weight, authors_dir))
    rf = residual_functional(
        net.potential,
        net.process,
        n_points=200_000,
        design="uniform",
        dtype=torch.float32,
        generator=torch.Generator().manual_seed(0),
    )
    assert rf.n_points == 200_000 and rf.raw_se < 0.03 * rf.raw
    assert rf.raw == pytest.approx(BLOB_RESIDUAL[weight], rel=0.10)


def test_precomputed_blob_histograms_give_the_digest_table(authors_dir):
    # Each exact OT solve on the 64² grid takes ~3 s on one core, so the unit test checks the ODE–SDE column and the
    # w_R = 0 row (6 of the 12 blob entries) to 1e-4; benchmarks/ode_sde_gap.py recomputes all 36 (three datasets,
    # also on the 4.0 grid) against the digest.
    grid = Grid(3.5, 64)
    truth = np.load(authors_dir / "weights_truth_64_3000000_blob.npy")
    for weight, expected in BLOB_W2_TABLE.items():
        ode = np.load(authors_dir / f"weights_ode_64_3000000_100000_800_blob_{weight}.npy")
        sde = np.load(authors_dir / f"weights_sde_64_3000000_100000_800_blob_{weight}.npy")
        assert w2_grid(ode, sde, grid) == pytest.approx(expected[0], abs=1e-4), f"ODE–SDE, w_R = {weight}"
        if weight == 0.0:
            got = (w2_grid(ode, truth, grid), w2_grid(sde, truth, grid))
            np.testing.assert_allclose(got, expected[1:], atol=1e-4, err_msg="w_R = 0, ODE–truth and SDE–truth")


def test_our_sampler_reproduces_the_published_gap_at_small_n(authors_dir):
    # Smaller-N version of the ≥200k check in benchmarks/ode_sde_gap.py (--gap-samples 200000). At N = 3000 the
    # grid W2² is dominated by its finite-N bias, so the stated tolerance is wide: our W2²(ODE, SDE) must lie within
    # 3 truth–truth floors (the floor at this N, ≈ 0.02) of the published 0.0116 for w_R = 0, and the ODE's and SDE's
    # first two moments must match the authors' 3M-sample histograms (means to 0.06, covariances to 10 % + 0.1).
    net = load_authors_checkpoint(authors_checkpoint_path("blob", 0.0, authors_dir))
    result = ode_sde_gap(
        net, net.process, 3000, seed=1, data_sampler=lambda n, g: sample_toy("blob", n, g), sliced_projections=50
    )
    assert abs(result.grid["ode_sde"] - BLOB_W2_TABLE[0.0][0]) < 3 * result.grid["floor"]
    points = Grid(3.5, 64).points
    for name, x in (("ode", result.x_ode), ("sde", result.x_sde)):
        weights = np.load(authors_dir / f"weights_{name}_64_3000000_100000_800_blob_0.0.npy")
        mean = weights @ points
        cov = (points - mean).T @ ((points - mean) * weights[:, None])
        ours = x.double().numpy()
        ours = ours[(np.abs(ours) < 3.5).all(1)]
        np.testing.assert_allclose(ours.mean(0), mean, atol=0.06, err_msg=name)
        np.testing.assert_allclose(np.cov(ours.T), cov, rtol=0.10, atol=0.1, err_msg=name)
