"""Dev's two parts: every teacher's training signal reads ``meta`` only; ``select`` is read only to
choose and to report, ``test`` only by the final evaluation.

The check, for every registered teacher: fit and teach on a tiny spec whose ``select`` and test
images are NaN, with ``TeachingProcess.evaluate`` (the one sanctioned reader) evaluating on the
clean images and recording who called it. Any other read of ``select`` or test would put a NaN
into an update or a state, so the poisoned run must equal the clean run exactly; and the
recorded calls show ``test`` read by the final evaluation alone.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace

import pytest
import torch

from envs.process import TeachingProcess
from students.data import DEV_PARTS, load_dataset, meta_count
from teachers import TEACHERS, TeachingSpec, make_teacher, teacher_class

META = 200
CLEAN = load_dataset("mnist5k")
POISONED = replace(
    CLEAN,
    x_dev=torch.cat([CLEAN.x_dev[:META], torch.full_like(CLEAN.x_dev[META:], float("nan"))]),
    x_test=torch.full_like(CLEAN.x_test, float("nan")),
)
TINY = dict(
    horizon=2,
    interval=5,
    batch_size=32,
    dev_subset=64,
    meta_size=META,
    device="cpu",
    label_noise=0.2,
    student_kwargs={"hidden": 16},
)
BUDGET = 3 * 10 + 7
CONFIGS = {"reinforce": {"hidden": 8}, "ppo": {"net_arch": [8]}, "a2c": {"net_arch": [8]}}
UNREPLAYABLE = {"wall_time", "episode_time", "rss_mb"}
"""fit-log keys that time or measure the machine, not the run"""
SELECTORS = {"final_metrics", "score_students", "teach"}  # the fit skeleton's Selection
"""the functions that may read ``select``: the final evaluation, L2T-DLF's selection and the
best-select checkpoint of a taught student"""


def importable(name: str) -> bool:
    try:
        teacher_class(name)
    except ImportError:
        return False
    return True


@pytest.fixture
def calls(monkeypatch):
    """Record (split, calling function) of every evaluate; evaluate on the clean images."""
    seen: list[tuple[str, str]] = []
    original = TeachingProcess.evaluate

    def evaluate(self, split="select"):
        seen.append((split, sys._getframe(1).f_code.co_name))
        poisoned = self.data
        self.data = replace(
            poisoned,
            x_dev=CLEAN.x_dev.to(poisoned.x_dev.dtype),
            x_test=CLEAN.x_test.to(poisoned.x_test.dtype),
        )
        try:
            return original(self, split)
        finally:
            self.data = poisoned

    monkeypatch.setattr(TeachingProcess, "evaluate", evaluate)
    return seen


def same(a, b) -> bool:
    """Equal values, NaN equal to NaN, through dicts and lists (a fit log row)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def fit_and_teach(name: str, data) -> tuple[dict, dict, list]:
    spec = TeachingSpec(dataset=data, **TINY)
    teacher = make_teacher(name, **CONFIGS.get(name, {}))
    report = teacher.fit(spec, BUDGET, seed=0)
    env = teacher.spec_for(spec).make_env()
    result = teacher.teach(spec, seed=2, env=env)
    params = {k: v.clone() for k, v in env.unwrapped.process.params.items()}
    return params, result.final, [r for r in report.log]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.skipif(not importable(n), reason=f"{n} does not import"))
        for n in sorted(TEACHERS)
    ],
)
def test_select_and_test_reach_no_update_and_test_only_the_final_evaluation(name, calls):
    clean_params, clean_final, clean_log = fit_and_teach(name, CLEAN)
    n_clean = len(calls)
    params, final, log = fit_and_teach(name, POISONED)
    for k, p in params.items():
        assert torch.isfinite(p).all(), k
        torch.testing.assert_close(p, clean_params[k], rtol=0, atol=0, msg=k)
    for key in ("dev_error", "test_error", "dev_loss", "test_loss"):
        assert final[key] == clean_final[key]
    assert final["meta_size"] == META and final["select_size"] == len(CLEAN.y_dev) - META
    assert len(log) == len(clean_log)
    for row, clean_row in zip(log, clean_log, strict=True):  # the fit saw the same numbers
        row, clean_row = (
            {k: v for k, v in r.items() if k not in UNREPLAYABLE} for r in (row, clean_row)
        )
        assert same(row, clean_row), (row, clean_row)
    poisoned_calls = calls[n_clean:]
    assert {c for s, c in poisoned_calls if s == "test"} == {"final_metrics"}
    assert {c for s, c in poisoned_calls if s == "select"} <= SELECTORS
    assert {s for s, _ in poisoned_calls} <= {"select", "test"}  # never "dev" or "meta" whole


