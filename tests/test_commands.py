"""The verbs register lazily: ``--help`` imports no torch, and the light option definitions agree with the studies'
own configuration defaults."""

import dataclasses
import subprocess
import sys

from pysens.commands import VERBS, verb_module
from pysens.runtime import DEFAULT_THREADS

HEAVY = ("torch", "scipy", "numpy", "matplotlib", "pysens.diffusion", "pysens.solvers")


def test_help_of_pysens_and_of_every_verb_imports_no_torch():
    # One fresh interpreter runs `pysens --help` and every `pysens VERB --help`, then lists the heavy modules loaded.
    script = f"""
import contextlib, io, sys
from pysens.cli import main
for argv in [["--help"]] + [[verb, "--help"] for verb in {list(VERBS)!r}]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        main(argv)
    assert "usage: pysens" in out.getvalue(), argv
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_verb_shares_the_thread_default():
    import argparse

    for name in VERBS:
        parser = argparse.ArgumentParser()
        verb_module(name).add_arguments(parser)
        defaults = {a.dest: a.default for a in parser._actions}  # (some verbs have required options)
        if "threads" in defaults:
            assert defaults["threads"] == DEFAULT_THREADS, name
    assert {n for n in VERBS if "--threads" in _options(n)} == {
        "demo", "ode-sde-gap", "retraining-study", "siem-study", "sample", "likelihood", "sensitivity", "bench"
    }  # fmt: skip


def _options(name):
    import argparse

    parser = argparse.ArgumentParser()
    verb_module(name).add_arguments(parser)
    return {s for a in parser._actions for s in a.option_strings}


def test_light_option_tables_match_the_study_modules():
    from pysens.commands import ode_sde_gap, retraining_study, siem_study
    from pysens.fokker_planck.data import TOY_DATASETS
    from pysens.fokker_planck.potential import AUTHORS_DATASETS
    from pysens.sensitivity import retraining
    from pysens.sensitivity.measures import EDIT_CONVENTIONS
    from pysens.sensitivity.reference import REFERENCES
    from pysens.sensitivity.tangents import DIVERGENCES
    from pysens.spde.study import StudyConfig

    assert ode_sde_gap.AUTHORS_DATASETS == AUTHORS_DATASETS and ode_sde_gap.TOY_DATASETS == TOY_DATASETS
    assert (retraining_study.EDITS, retraining_study.MODES) == (retraining.EDITS, retraining.MODES)
    assert retraining_study.DATASETS == retraining.DATASETS and retraining_study.NETWORKS == retraining.NETWORKS
    assert retraining_study.REFERENCES == tuple(REFERENCES)
    assert retraining_study.EDIT_CONVENTIONS == EDIT_CONVENTIONS and retraining_study.DIVERGENCES == DIVERGENCES
    config = dataclasses.asdict(retraining.RetrainingConfig())
    assert retraining_study.DEFAULTS == {k: config[k] for k in retraining_study.DEFAULTS}
    assert set(config) - set(retraining_study.DEFAULTS) == {"figure_seeds"}  # not an option
    study = dataclasses.asdict(StudyConfig())
    assert siem_study.DEFAULTS == {k: study[k] for k in siem_study.DEFAULTS}


def test_device_auto_resolves_to_what_torch_sees():
    import argparse

    import torch

    from pysens.runtime import apply_runtime_options

    args = argparse.Namespace(device="auto", threads=None)
    assert apply_runtime_options(args) == 0
    assert args.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_capability_modules_add_cli_register_the_light_verbs():
    import argparse

    from pysens.fokker_planck.experiment import add_cli as add_gap
    from pysens.sensitivity import add_cli as add_retraining
    from pysens.spde import add_cli as add_siem

    for add, name in ((add_gap, "ode-sde-gap"), (add_retraining, "retraining-study"), (add_siem, "siem-study")):
        parser = argparse.ArgumentParser(prog="pysens")
        add(parser.add_subparsers(dest="command", required=True))
        assert parser.parse_args([name]).func is verb_module(name).run
