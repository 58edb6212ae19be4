"""Radial test functions φ(x) = ψ(|x − c|) for projecting the density: ⟨u, φ⟩, its drift and its QV.

Digest seed002 §5.2 ("Test function"). Points are ``[N, *event]`` (flattened to d = prod(event) internally);
every method works on torch tensors of any dtype/device and returns

* ``φ(x)``: ``[N]``;
* ``grad(x)``: ``[N, *event]``, ∇φ = (ψ'(r)/r)(x − c);
* ``lap(x)``: ``[N]``, Δφ = ψ''(r) + (d − 1) ψ'(r)/r.

Built in: :class:`RadialQuadratic` (ψ = r²/d by default: scale-normalised, the default φ), :class:`GaussianBump`
(ψ = exp(−r²/(2ℓ²)) with ℓ² ∝ d so it does not underflow when |x|² ≈ d early in sampling), :class:`RadialPower`
(ψ = r^p) and :class:`Radial` (any ψ with its two derivatives). :func:`as_radial` accepts a plain callable that
claims to be radial and checks it (rotation invariance at random points): a non-radial function is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "TEST_FUNCTIONS",
    "CallableRadial",
    "GaussianBump",
    "Radial",
    "RadialPower",
    "RadialQuadratic",
    "RadialTestFunction",
    "as_radial",
    "make_test_function",
]


class RadialTestFunction:
    """φ(x) = ψ(r), r = |x − c|; subclasses give ψ, ψ', ψ'' (and may override ψ'(r)/r where r = 0 is special).

    Args:
        center: c, ``[*event]`` or flat ``[d]`` (None: the origin).
    """

    name = "radial"

    def __init__(self, center: Tensor | None = None) -> None:
        self.center = None if center is None else torch.as_tensor(center).reshape(-1)

    # -- radial profile (subclasses) ------------------------------------------------------------------------------
    def psi(self, r: Tensor, d: int) -> Tensor:
        raise NotImplementedError

    def dpsi(self, r: Tensor, d: int) -> Tensor:
        raise NotImplementedError

    def d2psi(self, r: Tensor, d: int) -> Tensor:
        raise NotImplementedError

    def dpsi_over_r(self, r: Tensor, d: int) -> Tensor:
        """ψ'(r)/r, finite at r = 0 for smooth φ (ψ'(0) = 0, the limit is ψ''(0))."""
        small = r <= 1e-12
        safe = torch.where(small, torch.ones_like(r), r)
        return torch.where(small, self.d2psi(r, d), self.dpsi(safe, d) / safe)

    # -- evaluation ------------------------------------------------------------------------------------------------
    def _offset(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if self.center is None:
            return flat
        c = self.center.to(dtype=flat.dtype, device=flat.device)
        if c.numel() != flat.shape[1]:
            raise ValueError(f"the test function's center has {c.numel()} entries but x has d = {flat.shape[1]}")
        return flat - c

    def __call__(self, x: Tensor) -> Tensor:
        y = self._offset(x)
        return self.psi(y.norm(dim=1), y.shape[1])

    def grad(self, x: Tensor) -> Tensor:
        y = self._offset(x)
        return (self.dpsi_over_r(y.norm(dim=1), y.shape[1])[:, None] * y).reshape(x.shape)

    def lap(self, x: Tensor) -> Tensor:
        y = self._offset(x)
        d = y.shape[1]
        r = y.norm(dim=1)
        return self.d2psi(r, d) + (d - 1) * self.dpsi_over_r(r, d)

    def values_grads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(φ(x) ``[N]``, ∇φ(x) ``[N, *event]``) with one norm computation."""
        y = self._offset(x)
        d = y.shape[1]
        r = y.norm(dim=1)
        return self.psi(r, d), (self.dpsi_over_r(r, d)[:, None] * y).reshape(x.shape)

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items() if k != 'name')})"


class RadialQuadratic(RadialTestFunction):
    """ψ(r) = a r² with a = ``scale`` (None: 1/d, the default φ = |x|²/d of digest §5.2)."""

    name = "quadratic"

    def __init__(self, scale: float | None = None, center: Tensor | None = None) -> None:
        super().__init__(center)
        if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number or None (1/d), got {scale!r}")
        self.scale = scale

    def _a(self, d: int) -> float:
        return 1.0 / d if self.scale is None else float(self.scale)

    def psi(self, r: Tensor, d: int) -> Tensor:
        return self._a(d) * r**2

    def dpsi(self, r: Tensor, d: int) -> Tensor:
        return 2.0 * self._a(d) * r

    def d2psi(self, r: Tensor, d: int) -> Tensor:
        return torch.full_like(r, 2.0 * self._a(d))

    def dpsi_over_r(self, r: Tensor, d: int) -> Tensor:
        return torch.full_like(r, 2.0 * self._a(d))

    def config(self) -> dict:
        return {"name": self.name, "scale": self.scale}


