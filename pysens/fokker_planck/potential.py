"""Scalar potential networks φ_θ(x, t) ≈ log p_t(x) with score ∇_xφ_θ, and the authors' trained checkpoints.

Deveney et al. train a scalar network and take its spatial gradient as the score, so the score is conservative by
construction and the log-density Fokker–Planck residual R[φ] is defined (seed001 §2.1, §3). Their network
(``models.Net``) is an MLP on the input ``[t, x1, x2]``: 3 → 80 → 80 → 80 → 1 with Softplus(β = 100) activations.
:class:`PotentialScoreNet` is that architecture for any d, width and depth.

Their 12 checkpoints (``<dataset>_w<w_R>.npz``: blob / circles2 / checker × w_R ∈ {0, 0.1, 1, 10}) and binned sample
histograms live in ``shared/data/odesdegap/`` beside the repository (its README gives the array layout). They are
found through :func:`authors_data_dir`: the environment variable ``PYSENS_ODESDEGAP_DATA`` when set, else
``<repo>/../shared/data/odesdegap``. Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pysens.diffusion.processes import OU, ForwardProcess, Time, process_from_config, resolve_process, time_like
from pysens.validation import check_dtype, check_int, check_number

__all__ = [
    "AUTHORS_DATASETS",
    "AUTHORS_WEIGHTS",
    "DATA_ENV_VAR",
    "PotentialScoreNet",
    "authors_checkpoint_path",
    "authors_data_dir",
    "load_authors_checkpoint",
]

DATA_ENV_VAR = "PYSENS_ODESDEGAP_DATA"
AUTHORS_DATASETS = ("blob", "circles2", "checker")
AUTHORS_WEIGHTS = (0.0, 0.1, 1.0, 10.0)
# models.Net's layer names, in order; the arrays are torch nn.Linear layout (weight is out × in).
_AUTHORS_LAYERS = ("input", "hidden1", "hidden2", "output")


class PotentialScoreNet(nn.Module):
    """φ_θ(x, t): an MLP on ``[t, x]`` with Softplus(β) activations; the score is ∇_xφ_θ (seed001 §2.1).

    Args:
        dim: d, the data dimension (states are ``[B, d]``).
        process: the forward process the model belongs to (default: the authors' ``OU()``).
        hidden: width of the hidden layers (authors: 80).
        depth: number of hidden layers (authors: 3).
        beta: the Softplus sharpness (authors: 100).

    ``potential(x, t)`` returns φ ``[B]``; calling the module returns the score ∇_xφ ``[B, d]`` (so it is a score
    model for every sampler). The score keeps the graph to the parameters whenever autograd is recording (DSM
    training), and works inside ``torch.func`` transforms.
    """

    def __init__(
        self,
        dim: int = 2,
        process: ForwardProcess | str | None = None,
        hidden: int = 80,
        depth: int = 3,
        beta: float = 100.0,
    ) -> None:
        super().__init__()
        dim, hidden, depth = check_int(dim, "dim"), check_int(hidden, "hidden"), check_int(depth, "depth")
        beta = check_number(beta, "beta", positive=True)
        self.dim, self.hidden, self.depth, self.beta = int(dim), int(hidden), int(depth), float(beta)
        self.process = OU() if process is None else resolve_process(process)
        widths = [dim + 1] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.output = nn.Linear(hidden, 1)
        self.activation = nn.Softplus(beta=self.beta)

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.dim])

    def potential(self, x: Tensor, t: Time) -> Tensor:
        """φ_θ(x, t) ``[B]`` for ``x`` ``[B, d]``; ``t`` a float, 0-d or ``[B]``."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}]; got {tuple(x.shape)}")
        t = time_like(t, x)
        h = torch.cat([t.expand(x.shape[0])[:, None], x], dim=1)
        for module in self.chain():
            h = module(h)
        return h[:, 0]

    def chain(self) -> list[nn.Module]:
        """The MLP as the modules it applies in order to the input ``[t, x]`` ``[B, 1 + d]``: Linear, Softplus, …,
        Linear (output ``[B, 1]``). The forward-Laplacian engine of the residual reads the network from it."""
        modules: list[nn.Module] = []
        for layer in self.layers:
            modules += [layer, self.activation]
        return [*modules, self.output]

    def forward(self, x: Tensor, t: Time) -> Tensor:
        """The score ∇_xφ_θ(x, t), shaped like ``x`` ``[B, d]``."""
        t = time_like(t, x)
        # torch.func.grad works under no_grad (samplers) and inside other transforms (residuals), and its result
        # stays connected to the parameters when autograd records (DSM training).
        return torch.func.grad(lambda y: self.potential(y, t).sum())(x)

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "process": self.process.config(),
            "hidden": self.hidden,
            "depth": self.depth,
            "beta": self.beta,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PotentialScoreNet:
        params = dict(config)
        params["process"] = process_from_config(params["process"])
        return cls(**params)

    def load_arrays(self, arrays: dict[str, np.ndarray | Tensor], source: str = "arrays") -> None:
        """Load weights given in the authors' layout (``input``, ``hidden1``, …, ``output`` × ``weight``/``bias``).

        Needs depth = 3 (their layer names). Raises ``ValueError`` naming ``source`` and every missing, unexpected
        or wrongly shaped array before anything is copied.
        """
        names = _authors_layer_names(self.depth)
        modules = [*self.layers, self.output]
        expected = {}
        for name, module in zip(names, modules, strict=True):
            expected[f"{name}.weight"] = tuple(module.weight.shape)
            expected[f"{name}.bias"] = tuple(module.bias.shape)
        problems = [f"missing {k} (expected shape {v})" for k, v in expected.items() if k not in arrays]
        problems += [f"unexpected array {k}" for k in arrays if k not in expected]
        problems += [
            f"{k} has shape {tuple(arrays[k].shape)}, expected {v}"
            for k, v in expected.items()
            if k in arrays and tuple(arrays[k].shape) != v
        ]
        if problems:
            raise ValueError(
                f"{source} does not fit PotentialScoreNet(dim={self.dim}, hidden={self.hidden}, depth={self.depth}): "
                + "; ".join(problems)
            )
        with torch.no_grad():
            for name, module in zip(names, modules, strict=True):
                for part in ("weight", "bias"):
                    value = torch.as_tensor(np.asarray(arrays[f"{name}.{part}"]))
                    getattr(module, part).copy_(value.to(getattr(module, part)))


