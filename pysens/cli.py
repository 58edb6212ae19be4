"""Command line: ``pysens demo``, ``pysens backends``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from pysens.demo import DEMOS
    from pysens.runtime import apply_runtime_options

    status = apply_runtime_options(args)
    if status:
        return status
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or {"mixture": 3000, "digits": 3000}[args.dataset]
    samples = args.samples or {"mixture": 2000, "digits": 32}[args.dataset]
    report = DEMOS[args.dataset](
        out, steps=steps, samples=samples, seed=args.seed, device=args.device, quiet=args.quiet
    )
    _print_summary(report)
    print(f"wrote {out / 'report.json'}, {out / 'samples.png'}, {out / 'model.pt'}")
    return 0


def _print_summary(report: dict) -> None:
    rows = [("demo", report["demo"]), ("training loss (last 100)", f"{report['training']['final_loss']:.4f}")]
    if "score_relative_mse" in report["training"]:
        rows.append(("score relative MSE vs exact", f"{report['training']['score_relative_mse']:.4f}"))
    for name, st in report["sampling"].items():
        if isinstance(st, dict) and "nf" in st:
            per_sample = st.get("sample_naccept")
            steps = f"{sum(per_sample) / len(per_sample):.1f} (mean per sample)" if per_sample else st["naccept"]
            rows.append((f"{name}: retcode / RHS calls / steps", f"{st['retcode']} / {st['nf']} / {steps}"))
    lik = report["likelihood"]
    if "model_mean_nll" in lik:
        rows.append(("held-out NLL: model / exact", f"{lik['model_mean_nll']:.4f} / {lik['exact_mean_nll']:.4f}"))
        rows.append(("solver check |log p - exact| (float64)", f"{lik['solver_check_max_abs_error']:.2e}"))
    if "bits_per_dim" in lik:
        rows.append(("test bits/dim (Hutchinson)", f"{lik['bits_per_dim']:.3f}"))
    rows.append(("wall time", f"{report['wall_time']:.1f} s"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def _backends(args: argparse.Namespace) -> int:
    from pysens.solvers import backend_status, methods_for

    for name, (ok, reason) in backend_status().items():
        methods = ", ".join(methods_for(name)) or "-"
        print(f"{name:6s} {'available' if ok else 'unavailable':12s} {reason}\n       methods: {methods}")
    return 0


def _julia_check(args: argparse.Namespace) -> int:
    from pysens.solvers.backends.julia_backend import selfcheck

    return selfcheck(args.out)


def _bench(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from pysens.bench.suites import SUITES, run_suite

    if args.tables:
        from pysens.bench.tables import update_readme

        _, changed = update_readme(args.readme, args.results)
        print(f"{args.readme}: " + (f"updated {', '.join(changed)}" if changed else "up to date"))
        return 0
    if args.list or not args.suites:
        for suite in SUITES.values():
            quick = "" if suite.quick else "  (no --quick)"
            print(f"{suite.name:12s} {suite.about}{quick}")
        return 0 if args.list else 2
    names = list(SUITES) if args.suites == ["all"] else args.suites
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"error: unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)} or all", file=sys.stderr)
        return 2
    if args.quick:
        slow = [n for n in names if not SUITES[n].quick]
        if slow:
            print(f"error: --quick is not available for {', '.join(slow)}", file=sys.stderr)
            return 2
    extra = args.extra
    torch.set_num_threads(args.threads)
    status = {}
    with tqdm(names, desc="pysens bench", unit="suite", disable=args.no_progress) as bar:
        for name in bar:
            bar.set_description(f"pysens bench {name}")
            status[name] = run_suite(
                name, args.out, quick=args.quick, extra=extra, progress=lambda msg: bar.set_postfix_str(msg)
            )
    failed = {n: rc for n, rc in status.items() if rc}
    print(f"wrote results under {args.out}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


def _add_bench_verb(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="run benchmark suites (tables, JSON and PNGs); `pysens bench --list` shows them",
        description="Run benchmark suites. Options after `--` go to every chosen suite (see its --help).",
    )
    bench.add_argument("suites", nargs="*", help="suite names, or `all`")
    bench.add_argument("--out", default="runs/bench", help="output root (the README numbers: benchmarks/results)")
    bench.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    bench.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the published numbers)")
    bench.add_argument("--list", action="store_true", help="list the suites and exit")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--tables", action="store_true", help="re-render the README's tables from --results and exit")
    bench.add_argument("--results", default="benchmarks/results", help="JSON folder for --tables")
    bench.add_argument("--readme", default="benchmarks/README.md", help="README rewritten by --tables")
    bench.set_defaults(func=_bench, extra=[])


def _add_study_verbs(sub) -> None:
    """Verbs owned by the capability modules (each registers its own subcommand)."""
    from pysens.ensemble.cli import add_cli as add_ensemble
    from pysens.fokker_planck.experiment import add_cli as add_gap
    from pysens.sensitivity import add_cli as add_sensitivity
    from pysens.spde import add_cli as add_spde

    add_gap(sub)
    add_sensitivity(sub)
    add_spde(sub)
    add_ensemble(sub)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pysens", description="Sensitivity analysis of score-based diffusion models")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a score model, sample (PF-ODE and SDE), compute likelihoods, report")
    demo.add_argument("--dataset", choices=["mixture", "digits"], default="mixture")
    demo.add_argument("--out", default="runs/demo", help="output folder (report.json, samples.png, model.pt)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default 3000)")
    demo.add_argument("--samples", type=int, default=None, help="number of samples to draw")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu", help="cpu or cuda")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    demo.add_argument("--quiet", action="store_true", help="no progress output")
    demo.set_defaults(func=_demo)
    backends = sub.add_parser("backends", help="list solver backends, whether they run here, and their methods")
    backends.set_defaults(func=_backends)
    julia = sub.add_parser("julia-check", help="run the conformance problems on the julia backend (needs Julia)")
    julia.add_argument("--out", default=None, help="write the JSON report here")
    julia.set_defaults(func=_julia_check)
    _add_study_verbs(sub)
    _add_bench_verb(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if argv[:1] == ["bench"] and "--" in argv:  # `pysens bench SUITE ... -- SUITE-OPTIONS`
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if extra:
        args.extra = extra
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
