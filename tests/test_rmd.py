"""The RMD engine against autograd through the unrolled steps and against finite differences.

Tiny students in float64, so the checks are tight: relative error <= 1e-6 against autograd and
<= 1e-4 against central differences, in both memory modes (every-step checkpoints; checkpoints
every k steps with recompute).
"""

from __future__ import annotations

import pytest
import torch

from envs.process import TeachingProcess
from students.data import from_tensors
from students.optim import SGDConfig
from teachers import rmd

INTERVAL, SEGMENTS = 4, 3
STEPS = INTERVAL * SEGMENTS


def tiny_data(shape=(1, 1, 12), classes=3, n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, xt = torch.randn(n, *shape, generator=g), torch.randn(30, *shape, generator=g)
    y, yt = (
        torch.randint(0, classes, (n,), generator=g),
        torch.randint(0, classes, (30,), generator=g),
    )
    return from_tensors(x, y, xt, yt, num_classes=classes, dev_size=20)


DATA = tiny_data()


def make_process(student="mlp", data=DATA, schedule="cosine", optim=None, loss="bilinear", **kw):
    proc = TeachingProcess(
        data,
        student,
        loss,
        batch_size=16,
        optim=optim or SGDConfig(0.3, 0.9, 1e-2, schedule, STEPS),
        dtype=torch.float64,
        device="cpu",
        student_kwargs={"hidden": 6} if student == "mlp" else None,
        **kw,
    )
    proc.reset(3)
    return proc


def coeff_schedule(family, seed=1) -> torch.Tensor:
    """Distinct coefficients per segment, near the default."""
    g = torch.Generator().manual_seed(seed)
    base = family.default_coeffs(torch.float64).repeat(SEGMENTS, 1)
    return base + 0.1 * torch.randn(base.shape, generator=g, dtype=torch.float64)


def unrolled_grad(proc: TeachingProcess, coeffs: torch.Tensor, objective: str) -> torch.Tensor:
    """dM/dcoeffs by plain autograd through the differentiable path of the process."""
    leaf = coeffs.clone().requires_grad_(True)
    for row in leaf:
        proc.advance(row, INTERVAL, differentiable=True)
    (grad,) = torch.autograd.grad(proc.dev_objective(kind=objective), leaf)
    return grad


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("every", [1, 5])
@pytest.mark.parametrize("objective", ["ce", "smooth-error"])
def test_matches_autograd_through_unroll(every, objective):
    coeffs = coeff_schedule(make_process().family)
    h = rmd.hypergradient(
        make_process(), coeffs, INTERVAL, checkpoint_every=every, objective=objective
    )
    ref = unrolled_grad(make_process(), coeffs, objective)
    assert h.coeff_grads.shape == (SEGMENTS, coeffs.shape[1])
    assert ref.norm() > 0
    assert rel_err(h.coeff_grads, ref) <= 1e-6


@pytest.mark.parametrize("every", [1, 4])
def test_matches_central_finite_differences(every):
    family = make_process().family
    coeffs = coeff_schedule(family)
    h = rmd.hypergradient(make_process(), coeffs, INTERVAL, checkpoint_every=every)

    def objective(c: torch.Tensor) -> float:
        proc = make_process()
        for row in c:
            proc.advance(row, INTERVAL)
        return float(proc.dev_objective(kind="ce"))

    g = torch.Generator().manual_seed(7)
    eps = 1e-5
    for _ in range(3):  # random directions: every entry of the (K, d) gradient takes part
        u = torch.randn(coeffs.shape, generator=g, dtype=torch.float64)
        fd = (objective(coeffs + eps * u) - objective(coeffs - eps * u)) / (2 * eps)
        rmd_dir = float((h.coeff_grads * u).sum())
        assert abs(rmd_dir - fd) <= 1e-4 * abs(fd)


def test_batchnorm_student_matches_autograd():
    """resnet8 (BatchNorm in train mode, running buffers updated in place) on 8x8 images."""
    data = tiny_data(shape=(3, 8, 8), classes=3, n=60)
    coeffs = coeff_schedule(make_process("resnet8", data).family)
    h = rmd.hypergradient(make_process("resnet8", data), coeffs, INTERVAL, checkpoint_every=2)
    ref = unrolled_grad(make_process("resnet8", data), coeffs, "ce")
    assert rel_err(h.coeff_grads, ref) <= 1e-6


def test_plain_sgd_and_constant_schedule():
    """momentum 0 (the demo's plain SGD) is the same reverse pass with mu = 0."""
    plain = SGDConfig(0.3, 0.0, 0.0, "constant", STEPS)
    proc = make_process(optim=plain)
    coeffs = coeff_schedule(proc.family)
    h = rmd.hypergradient(proc, coeffs, INTERVAL)
    ref_proc = make_process(optim=plain)
    assert rel_err(h.coeff_grads, unrolled_grad(ref_proc, coeffs, "ce")) <= 1e-6


def test_checkpoints_are_not_the_live_weights_and_memory_modes_differ():
    proc = make_process()
    coeffs = coeff_schedule(proc.family)
    full, sparse = rmd.Tape(1), rmd.Tape(4)
    with proc.recording(full):
        for row in coeffs:
            proc.advance(row, INTERVAL)
    live = {p.data_ptr() for p in proc.params.values()}
    stored = {p.data_ptr() for w, _ in full.checkpoints.values() for p in w.values()}
    assert not live & stored
    assert len(full.checkpoints) == STEPS and full.steps == STEPS
    proc2 = make_process()
    with proc2.recording(sparse):
        for row in coeffs:
            proc2.advance(row, INTERVAL)
    assert len(sparse.checkpoints) == STEPS // 4
    assert sparse.nbytes() < full.nbytes()
    # the tape records inside its block only: later training records nothing
    proc.advance(coeffs[0], 1)
    assert full.steps == STEPS


def test_in_place_change_after_recording_does_not_reach_the_tape():
    coeffs = coeff_schedule(make_process().family)
    ref = rmd.hypergradient(make_process(), coeffs, INTERVAL).coeff_grads
    proc, tape = make_process(), rmd.Tape(1)
    with proc.recording(tape):
        for row in coeffs:
            proc.advance(row, INTERVAL)
    first = tape.checkpoints[0][0]
    snapshot = {k: v.clone() for k, v in first.items()}
    for p in proc.params.values():  # an in-place update of the live weights
        p.add_(1.0)
        p.sub_(1.0)
    assert all(torch.equal(first[k], snapshot[k]) for k in first)
    torch.testing.assert_close(rmd.reverse(proc, tape).coeff_grads, ref, rtol=1e-6, atol=0)


def test_bad_inputs_raise_clear_errors():
    proc = make_process()
    with pytest.raises(ValueError, match="checkpoint_every"):
        rmd.Tape(0)
    with pytest.raises(ValueError, match="recorded no steps"):
        rmd.reverse(proc, rmd.Tape())
    with pytest.raises(ValueError, match=r"\(K, d\)"):
        rmd.hypergradient(proc, proc.family.default_coeffs(torch.float64), INTERVAL)
    tape = rmd.Tape()
    with proc.recording(tape):
        proc.advance(proc.family.default_coeffs(torch.float64), 2)
    with pytest.raises(ValueError, match="dev objective"):
        rmd.reverse(proc, tape, objective="accuracy")
    proc.advance(proc.family.default_coeffs(torch.float64), 1)  # outside the tape
    with pytest.raises(RuntimeError, match="tape ends at step"):
        rmd.reverse(proc, tape)
    # a tape that missed steps (the process trained without it in between) refuses to record on
    with pytest.raises(RuntimeError, match="tape expected step 2, got 3"), proc.recording(tape):
        proc.advance(proc.family.default_coeffs(torch.float64), 1)


@pytest.mark.parametrize("every", [1, 4])
def test_a_reverse_pass_is_charged_as_documented(every):
    """The forward steps are charged as training, each reverse step, each recomputed step and
    the dev gradient at their KINDS prices, by the process that runs them."""
    from envs.cost import KINDS

    proc = make_process()
    coeffs = coeff_schedule(proc.family)
    rmd.hypergradient(proc, coeffs, INTERVAL, checkpoint_every=every)
    recomputed = STEPS - STEPS // every  # a segment of k steps recomputes k - 1 of them
    want = {
        "train": STEPS * KINDS["train"],
        "reverse": STEPS * KINDS["reverse"],
        "dev_grad": proc.dev_subset / 16 * KINDS["dev_grad"],  # the dev subset at batch 16
    }
    if recomputed:
        want["recompute"] = recomputed * KINDS["recompute"]
    assert proc.cost.by_kind() == pytest.approx(want)


def autograd_step_vjp(proc, state, coeffs, dw, dv):
    """The VJP of one step by plain autograd through the differentiable student step (what the
    process's step_vjp computed before its adjoint was written out)."""
    w = {k: p.detach().requires_grad_(True) for k, p in state.params.items()}
    v = {k: p.detach().requires_grad_(True) for k, p in state.velocity.items()}
    c = coeffs.detach().clone().requires_grad_(True)
    new, _ = proc.student_step(
        type(state)(w, v, state.buffers, state.step),
        proc.batch(state.step),
        c,
        differentiable=True,
        with_stats=False,
    )
    inputs = [*w.values(), *v.values(), c]
    out = torch.autograd.grad(
        [*new.params.values(), *new.velocity.values()],
        inputs,
        grad_outputs=[*dw, *dv],
        allow_unused=True,
    )
    out = [torch.zeros_like(x) if g is None else g for g, x in zip(out, inputs, strict=True)]
    n = len(w)
    return out[:n], out[n : 2 * n], out[-1]


@pytest.mark.parametrize(
    ("student", "loss", "kw"),
    [
        ("mlp", "bilinear", {}),
        ("mlp", "large-margin", {}),  # the head's features enter the loss
        ("resnet8", "bilinear", {}),  # BatchNorm in train mode
        ("mlp", "bilinear", {"lr_action": True}),  # the lr a coefficient: autograd's path
    ],
)
def test_step_vjp_is_the_steps_autograd_vjp(student, loss, kw):
    """The process's written-out adjoint of one momentum-SGD step (one double backward, the
    optimiser's arithmetic outside the graph, adjoints updated in place) equals autograd
    through the whole differentiable step, for random adjoints, to float64 rounding; in place
    and out of place give the same bits, and out of place leaves its inputs alone."""
    data = tiny_data(shape=(3, 8, 8), classes=3, n=60) if student == "resnet8" else DATA
    proc = make_process(student, data, loss=loss, **kw)
    g = torch.Generator().manual_seed(11)
    coeffs = proc.family.default_coeffs(torch.float64)
    coeffs = coeffs + 0.1 * torch.randn(coeffs.shape, generator=g, dtype=torch.float64)
    proc.advance(coeffs, 3)  # away from v = 0 and step 0 (the cosine lr is not eta_0)
    state = proc.state
    dw = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in state.params.values()]
    dv = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in state.params.values()]
    want = autograd_step_vjp(proc, state, coeffs, dw, dv)
    kept = [t.clone() for t in (*dw, *dv)]
    got = proc.step_vjp(state, coeffs, dw, dv)
    assert all(torch.equal(a, b) for a, b in zip((*dw, *dv), kept, strict=True))
    for mine, ref in zip((*got[0], *got[1], got[2]), (*want[0], *want[1], want[2]), strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12)
    again = proc.step_vjp(state, coeffs, dw, dv, inplace=True)
    assert all(
        torch.equal(a, b) for a, b in zip((*again[0], *again[1]), (*got[0], *got[1]), strict=True)
    )
    assert torch.equal(again[2], got[2])
    if not kw:  # the written-out path updates the caller's adjoints where they are
        assert all(a is b for a, b in zip(again[0], dw, strict=True))


