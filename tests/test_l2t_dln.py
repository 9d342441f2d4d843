"""L2T-DLN teacher: sizes, the look-ahead hypergradient against finite differences, the commit
against the process's own training, memory and step time flat, budgets, save/load, the rows."""

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.cost import KINDS
from envs.losses import make_loss
from envs.process import TeachingProcess
from students.data import from_tensors
from students.optim import SGDConfig
from teachers.base import Teacher, TeachingSpec
from teachers.l2t_dln import (
    CoordinateLSTM,
    L2TDLNTeacher,
    bce_warm_start,
    lookahead_hypergradient,
    preprocess,
)
from teachers.registry import make_teacher


def tiny_spec(**kw) -> TeachingSpec:
    base = dict(
        student_kwargs={"hidden": 16},
        horizon=2,
        interval=10,
        batch_size=16,
        dev_subset=64,
        device="cpu",
    )
    return TeachingSpec(**{**base, **kw})


def lstm_size(n_in: int, hidden: int = 64) -> int:
    """Parameters of LSTMCells n_in -> h -> h -> h -> 1: 4 o (i + o) weights + 8 o biases each."""
    sizes = [n_in, hidden, hidden, hidden, 1]
    return sum(4 * o * (i + o) + 8 * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts():
    assert make_loss("dln", 10).dim == 4 * 40 + 3 * 40 * 40 + 40 == 5000
    assert n_params(L2TDLNTeacher().lstm) == lstm_size(2) == 84_236  # the notes' "about 84k"
    assert n_params(L2TDLNTeacher(student_features=True).lstm) == lstm_size(2 + 12)


def test_preprocessing_known_values():
    p = 10.0
    g = torch.tensor([1.0, -math.exp(-5.0), 1e-6, 0.0], dtype=torch.float64)
    out = preprocess(g, p)
    expected = torch.tensor(
        [[0.0, 1.0], [-0.5, -1.0], [-1.0, math.exp(p) * 1e-6], [-1.0, 0.0]], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected)


def test_identity_start_emits_zero_update():
    lstm = CoordinateLSTM(identity_start=True)
    g = torch.randn(50)
    delta, state = lstm(g, lstm.initial_state(50, torch.float32, "cpu"))
    assert torch.equal(delta, torch.zeros(50))
    delta.sum().backward()  # ... yet psi gets a gradient through the zeroed cell
    assert lstm.cells[-1].weight_ih.grad.abs().sum() > 0


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="lookahead"):
        L2TDLNTeacher(lookahead=0)
    with pytest.raises(ValueError, match="warm_start"):
        L2TDLNTeacher(warm_start="ce-ish")
    with pytest.raises(ValueError, match="dln_step"):
        L2TDLNTeacher(dln_step=float("nan"))
    with pytest.raises(TypeError):
        L2TDLNTeacher(no_such_option=1)


def test_warm_start_is_a_loss_that_rewards_the_true_class():
    """g(s_y, s_j) falls as the true score rises and rises with the rival score."""
    family = make_loss("dln", 10)
    phi = bce_warm_start(10)
    y = torch.zeros(1, dtype=torch.long)
    good = torch.tensor([[3.0] + [-3.0] * 9], dtype=torch.float64)
    bad = torch.tensor([[-3.0] + [3.0] * 9], dtype=torch.float64)
    assert family(good, y, phi) < family(bad, y, phi)


def _dev_after(proc: TeachingProcess, coeffs: torch.Tensor, steps: int) -> torch.Tensor:
    proc.reset(0)
    proc.advance(coeffs, steps)
    return proc.dev_objective(kind="ce")


def test_lookahead_hypergradient_matches_central_finite_differences():
    """d CE_val(theta^(K)(phi)) / d phi through K momentum-SGD steps under the DLN, float64.

    A tanh student (no kinks in the student); eps is small enough that no LeakyReLU unit of the
    DLN changes side between phi +- eps d on these seeded batches."""
    proc = TeachingProcess(
        "mnist5k",
        "mlp",
        "dln",
        batch_size=8,
        dev_subset=32,
        device="cpu",
        dtype=torch.float64,
        optim=SGDConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, total_steps=20),
        student_kwargs={"hidden": 8, "activation": "tanh"},
    )
    phi = bce_warm_start(10).double()
    steps = 3
    proc.reset(0)
    grad, val = lookahead_hypergradient(proc, phi, steps)
    assert proc.step == 0  # the look-ahead leaves the student where it was
    torch.testing.assert_close(val, _dev_after(proc, phi, steps))  # and trained the same student
    gen = torch.Generator().manual_seed(0)
    eps = 1e-7
    for d in torch.randn(3, phi.numel(), generator=gen, dtype=torch.float64):
        d = d / d.norm()
        with torch.no_grad():
            fd = (
                _dev_after(proc, phi + eps * d, steps) - _dev_after(proc, phi - eps * d, steps)
            ) / (2 * eps)
        analytic = grad @ d
        assert abs(analytic - fd) <= 1e-4 * abs(fd), (float(analytic), float(fd))


