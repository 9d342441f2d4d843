"""The env's configuration, defined once: every field a teaching run is built from, with its
default, its type, its check and its help, in :class:`EnvConfig`.

Everything else is generated from that one declaration:

* :class:`~envs.loss_teaching.LossTeachingEnv` and :class:`~envs.process.TeachingProcess` take
  the fields as keyword arguments (:func:`take`: checked, unknown keywords refused with a
  suggestion), and their signatures list them (:func:`keywords`);
* :data:`PROCESS_FIELDS` / :data:`OPTIM_FIELDS` / :data:`ENV_FIELDS` say which component keeps
  each field (the optimiser's become a ``students.optim.SGDConfig``);
* ``teachers.base.TeachingSpec`` (the unit of equal comparison, recorded in results' config.json) is
  this dataclass plus methods;
* ``l2t compare`` has one flag per field, ``--batch-size`` for ``batch_size``
  (``analysis.cli_checks.add_config_options``), whose text is read by :attr:`Check.parse` and
  checked by the same :class:`Check`, so a bad value is a one-line error naming the flag.

Adding a field is one line here.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from envs.loss_family import LossFamily
from envs.losses import LOSSES
from envs.rewards import REWARDS
from students.corruption import NOISE_KINDS
from students.data import DATASETS, Splits, is_npz_path
from students.models import STUDENTS
from students.names import unknown_name_error
from students.optim import SCHEDULES, SGDConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICE_TYPES = ("cpu", "cuda", "mps")


# -- a field's type: how text becomes a value and which values are valid --------------------------
@dataclass(frozen=True)
class Check:
    """A field's type and validation: ``check(value)`` raises ``ValueError`` with a one-line
    message (without the field's name, which the caller puts in front: the keyword, or the
    command line's flag); ``parse(text)`` reads the command line's text."""

    what: str
    """what a valid value is, for the message: "a positive integer" """
    ok: Callable[[Any], bool]
    parse: Callable[[str], Any] = str
    names: Mapping[str, Any] | Iterable[str] | None = None
    """a registry: an unknown name gets the registry's message (valid names, nearest one)"""
    kind: str = ""
    """what the registry holds, for that message: "dataset", "student", ..."""

    def __call__(self, value: Any) -> Any:
        if not self.ok(value):
            if self.names is not None and isinstance(value, str):
                raise unknown_name_error(self.kind, value, self.names)
            raise ValueError(f"expected {self.what}, got {value!r}")
        return value


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _integer(text: str) -> int:
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def read_json_object(text: str) -> dict:
    """Inline JSON or @file.json holding one object; ValueError (one line) otherwise."""
    try:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
    except OSError as err:
        raise ValueError(f"cannot read {text[1:]!r}: {err.strerror}") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err}): {raw!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f'expected {{"option": value, ...}}, got {value!r}')
    return value


def _device(v: Any) -> bool:
    if isinstance(v, torch.device):
        return v.type in DEVICE_TYPES
    if not isinstance(v, str):
        return False
    if v == "auto":
        return True
    try:
        return torch.device(v).type in DEVICE_TYPES
    except (RuntimeError, ValueError):
        return False


def choice(kind: str, names: Mapping[str, Any] | Iterable[str], *, also: type | None = None):
    """A name from a registry (or, in the library, an instance of `also`)."""
    names = names if isinstance(names, Mapping) else tuple(names)
    return Check(
        f"a {kind} name",
        lambda v: (isinstance(v, str) and v in names) or (also is not None and isinstance(v, also)),
        names=names,
        kind=kind,
    )


