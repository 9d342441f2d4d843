"""One place defines the env's configuration (envs/config.py): the env, the process, TeachingSpec and
the command line's flags are generated from EnvConfig's fields, each with its check."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from analysis.cli import build_parser, main
from analysis.cli_checks import config_args, flag
from analysis.runner import Grid, build_teacher
from envs.config import (
    DATASET,
    DEVICE,
    FIELDS,
    FLAG,
    FOLDER,
    KEYWORDS,
    NON_NEGATIVE,
    OPTIM_FIELDS,
    POSITIVE,
    POSITIVE_INT,
    PROCESS_FIELDS,
    RATIO,
    EnvConfig,
    default_of,
)
from envs.loss_teaching import LossTeachingEnv
from envs.process import TeachingProcess
from envs.rewards import REWARDS
from students.data import load_dataset
from students.optim import SGDConfig
from teachers.base import Teacher, TeachingSpec
from teachers.registry import TEACHERS, make_teacher, teacher_class

ROOT = Path(__file__).resolve().parents[1]
BAD = "not-a-value["
"""text no field accepts: not a number, not a registered name, not JSON, no such folder"""


def other_text(name: str) -> str:
    """A valid value of field `name` other than its default, as the command line's text; chosen
    by the field's kind of check, so a new field of a known kind needs nothing here."""
    check, default = FIELDS[name].metadata["check"], default_of(name)
    if check.names is not None:
        return next(n for n in sorted(check.names) if n != default)
    if check is DATASET:
        return "mnist"
    by_kind = {
        POSITIVE_INT: lambda: str(default + 1),
        POSITIVE: lambda: str(default / 2),
        NON_NEGATIVE: lambda: str(default * 2 + 1),
        RATIO: lambda: str(default * 2),
        DEVICE: lambda: "cpu",
        FOLDER: lambda: str(ROOT),
        KEYWORDS: lambda: '{"hidden": 8}',
    }
    if check in by_kind:
        return by_kind[check]()
    if re.match(r"a fraction", check.what):
        return str(default / 2 + 0.1)
    raise AssertionError(f"add a valid non-default value for the kind of field {name!r}")


def literal(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def compare_args(*extra: str) -> list[str]:
    return ["compare", "--teachers", "ce", "--out", "unused", *extra]


def test_compare_has_one_flag_per_field_with_its_help_and_default():
    parser = build_parser()
    args = parser.parse_args(compare_args())
    assert config_args(args) == dataclasses.asdict(EnvConfig())  # every default is the field's
    compare = parser._subparsers._group_actions[0].choices["compare"]
    actions = {a.dest: a for a in compare._actions}
    for name, f in FIELDS.items():
        assert actions[name].option_strings == [flag(name)]
        assert actions[name].help.startswith(f.metadata["help"])


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_flag_sets_its_own_field(name):
    if FIELDS[name].metadata["check"] is FLAG:
        args = build_parser().parse_args(compare_args(flag(name)))
        expected = True
    else:
        text = other_text(name)
        args = build_parser().parse_args(compare_args(flag(name), text))
        expected = json.loads(text) if text.startswith("{") else literal(text)
    got = config_args(args)
    assert got[name] == expected != default_of(name)
    assert {k: v for k, v in got.items() if k != name} == {
        k: default_of(k) for k in FIELDS if k != name
    }
    TeachingSpec(**got).validate()  # the value the flag reads is one the library accepts


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_a_bad_value_of_any_field_is_one_line_naming_it(name, tmp_path, capsys):
    with pytest.raises(ValueError) as err:
        EnvConfig(**{name: object()}).validate()
    assert str(err.value).startswith(f"{name}: ") and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=f"^{name}: "):
        LossTeachingEnv(**{name: object()})
    given = [f"{flag(name)}=x"] if FIELDS[name].metadata["check"] is FLAG else [flag(name), BAD]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--teachers", "ce", "--out", str(out), "--quiet", *given])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert re.match(r"l2t( compare)?: error: ", lines[-1]) and flag(name) in lines[-1], lines
    assert not out.exists()


def test_unknown_keywords_are_type_errors_with_the_nearest_field():
    with pytest.raises(
        TypeError, match=r"LossTeachingEnv\(\): unknown keyword 'horizn'.*'horizon'"
    ):
        LossTeachingEnv(horizn=3)
    with pytest.raises(TypeError, match=r"unknown keyword 'horizon'"):  # an env field, not its
        TeachingProcess(horizon=3)
    with pytest.raises(TypeError, match=r"unknown keyword 'batchsize'.*'batch_size'"):
        TeachingProcess(batchsize=3)


def test_the_env_forwards_every_field_to_the_part_that_keeps_it():
    changed = dict(
        loss="ce",
        horizon=3,
        interval=4,
        batch_size=32,
        lr=0.05,
        momentum=0.5,
        weight_decay=0.0,
        schedule="constant",
        reward="terminal",
        dev_subset=100,
        device="cpu",
        dtype="float64",
        student_kwargs={"hidden": 8},
        label_noise=0.2,
        label_noise_kind="pairflip",
        noisy_dev=True,
        imbalance=2.0,
    )
    env = LossTeachingEnv(**changed)
    p = env.process
    assert (env.horizon, env.interval, env.reward_fn) == (3, 4, REWARDS["terminal"])
    assert p.optim == SGDConfig(0.05, 0.5, 0.0, "constant", total_steps=12)
    assert (p.batch_size, p.dev_subset, p.family.name) == (32, 100, "ce")
    assert p.dtype is torch.float64 and p.device == torch.device("cpu")
    assert [tuple(v.shape) for v in p.model.state_dict().values()][0] == (8, 784)
    assert p.corruption["train_flipped_fraction"] == pytest.approx(0.2, abs=0.01)
    assert p.corruption["dev_flipped_fraction"] == pytest.approx(0.2, abs=0.01)  # noisy_dev
    counts = p.corruption["train_class_counts"]
    assert max(counts) / min(counts) == pytest.approx(2.0, rel=0.05)  # imbalance
    clean = load_dataset("mnist5k").y_dev.to(p.data.y_dev.device)
    moved = p.data.y_dev != clean
    assert torch.equal(p.data.y_dev[moved], (clean[moved] + 1) % 10)  # pairflip: c -> c + 1
    # every field reached the process's or the optimiser's config, or the env's own
    kept = {
        **{n: getattr(p.config, n) for n in PROCESS_FIELDS},
        **{n: getattr(p.optim, n) for n in OPTIM_FIELDS},
    }  # noqa: E501
    for name, value in changed.items():
        assert kept.get(name, getattr(env.config, name)) == value, name