def _bn_data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 3, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    return from_tensors(x[:80], y[:80], x[80:], y[80:], num_classes=10, dev_size=16)


def test_stage_three_lookahead_is_the_committed_student_and_is_charged():
    """Stage 3's look-ahead under phi_{t+1} (what psi learns from) is the student the env's step
    then commits under phi_{t+1} (weights, momentum, BatchNorm buffers; to float rounding
    between the differentiable and the fast path), and the iteration is charged to the process
    as documented: two differentiable look-aheads, two CE_val gradients."""
    data = _bn_data()
    teacher = L2TDLNTeacher(lookahead=2, identity_start=False)
    family = make_loss("dln", 10, action_range=4.0)
    a, b = (
        TeachingProcess(data, "resnet8", family, batch_size=16, dev_subset=16, device="cpu")
        for _ in range(2)
    )
    a.reset(1)
    b.reset(1)
    teacher.start_run(a)
    phi0 = teacher.phi.clone()
    row = teacher.learn_step(a, 2)
    assert not row["diverged"]
    assert not torch.equal(teacher.phi, phi0)  # the DLN moved ...
    assert (teacher.phi - phi0).abs().max() <= teacher.cfg.dln_step  # ... by at most alpha
    assert a.step == 0  # learn_step decides; it commits nothing
    assert a.cost.by_kind() == pytest.approx(
        {"unroll": 2 * 2 * KINDS["unroll"], "dev_grad": 2 * a.dev_subset / 16 * KINDS["dev_grad"]}
    )
    a.advance(teacher.phi, 2)  # the env's step: the commit
    state, stats = b.lookahead(teacher.phi.clone().requires_grad_(True), 2, differentiable=True)
    b.adopt(state, teacher.phi, stats)
    for mine, theirs in ((a.params, b.params), (a.velocity, b.velocity), (a.buffers, b.buffers)):
        for k in theirs:
            torch.testing.assert_close(mine[k], theirs[k], atol=1e-5, rtol=1e-4)
            assert theirs[k].grad_fn is None
    tracked = [v for k, v in a.buffers.items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) == 2 for v in tracked)  # BatchNorm saw the 2 committed steps
    torch.testing.assert_close(a.dev_subset_metrics(), b.dev_subset_metrics())


def test_lookahead_works_on_copies_of_the_batchnorm_buffers():
    """Stage 1 runs BatchNorm on copies: the process's state (the very same object, its buffers
    bitwise) is untouched, while the look-ahead's CE_val used the look-ahead's own statistics."""
    data = _bn_data()
    family = make_loss("dln", 10, action_range=4.0)
    proc = TeachingProcess(data, "resnet8", family, batch_size=16, dev_subset=16, device="cpu")
    proc.reset(1)
    state, before = proc.state, proc.state.clone()
    phi = bce_warm_start(10)
    _, val = lookahead_hypergradient(proc, phi, 2)
    assert proc.state is state and proc.step == 0
    assert proc.cost.by_kind() == pytest.approx(  # charged, not committed
        {"unroll": 2 * KINDS["unroll"], "dev_grad": proc.dev_subset / 16 * KINDS["dev_grad"]}
    )
    for k, b in before.buffers.items():
        assert torch.equal(proc.buffers[k], b), k
    proc.advance(phi, 2)  # the same 2 steps for real: the look-ahead's BatchNorm statistics
    torch.testing.assert_close(val, proc.dev_objective(kind="ce"), atol=1e-5, rtol=1e-4)


