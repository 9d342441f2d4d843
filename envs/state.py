"""State functions: what a teacher observes of the training process.

A state function maps a :class:`~envs.process.TeachingProcess` (after reset or after an interval of
training) to a 1-D float tensor of fixed length, with ``names`` saying what each entry is. Every
entry is scaled to O(1) and clipped to [-``STATE_BOUND``, ``STATE_BOUND``] so that the observation
space can be a finite Box (gymnasium's checker warns on infinite bounds).
"""

from __future__ import annotations

from typing import Protocol

import torch

STATE_BOUND = 10.0


class StateFunction(Protocol):
    names: tuple[str, ...]

    def __call__(self, process) -> torch.Tensor: ...


def _signed_log1p(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


class DefaultState:
    """The default 12-feature state vector (README, "The state vector").

    progress t/T; train cross-entropy / log C and train accuracy over the last interval; dev
    cross-entropy / log C and dev accuracy on the fixed dev subset; best dev accuracy so far;
    eta_t / eta_0; log(1 + |v|) of the momentum buffer (the size of the last update direction);
    three summaries of the coefficients' distance from the family default (losses.coeff_features);
    the signed log(1 + |L_Phi|) of the loss actually minimised.
    """

    names = (
        "progress",
        "train_ce",
        "train_accuracy",
        "dev_ce",
        "dev_accuracy",
        "best_dev_accuracy",
        "lr_ratio",
        "update_norm",
        "coeff_mean_shift",
        "coeff_abs_shift",
        "coeff_max_shift",
        "family_loss",
    )

    def __call__(self, process) -> torch.Tensor:
        """(n,) for a TeachingProcess; (N, n) for a BatchedTeachingProcess, whose attributes have
        the same names and hold one value per student."""
        dev_ce, dev_acc = process.dev_subset_metrics()
        interval = process.last_interval
        zero = torch.zeros_like(dev_ce)
        if interval:
            train_ce, train_acc = interval["train_ce"], interval["train_accuracy"]
            update, family_loss = interval["update_norm"], interval["loss"]
        else:  # after reset, before any training: the student's own initial predictions
            train_ce, train_acc, update, family_loss = dev_ce, dev_acc, zero, zero
        fresh = getattr(process, "fresh", None)
        if fresh is not None:  # a batched process: students reset since their last interval
            train_ce, train_acc = (
                torch.where(fresh, dev_ce, train_ce),
                torch.where(fresh, dev_acc, train_acc.to(process.dtype)),
            )
            update, family_loss = torch.where(fresh, 0, update), torch.where(fresh, 0, family_loss)
        coeffs = (
            process.coeffs
            if process.coeffs is not None
            else process.family.default_coeffs(process.dtype, process.device)
        ).detach()
        coeff_features = (
            torch.vmap(process.family.coeff_features)(coeffs)
            if coeffs.dim() == 2
            else process.family.coeff_features(coeffs)
        )
        total = process.optim.total_steps
        lr_ratio = getattr(process, "lr_ratio", None)
        lr_ratio = process.lr / process.optim.lr if lr_ratio is None else lr_ratio
        feats = torch.cat(
            [
                torch.stack(
                    [
                        zero + process.step / total,
                        train_ce / process.log_classes,
                        train_acc.to(process.dtype),
                        dev_ce / process.log_classes,
                        dev_acc,
                        torch.maximum(dev_acc, zero + process.best_dev_accuracy),
                        zero + lr_ratio,
                        torch.log1p(update),
                    ],
                    dim=-1,
                ),
                coeff_features.to(process.dtype),
                _signed_log1p(family_loss).unsqueeze(-1),
            ],
            dim=-1,
        )
        feats = torch.nan_to_num(feats, nan=STATE_BOUND, posinf=STATE_BOUND, neginf=-STATE_BOUND)
        return feats.clamp(-STATE_BOUND, STATE_BOUND)
