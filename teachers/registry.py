"""Teachers by name. Entries are import paths, so a teacher's heavy dependencies (SB3) load only
when it is used; adding a teacher is one module plus one line here."""

from __future__ import annotations

import importlib
import re
from typing import Any

from students.names import unknown_name_error

TEACHERS: dict[str, str] = {
    "ce": "teachers.fixed:CrossEntropyTeacher",
    "label-smoothing": "teachers.fixed:LabelSmoothingTeacher",
    "gce": "teachers.fixed:GCETeacher",
    "large-margin": "teachers.large_margin:LargeMarginTeacher",
    "fixed": "teachers.fixed:FixedTeacher",
    "random": "teachers.fixed:RandomTeacher",
    "l2t-dlf": "teachers.l2t_dlf:L2TDLFTeacher",
    "reinforce": "teachers.reinforce:ReinforceTeacher",
    "ppo": "teachers.sb3:PPOTeacher",
    "a2c": "teachers.sb3:A2CTeacher",
    "l2t-dln": "teachers.l2t_dln:L2TDLNTeacher",
    "ce+meta": "teachers.oracle:CEMetaTeacher",
    "l2rw": "teachers.reweight:L2RWTeacher",
    "mw-net": "teachers.reweight:MWNetTeacher",
    "oracle": "teachers.oracle:OracleTeacher",
}


VARIANT_MARK = "@"
"""``base@label`` names a variant of a registered teacher: the same class under its own options
(``--teacher-config '{"l2t-dlf@pes": {"estimator": "pes"}}'``), so one comparison can hold several
settings of one teacher side by side (paired against the same students, in one Holm family)"""
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def base_name(name: str) -> str:
    """The registered teacher a name runs: ``l2t-dlf@pes`` -> ``l2t-dlf``; ``ce`` -> ``ce``."""
    return str(name).split(VARIANT_MARK, 1)[0]


def check_name(name: str) -> None:
    """A one-line error for a name that is neither a registered teacher nor ``base@label`` of
    one (the label: letters, digits and ``. _ + -``)."""
    base, mark, label = str(name).partition(VARIANT_MARK)
    if base not in TEACHERS:
        raise unknown_name_error("teacher", base if mark else name, TEACHERS)
    if mark and not _LABEL.fullmatch(label):
        raise ValueError(
            f"teacher variant {name!r}: the label after {VARIANT_MARK!r} must be letters, digits "
            f"and . _ + - (e.g. {base}@pes)"
        )


def teacher_class(name: str) -> type:
    check_name(name)
    module, cls = TEACHERS[base_name(name)].split(":")
    return getattr(importlib.import_module(module), cls)


def make_teacher(name: str, **config: Any):
    """A new, unfitted teacher `name` with its configuration."""
    return teacher_class(name)(**config)
