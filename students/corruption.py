"""Harder training splits: label noise and long-tailed class imbalance, applied after the split.

Settings where the loss matters: with clean, balanced labels plain cross-entropy is near its
ceiling and no loss schedule has room to help. Two standard corruptions of the *training* split
(Patrini et al. 2017; Han et al. 2018; Cao et al. 2019's CIFAR-LT profile):

* ``label_noise = r`` flips exactly round(r * n) training labels, chosen uniformly at random:
  ``symmetric`` draws the new label uniformly over the C - 1 *other* classes, ``pairflip`` maps
  class c to (c + 1) mod C. Dev is corrupted the same way only with ``noisy_dev=True`` (by default
  it stays the small clean set meta-learning assumes); test is never touched.
* ``imbalance = rho`` subsamples the training split to an exponential profile
  n_c = floor(n_max * rho^(-c / (C - 1))), so class 0 keeps n_max examples (the smallest class
  count in the balanced split) and class C - 1 keeps n_max / rho. Dev and test stay as they are.
  Imbalance is applied first, noise second (noise flips labels of the kept examples).

Everything is seeded by ``seed`` alone, so every teacher and every student of a comparison sees
the same corrupted split. The normalisation statistics are the split's own (of the whole,
uncorrupted training split): labels do not enter them and subsampling does not change them.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from students.data import Splits

NOISE_KINDS = ("symmetric", "pairflip")


def check_corruption(label_noise: float, kind: str, imbalance: float) -> None:
    """Raise ValueError naming the bad value (before any data is read)."""
    if isinstance(label_noise, bool) or not isinstance(label_noise, (int, float)):
        raise ValueError(f"label_noise must be a fraction in [0, 1), got {label_noise!r}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(
            f"label_noise must be a fraction in [0, 1) of training labels to flip, got {label_noise}"
        )
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown label_noise_kind {kind!r}; known: {list(NOISE_KINDS)}")
    if isinstance(imbalance, bool) or not isinstance(imbalance, (int, float)):
        raise ValueError(f"imbalance must be a ratio >= 1, got {imbalance!r}")
    if not (math.isfinite(imbalance) and imbalance >= 1.0):
        raise ValueError(
            f"imbalance must be a finite ratio >= 1 (largest / smallest training class count; "
            f"1 = balanced), got {imbalance}"
        )


def flip_labels(y: Tensor, fraction: float, kind: str, num_classes: int, gen: torch.Generator):
    """(noisy y, flipped mask): exactly round(fraction * n) labels changed, all to another class."""
    n = len(y)
    k = round(fraction * n)
    idx = torch.randperm(n, generator=gen)[:k]
    y_cpu = y.cpu().clone()
    if kind == "symmetric":  # an offset in 1..C-1: uniform over the other classes
        offset = torch.randint(1, num_classes, (k,), generator=gen)
    else:
        offset = torch.ones(k, dtype=torch.long)
    y_cpu[idx] = (y_cpu[idx] + offset) % num_classes
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[idx] = True
    return y_cpu.to(y.device), flipped


def long_tail_counts(available: list[int], ratio: float) -> list[int]:
    """Per-class counts n_c = floor(n_max * ratio^(-c / (C - 1))), n_max = min(available)."""
    n_max, C = min(available), len(available)
    if n_max / ratio < 1:
        raise ValueError(
            f"imbalance={ratio} leaves the rarest class no example: the balanced training split "
            f"has only {n_max} examples in its smallest class; use imbalance <= {n_max}"
        )
    return [int(math.floor(n_max * ratio ** (-c / (C - 1)) + 1e-9)) for c in range(C)]


def corrupt(
    splits: Splits,
    *,
    label_noise: float = 0.0,
    label_noise_kind: str = "symmetric",
    noisy_dev: bool = False,
    imbalance: float = 1.0,
    seed: int = 0,
) -> tuple[Splits, dict]:
    """The corrupted splits and a report: the flipped fractions actually applied, the training
    class counts and ``train_flipped``, the (n_train,) bool mask of flipped training labels (what
    the ``oracle`` row leaves out). With the defaults the splits come back unchanged (the same
    object)."""
    check_corruption(label_noise, label_noise_kind, imbalance)
    report: dict = {"train_flipped_fraction": 0.0}
    if label_noise == 0.0 and imbalance == 1.0:
        return splits, report
    gen = torch.Generator().manual_seed(int(seed))
    x_train, y_train = splits.x_train, splits.y_train
    C = splits.num_classes
    if imbalance != 1.0:
        y_cpu = y_train.cpu()
        available = [int((y_cpu == c).sum()) for c in range(C)]
        counts = long_tail_counts(available, imbalance)
        keep = []
        for c, n_c in enumerate(counts):
            members = torch.nonzero(y_cpu == c).flatten()
            keep.append(members[torch.randperm(len(members), generator=gen)[:n_c]])
        keep = torch.cat(keep).sort().values.to(y_train.device)
        x_train, y_train = x_train[keep], y_train[keep]
    report["train_class_counts"] = torch.bincount(y_train.cpu(), minlength=C).tolist()
    changes = {"x_train": x_train, "y_train": y_train}
    if label_noise > 0:
        y_train, flipped = flip_labels(y_train, label_noise, label_noise_kind, C, gen)
        changes["y_train"] = y_train
        report["train_flipped_fraction"] = float(flipped.float().mean())
        report["train_flipped"] = flipped
        if noisy_dev:
            changes["y_dev"], dev_flipped = flip_labels(
                splits.y_dev, label_noise, label_noise_kind, C, gen
            )
            report["dev_flipped_fraction"] = float(dev_flipped.float().mean())
    return replace(splits, **changes), report
