"""Teachers that do not learn: fixed losses and random coefficients.

``ce``, ``label-smoothing`` and ``gce`` switch the env to their own loss family at its default
coefficients, so the student sees exactly that loss through the same process, optimiser and
schedule as under every other teacher: differences come from the loss alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from teachers.base import Teacher, TeachingSpec


def _check_lr(lr: float | None) -> None:
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise ValueError(f"a fixed teacher's student lr must be a positive number, got {lr!r}")


@dataclass
class FixedConfig:
    """``fixed``: one constant action."""

    action: list[float] | None = None
    """the action in [-1, 1]^d taken at every step; None = the family's default coefficients"""
    family: str | None = None
    """the loss family acted on; None = the spec's"""
    lr: float | None = None
    """the student's learning rate under this loss (tuned on dev per loss, as baselines should
    be); None = the spec's"""

    def __post_init__(self) -> None:
        if self.action is not None:
            self.action = [float(a) for a in self.action]
        _check_lr(self.lr)


@dataclass
class CEConfig:
    """``ce``: plain cross-entropy."""

    lr: float | None = None
    """the student's learning rate (None = the spec's)"""

    def __post_init__(self) -> None:
        _check_lr(self.lr)


@dataclass
class LabelSmoothingConfig:
    """``label-smoothing``: cross-entropy against (1 - epsilon) one-hot + epsilon uniform."""

    epsilon: float = 0.1
    """the smoothing, in [0, 0.5] (the family's range)"""
    lr: float | None = None
    """the student's learning rate (None = the spec's)"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 0.5:
            raise ValueError(f"label smoothing epsilon must lie in [0, 0.5], got {self.epsilon}")
        _check_lr(self.lr)


@dataclass
class GCEConfig:
    """``gce``: generalized cross-entropy (1 - p_y^q) / q."""

    q: float = 0.7
    """the exponent, in [0, 1]: 0 is cross-entropy, 1 the mean absolute error (paper: 0.7)"""
    lr: float | None = None
    """the student's learning rate (None = the spec's)"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"GCE exponent q must lie in [0, 1], got {self.q}")
        _check_lr(self.lr)


@dataclass
class RandomConfig:
    """``random``: uniform random actions."""

    seed: int = 0
    """seed of the action stream (the runner sets the unit's fitting seed)"""
    family: str | None = None
    """the loss family acted on; None = the spec's"""


class FixedTeacher(Teacher):
    """A constant action (default: the family's default coefficients)."""

    name = "fixed"
    Config = FixedConfig

    def __init__(self, config: FixedConfig | None = None, /, **options) -> None:
        super().__init__(config, **options)
        action = self.constant_action()
        self._action: np.ndarray | None = None if action is None else np.asarray(action, np.float32)
        self._use_default = action is None
        self.lr = self.cfg.lr

    def constant_action(self) -> list[float] | None:
        """The action this teacher takes at every step; None = the family's default."""
        return self.cfg.action

    def spec_for(self, spec: TeachingSpec) -> TeachingSpec:
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


class BoxCentreTeacher(FixedTeacher):
    """Action 0 at every step: the centre of the family's action box (a family's default
    coefficients need not lie there: compact's default is plain CE, its centre a GCE-like mix).
    It is where an untrained policy-gradient teacher acts (its mean's last layer starts near
    zero), so the lr search scores it for them (Teacher.frozen_start)."""

    name = "box-centre"

    def begin_episode(self, env) -> None:
        self._action = np.zeros(env.action_space.shape, np.float32)


class CrossEntropyTeacher(FixedTeacher):
    """Plain cross-entropy (the ``ce`` family at tau = 1)."""

    name = "ce"
    family = "ce"
    Config = CEConfig

    def constant_action(self) -> None:
        return None


class LabelSmoothingTeacher(FixedTeacher):
    """Cross-entropy with label smoothing epsilon (default 0.1)."""

    name = "label-smoothing"
    family = "label-smoothing"
    Config = LabelSmoothingConfig

    def constant_action(self) -> list[float]:
        return [4 * self.cfg.epsilon - 1]  # the family's affine map: eps = 0.25 (a + 1)


class GCETeacher(FixedTeacher):
    """Generalized cross-entropy (1 - p_y^q) / q (Zhang & Sabuncu 2018), q = 0.7 by default:
    the robust fixed loss of the noisy-label literature."""

    name = "gce"
    family = "gce"
    Config = GCEConfig

    def constant_action(self) -> list[float]:
        return [2 * self.cfg.q - 1]  # the family's affine map: q = (a + 1) / 2


class RandomTeacher(Teacher):
    """Uniform random actions in [-1, 1]^d, seeded: the floor any learning teacher must beat."""

    name = "random"
    Config = RandomConfig

    def __init__(self, config: RandomConfig | None = None, /, **options) -> None:
        super().__init__(config, **options)
        self._rng = np.random.default_rng(self.cfg.seed)
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
