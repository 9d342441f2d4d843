"""Teachers: agents that choose the student's loss coefficients, under one interface."""

from teachers.base import EpisodeResult, FitReport, Teacher, TeachingSpec
from teachers.registry import TEACHERS, make_teacher, teacher_class

__all__ = [
    "TEACHERS",
    "TeachingSpec",
    "EpisodeResult",
    "FitReport",
    "Teacher",
    "make_teacher",
    "teacher_class",
]
