"""Held-out choices (analysis/selection.py): the bilinear start chosen jointly with the lr, the lr
search, their cost, and that test data is never read."""

from __future__ import annotations

import pytest

from analysis import selection
from analysis.selection import apply, choose_start_and_lr, search_lr
from envs.process import TeachingProcess
from teachers.base import TeachingSpec
from teachers.fixed import FixedTeacher
from teachers.registry import make_teacher

SEEDS = (2**31 - 1, 2**31 - 2)
# 4 x 50 = 200 steps of mnist5k / mlp at lr 0.1. Measured (dev error, the two seeds above): under
# 40% symmetric noise b = 0 gives 11.5 / 10.6 %, b = log C 13.0 / 12.4 %; clean, b = log C gives
# 8.0 / 8.1 %, b = 0 8.9 / 9.0 %. The better start differs between the two settings.
TINY = TeachingSpec(device="cpu", horizon=4, interval=50)


@pytest.mark.parametrize(("noise", "better"), [(0.4, "zero"), (0.0, "log-c")])
def test_chosen_start_is_the_one_with_lower_held_out_error(noise, better):
    spec = TINY.replace(label_noise=noise)
    sel = choose_start_and_lr(spec, {"start": ["log-c", "zero"], "lr": [0.1]}, SEEDS)
    # the same students taught through another path (Teacher.teach), dev error read there
    dev = {}
    for start in ("log-c", "zero"):
        s = spec.replace(loss_kwargs={"start": start})
        dev[start] = [FixedTeacher().teach(s, seed).final["dev_error"] for seed in SEEDS]
    by_start = {t.changes["start"]: list(t.errors) for t in sel.trials}
    assert by_start == dev  # the same students, to the bit
    mean = {k: sum(v) / len(v) for k, v in dev.items()}
    other = "log-c" if better == "zero" else "zero"
    assert mean[other] - mean[better] > 0.005  # the case tells the starts apart
    assert sel.chosen == {"start": better, "lr": 0.1}
    assert sel.split == "select"
    assert sel.student_steps == 2 * len(SEEDS) * spec.episode_steps  # every student charged
    chosen = sel.apply(spec)
    assert chosen.loss_kwargs == {"start": better} and chosen.lr == 0.1


def test_start_and_lr_are_chosen_jointly():
    """A grid over both: the chosen point is the trial with the lowest mean error, and the
    start reaches the student (the two starts' trials differ at every lr)."""
    spec = TINY.replace(label_noise=0.4, horizon=2)
    sel = choose_start_and_lr(spec, {"start": ["log-c", "zero"], "lr": [0.03, 0.3]}, SEEDS[:1])
    assert [t.changes for t in sel.trials] == [
        {"start": s, "lr": lr} for s in ("log-c", "zero") for lr in (0.03, 0.3)
    ]
    errors = {(t.changes["start"], t.changes["lr"]): t.error for t in sel.trials}
    for lr in (0.03, 0.3):
        assert errors[("log-c", lr)] != errors[("zero", lr)]
    best = min(errors, key=errors.get)
    assert (sel.chosen["start"], sel.chosen["lr"]) == best
    rows = sel.rows()
    assert sum(r["chosen"] for r in rows) == 1 and {"select_error", "student_steps"} <= set(rows[0])


def test_selection_never_reads_test(monkeypatch):
    original = TeachingProcess.evaluate

    def guarded(self, split="dev"):
        if split == "test":
            raise AssertionError("a selection read the test split")
        return original(self, split)

    monkeypatch.setattr(TeachingProcess, "evaluate", guarded)
    spec = TINY.replace(horizon=1, interval=10)
    sel = search_lr(make_teacher("ce"), spec, [0.05, 0.1], SEEDS[:1])
    assert sel.chosen["lr"] in (0.05, 0.1) and sel.student_steps == 20


def test_search_lr_applies_the_lr_to_the_student():
    """The lr reaches the optimiser: a tiny lr leaves the student where it started."""
    spec = TINY.replace(horizon=1, interval=20)
    sel = search_lr(make_teacher("ce"), spec, [1e-6, 0.1], SEEDS[:1])
    err = {t.changes["lr"]: t.error for t in sel.trials}
    assert err[1e-6] > 0.5 > err[0.1]  # untrained: ~90 % error on 10 classes
    assert sel.chosen == {"lr": 0.1}


def test_bad_requests_fail_clearly():
    with pytest.raises(ValueError, match="acts on 'ce'"):
        choose_start_and_lr(TINY, teacher=make_teacher("ce"))
    with pytest.raises(ValueError, match="may hold"):
        choose_start_and_lr(TINY, {"momentum": [0.9]})
    with pytest.raises(ValueError, match="positive"):
        search_lr(make_teacher("ce"), TINY, [0.1, -1.0])
    with pytest.raises(ValueError, match="may change"):
        apply(TINY, {"batch_size": 8})
    with pytest.raises(ValueError, match="bilinear start must be one of"):
        choose_start_and_lr(TINY.replace(horizon=1, interval=1), {"start": ["logc"], "lr": [0.1]})


def test_split_is_one_constant():
    """Every score goes through SELECTION_SPLIT, so pointing it elsewhere moves every choice."""
    assert selection.SELECTION_SPLIT == "select"
    seen = []
    original = TeachingProcess.evaluate

    def spy(self, split="dev"):
        seen.append(split)
        return original(self, split)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TeachingProcess, "evaluate", spy)
        mp.setattr(selection, "SELECTION_SPLIT", "train")
        sel = search_lr(make_teacher("ce"), TINY.replace(horizon=1, interval=5), [0.1], SEEDS[:1])
    assert seen == ["train"] and sel.split == "train"


def test_the_start_reaches_every_teacher_on_the_bilinear_family_and_no_other():
    """A spec carrying a chosen start: teachers on the bilinear family (L2T-DLF, an RL teacher
    given family="bilinear") train on it; teachers on another family drop it instead of passing
    a bilinear keyword to their own family."""
    spec = apply(TINY.replace(horizon=1, interval=2), {"start": "zero", "lr": 0.1})
    for name, config in (("l2t-dlf", {}), ("reinforce", {"family": "bilinear"})):
        teacher = make_teacher(name, **config)
        assert selection.acts_on_bilinear(teacher, spec)
        family = teacher.spec_for(spec).make_env().unwrapped.family
        assert family.bias_init == 0.0
    for name in ("ce", "gce", "large-margin", "reinforce"):
        teacher = make_teacher(name)
        assert not selection.acts_on_bilinear(teacher, spec)
        result = teacher.teach(spec, seed=0) if name != "reinforce" else None
        assert result is None or result.final["student_steps"] == 2
