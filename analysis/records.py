"""Tidy long-format records of a comparison, written one Parquet part-file per completed unit.

A *unit* is one (teacher, budget, fitting seed): fit the teacher, then teach its fresh students.
Each unit's rows are written at once, to a temporary name renamed into place (atomic on POSIX),
so a run killed at any moment leaves every unit either complete or absent: re-running the same
command skips complete units and redoes the rest, with no lost and no duplicated rows.

Layout of a results directory::

    config.json            what was asked (env spec, teachers, budgets, seeds, teacher configs)
    versions.json          python, packages, git commit, machine
    records/<unit>.parquet tidy rows: one (phase, episode, step, metric) value each
    units/<unit>.json      who made the unit: its wall time, git commit, packages, machine (so a
                           report of a resumed run credits each row to the run that made it)
    coeffs/<unit>.parquet  the loss coefficients each taught student was given, one number a row
    teachers/<unit>.pt     the fitted teacher (Teacher.save)

Columns of ``records`` (:data:`COLUMNS`): teacher, student, dataset, loss (the family the teacher
acts on), budget (requested student SGD steps), seed (fitting seed), student_seed (-1 in the fit
phase), phase ("fit" | "teach" | "final"), episode (fit: teacher update index; teach/final: the
taught student's index), step (student SGD steps: fit = spent so far, teach = within the
episode), metric, value, wall_time (seconds into the phase where known, else NaN), budget_used
(student steps the fit actually spent).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

KEY_COLUMNS = ["teacher", "student", "dataset", "loss", "budget", "seed", "student_seed"]
"""what identifies a taught student: shared by the records and the coefficient tables"""
COLUMNS = [*KEY_COLUMNS, "phase", "episode", "step", "metric", "value", "wall_time", "budget_used"]
COEFF_COLUMNS = [*KEY_COLUMNS, "episode", "t", "step", "index", "value"]
PHASES = ("fit", "teach", "final")
_DTYPES = {
    "teacher": "string",
    "student": "string",
    "dataset": "string",
    "loss": "string",
    "budget": "int64",
    "seed": "int64",
    "student_seed": "int64",
    "phase": "string",
    "episode": "int64",
    "step": "float64",  # NaN where a fit log row has no step count
    "metric": "string",
    "value": "float64",
    "wall_time": "float64",
    "budget_used": "int64",
    "t": "int64",
    "index": "int64",
}
PACKAGES = (
    "l2t-gym",
    "torch",
    "torchvision",
    "gymnasium",
    "stable-baselines3",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "seaborn",
    "matplotlib",
    "ray",
)
# Settings a resumed run must share with the records already on disk; teachers, seeds and budgets
# may grow between runs (new units are added), anything else would mix incomparable rows.
FIXED_KEYS = (
    "spec",
    "students_per_seed",
    "teacher_configs",
    "student_seed_offset",
    "checkpoint",
    "checks",
    "protocol",
    "protocol_overrides",
    "lr_grids",
    "starts",
    "selection_students",
)


def unit_id(teacher: str, budget: int, seed: int) -> str:
    """File stem of one unit; teacher names are registry keys (letters, digits, '-')."""
    return f"{teacher}__b{budget}__s{seed}"


def tidy(rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly `columns`, in order, with stable dtypes."""
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({c: _DTYPES[c] for c in columns})


