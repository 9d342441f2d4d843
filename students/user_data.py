"""Your own data in every teacher and in ``l2t compare``: an ``.npz`` file or in-memory Splits.

An ``.npz`` file holds four arrays (``numpy.savez(path, x_train=..., y_train=..., x_test=...,
y_test=...)``): x as (N, C, H, W) images or (N, D) features, y as integer labels in [0, C).
It is split and normalised exactly like a named dataset (dev carved from x_train, see
``students.data.from_tensors``). Anywhere a dataset name is accepted (``TeachingSpec.dataset``,
``TeachingProcess``, ``load_dataset``, ``l2t compare --dataset``) a path ending in ``.npz`` works.

The file is read by ``students.data.load_npz``, the one loader; this module says what a run was
given. A comparison must say which data it ran on: :func:`describe_dataset` gives the file (resolved
path) and its sha256, or for in-memory :class:`~students.data.Splits` their name and a sha256 of
their tensors, for ``config.json``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from students.data import DATASETS, NPZ_KEYS, Splits, is_npz_path
from students.names import unknown_name_error


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