def kept_outputs(proc, state, coeffs):
    """The data-layer outputs the fast path keeps for a tape in the step from `state`."""
    kept: dict = {}
    proc.student_step(state, proc.batch(state.step), coeffs, with_stats=False, keep_outputs=kept)
    return kept


@pytest.mark.parametrize(
    ("loss", "kw", "hidden"),
    [
        ("bilinear", {}, 6),
        ("large-margin", {}, 6),  # the head reads the (fed) first layer's activations
        ("bilinear", {}, (6, 5)),  # a second hidden layer: not on the data, not fed
    ],
)
def test_stored_output_step_vjp_is_the_steps_autograd_vjp(loss, kw, hidden):
    """The reverse step fed the first layer's output h_t as the forward computed it (no x W^T
    recomputed; its Hessian-vector product d_h^T x and sum d_h by the chain rule) equals
    autograd through the whole differentiable step, and the recomputing path, to float64
    rounding."""
    proc = make_process(loss=loss, **kw) if hidden == 6 else mlp_process(loss, hidden)
    g = torch.Generator().manual_seed(5)
    coeffs = proc.family.default_coeffs(torch.float64)
    coeffs = coeffs + 0.1 * torch.randn(coeffs.shape, generator=g, dtype=torch.float64)
    proc.advance(coeffs, 3)
    state = proc.state
    kept = kept_outputs(proc, state, coeffs)
    assert list(kept) == ["layers.0"] and kept["layers.0"].shape == (16, 6)
    x, _ = proc.batch(state.step)
    w0, b0 = state.params["layers.0.weight"], state.params["layers.0.bias"]
    assert torch.equal(kept["layers.0"], torch.nn.functional.linear(x.flatten(1), w0, b0))
    dw = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in state.params.values()]
    dv = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in state.params.values()]
    want = autograd_step_vjp(proc, state, coeffs, dw, dv)
    fed = proc.step_vjp(state, coeffs, dw, dv, outputs=kept)
    recomputed = proc.step_vjp(state, coeffs, dw, dv)
    for mine, ref, other in zip(
        (*fed[0], *fed[1], fed[2]),
        (*want[0], *want[1], want[2]),
        (*recomputed[0], *recomputed[1], recomputed[2]),
        strict=True,
    ):
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(mine, other, rtol=1e-12, atol=1e-14)
    # in place: the same numbers, written over the caller's adjoints
    again = proc.step_vjp(
        state, coeffs, [d.clone() for d in dw], [d.clone() for d in dv], inplace=True, outputs=kept
    )
    for a, b in zip((*again[0], *again[1], again[2]), (*fed[0], *fed[1], fed[2]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_outputs_are_kept_only_where_the_reverse_step_uses_them():
    """A k = 1 tape keeps each step's first-layer output (and counts its bytes); the recompute
    mode, the lr action, a Conv first layer and an output larger than the student's weights
    keep none, and their hypergradients still match autograd."""
    coeffs = coeff_schedule(make_process().family)
    proc, tape = make_process(), rmd.tape_for(make_process())
    with proc.recording(tape):
        for row in coeffs:
            proc.advance(row, INTERVAL)
    assert sorted(tape.outputs) == list(range(STEPS))
    assert all(
        list(o) == ["layers.0"] and o["layers.0"].shape == (16, 6) for o in tape.outputs.values()
    )
    weights = sum(
        p.numel() * p.element_size() for w, _ in tape.checkpoints.values() for p in w.values()
    )
    assert tape.nbytes() == weights + STEPS * 16 * 6 * 8
    sparse = rmd.tape_for(make_process(), 4)
    proc = make_process()
    with proc.recording(sparse):
        for row in coeffs:
            proc.advance(row, INTERVAL)
    assert not sparse.outputs  # the replay makes them for its segment
    lr_proc = make_process(lr_action=True)
    assert not rmd.tape_for(lr_proc).keep_outputs  # its reverse step is autograd's
    lr_coeffs = coeff_schedule(lr_proc.family)
    h = rmd.hypergradient(lr_proc, lr_coeffs, INTERVAL)
    assert (
        rel_err(h.coeff_grads, unrolled_grad(make_process(lr_action=True), lr_coeffs, "ce")) <= 1e-6
    )
    # resnet8: a Conv reads the data; its output (B x 16 x 8 x 8) is not kept
    data = tiny_data(shape=(3, 8, 8), classes=3, n=60)
    res = make_process("resnet8", data)
    assert kept_outputs(res, res.state, res.family.default_coeffs(torch.float64)) == {}
    res_coeffs = coeff_schedule(res.family)
    h = rmd.hypergradient(res, res_coeffs, INTERVAL)
    assert (
        rel_err(h.coeff_grads, unrolled_grad(make_process("resnet8", data), res_coeffs, "ce"))
        <= 1e-6
    )
    # a first layer wider than the student's weights (24 x 6 outputs > 12 x 6 + 6 + 6 x 3 + 3)
    wide = TeachingProcess(
        DATA,
        "mlp",
        "bilinear",
        batch_size=24,
        dtype=torch.float64,
        device="cpu",
        student_kwargs={"hidden": 6},
    )
    wide.reset(0)
    assert kept_outputs(wide, wide.state, wide.family.default_coeffs(torch.float64)) == {}


def test_a_stored_output_fed_where_it_was_not_recorded_raises():
    """A stored output reaches the forward only as the one call of its layer on the data: fed
    to a layer that reads activations, or to one the forward does not call, it raises."""
    proc = make_process()
    c = proc.family.default_coeffs(torch.float64)
    state = proc.state
    adj = [torch.ones_like(p) for p in state.params.values()]
    zeros = [torch.zeros_like(p) for p in state.params.values()]
    h = kept_outputs(proc, state, c)["layers.0"]
    with pytest.raises(RuntimeError, match="recorded for one call on the data"):
        proc.step_vjp(state, c, adj, zeros, outputs={"layers.1": torch.zeros(16, 3, dtype=h.dtype)})
    with pytest.raises(RuntimeError, match="recorded for one call on the data"):
        proc.step_vjp(state, c, adj, zeros, outputs={"layers.0": h[:8]})
    # the model is left as it was: its own forward again
    assert "forward" not in vars(proc.model.layers[0]) and "forward" not in vars(
        proc.model.layers[1]
    )
    proc.step_vjp(state, c, adj, zeros, outputs={"layers.0": h})


def adjoint_case(proc, seed, kept):
    """A reverse step to check: coefficients off their default, the state after 3 steps under
    them, that step's first-layer outputs (`kept`) or None, random adjoints dw and dv, and
    autograd's answer (:func:`autograd_step_vjp`)."""
    g = torch.Generator().manual_seed(seed)
    coeffs = proc.family.default_coeffs(torch.float64)
    coeffs = coeffs + 0.1 * torch.randn(coeffs.shape, generator=g, dtype=torch.float64)
    proc.advance(coeffs, 3)
    state = proc.state
    outputs = kept_outputs(proc, state, coeffs) if kept else None
    dw = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in state.params.values()]
    dv = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in state.params.values()]
    return state, coeffs, outputs, dw, dv, autograd_step_vjp(proc, state, coeffs, dw, dv)


