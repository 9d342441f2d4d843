"""The L2T-DLF teacher: gradients reach every parameter, budgets hold, selection is dev-only,
save/load round-trips, memory and time stay flat, and fitted teachers teach fresh students."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import envs.process
from envs.cost import KINDS
from envs.process import TeachingProcess
from students.data import load_dataset
from teachers.base import SeedPlan, Teacher, TeachingSpec
from teachers.l2t_dlf import L2TDLFTeacher
from teachers.registry import make_teacher

# a small student so that an episode (3 x 5 steps) takes milliseconds; real data, real env
SPEC = TeachingSpec(horizon=3, interval=5, device="cpu", student_kwargs={"hidden": 16})


def fresh(form="attention", **kw) -> tuple[L2TDLFTeacher, object]:
    teacher = L2TDLFTeacher(form=form, **kw)
    env = teacher.spec_for(SPEC).make_env()
    teacher.build(env.observation_space.shape[0], env.family.dim, env.family.default_action())
    return teacher, env


@pytest.mark.parametrize("form", ["attention", "mlp"])
def test_every_parameter_gets_a_nonzero_hypergradient_at_init(form):
    teacher, env = fresh(form)
    before = {k: p.detach().clone() for k, p in teacher.params.items()}
    opt = torch.optim.SGD(list(teacher.params.values()), lr=0.0)
    (row,) = teacher.train_episode(env, seed=0, opt=opt)
    assert row["updated"] and row["grad_norm"] > 0
    for name, p in teacher.params.items():
        assert p.grad is not None, name
        # every entry of V / W1 feeds the state pathway: none may be stuck at exactly zero
        assert (p.grad != 0).float().mean() > 0.5, name
        torch.testing.assert_close(p.detach(), before[name])  # lr 0: the update left theta


def test_action_is_valid_and_maps_to_coefficients_affinely():
    teacher, env = fresh()
    obs, _ = env.reset(seed=0)
    a = teacher.act(obs)
    assert a.shape == (env.family.dim,) and a.dtype == np.float32
    # the paper's form, by hand in numpy: a_t = M^T softmax(V [s_t, 1])
    V, M = (teacher.params[k].detach().numpy() for k in ("V", "M"))
    z = V @ np.append(obs.astype(np.float64), 1.0)
    alpha = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(a, M.T @ alpha, rtol=1e-6, atol=1e-7)
    center, half = env.family.center_and_half_range()
    coeffs = env.family.action_to_coeffs(a)
    torch.testing.assert_close(coeffs, center + half * torch.as_tensor(a, dtype=torch.float64))
    # attention over distinct memories: different states give different losses
    obs2 = obs.copy()
    obs2[0] = 1.0
    assert not np.allclose(teacher.act(obs2), a)


def test_fit_is_charged_its_reverse_passes_selects_on_dev_only_and_records(monkeypatch):
    evaluated = []
    original = TeachingProcess.evaluate

    def guarded(self, split="select"):
        evaluated.append(split)
        if split == "test":
            raise AssertionError("the teacher looked at test data while fitting")
        return original(self, split)

    monkeypatch.setattr(TeachingProcess, "evaluate", guarded)
    teacher = make_teacher("l2t-dlf", select_every_updates=2, select_seeds=1)
    T = SPEC.episode_steps
    budget = 25 * T + 3  # not a multiple of anything
    report = teacher.fit(SPEC, budget, seed=1)
    train = [r for r in report.log if r["kind"] == "train"]
    selects = [r for r in report.log if r["kind"] == "select"]
    # each training episode: T forward and T reverse steps and one dev gradient (the 256-example
    # dev subset at batch 64); each selection: its student's T steps
    assert report.cost == pytest.approx(
        {
            "train": (len(train) + len(selects)) * T * KINDS["train"],
            "reverse": len(train) * T * KINDS["reverse"],
            "dev_grad": len(train) * 256 / 64 * KINDS["dev_grad"],
        }
    )
    episode = T * (KINDS["train"] + KINDS["reverse"]) + 256 / 64 * KINDS["dev_grad"]
    assert budget - episode < report.student_steps <= budget  # stopped: no episode fits
    assert report.wall_time > 0 and report.episodes == len(train) >= 3
    assert set(evaluated) == {"select"}  # dev's held-out part; the hypergradients read meta
    assert selects[0]["updates"] == 0  # the untrained teacher is a candidate
    assert len(selects) >= 2
    best = [r for r in selects if r.get("best")][-1]
    assert teacher.best_dev_error == pytest.approx(best["dev_error"])
    assert min(r["dev_error"] for r in selects) == pytest.approx(teacher.best_dev_error)
    assert all(r["updated"] for r in train)
    # fresh students, the seed plan's (the one seed scheme of every teacher), none reused
    assert [r["seed"] for r in train] == [SeedPlan(1).nth(i) for i in range(len(train))]


def test_budget_below_one_episode_fits_nothing():
    teacher = make_teacher("l2t-dlf")
    report = teacher.fit(SPEC, SPEC.episode_steps - 1)
    assert report.student_steps == 0 and report.episodes == 0
    with pytest.raises(ValueError, match="budget"):
        teacher.fit(SPEC, -1)


def test_truncated_windows_update_once_per_window():
    teacher, env = fresh(window=1)
    opt = torch.optim.Adam(list(teacher.params.values()), lr=1e-3)
    rows = teacher.train_episode(env, seed=0, opt=opt)
    assert len(rows) == SPEC.horizon and all(r["updated"] for r in rows)


def test_memory_and_step_time_do_not_grow_across_episodes():
    teacher = make_teacher("l2t-dlf", select_every_updates=100, select_seeds=1)
    spec = SPEC.replace(horizon=4, interval=10, student_kwargs={"hidden": 64})
    env = teacher.spec_for(spec).make_env()
    episode = teacher.episode_cost(env.unwrapped.process, teacher.spec_for(spec))
    report = teacher.fit(spec, int(spec.episode_steps + 10 * episode) + 1)  # a selection, 10
    train = [r for r in report.log if r["kind"] == "train"]
    assert len(train) == 10
    rss = [r["rss_mb"] for r in train]
    times = [r["episode_time"] for r in train]
    tape = {r["tape_mb"] for r in train}
    assert len(tape) == 1  # the same checkpoints per episode
    # later episodes hold no more memory than the early ones (a leaked tape would add
    # tape_mb per episode) and do not slow down (medians: the machine is shared)
    assert rss[-1] - rss[2] < 2 * max(tape) + 4.0
    assert np.median(times[-4:]) < 2.0 * np.median(times[1:5]) + 0.05


@pytest.mark.parametrize("form", ["attention", "mlp"])
def test_save_load_round_trip(tmp_path, form):
    teacher = make_teacher("l2t-dlf", form=form, select_seeds=1)
    teacher.fit(SPEC, 3 * SPEC.episode_steps)
    teacher.save(tmp_path / "t.pt")
    loaded = Teacher.load(tmp_path / "t.pt")
    assert isinstance(loaded, L2TDLFTeacher) and loaded.config == teacher.config
    obs = np.random.default_rng(0).uniform(-1, 1, teacher._obs_dim()).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(obs), teacher.act(obs))
    assert loaded.best_dev_error == teacher.best_dev_error


def test_teaches_a_fresh_mnist5k_mlp_student():
    teacher = make_teacher("l2t-dlf", select_seeds=1, select_every_updates=100)
    spec = SPEC.replace(student_kwargs={})  # the registered default student, 784-256-10
    env = teacher.spec_for(spec).make_env()
    episode = teacher.episode_cost(env.unwrapped.process, teacher.spec_for(spec))
    report = teacher.fit(spec, int(spec.episode_steps + 2 * episode) + 1)
    assert report.episodes == 2
    result = teacher.teach(spec, seed=0)
    assert len(result.steps) == spec.horizon + 1 and len(result.coeffs) == spec.horizon
    assert result.final["student_steps"] == spec.episode_steps
    assert result.final["teach_cost_ratio"] == 1.0  # a frozen L2T-DLF costs what CE costs
    # the kept teacher is a candidate near the family's default loss (memory = 0.01 noise), so
    # its student is the default loss's student to a point, far below the untrained one's error
    default = make_teacher("fixed").teach(teacher.spec_for(spec), seed=0)
    untrained = spec.make_env()
    untrained.reset(seed=0)
    start_error = untrained.unwrapped.process.evaluate("test")["error"]
    assert abs(result.final["test_error"] - default.final["test_error"]) < 0.01
    assert result.final["test_error"] < start_error - 0.5
    # dynamic: the coefficients follow the state
    assert not np.allclose(result.coeffs[0], result.coeffs[-1])


def test_teaches_resnet8_on_generated_cifar(tmp_path, monkeypatch):
    from fake_datasets import accept_fake_cifar, write_fake_cifar

    write_fake_cifar(tmp_path, 200, 40)
    accept_fake_cifar(monkeypatch)
    # the CIFAR default dev split (5,000) exceeds the fake data; a small one, same code path
    monkeypatch.setattr(envs.process, "load_dataset", functools.partial(load_dataset, dev_size=40))
    spec = TeachingSpec(
        dataset="cifar10",
        student="resnet8",
        data_root=str(tmp_path),
        horizon=2,
        interval=2,
        batch_size=16,
        dev_subset=32,
        device="cpu",
    )
    teacher = make_teacher("l2t-dlf", select_seeds=1, select_every_updates=100, checkpoint_every=2)
    env = teacher.spec_for(spec).make_env()
    episode = teacher.episode_cost(env.unwrapped.process, teacher.spec_for(spec))
    report = teacher.fit(spec, int(spec.episode_steps + episode) + 1)
    assert report.episodes == 1
    # checkpoints every 2 steps: 2 of the 4 steps recomputed, charged where the process ran them
    assert report.cost["recompute"] == pytest.approx(2 * KINDS["recompute"])
    train = [r for r in report.log if r["kind"] == "train"]
    assert train[0]["updated"] and train[0]["grad_norm"] > 0
    result = teacher.teach(spec, seed=0)
    assert result.final["student_steps"] == spec.episode_steps
    assert np.isfinite(result.final["test_loss"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"form": "transformer"}, "unknown teacher form"),
        ({"family": "ce"}, "bilinear"),
        ({"memory": 0}, "memory"),
        ({"window": 0}, "window"),
        ({"objective": "accuracy"}, "dev objective"),
        ({"teacher_lr": -1.0}, "positive"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L2TDLFTeacher(**kwargs)


def test_bad_use_raises():
    with pytest.raises(RuntimeError, match="fit"):
        L2TDLFTeacher().act(np.zeros(12, np.float32))
    teacher, _ = fresh()
    with pytest.raises(ValueError, match="features"):
        teacher.act(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="parameters"):
        L2TDLFTeacher(form="mlp").load_state_dict(teacher.state_dict())


@pytest.mark.parametrize("objective", ["ce", "smooth-error"])
def test_teacher_parameter_gradient_matches_finite_differences(objective):
    """End to end, float64: d M_dev(w_T) / d theta, where the teacher's action a = mu_theta(s_0)
    sets the bilinear loss for T = 12 momentum-SGD steps of a tanh MLP student, as fit() computes
    it (RMD reverse pass -> d coeffs -> d a -> autograd into theta), against central differences
    of the whole episode re-run at theta +- eps d. One env step, so the observation the teacher
    reads does not itself depend on theta (later ones do, and RMD treats them as constants)."""
    spec = TeachingSpec(
        horizon=1,
        interval=12,
        batch_size=32,
        dev_subset=64,
        device="cpu",
        dtype="float64",
        student_kwargs={"hidden": 16, "activation": "tanh"},
    )
    teacher = L2TDLFTeacher(form="mlp", hidden=8, init_scale=0.5, clip=1e12, objective=objective)
    env = spec.make_env()
    teacher.build(env.observation_space.shape[0], env.family.dim)
    opt = torch.optim.SGD(list(teacher.params.values()), lr=0.0)  # keeps theta where it is
    (row,) = teacher.train_episode(env, seed=4, opt=opt)
    assert row["updated"] and not row["diverged"]
    grads = {k: p.grad.clone() for k, p in teacher.params.items()}

    def objective_at(params: dict) -> float:
        obs, _ = env.reset(seed=4)
        with torch.no_grad():
            saved = teacher.params
            teacher.params = params
            a = teacher.action(torch.as_tensor(obs)).numpy()  # float64 all the way
            teacher.params = saved
        env.step(a)
        proc = env.unwrapped.process
        with torch.no_grad():
            return proc.dev_objective(kind=objective, sharpness=teacher.config["sharpness"]).item()

    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    for _ in range(3):
        d = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64) for k, p in grads.items()}
        plus = {k: (p.detach() + eps * d[k]) for k, p in teacher.params.items()}
        minus = {k: (p.detach() - eps * d[k]) for k, p in teacher.params.items()}
        numeric = (objective_at(plus) - objective_at(minus)) / (2 * eps)
        analytic = sum((grads[k] * d[k]).sum().item() for k in grads)
        assert abs(analytic) > 1e-6  # a real signal, not 0 == 0
        assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)


# -- the estimator option (teachers/estimators.py through the teacher) --------------------------
ESTIMATOR_CONFIGS = {
    "full": {},
    "truncated": {"estimator": "truncated", "K": 5},
    "truncated-restart": {"estimator": "truncated", "K": 5, "restart_at": 5},
    "online": {"estimator": "online", "K": 5},
    "pes": {"estimator": "pes", "K": 5, "pairs": 2, "sigma": 0.05},
    "normalized": {"estimator": "truncated", "K": 10, "normalize": True},
}


@pytest.mark.parametrize("name", list(ESTIMATOR_CONFIGS))
@pytest.mark.parametrize("family", ["bilinear", "compact"])
def test_each_estimator_fits_within_its_budget_and_moves_theta(name, family):
    teacher = make_teacher(
        "l2t-dlf",
        select_every=1,
        select_seeds=1,
        teacher_lr=0.05,
        family=family,
        **ESTIMATOR_CONFIGS[name],
    )
    env = teacher.spec_for(SPEC).make_env()
    teacher.build(env.observation_space.shape[0], env.family.dim, env.family.default_action())
    before = teacher._snapshot()
    budget = 9 * SPEC.episode_steps + 7
    # keep the last theta (selection may keep the untrained one): it must have moved
    last = {}
    report = teacher.fit(SPEC, budget, seed=2, callback=lambda r: last.update(teacher._snapshot()))
    assert 0 < report.student_steps <= budget  # the skeleton raises on an under-declared update
    train = [r for r in report.log if r["kind"] == "train"]
    assert train and all(r["updated"] for r in train)
    assert report.student_steps > budget - max(  # it stopped because no further update fit
        ESTIMATOR_CONFIGS[name].get("pairs", 0) * 2 * 5 + 4 * SPEC.episode_steps, 1
    )
    moved = max(float((last[k] - before[k]).abs().max()) for k in before)
    assert moved > 1e-4, name
    if ESTIMATOR_CONFIGS[name].get("restart_at"):
        assert report.log[1]["kind"] == "checkpoint" and report.cost["train"] > 0


def test_truncated_with_K_equal_T_is_full_through_the_teacher():
    T = SPEC.episode_steps
    fitted = {}
    for name, options in {"full": {}, "truncated": {"estimator": "truncated", "K": T}}.items():
        teacher = make_teacher(
            "l2t-dlf", select_every_updates=2, select_seeds=1, teacher_lr=0.05, **options
        )
        report = teacher.fit(SPEC, 8 * T * 4, seed=3, callback=None)
        fitted[name] = (teacher, report)
    (full, rf), (trunc, rt) = fitted["full"], fitted["truncated"]
    assert rt.cost == pytest.approx(rf.cost)  # declared and charged alike
    assert [r["kind"] for r in rt.log] == [r["kind"] for r in rf.log]
    for a, b in zip(rf.log, rt.log, strict=True):
        for key in ("grad_norm", "objective", "dev_error"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-6), key
    for k in full.params:
        torch.testing.assert_close(trunc.params[k], full.params[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lr_action", [False, True])
def test_online_with_zero_meta_lr_teaches_the_untrained_teachers_student_to_the_bit(lr_action):
    spec = SPEC.replace(lr_action=lr_action)
    frozen = L2TDLFTeacher()
    online = L2TDLFTeacher(estimator="online", K=5, meta_lr=0.0)
    moving = L2TDLFTeacher(estimator="online", K=5, meta_lr=0.05)
    env = frozen.spec_for(spec).make_env()
    for t in (frozen, online, moving):
        t.build(env.observation_space.shape[0], env.family.dim, env.family.default_action())
    theta = frozen._snapshot()
    a = frozen.teach(spec, seed=4)
    b = online.teach(spec, seed=4)
    c = moving.teach(spec, seed=4)
    assert [r["dev_accuracy"] for r in a.steps] == [r["dev_accuracy"] for r in b.steps]
    np.testing.assert_array_equal(np.stack(a.coeffs), np.stack(b.coeffs))
    assert a.final["test_loss"] == b.final["test_loss"]
    # a non-zero meta-lr changes the losses after the first window, and is charged its passes
    assert not np.array_equal(np.stack(a.coeffs)[1:], np.stack(c.coeffs)[1:])
    np.testing.assert_array_equal(np.stack(a.coeffs)[0], np.stack(c.coeffs)[0])
    assert c.final["teach_cost"] > a.final["teach_cost"]
    for k in theta:  # each taught student starts from the fitted theta
        torch.testing.assert_close(moving.params[k], theta[k], rtol=0, atol=0)


def test_compact_family_gradient_goes_through_its_action_map():
    teacher, env = fresh(family="compact")
    np.testing.assert_allclose(
        teacher.params["M"].detach().mean(0).numpy(), env.family.default_action(), atol=0.05
    )
    opt = torch.optim.SGD(list(teacher.params.values()), lr=0.0)
    (row,) = teacher.train_episode(env, seed=0, opt=opt)
    assert row["updated"] and np.isfinite(row["grad_norm"]) and row["grad_norm"] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimator": "ppo"}, "unknown estimator"),
        ({"estimator": "truncated", "K": 0}, "K must"),
        ({"restart_at": 5}, "restart_at"),
        ({"estimator": "pes", "sigma": 0.0}, "sigma"),
        ({"estimator": "online", "meta_lr": -1.0}, "meta_lr"),
        ({"estimator": "truncated", "window": 2}, "window"),
        ({"form": "mlp", "family": "compact"}, "attention"),
    ],
)
def test_bad_estimator_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L2TDLFTeacher(**kwargs)


@pytest.mark.parametrize("normalize, bound", [(True, None), (False, 1e-3)])
def test_updates_are_normalised_or_clipped(normalize, bound):
    teacher, env = fresh(normalize=normalize, clip=bound or 1.0)
    opt = torch.optim.SGD(list(teacher.params.values()), lr=0.0)
    (row,) = teacher.train_episode(env, seed=0, opt=opt)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in teacher.params.values()]))
    assert row["grad_norm"] > 1e-3  # the raw norm, logged before conditioning
    assert float(norm) == pytest.approx(1.0 if normalize else bound, rel=1e-4)
