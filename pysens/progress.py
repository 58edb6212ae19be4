"""Progress bars for long solves without a hook in the solver: a score wrapper that reports how far in time the
slowest sample has come.

``with time_progress(score, start, end, desc="PF-ODE") as tracked: sample_pf_ode(tracked, ...)`` shows a tqdm bar
(on stderr) filling from ``start`` to ``end`` (forward or backward in time) and counting score evaluations. The
wrapper calls ``score`` with the same arguments and returns its output unchanged, so results are bit-identical;
it is row-wise, so sample compaction still applies. It reads the time of the least advanced sample at each call
(every 16th call on CUDA, to keep synchronisations rare).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import Tensor, nn

__all__ = ["TimeProgressScore", "phase_bar", "say", "time_progress"]

RESOLUTION = 1000  # bar units over the whole time interval
T = TypeVar("T")


def say(message: str) -> None:
    """A line on stderr that does not break an active tqdm bar (the study verbs' phase log)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def phase_bar(items: Iterable[T], desc: str, disable: bool = False) -> Iterable[T]:
    """``items`` with a tqdm bar on stderr (removed when done): one tick per checkpoint, run or configuration."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=disable, leave=False, file=sys.stderr)


class TimeProgressScore(nn.Module):
    """``score`` (a module or a callable ``score(x, t)``) that advances ``bar`` by the time its slowest sample has
    covered between ``start`` and ``end``; outputs are ``score``'s, unchanged."""

    def __init__(self, score: Callable[[Tensor, Tensor], Tensor], bar, start: float, end: float) -> None:
        super().__init__()
        self.score = score  # registered as a submodule when it is one, so its parameters' dtype/device show
        self.bar, self.start, self.span = bar, float(start), float(end) - float(start)
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        self.calls += 1
        if self.span and (not isinstance(t, Tensor) or t.device.type == "cpu" or self.calls % 16 == 1):
            self._advance(t)
        return self.score(x, t)

    def _advance(self, t: Tensor | float) -> None:
        with torch.no_grad():
            if isinstance(t, Tensor):
                t = t.detach()
                t = float(t.max() if self.span < 0 else t.min()) if t.numel() else self.start
            covered = min(max((float(t) - self.start) / self.span, 0.0), 1.0)
        done = int(covered * RESOLUTION)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        if self.calls % 25 == 1:
            self.bar.set_postfix_str(f"{self.calls} score calls", refresh=False)


@contextmanager
def time_progress(
    score: Callable[[Tensor, Tensor], Tensor], start: float, end: float, desc: str, disable: bool = False
) -> Iterator[TimeProgressScore]:
    """A tqdm bar (stderr, removed when done) over the time interval ``start → end`` and the wrapped ``score``."""
    from tqdm.auto import tqdm

    with tqdm(
        total=RESOLUTION,
        desc=desc,
        disable=disable,
        leave=False,
        file=sys.stderr,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}",
    ) as bar:
        tracked = TimeProgressScore(score, bar, start, end)
        yield tracked
        bar.update(RESOLUTION - bar.n)
