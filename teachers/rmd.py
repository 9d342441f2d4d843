"""Reverse-mode differentiation (RMD) through the student's momentum-SGD steps.

The forward pass is the process's own fast path (no graph): a :class:`Tape` passed to
``TeachingProcess.advance(..., tape=tape)`` (or ``LossTeachingEnv.step(action, tape=tape)``)
stores weight checkpoints. The reverse pass walks the steps backwards
with explicit adjoints, following Maclaurin et al. (2015, Alg. 2) in PyTorch's SGD convention
(students/optim.py):

    forward   v_{t+1} = mu v_t + g_t(w_t, Phi) + lambda w_t ;   w_{t+1} = w_t - eta_t v_{t+1}

    reverse   start  dw = dM/dw_T,  dv = 0;  for t = T-1 .. 0:
              dv_tot = dv - eta_t dw                          (adjoint of v_{t+1}, all paths)
              dPhi  += (d g_t / d Phi)^T dv_tot               (mixed product)
              dw    <- dw + lambda dv_tot + H_t dv_tot        (Hessian-vector product)
              dv    <- mu dv_tot

with g_t = grad_w L_Phi(w_t; B_t) and H_t = d g_t / d w_t. Per step: one gradient with
``create_graph=True`` and one double-backward that yields H_t dv_tot and the mixed product together.

The coefficients are constant within one ``advance`` call (one env step, ``interval`` student steps),
so the engine returns dM/dPhi_k per call k; a teacher backprops those into its parameters with one
autograd call. The state s_t a teacher reads is a constant here (no gradient through accuracies).

Memory: ``checkpoint_every=1`` keeps w_t for every step, O(T x |w|). ``checkpoint_every=k`` keeps
(w, v) every k steps and recomputes the k weights of a segment before reversing it:
O((T/k + k) x |w|) for one more forward pass of compute. Recomputed steps are compute, not student
SGD steps: budgets count only the forward pass (``process.student_steps``).

Truncation: a tape covers whatever was trained with it. Passing a fresh tape per window of an episode gives truncated RMD, which is greedy: short horizons favour losses that lower
the dev objective *soon* (Wu, Ren, Liao, Grosse 2018, "short-horizon bias"), and on mnist5k online
25-step windows made the final student worse (shared/papers/l2t-dlf.md). Full-episode RMD is the
default of the L2T-DLF teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from envs.process import DEV_OBJECTIVES, TeachingProcess
from students.optim import Tensors, sgd_step


@dataclass
class Tape:
    """Weight checkpoints and coefficients of one forward run, recorded by
    ``process.advance(coeffs, steps, tape=tape)``, which calls it before each step.

    Checkpoints are clones: the weights handed to the hook belong to the process (and, on other
    code paths, may be updated in place), so aliasing would silently reverse through w_T at every
    step (the official demo's ``borrow=True`` pitfall).
    """

    checkpoint_every: int = 1
    """store (w, v) every k steps; 1 = every step, no recompute"""
    start: int | None = None
    """step index of the first recorded step"""
    steps: int = 0
    """steps recorded"""
    checkpoints: dict[int, tuple[Tensors, Tensors]] = field(default_factory=dict)
    """step t -> (w_t, v_t); v_t only where a recompute starts"""
    coeffs: list[torch.Tensor] = field(default_factory=list)
    """coefficients of each ``advance`` call (segment k), detached"""
    segment_of_step: list[int] = field(default_factory=list)
    """segment index k of each recorded step"""

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {self.checkpoint_every!r}")
        self._last_coeffs: torch.Tensor | None = None

    def __call__(self, t: int, params: Tensors, velocity: Tensors, coeffs: torch.Tensor) -> None:
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
            w = {k: p.detach().clone() for k, p in params.items()}
            # with recompute, a segment restarts from (w, v); with k = 1, v is never needed
            v = (
                {k: p.detach().clone() for k, p in velocity.items()}
                if self.checkpoint_every > 1
                else {}
            )
            self.checkpoints[t] = (w, v)
        self.steps += 1

    def nbytes(self) -> int:
        """Bytes held by the checkpoints (for the memory benchmark and tests)."""
        return sum(
            p.numel() * p.element_size()
            for w, v in self.checkpoints.values()
            for d in (w, v)
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


def _recompute(
    process: TeachingProcess, tape: Tape, t0: int, t1: int, scratch: Tensors
) -> list[Tensors]:
    """w_t for t in [t0, t1) from the checkpoint at t0, by the fast path's arithmetic (same ops
    as ``student_step`` without its statistics), so the weights are the forward pass's bitwise."""
    w, v = tape.checkpoints[t0]
    out = [w]
    cfg = process.optim
    for t in range(t0, t1 - 1):
        x, y = process.batch(t)
        coeffs = tape.coeffs[tape.segment_of_step[t - tape.start]]
        inputs = _leaves(w)
        with torch.enable_grad():
            loss, _ = process.student_loss(inputs, scratch, x, y, coeffs)
            grads = torch.autograd.grad(loss, list(inputs.values()))
        with torch.no_grad():
            w, v = sgd_step(
                w,
                v,
                dict(zip(inputs, grads, strict=True)),
                cfg.lr_at(t),
                cfg.momentum,
                cfg.weight_decay,
                lr_scale=process.family.lr_multiplier(coeffs),
            )
        out.append(w)
    return out