POSITIVE_INT = Check("a positive integer", lambda v: _int(v) and v >= 1, _integer)
POSITIVE = Check("a positive number", lambda v: _real(v) and v > 0, _number)
NON_NEGATIVE = Check("a number >= 0", lambda v: _real(v) and v >= 0, _number)
FRACTION = Check("a fraction in [0, 1)", lambda v: _real(v) and 0 <= v < 1, _number)
RATIO = Check("a ratio >= 1", lambda v: _real(v) and v >= 1, _number)
FLAG = Check("True or False", lambda v: isinstance(v, bool))
KEYWORDS = Check(
    "a dict of keyword arguments", lambda v: v is None or isinstance(v, dict), read_json_object
)
FOLDER = Check("a folder (or None)", lambda v: v is None or isinstance(v, (str, os.PathLike)))
DEVICE = Check("auto or a torch device name: cpu, cuda, cuda:N or mps", _device)
DATASET = Check(
    "a dataset name, an .npz path or Splits",
    lambda v: isinstance(v, Splits) or is_npz_path(v) or (isinstance(v, str) and v in DATASETS),
    names=DATASETS,
    kind="dataset",
)
REWARD = Check(
    "a reward name or a function (prev_info, info, done) -> float",
    lambda v: callable(v) or (isinstance(v, str) and v in REWARDS),
    names=REWARDS,
    kind="reward",
)
DTYPE = Check(
    "float32 or float64",
    lambda v: (isinstance(v, str) and v in DTYPES) or v in DTYPES.values(),
    names=DTYPES,
    kind="dtype",
)

PROCESS, OPTIM, ENV = "process", "optim", "env"
"""the component that keeps a field: TeachingProcess, its SGDConfig, or the env itself"""


def setting(default: Any, help: str, check: Check, owner: str) -> Any:
    """One field of :class:`EnvConfig`: its default, help (= ``--help``), check and owner."""
    meta = {"help": help, "check": check, "owner": owner}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class EnvConfig:
    """Everything needed to build a :class:`~envs.loss_teaching.LossTeachingEnv` (bar its
    callables: ``state_fn``, a reward function, ``divergence_penalty``, ``download``)."""

    # fmt: off
    dataset: str | Splits = setting("mnist5k", "a name from `l2t datasets` or a path to an .npz file (README: your own data); in Python also in-memory Splits", DATASET, PROCESS)  # noqa: E501
    student: str = setting("mlp", "the student network, a name from `l2t students`", choice("student", STUDENTS), PROCESS)  # noqa: E501
    loss: str = setting("bilinear", "the loss family for teachers without their own (`l2t losses`)", choice("loss", LOSSES, also=LossFamily), PROCESS)  # noqa: E501
    horizon: int = setting(12, "teacher decisions (env steps) per episode", POSITIVE_INT, ENV)
    interval: int = setting(50, "student SGD steps per teacher decision", POSITIVE_INT, ENV)
    batch_size: int = setting(64, "student minibatch size", POSITIVE_INT, PROCESS)
    lr: float = setting(SGDConfig.lr, "student learning rate eta_0", POSITIVE, OPTIM)
    momentum: float = setting(SGDConfig.momentum, "student SGD momentum", FRACTION, OPTIM)
    weight_decay: float = setting(SGDConfig.weight_decay, "student weight decay", NON_NEGATIVE, OPTIM)  # noqa: E501
    schedule: str = setting(SGDConfig.schedule, "learning-rate schedule over an episode", choice("schedule", SCHEDULES), OPTIM)  # noqa: E501
    reward: str = setting("dev-accuracy-delta", "dev-accuracy-delta (an episode's return = final - initial dev accuracy), dev-loss-delta or terminal", REWARD, ENV)
    dev_subset: int = setting(256, "dev examples behind each step's state and reward (a fixed subset: bounded cost); the first of meta", POSITIVE_INT, PROCESS)  # noqa: E501
    meta_size: int = setting(256, "dev's first meta_size examples form meta, the clean labelled set a teacher may learn from (rewards, hypergradients, extra data); the rest form select, held out for choosing lr, checkpoints and fitted teachers and for the dev error reported", POSITIVE_INT, PROCESS)  # noqa: E501
    device: str = setting("auto", "where students train: auto (CUDA when present), cpu, cuda, cuda:1, mps", DEVICE, PROCESS)  # noqa: E501
    dtype: str = setting("float32", "student float type: float32, or float64 for finite-difference checks", DTYPE, PROCESS)  # noqa: E501
    data_root: str | None = setting(None, "folder of torchvision datasets (`l2t data fetch`)", FOLDER, PROCESS)  # noqa: E501
    student_kwargs: dict = setting({}, 'JSON or @file for the student, e.g. \'{"hidden": 512}\' (`l2t students`)', KEYWORDS, PROCESS)  # noqa: E501
    loss_kwargs: dict = setting({}, 'JSON or @file for the loss family, e.g. \'{"epsilon": 0.2}\' (`l2t losses`)', KEYWORDS, PROCESS)  # noqa: E501
    label_noise: float = setting(0.0, "fraction of training labels flipped, seeded (students/corruption.py); test is never touched", FRACTION, PROCESS)  # noqa: E501
    label_noise_kind: str = setting("symmetric", "symmetric (uniform over the other classes) or pairflip (c -> c + 1 mod C)", choice("noise kind", NOISE_KINDS), PROCESS)  # noqa: E501
    noisy_dev: bool = setting(False, "flip dev labels too (default: dev stays the clean set teachers select on)", FLAG, PROCESS)  # noqa: E501
    imbalance: float = setting(1.0, "long-tailed training split: largest / smallest class count (1 = as loaded)", RATIO, PROCESS)  # noqa: E501
    lr_action: bool = setting(False, "append one action to every loss family: the student lr becomes schedule(t) * 2^(2 a), a in [-1, 1] (envs.losses.LearningRateAction); off keeps every family and result as before", FLAG, PROCESS)  # noqa: E501
    # fmt: on

    def validate(self) -> EnvConfig:
        """Check every field; the first bad one raises a one-line ValueError naming it."""
        for f in dataclasses.fields(EnvConfig):
            check_field(f.name, getattr(self, f.name))
        return self


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(EnvConfig)}
DEFAULTS = EnvConfig()
"""the defaults"""
PROCESS_FIELDS = tuple(n for n, f in FIELDS.items() if f.metadata["owner"] == PROCESS)
"""the fields :class:`~envs.process.TeachingProcess` takes"""
OPTIM_FIELDS = tuple(n for n, f in FIELDS.items() if f.metadata["owner"] == OPTIM)
"""the fields that reach the process as a ``students.optim.SGDConfig``"""
ENV_FIELDS = tuple(FIELDS)
"""the env takes every field"""


