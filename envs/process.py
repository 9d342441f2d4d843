"""One student's training run as a process driven by loss coefficients from outside.

The process owns the student's weights w (a dict, trained through ``torch.func.functional_call``),
its BatchNorm buffers, the momentum buffer v, the seeded data stream and the step counter. It
advances by momentum-SGD steps on ``family(logits, y, coeffs)``:

    w_{t+1}, v_{t+1} = SGD(w_t, v_t, grad_w L_Phi(w_t; B_t), eta_t)          (students/optim.py)

with the same pure function on both paths:

* fast (``differentiable=False``): each step's gradient by ``torch.autograd.grad`` on detached
  leaves, the update under ``no_grad``; no value is read back to the host inside the loop;
* differentiable (``differentiable=True``): the gradient with ``create_graph=True`` so the new
  weights stay functions of ``coeffs`` (and of the weights before), for unrolled hypergradients.

Everything a teacher may observe is a view of this object (:attr:`state`, a :class:`StudentState`).
The process is the one owner of the student: its fields are written by its own methods only (a
write from outside raises), and every student-sized pass it runs (a training step, a look-ahead,
an RMD recompute or reverse step, a dev-objective gradient) is charged to :attr:`cost`, an
``envs.cost.Meter`` in student-step equivalents, so budgets are counted in one place.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from envs.config import DEFAULTS as D
from envs.config import DTYPES, PROCESS_FIELDS, keywords, take
from envs.cost import Meter
from envs.losses import LossFamily, make_loss
from students.corruption import corrupt
from students.data import Splits, load_dataset, meta_count, resolve_device
from students.models import build_student, init_student
from students.optim import SGDConfig, Tensors, init_velocity, sgd_step

DEV_OBJECTIVES = ("ce", "smooth-error", "expected-error")
STATS_WINDOW = 10
"""train metrics (loss, CE, accuracy) average this many last minibatches of each advance()"""


class StudentState(NamedTuple):
    """Everything a student step carries forward: the weights w_t, the momentum buffer v_t, the
    BatchNorm running statistics and the step index t (which sets eta_t and the minibatch).

    A pytree (a NamedTuple of dicts of tensors), so ``torch.utils._pytree`` / ``torch.func`` can
    map and stack it; :class:`TeachingProcess` holds one as :attr:`TeachingProcess.state` and is
    the only code that replaces it.
    """

    params: Tensors
    velocity: Tensors
    buffers: Tensors
    step: int

    def detached(self) -> StudentState:
        """The same state with every tensor cut from the autograd graph (no copy)."""
        d = lambda m: {k: v.detach() for k, v in m.items()}  # noqa: E731
        return StudentState(d(self.params), d(self.velocity), d(self.buffers), self.step)

    def clone(self) -> StudentState:
        """A detached deep copy: later in-place updates of this state do not reach it."""
        c = lambda m: {k: v.detach().clone() for k, v in m.items()}  # noqa: E731
        return StudentState(c(self.params), c(self.velocity), c(self.buffers), self.step)


ExampleWeights = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
"""per-example weights eps of a minibatch's loss terms: a (B,) tensor, or a function of the
detached terms (Meta-Weight-Net's weighting net)"""


Recorder = Callable[[int, Tensors, Tensors, torch.Tensor], dict[str, torch.Tensor] | None]
"""what :meth:`TeachingProcess.recording` calls before each step: ``tape(t, w_t, v_t, coeffs)``,
returning a dict for the step's kept data-layer outputs, or None"""


class StepStats(NamedTuple):
    """Per-step scalars, left on the device: the family loss, batch cross-entropy, #correct."""

    loss: torch.Tensor
    ce: torch.Tensor
    correct: torch.Tensor


class StateViews:
    """Read-only views of a process's ``state`` (a :class:`StudentState`, stacked or not), for
    the many call sites that read one part of it; only the process replaces ``state``."""

    state: StudentState

    @property
    def params(self) -> Tensors:
        return self.state.params

    @property
    def velocity(self) -> Tensors:
        return self.state.velocity

    @property
    def buffers(self) -> Tensors:
        return self.state.buffers


class TeachingProcess(StateViews):
    """A student trained by momentum SGD under a loss family whose coefficients come from outside.

    Args:
        dataset, student, loss and every field of :data:`~envs.config.PROCESS_FIELDS`: defined,
            defaulted and checked in ``envs/config.py`` (their help is there); ``loss`` may also
            be a :class:`LossFamily` instance, ``dtype`` a torch dtype. ``label_noise``,
            ``label_noise_kind``, ``noisy_dev`` and ``imbalance`` corrupt the training split
            (and dev with ``noisy_dev``) once, seeded; what was applied is in :attr:`corruption`.
        optim: the student's SGD hyper-parameters; ``total_steps`` is the episode length T that
            the schedule and the state's progress feature refer to.
        download: fetch a torchvision dataset into ``data_root`` first.
    """

    @keywords(PROCESS_FIELDS)
    def __init__(
        self,
        dataset: str | Splits = D.dataset,
        student: str = D.student,
        loss: str | LossFamily = D.loss,
        *,
        optim: SGDConfig | None = None,
        download: bool = False,
        **config: Any,
    ) -> None:
        c = take(
            "TeachingProcess",
            PROCESS_FIELDS,
            dict(dataset=dataset, student=student, loss=loss, **config),
        )
        self.config = c
        """the checked fields this process was built from (an :class:`~envs.config.EnvConfig`)"""
        self.device = resolve_device(c.device)
        self.dtype = dtype = DTYPES.get(c.dtype, c.dtype)
        if isinstance(c.dataset, Splits):
            splits = c.dataset
        else:
            splits = load_dataset(c.dataset, data_root=c.data_root, download=download)
        # one fixed corruption seed: every teacher and student of a comparison sees the same labels
        splits, self.corruption = corrupt(
            splits,
            label_noise=c.label_noise,
            label_noise_kind=c.label_noise_kind,
            noisy_dev=c.noisy_dev,
            imbalance=c.imbalance,
            seed=0,
        )
        self.data = splits.to(self.device, dtype)
        self.num_classes = self.data.num_classes
        self.model = build_student(
            c.student, self.data.input_shape, self.num_classes, **c.student_kwargs
        ).to(self.device, dtype)
        self.student_name = c.student
        self._layers = _layer_table(self.model)
        """the model's Linear/Conv layers, which may read the data (:func:`_data_layers`)"""
        self._slots = _parameter_slots(self.model)
        """where each weight and buffer goes in the model (:func:`_call_model`)"""
        self.family = make_loss(c.loss, self.num_classes, lr_action=c.lr_action, **c.loss_kwargs)
        self.optim = optim or SGDConfig()
        if c.batch_size > len(self.data.y_train):
            raise ValueError(
                f"batch_size must lie in [1, {len(self.data.y_train)}] (the training split), "
                f"got {c.batch_size}"
            )
        self.batch_size = c.batch_size
        self.meta_size = meta_count(len(self.data.y_dev), c.meta_size)
        """examples in dev's ``meta`` part (the rest are ``select``)"""
        self.dev_subset = min(c.dev_subset, self.meta_size)
        self.cost = Meter()
        """student-step equivalents of every pass this process ran, all episodes: budgets
        are charged from here (envs/cost.py)"""
        self.train_parts: tuple[str, ...] = ("train",)
        """what the training split is made of (:meth:`set_training_data`)"""
        self.seed: int | None = None
        self._tape: Recorder | None = None
        self._weigh: Callable[..., torch.Tensor] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        """Only the process's own methods write its fields (one owner per piece of
        state): a teacher that set ``student_steps`` or a cache by hand would make the counter
        or the observation silently wrong. Callers hand values in through ``reset``,
        ``advance``, ``adopt``, ``restore`` and ``recording`` instead."""
        if sys._getframe(1).f_locals.get("self") is not self:
            raise AttributeError(
                f"{type(self).__name__}.{name} belongs to the process and is written by its own "
                "methods only (reset, advance, adopt, restore, recording)"
            )
        object.__setattr__(self, name, value)

    # -- episode ------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """A fresh student: weights and data order drawn from `seed` alone."""
        self.seed = int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        params, buffers = init_student(self.model, gen)
        params = {k: v.to(self.device, self.dtype) for k, v in params.items()}
        self.state = StudentState(
            params, init_velocity(params), {k: v.to(self.device) for k, v in buffers.items()}, 0
        )
        self._order_gen = torch.Generator().manual_seed(self.seed + 1_000_003)
        self._epochs: list[torch.Tensor] = []
        self.best_dev_accuracy = torch.zeros((), dtype=self.dtype, device=self.device)
        """the best dev-subset accuracy :meth:`observe` saw this episode (a device scalar)"""
        self.last_interval: dict[str, torch.Tensor] = {}
        self.diverged = torch.zeros((), dtype=torch.bool, device=self.device)
        self.coeffs: torch.Tensor | None = None
        self._dev_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _require_reset(self) -> None:
        if self.seed is None:
            raise RuntimeError("call reset(seed) before training or observing the process")

    # -- data ---------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return len(self.data.y_train) // self.batch_size

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatch B_step: a seeded permutation per epoch, drawn on the host once per epoch and
        moved to the device; batches are index gathers on the device. Deterministic in (seed,
        step), so the reverse pass of a hypergradient can replay any step."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        while len(self._epochs) <= epoch:
            perm = torch.randperm(len(self.data.y_train), generator=self._order_gen)
            self._epochs.append(perm.to(self.device, non_blocking=True))
        idx = self._epochs[epoch][pos * self.batch_size : (pos + 1) * self.batch_size]
        # index_select, not x[idx]: the same rows, ~3x faster on a CPU core (7 vs 21 us for
        # 64 x 784 floats), and a hypergradient gathers every batch twice (forward, reverse)
        return self.data.x_train.index_select(0, idx), self.data.y_train.index_select(0, idx)

    # -- the pure student step ----------------------------------------------------------------
    def student_loss(
        self,
        params: Tensors,
        buffers: Tensors,
        x: torch.Tensor,
        y: torch.Tensor,
        coeffs,
        example_weights: ExampleWeights | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_Phi(w; x, y), logits) in training mode. BatchNorm updates `buffers` in place:
        callers pass a copy.

        With `example_weights` the loss is sum_i eps_i l_i(w) over the family's per-example terms
        (``family.per_example``; reweighting teachers, L2RW and Meta-Weight-Net): eps a (B,)
        tensor, or a function of the detached terms (Meta-Weight-Net's net of each loss)."""
        if self.family.needs_head:  # e.g. large-margin: the last Linear layer's input too
            return self._head_loss(params, buffers, x, y, coeffs)
        logits = _call_model(self.model, self._slots, params, buffers, x)
        if example_weights is None:
            return self.family(logits, y, coeffs), logits
        terms = self.family.per_example(logits, y, coeffs)
        eps = example_weights(terms.detach()) if callable(example_weights) else example_weights
        return (eps * terms).sum(), logits

    def _head_loss(self, params, buffers, x, y, coeffs) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``needs_head`` family's loss: the classifier's (the last nn.Linear's) input is
        caught by a forward hook, its weight and bias read from `params`."""
        name = self._head_name()
        head = self._layers[name][0]
        caught = []
        hook = head.register_forward_hook(lambda mod, inp, out: caught.append(inp[0]))
        try:
            logits = _call_model(self.model, self._slots, params, buffers, x)
        finally:
            hook.remove()
        weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
        return self.family.head_loss(logits, y, coeffs, caught[0], weight, bias), logits

    def student_step(
        self,
        state: StudentState,
        batch: tuple[torch.Tensor, torch.Tensor],
        coeffs: torch.Tensor,
        *,
        differentiable: bool = False,
        inplace: bool = False,
        with_stats: bool = True,
        example_weights: ExampleWeights | None = None,
        keep_outputs: dict[str, torch.Tensor] | None = None,
        fresh_params: bool = False,
    ) -> tuple[StudentState, StepStats | None]:
        """One momentum-SGD step on L_Phi: state_t -> state_{t+1} (on the per-example weighted
        loss with `example_weights`, :meth:`student_loss`).

        `keep_outputs`, a dict, is filled with the raw outputs h_t = x W_t^T + b_t of the
        Linear layers that read the data (:func:`_kept_outputs`), by layer name, as this step's
        forward computed them (no copy, no extra product): an RMD tape keeps them so that the
        reverse step (:meth:`step_vjp`'s ``outputs``) need not recompute x W_t^T.

        Pure by default: the inputs are not modified. With ``differentiable=True`` the outputs
        are functions of `state.params`, `state.velocity` and `coeffs` in the autograd graph.
        ``inplace=True`` (fast path only; what :meth:`advance` uses) updates the weights, momentum
        and BatchNorm buffers where they are, as torch.optim does, to save an allocation per
        tensor per step; callers that keep old weights must clone them, or pass
        ``fresh_params=True``: w_{t+1} in new tensors, w_t left as it was (the momentum and
        BatchNorm buffers still in place; how :meth:`advance` hands w_t to a recording tape).
        """
        if inplace and differentiable:
            raise ValueError("inplace=True is for the fast path; the differentiable path keeps w_t")
        x, y = batch
        params = state.params
        buffers = state.buffers if inplace else {k: b.clone() for k, b in state.buffers.items()}
        if differentiable:  # w_0 enters as a leaf; later w_t carry the graph back to coeffs
            inputs = {
                k: p if p.requires_grad else p.detach().requires_grad_(True)
                for k, p in params.items()
            }
        else:
            inputs = {k: p.detach().requires_grad_(True) for k, p in params.items()}
            coeffs = coeffs.detach()
        with torch.enable_grad():
            with _data_layers(self._layers, keep_outputs is not None) as layers:
                loss, logits = self.student_loss(inputs, buffers, x, y, coeffs, example_weights)
            if keep_outputs is not None:
                keep_outputs.update(_kept_outputs(layers, inputs))
            grads = torch.autograd.grad(loss, list(inputs.values()), create_graph=differentiable)
        grads = dict(zip(inputs, grads, strict=True))
        lr = self.optim.lr_at(state.step)
        with torch.set_grad_enabled(differentiable):
            if not differentiable:
                inputs = {k: p.detach() for k, p in inputs.items()}
            new_params, velocity = sgd_step(
                inputs,
                state.velocity,
                grads,
                lr,
                self.optim.momentum,
                self.optim.weight_decay,
                inplace=inplace,
                lr_scale=self.family.lr_multiplier(coeffs),  # None unless the lr is an action
                fresh_params=fresh_params,
            )
        stats = None
        if with_stats:
            with torch.no_grad():
                detached = logits.detach()
                stats = StepStats(
                    loss.detach(),
                    F.cross_entropy(detached, y),
                    (detached.argmax(-1) == y).sum(),
                )
        return StudentState(new_params, velocity, buffers, state.step + 1), stats

    def fork(self) -> TeachingProcess:
        """A second student on this process's data, model, loss family, optimiser and cost meter
        (so its passes are charged to the same account): an evolution-strategies particle, say.
        Call :meth:`reset` on it before use: that gives it its own weights, data order and
        episode records, which only its own methods change."""
        twin = copy.copy(self)
        object.__setattr__(twin, "seed", None)
        return twin

    # -- training -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def recording(self, tape: Recorder) -> Iterator[None]:
        """Within the block, :meth:`advance` calls ``tape(t, w_t, v_t, coeffs)`` before each
        step: an RMD ``teachers.rmd.Tape`` records its weight checkpoints so (it must clone what
        it keeps: the fast path updates the weights in place). A dict returned by the call is
        filled with the step's data-layer outputs (:meth:`student_step`'s ``keep_outputs``); a
        None return keeps nothing. A recorder whose ``takes_weights`` is true is handed w_t for
        keeps: the process steps the weights out of place while recording (``fresh_params``)
        and never writes w_t again, so it needs no copy (an RMD ``Tape``). A gradient teacher wraps its ``env.step`` calls in this
        block, so the env keeps Gymnasium's ``step(action)``."""
        if self._tape is not None:
            raise RuntimeError("the process is already recording to a tape")
        self._tape = tape
        try:
            yield
        finally:
            self._tape = None

    @contextlib.contextmanager
    def weighting(self, weigh: Callable[..., torch.Tensor]) -> Iterator[None]:
        """Within the block, :meth:`advance` takes per-example weighted steps
        (:meth:`advance_weighted` with `weigh`): how a reweighting teacher (L2RW, Meta-Weight-Net)
        teaches through the env while the env keeps Gymnasium's ``step(action)``."""
        if self._weigh is not None:
            raise RuntimeError("the process is already weighting its steps")
        self._weigh = weigh
        try:
            yield
        finally:
            self._weigh = None

    def advance(self, coeffs: torch.Tensor, steps: int, *, differentiable: bool = False) -> dict:
        """Take `steps` student SGD steps under `coeffs` and commit them; charged ``train`` per
        step (``unroll`` when `differentiable`: the caller will differentiate the steps).
        Inside :meth:`weighting`, the steps are :meth:`advance_weighted`'s.

        Returns the interval's mean family loss, train cross-entropy and accuracy, and the final
        gradient norm as 0-d device tensors (read them when you need them: no sync here).
        Divergence (a non-finite loss) is recorded in :attr:`diverged`, a device flag. Inside
        :meth:`recording`, the tape sees every step.
        """
        if self._weigh is not None and not differentiable:
            return self.advance_weighted(self._weigh, steps, coeffs=coeffs)
        self._require_reset()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        coeffs = coeffs.to(self.device, self.dtype)
        if not differentiable:
            coeffs = coeffs.detach()
        state = self.state
        # the fast path updates in place unless the current weights still belong to a graph (a
        # differentiable run before this one): bumping their version would break its backward
        inplace = not differentiable and not any(
            t.requires_grad for d in (state.params, state.velocity) for t in d.values()
        )
        sum_loss = sum_ce = torch.zeros((), device=self.device, dtype=self.dtype)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        # train metrics average the last `STATS_WINDOW` minibatches of the call: recent, and the
        # few device ops they cost are paid on a fifth of a default interval's steps
        first_stat = max(0, steps - STATS_WINDOW)
        tape = self._tape
        hand_over = inplace and getattr(tape, "takes_weights", False)
        for i in range(steps):
            kept = None
            if tape is not None:
                kept = tape(state.step, state.params, state.velocity, coeffs)
            batch = self.batch(state.step)
            state, stats = self.student_step(
                state,
                batch,
                coeffs,
                differentiable=differentiable,
                inplace=inplace,
                with_stats=i >= first_stat,
                keep_outputs=kept,
                fresh_params=hand_over,
            )
            if stats is not None:
                sum_loss = sum_loss + stats.loss
                sum_ce = sum_ce + stats.ce
                correct = correct + stats.correct
        n_stats = steps - first_stat
        self.state = state
        self.cost.charge("unroll" if differentiable else "train", steps)
        self._dev_cache = None
        self.coeffs = coeffs.detach()
        mean_loss = sum_loss / n_stats
        self.last_interval = {
            "loss": mean_loss,
            "train_ce": sum_ce / n_stats,
            "train_accuracy": correct / (n_stats * self.batch_size),
            # |v_{t+1}| = |mu v_t + g'_t|: the size of the last update direction, free to read
            "update_norm": torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(v.detach()) for v in self.velocity.values()])
            ),
        }
        # NaN weights stay NaN, so the window's loss and the momentum norm catch any divergence
        finite = torch.isfinite(mean_loss) & torch.isfinite(self.last_interval["update_norm"])
        self.diverged = self.diverged | ~finite
        return self.last_interval

    def lookahead(
        self,
        coeffs: torch.Tensor,
        steps: int,
        *,
        differentiable: bool = False,
        state: StudentState | None = None,
    ) -> tuple[StudentState, list[StepStats]]:
        """`steps` student steps under `coeffs` from `state` (default: the student's own), on the
        replayable minibatches of those steps, without committing them: the process's state is
        left as it was (BatchNorm runs on copies of the buffers). Charged ``lookahead`` per
        step, ``unroll`` when `differentiable` (the result is then a function of `coeffs` and of
        the state's weights in the autograd graph, also under a caller's ``no_grad``).

        :meth:`adopt` commits a look-ahead the caller wants to keep."""
        self._require_reset()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        state = self.state if state is None else state
        coeffs = coeffs.to(self.device, self.dtype)
        if not differentiable:
            coeffs = coeffs.detach()
        stats = []
        with torch.set_grad_enabled(differentiable or torch.is_grad_enabled()):
            for _ in range(steps):
                batch = self.batch(state.step)
                state, s = self.student_step(state, batch, coeffs, differentiable=differentiable)
                stats.append(s)
        self.cost.charge("unroll" if differentiable else "lookahead", steps)
        return state, stats

    def replay(
        self,
        state: StudentState,
        steps: int,
        coeffs_at: Callable[[int], torch.Tensor],
        *,
        outputs: dict[int, dict[str, torch.Tensor]] | None = None,
    ) -> list[StudentState]:
        """[state, state_{t+1}, ..., state_{t+steps}] by the fast path's arithmetic (the same
        ``student_step`` without statistics, out of place), under ``coeffs_at(t)`` at step t:
        the RMD recompute of a checkpointed segment, bitwise the forward pass's weights. Not
        committed; charged ``recompute`` per step. `outputs` (a dict) is filled with step t ->
        that step's kept data-layer outputs (:meth:`student_step`'s ``keep_outputs``), for the
        segment's reverse steps."""
        out = [state]
        for _ in range(steps):
            t = state.step
            kept = None if outputs is None else outputs.setdefault(t, {})
            state, _ = self.student_step(
                state, self.batch(t), coeffs_at(t), with_stats=False, keep_outputs=kept
            )
            out.append(state)
        self.cost.charge("recompute", steps)
        return out

    def step_vjp(
        self,
        state: StudentState,
        coeffs: torch.Tensor,
        d_params: list[torch.Tensor],
        d_velocity: list[torch.Tensor],
        *,
        inplace: bool = False,
        outputs: dict[str, torch.Tensor] | None = None,
        velocity_scale: float | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Reverse mode through one student step (state_t -> state_{t+1} under `coeffs`): given
        the adjoints of w_{t+1} and v_{t+1} (lists in ``state.params`` order), return those of
        w_t, v_t and `coeffs`; the step is linear in v_t, so ``state.velocity`` may hold any
        value of the right shape. Charged ``reverse``.

        The adjoint of :func:`students.optim.sgd_step` (v' = mu v + g + lambda w,
        w' = w - eta v'), with g_t = grad_w L_Phi(w_t; B_t) and H_t = d g_t / d w_t:

            dv_tot = dv - eta dw;  dPhi = (d g_t / d Phi)^T dv_tot;
            dw <- dw + lambda dv_tot + H_t dv_tot;  dv <- mu dv_tot

        One gradient with ``create_graph`` and one double backward give H_t dv_tot and the mixed
        product together; the optimiser's own arithmetic stays out of the graph (autograd
        through its foreach ops cost ~20 % of a reverse step on the CPU). ``inplace=True``
        writes the new dw and dv over `d_params` and `d_velocity` (an RMD loop owns its
        adjoints): no fresh buffer per tensor per step. With the lr a coefficient (the lr
        action: w' = w - eta s(Phi) v'), it is autograd through the whole differentiable step.

        `velocity_scale` s (not with the lr action): `d_velocity` holds dv / s, and the returned
        adjoint of v_t holds mu dv_tot / (mu s), i.e. dv_tot / s: the last line's factor mu is
        left to the caller's scale (s <- mu s; :func:`teachers.rmd.reverse` folds it back in
        when s gets small) instead of a pass over the weights. Inside, with E = dv / s,

            E <- E - (eta / s) dw  (= dv_tot / s);   <g_t, dv_tot> = s <g_t, E>;
            dw <- dw + (lambda s) E + H_t dv_tot

        the same arithmetic as above up to rounding.

        A layer that reads the data, h = f(x; W, b) (a Linear or Conv whose input needs no
        gradient), is linear in (W, b) and its weights reach the loss through h alone, so

            <dL/dW, U> + <dL/db, u> = <dL/dh, h_dot>,   h_dot = f(x; U, u)   (U, u: dv_tot's)

        and <g_t, dv_tot> is formed through h: the product dL/dW = dh^T x, which only the
        double backward would read, is never made. `outputs` ({layer name: h_t}, what the
        forward step computed: :meth:`student_step`'s ``keep_outputs``) goes one product
        further for those layers (Linear): the stored h_t enters as a leaf instead of
        x W_t^T, and since h_dot does not depend on (W, b), the double backward's
        d_h = d<g_t, dv_tot>/dh gives their Hessian-vector product by the chain rule,

            (H_t dv_tot)_W = d_h^T x,   (H_t dv_tot)_b = sum over the batch of d_h,

        so a reverse step makes 2 products with such a layer's weights (h_dot and d_h^T x)
        instead of 3. Layers not in `outputs` recompute h.

        A Linear layer on activations, h = a W^T + b (the classifier, a middle layer; called
        once), enters the same way, <dL/dW, U> + <dL/db, u> = <dL/dh, a U^T + u>, with a kept
        in the graph: the scalar is the same function of the weights, so its gradient is too
        (a's dependence on the layers below carries their part), and dL/dW = dh^T a and its
        double backward are not formed (~5 % of a reverse step, mlp on mnist). Not for the
        classifier of a family that reads its weights beside its output (``needs_head``,
        large-margin): there dL/dW has a second term and it stays a direct gradient.
        """
        c = coeffs.detach().to(self.device, self.dtype).requires_grad_(True)
        if self.family.lr_multiplier(c.detach()) is not None:
            if velocity_scale is not None:
                raise ValueError("velocity_scale is for the written-out adjoint, not the lr action")
            return self._step_vjp_autograd(state, c, d_params, d_velocity)
        keys = list(state.params)
        lr, opt = self.optim.lr_at(state.step), self.optim
        s = 1.0 if velocity_scale is None else velocity_scale
        # dv_tot / s (dv_tot itself without a scale)
        if inplace:
            dv_tot = d_velocity
            torch._foreach_add_(dv_tot, d_params, alpha=-lr / s)
        else:
            dv_tot = torch._foreach_add(d_velocity, d_params, alpha=-lr / s)
        w = {k: p.detach().requires_grad_(True) for k, p in state.params.items()}
        # BatchNorm writes its copy of the buffers
        buffers = {k: b.clone() for k, b in state.buffers.items()} if state.buffers else {}
        x, y = self.batch(state.step)
        u = dict(zip(keys, dv_tot, strict=True))
        fed = {name: h.detach().requires_grad_(True) for name, h in (outputs or {}).items()}
        inner: list = []
        with torch.enable_grad():
            with (
                _feeding(self._layers, fed) as fed_layers,
                _data_layers(self._layers, inner=inner) as layers,  # the layers not fed
            ):
                loss, _ = self.student_loss(w, buffers, x, y, c)
            # <g_t, dv_tot>, differentiated once more: H_t dv_tot and the mixed product. The
            # Linear/Conv layers on the data (recomputed; fed ones are leaves) and the Linear
            # layers on activations enter through their outputs (docstring); not the classifier
            # of a family that reads its weights beside its output (``needs_head``)
            head = self._head_name() if self.family.needs_head else None
            through = [
                layer
                for layer in layers + inner
                if layer[0] not in fed and layer[0] != head and layer[2].keys() <= u.keys()
            ]
            fed_keys = {k for _, _, params, _ in fed_layers for k in params}
            owned = fed_keys.union(*(params for _, _, params, _ in through))
            rest = [k for k in keys if k not in owned]  # weights differentiated directly
            outs = [out for *_, (_, out) in through]
            g = torch.autograd.grad(
                loss,
                [w[k] for k in rest] + outs + list(fed.values()),
                create_graph=True,
                allow_unused=True,
            )
            terms = [(gk * u[k]).sum() for k, gk in zip(rest, g, strict=False) if gk is not None]
            reads = [(module, params, inp) for _, module, params, (inp, _) in through]
            reads += [(module, params, inp) for _, module, params, inp in fed_layers]
            for (module, params, inp), dh in zip(reads, g[len(rest) :], strict=True):
                if dh is None:  # a layer whose output the loss does not read
                    continue
                # f(x; U, u), the output's derivative along dv_tot: a constant for a layer on
                # the data; for one on activations a, a U^T + u stays a function of a (and so
                # of the layers below) in the graph, for its second derivative through a
                along = {n: u[k] for k, n in params.items()}
                if type(module) is nn.Linear:  # without functional_call's setup
                    h_dot = F.linear(inp, along["weight"], along.get("bias"))
                else:
                    h_dot = functional_call(module, along, (inp,))
                terms.append((dh * h_dot).sum())
            dot = terms[0]
            for term in terms[1:]:
                dot = dot + term
            if s != 1.0:  # <g_t, dv_tot> = s <g_t, dv_tot / s>
                dot = dot * s
            # the fed layers' weights are not in this graph: their d_h stands for them
            wrt = [k for k in keys if k not in fed_keys]
            *hv, dc = torch.autograd.grad(
                dot, [*(w[k] for k in wrt), *fed.values(), c], allow_unused=True
            )
        hv, d_h = hv[: len(wrt)], hv[len(wrt) :]
        dc = torch.zeros_like(c) if dc is None else dc
        dw = d_params if inplace else [d.clone() for d in d_params]
        torch._foreach_add_(dw, dv_tot, alpha=opt.weight_decay * s)
        # + H_t dv_tot: autograd's part...
        index = {k: i for i, k in enumerate(keys)}
        got = [(dw[index[k]], h) for k, h in zip(wrt, hv, strict=True) if h is not None]
        if got:
            torch._foreach_add_(*(list(t) for t in zip(*got, strict=True)))
        # ...and the fed layers' by the chain rule through h = x W^T + b, added where dw is:
        # (H_t dv_tot)_W = d_h^T x, (H_t dv_tot)_b = sum of d_h over the batch
        for (_, _, params, inp), dh in zip(fed_layers, d_h, strict=True):
            if dh is None:  # the loss does not read h: no term
                continue
            dh, inp = dh.flatten(0, -2), inp.flatten(0, -2)  # over h's leading dims
            for key, name in params.items():
                if name == "weight":
                    dw[index[key]].addmm_(dh.T, inp)
                else:
                    dw[index[key]].add_(dh.sum(0))
        if velocity_scale is None:  # else mu goes to the caller's scale
            torch._foreach_mul_(dv_tot, opt.momentum)
        self.cost.charge("reverse", 1)
        return dw, dv_tot, dc

    def _head_name(self) -> str:
        """The classifier's name: the model's last nn.Linear (what :meth:`_head_loss` reads)."""
        return [n for n, (m, _) in self._layers.items() if isinstance(m, nn.Linear)][-1]

    def _step_vjp_autograd(
        self,
        state: StudentState,
        c: torch.Tensor,
        d_params: list[torch.Tensor],
        d_velocity: list[torch.Tensor],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """:meth:`step_vjp` as autograd through one differentiable :meth:`student_step`: for
        steps whose update depends on the coefficients beyond g_t (the lr action)."""
        leaf = lambda m: {k: p.detach().requires_grad_(True) for k, p in m.items()}  # noqa: E731
        w, v = leaf(state.params), leaf(state.velocity)
        with torch.enable_grad():
            new, _ = self.student_step(
                StudentState(w, v, state.buffers, state.step),
                self.batch(state.step),
                c,
                differentiable=True,
                with_stats=False,
            )
            inputs = [*w.values(), *v.values(), c]
            grads = torch.autograd.grad(
                [*new.params.values(), *new.velocity.values()],
                inputs,
                grad_outputs=[*d_params, *d_velocity],
                allow_unused=True,
            )
        grads = [
            torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)
        ]
        self.cost.charge("reverse", 1)
        n = len(w)
        return grads[:n], grads[n : 2 * n], grads[-1]

    def adopt(self, state: StudentState, coeffs: torch.Tensor, stats: list[StepStats]) -> None:
        """Commit a :meth:`lookahead` (e.g. a differentiable run a gradient teacher wants to
        keep) as the student's new state: weights, momentum, BatchNorm buffers and step, with
        the same bookkeeping as :meth:`advance` (coefficients, interval metrics over `stats`,
        divergence, the dev cache). Not charged again: the look-ahead was."""
        self._require_reset()
        if not stats:
            raise ValueError("adopt needs the StepStats of at least one step")
        self.state = state.detached()
        self.coeffs = coeffs.detach()
        self._dev_cache = None  # the student changed: the cached dev metrics are stale
        n = len(stats)
        mean_loss = torch.stack([s.loss for s in stats]).mean()
        self.diverged = self.diverged | ~torch.isfinite(mean_loss)
        self.last_interval = {
            "loss": mean_loss,
            "train_ce": torch.stack([s.ce for s in stats]).mean(),
            "train_accuracy": torch.stack([s.correct for s in stats]).sum() / (n * self.batch_size),
            "update_norm": torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(v) for v in self.velocity.values()])
            ),
        }

    # -- observation --------------------------------------------------------------------------
    def observe(self, features: torch.Tensor | None = None) -> dict[str, Any]:
        """The metrics the env and the teachers read, in one device-to-host transfer:
        ``dev_loss``, ``dev_accuracy`` (the fixed dev subset), ``best_dev_accuracy``,
        ``train_loss``, ``train_accuracy``, ``family_loss`` (the last interval's; NaN before the
        first), ``student_steps`` (the episode's step), ``lr`` and ``diverged``.

        ``best_dev_accuracy`` is updated here, on the device, with the dev accuracy of every
        state observed this episode (a diverged student's is not counted). `features` (e.g. a
        state function's vector) rides along in the same transfer and comes back as
        ``"features"``, a float64 array.
        """
        self._require_reset()
        dev_ce, dev_acc = self.dev_subset_metrics()
        self.best_dev_accuracy = torch.where(
            self.diverged, self.best_dev_accuracy, torch.maximum(self.best_dev_accuracy, dev_acc)
        )
        li = self.last_interval
        nan = torch.full_like(dev_ce, math.nan)
        scalars = [
            dev_ce,
            dev_acc,
            self.best_dev_accuracy,
            li.get("train_ce", nan),
            li.get("train_accuracy", nan),
            li.get("loss", nan),
            self.diverged,
        ]
        head = [] if features is None else [features.detach().double().flatten()]
        values = torch.cat([*head, torch.stack([v.double() for v in scalars])]).cpu().numpy()
        n = 0 if features is None else values.size - len(scalars)
        rest = values[n:].tolist()
        out: dict[str, Any] = {
            "dev_loss": rest[0],
            "dev_accuracy": rest[1],
            "best_dev_accuracy": rest[2],
            "train_loss": rest[3],
            "train_accuracy": rest[4],
            "family_loss": rest[5],
            "student_steps": self.step,
            "lr": self.lr,
            "diverged": bool(rest[6]),
        }
        if features is not None:
            out["features"] = values[:n]
        return out

    # -- evaluation ---------------------------------------------------------------------------
    def _logits(
        self, params: Tensors, x: torch.Tensor, chunk: int = 2048, buffers: Tensors | None = None
    ) -> torch.Tensor:
        """Eval-mode logits (BatchNorm running statistics, no buffer updates), in chunks."""
        buffers = self.buffers if buffers is None else buffers
        self.model.eval()
        try:
            outs = [
                functional_call(self.model, (params, buffers), (x[i : i + chunk],))
                for i in range(0, len(x), chunk)
            ]
        finally:
            self.model.train()
        return torch.cat(outs)

    def dev_objective(
        self,
        params: Tensors | None = None,
        *,
        kind: str = "ce",
        sharpness: float = 50.0,
        full: bool = False,
        buffers: Tensors | None = None,
    ) -> torch.Tensor:
        """A smooth, differentiable surrogate M(w) of dev error, to be minimised.

        kinds: ``ce`` (cross-entropy), ``smooth-error`` (the L2T-DLF demo's
        mean 2 sigmoid(k (max_j p_j - p_y)) - 1 with k = `sharpness`), ``expected-error``
        (mean 1 - p_y). On the fixed dev subset, or with ``full`` on the whole ``meta`` part of
        dev (never ``select``: that part chooses and reports); BatchNorm statistics enter as
        constants: the process's own, or `buffers` (a look-ahead student's running statistics).

        It exists to be differentiated, so it is charged ``dev_grad`` for its forward and
        backward over its n examples (n / batch_size units), whether or not the caller does.
        """
        self._require_reset()
        params = self.params if params is None else params
        x, y = self.data.split("meta", self.meta_size)
        if not full:
            x, y = x[: self.dev_subset], y[: self.dev_subset]
        self.cost.charge("dev_grad", len(y) / self.batch_size)
        logits = self._logits(params, x, buffers=buffers)
        if kind == "ce":
            return F.cross_entropy(logits, y)
        p = logits.softmax(-1)
        p_y = p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        if kind == "smooth-error":
            return (2 * torch.sigmoid(sharpness * (p.max(-1).values - p_y)) - 1).mean()
        if kind == "expected-error":
            return (1 - p_y).mean()
        raise ValueError(f"unknown dev objective {kind!r}; known: {list(DEV_OBJECTIVES)}")

    @torch.no_grad()
    def _metrics(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._logits({k: p.detach() for k, p in self.params.items()}, x)
        return F.cross_entropy(logits, y), (logits.argmax(-1) == y).to(self.dtype).mean()

    def evaluate(self, split: str = "select") -> dict[str, float]:
        """Loss and accuracy of the current student on a whole split: "train", "test", dev's
        parts "select" (held out from every teacher's training signal: what chooses lr,
        checkpoints and fitted teachers, and the dev error reported) and "meta", or the whole
        "dev" (both parts). One host sync; call at fixed points, never to pick anything on
        "test"."""
        self._require_reset()
        x, y = self.data.split(split, self.meta_size)
        loss, acc = self._metrics(x, y)
        loss, acc = torch.stack([loss, acc]).tolist()
        return {"loss": loss, "accuracy": acc, "error": 1.0 - acc}

    def dev_subset_metrics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, accuracy) on the fixed dev subset, as device scalars; computed once
        per student state, so the state function and the env's info share one forward pass."""
        self._require_reset()
        if self._dev_cache is None:
            n = self.dev_subset
            self._dev_cache = self._metrics(self.data.x_dev[:n], self.data.y_dev[:n])
        return self._dev_cache

    def restore(self, state: StudentState) -> None:
        """Continue from `state` (e.g. a pre-trained student's snapshot, or the best weights an
        early-stopping run kept): the data order goes on from ``state.step`` as it would have.
        Not charged: no student step was taken here."""
        self._require_reset()
        self.state = state.detached()
        self._dev_cache = None

    # -- per-example weights and data-level baselines (teachers/reweight.py, oracle.py) -------
    def advance_weighted(
        self,
        weigh: Callable[..., torch.Tensor],
        steps: int,
        *,
        coeffs: torch.Tensor | None = None,
        meta_batch: int | None = None,
    ) -> dict:
        """`steps` momentum-SGD steps on a weighted sum of per-example losses,

            w_{t+1} = SGD(w_t, grad_w sum_i eps_i l_i(w_t)),  l_i = CE(tau z_i, y_i),

        with eps = ``weigh(self, state, (x, y), (x_meta, y_meta), coeffs)``, a (B,) tensor the
        teacher computes each step (L2RW's and Meta-Weight-Net's one-step look-ahead) from the
        student, the step's training minibatch and a minibatch of dev's ``meta`` part (never
        ``select``): `meta_batch` examples (default B), a seeded draw per (seed, step). The
        family must be ``ce`` (tau = `coeffs`, default 1), whose per-example terms both papers
        weight; each step is :meth:`student_step` with ``example_weights=eps``. ``weigh.cost`` (kind -> passes per step of its look-ahead, in the units of
        ``envs.cost.KINDS``) is charged to :attr:`cost` at their prices with the step itself. Bookkeeping as
        :meth:`advance` (through :meth:`adopt`); no host sync."""
        self._require_reset()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self.family.name != "ce":
            raise ValueError(
                f"advance_weighted weights cross-entropy terms: the family must be "
                f"'ce', got {self.family.name!r}"
            )
        m = min(meta_batch or self.batch_size, self.meta_size)
        if coeffs is None:
            coeffs = self.family.default_coeffs(self.dtype, self.device)
        coeffs = coeffs.detach().to(self.device, self.dtype)
        x_meta, y_meta = self.data.split("meta", self.meta_size)
        state, stats = self.state, []
        for _ in range(steps):
            batch = self.batch(state.step)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + state.step + 17)
            pick = torch.randperm(self.meta_size, generator=gen)[:m].to(self.device)
            eps = weigh(self, state, batch, (x_meta[pick], y_meta[pick]), coeffs).detach()
            state, step_stats = self.student_step(state, batch, coeffs, example_weights=eps)
            stats.append(step_stats)
            self.cost.charge("train", 1)
            for kind, units in getattr(weigh, "cost", {}).items():
                self.cost.charge(kind, units)
        self.adopt(state, coeffs, stats)
        return self.last_interval

    def set_training_data(self, *, add_meta: bool = False, drop_flipped: bool = False) -> None:
        """Change what the student trains on, before its first step, for the data-level rows of
        a comparison: ``add_meta`` appends dev's ``meta`` part, clean labels and all, to the
        training split (the ``ce+meta`` baseline, the cheapest use of a clean set);
        ``drop_flipped`` keeps only the training examples whose labels the corruption did not
        flip (the ``oracle``, the setting's limit, not a teacher). ``select`` and ``test``
        never enter. Recorded in :attr:`train_parts`."""
        if getattr(self, "seed", None) is not None and self.step > 0:
            raise RuntimeError("set_training_data changes the data: call it before any step")
        if not hasattr(self, "_train0"):  # the corrupted training split as built, kept once
            self._train0 = (self.data.x_train, self.data.y_train)
        x, y = self._train0
        parts = ["train"]
        if drop_flipped:
            keep = ~self.corruption.get("train_flipped", torch.zeros(len(y), dtype=torch.bool))
            x, y = x[keep.to(x.device)], y[keep.to(y.device)]
            parts = ["train-unflipped"]
        if add_meta:
            x_meta, y_meta = self.data.split("meta", self.meta_size)
            x, y = torch.cat([x, x_meta]), torch.cat([y, y_meta])
            parts.append("meta")
        if len(y) < self.batch_size:
            raise ValueError(
                f"{len(y)} training examples left, fewer than batch_size {self.batch_size}"
            )
        self.data = replace(self.data, x_train=x, y_train=y)
        self.train_parts = tuple(parts)
        self._epochs = []  # the data order is drawn over the new split from here

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def lr(self) -> float:
        """eta_t; with the lr action, times the last coefficients' multiplier (one read)."""
        if self.seed is None:
            return self.optim.lr
        scale = None if self.coeffs is None else self.family.lr_multiplier(self.coeffs)
        lr = self.optim.lr_at(self.step)
        return lr if scale is None else lr * float(scale)

    @property
    def log_classes(self) -> float:
        return math.log(self.num_classes)


_DATA_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


LayerTable = dict[str, tuple[nn.Module, dict[str, str]]]
"""layer name -> (module, {param key in the student's dict: its name in the module})"""


def _layer_table(model: nn.Module) -> LayerTable:
    """The Linear and Conv layers of `model`, found once per process (a step walks it)."""
    return {
        name: (module, {f"{name}.{n}" if name else n: n for n, _ in module.named_parameters()})
        for name, module in model.named_modules()
        if isinstance(module, _DATA_LAYER_TYPES)
    }


@contextlib.contextmanager
def _data_layers(
    table: LayerTable, active: bool = True, *, inner: list | None = None
) -> Iterator[list]:
    """Catch the layers of one forward pass that read the data: a Linear or Conv of `table`
    called once, on an input that needs no gradient, its output not changed in place after (and
    its weights used by it alone: the students here tie no weights).
    Yields a list, filled when the block ends, of (name, module, {param key: its name in the
    module}, (input, output)) for :meth:`TeachingProcess.step_vjp`; with ``active=False`` it
    stays empty and no hook is set (a fast-path step that keeps nothing). `inner`, a list, is
    filled the same way with the Linear layers called once on an input that needs a gradient
    (activations: the reverse step's output identity for them, :meth:`TeachingProcess.step_vjp`)."""
    if not active:
        yield []
        return
    seen: dict[str, list] = {}

    def catch(name: str, module: nn.Module) -> Callable:
        own = type(module).forward

        def forward(inp: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = own(module, inp, *args, **kwargs)
            seen.setdefault(name, []).append((inp, out, out._version))
            return out

        return forward

    # the module's own forward wrapped on the instance rather than a forward hook: a module
    # with hooks takes nn.Module's slow call path (~15 us a step for the mlp's two layers); a
    # layer whose forward is already replaced (:func:`_feeding`) is left to it
    caught = [(n, m) for n, (m, _) in table.items() if "forward" not in vars(m)]
    for name, m in caught:
        m.forward = catch(name, m)
    layers: list = []
    try:
        yield layers
    finally:
        for _, m in caught:
            del m.forward
    for name, calls in seen.items():
        if len(calls) != 1 or calls[0][1]._version != calls[0][2]:
            continue
        inp, out, _ = calls[0]
        if not inp.requires_grad:
            layers.append((name, *table[name], (inp, out)))
        elif inner is not None and type(table[name][0]) is nn.Linear:
            inner.append((name, *table[name], (inp, out)))


def _kept_outputs(layers: list, params: Tensors) -> dict[str, torch.Tensor]:
    """The outputs h = x W^T + b worth keeping for the reverse step, by layer name, among the
    data layers `layers` caught (:func:`_data_layers`) in a step on the weights `params`.

    Linear layers only (their weight VJP d_h^T x is written out in
    :meth:`TeachingProcess.step_vjp`), and only when h is no larger than the student's weights,
    so that keeping it at most doubles a tape's memory per step: the mlp's 784-256 layer keeps
    B x 256 floats (8 % of its checkpoint at B = 64) and saves the reverse step a third of its
    products with that layer; a Conv's output on images is many times the student's weights,
    and its product with 3 input channels is cheap. Detached views, not copies: the output
    is fresh each step and is not written after (:func:`_data_layers` checks its version)."""
    size = sum(p.numel() for p in params.values())
    return {
        name: out.detach()
        for name, module, _, (_, out) in layers
        if type(module) is nn.Linear and out.numel() <= size
    }


def _parameter_slots(model: nn.Module) -> dict[str, tuple[dict, str]] | None:
    """Each weight's and buffer's key -> (its module's ``_parameters`` or ``_buffers`` dict, its
    name there): where ``functional_call`` puts a tensor given for that key, found once per
    process instead of at every call. None when the model holds a tensor under two names
    (tied weights), which only ``functional_call``'s ``tie_weights`` handles."""
    slots: dict[str, tuple[dict, str]] = {}
    seen: set[int] = set()
    for kind in ("_parameters", "_buffers"):
        for prefix, module in model.named_modules(remove_duplicate=False):
            table = getattr(module, kind)
            for name, t in table.items():
                if t is None:
                    continue
                if id(t) in seen:
                    return None
                seen.add(id(t))
                slots[f"{prefix}.{name}" if prefix else name] = (table, name)
    return slots


def _call_model(
    model: nn.Module,
    slots: dict[str, tuple[dict, str]] | None,
    params: Tensors,
    buffers: Tensors,
    x: torch.Tensor,
) -> torch.Tensor:
    """``functional_call(model, (params, buffers), (x,))``: the tensors put where the module's
    own are for the call, and put back after. With `slots` (:func:`_parameter_slots`) this
    skips functional_call's per-call setup (name parsing, tied-weight search: ~25 us a call,
    2 % of an mlp step on the CPU); keys outside them, or a model that ties weights, take
    functional_call itself. The same tensors reach the same forward, so the same numbers."""
    if slots is None or not (params.keys() <= slots.keys() and buffers.keys() <= slots.keys()):
        return functional_call(model, (params, buffers), (x,))
    saved = []
    try:
        for given in (params, buffers):
            for key, t in given.items():
                table, name = slots[key]
                saved.append((table, name, table[name]))
                table[name] = t
        return model(x)
    finally:
        for table, name, t in saved:
            table[name] = t


@contextlib.contextmanager
def _feeding(table: LayerTable, outputs: dict[str, torch.Tensor]) -> Iterator[list]:
    """Within the block, the layers named in `outputs` return their given output instead of
    computing it (their ``forward`` replaced on the instance, put back after), so the reverse
    step reads the h_t its forward step stored. Each must be called once, on an input that
    needs no gradient and has h's leading shape (the forward's data layer), or this raises: a
    stored output fed to another call would be silently wrong. Yields a list, filled when the
    block ends, of (name, module, {param key: its name in the module}, input)."""
    calls: dict[str, list] = {name: [] for name in outputs}

    def feed(name: str, h: torch.Tensor) -> Callable:
        def forward(inp: torch.Tensor) -> torch.Tensor:
            if calls[name] or inp.requires_grad or inp.shape[:-1] != h.shape[:-1]:
                raise RuntimeError(
                    f"the stored output of {name!r} was recorded for one call on the data; "
                    "this forward calls it otherwise"
                )
            calls[name].append(inp)
            return h

        return forward

    for name, h in outputs.items():
        table[name][0].forward = feed(name, h)
    fed: list = []
    try:
        yield fed
    finally:
        for name in outputs:
            del table[name][0].forward
    for name in outputs:
        if len(calls[name]) != 1:
            raise RuntimeError(f"the stored output of {name!r} was not read by the forward")
        fed.append((name, *table[name], calls[name][0]))
