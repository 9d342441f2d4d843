"""Teach many fresh students with one frozen teacher in one batch (envs/vector.py).

``teach_batch(teacher, spec, seeds)`` gives, for each seed, the :class:`EpisodeResult` that
``teacher.teach(spec, seed)`` gives (same rows, coefficients and final metrics, up to float
rounding between the batched and the single student step), but the students train together in
one vmapped step, through the base's batched episode loop (``Teacher.rollout_batch``). The
teacher acts on each student's observation in turn, so this is for teachers
whose action depends on the observation alone (fixed losses, L2T-DLF, REINFORCE, PPO, A2C);
``random`` draws its actions from one stream across the batch, and a teacher whose action reads
the student it is bound to (L2T-DLN's look-ahead; ``Teacher.acts_on_observation`` False) is
refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from envs.losses import LOSSES
from envs.vector import LossTeachingVectorEnv, unbatch_info
from teachers.base import REPORTED_SPLITS, EpisodeResult, Teacher, TeachingSpec, teaching_cost

SEQUENTIAL = frozenset({"random"})
"""teachers whose students depend on the order they are taught in (``random`` draws every action
from one stream: taught one after another, student j's actions follow student j-1's)"""


def batchable(teacher: Teacher, spec: TeachingSpec) -> bool:
    """Whether :func:`teach_batch` gives this teacher's students as ``teacher.teach`` would (up
    to float rounding): it acts on the observation alone, its students do not depend on their
    order, and its loss family does not read the classifier's features (which the batched
    process does not expose)."""
    if not teacher.acts_on_observation or teacher.name in SEQUENTIAL:
        return False
    loss = teacher.spec_for(spec).loss
    return not (loss in LOSSES and LOSSES[loss].needs_head)


def teach_batch(teacher: Teacher, spec: TeachingSpec, seeds: Sequence[int]) -> list[EpisodeResult]:
    """One fresh student per seed, all taught at once; see the module docstring."""
    if not teacher.acts_on_observation:
        raise ValueError(
            f"teacher {teacher.name!r} acts on the one student it is bound to, not on an "
            "observation; teach its students one at a time with teacher.teach(spec, seed)"
        )
    if len(seeds) < 1:
        raise ValueError("teach_batch needs at least one seed")
    spec = teacher.spec_for(spec)
    start = time.perf_counter()
    venv = LossTeachingVectorEnv(len(seeds), **spec.to_dict())
    meter, spent = venv.process.cost, venv.process.cost.total
    family = venv.family
    # the label noise applied, in the records as teacher.teach reports it (final_metrics)
    corruption = venv.process.template.corruption
    flipped = {}
    if corruption.get("train_flipped_fraction"):
        flipped["train_flipped_fraction"] = corruption["train_flipped_fraction"]
    teacher.begin_episode(venv.template)
    n = len(seeds)
    rows: list[list[dict]] = [[] for _ in range(n)]
    coeffs: list[list[np.ndarray]] = [[] for _ in range(n)]
    finals: list[dict | None] = [None] * n
    for t, step in enumerate(teacher.rollout_batch(venv, seeds)):
        infos = unbatch_info(step.infos, n)
        for i in np.flatnonzero(step.active):
            if step.actions is not None:
                coeffs[i].append(
                    family.action_to_coeffs(step.actions[i]).numpy().astype(np.float32)
                )
            rows[i].append({"t": t, "reward": float(step.rewards[i]), **infos[i]})
        if step.done.any():  # evaluate now: the next step would autoreset these students
            # "dev" in the records is dev's held-out select part (teachers.base.final_metrics)
            ev = {split: venv.process.evaluate(p) for split, p in REPORTED_SPLITS.items()}
            for i in np.flatnonzero(step.done):
                finals[i] = {
                    "diverged": bool(step.terminated[i]),
                    "student_steps": int(venv.process.steps[i]),
                    **flipped,
                    "meta_size": venv.process.meta_size,
                    "select_size": len(venv.process.data.y_dev) - venv.process.meta_size,
                }
                for split, m in ev.items():
                    finals[i][f"{split}_loss"] = float(m["loss"][i])
                    finals[i][f"{split}_error"] = float(m["error"][i])
    # the batch's wall time and cost, shared out per student as the batch ran them together
    wall = (time.perf_counter() - start) / n
    cost = (meter.total - spent) / n
    for f in finals:
        f["wall_time"] = wall
        f.update(teaching_cost(cost, f["student_steps"]))
    venv.close()
    return [EpisodeResult(int(s), rows[i], coeffs[i], finals[i]) for i, s in enumerate(seeds)]