class GaussianBump(RadialTestFunction):
    """ψ(r) = exp(−r²/(2ℓ²)) with ℓ² = ``ell2`` if given, else ``ell2_per_dim`` · d (ℓ² ∝ d, digest §5.2)."""

    name = "bump"

    def __init__(self, ell2: float | None = None, ell2_per_dim: float = 1.0, center: Tensor | None = None) -> None:
        super().__init__(center)
        for label, v in (("ell2", ell2), ("ell2_per_dim", ell2_per_dim)):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{label} must be a positive number, got {v!r}")
        self.ell2, self.ell2_per_dim = ell2, float(ell2_per_dim)

    def length2(self, d: int) -> float:
        return float(self.ell2) if self.ell2 is not None else self.ell2_per_dim * d

    def psi(self, r: Tensor, d: int) -> Tensor:
        return torch.exp(-(r**2) / (2.0 * self.length2(d)))

    def dpsi(self, r: Tensor, d: int) -> Tensor:
        l2 = self.length2(d)
        return -r / l2 * torch.exp(-(r**2) / (2.0 * l2))

    def d2psi(self, r: Tensor, d: int) -> Tensor:
        l2 = self.length2(d)
        return (r**2 / l2 - 1.0) / l2 * torch.exp(-(r**2) / (2.0 * l2))

    def dpsi_over_r(self, r: Tensor, d: int) -> Tensor:
        l2 = self.length2(d)
        return -torch.exp(-(r**2) / (2.0 * l2)) / l2

    def config(self) -> dict:
        return {"name": self.name, "ell2": self.ell2, "ell2_per_dim": self.ell2_per_dim}


class RadialPower(RadialTestFunction):
    """ψ(r) = a r^p (p ≥ 1; p = 1 is |x|, whose gradient x/|x| is bounded but undefined at 0, taken as 0 there)."""

    name = "power"

    def __init__(self, p: float = 1.0, scale: float = 1.0, center: Tensor | None = None) -> None:
        super().__init__(center)
        if not (isinstance(p, (int, float)) and p >= 1):
            raise ValueError(f"p must be a number >= 1, got {p!r}")
        self.p, self.scale = float(p), float(scale)

    def psi(self, r: Tensor, d: int) -> Tensor:
        return self.scale * r**self.p

    def dpsi(self, r: Tensor, d: int) -> Tensor:
        return self.scale * self.p * r ** (self.p - 1)

    def d2psi(self, r: Tensor, d: int) -> Tensor:
        if self.p == 1.0:
            return torch.zeros_like(r)
        return self.scale * self.p * (self.p - 1) * r ** (self.p - 2)

    def dpsi_over_r(self, r: Tensor, d: int) -> Tensor:
        small = r <= 1e-12
        safe = torch.where(small, torch.ones_like(r), r)
        limit = torch.full_like(r, 2.0 * self.scale if self.p == 2.0 else 0.0)
        return torch.where(small, limit, self.scale * self.p * safe ** (self.p - 2))

    def config(self) -> dict:
        return {"name": self.name, "p": self.p, "scale": self.scale}


