"""Teachers: agents that choose the student's loss coefficients, under one interface."""

from teachers.base import EnvSpec, EpisodeResult, FitReport, Teacher
from teachers.registry import TEACHERS, make_teacher, teacher_class

__all__ = [
    "TEACHERS",
    "EnvSpec",
    "EpisodeResult",
    "FitReport",
    "Teacher",
    "make_teacher",
    "teacher_class",
]
