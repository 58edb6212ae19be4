"""Fixtures for the Fokker–Planck tests: the authors' artefacts (skipped with a reason when absent)."""

from pathlib import Path

import pytest

from pysens.fokker_planck import DATA_ENV_VAR, authors_data_dir


@pytest.fixture(scope="session")
def authors_dir() -> Path:
    path = authors_data_dir()
    if path is None:
        pytest.skip(
            f"the authors' ODE-SDE gap artefacts are absent (expected <repo>/../shared/data/odesdegap or "
            f"${DATA_ENV_VAR}); tests that need their checkpoints or histograms are skipped"
        )
    return path
