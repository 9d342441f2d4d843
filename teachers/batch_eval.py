"""Teach many fresh students with one frozen teacher in one batch (envs/vector.py).

``teach_batch(teacher, spec, seeds)`` gives, for each seed, the :class:`EpisodeResult` that
``teacher.teach(spec, seed)`` gives (same rows, coefficients and final metrics, up to float
rounding between the batched and the single student step), but the students train together in
one vmapped step. The teacher acts on each student's observation in turn, so this is for teachers
whose action depends on the observation alone (fixed losses, L2T-DLF, REINFORCE, PPO, A2C);
``random`` draws its actions from one stream across the batch, and a teacher whose action reads
the student it is bound to (L2T-DLN's look-ahead; ``Teacher.acts_on_observation`` False) is
refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from envs.vector import LossTeachingVectorEnv, unbatch_info
from teachers.base import REPORTED_SPLITS, EnvSpec, EpisodeResult, Teacher


def teach_batch(teacher: Teacher, spec: EnvSpec, seeds: Sequence[int]) -> list[EpisodeResult]:
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
    family = venv.family
    obs, infos = venv.reset(seed=[int(s) for s in seeds])
    teacher.begin_episode(venv.template)
    n = len(seeds)
    rows = [[{"t": 0, "reward": 0.0, **info}] for info in unbatch_info(infos, n)]
    coeffs: list[list[np.ndarray]] = [[] for _ in range(n)]
    finals: list[dict | None] = [None] * n
    active = np.ones(n, dtype=bool)
    t = 0
    while active.any():
        actions = np.stack(
            [teacher.act(obs[i]) if active[i] else family.default_action() for i in range(n)]
        )
        obs, rewards, terminated, truncated, infos = venv.step(actions)
        t += 1
        step_infos = unbatch_info(infos, n)
        for i in np.flatnonzero(active):
            coeffs[i].append(family.action_to_coeffs(actions[i]).numpy().astype(np.float32))
            rows[i].append({"t": t, "reward": float(rewards[i]), **step_infos[i]})
        done = np.flatnonzero(active & (terminated | truncated))
        if len(done):  # evaluate now: next step would autoreset these students
            # "dev" in the records is dev's held-out select part (teachers.base.final_metrics)
            ev = {split: venv.process.evaluate(p) for split, p in REPORTED_SPLITS.items()}
            for i in done:
                finals[i] = {
                    "diverged": bool(terminated[i]),
                    "student_steps": int(venv.process.steps[i]),
                    "meta_size": venv.process.meta_size,
                    "select_size": len(venv.process.data.y_dev) - venv.process.meta_size,
                }
                for split, m in ev.items():
                    finals[i][f"{split}_loss"] = float(m["loss"][i])
                    finals[i][f"{split}_error"] = float(m["error"][i])
            active[done] = False
    wall = (time.perf_counter() - start) / n  # the batch's wall time, shared out per student
    for f in finals:
        f["wall_time"] = wall
    venv.close()
    return [EpisodeResult(int(s), rows[i], coeffs[i], finals[i]) for i, s in enumerate(seeds)]
