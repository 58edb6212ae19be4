"""The end-to-end demo behind ``pysens demo``: fit, sample, score the likelihood, report.

``mixture`` (default, about 35 s of one CPU core): a 2-D Gaussian mixture with full covariances whose
score and density are exact. It trains an ``MLPScore`` by denoising score matching, samples by the PF-ODE
(Tsit5, adaptive) and the reverse SDE (Euler–Maruyama) from the same noise, and computes log-likelihoods of
held-out data by the change of variables (exact divergence), comparing everything with the exact mixture. It
also solves the exact mixture's flow in float64 with the exact terminal density, a check of the solver that
must agree with the closed form to ~1e-6.

``digits``: the 1797 8×8 scikit-learn digits (shipped in the wheel, no download), a ``ConvScore``, samples by
the PF-ODE and the reverse SDE from the same noise, test bits/dim with the Hutchinson divergence (64 digits, 4
probes; the exact divergence costs 64 network JVPs per evaluation, too slow for a demo on a CPU), and a float64
solver check in d = 64 with the exact divergence: the flow of a Gaussian fitted to the training digits, whose
density is closed-form.

Outputs (in ``out``, overwritten by a rerun): ``report.json`` (config, metrics with standard errors, solver
stats), ``samples.png``, ``model.pt``. Every phase that can take more than a few seconds shows a progress bar on
stderr (``quiet`` turns them off); nothing is printed on stdout.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from pysens.artifacts import save_figure, write_json
from pysens.diffusion import VP, ConvScore, GaussianMixtureScore, MLPScore, digits, save_checkpoint, toy_mixture_2d
from pysens.diffusion.likelihood import log_likelihood
from pysens.diffusion.sampling import sample_pf_ode, sample_sde
from pysens.diffusion.training import train
from pysens.progress import time_progress

CHECK_POINTS = 50  # held-out points of the float64 solver check (its cost is most of a 1e-10 solve per point)


def _say(msg: str, quiet: bool) -> None:
    """A phase line on stderr (stdout stays free for the caller's summary, and the bars are on stderr too)."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _mean_and_se(values: Tensor) -> tuple[float, float]:
    """Sample mean of a ``[n]`` tensor and its standard error std/√n (NaN for n < 2)."""
    values = values.detach().double().reshape(-1)
    n = values.numel()
    se = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    return float(values.mean()), se


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
    with time_progress(model, process.T, process.t_eps, "PF-ODE sampling", quiet) as tracked:
        ode = sample_pf_ode(tracked, process, x_T, method="Tsit5", rtol=1e-5, atol=1e-5)
    with time_progress(model, process.T, process.t_eps, "SDE sampling", quiet) as tracked:
        sde = sample_sde(tracked, process, x_T, n_steps=500, generator=torch.Generator().manual_seed(seed + 3))

    _say(
        f"[3/4] log-likelihood of 500 held-out points (exact divergence) and a float64 solver check on {CHECK_POINTS}",
        quiet,
    )
    with time_progress(model, process.t_eps, process.T, "likelihood (model)", quiet) as tracked:
        ll_model = log_likelihood(tracked, process, held_out.float(), rtol=1e-5, atol=1e-5)
    t0 = process.t_eps
    ll_true = exact.log_density(held_out, t0)
    with time_progress(exact, process.t_eps, process.T, "float64 solver check", quiet) as tracked:
        check = log_likelihood(
            tracked,
            process,
            held_out[:CHECK_POINTS],
            rtol=1e-10,
            atol=1e-10,
            terminal_log_density=lambda z: exact.log_density(z, process.T),
        )
    solver_err = float((check.log_density - ll_true[:CHECK_POINTS]).abs().max())

    true_mean = (weights[:, None] * means).sum(0)
    moments = {}
    for name, x in (("pf_ode", ode.x.double()), ("sde", sde.x.double())):
        finite = x[torch.isfinite(x).all(1)]
        log_density, log_density_se = _mean_and_se(exact.log_density(finite, t0))
        moments[name] = {
            "n": finite.shape[0],
            "mean": finite.mean(0),
            "mean_standard_error": finite.std(0) / math.sqrt(finite.shape[0]),
            "mean_error": float((finite.mean(0) - true_mean).norm()),
            "exact_mean_log_density": log_density,
            "exact_mean_log_density_standard_error": log_density_se,
        }
    model_nll, model_nll_se = _mean_and_se(-ll_model.log_density)
    exact_nll, exact_nll_se = _mean_and_se(-ll_true)
    # paired on the same points: the model's excess NLL has a much smaller standard error than either NLL
    excess_nll, excess_nll_se = _mean_and_se(ll_true - ll_model.log_density.double())

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
            "model_mean_nll": model_nll,
            "model_mean_nll_standard_error": model_nll_se,
            "exact_mean_nll": exact_nll,
            "exact_mean_nll_standard_error": exact_nll_se,
            "model_excess_nll": excess_nll,
            "model_excess_nll_standard_error": excess_nll_se,
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
    from matplotlib.lines import Line2D

    grid = torch.linspace(-4.5, 4.5, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    log_dens = exact.log_density(pts, process.t_eps).reshape(200, 200)
    # log-density levels from the highest peak down 8 nats, so that every component shows its contours
    top = float(log_dens.max())
    levels = [top - 8.0, top - 6.0, top - 4.0, top - 2.5, top - 1.0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharex=True, sharey=True)
    panels = (
        ("held-out data", data, "tab:gray"),
        ("PF-ODE samples (Tsit5)", ode_x, "tab:blue"),
        ("reverse-SDE samples (EM)", sde_x, "tab:orange"),
    )
    for ax, (title, x, colour) in zip(axes, panels, strict=True):
        x = x.detach().double().cpu()
        alpha = 0.6 if x.shape[0] <= 500 else 0.35
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=alpha, color=colour, linewidths=0, zorder=1)
        # contours above the points, dark and solid, so the density stays visible where samples are dense
        ax.contour(
            gx.numpy(),
            gy.numpy(),
            log_dens.numpy(),
            levels=levels,
            colors="k",
            linewidths=0.8,
            linestyles="solid",
            zorder=2,
        )
        ax.set_title(f"{title} (n = {x.shape[0]})")
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.legend(
            handles=[
                Line2D([], [], color="k", lw=0.8, label="exact log-density (contours)"),
                Line2D([], [], ls="", marker="o", ms=4, color=colour, label=title.split(" (")[0]),
            ],
            loc="lower left",
            fontsize=8,
            framealpha=0.85,
        )
    axes[0].set_ylabel("$x_2$")
    fig.suptitle(
        "pysens demo: exact mixture log-density at t = t_eps (contours, 1 to 8 nats below the peak) and samples of "
        "the trained score network"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save_figure(fig, path)
    plt.close(fig)


def _bits_per_dim(log_density: Tensor, d: int) -> Tensor:
    """Per-sample bits/dim of [-1, 1] pixels with 17 levels of width 1/8: the discrete likelihood is about
    p(x)·(1/8)^d."""
    return -(log_density.double() - d * math.log(8.0)) / (d * math.log(2.0))


def _gaussian_solver_check(train_set: Tensor, test: Tensor, process, quiet: bool) -> dict:
    """Float64 solver check in d = 64: the PF-ODE log-likelihood (exact divergence, rtol = atol = 1e-9) of the
    Gaussian fitted to the training digits (covariance + 0.01 I), against its closed-form density."""
    flat = train_set.double().reshape(train_set.shape[0], -1)
    mean = flat.mean(0)
    cov = torch.cov(flat.T) + 0.01 * torch.eye(flat.shape[1], dtype=torch.float64)
    gaussian = GaussianMixtureScore(mean.reshape(1, *train_set.shape[1:]), cov[None], process=process)
    x = test.double()
    with time_progress(gaussian, process.t_eps, process.T, "float64 solver check", quiet) as tracked:
        check = log_likelihood(
            tracked,
            process,
            x,
            rtol=1e-9,
            atol=1e-9,
            terminal_log_density=lambda z: gaussian.log_density(z, process.T),
        )
    exact = gaussian.log_density(x, process.t_eps)
    return {
        "points": x.shape[0],
        "max_abs_error": float((check.log_density - exact).abs().max()),
        "exact_mean_log_density": float(exact.mean()),
        "stats": _stats(check),
    }


def run_digits(out: Path, *, steps: int, samples: int, seed: int, device: str, quiet: bool) -> dict:
    start = time.perf_counter()
    process = VP()
    images = digits()
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    train_set, test_set = images[perm[:1500]], images[perm[1500:]]
    _say(f"[1/5] training ConvScore on sklearn digits ({steps} DSM steps, {device})", quiet)
    torch.manual_seed(seed)
    model = ConvScore(process, channels=1, image_size=8, base_channels=32).to(device)
    fit = train(model, train_set.to(device), steps=steps, batch_size=128, lr=2e-3, seed=seed, progress=not quiet)
    model.eval()
    save_checkpoint(model, out / "model.pt", extra={"dataset": "digits", "steps": steps})
    _say(f"[2/5] sampling {samples} digits: PF-ODE (Tsit5, adaptive) and reverse SDE (EM, 500 steps)", quiet)
    x_T = process.prior_sample(
        (samples, 1, 8, 8), generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float32
    ).to(device)
    with time_progress(model, process.T, process.t_eps, "PF-ODE sampling", quiet) as tracked:
        ode = sample_pf_ode(tracked, process, x_T, method="Tsit5", rtol=1e-4, atol=1e-4)
    with time_progress(model, process.T, process.t_eps, "SDE sampling", quiet) as tracked:
        sde = sample_sde(
            tracked, process, x_T, n_steps=500, generator=torch.Generator(device=device).manual_seed(seed + 4)
        )
    _say("[3/5] test bits/dim of 64 digits (Hutchinson divergence, 4 probes)", quiet)
    d = 64
    x = test_set[:64].to(device)
    with time_progress(model, process.t_eps, process.T, "likelihood (Hutchinson)", quiet) as tracked:
        ll = log_likelihood(
            tracked,
            process,
            x,
            divergence="hutchinson",
            n_probes=4,
            rtol=1e-4,
            atol=1e-4,
            generator=torch.Generator(device=device).manual_seed(seed + 3),
        )
    bpd, bpd_se = _mean_and_se(_bits_per_dim(ll.log_density, d))
    _say("[4/5] float64 solver check: a Gaussian fitted to the digits, closed-form density (d = 64)", quiet)
    check = _gaussian_solver_check(train_set, test_set[:8], process, quiet)
    _say("[5/5] writing report.json and samples.png", quiet)
    _plot_digits(out / "samples.png", test_set[:samples].cpu(), ode.x.cpu(), sde.x.cpu(), bpd, bpd_se)
    report = {
        "demo": "digits",
        "config": {"process": process.config(), "steps": steps, "samples": samples, "seed": seed, "device": device},
        "training": {"final_loss": float(fit.losses[-100:].mean()), "wall_time": fit.wall_time},
        "sampling": {"pf_ode": _stats(ode), "sde": _stats(sde)},
        "likelihood": {
            "bits_per_dim": bpd,
            "bits_per_dim_standard_error": bpd_se,
            "stats": _stats(ll),
            "solver_check_max_abs_error": check["max_abs_error"],
            "solver_check": check,
        },
        "wall_time": time.perf_counter() - start,
    }
    write_json(out / "report.json", report)
    return report


def _plot_digits(path, real, ode, sde, bpd: float, bpd_se: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(32, real.shape[0], ode.shape[0])
    rows = (("test digits", real[:n]), ("PF-ODE samples (Tsit5)", ode[:n]), ("reverse-SDE samples (EM)", sde[:n]))
    fig, axes = plt.subplots(3, 1, figsize=(12, 3.4))
    for ax, (title, x) in zip(axes, rows, strict=True):
        row = torch.cat(list(x[:, 0].clamp(-1, 1)), dim=1)
        ax.imshow(row.numpy(), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"pysens demo --dataset digits: test bits/dim {bpd:.3f} ± {bpd_se:.3f} (Hutchinson, 64 digits)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


DEMOS = {"mixture": run_mixture, "digits": run_digits}
