"""The reweighting peers against direct references: L2RW's weights against finite differences of
the meta loss in one example's weight, Meta-Weight-Net's update against a hand-written step;
ce+meta's and the oracle's training sets; the look-ahead charged to the process's counter."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from envs.cost import price
from envs.process import TeachingProcess
from students.optim import SGDConfig
from teachers.reweight import (
    L2RWWeights,
    MWNetTeacher,
    normalise,
    virtual_meta_loss,
)

B, M = 16, 24


def process(dtype=torch.float64, **kw) -> TeachingProcess:
    """A small float64 student, stepped a few times so that its momentum buffer is not zero."""
    optim = SGDConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, total_steps=100)
    p = TeachingProcess(
        "mnist5k",
        "mlp",
        "ce",
        batch_size=B,
        optim=optim,
        dev_subset=64,
        device="cpu",
        dtype=dtype,
        student_kwargs={"hidden": 16},
        **kw,
    )
    p.reset(4)
    p.advance(p.family.default_coeffs(dtype), 5)
    return p


def batches(p: TeachingProcess):
    x_meta, y_meta = p.data.split("meta", p.meta_size)
    return p.batch(p.step), (x_meta[:M], y_meta[:M]), p.family.default_coeffs(p.dtype)


def meta_loss_by_hand(p: TeachingProcess, eps: torch.Tensor, batch, meta_batch) -> float:
    """L_meta(theta'(eps)) written out: plain autograd for grad_theta sum_i eps_i l_i, then the
    momentum-SGD step v' = mu v + g + lambda theta, theta' = theta - eta_t v', by hand."""
    (x, y), (xm, ym) = batch, meta_batch
    params = {k: v.detach().clone().requires_grad_(True) for k, v in p.params.items()}
    logits = functional_call(p.model, (params, dict(p.buffers)), (x,))
    loss = (eps * F.cross_entropy(logits, y, reduction="none")).sum()
    grads = torch.autograd.grad(loss, list(params.values()))
    lr, mu, wd = p.optim.lr_at(p.step), p.optim.momentum, p.optim.weight_decay
    new = {
        k: w.detach() - lr * (mu * p.velocity[k] + g + wd * w.detach())
        for (k, w), g in zip(params.items(), grads, strict=True)
    }
    with torch.no_grad():
        return F.cross_entropy(functional_call(p.model, (new, dict(p.buffers)), (xm,)), ym).item()


def test_l2rw_weights_match_finite_differences_of_the_meta_loss():
    p = process()
    batch, meta_batch, coeffs = batches(p)
    eps = torch.zeros(B, dtype=torch.float64, requires_grad=True)
    meta, _ = virtual_meta_loss(p, p.state, batch, meta_batch, coeffs, lambda _: eps)
    (g,) = torch.autograd.grad(meta, eps)
    h = 1e-4
    fd = torch.zeros(B, dtype=torch.float64)
    for i in range(B):
        e = torch.zeros(B, dtype=torch.float64)
        e[i] = h
        up = meta_loss_by_hand(p, e, batch, meta_batch)
        down = meta_loss_by_hand(p, -e, batch, meta_batch)
        fd[i] = (up - down) / (2 * h)
    torch.testing.assert_close(g, fd, atol=1e-8, rtol=1e-5)
    assert (fd < 0).any() and (fd > 0).any()  # some examples help the meta loss, some hurt it
    w = L2RWWeights()(p, p.state, batch, meta_batch, coeffs)
    expected = fd.neg().clamp_min(0) / fd.neg().clamp_min(0).sum()
    torch.testing.assert_close(w, expected, atol=1e-7, rtol=1e-5)
    assert w.sum().item() == pytest.approx(1.0) and (w[fd > 0] == 0).all()


def test_l2rw_normalisation_gives_all_zero_weights_when_no_example_helps():
    assert torch.equal(normalise(torch.tensor([-1.0, -2.0, 0.0])), torch.zeros(3))
    torch.testing.assert_close(
        normalise(torch.tensor([3.0, -1.0, 1.0])), torch.tensor([0.75, 0, 0.25])
    )


def test_mw_net_step_matches_a_hand_written_meta_weight_net_step():
    p = process()
    batch, meta_batch, coeffs = batches(p)
    teacher = MWNetTeacher(init_seed=3, meta_lr=1e-2)
    weigh = teacher.make_weigh(p)
    ref_net = copy.deepcopy(weigh.net)
    ref_opt = torch.optim.Adam(ref_net.parameters(), lr=1e-2, weight_decay=1e-4)
    before = p.state.clone()
    w = weigh(p, p.state, batch, meta_batch, coeffs)

    # Shu et al. (2019), Algorithm 1, one iteration, by hand (the student's momentum SGD)
    (x, y), (xm, ym) = batch, meta_batch
    params = {k: v.detach().clone().requires_grad_(True) for k, v in before.params.items()}
    losses = F.cross_entropy(
        functional_call(p.model, (params, dict(before.buffers)), (x,)), y, reduction="none"
    )
    v = torch.sigmoid(ref_net.net(losses.detach().unsqueeze(-1))).squeeze(-1)
    grads = torch.autograd.grad((v * losses).mean(), list(params.values()), create_graph=True)
    lr, mu, wd = p.optim.lr_at(p.step), p.optim.momentum, p.optim.weight_decay
    virtual = {
        k: w0 - lr * (mu * before.velocity[k] + g + wd * w0)
        for (k, w0), g in zip(params.items(), grads, strict=True)
    }
    meta = F.cross_entropy(functional_call(p.model, (virtual, dict(before.buffers)), (xm,)), ym)
    ref_opt.zero_grad()
    meta.backward()
    ref_opt.step()
    for (k, a), b in zip(
        weigh.net.state_dict().items(), ref_net.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=k)
    fresh = teacher.new_net(p).state_dict()  # the same seeded start: the step moved V
    assert any(not torch.equal(a, fresh[k]) for k, a in weigh.net.state_dict().items())
    with torch.no_grad():
        expected = torch.sigmoid(ref_net.net(losses.detach().unsqueeze(-1))).squeeze(-1) / B
    torch.testing.assert_close(w, expected)
    for k in before.params:  # the look-ahead did not move the student
        assert torch.equal(p.params[k], before.params[k])


def test_uniform_weights_take_the_plain_cross_entropy_step():
    """sum_i (1/B) l_i is the minibatch mean: advance_weighted then equals advance under CE."""
    a, b = process(), process()
    a.advance(a.family.default_coeffs(a.dtype), 4)
    b.advance_weighted(lambda proc, st, batch, meta, c: torch.full((B,), 1 / B, dtype=c.dtype), 4)
    assert a.step == b.step == 9 and a.cost.by_kind() == b.cost.by_kind() == {"train": 9.0}
    for k in a.params:
        torch.testing.assert_close(b.params[k], a.params[k])
        torch.testing.assert_close(b.velocity[k], a.velocity[k])


def test_the_look_ahead_is_charged_to_the_process_counter():
    p = process()
    before = p.cost.by_kind()
    p.advance_weighted(L2RWWeights(), 3)
    spent = p.cost.by_kind()
    # per step: the step itself, the virtual step with its backward, a B-example meta batch
    assert spent["train"] - before.get("train", 0) == pytest.approx(price("train", 3))
    assert spent["unroll"] - before.get("unroll", 0) == pytest.approx(price("unroll", 3))
    assert spent["meta_grad"] - before.get("meta_grad", 0) == pytest.approx(price("meta_grad", 3))


def test_advance_weighted_reads_only_meta_examples():
    """The meta minibatches come from dev's first meta_size examples: poison the rest of dev
    (select) with NaN and L2RW still trains a finite student, equal to the clean run's."""
    clean, poisoned = process(meta_size=100), process(meta_size=100)
    x_dev = poisoned.data.x_dev.clone()
    x_dev[100:] = float("nan")
    object.__setattr__(poisoned.data, "x_dev", x_dev)  # the test's own copy of the frozen Splits
    for p in (clean, poisoned):
        p.advance_weighted(L2RWWeights(), 4)
    for k in clean.params:
        assert torch.isfinite(poisoned.params[k]).all()
        torch.testing.assert_close(poisoned.params[k], clean.params[k])


def test_advance_weighted_refuses_other_families():
    p = TeachingProcess(
        "mnist5k", "mlp", "bilinear", batch_size=B, device="cpu", student_kwargs={"hidden": 8}
    )
    p.reset(0)
    with pytest.raises(ValueError, match="family must be 'ce'"):
        p.advance_weighted(L2RWWeights(), 1)


def test_ce_meta_trains_on_train_plus_meta_exactly():
    p = process(label_noise=0.4)
    train_x, train_y = p.data.x_train.clone(), p.data.y_train.clone()
    meta_x, meta_y = p.data.split("meta", p.meta_size)
    q = TeachingProcess(
        "mnist5k",
        "mlp",
        "ce",
        batch_size=B,
        device="cpu",
        label_noise=0.4,
        dtype=torch.float64,
        student_kwargs={"hidden": 16},
    )
    q.set_training_data(add_meta=True)
    q.set_training_data(add_meta=True)  # idempotent: from the split as built, not added twice
    assert torch.equal(q.data.x_train, torch.cat([train_x, meta_x]))
    assert torch.equal(q.data.y_train, torch.cat([train_y, meta_y]))
    assert q.train_parts == ("train", "meta")
    q.reset(0)
    q.advance(q.family.default_coeffs(q.dtype), 1)
    with pytest.raises(RuntimeError, match="before any step"):
        q.set_training_data(add_meta=True)


def test_oracle_trains_on_exactly_the_unflipped_examples():
    noisy = TeachingProcess(
        "mnist5k",
        "mlp",
        "ce",
        batch_size=B,
        device="cpu",
        label_noise=0.4,
        student_kwargs={"hidden": 8},
    )
    clean = TeachingProcess(
        "mnist5k", "mlp", "ce", batch_size=B, device="cpu", student_kwargs={"hidden": 8}
    )
    flipped = noisy.corruption["train_flipped"]
    assert flipped.float().mean().item() == pytest.approx(0.4)
    assert (noisy.data.y_train != clean.data.y_train).eq(flipped).all()
    noisy.set_training_data(drop_flipped=True)
    assert torch.equal(noisy.data.y_train, clean.data.y_train[~flipped])
    assert torch.equal(noisy.data.x_train, clean.data.x_train[~flipped])
    assert noisy.train_parts == ("train-unflipped",)


@pytest.mark.parametrize("name", ["l2rw", "mw-net"])
def test_a_reweighting_teachers_student_lr_reaches_its_spec(name):
    """The lr a user (or the lr search) gives these teachers is the lr their students train at."""
    from teachers import make_teacher
    from teachers.base import TeachingSpec

    assert make_teacher(name, lr=0.02).spec_for(TeachingSpec(lr=0.1)).lr == 0.02
    assert make_teacher(name).spec_for(TeachingSpec(lr=0.1)).lr == 0.1


@pytest.mark.parametrize("name", ["l2rw", "mw-net"])
def test_a_taught_student_is_charged_the_look_ahead_of_every_step(name):
    """Each taught step: the step itself, the virtual step differentiated back (``unroll``) and
    the meta minibatch's pass (``meta_grad``, m / B = 1 here), so about 3.7x plain CE, not 1.0x
    (a lambda around the weighting function once hid its cost from the counter)."""
    from envs.cost import KINDS
    from teachers import TeachingSpec, make_teacher

    spec = TeachingSpec(horizon=2, interval=10, batch_size=16, dev_subset=32, device="cpu",
                        student_kwargs={"hidden": 16}, label_noise=0.4)  # fmt: skip
    final = make_teacher(name).teach(spec, seed=1).final
    per_step = KINDS["train"] + KINDS["unroll"] + KINDS["meta_grad"]
    assert final["teach_cost"] == pytest.approx(spec.episode_steps * per_step)
    assert final["teach_cost_ratio"] == pytest.approx(per_step)
