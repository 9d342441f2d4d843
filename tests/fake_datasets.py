"""Tiny fake datasets in torchvision's on-disk formats, so loaders are tested without downloads.

Each writer returns what it wrote, as uint8 (N, C, H, W) images and int64 labels: the arrays a
correct loader must give back. Images are uniform noise, so rows are distinct.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np


class FakeData(NamedTuple):
    x_train: np.ndarray  # uint8 (N, C, H, W)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray


def _write_idx(path: Path, a: np.ndarray) -> None:
    # IDX header: two zero bytes, type 0x08 (uint8), ndim; then each dim as a big-endian uint32.
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(header + a.astype(np.uint8).tobytes())


def write_fake_mnist(
    root: str | os.PathLike, n_train: int, n_test: int, variant: str = "MNIST", seed: int = 0
) -> FakeData:
    """Write `<root>/<variant>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, uncompressed.

    variant is the torchvision class name, "MNIST" or "FashionMNIST", which is also its folder.
    torchvision only checks that these four files exist (no checksums).
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / variant / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        arrays += [x[:, None], y.astype(np.int64)]
    return FakeData(*arrays)


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _batch(x: np.ndarray, y: np.ndarray, label_key: str, **extra: list) -> dict:
    # Rows of 3,072 bytes: the whole red plane, then green, then blue, as in the real archives.
    names = [f"fake_{i}.png" for i in range(len(x))]
    return {"data": x.reshape(len(x), -1), label_key: y.tolist(), "filenames": names, **extra}


def write_fake_cifar(
    root: str | os.PathLike, n_train: int, n_test: int, classes: int = 10, seed: int = 0
) -> FakeData:
    """Write torchvision's CIFAR python-pickle layout under root.

    classes=10:  cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta
    classes=100: cifar-100-python/train, test, meta (coarse label = fine // 5, unused)
    torchvision checks these files' md5s, which fake files never match: call
    accept_fake_cifar(monkeypatch) before loading them.
    """
    if classes not in (10, 100):
        raise ValueError(f"classes must be 10 (CIFAR-10) or 100 (CIFAR-100), got {classes}")
    rng = np.random.default_rng(seed)
    x_train, x_test = (
        rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8) for n in (n_train, n_test)
    )
    y_train, y_test = (rng.integers(0, classes, n).astype(np.int64) for n in (n_train, n_test))
    names = [f"class_{i}" for i in range(classes)]
    if classes == 10:
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            _write_pickle(
                folder / f"data_batch_{i}", _batch(x_train[part], y_train[part], "labels")
            )
        _write_pickle(folder / "test_batch", _batch(x_test, y_test, "labels"))
        _write_pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    else:
        folder = Path(root) / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            batch = _batch(x, y, "fine_labels", coarse_labels=(y // 5).tolist())
            _write_pickle(folder / split, batch)
        coarse = [f"superclass_{i}" for i in range(20)]
        _write_pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": coarse})
    return FakeData(x_train, y_train, x_test, y_test)


def accept_fake_cifar(monkeypatch) -> None:
    """Let torchvision's CIFAR10/100 load fake files, in the calling test only.

    Their `_check_integrity` and `_load_meta` compare md5s with the real archive's, which fake
    files cannot match; both call the module-level `check_integrity`, patched here to check
    only that the file exists (what the MNIST loader checks anyway).
    """
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
