"""The one error for a name that is not registered, shared by every registry (datasets, students,
losses, rewards, teachers, options): it lists the valid names and suggests the closest one.

It lives in the lowest layer (students -> envs -> teachers -> analysis) so that every layer can
raise it without importing upwards.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_name_error(kind: str, name: object, known: Iterable[str]) -> ValueError:
    """A ValueError that lists the valid names and suggests the closest one."""
    known = list(known)
    by_case = {k.lower(): k for k in known}  # `CE` -> `ce`: a capital is the likeliest slip
    near = [by_case[str(name).lower()]] if str(name).lower() in by_case else []
    near = near or difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    return ValueError(f"unknown {kind} {name!r}; known: {sorted(known)}.{hint}")
