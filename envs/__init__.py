"""The training process and the Gymnasium environments that expose it.

Importing this package registers ``l2t/LossTeaching-v0`` (defaults: mnist5k, mlp, bilinear).
"""

import os

import gymnasium
import torch

from envs.batched import BatchedTeachingProcess
from envs.loss_teaching import LossTeachingEnv
from envs.losses import LOSSES, LossFamily, make_loss
from envs.process import StudentState, TeachingProcess
from envs.rewards import REWARDS
from envs.state import DefaultState
from envs.vector import LossTeachingVectorEnv

ENV_ID = "l2t/LossTeaching-v0"

# A process forked after torch has used its OpenMP pool deadlocks at its first parallel op (libgomp
# is not fork-safe): gymnasium's AsyncVectorEnv and SB3's SubprocVecEnv fork by default on Linux.
# Forked children run torch single-threaded, as torch's own DataLoader workers do.
os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))

if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="envs.loss_teaching:LossTeachingEnv",
        vector_entry_point="envs.vector:LossTeachingVectorEnv",
    )

__all__ = [
    "ENV_ID",
    "BatchedTeachingProcess",
    "LOSSES",
    "REWARDS",
    "DefaultState",
    "LossFamily",
    "LossTeachingEnv",
    "LossTeachingVectorEnv",
    "StudentState",
    "TeachingProcess",
    "make_loss",
]
