"""BatchedTeachingProcess: N vmapped students follow N single TeachingProcesses exactly."""

import numpy as np
import pytest
import torch

from envs.batched import BatchedTeachingProcess
from envs.process import TeachingProcess
from envs.state import DefaultState
from students.data import from_tensors
from students.optim import SGDConfig

SEEDS = [3, 11, 5]
LRS = [0.1, 0.05, 0.2]


def tiny_images(n_train=80, n_test=16, shape=(3, 8, 8)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, *shape, generator=g)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return from_tensors(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=10, dev_size=16
    )


def configs(student):
    if student == "mlp":
        data = "mnist5k"
        kw = dict(batch_size=32, dev_subset=128, student_kwargs={"hidden": 32})
    else:  # a BatchNorm student on tiny generated images
        data = tiny_images()
        kw = dict(batch_size=16, dev_subset=16)
    return data, {**kw, "device": "cpu", "dtype": torch.float64}


def singles(student, loss, steps_total):
    data, kw = configs(student)
    procs = []
    for seed, lr in zip(SEEDS, LRS, strict=True):
        p = TeachingProcess(
            data, student, loss, optim=SGDConfig(lr=lr, total_steps=steps_total), **kw
        )
        p.reset(seed)
        procs.append(p)
    return procs


def batched(student, loss, steps_total):
    data, kw = configs(student)
    b = BatchedTeachingProcess(
        data, student, loss, len(SEEDS), lr=LRS, optim=SGDConfig(total_steps=steps_total), **kw
    )
    b.reset(SEEDS)
    return b


def own_coeffs(family, k):
    """Different coefficients per student, away from the default."""
    return torch.stack(
        [family.action_to_coeffs(np.full(family.dim, a)) for a in np.linspace(-0.2, 0.2, k)]
    ).double()


def assert_same(b, procs, atol=1e-6):
    for i, p in enumerate(procs):
        for k in p.params:
            torch.testing.assert_close(b.params[k][i], p.params[k], atol=atol, rtol=0)
            torch.testing.assert_close(b.velocity[k][i], p.velocity[k], atol=atol, rtol=0)
        for k in p.buffers:
            torch.testing.assert_close(b.buffers[k][i], p.buffers[k], atol=atol, rtol=0)


@pytest.mark.parametrize(
    "student,loss,intervals",
    [
        ("mlp", "bilinear", (30, 45)),
        ("mlp", "compact", (20,)),
        ("mlp", "dln", (6,)),
        ("resnet8", "bilinear", (4, 3)),
    ],
)
def test_same_trajectories_as_single_processes(student, loss, intervals):
    """Own seed, data order (past an epoch: mnist5k's 93 batches), coefficients and lr each."""
    total = sum(intervals)
    procs, b = singles(student, loss, total), batched(student, loss, total)
    state = DefaultState()
    for j, steps in enumerate(intervals):
        coeffs = own_coeffs(b.family, len(SEEDS)) * (1 + 0.1 * j)
        out = b.advance(coeffs, steps)
        for i, p in enumerate(procs):
            single = p.advance(coeffs[i], steps)
            for key, value in single.items():
                torch.testing.assert_close(out[key][i], value.double(), atol=1e-6, rtol=0)
        assert_same(b, procs)
        # the state function reads both processes the same way: (N, 12) vs N x (12,)
        torch.testing.assert_close(
            state(b), torch.stack([state(p) for p in procs]), atol=1e-6, rtol=0
        )
    if student == "resnet8":  # BatchNorm statistics moved, per student
        stats = b.buffers["features.1.running_mean"]
        assert not torch.equal(stats[0], stats[1]) and stats.abs().sum() > 0
        assert (b.buffers["features.1.num_batches_tracked"] == total).all()
    ev = b.evaluate("test")
    for i, p in enumerate(procs):
        assert ev["accuracy"][i] == pytest.approx(p.evaluate("test")["accuracy"], abs=1e-9)
        assert ev["loss"][i] == pytest.approx(p.evaluate("test")["loss"], abs=1e-6)
    assert b.cost.by_kind() == {"train": total * len(SEEDS)}