class RecordStore:
    """A results directory: incremental, resumable part-files and their concatenated view."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.coeffs_dir = self.root / "coeffs"
        self.teachers_dir = self.root / "teachers"
        self.units_dir = self.root / "units"

    # -- writing ------------------------------------------------------------------------------
    def open(self, config: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
        """Create the directory, or check a resumed one was made with compatible settings.

        `defaults` (a config of default settings) is what a setting added after a directory was
        made reads as there: a new setting whose default keeps the old behaviour leaves old
        directories resumable."""
        for d in (self.records_dir, self.coeffs_dir, self.teachers_dir):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*/.*.tmp"):  # a write cut short by a kill
            stale.unlink()
        path = self.root / "config.json"
        if path.exists():
            old = _with_defaults(json.loads(path.read_text()), defaults or {})
            clash = [d for k in FIXED_KEYS for d in _differences(k, *_comparable(k, old, config))]
            if clash:
                raise ValueError(
                    f"{self.root} holds records made with other settings ({'; '.join(clash)}): "
                    f"resuming would mix incomparable rows. Use another --out directory, or the "
                    f"original settings (saved in {path})."
                )
            config = {
                **config,
                **{k: _union(old.get(k, []), config.get(k, [])) for k in ("teachers", "budgets")},
                "teacher_configs": {
                    **old.get("teacher_configs", {}),
                    **config.get("teacher_configs", {}),
                },
                "seeds": max(old.get("seeds", 0), config.get("seeds", 0)),
            }
        _write_json(path, config)
        _write_json(self.root / "versions.json", versions())

    def is_complete(self, unit: str) -> bool:
        return (self.records_dir / f"{unit}.parquet").exists()

    def completed(self) -> set[str]:
        return {p.stem for p in self.records_dir.glob("*.parquet")}

    def write_unit(
        self,
        unit: str,
        records: pd.DataFrame,
        coeffs: pd.DataFrame | None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Write one unit's metadata and coefficient rows, then its records; the records file
        marks completion."""
        if list(records.columns) != COLUMNS:
            raise ValueError(f"records must have columns {COLUMNS}, got {list(records.columns)}")
        if meta is not None:
            self.units_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.units_dir / f"{unit}.json", meta)
        if coeffs is not None:
            _atomic_parquet(coeffs, self.coeffs_dir / f"{unit}.parquet")
        _atomic_parquet(records, self.records_dir / f"{unit}.parquet")

    def meta_path(self, unit: str) -> Path:
        """``units/<unit>.json``; a unit id may hold '/' to group units in subfolders."""
        return self.units_dir / f"{unit}.json"

    def write_meta(self, unit: str, meta: dict[str, Any]) -> None:
        """A unit's metadata alone (atomic): for runs whose units are not records rows (the
        full-MNIST protocols' learning-rate trials, fits and final students)."""
        path = self.meta_path(unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, meta)

    def read_meta(self, unit: str) -> dict[str, Any] | None:
        """A unit's metadata, or None when the unit is not done."""
        path = self.meta_path(unit)
        return json.loads(path.read_text()) if path.exists() else None

    def teacher_path(self, unit: str) -> Path:
        return self.teachers_dir / f"{unit}.pt"

    # -- reading ------------------------------------------------------------------------------
    def read(self) -> pd.DataFrame:
        """All records, concatenated; an empty frame with the schema if there are none."""
        return _concat(sorted(self.records_dir.glob("*.parquet")), COLUMNS)

    def read_unit_meta(self) -> dict[str, dict[str, Any]]:
        """Per completed unit, the metadata it was written with ({} for units made before the
        project recorded it)."""
        out = {}
        for unit in sorted(self.completed()):
            path = self.units_dir / f"{unit}.json"
            out[unit] = json.loads(path.read_text()) if path.exists() else {}
        return out

    def read_coeffs(self) -> pd.DataFrame:
        return _concat(sorted(self.coeffs_dir.glob("*.parquet")), COEFF_COLUMNS)

    def config(self) -> dict[str, Any]:
        path = self.root / "config.json"
        if not path.exists():
            raise FileNotFoundError(
                f"{self.root} is not a results directory (no config.json); make one with "
                f"`l2t compare --out {self.root} ...`"
            )
        return json.loads(path.read_text())


def versions() -> dict[str, Any]:
    """What produced the records: interpreter, packages, git commit, machine."""
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["git_commit"], out["git_dirty"] = _CODE_VERSION
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        pass
    return out


def _code_version() -> tuple[str | None, bool | None]:
    """The checkout's commit and dirty flag, read once when this module is imported: the code a
    process runs is what was on disk then, even if the checkout moves on during a long run."""
    commit = _git("rev-parse", "HEAD")
    # code changes only: results/ and runs/ are where runs (this one included) write
    status = _git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ":/",
        ":(top,exclude)results",
        ":(top,exclude)runs",
    )
    return commit, None if status is None else bool(status)


def unit_meta(wall_time: float) -> dict[str, Any]:
    """What one unit cost and which code made it: stored beside its records, so a report over a
    directory filled by several (resumed) runs credits each row to the run that computed it."""
    import datetime

    return {
        "wall_time": wall_time,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **versions(),
    }


def _git(*args: str) -> str | None:
    """A read-only git query about the checkout the code runs from; None outside a repository."""
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _comparable(key: str, old: dict[str, Any], new: dict[str, Any]) -> tuple[Any, Any]:
    """The on-disk and the new value of `key` as far as they must agree: a teacher new to the
    directory may bring its config (it has no records to disagree with)."""
    if key != "teacher_configs":
        return old.get(key), new.get(key)
    kept = set(old.get("teachers", []))
    return tuple({t: v for t, v in (c.get(key) or {}).items() if t in kept} for c in (old, new))


def _differences(key: str, old: Any, new: Any) -> list[str]:
    """'spec.horizon: 12 on disk vs 6 now' for every leaf that differs between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(set(old) | set(new), key=str)
            for d in _differences(f"{key}.{k}", old.get(k), new.get(k))
        ]
    return [] if old == new else [f"{key}: {old!r} on disk vs {new!r} now"]


def _with_defaults(old: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, default in defaults.items():
        if key not in out:
            out[key] = default
        elif isinstance(default, dict) and isinstance(out[key], dict):
            out[key] = {**default, **out[key]}
    return out


def _union(a: list, b: list) -> list:
    return list(dict.fromkeys([*a, *b]))


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _concat(paths: list[Path], columns: list[str]) -> pd.DataFrame:
    if not paths:
        return tidy([], columns)
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


_CODE_VERSION = _code_version()
