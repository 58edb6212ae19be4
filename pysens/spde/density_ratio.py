"""Classifier-based density ratios r = u/q, for the white-noise plug-in SIEM-C (digest seed002 §5.2).

A probabilistic classifier D(x) = P(sample from u | x) trained on samples of u (label 1) and of a reference q
(label 0) gives u(x)/q(x) = D/(1 − D) · n_q/n_u, i.e. log r(x) = logit D(x) + log(n_q/n_u) (the class-prior
correction). With a known q, log u = log r + log q at the particles: the density the white-noise QV rate
∫u²|∇φ|² = E_u[u |∇φ|²] needs.

Feature maps (``features=``):

* ``"quadratic"`` (default): logistic regression on [x, x², 1] (per-coordinate squares). The log ratio of two
  Gaussians with diagonal covariances is exactly of this form, which is the regime of the first-10% window
  (u_t close to the reference Gaussian q_t), so the model is well specified there. Fitted by L-BFGS.
* ``"mlp"``: a small SiLU MLP (the "small auxiliary classifier" of the third-party summary), fitted by Adam.

The third-party summary warns that this estimator "may introduce bias": it is only as good as the classifier.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["FEATURES", "DensityRatio"]

FEATURES = ("quadratic", "mlp")


class DensityRatio:
    """log u(x) − log q(x) from samples: ``DensityRatio(features).fit(x_u, x_q)``, then ``log_ratio(x)``.

    Args:
        features: ``"quadratic"`` or ``"mlp"``.
        l2: weight decay of the logistic regression (keeps the fit finite when the classes separate).
        hidden, steps, lr: the MLP's width, Adam steps and learning rate.
    """

    def __init__(
        self, features: str = "quadratic", l2: float = 1e-3, hidden: int = 64, steps: int = 300, lr: float = 1e-2
    ):
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        self.features, self.l2, self.hidden, self.steps, self.lr = features, float(l2), hidden, steps, lr
        self.model: nn.Module | None = None
        self.prior_correction = 0.0

    def _design(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        return torch.cat([flat, flat * flat], dim=1)

    def fit(self, x_u: Tensor, x_q: Tensor, generator: torch.Generator | None = None) -> DensityRatio:
        """Train the classifier on ``x_u`` ``[n_u, *event]`` (label 1) against ``x_q`` ``[n_q, *event]`` (label 0)."""
        if x_u.shape[1:] != x_q.shape[1:]:
            raise ValueError(
                f"samples of u and q must share the event shape, got {tuple(x_u.shape)} and {tuple(x_q.shape)}"
            )
        n_u, n_q = x_u.shape[0], x_q.shape[0]
        if n_u < 2 or n_q < 2:
            raise ValueError("the density-ratio classifier needs at least two samples of each class")
        x = torch.cat([x_u, x_q]).detach()
        y = torch.cat(
            [torch.ones(n_u, dtype=x.dtype, device=x.device), torch.zeros(n_q, dtype=x.dtype, device=x.device)]
        )
        self.prior_correction = math.log(n_q / n_u)
        with torch.enable_grad():
            if self.features == "quadratic":
                self._fit_logistic(x, y)
            else:
                self._fit_mlp(x, y, generator)
        return self

    def _fit_logistic(self, x: Tensor, y: Tensor) -> None:
        feats = self._design(x)
        # standardise the features so one L2 penalty and L-BFGS's scaling suit every coordinate
        self._mu, self._sd = feats.mean(0), feats.std(0).clamp_min(1e-12)
        z = (feats - self._mu) / self._sd
        lin = nn.Linear(z.shape[1], 1).to(dtype=x.dtype, device=x.device)
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
        opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")
        loss_fn = nn.BCEWithLogitsLoss()

        def closure():
            opt.zero_grad()
            loss = loss_fn(lin(z)[:, 0], y) + self.l2 * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.model = lin.requires_grad_(False)

    def _fit_mlp(self, x: Tensor, y: Tensor, generator: torch.Generator | None) -> None:
        flat = x.reshape(x.shape[0], -1)
        self._mu, self._sd = flat.mean(0), flat.std(0).clamp_min(1e-12)
        z = (flat - self._mu) / self._sd
        if generator is not None:
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        net = nn.Sequential(
            nn.Linear(z.shape[1], self.hidden),
            nn.SiLU(),
            nn.Linear(self.hidden, self.hidden),
            nn.SiLU(),
            nn.Linear(self.hidden, 1),
        ).to(dtype=x.dtype, device=x.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.l2)
        loss_fn = nn.BCEWithLogitsLoss()
        for _ in range(self.steps):
            opt.zero_grad()
            loss = loss_fn(net(z)[:, 0], y)
            loss.backward()
            opt.step()
        self.model = net.requires_grad_(False)

    def log_ratio(self, x: Tensor) -> Tensor:
        """log u(x)/q(x) ``[n]`` at points ``x`` ``[n, *event]``."""
        if self.model is None:
            raise RuntimeError("fit() the density ratio first")
        with torch.no_grad():
            if self.features == "quadratic":
                z = (self._design(x) - self._mu) / self._sd
            else:
                z = (x.reshape(x.shape[0], -1) - self._mu) / self._sd
            return self.model(z)[:, 0] + self.prior_correction
