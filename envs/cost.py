"""Student-step equivalents spent by a teaching process, by kind: one counter, in the process.

A budget is fair only if one place counts every student-sized pass, whoever asked for it. The
:class:`~envs.process.TeachingProcess` runs every such pass, so it owns a :class:`Meter`
(``process.cost``) and charges it where the pass is run; teachers never count by hand.

The unit is one student step: a forward and backward pass of a training minibatch (B examples)
and the optimiser update. Other passes are charged in that unit (:data:`KINDS`).
"""

from __future__ import annotations

from envs.losses import unknown_name_error

KINDS = {
    "train": "a student SGD step: one minibatch forward + backward + update = 1",
    "lookahead": "an uncommitted (virtual) student step, e.g. a one-step look-ahead = 1",
    "reverse": "a reverse step of a hypergradient (RMD) or a recomputed step = 1",
    "meta_grad": "a gradient on n clean (meta) examples = n / B, plus 1 per step reversed",
    "eval": "a forward pass over n examples = n / (3 B) (no backward)",
}
"""kind -> the documented cost of one unit, in student-step equivalents"""


class Meter:
    """Student-step equivalents spent, by kind; owned by a TeachingProcess (process.cost)."""

    def __init__(self) -> None:
        self._spent: dict[str, float] = {}

    def add(self, kind: str, amount: float) -> None:
        """Charge `amount` student-step equivalents of `kind` (a key of :data:`KINDS`)."""
        if kind not in KINDS:
            raise unknown_name_error("cost kind", kind, KINDS)
        if not amount >= 0:
            raise ValueError(f"a cost is a non-negative number of step equivalents, got {amount}")
        self._spent[kind] = self._spent.get(kind, 0.0) + float(amount)

    @property
    def total(self) -> float:
        return sum(self._spent.values())

    def by_kind(self) -> dict[str, float]:
        return dict(self._spent)