def _lr_term(process: TeachingProcess, coeffs: torch.Tensor):
    """(s(Phi), ds/dPhi / s) of the family's lr multiplier, or (None, None) without one."""
    leaf = coeffs.detach().requires_grad_(True)
    with torch.enable_grad():
        s = process.family.lr_multiplier(leaf)
        if s is None:
            return None, None
        (ds,) = torch.autograd.grad(s, leaf)
    return s.detach(), (ds / s).detach().flatten()


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
    ``process.dev_objective(kind=objective)``: on the fixed dev subset, or the whole dev split
    with ``full_dev``; never the test split.
    """
    if tape.steps == 0:
        raise ValueError(
            "the tape recorded no steps: pass it to process.advance(..., tape=tape) first"
        )
    if objective not in DEV_OBJECTIVES:
        raise ValueError(f"unknown dev objective {objective!r}; known: {list(DEV_OBJECTIVES)}")
    if process.step != tape.start + tape.steps:
        raise RuntimeError(
            f"the process is at step {process.step} but the tape ends at step "
            f"{tape.start + tape.steps}: reverse right after the recorded training"
        )
    cfg = process.optim
    w_final = _leaves(process.params)
    with torch.enable_grad():
        m = process.dev_objective(w_final, kind=objective, sharpness=sharpness, full=full_dev)
        dw = list(torch.autograd.grad(m, list(w_final.values())))
    dv = [torch.zeros_like(p) for p in dw]
    dphi = torch.zeros(
        len(tape.coeffs), tape.coeffs[0].numel(), dtype=tape.coeffs[0].dtype, device=dw[0].device
    )
    # BatchNorm in train mode normalises by batch statistics, so its running buffers do not
    # enter g_t; they are updated in place, hence a scratch copy
    scratch = {k: b.clone() for k, b in process.buffers.items()}
    k_every = tape.checkpoint_every
    end = tape.start + tape.steps
    # lr action (envs.losses.LearningRateAction): eta_t = schedule(t) s(Phi), and
    # dM/dPhi += dw_{t+1} . (w_{t+1} - w_t) ds/dPhi / s, as w_{t+1} - w_t = -eta_t v_{t+1}
    lr_terms = [_lr_term(process, c) for c in tape.coeffs]
    scales = [1.0 if s is None else float(s) for s, _ in lr_terms]  # one read per segment
    w_next = process.params
    starts = sorted(tape.checkpoints, reverse=True)
    for seg_start in starts:
        seg_end = min(seg_start + k_every, end)
        if k_every == 1:
            weights = [tape.checkpoints[seg_start][0]]
        else:
            weights = _recompute(process, tape, seg_start, seg_end, scratch)
        for t in range(seg_end - 1, seg_start - 1, -1):
            w_t = weights[t - seg_start]
            seg = tape.segment_of_step[t - tape.start]
            eta = cfg.lr_at(t) * scales[seg]
            x, y = process.batch(t)
            if lr_terms[seg][1] is not None:
                step = torch._foreach_sub([w.detach() for w in w_next.values()], list(w_t.values()))
                moved = torch.stack([(a * b).sum() for a, b in zip(dw, step, strict=True)]).sum()
                dphi[seg] += moved * lr_terms[seg][1]
            w_next = w_t
            dv_tot = torch._foreach_add(dv, dw, alpha=-eta)
            inputs = _leaves(w_t)
            coeffs = tape.coeffs[seg].detach().requires_grad_(True)
            with torch.enable_grad():
                loss, _ = process.student_loss(inputs, scratch, x, y, coeffs)
                g = torch.autograd.grad(loss, list(inputs.values()), create_graph=True)
                *hv, dc = torch.autograd.grad(
                    g, [*inputs.values(), coeffs], grad_outputs=dv_tot, allow_unused=True
                )
            hv = [torch.zeros_like(d) if h is None else h for h, d in zip(hv, dv_tot, strict=True)]
            if dc is not None:
                dphi[seg] += dc.flatten()
            # dw <- dw + lambda dv_tot + H_t dv_tot ;  dv <- mu dv_tot
            torch._foreach_add_(dw, dv_tot, alpha=cfg.weight_decay)
            torch._foreach_add_(dw, hv)
            dv = torch._foreach_mul(dv_tot, cfg.momentum)
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
    (fast path, counted in ``process.student_steps``) and return dM/dcoeffs[k] by RMD.

    A convenience for fixed coefficient schedules (tests, the benchmark); state-dependent teachers
    pass a :class:`Tape` to each ``env.step(action, tape=tape)`` and call :func:`reverse`.
    """
    if coeffs.ndim != 2:
        raise ValueError(f"coeffs must be (K, d), one row per interval; got {tuple(coeffs.shape)}")
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    tape = Tape(checkpoint_every)
    for row in coeffs.detach():
        process.advance(row, interval, tape=tape)
    return reverse(process, tape, objective=objective, sharpness=sharpness, full_dev=full_dev)
