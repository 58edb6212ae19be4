"""Shared test setup: one thread (2-core CI machines), float64 oracles built once."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