def default_of(name: str) -> Any:
    f = FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def check_field(name: str, value: Any) -> Any:
    """`value` if it is valid for field `name`, else ValueError("name: ...") on one line."""
    try:
        return FIELDS[name].metadata["check"](value)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def take(where: str, names: Iterable[str], values: dict[str, Any]) -> EnvConfig:
    """The config a component (`where`, for messages) is built from: `values` (a subset of
    `names`; ``None`` for a dict field means empty) over the defaults, every field checked. An
    unknown keyword is a TypeError, like Python's own, with the valid names and the nearest."""
    names = tuple(names)
    for key in values:
        if key not in names:
            raise TypeError(f"{where}(): {unknown_name_error('keyword', key, names)}")
    values = {
        k: ({} if v is None and isinstance(default_of(k), dict) else v) for k, v in values.items()
    }
    return EnvConfig(**values).validate()


def keywords(names: Iterable[str]) -> Callable:
    """Decorator: the function's ``**config`` shown in its signature as the fields `names`
    (keyword-only, with their defaults), so ``help()`` and ``inspect.signature`` list them."""
    names = tuple(names)

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        taken = {p.name for p in params}
        params += [
            inspect.Parameter(
                n, inspect.Parameter.KEYWORD_ONLY, default=default_of(n), annotation=FIELDS[n].type
            )
            for n in names
            if n not in taken
        ]
        fn.__signature__ = sig.replace(parameters=params)
        return fn

    return decorate