def test_dev_objective_full_reads_meta_and_never_select():
    proc = TeachingProcess(
        POISONED, "mlp", "ce", meta_size=META, device="cpu", student_kwargs={"hidden": 16}
    )
    proc.reset(0)
    full = proc.dev_objective(full=True)
    assert torch.isfinite(full)
    x, y = CLEAN.x_dev[:META], CLEAN.y_dev[:META]
    with torch.no_grad():
        proc.model.eval()
        logits = torch.func.functional_call(proc.model, (proc.params, proc.buffers), (x,))
        proc.model.train()
    torch.testing.assert_close(full, torch.nn.functional.cross_entropy(logits, y))
    assert proc.dev_subset <= proc.meta_size


def test_evaluate_names_the_parts_of_dev():
    proc = TeachingProcess(
        CLEAN, "mlp", "ce", meta_size=300, device="cpu", student_kwargs={"hidden": 16}
    )
    proc.reset(0)
    parts = {s: proc.evaluate(s) for s in ("dev", *DEV_PARTS)}
    n_meta, n_sel = 300, len(CLEAN.y_dev) - 300
    mixed = (n_meta * parts["meta"]["accuracy"] + n_sel * parts["select"]["accuracy"]) / 1000
    assert parts["dev"]["accuracy"] == pytest.approx(mixed)
    assert parts["meta"]["accuracy"] != parts["select"]["accuracy"]
    with pytest.raises(ValueError, match="unknown split"):
        proc.evaluate("valid")


def test_meta_size_leaves_select_examples_and_rejects_nonsense():
    assert meta_count(1000, 256) == 256
    assert meta_count(16, 256) == 8  # a dev split no larger than meta_size: half each
    with pytest.raises(ValueError, match="meta_size must be a positive"):
        meta_count(1000, 0)
    with pytest.raises(ValueError, match="at least 2"):
        meta_count(1, 256)


def test_the_records_carry_meta_size():
    assert TeachingSpec().to_dict()["meta_size"] == 256
    env = TeachingSpec(device="cpu", meta_size=100, dev_subset=300).make_env()
    assert (env.process.meta_size, env.process.dev_subset) == (100, 100)


def test_best_select_reports_the_best_of_k_evenly_spaced_select_checks():
    spec = TeachingSpec(**{**TINY, "horizon": 6, "lr": 0.5})  # a high lr: the error is not monotone
    teacher = make_teacher("ce")
    env = teacher.spec_for(spec).make_env()
    by_hand = {}
    for t, step in enumerate(teacher.rollout(env, 4)):
        if step.action is not None:
            by_hand[t] = (
                env.unwrapped.process.evaluate("select")["error"],
                step.info["student_steps"],
            )
    last = teacher.teach(spec, seed=4)
    assert last.final["dev_error"] == by_hand[6][0] and "checkpoint_step" not in last.final
    for checks, at in ((3, (2, 4, 6)), (6, (1, 2, 3, 4, 5, 6)), (50, (1, 2, 3, 4, 5, 6))):
        best = teacher.teach(spec, seed=4, checkpoint="best-select", checks=checks)
        error, step = min(by_hand[t] for t in at)
        assert best.final["dev_error"] == error
        assert best.final["checkpoint_step"] == best.final["student_steps"] == step
        assert best.final["checks"] == len(at)
    with pytest.raises(ValueError, match="unknown checkpoint"):
        teacher.teach(spec, seed=4, checkpoint="best-test")
