"""TeachingProcess: the two paths agree, hypergradients match finite differences, seeds replay,
no host syncs in the fast path, budgets are counted."""

import math

import numpy as np
import pytest
import torch

from envs.process import StudentState, TeachingProcess
from students.data import from_tensors, load_dataset
from students.optim import SGDConfig


def small_process(loss="bilinear", dtype=torch.float32, student="mlp", **kw):
    kw.setdefault("student_kwargs", {"hidden": 32} if student == "mlp" else {})
    kw.setdefault("optim", SGDConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, total_steps=60))
    return TeachingProcess(
        "mnist5k", student, loss, batch_size=32, dev_subset=128, device="cpu", dtype=dtype, **kw
    )


@pytest.mark.parametrize("loss", ["bilinear", "compact", "dln"])
def test_fast_path_equals_differentiable_path(loss):
    fast, slow = small_process(loss), small_process(loss)
    fast.reset(3)
    slow.reset(3)
    c = fast.family.action_to_coeffs(np.full(fast.family.dim, 0.1)).float()
    fast.advance(c, 50)
    slow.advance(c.clone().requires_grad_(), 50, differentiable=True)
    for k, p in fast.params.items():
        assert slow.params[k].requires_grad  # still a function of the coefficients
        torch.testing.assert_close(slow.params[k].detach(), p, atol=1e-5, rtol=1e-5)


def test_fast_and_differentiable_paths_agree_with_batchnorm(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 3, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    data = from_tensors(x[:80], y[:80], x[80:], y[80:], num_classes=10, dev_size=16)
    procs = [
        TeachingProcess(data, "resnet8", "bilinear", batch_size=16, dev_subset=16, device="cpu")
        for _ in range(2)
    ]
    for p in procs:
        p.reset(1)
    c = procs[0].family.default_coeffs()
    procs[0].advance(c, 8)
    procs[1].advance(c.clone().requires_grad_(), 8, differentiable=True)
    for k in procs[0].params:
        torch.testing.assert_close(
            procs[1].params[k].detach(), procs[0].params[k], atol=1e-5, rtol=1e-4
        )
    for k in procs[0].buffers:  # BatchNorm running statistics carried forward on both paths
        torch.testing.assert_close(procs[1].buffers[k], procs[0].buffers[k])
    counters = [k for k in procs[0].buffers if k.endswith("num_batches_tracked")]
    assert counters and all(procs[0].buffers[k] == 8 for k in counters)  # 8 steps, every BN
    assert not torch.equal(procs[0].buffers["features.1.running_mean"], torch.zeros(16))


def _dev_after(proc, coeffs, steps, seed=0):
    proc.reset(seed)
    proc.advance(coeffs, steps, differentiable=coeffs.requires_grad)
    return proc.dev_objective(kind="ce")


@pytest.mark.parametrize("loss", ["compact", "bilinear"])
def test_hypergradient_matches_central_finite_differences(loss):
    """d dev_objective / d coeffs through 20 unrolled momentum-SGD steps, float64."""
    # a smooth student: through ReLU kinks w_T jumps with Phi and finite differences are meaningless
    proc = small_process(
        loss, dtype=torch.float64, student_kwargs={"hidden": 32, "activation": "tanh"}
    )
    fam = proc.family
    c0 = fam.action_to_coeffs(np.full(fam.dim, 0.2))
    coeffs = c0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(_dev_after(proc, coeffs, 20), coeffs)
    gen = torch.Generator().manual_seed(0)
    directions = (
        torch.eye(fam.dim, dtype=torch.float64)
        if fam.dim <= 5
        else torch.randn(3, fam.dim, generator=gen, dtype=torch.float64)
    )
    eps = 1e-5
    for d in directions:
        with torch.no_grad():
            fd = (_dev_after(proc, c0 + eps * d, 20) - _dev_after(proc, c0 - eps * d, 20)) / (
                2 * eps
            )
        analytic = grad @ d
        assert abs(analytic - fd) <= 1e-4 * abs(fd) + 1e-10, (float(analytic), float(fd))


def test_reset_seed_replays_and_differs():
    a, b = small_process(), small_process()
    c = a.family.default_coeffs()
    for p, seed in ((a, 5), (b, 5)):
        p.reset(seed)
        p.advance(c, 10)
    for k in a.params:
        torch.testing.assert_close(a.params[k], b.params[k], rtol=0, atol=0)
    b.reset(6)
    b.advance(c, 10)
    assert not torch.equal(
        a.params["0.weight" if "0.weight" in a.params else next(iter(a.params))],
        b.params[next(iter(b.params))],
    )


def test_fast_path_has_no_host_sync(monkeypatch):
    """Nothing in train() reads a device value on the host (the fast path's contract)."""
    proc = small_process()
    proc.reset(0)
    c = proc.family.default_coeffs()
    proc.advance(c, 2)  # build the first epoch's permutation before patching

    def sync(*args, **kwargs):
        raise AssertionError("host sync inside TeachingProcess.train")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    proc.advance(c, 20)
    monkeypatch.undo()
    assert proc.step == 22


def test_training_steps_are_charged_over_episodes_and_data_on_device():
    proc = small_process()
    proc.reset(0)
    c = proc.family.default_coeffs()
    proc.advance(c, 7)
    proc.reset(1)  # the counter is the process's lifetime: a new student does not reset it
    proc.advance(c, 5)
    assert proc.cost.by_kind() == {"train": 12.0} and proc.step == 5
    assert proc.data.x_train.device == proc.device
    x, y = proc.batch(0)
    assert x.device == proc.device and x.shape[0] == 32


def test_student_step_is_pure():
    proc = small_process()
    proc.reset(0)
    before = proc.state.clone()
    new_state, stats = proc.student_step(proc.state, proc.batch(0), proc.family.default_coeffs())
    assert isinstance(new_state, StudentState) and proc.state.step == 0
    for k in before.params:
        torch.testing.assert_close(proc.params[k], before.params[k], rtol=0, atol=0)
        assert not torch.equal(new_state.params[k], before.params[k])
    for k in before.buffers:  # BatchNorm statistics are updated on a copy
        torch.testing.assert_close(proc.buffers[k], before.buffers[k], rtol=0, atol=0)
    assert new_state.step == 1 and torch.isfinite(stats.loss)


def test_student_state_is_a_stackable_pytree():
    """StudentState is a pytree: torch.func can map over it and states stack leaf by leaf."""
    from torch.utils._pytree import tree_flatten, tree_map

    proc = small_process()
    proc.reset(0)
    leaves, _ = tree_flatten(proc.state)
    n = len(proc.params) + len(proc.velocity) + len(proc.buffers) + 1
    assert len(leaves) == n and leaves[-1] == 0
    stacked = tree_map(lambda *xs: torch.stack(xs) if torch.is_tensor(xs[0]) else xs, proc.state,
                       proc.state.clone())  # fmt: skip
    assert isinstance(stacked, StudentState)
    assert all(v.shape[0] == 2 for v in stacked.params.values())


def test_evaluate_and_dev_objectives():
    proc = small_process()
    proc.reset(0)
    proc.advance(proc.family.default_coeffs(), 30)
    m = proc.evaluate("test")
    x, y = proc.data.split("test")  # the same student's error and loss by a plain forward pass
    with torch.no_grad():
        proc.model.eval()
        logits = torch.func.functional_call(proc.model, (proc.params, proc.buffers), (x,))
        proc.model.train()
    assert m["error"] == pytest.approx((logits.argmax(-1) != y).double().mean().item(), abs=1e-6)
    assert m["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), 1e-6)
    for kind in ("ce", "smooth-error", "expected-error"):
        assert torch.isfinite(proc.dev_objective(kind=kind))
    with pytest.raises(ValueError, match="smooth-error"):
        proc.dev_objective(kind="accuracy")
    with pytest.raises(ValueError, match="dev"):
        proc.evaluate("validation")


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="mlp"):
        TeachingProcess("mnist5k", "mpl", device="cpu")
    with pytest.raises(ValueError, match="mnist5k"):
        TeachingProcess("mnist6k", "mlp", device="cpu")
    with pytest.raises(ValueError, match="compact"):
        TeachingProcess("mnist5k", "mlp", "focal", device="cpu")


def test_missing_data_root_says_how_to_get_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="download"):
        TeachingProcess("cifar10", "resnet8", data_root=str(tmp_path / "nowhere"), device="cpu")


