"""What teaching costs, counted in one place: the process that runs every student-sized pass.

A budget is fair only if one place counts every pass, whoever asked for it. The unit is the
*student-step equivalent*: one forward and backward of one training minibatch with its SGD update
(a training step) costs 1; every other pass the process runs is charged its measured cost in that
unit (:data:`KINDS`). A :class:`~envs.process.TeachingProcess` owns a :class:`Meter`
(``process.cost``); teachers read it and never count by hand.
"""

from __future__ import annotations

import difflib
import math

KINDS: dict[str, float] = {
    "train": 1.0,
    "lookahead": 1.2,
    "unroll": 2.2,
    "recompute": 1.1,
    "reverse": 2.3,
    "dev_grad": 0.5,
    "meta_grad": 0.5,
}
"""kind -> cost of one unit in student-step equivalents (one training step = 1):

* ``train``: one committed fast-path student step (a minibatch forward + backward + momentum-SGD
  update; ``TeachingProcess.advance``); the unit.
* ``lookahead``: one fast-path step from a state that is not committed
  (``TeachingProcess.lookahead``): the same arithmetic as ``train``, out of place (the committed
  state must survive), so a little dearer.
* ``unroll``: one differentiable step (its gradient with ``create_graph=True``) *and* one backward
  through it; a caller asks for the graph only to differentiate it, so the backward is charged
  with the step (``lookahead(..., differentiable=True)``, ``advance(..., differentiable=True)``).
* ``recompute``: one RMD recompute step (``TeachingProcess.replay``: the fast path's arithmetic
  without statistics, from a checkpoint).
* ``reverse``: one RMD reverse step (``TeachingProcess.step_vjp``: a gradient with
  ``create_graph=True`` and the double backward that gives H_t dv and the mixed product).
* ``dev_grad``: a dev objective and its gradient (``TeachingProcess.dev_objective``), per
  ``batch_size`` examples (a pass over n examples is charged n / batch_size units).
* ``meta_grad``: any other meta-gradient of a loss over examples (e.g. per-example meta-gradients),
  per ``batch_size`` examples: the same forward + backward as ``dev_grad``.

Not charged: the observation (one forward over the dev subset per env step, the same for every
teacher, ~2 % of an env step; benchmarks/README.md) and whole-split evaluations (``evaluate``:
forward only, at fixed points, the same for every teacher's taught students; L2T-DLF's selection
adds one dev-split forward per selection student, ~0.2 % of that student's 600 steps).

Measured by ``OMP_NUM_THREADS=1 python benchmarks/pass_costs.py`` (medians of 15 interleaved
repeats, mlp 784-256-10 on mnist5k, batch 64, bilinear family, float32, 1 CPU thread), two runs:
lookahead 1.21 / 1.25, unroll 2.15 / 2.23, recompute 1.19 / 1.11, reverse 2.31 / 2.24, dev_grad
0.46 / 0.53 training steps; rounded to one decimal (benchmarks/README.md has the table). Under the
``dln`` family (a 5,000-weight loss network) the ratios are alike (1.15, 2.19, 1.04, 2.43; the
dev gradient, which uses cross-entropy, 0.28), so one table serves every family.
"""


def unknown_kind(kind: str) -> ValueError:
    near = difflib.get_close_matches(kind, KINDS, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    return ValueError(f"unknown cost kind {kind!r}; known: {sorted(KINDS)}.{hint}")


def price(kind: str, units: float) -> float:
    """`units` passes of `kind` in student-step equivalents: ``units * KINDS[kind]``."""
    if kind not in KINDS:
        raise unknown_kind(kind)
    return float(units) * KINDS[kind]


class Meter:
    """Student-step equivalents spent, by kind; owned by a TeachingProcess (``process.cost``).

    Lifetime totals over every episode the process ran, so a fit's spend is the difference of
    two readings (``teachers.base.FitRun`` takes them)."""

    def __init__(self) -> None:
        self._spent: dict[str, float] = {}

    def add(self, kind: str, amount: float) -> None:
        """Charge `amount` student-step equivalents to `kind` (a key of :data:`KINDS`)."""
        if kind not in KINDS:
            raise unknown_kind(kind)
        if not (math.isfinite(amount) and amount >= 0):
            raise ValueError(f"a cost must be a finite number >= 0, got {amount!r} for {kind!r}")
        self._spent[kind] = self._spent.get(kind, 0.0) + float(amount)

    def charge(self, kind: str, units: float) -> None:
        """Charge `units` passes of `kind` at their documented price (:func:`price`)."""
        self.add(kind, price(kind, units))

    @property
    def total(self) -> float:
        return sum(self._spent.values())

    def by_kind(self) -> dict[str, float]:
        return dict(self._spent)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v:g}" for k, v in self._spent.items())
        return f"Meter(total={self.total:g}; {parts})"
