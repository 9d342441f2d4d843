"""The lr as an action (``lr_action``, envs.losses.LearningRateAction): off changes nothing, on
with a = 0 changes nothing, and the hypergradient with respect to the lr action is right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from envs.batched import BatchedTeachingProcess
from envs.losses import LOSSES, LR_ACTION_OCTAVES, LearningRateAction
from envs.process import TeachingProcess
from students.optim import SGDConfig
from teachers import rmd
from teachers.base import TeachingSpec
from tests.test_rmd import DATA, INTERVAL, SEGMENTS, STEPS, coeff_schedule, rel_err, tiny_data

SPEC = TeachingSpec(
    dataset=tiny_data(),
    horizon=2,
    interval=5,
    batch_size=16,
    lr=0.3,
    dev_subset=20,
    device="cpu",
    dtype="float64",
    student_kwargs={"hidden": 6},
)

# (action dim, sum of the weights, sum of their squares) after SPEC's episode under the family's
# default action plus fixed noise, computed with the code before the lr action existed (main at
# 16dd326, this machine); bit-identical there, compared to 1e-12 here so that another BLAS passes
BEFORE = {
    "bilinear": (12, -1.3466714984619998, 2.7882731397238762),
    "ce": (1, -1.0485447921966233, 2.7821015347348803),
    "compact": (5, -1.0144533884746227, 2.761818165077409),
    "dln": (5000, -6.599051703723247, 7.077359399370419),
    "gce": (1, -1.114623400504173, 2.9238467365148186),
    "label-smoothing": (1, -1.089106337484358, 2.7208219124368798),
    "large-margin": (1, -3.972154708527241, 7.264827497982137),
}


def episode(env, actions) -> dict[str, torch.Tensor]:
    env.reset(seed=0)
    for a in actions:
        env.step(a)
    return {k: p.clone() for k, p in env.process.params.items()}


def noisy_defaults(family, n, *, lr: float | None = None) -> list[np.ndarray]:
    a = family.default_action()
    g = np.random.default_rng(1)
    out = [
        np.clip(a + 0.1 * g.standard_normal(a.shape).astype(np.float32), -1, 1) for _ in range(n)
    ]
    return out if lr is None else [np.append(x, np.float32(lr)) for x in out]


def test_every_family_is_covered():
    assert set(BEFORE) == set(LOSSES)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_off_leaves_every_family_and_student_as_before(loss):
    env = SPEC.replace(loss=loss).make_env()
    assert not isinstance(env.family, LearningRateAction)
    dim, total, squares = BEFORE[loss]
    assert env.family.dim == dim and env.action_space.shape == (dim,)
    params = episode(env, noisy_defaults(env.family, SPEC.horizon))
    p = torch.cat([v.flatten() for v in params.values()])
    assert float(p.sum()) == pytest.approx(total, rel=1e-12)
    assert float((p * p).sum()) == pytest.approx(squares, rel=1e-12)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_on_with_a_zero_lr_action_is_the_off_run_to_the_bit(loss, dtype):
    spec = SPEC.replace(loss=loss, dtype=dtype)
    off, on = spec.make_env(), spec.replace(lr_action=True).make_env()
    assert on.family.dim == off.family.dim + 1 and on.action_space.shape == (on.family.dim,)
    np.testing.assert_array_equal(on.family.default_action()[:-1], off.family.default_action())
    assert on.family.default_action()[-1] == 0.0
    a_off = noisy_defaults(off.family, spec.horizon)
    a_on = noisy_defaults(off.family, spec.horizon, lr=0.0)
    ref = episode(off, a_off)
    got = episode(on, a_on)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    assert on.process.lr == off.process.lr
    # and a non-zero lr action moves the student
    moved = episode(on, noisy_defaults(off.family, spec.horizon, lr=0.5))
    assert any(not torch.equal(moved[k], ref[k]) for k in ref)


def test_the_lr_action_sets_the_step_size():
    """One plain-SGD step (no momentum, no decay) under a = 0.5 moves the weights by 2^(k/2)
    times the a = 0 step, and the observation's lr ratio reports it."""
    spec = SPEC.replace(lr_action=True, momentum=0.0, weight_decay=0.0, horizon=1, interval=1)
    env = spec.make_env()
    obs, _ = env.reset(seed=0)
    w0 = {k: p.clone() for k, p in env.process.params.items()}
    base = env.family.default_action()
    env.step(base)
    d0 = {k: env.process.params[k] - w0[k] for k in w0}
    env.reset(seed=0)
    action = base.copy()
    action[-1] = 0.5
    obs, *_ = env.step(action)
    factor = 2 ** (LR_ACTION_OCTAVES * 0.5)
    for k in w0:
        torch.testing.assert_close(env.process.params[k] - w0[k], factor * d0[k])
    assert env.process.lr == pytest.approx(env.process.optim.lr_at(1) * factor)


def test_rl_teachers_see_the_larger_action_space():
    env = SPEC.replace(lr_action=True, loss="compact").make_env()
    assert env.action_space.shape == (6,)
    check_env(env, skip_render_check=True)


