"""The hypergradient estimators (teachers/estimators.py) against known answers: truncated with
K = T is full; truncated windows cut inside intervals are autograd's gradients through those
windows; PES averages to the exact gradient (truncated ES does not); online learning at meta-lr 0
is the untrained teacher's student to the bit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from teachers import estimators as E
from teachers.base import TeachingSpec
from teachers.l2t_dlf import L2TDLFTeacher
from tests.test_rmd import tiny_data

DATA = tiny_data(shape=(1, 1, 12), classes=3, n=160)
# float64, a 12-input MLP with 6 hidden units, 3 classes: microseconds per step
TINY = TeachingSpec(
    dataset=DATA,
    horizon=4,
    interval=5,
    batch_size=16,
    lr=0.3,
    dev_subset=20,
    device="cpu",
    dtype="float64",
    student_kwargs={"hidden": 6},
)
T = TINY.horizon * TINY.interval


def bilinear_subspace(env) -> tuple[torch.Tensor, torch.Tensor]:
    """(center, basis): three interpretable directions of the bilinear action space: the
    diagonal of Phi, its off-diagonal entries, the bias."""
    C = env.family.num_classes
    eye = torch.eye(C, dtype=torch.float64).flatten()
    diag = torch.cat([eye, torch.zeros(C, dtype=torch.float64)])
    off = torch.cat([1 - eye, torch.zeros(C, dtype=torch.float64)])
    bias = torch.cat([torch.zeros(C * C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)])
    basis = torch.stack([diag, off / 2, bias / 3], dim=1)
    return torch.zeros(env.family.dim, dtype=torch.float64), basis


def attention_teacher(spec=TINY) -> tuple[L2TDLFTeacher, object]:
    teacher = L2TDLFTeacher(init_scale=0.2, init_seed=1)
    env = spec.make_env()
    teacher.build(env.observation_space.shape[0], env.family.dim)
    return teacher, env


def test_truncated_with_K_equal_T_is_full():
    """A state-dependent (attention) teacher: two code paths (env.step with one tape; the
    process-level unroll), one RMD engine."""
    teacher, env = attention_teacher()
    policy, theta = E.teacher_policy(teacher)
    full = E.Full(env, policy, seeds=[7]).estimate(theta)
    trunc = E.Truncated(TINY.make_env(), policy, T, seeds=[7]).estimate(theta)
    assert full.grad.norm() > 0 and not full.diverged
    torch.testing.assert_close(trunc.grad, full.grad, rtol=1e-10, atol=0)
    assert trunc.objective == pytest.approx(full.objective, rel=1e-12)
    assert trunc.episode_end and trunc.steps == full.steps == T
    # a shorter window is another (greedy) quantity, not a rescaled copy of the same one
    half = E.Truncated(TINY.make_env(), policy, T // 2, seeds=[7]).estimate(theta)
    cos = float(half.grad @ full.grad / (half.grad.norm() * full.grad.norm()))
    assert cos < 1 - 1e-6


def test_windows_cut_inside_intervals_are_autograd_through_each_window():
    """K = 3 against interval 5: windows end mid-interval and hold the action across the cut;
    each window's estimate is d M(w_end) / d theta with w_start fixed, computed here by autograd
    through the process's differentiable path."""
    env = TINY.make_env()
    center, basis = bilinear_subspace(env)
    policy = E.affine_policy(center, basis)
    theta = torch.tensor([0.25, -0.125, 0.5], dtype=torch.float64)  # float32-exact actions
    est = E.Truncated(env, policy, 3, seeds=itertools.repeat(11))
    windows = []
    while True:
        windows.append(est.estimate(theta))
        if windows[-1].episode_end:
            break
    assert len(windows) == -(-T // 3)

    ref_env = TINY.make_env()
    proc, family = ref_env.process, ref_env.family
    for k, w in enumerate(windows):
        t0, t1 = 3 * k, min(3 * k + 3, T)
        proc.reset(11)
        coeffs = family.action_to_coeffs(policy(theta, None).numpy().astype(np.float32))
        if t0:
            proc.advance(coeffs, t0)
        leaf = theta.clone().requires_grad_(True)
        c = family._action_to_coeffs(policy(leaf, None))
        proc.advance(c, t1 - t0, differentiable=True)
        (g,) = torch.autograd.grad(proc.dev_objective(), leaf)
        assert g.norm() > 0
        torch.testing.assert_close(w.grad, g, rtol=1e-6, atol=0)  # as tests/test_rmd.py


def test_restart_from_a_checkpoint_is_the_continuing_runs_window():
    env = TINY.make_env()
    center, basis = bilinear_subspace(env)
    policy = E.affine_policy(center, basis)
    theta = torch.tensor([0.5, 0.25, -0.25], dtype=torch.float64)
    cont = E.Truncated(env, policy, 5, seeds=[3])
    cont.estimate(theta)
    checkpoint = env.process.state.clone()
    second = cont.estimate(theta)
    restart = E.Truncated(TINY.make_env(), policy, 5, seeds=[3, 3], start=checkpoint)
    for _ in range(2):  # every estimate starts from the checkpoint again
        r = restart.estimate(theta)
        torch.testing.assert_close(r.grad, second.grad, rtol=1e-12, atol=0)
    # a checkpoint between two decisions: the policy acts at once, as the continuing run did
    cont3 = E.Truncated(TINY.make_env(), policy, 3, seeds=[4])
    cont3.estimate(theta)
    mid = cont3.unroll.process.state.clone()
    second3 = cont3.estimate(theta)
    r = E.Truncated(TINY.make_env(), policy, 3, seeds=[4], start=mid).estimate(theta)
    assert r.steps == 3 and r.grad.norm() > 0
    torch.testing.assert_close(r.grad, second3.grad, rtol=1e-12, atol=0)


def pes_episode_sums(estimator, theta, episodes):
    sums = []
    for _ in range(episodes):
        total = torch.zeros_like(theta)
        while True:
            e = estimator.estimate(theta)
            assert not e.diverged
            total = total + e.grad
            if e.episode_end:
                break
        sums.append(total)
    return torch.stack(sums)


def test_pes_is_unbiased_for_the_whole_run_gradient_and_truncated_es_is_not():
    """One student seed (so the exact gradient is one RMD pass), theta in a 3-d subspace of the
    bilinear family, 10 one-step truncations. The mean of 30 PES episode sums lies within 4
    standard errors of the exact dM(w_T)/dtheta in every coordinate; truncated ES, which forgets
    earlier truncations' perturbations (one-step greedy here), is many standard errors off: the
    test has power."""
    spec = TINY.replace(horizon=2)
    env = spec.make_env()
    center, basis = bilinear_subspace(env)
    policy = E.affine_policy(center, basis)
    theta = torch.tensor([0.25, 0.125, 0.0], dtype=torch.float64)
    exact = E.Full(spec.make_env(), policy, seeds=[5]).estimate(theta).grad
    assert exact.norm() > 0

    def run(persistent, episodes):
        pes = E.PES(
            env,
            policy,
            1,
            pairs=2,
            sigma=1e-3,
            seeds=itertools.repeat(5),
            persistent=persistent,
            noise_seed=0,
        )
        s = pes_episode_sums(pes, theta, episodes)
        return s.mean(0), s.std(0) / len(s) ** 0.5

    mean, se = run(True, 30)
    z = (mean - exact).abs() / se
    assert bool((z < 4).all()), (mean, exact, se)
    mean_tes, se_tes = run(False, 12)
    z_tes = (mean_tes - exact).abs() / se_tes
    assert float(z_tes.max()) > 6, (mean_tes, exact, se_tes)


def test_online_with_zero_meta_lr_is_the_untrained_teachers_student_to_the_bit():
    """float32, interval 20, updates every 10 steps (cuts inside every interval)."""
    spec = TINY.replace(dtype="float32", interval=20, horizon=3)
    teacher, env = attention_teacher(spec)
    info = list(teacher.rollout(env, 9))[-1].info
    ref = {k: p.clone() for k, p in env.process.params.items()}
    policy, theta = E.teacher_policy(teacher)
    env2 = spec.make_env()
    res = E.online(env2, policy, theta, 9, K=10, meta_lr=0.0)
    assert len(res.rows) == 6 and all(r["grad_norm"] > 0 for r in res.rows)
    assert torch.equal(res.theta, theta)
    for k, p in env2.process.params.items():
        assert torch.equal(p, ref[k]), k
    assert float(env2.process.best_dev_accuracy) == info["best_dev_accuracy"]
    # the same with a non-zero meta-lr moves theta, and so the student
    env3 = spec.make_env()
    moved = E.online(env3, policy, theta, 9, K=10, meta_lr=0.05, normalize=True)
    assert not torch.equal(moved.theta, theta)
    assert any(not torch.equal(p, ref[k]) for k, p in env3.process.params.items())


def test_condition_clips_normalises_and_zeroes_non_finite():
    g = torch.tensor([3.0, 4.0], dtype=torch.float64)
    out, norm = E.condition(g, clip=1.0)
    assert norm == 5.0 and torch.allclose(out, g / 5)
    out, _ = E.condition(g, clip=10.0)
    assert torch.equal(out, g)
    out, _ = E.condition(g / 100, normalize=True)
    assert float(out.norm()) == pytest.approx(1.0)
    out, norm = E.condition(torch.tensor([1.0, float("inf")]), clip=1.0)
    assert not np.isfinite(norm) and torch.equal(out, torch.zeros(2))
    with pytest.raises(ValueError, match="clip must be positive"):
        E.condition(g, clip=0.0)


def test_bad_options_raise_one_line_errors():
    env = TINY.make_env()
    policy = E.affine_policy(*bilinear_subspace(env))
    with pytest.raises(ValueError, match="K must be an int"):
        E.Truncated(env, policy, 0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        E.PES(env, policy, 5, sigma=0.0)
    with pytest.raises(ValueError, match="unknown estimator 'pse'.*Did you mean 'pes'"):
        E.make_estimator("pse", env, policy)
    with pytest.raises(ValueError, match="unknown dev objective"):
        E.Full(env, policy, objective="acc")