def test_envspec_is_the_config_and_records_the_same_dict():
    """config.json files under results/ hold TeachingSpec.to_dict(): same keys, values and order."""
    assert [f.name for f in dataclasses.fields(TeachingSpec)] == list(FIELDS)
    assert TeachingSpec().to_dict() == {
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
        "meta_size": 256,
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
    assert list(TeachingSpec().to_dict()) == list(FIELDS)
    spec = TeachingSpec(horizon=3, student_kwargs={"hidden": 8})
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert TeachingSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown TeachingSpec fields"):
        TeachingSpec.from_dict({"dev_subet": 3})


@pytest.mark.parametrize("config", sorted(ROOT.glob("results/*/config.json")), ids=str)
def test_committed_results_specs_still_load_and_validate(config):
    spec = json.loads(config.read_text())["spec"]
    loaded = TeachingSpec.from_dict(spec).validate().to_dict()
    # fields added since the run read as their defaults, the rest as recorded
    assert loaded == {**TeachingSpec().to_dict(), **spec}


# -- teacher options: one dataclass per teacher, `--teacher-config` checked against it ----------
PREVIOUS_CONFIGS = {
    "ce": {},
    "label-smoothing": {"epsilon": 0.1},
    "gce": {"q": 0.7},
    "fixed": {"action": [0.5], "family": "ce"},
    "random": {"seed": 0, "family": None},
    "large-margin": {"margin": 4, "beta0": 1000.0, "gamma": 0.12, "power": 1.0, "beta_min": 0.0},
    "l2t-dlf": {"form": "attention", "memory": 8, "window": None, "family": "bilinear"},
    "reinforce": {"family": "compact", "baseline": "learned", "episodes_per_update": 2},
    "ppo": {"family": "compact", "n_steps": None, "net_arch": [64, 64], "algo_kwargs": {}},
    "a2c": {"family": "compact", "verbose": 0, "device": "cpu"},
    "l2t-dln": {"lookahead": 10, "warm_start": "bce", "identity_start": True},
}
"""what saved teachers (Teacher.save, results/*/teachers) recorded as "config" before options
were dataclasses: Teacher.load rebuilds a teacher from it"""


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_an_unknown_option_names_the_teacher_the_key_its_options_and_the_nearest(name):
    options = [f.name for f in dataclasses.fields(teacher_class(name).Config)]
    typo = options[0] + "s"
    with pytest.raises(TypeError) as err:
        make_teacher(name, **{typo: 1})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"teacher {name!r} has no option {typo!r}")
    assert f"its options: {', '.join(options)}." in message
    assert f"Did you mean {options[0]!r}?" in message
    grid_says = re.escape(f"teacher {name!r} has no option")
    with pytest.raises(ValueError, match=grid_says):  # the grid's check
        Grid([name], teacher_configs={name: {typo: 1}})


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_every_option_has_a_docstring(name):
    """The dataclass's attribute docstrings are the options' documentation (`l2t teachers`)."""
    cls = teacher_class(name).Config
    documented = set()
    for base in cls.__mro__:  # inherited options too (the selection's, teachers.base)
        if not dataclasses.is_dataclass(base):
            continue
        source = Path(inspect.getsourcefile(base)).read_text()
        body = next(
            n
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.ClassDef) and n.name == base.__name__
        ).body
        documented |= {
            a.target.id
            for a, doc in zip(body, body[1:], strict=False)
            if isinstance(a, ast.AnnAssign)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
        }
    assert {f.name for f in dataclasses.fields(cls)} <= documented


@pytest.mark.parametrize("name", sorted(PREVIOUS_CONFIGS))
def test_saved_teachers_of_the_previous_format_still_load(name, tmp_path):
    path = tmp_path / f"{name}.pt"
    state = make_teacher(name).state_dict()  # an unfitted teacher's: the options are the point
    torch.save({"name": name, "config": PREVIOUS_CONFIGS[name], "state": state}, path)
    if name in ("l2t-dlf",):  # an unfitted teacher's empty state is refused, as before
        with pytest.raises(ValueError, match="parameters"):
            Teacher.load(path)
        return
    teacher = Teacher.load(path)
    assert type(teacher) is teacher_class(name)
    assert teacher.config == {**teacher.config, **PREVIOUS_CONFIGS[name]}


def test_the_runner_gives_a_seeded_teacher_the_units_seed():
    assert build_teacher("random", {}, seed=3).cfg.seed == 3
    assert build_teacher("random", {"seed": 5}, seed=3).cfg.seed == 5
    assert build_teacher("ce", {}, seed=3).config == {"lr": None}  # no seed option: none given