def test_students_out_of_step_after_a_partial_reset():
    """reset_students restarts one student (step 0, its own data order) while the others go on."""
    procs, b = singles("mlp", "bilinear", 60), batched("mlp", "bilinear", 60)
    coeffs = own_coeffs(b.family, 3)
    b.advance(coeffs, 10)
    for i, p in enumerate(procs):
        p.advance(coeffs[i], 10)
    b.reset_students([1], [99])
    procs[1].reset(99)
    assert b.fresh.tolist() == [False, True, False]
    torch.testing.assert_close(DefaultState()(b)[1], DefaultState()(procs[1]), atol=1e-6, rtol=0)
    b.advance(coeffs, 95)  # student 1 is 10 steps behind: per-student minibatch rows and lr
    for i, p in enumerate(procs):
        p.advance(coeffs[i], 95)
    assert b.steps.tolist() == [105, 95, 105]
    assert_same(b, procs)


def test_a_diverging_student_terminates_alone():
    b = batched("mlp", "ce", 40)
    coeffs = b.family.default_coeffs(torch.float64).expand(3, -1).clone()
    coeffs[1] = 1e6  # inverse temperature 1e6: the loss overflows to inf, the student diverges
    good = singles("mlp", "ce", 40)
    b.base_lr[1] = 1e6
    b.advance(coeffs, 20)
    assert b.diverged.tolist() == [False, True, False]
    for i in (0, 2):  # the others are exactly where they would be alone
        good[i].advance(coeffs[i], 20)
        for k in good[i].params:
            torch.testing.assert_close(b.params[k][i], good[i].params[k], atol=1e-6, rtol=0)
    state = DefaultState()(b)
    assert torch.isfinite(state).all()  # the diverged student's observation stays finite
    b.reset_students([1], [7])
    assert not b.diverged.any()


def test_train_has_no_host_sync(monkeypatch):
    b = batched("mlp", "bilinear", 60)
    coeffs = own_coeffs(b.family, 3)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):

        def fail(*a, _name=name, **k):
            raise AssertionError(f"host sync: Tensor.{_name} in train()")

        monkeypatch.setattr(torch.Tensor, name, fail)
    b.advance(coeffs, 12)


def test_bad_arguments():
    data, kw = configs("mlp")
    with pytest.raises(ValueError, match="num_students"):
        BatchedTeachingProcess(data, "mlp", "bilinear", 0, **kw)
    with pytest.raises(ValueError, match="lr must be"):
        BatchedTeachingProcess(data, "mlp", "bilinear", 2, lr=[0.1], **kw)
    b = BatchedTeachingProcess(data, "mlp", "bilinear", 2, **kw)
    with pytest.raises(RuntimeError, match="reset"):
        b.advance(b.family.default_coeffs(torch.float64), 1)
    b.reset([0, 1])
    with pytest.raises(ValueError, match="coeffs must have shape"):
        b.advance(torch.zeros(3, b.family.dim), 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("student", ["mlp", "resnet8"])
def test_same_trajectories_on_the_gpu(student):
    """The batched step on CUDA (float64) follows the single processes on CUDA."""
    data, kw = configs(student)
    kw["device"] = "cuda"
    procs = []
    for seed, lr in zip(SEEDS, LRS, strict=True):
        p = TeachingProcess(data, student, "bilinear", optim=SGDConfig(lr=lr, total_steps=20), **kw)
        p.reset(seed)
        procs.append(p)
    b = BatchedTeachingProcess(
        data, student, "bilinear", 3, lr=LRS, optim=SGDConfig(total_steps=20), **kw
    )
    b.reset(SEEDS)
    coeffs = own_coeffs(b.family, 3).cuda()
    b.advance(coeffs, 20)
    for i, p in enumerate(procs):
        p.advance(coeffs[i], 20)
    assert_same(b, procs)


def test_a_loss_that_reads_the_head_is_refused_clearly():
    """large-margin needs the classifier's features: the batched process says so up front."""
    with pytest.raises(ValueError, match="large-margin.*single processes"):
        BatchedTeachingProcess(tiny_images(), "mlp", "large-margin", 2, device="cpu")