def lr_process():
    """test_rmd's float64 process, its bilinear family with the lr action."""
    proc = TeachingProcess(
        DATA,
        "mlp",
        "bilinear",
        batch_size=16,
        optim=SGDConfig(0.3, 0.9, 1e-2, "cosine", STEPS),
        dtype=torch.float64,
        device="cpu",
        student_kwargs={"hidden": 6},
        lr_action=True,
    )
    proc.reset(3)
    return proc


def lr_schedule(family) -> torch.Tensor:
    """Per-segment coefficients with lr multipliers 2^0.3, 2^-0.4, 2^0.2 (ell = log2)."""
    base = coeff_schedule(family.base)
    ell = torch.tensor([[0.3], [-0.4], [0.2]], dtype=torch.float64)
    return torch.cat([base, ell], dim=1)


@pytest.mark.parametrize("every", [1, 4])
def test_hypergradient_wrt_the_lr_action_matches_finite_differences(every):
    """RMD (every-step checkpoints, and recompute) against central differences in ell, per
    segment, and against autograd through the differentiable path; float64."""
    proc = lr_process()
    coeffs = lr_schedule(proc.family)
    h = rmd.hypergradient(proc, coeffs, INTERVAL, checkpoint_every=every)
    d_ell = h.coeff_grads[:, -1]

    def objective(c: torch.Tensor) -> float:
        p = lr_process()
        for row in c:
            p.advance(row, INTERVAL)
        return float(p.dev_objective(kind="ce"))

    eps = 1e-5
    for seg in range(SEGMENTS):
        up, down = coeffs.clone(), coeffs.clone()
        up[seg, -1] += eps
        down[seg, -1] -= eps
        fd = (objective(up) - objective(down)) / (2 * eps)
        assert abs(fd) > 1e-4
        assert abs(float(d_ell[seg]) - fd) <= 1e-5 * abs(fd)

    ref_proc = lr_process()
    leaf = coeffs.clone().requires_grad_(True)
    for row in leaf:
        ref_proc.advance(row, INTERVAL, differentiable=True)
    (ref,) = torch.autograd.grad(ref_proc.dev_objective(kind="ce"), leaf)
    assert rel_err(h.coeff_grads, ref) <= 1e-6
    # the chain rule to the action: d ell / d a = k
    assert math.isclose(
        float(LearningRateAction(proc.family.base).center_and_half_range()[1][-1]),
        LR_ACTION_OCTAVES,
    )


def test_batched_students_follow_the_lr_action():
    """The vector env's batched process applies each student's own multiplier."""
    spec = SPEC.replace(lr_action=True)
    envs = [spec.make_env() for _ in range(2)]
    template = envs[0].process
    batched = BatchedTeachingProcess.like(template, 2)
    batched.reset([0, 1])
    actions = [np.append(envs[0].family.default_action()[:-1], np.float32(v)) for v in (-0.5, 0.75)]
    coeffs = torch.stack([envs[0].family.action_to_coeffs(a) for a in actions])
    batched.advance(coeffs, 5)
    for i, env in enumerate(envs):
        env.process.reset(i)
        env.process.advance(coeffs[i], 5)
        for k, p in env.process.params.items():
            torch.testing.assert_close(batched.params[k][i], p, rtol=1e-10, atol=1e-12)


def test_l2t_dln_refuses_the_lr_action_with_its_reason():
    from teachers.registry import make_teacher

    with pytest.raises(ValueError, match="l2t-dln does not act on the lr"):
        make_teacher("l2t-dln").spec_for(SPEC.replace(lr_action=True, horizon=2, interval=10))


def test_a_gradient_teacher_differentiates_through_the_lr_action():
    """End to end: the whole-run estimator's d M / d a_lr for a constant lr action (through the
    env's float32 action, the family's map ell = 2 a and the RMD engine) against central
    differences of the same runs."""
    from teachers import estimators as E

    spec = SPEC.replace(lr_action=True, horizon=3)
    env = spec.make_env()
    basis = torch.zeros(env.family.dim, 1, dtype=torch.float64)
    basis[-1, 0] = 1.0
    policy = E.affine_policy(torch.zeros(env.family.dim, dtype=torch.float64), basis)

    def run(theta: float):
        return E.Full(spec.make_env(), policy, seeds=[2]).estimate(
            torch.tensor([theta], dtype=torch.float64)
        )

    g = float(run(0.25).grad[0])
    h = 1e-3
    fd = (run(0.25 + h).objective - run(0.25 - h).objective) / (2 * h)
    assert abs(fd) > 1e-3
    assert g == pytest.approx(fd, rel=1e-3)


def test_results_made_before_the_option_resume_and_a_real_change_still_clashes(tmp_path):
    """A results directory whose config.json predates lr_action (no such key in its spec)
    resumes with lr_action off; turning it on is a clash, as any other spec change."""
    import json

    from analysis.records import RecordStore

    spec = TeachingSpec().to_dict()
    old = {"spec": {k: v for k, v in spec.items() if k != "lr_action"}, "teachers": ["ce"]}
    (tmp_path / "config.json").write_text(json.dumps(old))
    defaults = {"spec": spec}  # what the runner hands the store: the settings' defaults
    RecordStore(tmp_path).open({"spec": spec, "teachers": ["ce"]}, defaults=defaults)
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="lr_action"):
        RecordStore(tmp_path).open(
            {"spec": {**spec, "lr_action": True}, "teachers": ["ce"]}, defaults=defaults
        )
