"""N students in one process, stepped together by one ``torch.func.vmap``-ed functional step.

Every tensor of the students' state carries a leading student dimension N: weights w, momentum v
and BatchNorm buffers are dicts of stacked tensors (``torch.func.stack_module_state``'s layout).
One student step of all N is

    g_i        = grad_w L_{Phi_i}(w_i; B_i)              vmap(grad(functional_call + family))
    w_i, v_i  <- SGD(w_i, v_i, g_i, eta_i(t_i))           students/optim.py, eta as an (N,) tensor

so student i has its own seed (initial weights and data order), its own coefficients Phi_i and
its own learning rate eta_i, and it follows the same trajectory as a single
:class:`~envs.process.TeachingProcess` reset with the same seed (tests/test_batched.py: float64,
1e-6, MLP and a BatchNorm ResNet). Only the fast path is batched: hypergradients stay on the
single process.

Divergence is per student and stays on the device: a student whose loss turns non-finite is
flagged in :attr:`diverged` (an (N,) bool tensor) at that step and its learning rate is masked to
0 from then on, while the others train on; nothing is read back to the host per student step.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap

from envs.cost import Meter
from envs.process import STATS_WINDOW, StateViews, StudentState, TeachingProcess
from students.models import init_student
from students.optim import Tensors, sgd_step

ORDER_SEED_OFFSET = 1_000_003
"""the data-order generator of a student with seed s is seeded with s + this (as TeachingProcess)"""


class BatchedTeachingProcess(StateViews):
    """N students trained by momentum SGD, each under its own loss coefficients, in one batch.

    Args:
        num_students: N.
        lr: eta_0, one float for all or a sequence of N per-student values; the schedule, the
            momentum and the weight decay (``optim``) are shared.
        Every other argument is :class:`~envs.process.TeachingProcess`'s, which validates them
        and builds the data, the student module and the loss family this class shares.
    """

    def __init__(
        self,
        dataset="mnist5k",
        student: str = "mlp",
        loss="bilinear",
        num_students: int = 8,
        *,
        lr: float | Sequence[float] | None = None,
        **process_kwargs,
    ) -> None:
        template = TeachingProcess(dataset, student, loss, **process_kwargs)
        self._setup(template, num_students, lr)

    @classmethod
    def like(cls, template: TeachingProcess, num_students: int, lr=None) -> BatchedTeachingProcess:
        """N students configured as `template` (its data, student module, family, optimiser):
        the env builds its single process once and batches that, so the configuration is
        defined in one place."""
        self = cls.__new__(cls)
        self._setup(template, num_students, lr)
        return self

    def _setup(self, template: TeachingProcess, num_students: int, lr) -> None:
        if num_students < 1:
            raise ValueError(f"num_students must be >= 1, got {num_students}")
        if template.family.needs_head:
            raise ValueError(
                f"the {template.family.name!r} loss reads the classifier's features, which the "
                "batched process does not expose; use single processes (TeachingProcess) for it"
            )
        self.template = t = template
        self.n = int(num_students)
        self.device, self.dtype = t.device, t.dtype
        self.data, self.model, self.family = t.data, t.model, t.family
        self.student_name, self.num_classes = t.student_name, t.num_classes
        self.batch_size, self.dev_subset, self.meta_size = t.batch_size, t.dev_subset, t.meta_size
        self.optim = t.optim
        base = [self.optim.lr] * self.n if lr is None else lr
        base = [float(base)] * self.n if isinstance(base, int | float) else [float(v) for v in base]
        if len(base) != self.n or not all(v > 0 and math.isfinite(v) for v in base):
            raise ValueError(f"lr must be one positive float or {self.n} of them, got {lr!r}")
        self.base_lr = torch.tensor(base, dtype=torch.float64, device=self.device)
        self._base_lr_host = base
        self._unit = dataclasses.replace(self.optim, lr=1.0)  # eta_t / eta_0 as a function of t
        self.cost = Meter()
        """student-step equivalents summed over all N students and episodes (envs/cost.py):
        budgets are charged from here"""
        self.seeds: list[int | None] = [None] * self.n
        self.model.train()
        self._grad_step = vmap(grad_and_value(self._loss, has_aux=True))
        self._eval_forward = vmap(self._forward, in_dims=(0, 0, None))

    def __setattr__(self, name: str, value: Any) -> None:
        """Only the process's own methods write its fields, as ``TeachingProcess``'s."""
        if sys._getframe(1).f_locals.get("self") is not self:
            raise AttributeError(
                f"{type(self).__name__}.{name} belongs to the process and is written by its own "
                "methods only (reset, reset_students, advance)"
            )
        object.__setattr__(self, name, value)

    # -- the functional step, per student (vmapped) --------------------------------------------
    def _loss(self, params: Tensors, buffers: Tensors, x, y, coeffs):
        logits = functional_call(self.model, (params, buffers), (x,))
        return self.family(logits, y, coeffs), logits

    def _forward(self, params: Tensors, buffers: Tensors, x):
        return functional_call(self.model, (params, buffers), (x,))

    # -- episodes ------------------------------------------------------------------------------
    def reset(self, seeds: Sequence[int]) -> None:
        """N fresh students, student i drawn from seeds[i] alone (as ``TeachingProcess.reset``)."""
        if len(seeds) != self.n:
            raise ValueError(f"reset needs {self.n} seeds, got {len(seeds)}")
        drawn = [init_student(self.model, torch.Generator().manual_seed(int(s))) for s in seeds]
        params = self._stack([p for p, _ in drawn])
        self.state = StudentState(
            params,
            {k: torch.zeros_like(p) for k, p in params.items()},
            self._stack([b for _, b in drawn], cast=False),
            np.zeros(self.n, dtype=np.int64),
        )
        """the N students' StudentState stacked leaf by leaf (leading dim N; ``step`` an (N,)
        host array, which picks the minibatch rows and eta_t without a device read)"""
        self.seeds = [int(s) for s in seeds]
        self._order_gens = [
            torch.Generator().manual_seed(int(s) + ORDER_SEED_OFFSET) for s in seeds
        ]
        self._perm_epoch = np.full(self.n, -1, dtype=np.int64)
        self._perms = torch.empty(
            (self.n, len(self.data.y_train)), dtype=torch.long, device=self.device
        )
        zeros = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        self.diverged = torch.zeros(self.n, dtype=torch.bool, device=self.device)
        self.fresh = torch.ones(self.n, dtype=torch.bool, device=self.device)
        """students reset since their last interval: their train features equal their dev ones"""
        self.best_dev_accuracy = zeros.clone()
        self.coeffs = self.family.default_coeffs(self.dtype, self.device).expand(self.n, -1).clone()
        self.last_interval = {
            k: zeros.clone() for k in ("loss", "train_ce", "train_accuracy", "update_norm")
        }
        self._dev_cache = None

    def reset_students(self, indices: Sequence[int], seeds: Sequence[int]) -> None:
        """Replace students `indices` by fresh ones drawn from `seeds`; the others go on."""
        self._require_reset()
        for i, s in zip(indices, seeds, strict=True):
            p, b = init_student(self.model, torch.Generator().manual_seed(int(s)))
            for k in self.params:
                self.params[k][i] = p[k].to(self.device, self.dtype)
                self.velocity[k][i] = 0
            for k in self.buffers:
                self.buffers[k][i] = b[k].to(self.device)
            self.steps[i] = 0
            self.seeds[i] = int(s)
            self._order_gens[i] = torch.Generator().manual_seed(int(s) + ORDER_SEED_OFFSET)
            self._perm_epoch[i] = -1
        if len(indices):
            idx = torch.as_tensor(list(indices), device=self.device)
            self.diverged[idx] = False
            self.fresh[idx] = True
            self.best_dev_accuracy[idx] = 0
            self.coeffs[idx] = self.family.default_coeffs(self.dtype, self.device)
            self._dev_cache = None

    def _stack(self, dicts: list[Tensors], cast: bool = True) -> Tensors:
        out = {k: torch.stack([d[k] for d in dicts]).to(self.device) for k in dicts[0]}
        return {k: v.to(self.dtype) for k, v in out.items()} if cast else out

    def _require_reset(self) -> None:
        if self.seeds[0] is None:
            raise RuntimeError("call reset(seeds) before training or observing the process")

    # -- data ----------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return len(self.data.y_train) // self.batch_size

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each student's next minibatch, (N, B, ...) and (N, B): student i's B_{t_i}, the same
        rows TeachingProcess.batch(t_i) gives a single student with the same seed."""
        epoch, pos = np.divmod(self.steps, self.steps_per_epoch)
        for i in np.flatnonzero(self._perm_epoch != epoch):
            while self._perm_epoch[i] < epoch[i]:  # permutations are drawn in epoch order
                perm = torch.randperm(len(self.data.y_train), generator=self._order_gens[i])
                self._perm_epoch[i] += 1
            self._perms[i] = perm.to(self.device, non_blocking=True)
        b = self.batch_size
        if (pos == pos[0]).all():  # lockstep, the usual case: one slice
            idx = self._perms[:, pos[0] * b : (pos[0] + 1) * b]
        else:
            offsets = torch.as_tensor(pos[:, None] * b + np.arange(b), device=self.device)
            idx = self._perms.gather(1, offsets)
        return self.data.x_train[idx], self.data.y_train[idx]

    def _lr(self) -> torch.Tensor:
        """(N,) eta_{t_i} = eta_0,i * schedule(t_i), masked to 0 for diverged students."""
        if (self.steps == self.steps[0]).all():
            factor = self._unit.lr_at(int(self.steps[0]))
            lr = self.base_lr * factor
        else:
            factors = [self._unit.lr_at(int(s)) for s in self.steps]
            lr = self.base_lr * torch.tensor(factors, dtype=torch.float64, device=self.device)
        return torch.where(self.diverged, 0.0, lr)

    # -- training ------------------------------------------------------------------------------
    @torch.no_grad()
    def advance(
        self, coeffs: torch.Tensor, steps: int, *, skip: Sequence[int] = ()
    ) -> dict[str, torch.Tensor]:
        """`steps` student SGD steps of every student, student i under coeffs[i] ((N, dim), or
        (dim,) for all). Returns the interval's per-student metrics as (N,) device tensors, as
        ``TeachingProcess.advance`` does for one (mean family loss, train CE and accuracy over the
        last ``STATS_WINDOW`` minibatches; the momentum norm).

        Students in `skip` (a vector env's students waiting for their autoreset) ride along in
        the batch, are put back to their fresh state afterwards and are not charged to
        :attr:`cost`: one batch shape for all, whoever is active."""
        self._require_reset()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        coeffs = torch.as_tensor(coeffs).detach().to(self.device, self.dtype)
        if coeffs.dim() == 1:
            coeffs = coeffs.expand(self.n, -1)
        if coeffs.shape != (self.n, self.family.dim):
            raise ValueError(
                f"coeffs must have shape ({self.n}, {self.family.dim}) or ({self.family.dim},), "
                f"got {tuple(coeffs.shape)}"
            )
        zero = torch.zeros(self.n, device=self.device, dtype=self.dtype)
        sum_loss, sum_ce, correct = zero.clone(), zero.clone(), zero.clone()
        first_stat = max(0, steps - STATS_WINDOW)
        for i in range(steps):
            x, y = self.batch()
            grads, (loss, logits) = self._grad_step(self.params, self.buffers, x, y, coeffs)
            sgd_step(
                self.params,
                self.velocity,
                grads,
                self._lr(),
                self.optim.momentum,
                self.optim.weight_decay,
                inplace=True,
                lr_scale=self.family.lr_multiplier(coeffs),  # (N,) with the lr action, else None
            )
            self.diverged |= ~torch.isfinite(loss)
            self.steps[:] += 1
            if i >= first_stat:
                sum_loss += loss
                sum_ce += _per_student_ce(logits, y)
                correct += (logits.argmax(-1) == y).sum(-1)
        n_stats = steps - first_stat
        self.cost.charge("train", steps * (self.n - len(skip)))
        self._dev_cache = None
        self.coeffs = coeffs.clone()
        self.fresh = torch.zeros_like(self.fresh)
        update = torch.stack([v.flatten(1).norm(dim=1) for v in self.velocity.values()], 1)
        self.last_interval = {
            "loss": sum_loss / n_stats,
            "train_ce": sum_ce / n_stats,
            "train_accuracy": correct / (n_stats * self.batch_size),
            "update_norm": update.norm(dim=1),
        }
        finite = torch.isfinite(self.last_interval["loss"]) & torch.isfinite(
            self.last_interval["update_norm"]
        )
        self.diverged |= ~finite
        if len(skip):
            self.reset_students(skip, [self.seeds[i] for i in skip])
        return self.last_interval

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def _metrics(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 1024):
        """(N,) cross-entropy and accuracy of every student on (x, y), eval mode."""
        self.model.eval()
        try:
            logits = torch.cat(
                [
                    self._eval_forward(self.params, self.buffers, x[i : i + chunk])
                    for i in range(0, len(x), chunk)
                ],
                dim=1,
            )
        finally:
            self.model.train()
        return _per_student_ce(logits, y.expand(self.n, -1)), (logits.argmax(-1) == y).to(
            self.dtype
        ).mean(-1)

    def dev_subset_metrics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) dev-subset cross-entropy and accuracy, device tensors, cached per state."""
        self._require_reset()
        if self._dev_cache is None:
            n = self.dev_subset
            self._dev_cache = self._metrics(self.data.x_dev[:n], self.data.y_dev[:n])
        return self._dev_cache

    def observe(self, features: torch.Tensor | None = None) -> list[dict[str, Any]]:
        """Each student's ``TeachingProcess.observe`` metrics (a list of N dicts), in one
        device-to-host transfer; ``best_dev_accuracy`` is kept here (a diverged student's
        accuracy is not counted) and the train metrics of students reset since their last
        interval are NaN. `features` ((N, n), e.g. the state function's) ride along and come
        back as each dict's ``"features"``."""
        self._require_reset()
        dev_ce, dev_acc = self.dev_subset_metrics()
        self.best_dev_accuracy = torch.where(
            self.diverged, self.best_dev_accuracy, torch.maximum(self.best_dev_accuracy, dev_acc)
        )
        li = self.last_interval
        nan = torch.full_like(dev_ce, float("nan"))
        train = [
            torch.where(self.fresh, nan, li[k].to(dev_ce))
            for k in ("train_ce", "train_accuracy", "loss")
        ]
        columns = [dev_ce, dev_acc, self.best_dev_accuracy, *train, self.diverged.to(dev_ce)]
        head = [] if features is None else [features.detach().double()]
        values = torch.cat([*head, torch.stack(columns, 1).double()], 1).cpu().numpy()
        n = values.shape[1] - len(columns)
        lrs = self.lr_values()
        out = []
        for i, row in enumerate(values):
            m = {
                "dev_loss": float(row[n]),
                "dev_accuracy": float(row[n + 1]),
                "best_dev_accuracy": float(row[n + 2]),
                "train_loss": float(row[n + 3]),
                "train_accuracy": float(row[n + 4]),
                "family_loss": float(row[n + 5]),
                "student_steps": int(self.steps[i]),
                "lr": lrs[i],
                "diverged": bool(row[n + 6]),
            }
            if features is not None:
                m["features"] = row[:n]
            out.append(m)
        return out

    def evaluate(self, split: str = "select") -> dict[str, np.ndarray]:
        """Per-student loss, accuracy and error on a whole split (``TeachingProcess.evaluate``'s
        names), as (N,) arrays; one host sync."""
        self._require_reset()
        loss, acc = self._metrics(*self.data.split(split, self.meta_size))
        loss, acc = torch.stack([loss, acc]).cpu().double().numpy()
        return {"loss": loss, "accuracy": acc, "error": 1.0 - acc}

    @property
    def steps(self) -> np.ndarray:
        """(N,) host array: student i's step t_i"""
        return self.state.step

    # -- what the state function reads (the names TeachingProcess uses, one value per student) --
    @property
    def step(self) -> torch.Tensor:
        return torch.as_tensor(self.steps, device=self.device)

    @property
    def lr(self) -> torch.Tensor:
        return self.base_lr.to(self.dtype) * self.lr_ratio

    def lr_values(self) -> list[float]:
        """eta_{t_i} per student as host floats (what a single process's ``lr`` gives)."""
        return [
            lr * self._unit.lr_at(int(s))
            for lr, s in zip(self._base_lr_host, self.steps, strict=True)
        ]

    @property
    def lr_ratio(self) -> torch.Tensor:
        factors = [self._unit.lr_at(int(s)) for s in self.steps]
        ratio = torch.tensor(factors, dtype=self.dtype, device=self.device)
        scale = None if self.coeffs is None else self.family.lr_multiplier(self.coeffs)
        return ratio if scale is None else ratio * scale.to(self.dtype)

    @property
    def log_classes(self) -> float:
        return math.log(self.num_classes)


def _per_student_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each student's rows: logits (N, B, C), y (N, B) -> (N,)."""
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(-1)
