"""The training process and the Gymnasium environments that expose it.

Importing this package registers ``l2t/LossTeaching-v0`` (defaults: mnist5k, mlp, bilinear).
"""

import gymnasium

from envs.loss_teaching import LossTeachingEnv
from envs.losses import LOSSES, LossFamily, make_loss
from envs.process import OptState, TeachingProcess
from envs.rewards import REWARDS
from envs.state import DefaultState

ENV_ID = "l2t/LossTeaching-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="envs.loss_teaching:LossTeachingEnv")

__all__ = [
    "ENV_ID",
    "LOSSES",
    "REWARDS",
    "DefaultState",
    "LossFamily",
    "LossTeachingEnv",
    "OptState",
    "TeachingProcess",
    "make_loss",
]
