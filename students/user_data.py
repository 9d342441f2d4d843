"""Your own data in every teacher and in ``l2t compare``: an ``.npz`` file or in-memory Splits.

An ``.npz`` file holds four arrays (``numpy.savez(path, x_train=..., y_train=..., x_test=...,
y_test=...)``): x as (N, C, H, W) images or (N, D) features, y as integer labels in [0, C).
It is split and normalised exactly like a named dataset (dev carved from x_train, see
``students.data.from_tensors``). Anywhere a dataset name is accepted (``EnvSpec.dataset``,
``TeachingProcess``, ``load_dataset``, ``l2t compare --dataset``) a path ending in ``.npz`` works.

A comparison must say which data it ran on: :func:`describe_dataset` gives the file (resolved
path) and its sha256, or for in-memory :class:`~students.data.Splits` their name and a sha256 of
their tensors, for ``config.json``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from students.data import DATASETS, Splits, from_tensors

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def is_npz_path(name: object) -> bool:
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(".npz")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def splits_sha256(splits: Splits) -> str:
    """A fingerprint of the split tensors (as float32 / int64 on the CPU)."""
    digest = hashlib.sha256()
    for name in ("x_train", "y_train", "x_dev", "y_dev", "x_test", "y_test"):
        t = getattr(splits, name).detach().cpu()
        t = t.float() if t.is_floating_point() else t.long()
        digest.update(name.encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The four arrays of an .npz file; errors name the file and what is missing."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset file {str(path)!r} not found; an .npz dataset holds arrays {list(NPZ_KEYS)}"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"dataset file {str(path)!r} is not a readable .npz (numpy.savez) archive; save one "
            f"with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise ValueError(
                f"dataset file {str(path)!r} lacks arrays {missing}; it has {z.files}, and an "
                f".npz dataset needs {list(NPZ_KEYS)} (numpy.savez(path, x_train=..., ...))"
            )
        try:
            arrays = {k: z[k] for k in NPZ_KEYS}
        except ValueError as err:  # object arrays: numpy refuses to unpickle them
            raise ValueError(
                f"dataset file {str(path)!r} holds Python objects ({err}); save x as numbers and "
                f"y as integer labels 0..C-1"
            ) from None
    check_labels(arrays["y_train"], arrays["y_test"], where=f"dataset file {str(path)!r}")
    return arrays


def check_labels(y_train: np.ndarray, y_test: np.ndarray, *, where: str) -> None:
    """Refuse (never remap) labels that are not the integers 0..C-1, every class in y_train.

    Remapping silently would change what a class number means between the user's file and the
    records; labels 1..10 read as 0..10 would train an 11-way student with an empty class 0,
    which is what an unchecked file used to do. The message names the labels and the one-line fix.
    """
    fix = "map y_train and y_test together with numpy.unique(..., return_inverse=True)"
    for split, y in (("y_train", y_train), ("y_test", y_test)):
        y = np.asarray(y)
        if y.dtype.kind not in "iub":  # strings, objects, floats, ...
            shown = _labels_text(np.unique(y.ravel())) if y.size else "none"
            kind = {"U": "strings", "S": "byte strings", "O": "objects", "f": "floats"}.get(
                y.dtype.kind, f"dtype {y.dtype}"
            )
            raise ValueError(
                f"{where}: {split} holds {kind} ({shown}), not integer class labels 0..C-1; {fix}"
            )
    train = np.unique(np.asarray(y_train).ravel())
    test = np.unique(np.asarray(y_test).ravel())
    if train.size == 0:
        return  # an empty split is reported by the split itself
    expected = np.arange(int(train.max()) + 1)
    if train.min() < 0 or not np.array_equal(train, expected):
        if train.min() < 0:
            why = f"negative labels ({_labels_text(train[train < 0])})"
        else:
            why = f"class(es) {_labels_text(np.setdiff1d(expected, train))} would have no example"
        run = np.array_equal(train, np.arange(train.min(), train.max() + 1))
        shift = (
            f"; if they count from {train.min()}, use y - {train.min()}"
            if run and train.min() > 0
            else ""
        )
        raise ValueError(
            f"{where}: y_train's labels are {_labels_text(train)}, not 0..C-1 ({why}){shift}; "
            f"or {fix}"
        )
    extra = np.setdiff1d(test, train)
    if extra.size:
        raise ValueError(
            f"{where}: y_test has label(s) {_labels_text(extra)} that no y_train example has "
            f"(y_train's labels are {_labels_text(train)}): a student cannot learn a class it "
            f"never sees"
        )


def _labels_text(values: np.ndarray, most: int = 8) -> str:
    """`1..10` for a run of consecutive integers, else the first few values, with the count."""
    values = np.asarray(values).ravel()
    run = values.dtype.kind in "iu" and values.size > 2
    if run and np.array_equal(values, np.arange(values[0], values[0] + values.size)):
        return f"{values[0]}..{values[-1]}"
    shown = ", ".join(repr(v.item()) if hasattr(v, "item") else repr(v) for v in values[:most])
    more = f", ... ({values.size} distinct)" if values.size > most else ""
    return f"{shown}{more}"


@functools.lru_cache(maxsize=4)
def _load_npz_cpu(path: str, mtime: float, dev_size: int | None, split_seed: int) -> Splits:
    arrays = read_npz(path)
    return from_tensors(**arrays, dev_size=dev_size, split_seed=split_seed, name=path)


def load_npz(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dev_size: int | None = None,
    split_seed: int = 0,
) -> Splits:
    """Splits of an .npz file (read once per process and modification time). Its name is the
    resolved path, so records name the file."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        read_npz(resolved)  # raises the clear FileNotFoundError
    cpu = _load_npz_cpu(str(resolved), resolved.stat().st_mtime, dev_size, split_seed)
    return cpu.to(device)


def check_dataset(dataset: object) -> None:
    """Raise a clear ValueError for a dataset that is none of: a registered name, an existing
    .npz path, a Splits (a bad file's contents are checked when it is loaded)."""
    if isinstance(dataset, Splits):
        return
    if is_npz_path(dataset):
        if not Path(dataset).expanduser().is_file():
            raise ValueError(
                f"dataset file {str(dataset)!r} not found; an .npz dataset holds arrays "
                f"{list(NPZ_KEYS)}"
            )
        return
    if dataset not in DATASETS:
        from envs.losses import unknown_name_error

        err = unknown_name_error("dataset", dataset, DATASETS)
        raise ValueError(f"{err} Or pass a path to an .npz file with arrays {list(NPZ_KEYS)}.")


def dataset_label(dataset: object) -> str:
    """The string a records row names its data by: the name, the resolved path, or Splits.name."""
    if isinstance(dataset, Splits):
        return dataset.name
    if is_npz_path(dataset):
        return str(Path(dataset).expanduser().resolve())
    return str(dataset)


def describe_dataset(dataset: object) -> dict[str, Any]:
    """What config.json records about the data: name, and for user data its file and sha256."""
    if isinstance(dataset, Splits):
        return {
            "source": "splits",
            "name": dataset.name,
            "sha256": splits_sha256(dataset),
            "sizes": [len(dataset.y_train), len(dataset.y_dev), len(dataset.y_test)],
        }
    if is_npz_path(dataset):
        path = Path(dataset).expanduser().resolve()
        return {"source": "npz", "name": str(path), "path": str(path), "sha256": file_sha256(path)}
    return {"source": "registry", "name": str(dataset)}