def test_float64_process_and_cached_dataset_is_not_mutated():
    proc = small_process(dtype=torch.float64)
    proc.reset(0)
    proc.advance(proc.family.default_coeffs(torch.float64), 3)
    assert proc.params[next(iter(proc.params))].dtype == torch.float64
    assert load_dataset("mnist5k").x_train.dtype == torch.float32


def test_adopt_makes_an_outside_unroll_the_student_like_train():
    """adopt(unroll) leaves the process exactly where train() would have: the process is the one
    writer of the student's state, also for unrolls a teacher computes itself (L2T-DLN)."""
    a, b = small_process(), small_process()
    a.reset(2)
    b.reset(2)
    c = a.family.default_coeffs()
    a.advance(c, 7)
    state, stats = b.state, []
    for _ in range(7):
        state, s = b.student_step(state, b.batch(state.step), c)
        stats.append(s)
    b.adopt(state, c, stats)
    assert b.step == a.step == 7
    for k in a.params:
        torch.testing.assert_close(b.params[k], a.params[k])
        torch.testing.assert_close(b.velocity[k], a.velocity[k])
    for key in ("loss", "train_ce", "train_accuracy", "update_norm"):
        torch.testing.assert_close(b.last_interval[key].double(), a.last_interval[key].double())
    torch.testing.assert_close(b.dev_subset_metrics()[1], a.dev_subset_metrics()[1])
    with pytest.raises(ValueError, match="at least one step"):
        b.adopt(state, c, [])