def mlp_process(loss="bilinear", hidden=6, activation="relu"):
    proc = TeachingProcess(
        DATA,
        "mlp",
        loss,
        batch_size=16,
        optim=SGDConfig(0.3, 0.9, 1e-2, "cosine", STEPS),
        dtype=torch.float64,
        device="cpu",
        student_kwargs={"hidden": hidden, "activation": activation},
    )
    proc.reset(3)
    return proc


@pytest.mark.parametrize("kept", [True, False])
@pytest.mark.parametrize(
    ("loss", "hidden", "activation"),
    [
        ("bilinear", 6, "relu"),
        ("bilinear", (6, 5), "relu"),
        ("bilinear", (6, 5), "tanh"),  # curvature through the activations, a's second derivative
        ("large-margin", 6, "relu"),  # the head's weights enter the loss beside its output
        ("large-margin", (6, 5), "tanh"),  # the middle layer through its output, the head not
    ],
)
def test_layers_on_activations_enter_through_their_outputs(
    loss, hidden, activation, kept, monkeypatch
):
    """A Linear layer on activations a (the classifier, a middle layer) enters <g_t, dv_tot> as
    <dL/dh, a U^T + u> with a in the graph, so its weight gradient dL/dW = dh^T a is never
    formed; the reverse step still equals autograd through the whole step to float64 rounding,
    with the first layer's output fed (kept) or recomputed. A family that reads the classifier's
    weights directly (large-margin) keeps them in the create_graph gradient: there the identity
    would drop the loss's own dependence on W."""
    proc = mlp_process(loss, hidden, activation)
    state, coeffs, outputs, dw, dv, want = adjoint_case(proc, 13, kept)
    asked = []  # what each create_graph gradient is taken with respect to
    grad = torch.autograd.grad

    def spy(outputs, inputs, *args, **kwargs):
        if kwargs.get("create_graph"):
            asked.append([tuple(t.shape) for t in inputs])
        return grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    got = proc.step_vjp(state, coeffs, dw, dv, outputs=outputs)
    monkeypatch.undo()
    for mine, ref in zip((*got[0], *got[1], got[2]), (*want[0], *want[1], want[2]), strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12)
    # weights asked for directly: the classifier's under large-margin, and nothing else
    shapes = {k: tuple(p.shape) for k, p in state.params.items()}
    head = [k for k in shapes if k.startswith(f"layers.{len(shapes) // 2 - 1}.")]
    assert len(asked) == 1
    direct = sorted(s for s in asked[0] if s in shapes.values() and s[0] != 16)
    assert direct == sorted(shapes[k] for k in (head if loss == "large-margin" else []))


