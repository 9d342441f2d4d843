"""One place defines the env's configuration (envs/config.py): EnvSpec is that dataclass, and the
env's and the process's keyword defaults are its defaults."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from envs.config import DEFAULTS, DTYPES, PROCESS_FIELDS, EnvConfig
from envs.loss_teaching import LossTeachingEnv
from envs.process import TeachingProcess
from students.optim import SGDConfig
from teachers.base import EnvSpec

FIELDS = {f.name: f for f in dataclasses.fields(EnvConfig)}


def default_of(name: str):
    f = FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def keywords(fn) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if name != "self" and p.kind is not p.VAR_KEYWORD
    }


def same_default(signature_default, config_default) -> bool:
    # dict fields default to {} in the dataclass and to None ("none given") in the signatures
    if config_default == {} and signature_default is None:
        return True
    return signature_default == config_default and type(signature_default) is type(config_default)


def test_env_signature_takes_every_field_with_its_default():
    env = keywords(LossTeachingEnv.__init__)
    assert set(FIELDS) <= set(env)
    assert set(env) - set(FIELDS) == {"state_fn", "divergence_penalty", "download"}
    for name in FIELDS:
        assert same_default(env[name], default_of(name)), name


def test_process_signature_takes_its_fields_with_their_defaults():
    proc = keywords(TeachingProcess.__init__)
    assert set(proc) & set(FIELDS) == {*PROCESS_FIELDS, "dtype"}
    assert set(proc) - set(FIELDS) == {"optim", "download"}
    for name in PROCESS_FIELDS:
        assert same_default(proc[name], default_of(name)), name
    assert proc["dtype"] is DTYPES[DEFAULTS.dtype]
    env = keywords(LossTeachingEnv.__init__)
    assert proc["download"] == env["download"]  # the one keyword both take outside the config


def test_optimiser_defaults_are_sgdconfigs():
    for name in ("lr", "momentum", "weight_decay", "schedule"):
        assert default_of(name) == getattr(SGDConfig(), name)


def test_envspec_is_the_config_and_records_the_same_dict():
    """config.json files under results/ hold EnvSpec.to_dict(): same keys, values and order."""
    assert [f.name for f in dataclasses.fields(EnvSpec)] == list(FIELDS)
    assert EnvSpec().to_dict() == {
        "dataset": "mnist5k",
        "student": "mlp",
        "loss": "bilinear",
        "horizon": 12,
        "interval": 50,
        "batch_size": 64,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "reward": "dev-accuracy-delta",
        "dev_subset": 256,
        "device": "auto",
        "dtype": "float32",
        "data_root": None,
        "student_kwargs": {},
        "loss_kwargs": {},
        "label_noise": 0.0,
        "label_noise_kind": "symmetric",
        "noisy_dev": False,
        "imbalance": 1.0,
        "lr_action": False,
    }
    assert list(EnvSpec().to_dict()) == list(FIELDS)
    spec = EnvSpec(horizon=3, student_kwargs={"hidden": 8})
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert EnvSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown EnvSpec fields"):
        EnvSpec.from_dict({"dev_subet": 3})


def test_an_env_built_without_keywords_is_the_default_spec():
    env = EnvSpec(device="cpu").make_env()
    bare = LossTeachingEnv(device="cpu")
    for e in (env, bare):
        p = e.process
        assert (e.horizon, e.interval, p.batch_size, p.dev_subset) == (12, 50, 64, 256)
        assert (p.optim.lr, p.optim.total_steps) == (DEFAULTS.lr, 12 * 50)
