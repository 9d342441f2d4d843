"""How many students an RL teacher trains at once while fitting: decided once per fit, from its
budget.

Eight students stepped together in one batched process (envs/vector.py: one vmapped student
step, one observation pass and one policy forward for all) fit REINFORCE, PPO and A2C at
0.8-1.3x the wall time of plain training of their budget, where one student at a time cost
1.1-2.4x (benchmarks/README.md, "RL teachers on the batched vector env"). But a batch of n
students is n episodes' worth of budget per policy update (REINFORCE) or per rollout (SB3), so a
small budget would make few updates, or none. The rule: the most students, up to
:data:`MAX_ENVS`, such that the budget still holds the teacher's ``min_updates`` updates at that
width; 1 (the single env, the old default) when even two do not fit, and when the spec builds an
env of its own (a :class:`~teachers.base.TeachingSpec` subclass overriding ``make_env``, e.g. a
reward wrapper), which the batched process would not reproduce.
"""

from __future__ import annotations

from teachers.base import TeachingSpec

MAX_ENVS = 8
"""the widest batch the default picks: where the measured fit cost fell to <= 1.5x"""


def spec_batchable(spec: TeachingSpec) -> bool:
    """The batched process builds the spec's own env (its fields), not a subclass's env."""
    return type(spec).make_env is TeachingSpec.make_env


def students_at_once(
    units: float, per_student: float, min_updates: int, *, cap: int = MAX_ENVS
) -> int:
    """The most students n <= `cap` such that `min_updates` updates of n students, each
    `per_student` units of budget, fit in `units`; at least 1."""
    if per_student <= 0:
        raise ValueError(f"a student's share of an update must be positive, got {per_student}")
    return int(max(1, min(cap, units // (per_student * min_updates))))
