"""The classic ``mnist.pkl.gz``: full MNIST as the official L2T-DLF demo reads it, offline.

The file is a gzip'd pickle (written by Python 2, hence ``encoding="latin1"``) of

    ((x_train, y_train), (x_valid, y_valid), (x_test, y_test))

with x float32 (N, 784) in [0, 1] and y int64 (N,): 50,000 / 10,000 / 10,000 images. Train and
valid together are the 60,000 official MNIST training images, test is the official test set. The
pixels are the raw bytes divided by 256 (max 255/256), so ``round(256 x)`` restores the exact
uint8 image; we keep uint8 like every other source (``students.data.Raw``).

Where torchvision's raw MNIST files are absent, ``students.data`` reads this file from
``data_root`` instead (``mnist`` and ``mnist-demo``). ``l2t data fetch mnist`` puts it there.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FILENAME = "mnist.pkl.gz"
SPLIT_SIZES = (50_000, 10_000, 10_000)
"""train, valid, test of the real file"""
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
"""per-class counts of the official MNIST test set (digits 0..9)"""

Part = tuple[Tensor, Tensor]


def read_mnist_pkl(path: str | Path) -> tuple[Part, Part, Part]:
    """((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) as uint8 (N, 1, 28, 28) images
    and int64 labels. Raises ValueError naming the problem if the file is not in that format."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            parts = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a gzip'd pickle of MNIST ({err})") from err
    if not (isinstance(parts, (tuple, list)) and len(parts) == 3):
        raise ValueError(
            f"{path}: expected a pickled ((x_train, y_train), (x_valid, y_valid), (x_test, "
            f"y_test)), got {type(parts).__name__}"
        )
    out = []
    for name, part in zip(("train", "valid", "test"), parts, strict=True):
        x, y = (np.asarray(a) for a in part)
        if x.ndim != 2 or x.shape[1] != 784 or y.shape != (len(x),):
            raise ValueError(
                f"{path}: {name} part must be x (N, 784) and y (N,), got {x.shape} and {y.shape}"
            )
        if x.dtype.kind == "f":
            if x.size and (x.min() < 0 or x.max() > 1):
                raise ValueError(f"{path}: {name} pixels must lie in [0, 1]")
            x = np.rint(x * 256).clip(0, 255)  # the file stores byte / 256
        images = torch.from_numpy(x.astype(np.uint8)).view(-1, 1, 28, 28)
        out.append((images, torch.from_numpy(y.astype(np.int64))))
    return tuple(out)


def check_real_file(parts: tuple[Part, Part, Part]) -> None:
    """The real file's split sizes and test label counts, or ValueError saying what differs."""
    sizes = tuple(len(y) for _, y in parts)
    if sizes != SPLIT_SIZES:
        raise ValueError(f"mnist.pkl.gz split sizes {sizes}, expected {SPLIT_SIZES}")
    counts = tuple(torch.bincount(parts[2][1], minlength=10).tolist())
    if counts != TEST_LABEL_COUNTS:
        raise ValueError(
            f"mnist.pkl.gz test label counts {counts}, expected the official {TEST_LABEL_COUNTS}"
        )