def test_dln_changes_after_a_teacher_step_and_nothing_keeps_a_graph():
    """With the identity start, the first iteration leaves phi alone and teaches psi; the second
    moves phi. Afterwards no tensor the teacher or the student keeps is part of a graph."""
    teacher = L2TDLNTeacher(lookahead=5)
    spec = tiny_spec()
    env = teacher.spec_for(spec).make_env()
    env.reset(seed=0)
    teacher.begin_episode(env)
    proc = env.unwrapped.process
    phi0 = teacher.phi.clone()
    psi0 = [p.detach().clone() for p in teacher.lstm.parameters()]
    teacher.learn_step(proc, 5)
    proc.advance(teacher.phi, 5)
    assert torch.equal(teacher.phi, phi0)
    assert any(not torch.equal(p, q) for p, q in zip(teacher.lstm.parameters(), psi0, strict=True))
    teacher.learn_step(proc, 5)
    proc.advance(teacher.phi, 5)
    assert not torch.equal(teacher.phi, phi0)
    kept = [teacher.phi, *(t for hc in teacher.memory for t in hc), *proc.params.values()]
    assert all(t.grad_fn is None and not t.requires_grad for t in kept)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_and_step_time_flat_across_iterations():
    """A graph or history kept per iteration would add ~MBs and time per iteration here."""
    teacher = L2TDLNTeacher(lookahead=5)
    spec = tiny_spec(student_kwargs={"hidden": 64}, horizon=1, interval=400)
    env = teacher.spec_for(spec).make_env()
    env.reset(seed=0)
    teacher.begin_episode(env)
    proc = env.unwrapped.process
    times, rss = [], []
    for _ in range(30):
        t0 = time.perf_counter()
        teacher.learn_step(proc, 5)
        proc.advance(teacher.phi, 5)
        times.append(time.perf_counter() - t0)
        rss.append(_rss_mb())
    # keeping each iteration's LSTM graph adds ~5 MB per iteration here (checked by hand)
    assert rss[-1] - rss[9] < 15.0, rss
    early, late = np.median(times[3:10]), np.median(times[-7:])
    assert late < 2.0 * early, (early, late)  # a graph chained over iterations grows linearly


def test_fit_is_charged_per_iteration_stops_at_its_budget_and_resets_each_run():
    """Each fit iteration is an env step of the base's episode loop, charged two differentiable
    K-step look-aheads, two CE_val gradients and the K committed steps; the skeleton stops before
    the iteration that would overrun; a new student (phi and memory reset) every 20 steps."""
    teacher = L2TDLNTeacher(lookahead=5, select_seeds=0)  # selection: test_select_snapshots.py
    spec = tiny_spec()  # 20-step runs: 4 iterations of K = 5
    per_iteration = {
        "unroll": 2 * 5 * KINDS["unroll"],
        "dev_grad": 2 * 64 / 16 * KINDS["dev_grad"],  # dev_subset 64 at batch 16
        "train": 5 * KINDS["train"],
    }
    one = sum(per_iteration.values())
    report = teacher.fit(spec, int(5.5 * one), seed=0)
    assert report.cost == pytest.approx({k: 5 * v for k, v in per_iteration.items()})
    assert report.student_steps <= int(5.5 * one) < report.student_steps + one
    assert report.episodes == 2
    assert [r["episode"] for r in report.log] == [0] * 4 + [1]
    assert [r["step"] for r in report.log] == [5, 10, 15, 20, 5]
    assert [r["student_steps"] for r in report.log] == pytest.approx([one * i for i in range(1, 6)])
    assert teacher.fit(spec, int(one) - 1).student_steps == 0
    with pytest.raises(ValueError, match="budget"):
        teacher.fit(spec, -1)