def test_the_model_call_is_functional_calls():
    """The process's model call (the tensors put into the module's own slots for the call, the
    slots found once) gives functional_call's logits and BatchNorm buffer updates bit for bit,
    leaves the module's own tensors in place after (also when the forward raises), and a
    model that ties weights takes functional_call itself."""
    from torch.func import functional_call

    from envs.process import _call_model, _parameter_slots

    data = tiny_data(shape=(3, 8, 8), classes=3, n=60)
    proc = make_process("resnet8", data)
    model, slots = proc.model, proc._slots
    own = {k: t for k, t in (*model.named_parameters(), *model.named_buffers())}
    params = {k: p + 0.01 for k, p in proc.params.items()}
    x, _ = proc.batch(0)
    mine, ref = ({k: b.clone() for k, b in proc.buffers.items()} for _ in range(2))
    got = _call_model(model, slots, params, mine, x)
    want = functional_call(model, (params, ref), (x,))
    assert torch.equal(got, want)
    assert any(not torch.equal(b, proc.buffers[k]) for k, b in mine.items())  # BN ran on them
    assert all(torch.equal(mine[k], ref[k]) for k in ref)
    after = {k: t for k, t in (*model.named_parameters(), *model.named_buffers())}
    assert after.keys() == own.keys() and all(after[k] is own[k] for k in own)
    with pytest.raises(RuntimeError):
        _call_model(model, slots, params, mine, x[:, :1])  # wrong channels: the conv raises
    after = {k: t for k, t in (*model.named_parameters(), *model.named_buffers())}
    assert all(after[k] is own[k] for k in own)
    tied = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert _parameter_slots(tied) is None
    assert _parameter_slots(make_process().model).keys() == dict(make_process().params).keys()


