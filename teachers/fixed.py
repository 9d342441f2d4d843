"""Teachers that do not learn: fixed losses and random coefficients.

``ce``, ``label-smoothing`` and ``gce`` switch the env to their own loss family at its default
coefficients, so the student sees exactly that loss through the same process, optimiser and
schedule as under every other teacher: differences come from the loss alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from teachers.base import EnvSpec, Teacher


class FixedTeacher(Teacher):
    """A constant action (default: the family's default coefficients)."""

    name = "fixed"

    def __init__(
        self,
        action: Sequence[float] | None = None,
        family: str | None = None,
        lr: float | None = None,
    ) -> None:
        super().__init__(action=None if action is None else list(map(float, action)), family=family)
        self._action: np.ndarray | None = None if action is None else np.asarray(action, np.float32)
        self._use_default = action is None
        self.lr = _check_lr(lr)
        if lr is not None:
            self.config["lr"] = lr

    def spec_for(self, spec: EnvSpec) -> EnvSpec:
        """A fixed loss may bring its own student lr (tuned on dev, per loss, as baselines
        should be); None keeps the spec's."""
        spec = super().spec_for(spec)
        return spec if self.lr is None else spec.replace(lr=self.lr)

    def begin_episode(self, env) -> None:
        family = env.unwrapped.family
        if self._use_default:  # the default of *this* env's family, every episode
            self._action = family.default_action()
        else:  # validate shape and values against this env's family, clearly
            family.validate_action(self._action)

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self._action is None:
            raise RuntimeError("FixedTeacher without an action: call begin_episode(env) first")
        return self._action


class CrossEntropyTeacher(FixedTeacher):
    """Plain cross-entropy (the ``ce`` family at tau = 1)."""

    name = "ce"
    family = "ce"

    def __init__(self, lr: float | None = None) -> None:
        super().__init__(family="ce", lr=lr)
        self.config = {} if lr is None else {"lr": lr}


class LabelSmoothingTeacher(FixedTeacher):
    """Cross-entropy with label smoothing epsilon (default 0.1)."""

    name = "label-smoothing"
    family = "label-smoothing"

    def __init__(self, epsilon: float = 0.1, lr: float | None = None) -> None:
        super().__init__(action=[4 * epsilon - 1], family="label-smoothing", lr=lr)
        self.config = {"epsilon": epsilon, **({} if lr is None else {"lr": lr})}


class GCETeacher(FixedTeacher):
    """Generalized cross-entropy (1 - p_y^q) / q (Zhang & Sabuncu 2018), q = 0.7 by default:
    the robust fixed loss of the noisy-label literature."""

    name = "gce"
    family = "gce"

    def __init__(self, q: float = 0.7, lr: float | None = None) -> None:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"GCE exponent q must lie in [0, 1], got {q}")
        super().__init__(action=[2 * q - 1], family="gce", lr=lr)
        self.config = {"q": q, **({} if lr is None else {"lr": lr})}


class RandomTeacher(Teacher):
    """Uniform random actions in [-1, 1]^d, seeded: the floor any learning teacher must beat."""

    name = "random"

    def __init__(self, seed: int = 0, family: str | None = None) -> None:
        super().__init__(seed=seed, family=family)
        self._rng = np.random.default_rng(seed)
        self._dim: int | None = None

    def begin_episode(self, env) -> None:
        self._dim = env.unwrapped.family.dim

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self._dim is None:
            raise RuntimeError("RandomTeacher: call begin_episode(env) first")
        return self._rng.uniform(-1.0, 1.0, self._dim).astype(np.float32)

    def state_dict(self) -> dict:
        # the generator's position, so a saved and reloaded teacher continues the same sequence
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if "rng" in state:
            self._rng.bit_generator.state = state["rng"]


def _check_lr(lr: float | None) -> float | None:
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise ValueError(f"a fixed teacher's student lr must be a positive number, got {lr!r}")
    return lr