def test_teach_is_the_env_loop_with_a_row_every_k_steps_and_act_expresses_the_dln():
    spec = tiny_spec()  # 20-step episodes
    teacher = L2TDLNTeacher(lookahead=4, identity_start=False)  # moves phi from the start
    assert (teacher.spec_for(spec).interval, teacher.spec_for(spec).horizon) == (4, 5)
    with torch.no_grad():  # a runner may teach under no_grad; the look-ahead still differentiates
        result = teacher.teach(spec, seed=3)
    base = make_teacher("ce").teach(spec, seed=3)
    assert [set(r) for r in result.steps] == [set(base.steps[0])] + [set(base.steps[1])] * 5
    assert [r["student_steps"] for r in result.steps] == [0, 4, 8, 12, 16, 20]
    assert len(result.coeffs) == 5 and result.coeffs[0].shape == (5000,)
    assert not np.array_equal(result.coeffs[0], result.coeffs[1])
    assert result.final["student_steps"] == spec.episode_steps and not result.final["diverged"]
    # the taught student's cost: 5 iterations of a 4-step look-ahead and its CE_val gradient,
    # and the 20 committed steps; plain CE's is its 20 steps
    per_iteration = 4 * KINDS["unroll"] + 64 / 16 * KINDS["dev_grad"] + 4 * KINDS["train"]
    assert result.final["teach_cost"] == pytest.approx(5 * per_iteration)
    assert base.final["teach_cost"] == 20 and base.final["teach_cost_ratio"] == 1.0
    assert result.final["teach_cost_ratio"] == pytest.approx(5 * per_iteration / 20)
    assert np.isclose(
        sum(r["reward"] for r in result.steps),
        result.steps[-1]["dev_accuracy"] - result.steps[0]["dev_accuracy"],
    )
    env = teacher.spec_for(spec).make_env()
    env.reset(seed=0)
    teacher.begin_episode(env)
    action = teacher.act(np.zeros(12, np.float32))
    assert env.unwrapped.process.cost.by_kind() == pytest.approx(  # the look-ahead is charged
        {"unroll": 4 * KINDS["unroll"], "dev_grad": 64 / 16 * KINDS["dev_grad"]}
    )
    assert action.shape == (5000,) and np.abs(action).max() <= 1
    back = env.unwrapped.family.action_to_coeffs(action).to(teacher.phi.dtype)
    assert torch.equal(back, teacher.phi)  # float64 action: the env gets exactly this DLN


def test_teach_equals_the_explicit_iteration_loop_on_the_specs_own_intervals():
    """The env loop (interval K) trains the same student as K-step pieces of an env with the
    spec's interval: update the DLN, advance K steps, and so on (the pre-refactor loop)."""
    spec = tiny_spec()  # interval 10, K = 5: two iterations per spec interval
    teacher = L2TDLNTeacher(lookahead=5, identity_start=False)
    taught = teacher.teach(spec, seed=2)
    env = spec.replace(loss="dln", loss_kwargs=teacher.spec_for(spec).loss_kwargs).make_env()
    env.reset(seed=2)
    teacher.start_run(env.unwrapped.process)
    process = env.unwrapped.process
    while process.step < spec.episode_steps:
        phi, _ = teacher.update_dln(process, 5, track_psi=False)
        teacher.phi = phi.detach()
        process.advance(teacher.phi, 5)
    test = process.evaluate("test")
    assert (test["loss"], test["error"]) == (taught.final["test_loss"], taught.final["test_error"])


def test_lookahead_must_divide_the_episode():
    with pytest.raises(ValueError, match="must divide the episode length"):
        L2TDLNTeacher(lookahead=3).spec_for(tiny_spec())
    with pytest.raises(RuntimeError, match="begin_episode"):
        L2TDLNTeacher().act(np.zeros(12, np.float32))


