"""Teachers by name. Entries are import paths, so a teacher's heavy dependencies (SB3) load only
when it is used; adding a teacher is one module plus one line here."""

from __future__ import annotations

import importlib
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


def teacher_class(name: str) -> type:
    if name not in TEACHERS:
        raise unknown_name_error("teacher", name, TEACHERS)
    module, cls = TEACHERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_teacher(name: str, **config: Any):
    """A new, unfitted teacher `name` with its configuration."""
    return teacher_class(name)(**config)