def _authors_layer_names(depth: int) -> Sequence[str]:
    return ("input",) + tuple(f"hidden{i}" for i in range(1, depth)) + ("output",)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def authors_data_dir(required: bool = False) -> Path | None:
    """The folder of the authors' artefacts: ``$PYSENS_ODESDEGAP_DATA`` if set, else ``<repo>/../shared/data/
    odesdegap``. Returns None when it does not exist (or raises ``FileNotFoundError`` with ``required``)."""
    env = os.environ.get(DATA_ENV_VAR)
    path = Path(env) if env else _repo_root().parent / "shared" / "data" / "odesdegap"
    if path.is_dir():
        return path
    if required:
        source = f"${DATA_ENV_VAR}" if env else "the default location (set $" + DATA_ENV_VAR + " to override)"
        raise FileNotFoundError(f"the authors' ODE-SDE gap artefacts are not at {path} ({source})")
    return None


def authors_checkpoint_path(dataset: str, weight: float, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``<dataset>_w<w_R>.npz`` (dataset in ``AUTHORS_DATASETS``, weight in ``AUTHORS_WEIGHTS``)."""
    if dataset not in AUTHORS_DATASETS:
        raise ValueError(f"dataset must be one of {AUTHORS_DATASETS}; got {dataset!r}")
    if float(weight) not in AUTHORS_WEIGHTS:
        raise ValueError(f"weight must be one of {AUTHORS_WEIGHTS}; got {weight!r}")
    folder = Path(data_dir) if data_dir is not None else authors_data_dir(required=True)
    return folder / f"{dataset}_w{float(weight)}.npz"


def load_authors_checkpoint(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> PotentialScoreNet:
    """Build the authors' network (3 → 80 → 80 → 80 → 1, Softplus(100), OU process) from an ``.npz`` of weight arrays.

    The hidden width is read from the file; a file whose arrays do not fit that architecture raises
    ``ValueError`` listing the mismatches, a missing file ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    check_dtype(dtype, "dtype")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as err:  # truncated zip, not an .npz, pickled objects
        raise ValueError(f"{path} is not a readable checkpoint (an .npz of weight arrays): {err}") from err
    if not isinstance(arrays, dict):
        raise ValueError(f"{path} is not a readable checkpoint: an .npz of named weight arrays was expected")
    first = arrays.get("input.weight")
    if first is None or first.ndim != 2:
        raise ValueError(f"{path} has no 2-D 'input.weight' array; arrays: {sorted(arrays)}")
    hidden_layers = sum(1 for k in arrays if k.startswith("hidden") and k.endswith(".weight"))
    net = PotentialScoreNet(dim=2, process=OU(), hidden=first.shape[0], depth=hidden_layers + 1, beta=100.0)
    net.load_arrays(arrays, source=str(path))
    return net.to(dtype=dtype, device=device)