class Radial(RadialTestFunction):
    """Any radial profile: ``psi(r)``, ``dpsi(r)``, ``d2psi(r)`` as torch functions of r ``[N]``."""

    name = "general"

    def __init__(
        self,
        psi: Callable[[Tensor], Tensor],
        dpsi: Callable[[Tensor], Tensor],
        d2psi: Callable[[Tensor], Tensor],
        center: Tensor | None = None,
        label: str = "general",
    ) -> None:
        super().__init__(center)
        for name, fn in (("psi", psi), ("dpsi", dpsi), ("d2psi", d2psi)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable on a tensor of radii, got {type(fn).__name__}")
        self._psi, self._dpsi, self._d2psi, self.label = psi, dpsi, d2psi, label

    def psi(self, r: Tensor, d: int) -> Tensor:
        return self._psi(r)

    def dpsi(self, r: Tensor, d: int) -> Tensor:
        return self._dpsi(r)

    def d2psi(self, r: Tensor, d: int) -> Tensor:
        return self._d2psi(r)

    def config(self) -> dict:
        return {"name": self.name, "label": self.label}


class CallableRadial(RadialTestFunction):
    """A user callable φ(x) ``[N, *event] → [N]`` certified radial about ``center`` by :func:`as_radial`.

    ψ(r) = φ(c + r e₁) is read along a ray and differentiated by autograd, so grad and lap follow the radial
    formulas (exact for a radial φ).
    """

    name = "callable"

    def __init__(self, fn: Callable[[Tensor], Tensor], event_shape: tuple[int, ...], center: Tensor | None = None):
        super().__init__(center)
        self.fn, self.event_shape = fn, tuple(event_shape)

    def _ray(self, r: Tensor, d: int) -> Tensor:
        pts = torch.zeros(r.shape[0], d, dtype=r.dtype, device=r.device)
        pts[:, 0] = r
        if self.center is not None:
            pts = pts + self.center.to(dtype=r.dtype, device=r.device)
        return self.fn(pts.reshape(r.shape[0], *self.event_shape))

    def _derivatives(self, r: Tensor, d: int, order: int) -> Tensor:
        with torch.enable_grad():
            rr = r.detach().clone().requires_grad_(True)
            out = self._ray(rr, d)
            for _ in range(order):
                (out,) = torch.autograd.grad(out.sum(), rr, create_graph=True)
        return out.detach()

    def psi(self, r: Tensor, d: int) -> Tensor:
        return self._ray(r, d)

    def dpsi(self, r: Tensor, d: int) -> Tensor:
        return self._derivatives(r, d, 1)

    def d2psi(self, r: Tensor, d: int) -> Tensor:
        return self._derivatives(r, d, 2)


def as_radial(
    fn: RadialTestFunction | Callable[[Tensor], Tensor],
    event_shape: tuple[int, ...] | None = None,
    *,
    center: Tensor | None = None,
    n_points: int = 64,
    rtol: float = 1e-6,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> RadialTestFunction:
    """``fn`` as a :class:`RadialTestFunction`; a plain callable is checked for radial symmetry first.

    The check compares φ(c + Q(x − c)) with φ(x) for random orthogonal Q at ``n_points`` Gaussian points (scaled
    like early-sampling particles, |x|² ≈ d) and raises ``ValueError`` when they differ by more than
    ``rtol`` (relative to max |φ|): passing a non-radial φ where a radial one is required is a misuse, since the
    SIEM formulas use ∇φ = (ψ'/r) x and Δφ = ψ'' + (d−1)ψ'/r.
    """
    if isinstance(fn, RadialTestFunction):
        return fn
    if not callable(fn):
        raise TypeError(f"a test function must be a RadialTestFunction or a callable phi(x), got {type(fn).__name__}")
    if event_shape is None:
        raise ValueError("checking a callable test function for radial symmetry needs the event shape of x")
    event_shape = tuple(int(s) for s in event_shape)
    d = math.prod(event_shape)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_points, d, generator=g, dtype=dtype)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=dtype))
    c = torch.zeros(d, dtype=dtype) if center is None else torch.as_tensor(center, dtype=dtype).reshape(-1)
    rotated = c + (x - c) @ q.T
    try:
        with torch.no_grad():
            a = torch.as_tensor(fn(x.reshape(n_points, *event_shape))).reshape(-1).to(dtype)
            b = torch.as_tensor(fn(rotated.reshape(n_points, *event_shape))).reshape(-1).to(dtype)
    except Exception as err:
        raise ValueError(
            f"the test function could not be evaluated on points shaped [N, *{event_shape}]: {err}"
        ) from err
    if a.shape != (n_points,):
        raise ValueError(f"a test function must map [N, *event] to [N]; got output shape {tuple(a.shape)}")
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-300)
    gap = float((a - b).abs().max())
    if gap > rtol * scale:
        k = int((a - b).abs().argmax())
        raise ValueError(
            f"the test function is not radial about {'the origin' if center is None else 'its center'}: "
            f"phi(Qx) - phi(x) = {float(b[k] - a[k]):.3e} for a rotation Q (relative gap {gap / scale:.2e} > "
            f"{rtol:g}); "
            "SIEM's radial formulas would be wrong. Pass a radial function or a RadialTestFunction"
        )
    return CallableRadial(fn, event_shape, center=None if center is None else c)


TEST_FUNCTIONS: dict[str, type[RadialTestFunction]] = {
    "quadratic": RadialQuadratic,
    "bump": GaussianBump,
    "power": RadialPower,
}


def make_test_function(name: str, **params) -> RadialTestFunction:
    """Build a test function by name: ``"quadratic"`` (default φ = |x|²/d), ``"bump"``, ``"power"``."""
    try:
        cls = TEST_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown test function {name!r}; known: {', '.join(TEST_FUNCTIONS)}") from None
    return cls(**params)