def test_observe_keeps_the_best_dev_accuracy_through_a_drop():
    """observe() is the one reader of the metrics and the one writer of best_dev_accuracy: a
    later, worse student (here the initial one, restored) does not lower it."""
    proc = small_process()
    proc.reset(0)
    start = proc.state.clone()
    first = proc.observe()
    assert first["best_dev_accuracy"] == first["dev_accuracy"]
    assert math.isnan(first["train_loss"]) and first["student_steps"] == 0
    proc.advance(proc.family.default_coeffs(), 60)
    trained = proc.observe()
    assert trained["dev_accuracy"] > first["dev_accuracy"]  # the premise: it learned
    assert trained["best_dev_accuracy"] == trained["dev_accuracy"]
    assert trained["train_loss"] == pytest.approx(float(proc.last_interval["train_ce"]))
    assert trained["student_steps"] == 60 and not trained["diverged"]
    proc.restore(start)
    again = proc.observe(torch.arange(3.0))
    assert again["dev_accuracy"] == first["dev_accuracy"]
    assert again["best_dev_accuracy"] == trained["dev_accuracy"]
    assert again["features"].tolist() == [0.0, 1.0, 2.0]
    proc.reset(1)  # a new episode starts from scratch
    assert proc.observe()["best_dev_accuracy"] == proc.observe()["dev_accuracy"]


def test_every_pass_is_charged_as_documented():
    """The process charges each pass it runs to its Meter at the price KINDS documents: a
    look-ahead (fast and differentiable) leaves the student as it was, adopt commits it without
    a second charge, and the RMD passes and the dev objective are charged where they run."""
    from envs.cost import KINDS

    proc = small_process()
    proc.reset(0)
    c = proc.family.default_coeffs()
    before = proc.state.clone()
    ahead, stats = proc.lookahead(c, 4)
    assert proc.step == 0 and ahead.step == 4 and len(stats) == 4
    for k in before.params:  # not committed: the student's own weights untouched
        assert torch.equal(proc.params[k], before.params[k])
    assert proc.cost.by_kind() == {"lookahead": 4 * KINDS["lookahead"]}
    proc.adopt(ahead, c, stats)
    assert proc.step == 4 and proc.cost.total == 4 * KINDS["lookahead"]
    leaf = c.clone().requires_grad_(True)
    unrolled, _ = proc.lookahead(leaf, 3, differentiable=True)
    assert all(p.requires_grad for p in unrolled.params.values())
    states = proc.replay(proc.state, 2, lambda t: c)
    assert [s.step for s in states] == [4, 5, 6]
    grads = [torch.ones_like(p) for p in proc.params.values()]
    zeros = [torch.zeros_like(p) for p in proc.params.values()]
    *_, dc = proc.step_vjp(proc.state, c, grads, zeros)
    assert dc.shape == c.shape and torch.isfinite(dc).all()
    proc.dev_objective()
    assert proc.cost.by_kind() == pytest.approx(
        {
            "lookahead": 4 * KINDS["lookahead"],
            "unroll": 3 * KINDS["unroll"],
            "recompute": 2 * KINDS["recompute"],
            "reverse": KINDS["reverse"],
            "dev_grad": 128 / 32 * KINDS["dev_grad"],  # dev_subset 128 at batch 32
        }
    )
    with pytest.raises(ValueError, match="unknown cost kind 'trian'.*'train'"):
        proc.cost.add("trian", 1.0)


def test_fast_lookahead_then_adopt_is_advance_bitwise():
    """The look-ahead is the process's own step: committing it gives advance's student, bit for
    bit (same minibatches, same arithmetic, out of place instead of in place)."""
    a, b = small_process(), small_process()
    a.reset(4)
    b.reset(4)
    c = a.family.default_coeffs()
    a.advance(c, 6)
    state, stats = b.lookahead(c, 6)
    b.adopt(state, c, stats)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]) and torch.equal(a.velocity[k], b.velocity[k])


def test_writes_from_outside_the_process_fail():
    """One owner: a teacher cannot set the counter, a cache or the state by hand; the process's
    own methods still write them."""
    from envs.batched import BatchedTeachingProcess
    from envs.cost import Meter

    proc = small_process()
    proc.reset(0)
    for name, value in (("cost", Meter()), ("_dev_cache", None), ("state", proc.state)):
        with pytest.raises(AttributeError, match="written by its own methods only"):
            setattr(proc, name, value)
    with pytest.raises(AttributeError, match="written by its own methods only"):
        proc.student_steps = 10  # what L2T-DLN used to do
    proc.advance(proc.family.default_coeffs(), 2)  # its own methods still write
    assert proc.step == 2
    batched = BatchedTeachingProcess.like(proc, 2)
    batched.reset([0, 1])
    with pytest.raises(AttributeError, match="written by its own methods only"):
        batched._dev_cache = None