@pytest.mark.parametrize("every", [1, 4])
def test_the_tape_keeps_the_forwards_own_weights(every):
    """The process hands w_t to the tape (the weights stepped out of place while recording),
    so checkpoints are distinct tensors without a copy: the same weights, trajectory and
    hypergradient, bit for bit, as a tape that clones them; a checkpoint written in place after
    recording makes the reverse pass raise instead of reversing through the wrong weights."""
    coeffs = coeff_schedule(make_process().family)
    runs = {}
    for takes in (True, False):
        proc = make_process()
        tape = rmd.Tape(every, takes_weights=takes)
        with proc.recording(tape):
            for row in coeffs:
                proc.advance(row, INTERVAL)
        runs[takes] = proc, tape
    (handed, tape), (cloned, ref) = runs[True], runs[False]
    assert tape.checkpoints.keys() == ref.checkpoints.keys()
    for t, (w, _) in tape.checkpoints.items():
        assert all(torch.equal(w[k], ref.checkpoints[t][0][k]) for k in w)
    ptrs = [p.data_ptr() for w, _ in tape.checkpoints.values() for p in w.values()]
    assert len(set(ptrs)) == len(ptrs)  # one tensor per step: no checkpoint aliases another
    unrecorded = make_process()
    for row in coeffs:
        unrecorded.advance(row, INTERVAL)
    for k, p in unrecorded.params.items():
        assert torch.equal(handed.params[k], p) and torch.equal(cloned.params[k], p)
    for k, v in unrecorded.velocity.items():
        assert torch.equal(handed.velocity[k], v)
    h = rmd.reverse(handed, tape).coeff_grads
    assert torch.equal(h, rmd.reverse(cloned, ref).coeff_grads)
    # a write into a checkpoint (here the first one, with + then - to keep its values)
    first = tape.checkpoints[0][0]["layers.0.weight"]
    first.add_(1.0).sub_(1.0)
    with pytest.raises(RuntimeError, match="changed in place after they were recorded"):
        rmd.reverse(handed, tape)


