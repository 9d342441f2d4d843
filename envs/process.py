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

Everything a teacher may observe is a view of this object (:attr:`state`, a :class:`StudentState`), and budgets are counted
in its student SGD steps (:attr:`student_steps`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from envs.config import DEFAULTS as D
from envs.config import DTYPES
from envs.losses import LossFamily, make_loss
from students.corruption import check_corruption, corrupt
from students.data import Splits, load_dataset, resolve_device
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
        dataset: a name from ``students.data.DATASETS`` or a :class:`Splits` (user tensors).
        student: a name from ``students.models.STUDENTS``.
        loss: a name from ``envs.losses.LOSSES`` or a :class:`LossFamily` instance.
        batch_size: minibatch size B.
        optim: the student's SGD hyper-parameters; ``total_steps`` is the episode length T that
            the schedule and the state's progress feature refer to.
        dev_subset: size of the fixed dev subset the state and :meth:`dev_objective` use, so the
            cost per observation is bounded whatever the dev split's size.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        dtype: float32, or float64 for finite-difference checks.
        label_noise, label_noise_kind, noisy_dev, imbalance: corrupt the training split (and dev
            with ``noisy_dev``) after the split, seeded, see ``students.corruption``; what was
            applied is in :attr:`corruption`.
        lr_action: the family gets one more coefficient, the log2 multiplier of eta_t
            (``envs.losses.LearningRateAction``), applied in :meth:`student_step`.
    """

    def __init__(
        self,
        dataset: str | Splits = D.dataset,
        student: str = D.student,
        loss: str | LossFamily = D.loss,
        *,
        batch_size: int = D.batch_size,
        optim: SGDConfig | None = None,
        dev_subset: int = D.dev_subset,
        device: str | torch.device = D.device,
        dtype: torch.dtype = DTYPES[D.dtype],
        data_root: str | None = D.data_root,
        download: bool = False,
        student_kwargs: dict | None = None,
        loss_kwargs: dict | None = None,
        label_noise: float = D.label_noise,
        label_noise_kind: str = D.label_noise_kind,
        noisy_dev: bool = D.noisy_dev,
        imbalance: float = D.imbalance,
        lr_action: bool = D.lr_action,
    ) -> None:
        check_corruption(label_noise, label_noise_kind, imbalance)
        self.device = resolve_device(device)
        self.dtype = dtype
        if isinstance(dataset, Splits):
            splits = dataset
        else:
            splits = load_dataset(dataset, data_root=data_root, download=download)
        # one fixed corruption seed: every teacher and student of a comparison sees the same labels
        splits, self.corruption = corrupt(
            splits,
            label_noise=label_noise,
            label_noise_kind=label_noise_kind,
            noisy_dev=noisy_dev,
            imbalance=imbalance,
            seed=0,
        )
        self.data = splits.to(self.device, dtype)
        self.num_classes = self.data.num_classes
        self.model = build_student(
            student, self.data.input_shape, self.num_classes, **(student_kwargs or {})
        ).to(self.device, dtype)
        self.student_name = student
        self.family = make_loss(loss, self.num_classes, lr_action=lr_action, **(loss_kwargs or {}))
        self.optim = optim or SGDConfig()
        if batch_size < 1 or batch_size > len(self.data.y_train):
            raise ValueError(
                f"batch_size must lie in [1, {len(self.data.y_train)}] (the training split), "
                f"got {batch_size}"
            )
        self.batch_size = batch_size
        n_dev = len(self.data.y_dev)
        self.dev_subset = min(dev_subset, n_dev)
        self.student_steps = 0
        """student SGD steps taken over this object's lifetime, all episodes: budgets count these"""
        self.seed: int | None = None

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
        return self.data.x_train[idx], self.data.y_train[idx]

    # -- the pure student step ----------------------------------------------------------------
    def student_loss(
        self, params: Tensors, buffers: Tensors, x: torch.Tensor, y: torch.Tensor, coeffs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_Phi(w; x, y), logits) in training mode. BatchNorm updates `buffers` in place:
        callers pass a copy."""
        if self.family.needs_head:  # e.g. large-margin: the last Linear layer's input too
            return self._head_loss(params, buffers, x, y, coeffs)
        logits = functional_call(self.model, (params, buffers), (x,))
        return self.family(logits, y, coeffs), logits

    def _head_loss(self, params, buffers, x, y, coeffs) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``needs_head`` family's loss: the classifier's (the last nn.Linear's) input is
        caught by a forward hook, its weight and bias read from `params`."""
        name, head = [(n, m) for n, m in self.model.named_modules() if isinstance(m, nn.Linear)][-1]
        caught = []
        hook = head.register_forward_hook(lambda mod, inp, out: caught.append(inp[0]))
        try:
            logits = functional_call(self.model, (params, buffers), (x,))
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
    ) -> tuple[StudentState, StepStats | None]:
        """One momentum-SGD step on L_Phi: state_t -> state_{t+1}.

        Pure by default: the inputs are not modified. With ``differentiable=True`` the outputs
        are functions of `state.params`, `state.velocity` and `coeffs` in the autograd graph.
        ``inplace=True`` (fast path only; what :meth:`advance` uses) updates the weights, momentum
        and BatchNorm buffers where they are, as torch.optim does, to save an allocation per
        tensor per step; callers that keep old weights must clone them (the RMD tape does).
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
            loss, logits = self.student_loss(inputs, buffers, x, y, coeffs)
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

    # -- training -----------------------------------------------------------------------------
    def advance(
        self,
        coeffs: torch.Tensor,
        steps: int,
        *,
        differentiable: bool = False,
        tape: Callable[[int, Tensors, Tensors, torch.Tensor], None] | None = None,
    ) -> dict:
        """Take `steps` student SGD steps under `coeffs`.

        Returns the interval's mean family loss, train cross-entropy and accuracy, and the final
        gradient norm as 0-d device tensors (read them when you need them: no sync here).
        Divergence (a non-finite loss) is recorded in :attr:`diverged`, a device flag.

        `tape`, if given, is called as ``tape(t, w_t, v_t, coeffs)`` before each step: an RMD
        ``teachers.rmd.Tape`` records its weight checkpoints so (it must clone what it keeps:
        the fast path updates the weights in place).
        """
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
        for i in range(steps):
            if tape is not None:
                tape(state.step, state.params, state.velocity, coeffs)
            batch = self.batch(state.step)
            state, stats = self.student_step(
                state,
                batch,
                coeffs,
                differentiable=differentiable,
                inplace=inplace,
                with_stats=i >= first_stat,
            )
            if stats is not None:
                sum_loss = sum_loss + stats.loss
                sum_ce = sum_ce + stats.ce
                correct = correct + stats.correct
        n_stats = steps - first_stat
        self.state = state
        self.student_steps += steps
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

    def adopt(self, state: StudentState, coeffs: torch.Tensor, stats: list[StepStats]) -> None:
        """Make an unroll computed outside :meth:`advance` (e.g. L2T-DLN's stage 3, a
        differentiable run a gradient teacher wants to keep) the student's new state: weights,
        momentum, BatchNorm buffers and step, with the same bookkeeping as :meth:`advance` (step
        count, coefficients, interval metrics over `stats`, divergence, the dev cache)."""
        self._require_reset()
        if not stats:
            raise ValueError("adopt needs the StepStats of at least one step")
        self.state = state.detached()
        self.student_steps += len(stats)
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
        (mean 1 - p_y). On the fixed dev subset unless ``full``; BatchNorm statistics enter as
        constants: the process's own, or `buffers` (a look-ahead student's running statistics).
        """
        self._require_reset()
        params = self.params if params is None else params
        x, y = self.data.x_dev, self.data.y_dev
        if not full:
            x, y = x[: self.dev_subset], y[: self.dev_subset]
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

    def evaluate(self, split: str = "dev") -> dict[str, float]:
        """Loss and accuracy of the current student on a whole split ("train", "dev", "test").
        One host sync; call at fixed points, never to pick a teacher on "test"."""
        self._require_reset()
        x, y = self.data.split(split)
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
        Not counted in :attr:`student_steps`: no student step was taken here."""
        self._require_reset()
        self.state = state.detached()
        self._dev_cache = None

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
