"""The ``large-margin`` baseline: L-Softmax (envs/large_margin.py) with the usual annealing.

L-Softmax is hard to train from scratch at a large margin, so its authors mix it with plain
softmax, f_y = (beta cos-term + psi-term) / (1 + beta), and decay beta per iteration:

    beta_t = max(beta_min, beta_0 (1 + gamma t)^(-power))     t = student SGD step

The defaults (beta_0 = 1000, gamma = 0.12, power = 1, beta_min = 0, m = 4) are the authors'
released MNIST settings as we recall them (unverified against their prototxt). The teacher sets
lambda_t = 1 / (1 + beta_t) at the start of every env step (constant over its interval); it
learns nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from teachers.base import Teacher, TeachingSpec


@dataclass
class LargeMarginConfig:
    """The annealing beta_t = max(beta_min, beta_0 (1 + gamma t)^(-power)) and the margin."""

    margin: int = 4
    """m, the integer angular margin (Liu et al. used 2-4, 4 on MNIST)"""
    beta0: float = 1000.0
    """beta_0: the weight of plain softmax at the start"""
    gamma: float = 0.12
    """decay rate of beta per student SGD step"""
    power: float = 1.0
    """decay exponent"""
    beta_min: float = 0.0
    """floor of beta"""

    def __post_init__(self) -> None:
        if not isinstance(self.margin, int) or self.margin < 1:
            raise ValueError(f"margin must be an integer >= 1, got {self.margin!r}")
        if min(self.beta0, self.gamma, self.power, self.beta_min) < 0:
            raise ValueError("beta0, gamma, power and beta_min must be >= 0")


class LargeMarginTeacher(Teacher):
    """Fixed, annealed L-Softmax: lambda_t = 1 / (1 + beta_t) on the ``large-margin`` family."""

    name = "large-margin"
    family = "large-margin"
    Config = LargeMarginConfig

    def __init__(self, config: LargeMarginConfig | None = None, /, **options) -> None:
        super().__init__(config, **options)
        self._process = None

    def spec_for(self, spec: TeachingSpec) -> TeachingSpec:
        own = spec.loss_kwargs if spec.loss == "large-margin" else {}  # not another family's
        kwargs = {**own, "margin": self.config["margin"]}
        return spec.replace(loss="large-margin", loss_kwargs=kwargs)

    def beta(self, step: int) -> float:
        c = self.config
        return max(c["beta_min"], c["beta0"] * (1.0 + c["gamma"] * step) ** (-c["power"]))

    def begin_episode(self, env) -> None:
        self._process = env.unwrapped.process

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self._process is None:
            raise RuntimeError("LargeMarginTeacher: call begin_episode(env) first")
        lam = 1.0 / (1.0 + self.beta(self._process.step))
        return np.array([2.0 * lam - 1.0], dtype=np.float32)
