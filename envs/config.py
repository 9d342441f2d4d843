"""The env's configuration, defined once: every keyword a teaching run is built from, with its
default.

:class:`EnvConfig` is the source. ``teachers.base.EnvSpec`` is this dataclass plus methods (the
unit of equal comparison, recorded by ``to_dict`` in results' config.json files);
:class:`~envs.loss_teaching.LossTeachingEnv` and :class:`~envs.process.TeachingProcess` take their
keyword defaults from :data:`DEFAULTS` (the process the fields in :data:`PROCESS_FIELDS`, plus
``dtype`` as a torch dtype), and the optimiser's defaults come from
:class:`students.optim.SGDConfig`. ``tests/test_config.py`` checks the signatures against the
fields, so a default lives in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from students.data import Splits
from students.optim import SGDConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class EnvConfig:
    """Everything needed to build a :class:`~envs.loss_teaching.LossTeachingEnv` (bar its
    callables: ``state_fn``, a reward function, ``divergence_penalty``, ``download``)."""

    dataset: str | Splits = "mnist5k"
    """a name from students.data.DATASETS, a path to an .npz file (students/user_data.py), or
    in-memory Splits (students.data.from_tensors)"""
    student: str = "mlp"
    """a name from students.models.STUDENTS"""
    loss: str = "bilinear"
    """the loss family teachers act on when they have no family of their own"""
    horizon: int = 12
    """env steps (teacher decisions) per episode"""
    interval: int = 50
    """student SGD steps per env step"""
    batch_size: int = 64
    lr: float = SGDConfig.lr
    momentum: float = SGDConfig.momentum
    weight_decay: float = SGDConfig.weight_decay
    schedule: str = SGDConfig.schedule
    reward: str = "dev-accuracy-delta"
    dev_subset: int = 256
    """dev examples behind each step's state and reward (a fixed subset: bounded cost)"""
    device: str = "auto"
    dtype: str = "float32"
    """a key of DTYPES"""
    data_root: str | None = None
    student_kwargs: dict = field(default_factory=dict)
    loss_kwargs: dict = field(default_factory=dict)
    label_noise: float = 0.0
    """fraction of training labels flipped (students/corruption.py); dev too with noisy_dev"""
    label_noise_kind: str = "symmetric"
    """'symmetric' (uniform over the other classes) or 'pairflip' (c -> c + 1 mod C)"""
    noisy_dev: bool = False
    imbalance: float = 1.0
    """long-tailed training split: largest / smallest class count (1 = as loaded)"""
    lr_action: bool = False
    """append one action to every loss family: the student's lr becomes schedule(t) * 2^(2 a),
    a in [-1, 1] (envs.losses.LearningRateAction); off keeps every family and result as before"""


DEFAULTS = EnvConfig()
"""the defaults, read by the env's and the process's signatures"""

PROCESS_FIELDS = (
    "dataset",
    "student",
    "loss",
    "batch_size",
    "dev_subset",
    "device",
    "data_root",
    "student_kwargs",
    "loss_kwargs",
    "label_noise",
    "label_noise_kind",
    "noisy_dev",
    "imbalance",
    "lr_action",
)
"""the fields :class:`~envs.process.TeachingProcess` takes as they are (besides ``dtype``, as a
torch dtype; the optimiser fields reach it as an SGDConfig, the episode fields stay in the env)"""
