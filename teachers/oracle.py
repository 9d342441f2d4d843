"""Data-level rows of a comparison: plain CE on a different training set.

``ce+meta``: CE on the training split plus dev's ``meta`` part (clean labels), the cheapest use
of the clean set every learned teacher may read; a teacher that learns from ``meta`` should at
least beat simply training on it. ``oracle``: CE on only the training examples whose labels the
corruption did not flip (``students.corruption``'s mask), the limit of what undoing the noise
could give; marked ``is_oracle`` so tables show it as the setting's limit, not as a teacher
(no teacher knows which labels were flipped). Both learn nothing (no fit budget); the process
changes its training split itself (``TeachingProcess.set_training_data``) before the first step.
"""

from __future__ import annotations

from teachers.fixed import CrossEntropyTeacher


class CEMetaTeacher(CrossEntropyTeacher):
    """Plain CE on train + meta (the data-level baseline)."""

    name = "ce+meta"
    acts_on_observation = False  # its students' data are set through the bound process

    def begin_episode(self, env) -> None:
        super().begin_episode(env)
        env.unwrapped.process.set_training_data(add_meta=True)


class OracleTeacher(CrossEntropyTeacher):
    """Plain CE on the unflipped training examples only: the setting's limit, not a teacher."""

    name = "oracle"
    is_oracle = True
    acts_on_observation = False

    def begin_episode(self, env) -> None:
        super().begin_episode(env)
        env.unwrapped.process.set_training_data(drop_flipped=True)
