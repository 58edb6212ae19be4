"""The benchmark suites behind ``pysens bench``: one name each, the module that runs it and where it writes.

Every suite is a ``main(argv, progress=None) -> int`` (or ``main(argv)``) that parses its own options, prints its
tables and writes JSON/PNG into ``--out``. The scripts in ``benchmarks/`` call the same functions.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SUITES", "Suite", "run_suite"]


@dataclass(frozen=True)
class Suite:
    """A benchmark: ``target`` is ``"module:function"``; ``folder`` is its output folder below the ``--out`` root
    (``""``: the root itself); ``quick`` says whether it takes ``--quick``."""

    name: str
    target: str
    about: str
    folder: str = ""
    quick: bool = True

    def load(self) -> Callable[..., int]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


def _gap_main(argv: list[str] | None = None) -> int:
    from pysens.fokker_planck.experiment import build_parser, run

    return run(build_parser().parse_args(argv))


def _siem_main(argv: list[str] | None = None) -> int:
    import argparse

    from pysens.commands.siem_study import check_options
    from pysens.spde.study import add_arguments, main_from_args

    parser = argparse.ArgumentParser(prog="pysens bench siem")
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_options(args)
    return main_from_args(args)


def _retraining_main(argv: list[str] | None = None) -> int:
    import argparse

    from pysens.sensitivity.retraining import add_arguments, run_from_args

    parser = argparse.ArgumentParser(prog="pysens bench retraining")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


_SUITES = [
    Suite(
        "diffusion",
        "pysens.bench.diffusion:main",
        "likelihood vs exact GMM against torchdiffeq and scipy RK45; PF-ODE, sensitivity and SDE sampling",
        folder="diffusion",
    ),
    Suite(
        "likelihood-speed",
        "pysens.bench.likelihood_speed:main",
        "exact-divergence engines and likelihoods against k-diffusion-style and score_sde-style pipelines",
    ),
    Suite("gmres-speed", "pysens.bench.gmres_speed:main", "Rodas5P on HIRES: matrix-free GMRES vs dense LU"),
    Suite("stiff", "pysens.bench.stiff:main", "stiff work-precision: torch Rosenbrock/ESDIRK vs scipy and CVODE"),
    Suite(
        "stiff-testset",
        "pysens.bench.stiff_testset:main",
        "Bari test-set problems (HIRES, OREGO, ROBER, VDPOL, E5, POLLU) and LINEAR: scd vs time and RHS calls",
    ),
    Suite(
        "stiff-speed",
        "pysens.bench.stiff_speed:main",
        "stiff speed to 6 digits, B = 1 and 64: torch QNDF/Rodas5P vs scipy BDF/Radau/LSODA and CVODE",
    ),
    Suite("spde", "pysens.bench.spde:main", "grid SPDE work-precision and SIEM's first-10% cost"),
    Suite("sensitivity", "pysens.bench.sensitivity_cost:main", "cost of sample sensitivities vs sampling"),
    Suite("fp-residual", "pysens.bench.fp_residual:main", "Fokker–Planck residual: exact engines and Hutchinson"),
    Suite(
        "ode-sde-gap",
        "pysens.bench.suites:_gap_main",
        "the authors' ODE–SDE gap table, residuals and our trained models",
        folder="ode_sde_gap",
        quick=False,
    ),
    Suite("distributed", "pysens.bench.distributed:main", "sharded sample/likelihood throughput on 1 and 2 ranks"),
    Suite("siem", "pysens.bench.suites:_siem_main", "SIEM vs sample quality over checkpoints", folder="siem_study"),
    Suite(
        "retraining",
        "pysens.bench.suites:_retraining_main",
        "predicted vs observed sample change after a data edit",
        quick=False,
    ),
]
SUITES: dict[str, Suite] = {s.name: s for s in _SUITES}


def run_suite(
    name: str,
    out: str | Path,
    *,
    quick: bool = False,
    extra: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    into: str | Path | None = None,
) -> int:
    """Run one suite with its output below ``out`` (exactly in ``into`` when given: the stage of its run folder);
    returns its exit status."""
    if name not in SUITES:
        raise ValueError(f"unknown benchmark suite {name!r}; known: {', '.join(SUITES)}")
    suite = SUITES[name]
    target = Path(into) if into is not None else Path(out) / suite.folder if suite.folder else Path(out)
    argv = ["--out", str(target), *extra]
    if quick:
        if not suite.quick:
            raise ValueError(f"suite {name!r} has no --quick mode; pass its own size options after --")
        argv.append("--quick")
    main = suite.load()
    kwargs = {"progress": progress} if progress is not None and "progress" in inspect.signature(main).parameters else {}
    try:
        return int(main(argv, **kwargs) or 0)
    except SystemExit as exc:  # argparse errors and explicit exits of a suite end that suite, not the whole run
        return exc.code if isinstance(exc.code, int) else 1
