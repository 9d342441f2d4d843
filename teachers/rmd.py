"""Reverse-mode differentiation (RMD) through the student's momentum-SGD steps.

The forward pass is the process's own fast path (no graph): a :class:`Tape` recording it
(``with process.recording(tape): env.step(action)``) stores weight checkpoints. The reverse pass
walks the steps backwards with explicit adjoints, following Maclaurin et al. (2015, Alg. 2) in PyTorch's SGD convention
(students/optim.py):

    forward   v_{t+1} = mu v_t + g_t(w_t, Phi) + lambda w_t ;   w_{t+1} = w_t - eta_t v_{t+1}

    reverse   start  dw = dM/dw_T,  dv = 0;  for t = T-1 .. 0:
              dv_tot = dv - eta_t dw                          (adjoint of v_{t+1}, all paths)
              dPhi  += (d g_t / d Phi)^T dv_tot               (mixed product)
              dw    <- dw + lambda dv_tot + H_t dv_tot        (Hessian-vector product)
              dv    <- mu dv_tot

with g_t = grad_w L_Phi(w_t; B_t) and H_t = d g_t / d w_t. These four lines are the vector-Jacobian
product of one step (w_t, v_t, Phi) -> (w_{t+1}, v_{t+1}), the process's own
(``TeachingProcess.step_vjp``, next to the step it reverses; no copy of the student's update rule
here): the scalar <g_t, dv_tot> by one gradient with ``create_graph=True``, and its gradient (one
double backward) gives H_t dv_tot and the mixed product together. The optimiser's arithmetic stays
out of the graph and the adjoints are updated in place (``inplace=True``), and a layer on the data
(and a Linear layer on activations, the classifier included unless the family reads its weights:
``needs_head``) enters <g_t, dv_tot> through its output; the tape keeps each step's first-layer output h_t from
the forward, fed back as a leaf, so a reverse step does 2 products with the first layer's
weights (h_dot = x U^T and d_h^T x), as a plain step does (benchmarks/README.md, hypergradient
section).

The coefficients are constant within one ``advance`` call (one env step, ``interval`` student steps),
so the engine returns dM/dPhi_k per call k; a teacher backprops those into its parameters with one
autograd call. The state s_t a teacher reads is a constant here (no gradient through accuracies).

Memory: ``checkpoint_every=1`` keeps w_t and the first-layer output h_t (B x hidden) for every step,
O(T x (|w| + B x hidden)). ``checkpoint_every=k`` keeps
(w, v) every k steps and recomputes the k weights of a segment before reversing it:
O((T/k + k) x |w|) for one more forward pass of compute. The process charges every pass to
``process.cost`` (envs/cost.py): a forward step ``train``, a recomputed step ``recompute``, a
reverse step ``reverse``, the dev gradient ``dev_grad``.

Truncation: a tape covers whatever was trained with it. Passing a fresh tape per window of an episode gives truncated RMD, which is greedy: short horizons favour losses that lower
the dev objective *soon* (Wu, Ren, Liao, Grosse 2018, "short-horizon bias"), and on mnist5k online
25-step windows made the final student worse. Full-episode RMD is the
default of the L2T-DLF teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from envs.process import DEV_OBJECTIVES, StudentState, TeachingProcess
from students.optim import Tensors


@dataclass
class Tape:
    """Weight checkpoints and coefficients of one forward run, recorded by
    ``with process.recording(tape): process.advance(coeffs, steps)``: advance calls it before
    each step.

    The process hands w_t over (``takes_weights``: it steps the weights out of place while
    recording and never writes w_t again), so a checkpoint is the forward's own tensor, without
    the copy that cost a pass over the weights a step. Aliasing a tensor that is then updated in
    place would silently reverse through w_T at every step (the official demo's
    ``borrow=True`` pitfall): each checkpoint's version counters are recorded, and
    :func:`reverse` raises if one moved. The momentum v_t, which the fast path updates in place,
    is cloned where it is kept.
    """

    checkpoint_every: int = 1
    """store (w, v) every k steps; 1 = every step, no recompute"""
    keep_velocity: bool = False
    """keep v_t at every checkpoint even with k = 1: a step whose lr is a coefficient (the lr
    action) has d w_{t+1} / d eta = -v_{t+1}, which depends on v_t (:func:`tape_for` sets it)"""
    keep_outputs: bool = True
    """with k = 1, keep each step's first-layer outputs h_t = x W_t^T + b_t as the forward made
    them (``TeachingProcess.student_step``'s ``keep_outputs``: B x hidden floats a step, the
    mlp's 64 x 256 are 8 % of its checkpoint), so the reverse step need not recompute x W_t^T;
    with k > 1 the segment's replay makes them instead. Off for the lr action, whose reverse
    step is autograd's (:func:`tape_for`)"""
    start: int | None = None
    """step index of the first recorded step"""
    steps: int = 0
    """steps recorded"""
    checkpoints: dict[int, tuple[Tensors, Tensors]] = field(default_factory=dict)
    """step t -> (w_t, v_t); v_t only where a recompute starts"""
    outputs: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    """step t -> {layer name: h_t}, the kept data-layer outputs (``keep_outputs``, k = 1)"""
    coeffs: list[torch.Tensor] = field(default_factory=list)
    """coefficients of each ``advance`` call (segment k), detached"""
    segment_of_step: list[int] = field(default_factory=list)
    """segment index k of each recorded step"""
    takes_weights: bool = True
    """the process hands each w_t over for keeps (``TeachingProcess.recording``); False
    clones them instead"""
    versions: dict[int, list[int]] = field(default_factory=dict)
    """step t -> the version counters of w_t's tensors when recorded (an in-place write after
    would move them)"""

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {self.checkpoint_every!r}")
        self._last_coeffs: torch.Tensor | None = None

    def __call__(
        self, t: int, params: Tensors, velocity: Tensors, coeffs: torch.Tensor
    ) -> dict[str, torch.Tensor] | None:
        if self.start is None:
            self.start = t
        elif t != self.start + self.steps:
            raise RuntimeError(
                f"tape expected step {self.start + self.steps}, got {t}: the process was reset "
                "or trained outside the tape; use a fresh Tape per run"
            )
        if coeffs is not self._last_coeffs:  # a new advance() call: a new coefficient segment
            self._last_coeffs = coeffs
            self.coeffs.append(coeffs.detach().clone())
        self.segment_of_step.append(len(self.coeffs) - 1)
        i = t - self.start
        if i % self.checkpoint_every == 0:
            if self.takes_weights:
                w = {k: p.detach() for k, p in params.items()}
                self.versions[t] = [p._version for p in w.values()]
            else:
                w = {k: p.detach().clone() for k, p in params.items()}
            # with recompute, a segment restarts from (w, v); with k = 1, v is needed only when
            # the lr is a coefficient
            v = (
                {k: p.detach().clone() for k, p in velocity.items()}
                if self.checkpoint_every > 1 or self.keep_velocity
                else {}
            )
            self.checkpoints[t] = (w, v)
        self.steps += 1
        if self.keep_outputs and self.checkpoint_every == 1:  # the process fills it (recording)
            return self.outputs.setdefault(t, {})
        return None

    def nbytes(self) -> int:
        """Bytes held by the checkpoints and kept outputs (for the memory benchmark and tests)."""
        return sum(
            p.numel() * p.element_size()
            for d in (
                *(d for w, v in self.checkpoints.values() for d in (w, v)),
                *self.outputs.values(),
            )
            for p in d.values()
        )


@dataclass
class Hypergradient:
    """The result of one reverse pass."""

    objective: torch.Tensor
    """M(w_T), the dev objective at the end of the tape (0-d, detached)"""
    coeff_grads: torch.Tensor
    """(K, d): dM/dPhi_k for each coefficient segment k of the tape"""
    kind: str
    """which dev objective M was differentiated"""


def _leaves(d: Tensors) -> Tensors:
    return {k: p.detach().requires_grad_(True) for k, p in d.items()}


def lr_is_a_coefficient(process: TeachingProcess) -> bool:
    """True when the process's family scales the student lr (the lr action)."""
    family = process.family
    return family.lr_multiplier(family.default_coeffs(torch.float64)) is not None


def tape_for(process: TeachingProcess, checkpoint_every: int = 1) -> Tape:
    """A tape for `process`: it keeps what the reverse pass through this process needs."""
    lr_action = lr_is_a_coefficient(process)
    return Tape(checkpoint_every, keep_velocity=lr_action, keep_outputs=not lr_action)


def reverse(
    process: TeachingProcess,
    tape: Tape,
    *,
    objective: str = "ce",
    sharpness: float = 50.0,
    full_dev: bool = False,
) -> Hypergradient:
    """dM(w_T)/dPhi_k for every coefficient segment recorded on `tape`.

    `process` must still hold w_T (the weights right after the last recorded step). M is
    ``process.dev_objective(kind=objective)``: on the fixed dev subset, or the whole ``meta``
    part of dev with ``full_dev``; never ``select``, never the test split. Each reverse step is the VJP of the process's own
    step (``process.step_vjp``), each recomputed segment its own fast path
    (``process.replay``); the process charges both, and the dev gradient, to ``process.cost``.
    """
    if tape.steps == 0:
        raise ValueError(
            "the tape recorded no steps: record them with `with process.recording(tape):` first"
        )
    if objective not in DEV_OBJECTIVES:
        raise ValueError(f"unknown dev objective {objective!r}; known: {list(DEV_OBJECTIVES)}")
    if process.step != tape.start + tape.steps:
        raise RuntimeError(
            f"the process is at step {process.step} but the tape ends at step "
            f"{tape.start + tape.steps}: reverse right after the recorded training"
        )
    w_final = _leaves(process.params)
    with torch.enable_grad():
        m = process.dev_objective(w_final, kind=objective, sharpness=sharpness, full=full_dev)
        dw = list(torch.autograd.grad(m, list(w_final.values())))
    dv = [torch.zeros_like(p) for p in dw]
    dphi = torch.zeros(
        len(tape.coeffs), tape.coeffs[0].numel(), dtype=tape.coeffs[0].dtype, device=dw[0].device
    )
    # BatchNorm in train mode normalises by batch statistics, so its running buffers do not
    # enter g_t (the process's steps work on copies of them); v_t enters the VJP only through a
    # coefficient lr (the step is linear in it otherwise), so with every-step checkpoints it is
    # stored only then (Tape.keep_velocity): zeros stand in
    buffers = process.buffers
    if lr_is_a_coefficient(process) and tape.checkpoint_every == 1 and not tape.keep_velocity:
        raise ValueError(
            "the lr is a coefficient here: record with rmd.tape_for(process), which keeps v_t"
        )
    any_velocity = {k: torch.zeros_like(p) for k, p in process.params.items()}
    coeffs_at = lambda t: tape.coeffs[tape.segment_of_step[t - tape.start]]  # noqa: E731
    rows = dphi.unbind(0)  # dM/dPhi_k, views: each step adds its dc in place
    # dv is held as dv / scale: the momentum's factor mu of each reverse step goes to the scale
    # (step_vjp's velocity_scale), folded back into dv only when the scale gets small (every
    # ~90 steps at mu = 0.9, every step at mu = 0); the lr action's step is autograd's
    scaled = not lr_is_a_coefficient(process)
    scale, mu = 1.0, process.optim.momentum
    k_every = tape.checkpoint_every
    end = tape.start + tape.steps
    for seg_start in sorted(tape.checkpoints, reverse=True):
        seg_end = min(seg_start + k_every, end)
        w, v = tape.checkpoints[seg_start]
        if [p._version for p in w.values()] != tape.versions.get(seg_start, [0] * len(w)):
            raise RuntimeError(
                f"the weights checkpointed at step {seg_start} were changed in place after "
                "they were recorded: the tape would reverse through the wrong weights"
            )
        start = StudentState(w, v or any_velocity, buffers, seg_start)
        # (w_t, v_t) for t in [seg_start, seg_end) from the segment's checkpoint, and the
        # first-layer outputs h_t the forward kept (k = 1) or the replay makes (k > 1: all but
        # the segment's last step, whose reverse step recomputes its h)
        outputs = tape.outputs
        if k_every == 1:
            states = [start]
        else:
            outputs = {} if tape.keep_outputs else None
            states = process.replay(start, seg_end - seg_start - 1, coeffs_at, outputs=outputs)
        for t in range(seg_end - 1, seg_start - 1, -1):
            # dv_tot = dv - eta_t dw;  dPhi += (dg_t/dPhi)^T dv_tot;
            # dw <- dw + lambda dv_tot + H_t dv_tot;  dv <- mu dv_tot      (module docstring)
            s = states[t - seg_start]
            state_t = StudentState(s.params, s.velocity, buffers, t)
            kept = None if outputs is None else outputs.get(t)
            dw, dv, dc = process.step_vjp(
                state_t,
                coeffs_at(t),
                dw,
                dv,
                inplace=True,
                outputs=kept,
                velocity_scale=scale if scaled else None,
            )
            rows[tape.segment_of_step[t - tape.start]].add_(dc.reshape(-1))
            if scaled:
                scale *= mu
                if scale < 1e-4:  # dv / scale would grow past float32's comfort
                    torch._foreach_mul_(dv, scale)
                    scale = 1.0
    return Hypergradient(m.detach(), dphi, objective)


def hypergradient(
    process: TeachingProcess,
    coeffs: torch.Tensor,
    interval: int,
    *,
    checkpoint_every: int = 1,
    objective: str = "ce",
    sharpness: float = 50.0,
    full_dev: bool = False,
) -> Hypergradient:
    """Train `process` from its current state under ``coeffs[k]`` for `interval` steps each
    (fast path, charged ``train``) and return dM/dcoeffs[k] by RMD.

    A convenience for fixed coefficient schedules (tests, the benchmark); state-dependent teachers
    record their ``env.step`` calls with ``with process.recording(tape):`` and call
    :func:`reverse`.
    """
    if coeffs.ndim != 2:
        raise ValueError(f"coeffs must be (K, d), one row per interval; got {tuple(coeffs.shape)}")
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    tape = tape_for(process, checkpoint_every)
    with process.recording(tape):
        for row in coeffs.detach():
            process.advance(row, interval)
    return reverse(process, tape, objective=objective, sharpness=sharpness, full_dev=full_dev)
