"""Helpers of the ``l2t`` command line kept out of ``analysis.cli``: argument types that turn a
malformed value into a one-line error (exit status 2), the env's options generated from
``envs/config.py`` (one flag per field), and the notes a report needs to say what was asked and
what it shows.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.reference import DEMO_REFERENCE
from analysis.repro import deterministic
from envs.config import ENV_FIELDS, FIELDS, FLAG, default_of, read_json_object

__all__ = ["deterministic"]  # re-exported for the CLI

LISTINGS = ("teachers", "datasets", "students", "losses")
"""`l2t <kind>` prints each registered name with a line on what it is"""


# -- argument types: each raises ArgumentTypeError, which argparse prints as one line, exit 2 ---
def flag(name: str) -> str:
    """The command line's flag of an EnvConfig field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def field_type(name: str):
    """The argparse type of EnvConfig field `name`: its text read and checked by the field's own
    Check (envs/config.py), a bad value one line."""
    check = FIELDS[name].metadata["check"]

    def parse(text: str):
        try:
            return check(check.parse(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name
    return parse


def add_config_options(p: argparse.ArgumentParser, names: Sequence[str] = ENV_FIELDS) -> None:
    """One flag per EnvConfig field in `names`, with the field's help, default and check: the
    command line's env options are generated from envs/config.py, never written by hand."""
    for name in names:
        meta, default = FIELDS[name].metadata, default_of(name)
        shown = (
            "" if default is None or default is False or default == {} else f" (default {default})"
        )
        help = (meta["help"] + shown).replace("%", "%%")
        if meta["check"] is FLAG:
            p.add_argument(flag(name), dest=name, action="store_true", help=help)
        else:
            p.add_argument(flag(name), dest=name, type=field_type(name), default=default, help=help)


def config_args(args: argparse.Namespace, names: Sequence[str] = ENV_FIELDS) -> dict[str, Any]:
    """The EnvConfig fields of parsed arguments, by field name."""
    return {n: getattr(args, n) for n in names}


def json_kwargs(text: str) -> dict:
    """Inline JSON or @file.json holding one object of keyword arguments."""
    try:
        return read_json_object(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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


# -- checks that need more than one value --------------------------------------------------------
def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--out must be a directory (or not exist); --data-root must exist unless --download."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a directory")
    reference = getattr(args, "reference", None)  # the demo's default may be absent (a bare copy)
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