def test_save_load_round_trip_replays_teaching(tmp_path):
    spec = tiny_spec()
    teacher = L2TDLNTeacher(lookahead=5, student_features=True)
    teacher.fit(spec, 80, seed=1)
    path = tmp_path / "dln.pt"
    teacher.save(path)
    loaded = Teacher.load(path)
    assert isinstance(loaded, L2TDLNTeacher) and loaded.config == teacher.config
    for (k, v), (k2, v2) in zip(
        teacher.lstm.state_dict().items(), loaded.lstm.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    a, b = teacher.teach(spec, seed=7), loaded.teach(spec, seed=7)
    assert a.final["dev_loss"] == b.final["dev_loss"]
    np.testing.assert_array_equal(a.coeffs[-1], b.coeffs[-1])


def test_update_every_is_checked():
    with pytest.raises(ValueError, match="update_every"):
        L2TDLNTeacher(lookahead=5, update_every=4)  # a window shorter than the look-ahead
    with pytest.raises(ValueError, match="update_every"):
        L2TDLNTeacher(update_every=True)
    with pytest.raises(ValueError, match="update_every=15 student steps, which must divide"):
        L2TDLNTeacher(lookahead=5, update_every=15).spec_for(tiny_spec())  # 20-step episodes


def test_update_every_teaches_one_iteration_per_window_and_is_charged_for_it():
    """update_every = N = 2K: the env acts every N steps; each iteration looks ahead K steps
    from the student, moves phi once, and the env commits N steps under it: the same student as
    the explicit loop (update the DLN from a K-step look-ahead, advance N steps), to the bit,
    charged one K-step look-ahead, one CE_val gradient and N committed steps per iteration."""
    spec = tiny_spec(horizon=4)  # 40-step episodes
    teacher = L2TDLNTeacher(lookahead=5, update_every=10, identity_start=False)
    assert (teacher.spec_for(spec).interval, teacher.spec_for(spec).horizon) == (10, 4)
    taught = teacher.teach(spec, seed=2)
    assert [r["student_steps"] for r in taught.steps] == [0, 10, 20, 30, 40]
    assert len(taught.coeffs) == 4 and not np.array_equal(taught.coeffs[0], taught.coeffs[1])
    per_iteration = 5 * KINDS["unroll"] + 64 / 16 * KINDS["dev_grad"] + 10 * KINDS["train"]
    assert taught.final["teach_cost"] == pytest.approx(4 * per_iteration)

    env = spec.replace(loss="dln", loss_kwargs=teacher.spec_for(spec).loss_kwargs).make_env()
    env.reset(seed=2)
    process = env.unwrapped.process
    teacher.start_run(process)
    while process.step < spec.episode_steps:
        phi, _ = teacher.update_dln(process, 5, track_psi=False)
        teacher.phi = phi.detach()
        process.advance(teacher.phi, 10)
    test = process.evaluate("test")
    assert (test["loss"], test["error"]) == (taught.final["test_loss"], taught.final["test_error"])
    # a different student from the per-K teacher's (phi moves every 5 steps there)
    per_k = L2TDLNTeacher(lookahead=5, identity_start=False).teach(spec, seed=2)
    assert per_k.final["test_loss"] != taught.final["test_loss"]


def test_update_every_fit_iterations_commit_the_window():
    """A fit iteration with update_every = N: stages 1-3 over K-step look-aheads, then the env
    commits N steps; charged two K-step look-aheads, two CE_val gradients, N steps."""
    teacher = L2TDLNTeacher(lookahead=5, update_every=10, select_seeds=0)
    spec = tiny_spec()  # 20-step runs: 2 iterations of N = 10
    one = 2 * 5 * KINDS["unroll"] + 2 * 64 / 16 * KINDS["dev_grad"] + 10 * KINDS["train"]
    report = teacher.fit(spec, int(3.5 * one), seed=0)
    assert report.student_steps == pytest.approx(3 * one)
    assert [r["step"] for r in report.log] == [10, 20, 10]
    assert [r["episode"] for r in report.log] == [0, 0, 1]
    assert not any(r["diverged"] for r in report.log)


def test_frozen_start_teaches_what_the_untrained_teacher_teaches():
    """The lr search scores L2T-DLN's frozen start (phi_0 held, no look-ahead): the student the
    untrained teacher (identity_start: Delta = 0) trains, to the bit, and not the family's
    Kaiming draw (the default action), under which a student learns nothing."""
    spec = tiny_spec(horizon=6, lr=0.1)
    teacher = L2TDLNTeacher(lookahead=5)
    own = teacher.spec_for(spec)
    start = teacher.frozen_start()
    assert start.spec_for(own) == own
    untrained = teacher.teach(spec, seed=3).final
    frozen = start.teach(own, seed=3).final
    assert (frozen["test_loss"], frozen["test_error"]) == (
        untrained["test_loss"],
        untrained["test_error"],
    )
    kaiming = make_teacher("fixed", family="dln").teach(own, seed=3).final
    assert frozen["test_error"] < 0.6 < kaiming["test_error"], (frozen, kaiming)


def test_lr_search_scores_the_warm_start(tmp_path):
    """analysis.runner.search_teacher: L2T-DLN's trials are its frozen start's students."""
    from analysis.runner import Grid, search_teacher
    from analysis.selection import evaluate_trial

    spec = tiny_spec(horizon=6)
    grid = Grid(teachers=["l2t-dln"], spec=spec, lr_grids={"l2t-dln": [0.1]}, selection_students=1)
    chosen = search_teacher(grid, "l2t-dln", tmp_path)
    teacher = L2TDLNTeacher()
    own = teacher.spec_for(spec)
    expected = evaluate_trial(teacher.frozen_start(), own, {"lr": 0.1}, [2**31 - 1])
    assert chosen.trials[0].errors == expected.errors
    assert chosen.trials[0].error < 0.6
