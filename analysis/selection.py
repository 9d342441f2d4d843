"""Choices a comparison leaves open, made on held-out data: a fixed loss's student lr, and the
bilinear family's starting point jointly with the student lr (issue 24).

Each candidate (a dict of changes to the spec: ``lr``, ``start``) trains fresh students with a
frozen teacher and is scored by the final students' mean error on :data:`SELECTION_SPLIT`; the
candidate with the lowest score is chosen (ties: the first in grid order). Test data is never
read here. The students trained cost student SGD steps, summed into the result
(:attr:`Selection.student_steps`), so a comparison can say what its choices cost.

Why the start is chosen, not fixed: untrained (action 0 throughout, mnist5k / mlp, 600 steps),
b = log C beats the paper's b = 0 on clean labels and loses by ~7 points under 40% symmetric
label noise (results/bilinear_start/README.md); held-out error tells the two apart at once.

Choices are scored on dev's ``select`` part, never on ``meta`` (which teachers may learn from)
nor on test: :data:`SELECTION_SPLIT`, one constant that moves every choice made here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.losses import BILINEAR_STARTS
from teachers.base import Teacher, TeachingSpec
from teachers.fixed import FixedTeacher

SELECTION_SPLIT = "select"
"""the split every choice here is scored on (dev's held-out part)"""
SELECTION_SEEDS = (2**31 - 1, 2**31 - 2)
"""default student seeds of a search: below the comparison's taught students (2**31 + ...) and
outside the range REINFORCE draws its training students from ([0, 2**31 - 1))"""
START_LRS = (0.03, 0.1, 0.3)
"""default student-lr grid searched with each bilinear start"""
CHOICES = ("lr", "start")
"""what a candidate may change"""


@dataclass(frozen=True)
class Trial:
    """One candidate's students: their held-out errors (1.0 for a student that diverged)."""

    changes: dict[str, Any]
    errors: tuple[float, ...]
    student_steps: int
    """student SGD steps the candidate's students took"""

    @property
    def error(self) -> float:
        return float(np.mean(self.errors))


@dataclass(frozen=True)
class Selection:
    """What was chosen, from which trials, on which split and students, at what cost."""

    chosen: dict[str, Any]
    trials: tuple[Trial, ...]
    split: str
    seeds: tuple[int, ...]
    student_steps: int = field(init=False)
    """the search's cost: student SGD steps over all trials"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "student_steps", sum(t.student_steps for t in self.trials))

    def apply(self, spec: TeachingSpec) -> TeachingSpec:
        """`spec` with the chosen values."""
        return apply(spec, self.chosen)

    def rows(self) -> list[dict[str, Any]]:
        """One row per trial, for a CSV: the changes, mean and per-seed errors, steps, chosen."""
        return [
            {
                **t.changes,
                f"{self.split}_error": t.error,
                f"{self.split}_errors": list(t.errors),
                "student_steps": t.student_steps,
                "chosen": t.changes == self.chosen,
            }
            for t in self.trials
        ]


def apply(spec: TeachingSpec, changes: Mapping[str, Any]) -> TeachingSpec:
    """`spec` with a candidate's changes: ``lr`` the student lr, ``start`` the bilinear start
    (into ``loss_kwargs``, so that it is recorded with the spec)."""
    unknown = set(changes) - set(CHOICES)
    if unknown:
        raise ValueError(f"a candidate may change {list(CHOICES)}, got {sorted(unknown)}")
    if "lr" in changes:
        spec = spec.replace(lr=float(changes["lr"]))
    if "start" in changes:
        spec = spec.replace(loss_kwargs={**spec.loss_kwargs, "start": changes["start"]})
    return spec


def held_out_errors(
    teacher: Teacher, spec: TeachingSpec, seeds: Sequence[int], split: str | None = None
) -> tuple[list[float], int]:
    """Train one fresh student per seed with `teacher` frozen; their whole-`split` errors (1.0
    when a student diverged) and what training them cost, in student-step equivalents from the
    process's counter (``envs.cost``). `split` defaults to :data:`SELECTION_SPLIT`, read at
    call time."""
    split = split or SELECTION_SPLIT
    env = teacher.spec_for(spec).make_env()
    process = env.unwrapped.process
    errors = []
    for seed in seeds:
        *_, last = teacher.rollout(env, seed)
        errors.append(1.0 if last.info["diverged"] else process.evaluate(split)["error"])
    return errors, round(process.cost.total)


def evaluate_trial(
    teacher: Teacher, spec: TeachingSpec, changes: dict[str, Any], seeds: Sequence[int]
) -> Trial:
    """Score one candidate on :data:`SELECTION_SPLIT`."""
    errors, steps = held_out_errors(teacher, apply(spec, changes), seeds)
    return Trial(dict(changes), tuple(errors), steps)


TrialFn = Callable[[Teacher, TeachingSpec, dict, Sequence[int]], Trial]


def select(
    teacher: Teacher,
    spec: TeachingSpec,
    candidates: Sequence[dict[str, Any]],
    seeds: Sequence[int] = SELECTION_SEEDS,
    *,
    trial: TrialFn = evaluate_trial,
) -> Selection:
    """Score every candidate with `trial` (a caller may wrap :func:`evaluate_trial`, e.g. to
    resume from stored trials) and choose the lowest mean held-out error."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    if not seeds:
        raise ValueError("a selection needs at least one student seed")
    trials = tuple(trial(teacher, spec, dict(c), tuple(seeds)) for c in candidates)
    best = min(range(len(trials)), key=lambda i: (trials[i].error, i))
    return Selection(dict(candidates[best]), trials, SELECTION_SPLIT, tuple(seeds))


def search_lr(
    teacher: Teacher,
    spec: TeachingSpec,
    lrs: Sequence[float],
    seeds: Sequence[int] = SELECTION_SEEDS,
    *,
    trial: TrialFn = evaluate_trial,
) -> Selection:
    """The student lr for `teacher` (frozen, e.g. a fixed loss), chosen from `lrs`."""
    _check_lrs(lrs)
    return select(teacher, spec, [{"lr": float(lr)} for lr in lrs], seeds, trial=trial)


def choose_start_and_lr(
    spec: TeachingSpec,
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: Sequence[int] = SELECTION_SEEDS,
    *,
    teacher: Teacher | None = None,
    trial: TrialFn = evaluate_trial,
) -> Selection:
    """The bilinear family's start and the student lr, chosen jointly on held-out error.

    `grid` maps ``"start"`` to starts (names of envs.losses.BILINEAR_STARTS or numbers) and
    ``"lr"`` to student lrs (defaults: both named starts, :data:`START_LRS`). `teacher` is what
    is scored at each point, frozen: by default the family's untrained start itself (action 0
    throughout, :class:`~teachers.fixed.FixedTeacher`); a learning teacher passes its untrained
    self. It must act on the bilinear family."""
    grid = dict(grid or {})
    unknown = set(grid) - set(CHOICES)
    if unknown:
        raise ValueError(f"the grid may hold {list(CHOICES)}, got {sorted(unknown)}")
    starts = list(grid.get("start", BILINEAR_STARTS))
    lrs = list(grid.get("lr", START_LRS))
    if not starts:
        raise ValueError("no bilinear starts to choose from")
    _check_lrs(lrs)
    teacher = teacher if teacher is not None else FixedTeacher(family="bilinear")
    family = teacher.spec_for(spec).loss
    if family != "bilinear":
        raise ValueError(
            f"choose_start_and_lr chooses the bilinear family's start; {teacher!r} acts on "
            f"{family!r}"
        )
    candidates = [{"start": s, "lr": float(lr)} for s, lr in itertools.product(starts, lrs)]
    return select(teacher, spec, candidates, seeds, trial=trial)


def acts_on_bilinear(teacher: Teacher, spec: TeachingSpec) -> bool:
    """Whether `teacher` trains its students on the bilinear family under `spec`."""
    return teacher.spec_for(spec).loss == "bilinear"


def _check_lrs(lrs: Sequence[float]) -> None:
    if not lrs or any(not (float(lr) > 0) for lr in lrs):
        raise ValueError(f"student learning rates must be positive numbers, got {list(lrs)}")
