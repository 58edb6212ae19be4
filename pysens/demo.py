"""The end-to-end demo behind ``pysens demo``: fit, sample, score the likelihood, report.

``mixture`` (default, about a minute on one CPU core): a 2-D Gaussian mixture with full covariances whose
score and density are exact. It trains an ``MLPScore`` by denoising score matching, samples by the PF-ODE
(Tsit5, adaptive) and the reverse SDE (Euler–Maruyama) from the same noise, and computes log-likelihoods of
held-out data by the change of variables (exact divergence), comparing everything with the exact mixture. It
also solves the exact mixture's flow in float64 with the exact terminal density, a check of the solver that
must agree with the closed form to ~1e-6.

``digits``: the 1797 8×8 scikit-learn digits (shipped in the wheel, no download), a ``ConvScore``, PF-ODE
samples and Hutchinson likelihoods in bits per dimension.

Outputs (in ``out``): ``report.json`` (config, metrics, solver stats), ``samples.png``, ``model.pt``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from pysens.artifacts import save_figure, write_json
from pysens.diffusion import VP, ConvScore, GaussianMixtureScore, MLPScore, digits, save_checkpoint, toy_mixture_2d
from pysens.diffusion.likelihood import log_likelihood
from pysens.diffusion.sampling import sample_pf_ode, sample_sde
from pysens.diffusion.training import train


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _stats(result) -> dict:
    return {"retcode": result.retcode, **result.stats.as_dict()}


def _score_error(model, exact, process, n: int, generator: torch.Generator) -> float:
    """E‖β(s_θ − s)‖² / E‖β s‖² over t ~ U[t_eps, T] and x_t from the exact noised law."""
    x0 = exact.sample_data(n, generator=generator)
    t = process.t_eps + (process.T - process.t_eps) * torch.rand(n, generator=generator, dtype=x0.dtype)
    beta = process.sigma(t)[:, None]
    xt = process.scale(t)[:, None] * x0 + beta * torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    with torch.no_grad():
        s_model = model(xt.to(torch.float32), t.to(torch.float32)).double()
    s_exact = exact(xt, t)
    return float(((beta * (s_model - s_exact)) ** 2).sum(1).mean() / ((beta * s_exact) ** 2).sum(1).mean())


def run_mixture(out: Path, *, steps: int, samples: int, seed: int, device: str, quiet: bool) -> dict:
    start = time.perf_counter()
    process = VP()
    means, covs, weights = toy_mixture_2d()
    exact = GaussianMixtureScore(means, covs, weights, process=process)
    gen = torch.Generator().manual_seed(seed)
    data = exact.sample_data(20000, generator=gen).float().to(device)
    held_out = exact.sample_data(500, generator=gen)

    _say(f"[1/4] training MLPScore on a 2-D Gaussian mixture ({steps} DSM steps, {device})", quiet)
    torch.manual_seed(seed)
    model = MLPScore(2, process, hidden=128, depth=3).to(device)
    fit = train(model, data, steps=steps, batch_size=512, lr=3e-3, seed=seed, progress=not quiet)
    model.eval().cpu()
    save_checkpoint(model, out / "model.pt", extra={"dataset": "mixture", "steps": steps})
    score_err = _score_error(model, exact, process, 4000, torch.Generator().manual_seed(seed + 1))

    _say(f"[2/4] sampling {samples} points: PF-ODE (Tsit5, adaptive) and reverse SDE (EM, 500 steps)", quiet)
    x_T = process.prior_sample((samples, 2), generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float32)
    ode = sample_pf_ode(model, process, x_T, method="Tsit5", rtol=1e-5, atol=1e-5)
    sde = sample_sde(model, process, x_T, n_steps=500, generator=torch.Generator().manual_seed(seed + 3))

    _say("[3/4] log-likelihood of 500 held-out points (exact divergence) and a float64 solver check", quiet)
    ll_model = log_likelihood(model, process, held_out.float(), rtol=1e-5, atol=1e-5)
    t0 = process.t_eps
    ll_true = exact.log_density(held_out, t0)
    check = log_likelihood(
        exact,
        process,
        held_out[:100],
        rtol=1e-10,
        atol=1e-10,
        terminal_log_density=lambda z: exact.log_density(z, process.T),
    )
    solver_err = float((check.log_density - ll_true[:100]).abs().max())

    true_mean = (weights[:, None] * means).sum(0)
    moments = {}
    for name, x in (("pf_ode", ode.x.double()), ("sde", sde.x.double())):
        finite = x[torch.isfinite(x).all(1)]
        moments[name] = {
            "mean": finite.mean(0),
            "mean_error": float((finite.mean(0) - true_mean).norm()),
            "exact_mean_log_density": float(exact.log_density(finite, t0).mean()),
        }

    _say("[4/4] writing report.json and samples.png", quiet)
    _plot_mixture(out / "samples.png", exact, held_out, ode.x, sde.x, process)
    report = {
        "demo": "mixture",
        "config": {"process": process.config(), "steps": steps, "samples": samples, "seed": seed, "device": device},
        "training": {
            "final_loss": float(fit.losses[-100:].mean()),
            "wall_time": fit.wall_time,
            "score_relative_mse": score_err,
        },
        "sampling": {"pf_ode": _stats(ode), "sde": _stats(sde), "moments": moments, "true_mean": true_mean},
        "likelihood": {
            "t0": t0,
            "model_mean_nll": float(-ll_model.log_density.mean()),
            "exact_mean_nll": float(-ll_true.mean()),
            "model_stats": _stats(ll_model),
            "solver_check_max_abs_error": solver_err,
            "solver_check_stats": _stats(check),
        },
        "wall_time": time.perf_counter() - start,
    }
    write_json(out / "report.json", report)
    return report


def _plot_mixture(path, exact, data, ode_x, sde_x, process) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-4.5, 4.5, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    dens = exact.log_density(pts, process.t_eps).exp().reshape(200, 200)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), sharex=True, sharey=True)
    for ax, (title, x) in zip(
        axes,
        (("held-out data", data), ("PF-ODE samples (Tsit5)", ode_x), ("reverse-SDE samples (EM)", sde_x)),
        strict=True,
    ):
        ax.contour(gx.numpy(), gy.numpy(), dens.numpy(), levels=8, colors="0.6", linewidths=0.6)
        x = x.detach().double().cpu()
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_title(title)
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
        ax.set_aspect("equal")
    fig.suptitle("pysens demo: exact mixture density (contours) and samples of the trained score network")
    save_figure(fig, path)
    plt.close(fig)


def run_digits(out: Path, *, steps: int, samples: int, seed: int, device: str, quiet: bool) -> dict:
    start = time.perf_counter()
    process = VP()
    images = digits()
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    train_set, test_set = images[perm[:1500]], images[perm[1500:]]
    _say(f"[1/4] training ConvScore on sklearn digits ({steps} DSM steps, {device})", quiet)
    torch.manual_seed(seed)
    model = ConvScore(process, channels=1, image_size=8, base_channels=32).to(device)
    fit = train(model, train_set.to(device), steps=steps, batch_size=128, lr=2e-3, seed=seed, progress=not quiet)
    model.eval()
    save_checkpoint(model, out / "model.pt", extra={"dataset": "digits", "steps": steps})
    _say(f"[2/4] sampling {samples} digits by the PF-ODE (Tsit5)", quiet)
    x_T = process.prior_sample(
        (samples, 1, 8, 8), generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float32
    ).to(device)
    ode = sample_pf_ode(model, process, x_T, method="Tsit5", rtol=1e-4, atol=1e-4)
    _say("[3/4] Hutchinson log-likelihood of 64 test digits (bits/dim)", quiet)
    x = test_set[:64].to(device)
    ll = log_likelihood(
        model,
        process,
        x,
        divergence="hutchinson",
        n_probes=4,
        rtol=1e-4,
        atol=1e-4,
        generator=torch.Generator(device=device).manual_seed(seed + 3),
    )
    d = 64
    # [-1, 1] pixels have 17 levels of width 1/8: the discrete likelihood is about p(x)·(1/8)^d
    bpd = (-(ll.log_density - d * math.log(8.0)) / (d * math.log(2.0))).mean()
    _say("[4/4] writing report.json and samples.png", quiet)
    _plot_digits(out / "samples.png", test_set[:samples].cpu(), ode.x.cpu())
    report = {
        "demo": "digits",
        "config": {"process": process.config(), "steps": steps, "samples": samples, "seed": seed, "device": device},
        "training": {"final_loss": float(fit.losses[-100:].mean()), "wall_time": fit.wall_time},
        "sampling": {"pf_ode": _stats(ode)},
        "likelihood": {"bits_per_dim": float(bpd), "stats": _stats(ll)},
        "wall_time": time.perf_counter() - start,
    }
    write_json(out / "report.json", report)
    return report


def _plot_digits(path, real, fake) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(32, real.shape[0], fake.shape[0])
    fig, axes = plt.subplots(2, 1, figsize=(12, 2.0))
    for ax, (title, x) in zip(axes, (("test digits", real[:n]), ("PF-ODE samples", fake[:n])), strict=True):
        row = torch.cat(list(x[:, 0].clamp(-1, 1)), dim=1)
        ax.imshow(row.numpy(), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    save_figure(fig, path)
    plt.close(fig)


DEMOS = {"mixture": run_mixture, "digits": run_digits}