@pytest.mark.parametrize("kept", [True, False])
def test_step_vjp_with_a_velocity_scale(kept):
    """With ``velocity_scale`` s the adjoint of v is held as dv / s and mu is left to the
    caller's scale: given dv / s, the step returns dv_tot / s, so mu s times it is autograd's
    adjoint of v_t, and dw and dPhi are autograd's, to float64 rounding. Not for the lr action."""
    proc = make_process()
    state, coeffs, outputs, dw, dv, want = adjoint_case(proc, 17, kept)
    s, mu = 0.37, proc.optim.momentum
    got_w, got_v, got_c = proc.step_vjp(
        state, coeffs, dw, [d / s for d in dv], outputs=outputs, velocity_scale=s
    )
    for mine, ref in zip((*got_w, got_c), (*want[0], want[2]), strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12)
    for mine, ref in zip(got_v, want[1], strict=True):
        torch.testing.assert_close(mu * s * mine, ref, rtol=1e-10, atol=1e-12)
    lr_proc = make_process(lr_action=True)
    with pytest.raises(ValueError, match="velocity_scale"):
        lr_proc.step_vjp(lr_proc.state, coeff_schedule(lr_proc.family)[0], dw, dv, velocity_scale=s)


@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_the_velocity_scale_folds_back_over_a_long_tape(momentum):
    """rmd.reverse holds dv / mu^k and folds the scale back into dv when it drops below 1e-4
    (after 14 steps at mu = 0.5; never in 24 at 0.9): both match autograd through the unroll."""
    segments, interval = 6, 4
    steps = segments * interval
    optim = SGDConfig(0.3, momentum, 1e-2, "cosine", steps)
    coeffs = make_process(optim=optim).family.default_coeffs(torch.float64).repeat(segments, 1)
    coeffs = coeffs + 0.1 * torch.randn(
        coeffs.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    h = rmd.hypergradient(make_process(optim=optim), coeffs, interval)
    proc, leaf = make_process(optim=optim), coeffs.clone().requires_grad_(True)
    for row in leaf:
        proc.advance(row, interval, differentiable=True)
    (ref,) = torch.autograd.grad(proc.dev_objective(kind="ce"), leaf)
    assert rel_err(h.coeff_grads, ref) <= 1e-6
