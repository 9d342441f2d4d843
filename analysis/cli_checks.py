"""Helpers of the ``l2t`` command line kept out of ``analysis.cli``: argument types that turn a
malformed value into a one-line error (exit status 2), the student/optimiser knobs of
``compare``, and the notes a report needs to say what was asked and what it shows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from analysis.repro import deterministic
from teachers.base import EnvSpec

__all__ = ["deterministic"]  # re-exported for the CLI

LISTINGS = ("teachers", "datasets", "students", "losses")
"""`l2t <kind>` prints each registered name with a line on what it is"""
SPEC_KNOBS = ("lr", "batch_size", "momentum", "weight_decay", "schedule", "dev_subset")
SPEC_JSON = ("student_kwargs", "loss_kwargs")


# -- argument types: each raises ArgumentTypeError, which argparse prints as one line, exit 2 ---
def device_arg(text: str) -> str:
    """auto, or a torch device name (cpu, cuda, cuda:1, mps); whether it exists is checked by
    :func:`check_device_here`, once the backend is known (a Ray cluster's GPUs need not be on
    the driver's machine)."""
    if text == "auto":
        return text
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: students run on cpu, cuda or mps")
    return text


def check_device_here(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """With the local backend the students run on this machine: --device must exist here."""
    if args.device == "auto" or getattr(args, "backend", "local") != "local":
        return
    import torch

    device = torch.device(args.device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            parser.error(
                f"argument --device: {args.device!r}: no CUDA device here; use auto or cpu"
            )
        if device.index is not None and device.index >= count:
            parser.error(f"argument --device: {args.device!r}: only cuda:0..cuda:{count - 1} exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        parser.error(f"argument --device: {args.device!r}: no MPS device here; use auto or cpu")


def _number(kind: type, low: float, high: float | None, low_open: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        bad_low = value <= low if low_open else value < low
        if bad_low or (high is not None and value >= high) or value != value:  # NaN
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


positive_float = _number(float, 0.0, None, True, "a positive number")
positive_int = _number(int, 0, None, True, "a positive integer")
non_negative_float = _number(float, 0.0, None, False, "a number >= 0")
momentum_float = _number(float, 0.0, 1.0, False, "a momentum in [0, 1)")


def json_kwargs(text: str) -> dict:
    """Inline JSON or @file.json holding one object of keyword arguments."""
    try:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]!r}: {err.strerror}") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {raw!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected {{"option": value, ...}}, got {value!r}')
    return value


def add_spec_options(p: argparse.ArgumentParser) -> None:
    """The student and optimiser settings of the env spec (defaults: EnvSpec's)."""
    from students.optim import SCHEDULES

    spec = EnvSpec()
    p.add_argument("--lr", type=positive_float, help=f"student learning rate (default {spec.lr})")
    p.add_argument(
        "--batch-size", type=positive_int, help=f"student batch size (default {spec.batch_size})"
    )
    p.add_argument(
        "--momentum", type=momentum_float, help=f"SGD momentum (default {spec.momentum})"
    )
    p.add_argument("--weight-decay", type=non_negative_float, help=f"default {spec.weight_decay}")
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help=f"lr schedule over an episode (default {spec.schedule})",
    )
    p.add_argument(
        "--dev-subset",
        type=positive_int,
        help=f"dev examples in each step's state and reward (default {spec.dev_subset})",
    )
    p.add_argument(
        "--student-kwargs",
        type=json_kwargs,
        help="JSON or @file for the student, e.g. '{\"hidden\": 512}' (see `l2t students`)",
    )
    p.add_argument(
        "--loss-kwargs",
        type=json_kwargs,
        help="JSON or @file for the loss family, e.g. '{\"epsilon\": 0.2}' (see `l2t losses`)",
    )


def spec_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The EnvSpec fields the user set on the command line (absent ones keep their defaults)."""
    names = SPEC_KNOBS + SPEC_JSON
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


# -- checks that need more than one value --------------------------------------------------------
def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--out must be a directory (or not exist); --data-root must exist unless --download."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a directory")
    from analysis.cli import DEMO_REFERENCE  # the demo's default may be absent (a bare copy)

    reference = getattr(args, "reference", None)
    if reference not in (None, DEMO_REFERENCE) and not (Path(reference) / "config.json").exists():
        parser.error(f"--reference {reference}: not a results directory (no config.json)")
    root = getattr(args, "data_root", None)
    if root is not None and not Path(root).is_dir() and not getattr(args, "download", False):
        parser.error(f"--data-root {root}: no such directory (add --download to create it)")


def cli_words(err: BaseException) -> str:
    """An error raised by the library, in the command line's words (flags, not kwargs)."""
    text = str(err)
    if isinstance(err, TypeError):
        return (
            f"a keyword was not accepted ({text}); `l2t students` and `l2t losses` list each "
            "one's options for --student-kwargs / --loss-kwargs"
        )
    text = re.sub(
        r"\bdata_root=DIR with download=True \(CLI: --download\)",
        "--data-root DIR --download",
        text,
    )
    text = text.replace("needs a data_root", "needs --data-root DIR")
    text = text.replace("Pass download=True (CLI: --download)", "Pass --download")
    text = text.replace("<data_root>", "DIR")
    return text.replace("data_root=", "--data-root ").replace("download=True", "--download")


def asked_notes(grid: Any, store: Any) -> list[str]:
    """When --out also holds rows of teachers or budgets this command did not ask for, say so
    (the table and figures show every row of the directory)."""
    config = store.config()
    teachers = [t for t in config.get("teachers", []) if t not in grid.teachers]
    budgets = [b for b in config.get("budgets", []) if b not in grid.budgets]
    notes = []
    if teachers or budgets:
        extra = ", ".join(
            ([f"teachers {', '.join(teachers)}"] if teachers else [])
            + ([f"budgets {', '.join(map(str, budgets))}"] if budgets else [])
        )
        notes.append(
            f"This command asked for teachers {', '.join(grid.teachers)} at budgets "
            f"{', '.join(map(str, grid.budgets))}; {store.root} also holds rows of {extra} from "
            "earlier runs, shown too (same settings, so comparable)."
        )
        print(f"l2t: note: {notes[-1]}", file=sys.stderr)
    return notes


def budget_notes(grid: Any) -> list[str]:
    """A budget below one episode leaves episode-based teachers unfitted: warn before running."""
    from teachers.base import Teacher
    from teachers.registry import teacher_class

    episode = grid.spec.episode_steps
    small = [b for b in grid.budgets if b < episode]
    if not small:
        return []
    learning = [t for t in grid.teachers if _learns(teacher_class(t), Teacher)]
    if not learning:
        return []
    note = (
        f"budget {', '.join(map(str, small))} is smaller than one episode ({grid.spec.horizon} x "
        f"{grid.spec.interval} = {episode} student steps): teachers that fit on whole episodes "
        f"({', '.join(learning)}) may stay untrained there (see 'budget used' in the table)"
    )
    print(f"l2t: warning: {note}", file=sys.stderr)
    return [note]


def _learns(cls: type, base: type) -> bool:
    """A teacher that declares updates (its own `next_update`), not a fixed loss."""
    from teachers.fixed import FixedTeacher

    return cls.next_update is not base.next_update and not issubclass(cls, FixedTeacher)


def reference_section(args: argparse.Namespace) -> tuple[list[str], bool | None]:
    """For `l2t demo`: the fresh run against the committed reference (report section, verdict)."""
    if getattr(args, "reference", None) is None:
        return [], None
    from analysis.reference import compare

    return compare(args.out, args.reference)
