"""The comparison grid: teacher x budget x seed, every unit under the same env spec and budget.

For each unit: build a fresh teacher, ``fit`` it within ``budget`` student SGD steps (seed =
the fitting seed), then ``teach`` ``students_per_seed`` fresh students with the teacher frozen and
record everything as tidy rows (``analysis.records``).

Taught students get seeds ``student_seed_offset + 1000 * seed + j`` with the offset 2**31: above
every seed a fit trains on (``teachers.base.SeedPlan``: its draws lie in [0, 2**31 - 1), its
numbered students at ``1_000_000 + 10_000 * seed + i``), so no taught student was seen in fitting;
and equal across teachers, so teacher A and teacher B teach students with the same initial weights
and data order for the same seed: the paired differences in ``analysis.tables`` use that.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.records import COEFF_COLUMNS, RecordStore, tidy, unit_id, unit_meta
from analysis.repro import init_worker
from analysis.selection import CHOICES, Selection, Trial, choose_start_and_lr, search_lr
from analysis.selection import apply as apply_changes
from students.names import unknown_name_error
from students.user_data import check_dataset, dataset_label, describe_dataset
from teachers.base import (
    CHECKPOINTS,
    EpisodeResult,
    FitReport,
    Teacher,
    TeachingSpec,
    check_options,
)
from teachers.batch_eval import batchable, teach_batch
from teachers.fixed import FixedTeacher
from teachers.registry import TEACHERS, check_name, make_teacher, teacher_class

STUDENT_SEED_OFFSET = 2**31
MAX_STUDENTS_PER_SEED = 1000
MAX_COEFF_DIM = 1024
"""families with more coefficients (dln: 5,000) keep only summaries (coeff_mean/std) in records"""
# Keys of an env info row that are bookkeeping, not metrics.
_STEP_KEYS = {"t", "student_steps", "student_seed", "termination_reason", "diverged"}
_FIT_KEYS = {"episode", "student_steps", "wall_time"}


@dataclass
class Grid:
    """What to compare; its fields are the ``l2t compare`` options."""

    teachers: list[str]
    """registry names, e.g. ce, label-smoothing, random, l2t-dlf, reinforce, ppo"""
    seeds: int = 3
    """fitting seeds 0..seeds-1; each fits its own teacher (the unit of replication)"""
    budgets: list[int] = field(default_factory=lambda: [6000])
    """student SGD steps each teacher may spend fitting; several give quality-vs-budget"""
    spec: TeachingSpec = field(default_factory=TeachingSpec)
    """the environment every teacher is fitted and evaluated on"""
    students_per_seed: int = 1
    """fresh students each fitted teacher teaches"""
    teacher_configs: dict[str, dict] = field(default_factory=dict)
    """constructor kwargs per teacher name"""
    student_seed_offset: int = STUDENT_SEED_OFFSET
    checkpoint: str = "last"
    """which state of each taught student is reported, for every teacher alike: "last", or
    "best-select" (the best of `checks` evenly spaced states on dev's select error)"""
    checks: int = 10
    """K, the evenly spaced select checks of "best-select" (recorded with the results)"""
    protocol: str = ""
    """the named protocol the grid follows (analysis.protocols.COMPARE_PROTOCOLS, e.g.
    "fair-1"), recorded in config.json; "" = none"""
    protocol_overrides: dict[str, Any] = field(default_factory=dict)
    """protocol values the user's flags changed: {field: [protocol's, used]}"""
    lr_grids: dict[str, list[float]] = field(default_factory=dict)
    """teacher -> the student-lr grid searched on select before any unit (:func:`choose_lrs`);
    teachers not listed keep the spec's lr (or their config's)"""
    starts: list[str | float] = field(default_factory=list)
    """bilinear starts searched jointly with the lr for a learned teacher on the bilinear
    family (l2t-dlf); empty: the lr alone"""
    selection_students: int = 2
    """fresh students per lr candidate"""
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    """teacher -> what the search chose ({"lr": ..., "start": ...}); filled by choose_lrs"""
    search_cost: dict[str, int] = field(default_factory=dict)
    """teacher -> its search's cost, student-step equivalents from the process counter"""
    batched_teaching: bool = False
    """teach a fitted teacher's `students_per_seed` students in one batched process
    (``teachers.batch_eval.teach_batch``: one vmapped step for all of them) where that gives what
    teaching them one at a time gives, up to float rounding (:func:`teachers.batch_eval.batchable`,
    and the "last" checkpoint). Off by default: on a CPU core, 8 batched default students cost
    1.3x plain training each against 0.9-1.1x taught singly (benchmarks/README.md); for GPUs.
    A resumed directory keeps the setting it was made with (:func:`prepare`)"""
    teacher_options: dict[str, dict] = field(default_factory=dict)
    """teacher -> its options with every default filled in, as its units run them (set by
    :func:`prepare`, recorded in config.json): a resumed directory keeps the defaults it was made
    with when a teacher's defaults change (:func:`resolve_options`)"""

    def __post_init__(self) -> None:
        validate_grid(self)

    def units(self) -> list[tuple[str, int, int]]:
        return [(t, b, s) for b in self.budgets for s in range(self.seeds) for t in self.teachers]

    def env_of(self, teacher: str) -> TeachingSpec:
        """The grid's spec with the teacher's own ``env`` changes (its config's ``"env"`` key,
        e.g. ``{"ppo@lr": {"env": {"lr_action": true}}}``: a variant that may also set the lr),
        before the lr search."""
        changes = self.teacher_configs.get(teacher, {}).get(ENV_KEY, {})
        return self.spec.replace(**changes) if changes else self.spec

    def spec_of(self, teacher: str) -> TeachingSpec:
        """The spec `teacher` is fitted and teaches on: :meth:`env_of` with what the lr search
        chose for it (a bilinear start moves the spec onto the bilinear family, where it
        belongs)."""
        changes = self.tuned.get(teacher, {})
        spec = self.env_of(teacher)
        if "start" in changes and spec.loss != "bilinear":
            spec = spec.replace(loss="bilinear", loss_kwargs={})
        return apply_changes(spec, changes)

    def student_seed(self, seed: int, j: int) -> int:
        return self.student_seed_offset + MAX_STUDENTS_PER_SEED * seed + j

    def to_config(self) -> dict[str, Any]:
        """JSON-ready: user data appear by name (path) in the spec, and in full (file, sha256)
        under "data"."""
        out = asdict(replace(self, spec=TeachingSpec()))
        out["spec"] = {**self.spec.to_dict(), "dataset": dataset_label(self.spec.dataset)}
        out["data"] = describe_dataset(self.spec.dataset)
        return out


def validate_grid(grid: Grid) -> None:
    """Every name and number checked before any long work; errors list the valid values."""
    if not grid.teachers:
        raise ValueError(f"no teachers given; known: {sorted(TEACHERS)}")
    for name in grid.teachers:
        check_name(name)
    if len(set(grid.teachers)) != len(grid.teachers):
        raise ValueError(f"teachers listed twice: {grid.teachers}")
    unknown = set(grid.teacher_configs) - set(grid.teachers)
    if unknown:
        raise ValueError(
            f"teacher configs given for {sorted(unknown)}, which are not among the teachers "
            f"{grid.teachers}"
        )
    for name, options in grid.teacher_configs.items():
        check_env_changes(name, options.get(ENV_KEY, {}), grid.spec)
        try:
            cls = teacher_class(name)
        except (ImportError, AttributeError):  # prepare reports every teacher that cannot load
            continue
        check_options(cls, {k: v for k, v in options.items() if k != ENV_KEY})
    grid.spec.validate()  # every field's own check (envs/config.py), one line naming it
    check_dataset(grid.spec.dataset)  # and an .npz file must exist
    if grid.checkpoint not in CHECKPOINTS:
        raise unknown_name_error("checkpoint", grid.checkpoint, CHECKPOINTS)
    _positive("select checks", grid.checks)
    _positive("selection students", grid.selection_students)
    for name, lrs in grid.lr_grids.items():
        if name not in grid.teachers:
            raise ValueError(f"an lr grid is given for {name!r}, not among {grid.teachers}")
        if not lrs or any(isinstance(v, bool) or not float(v) > 0 for v in lrs):
            raise ValueError(f"{name}'s lr grid must be positive numbers, got {lrs!r}")
        if "lr" in grid.teacher_configs.get(name, {}) and not learns(name):
            raise ValueError(
                f"teacher {name!r}: its student lr is chosen on select from {list(lrs)}; drop "
                f"'lr' from its config (or run without the lr search)"
            )
    for name, changes in grid.tuned.items():
        if name not in grid.teachers or set(changes) - set(CHOICES):
            raise ValueError(f"tuned choices {changes!r} for {name!r}: bad teacher or key")
    _positive("seeds", grid.seeds)
    _positive("students per seed", grid.students_per_seed)
    if not isinstance(grid.batched_teaching, bool):
        raise ValueError(f"batched_teaching must be True or False, got {grid.batched_teaching!r}")
    if grid.students_per_seed > MAX_STUDENTS_PER_SEED:
        raise ValueError(f"students per seed must be <= {MAX_STUDENTS_PER_SEED}")
    if not grid.budgets:
        raise ValueError("no budgets given: pass at least one number of student SGD steps")
    for b in grid.budgets:
        _positive("budget (student SGD steps)", b)


ENV_KEY = "env"
"""the key of a teacher's config that holds its own env changes (:meth:`Grid.env_of`)"""
TEACHER_ENV_FIELDS = ("lr_action",)
"""the env fields a teacher's config may change: what the teacher may do, never the setting it
is compared in (data, noise, student, episode length stay the grid's for every teacher)"""


def check_env_changes(name: str, changes: Any, spec: TeachingSpec) -> None:
    """A one-line error for a teacher's ``env`` changes outside :data:`TEACHER_ENV_FIELDS` or
    with a value the env refuses."""
    if not isinstance(changes, dict):
        raise ValueError(f"teacher {name!r}: {ENV_KEY!r} must be an object of env fields")
    bad = sorted(set(changes) - set(TEACHER_ENV_FIELDS))
    if bad:
        raise ValueError(
            f"teacher {name!r}: its {ENV_KEY!r} may change only {list(TEACHER_ENV_FIELDS)} (what "
            f"the teacher may do), not {bad}: the setting is the same for every teacher"
        )
    if changes:
        spec.replace(**changes).validate()


def check_teachers_importable(names: Sequence[str]) -> dict[str, str]:
    """Teachers whose module cannot be imported, with the reason (empty when all import)."""
    broken = {}
    for name in names:
        try:
            teacher_class(name)
        except (ImportError, AttributeError) as err:
            broken[name] = f"{type(err).__name__}: {err}"
    return broken


def resolve_options(grid: Grid, recorded: dict[str, Any] | None) -> dict[str, dict]:
    """Each teacher's options as its units run them: its config over its Config's defaults;
    for a teacher already in a resumed directory (`recorded`, its config.json), the defaults it
    was made with: those recorded in ``teacher_options``, or, for a directory made before they
    were recorded, the class's ``legacy_defaults`` (options whose default changed since, e.g.
    REINFORCE's and SB3's ``n_envs``); an option added since reads as its default now."""
    kept = set((recorded or {}).get("teachers", []))
    out = dict((recorded or {}).get("teacher_options", {}))  # teachers this run leaves out too
    for name in grid.teachers:
        cls = teacher_class(name)
        now = _json(asdict(cls.Config()))
        base = now
        if name in kept:
            old = recorded.get("teacher_options", {}).get(name)
            old = {**now, **getattr(cls, "legacy_defaults", {})} if old is None else old
            base = {k: old.get(k, v) for k, v in now.items()}
        given = {k: v for k, v in grid.teacher_configs.get(name, {}).items() if k != ENV_KEY}
        out[name] = {**base, **_json(given)}
    return out


def unit_config(grid: Grid, name: str) -> dict[str, Any]:
    """The options `name`'s units are built with: its config, plus every recorded option whose
    value is not the default now (:func:`resolve_options`)."""
    now = _json(asdict(teacher_class(name).Config()))
    kept = {k: v for k, v in grid.teacher_options.get(name, {}).items() if now.get(k) != v}
    return {**kept, **grid.teacher_configs.get(name, {})}


def _json(value: Any) -> Any:
    """`value` as config.json holds it (tuples as lists, objects as strings)."""
    return json.loads(json.dumps(value, default=str))


def build_teacher(name: str, config: dict[str, Any], seed: int) -> Teacher:
    """A fresh teacher; a constructor ``seed`` (e.g. the random teacher's) follows the unit's."""
    config = {k: v for k, v in config.items() if k != ENV_KEY}
    if "seed" in {f.name for f in fields(teacher_class(name).Config)}:
        config.setdefault("seed", seed)
    return make_teacher(name, **config)


def run_unit(
    grid: Grid, teacher_name: str, budget: int, seed: int, *, progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, Teacher]:
    """Fit one teacher and teach its students; returns (records, coeffs, fitted teacher)."""
    teacher = build_teacher(teacher_name, unit_config(grid, teacher_name), seed)
    spec = grid.spec_of(teacher_name)
    start = time.perf_counter()
    with tqdm(
        total=budget, desc=f"fit {teacher_name}", unit="step", leave=False, disable=not progress
    ) as bar:

        def advance(row: dict) -> None:
            """Teachers call back once per update with a log row; show the steps spent."""
            spent = _number(row.get("student_steps"))
            if spent is not None:
                bar.update(min(spent, budget) - bar.n)

        report = teacher.fit(spec, budget, seed=seed, callback=advance)
    fit_wall = time.perf_counter() - start
    student_seeds = [grid.student_seed(seed, j) for j in range(grid.students_per_seed)]
    if (
        grid.batched_teaching
        and len(student_seeds) > 1
        and grid.checkpoint == "last"
        and batchable(teacher, spec)
    ):
        results = teach_batch(teacher, spec, student_seeds)
    else:
        results = [
            teacher.teach(spec, seed=s, checkpoint=grid.checkpoint, checks=grid.checks)
            for s in student_seeds
        ]
    meta = {
        "teacher": teacher_name,
        "student": grid.spec.student,
        "dataset": dataset_label(grid.spec.dataset),
        "loss": teacher.spec_for(spec).loss,
        "budget": budget,
        "seed": seed,
    }
    rows = fit_rows(report, fit_wall) + search_rows(grid, teacher_name, teacher, spec)
    rows += [r for j, res in enumerate(results) for r in episode_rows(res, j)]
    for r in rows:
        r.update(meta, budget_used=report.student_steps)
    coeff_rows = [r for j, res in enumerate(results) for r in coefficient_rows(res, j)]
    for r in coeff_rows:
        r.update(meta)
    return tidy(rows), tidy(coeff_rows, COEFF_COLUMNS), teacher


def search_rows(
    grid: Grid, name: str, teacher: Teacher, spec: TeachingSpec
) -> list[dict[str, Any]]:
    """The student lr the unit's students trained at and, when it was searched, the search's
    cost (student-step equivalents; the same number in every unit of the teacher: it is paid
    once per teacher, not per unit)."""
    lr = teacher.spec_for(spec).lr
    rows = [_row("fit", -1, None, "student_lr", lr, None)]
    if name in grid.search_cost:
        rows.append(_row("fit", -1, None, "lr_search_student_steps", grid.search_cost[name], None))
    return rows


def choose_lrs(grid: Grid, root: str | Path, *, progress: bool = True) -> Grid:
    """The protocol step before any unit: each teacher in ``grid.lr_grids`` gets its student lr
    (and, learning on the bilinear family, its start) chosen on select, once per teacher, each
    trial cached under ``root/selection/<teacher>/`` so a resumed run repeats none. Returns the
    grid with ``tuned`` and ``search_cost`` filled, and rewrites config.json with them."""
    if not grid.lr_grids:
        return grid
    root = Path(root)
    tuned, cost = {}, {}
    for name in grid.teachers:
        if name not in grid.lr_grids:
            continue
        folder = search_folder(grid, name)
        chosen = search_teacher(grid, name, root / "selection" / folder)
        tuned[name], cost[name] = chosen.chosen, chosen.student_steps
        _write_selection(root / "selection" / f"{name}.json", name, chosen, folder)
        if progress:
            tqdm.write(f"{name}: chose {chosen.chosen} on select ({chosen.student_steps:,} steps)")
    grid = replace(grid, tuned=tuned, search_cost=cost)
    RecordStore(root).open(grid.to_config(), defaults=Grid(teachers=grid.teachers).to_config())
    return grid


def search_folder(grid: Grid, name: str) -> str:
    """Where `name`'s lr-search trials are cached (``selection/<folder>/``). A learned teacher's
    search scores its starting point (its frozen start on its family, under its env changes),
    not its estimator, policy or other fitting options, so learned teachers that start alike
    share one search: the folder of the first of them in the grid (``l2t-dlf@pes`` shares
    ``l2t-dlf``'s; ``ppo`` shares ``reinforce``'s; ``l2t-dlf@compact``, at the family's default,
    does not share the RL teachers', at its centre). Every teacher that learns nothing is
    scored as itself."""
    if not learns(name):
        return name
    key = _start_key(grid, name)
    return next(t for t in grid.teachers if learns(t) and _start_key(grid, t) == key)


def _start_key(grid: Grid, name: str) -> tuple[str, str, str]:
    """(the family a learned teacher starts on, its env changes, where on the family it starts):
    what its lr search scores. On the bilinear family with starts to choose every learned
    teacher is scored at the same grid of starts; elsewhere at its own frozen start (the family's
    default, or e.g. the box's centre for the RL teachers), which is part of the key."""
    env = grid.env_of(name)
    teacher = build_teacher(name, grid.teacher_configs.get(name, {}), seed=0)
    family = teacher.spec_for(env).loss
    changes = grid.teacher_configs.get(name, {}).get(ENV_KEY, {})
    start = teacher.frozen_start()
    where = "" if family == "bilinear" and grid.starts else type(start).__name__ if start else ""
    return family, json.dumps(changes, sort_keys=True), where


def search_teacher(grid: Grid, name: str, cache: Path) -> Selection:
    """One teacher's search on select. A teacher that learns nothing in its fit (fixed losses,
    ce+meta, oracle, l2rw, mw-net, random) is scored as it teaches; a learned teacher at its family's
    starting action: on the bilinear family (l2t-dlf) the start and lr jointly over
    ``grid.starts`` x its grid, otherwise its :meth:`~teachers.base.Teacher.frozen_start`
    (L2T-DLN's warm-start loss; by default its family's default action, a FixedTeacher)."""
    lrs = grid.lr_grids[name]
    seeds = tuple(2**31 - 1 - i for i in range(grid.selection_students))
    trial = cached_trial(cache)
    teacher = build_teacher(name, grid.teacher_configs.get(name, {}), seed=0)
    env = grid.env_of(name)
    if not learns(name):
        return search_lr(teacher, env, lrs, seeds, trial=trial)
    own = teacher.spec_for(env)
    if own.loss == "bilinear" and grid.starts:
        base = env.replace(loss="bilinear", loss_kwargs={})
        return choose_start_and_lr(
            base, {"start": list(grid.starts), "lr": list(lrs)}, seeds, trial=trial
        )
    start = teacher.frozen_start() or FixedTeacher(family=own.loss)
    return search_lr(start, own, lrs, seeds, trial=trial)


def learns(name: str) -> bool:
    """Whether teacher `name` learns in its fit (declares updates); one that does not is
    scored as itself in the lr search, and its ``lr`` option is the student's."""
    return teacher_class(name).next_update is not Teacher.next_update


def cached_trial(folder: Path) -> Callable[..., Trial]:
    """analysis.selection's trial, stored once per candidate in `folder` (written through a
    rename, so a kill leaves it whole or absent) and read back on a resumed run."""
    import json

    from analysis import selection

    def trial(teacher: Teacher, spec: TeachingSpec, changes: dict, seeds: Sequence[int]) -> Trial:
        key = "_".join(f"{k}={changes[k]}" for k in sorted(changes))
        path = folder / f"{key}.json"
        if path.exists():
            d = json.loads(path.read_text())
            if d["seeds"] == list(seeds):
                return Trial(d["changes"], tuple(d["errors"]), d["student_steps"])
        t = selection.evaluate_trial(teacher, spec, changes, seeds)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        body = {**asdict(t), "seeds": list(seeds)}
        tmp.write_text(json.dumps(body, default=float))
        tmp.replace(path)
        return t

    return trial


def _write_selection(path: Path, name: str, chosen: Selection, folder: str) -> None:
    """``selection/<teacher>.json``: the choice, its trials and the folder its trials are
    cached in (``searched_in``: teachers that share one search name the same folder, so a
    report counts its cost once)."""
    import json

    body = {
        "teacher": name,
        "searched_in": folder,
        "chosen": chosen.chosen,
        "split": chosen.split,
        "seeds": list(chosen.seeds),
        "student_steps": chosen.student_steps,
        "trials": chosen.rows(),
    }
    path.write_text(json.dumps(body, indent=1, default=float))


def fit_rows(report: FitReport, wall_time: float) -> list[dict[str, Any]]:
    """The teacher's fit log (one row per update, every numeric entry a metric) and its totals."""
    rows = []
    for i, entry in enumerate(report.log):
        step = _number(entry.get("student_steps"))
        wall = _number(entry.get("wall_time"))
        episode = int(entry.get("episode", i))
        for key, value in entry.items():
            v = _number(value)
            if key not in _FIT_KEYS and v is not None:
                rows.append(_row("fit", episode, step, key, v, wall))
    totals = {
        "fit_student_steps": report.student_steps,
        "fit_episodes": report.episodes,
        "fit_wall_time": wall_time,
    }
    for key, value in totals.items():
        rows.append(_row("fit", -1, report.student_steps, key, value, wall_time))
    return rows


def episode_rows(result: EpisodeResult, episode: int) -> list[dict[str, Any]]:
    """Per env step: every numeric info metric and coefficient summaries; then the final metrics."""
    rows = []
    for info in result.steps:
        step = info["student_steps"]
        for key, value in info.items():
            v = _number(value)
            if key not in _STEP_KEYS and v is not None:
                rows.append(_row("teach", episode, step, key, v, math.nan, result.seed))
    for t, c in enumerate(result.coeffs):
        start = result.steps[t]["student_steps"]  # coefficients in force from this step on
        c = np.asarray(c, dtype=np.float64)
        rows.append(
            _row("teach", episode, start, "coeff_mean", float(c.mean()), math.nan, result.seed)
        )
        rows.append(
            _row("teach", episode, start, "coeff_std", float(c.std()), math.nan, result.seed)
        )
    final = result.final
    for key, value in final.items():
        v = _number(value)
        if key not in {"student_steps", "wall_time"} and v is not None:
            rows.append(
                _row(
                    "final",
                    episode,
                    final["student_steps"],
                    key,
                    v,
                    final["wall_time"],
                    result.seed,
                )
            )
    rows.append(
        _row(
            "final",
            episode,
            final["student_steps"],
            "teach_wall_time",
            final["wall_time"],
            final["wall_time"],
            result.seed,
        )
    )
    return rows


def coefficient_rows(result: EpisodeResult, episode: int) -> list[dict[str, Any]]:
    """Each coefficient of each action, one row each (skipped for families above MAX_COEFF_DIM)."""
    rows = []
    for t, c in enumerate(result.coeffs):
        c = np.asarray(c).ravel()
        if c.size > MAX_COEFF_DIM:
            return []
        start = result.steps[t]["student_steps"]
        rows += [
            {
                "student_seed": result.seed,
                "episode": episode,
                "t": t + 1,
                "step": start,
                "index": i,
                "value": float(v),
            }
            for i, v in enumerate(c)
        ]
    return rows


def prepare(grid: Grid, out: str | Path, *, download: bool = False) -> RecordStore:
    """Everything that can fail on bad input, before any long work: teachers importable and
    constructible with their configs, the dataset present (fetched once with `download`), the env
    buildable, `out` compatible with the records already there."""
    broken = check_teachers_importable(grid.teachers)
    if broken:
        lines = "\n".join(f"  {k}: {v}" for k, v in broken.items())
        raise ValueError(f"these teachers are registered but cannot be loaded:\n{lines}")
    for name in grid.teachers:
        try:
            build_teacher(name, grid.teacher_configs.get(name, {}), seed=0)
        except (TypeError, ValueError) as err:
            raise ValueError(f"teacher {name!r} rejects its config: {err}") from err
    grid.spec.make_env(download=download)
    store = RecordStore(out)
    recorded = Path(out) / "config.json"
    old = json.loads(recorded.read_text()) if recorded.exists() else None
    if old is not None:  # a resume teaches as the directory was made (before the setting: singly)
        grid.batched_teaching = bool(old.get("batched_teaching", False))
    grid.teacher_options = resolve_options(grid, old)  # and fits with the defaults it was made with
    store.open(grid.to_config(), defaults=Grid(teachers=grid.teachers).to_config())
    return store


def run_pending(
    grid: Grid,
    store: RecordStore,
    *,
    progress: bool = True,
    workers: int = 1,
    threads: int = 1,
) -> RecordStore:
    """Run every unit not already complete in `store`, writing each as it finishes.

    Units are independent, so ``workers > 1`` runs them in that many processes (spawned, each
    with `threads` torch threads); each worker writes its own unit files, so resuming works the
    same. Results do not depend on `workers`: a unit's seeds fix everything it computes.
    ``analysis.ray_backend.run_pending_ray`` runs them as Ray tasks instead.
    """
    units = grid.units()
    todo = [u for u in units if not store.is_complete(unit_id(*u))]
    bar = tqdm(total=len(todo), desc="units", unit="unit", disable=not progress)
    if len(todo) < len(units) and progress:
        bar.write(f"resuming {store.root}: {len(units) - len(todo)} unit(s) already complete")
    if workers <= 1 or len(todo) <= 1:
        for unit in todo:
            bar.set_postfix_str(unit_id(*unit))
            _named(complete_unit, grid, store.root, unit, unit=unit, progress=progress)
            bar.update()
    else:
        spawn = multiprocessing.get_context("spawn")  # no fork of a process that holds torch
        pool = ProcessPoolExecutor(
            workers,
            mp_context=spawn,
            initializer=_init_quiet_worker,  # the parent's threads and deterministic kernels
            initargs=(threads, torch.are_deterministic_algorithms_enabled()),
        )
        try:
            futures = {pool.submit(complete_unit, grid, store.root, u): u for u in todo}
            for future in as_completed(futures):
                _named(future.result, unit=futures[future])
                bar.set_postfix_str(unit_id(*futures[future]))
                bar.update()
        except KeyboardInterrupt:  # the parent alone hears Ctrl-C: it stops the units in flight
            _stop_workers(pool)
            bar.close()
            raise
        finally:  # on an error or Ctrl-C, do not start the queued units
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return store


def _init_quiet_worker(threads: int, deterministic: bool) -> None:
    """A worker ignores SIGINT: Ctrl-C reaches the whole process group, and N workers each
    printing a KeyboardInterrupt traceback buried the one line that matters. The parent stops
    them (:func:`_stop_workers`); a unit in flight is lost whole, never half written, because
    records are written through a temporary name and a rename."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore, tracked in a spawned process: a worker
    # stopped mid-unit would leave it behind ("leaked semaphore objects" at exit). Bars in a
    # worker are drawn by its one thread, so a thread lock does.
    tqdm.set_lock(threading.RLock())
    init_worker(threads, deterministic)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's worker processes now rather than wait for their units to finish
    (the executor has no public call for it)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            process.terminate()


def complete_unit(
    grid: Grid, root: str | Path, unit: tuple[str, int, int], *, progress: bool = False
) -> str:
    """Run one unit and write it (teacher file, coefficients, then records: the done-marker)."""
    store = RecordStore(root)
    uid = unit_id(*unit)
    start = time.perf_counter()
    records, coeffs, teacher = run_unit(grid, *unit, progress=progress)
    meta = unit_meta(time.perf_counter() - start)
    if grid.protocol:  # who made the unit, under which protocol and at which lr
        meta.update(protocol=grid.protocol, tuned=grid.tuned.get(unit[0], {}))
    teacher.save(store.teacher_path(uid))
    store.write_unit(uid, records, coeffs, meta)
    return uid


def _named(fn: Callable, *args: Any, unit: tuple[str, int, int], **kw: Any) -> Any:
    """Call `fn`; an exception says which unit failed (the rest of the grid is resumable)."""
    try:
        return fn(*args, **kw)
    except Exception as err:
        raise RuntimeError(
            f"unit {unit_id(*unit)} failed ({type(err).__name__}: {err}); units completed so far "
            f"are kept: fix the cause and re-run the same command to resume"
        ) from err


def run_grid(
    grid: Grid, out: str | Path, *, progress: bool = True, workers: int = 1
) -> RecordStore:
    """:func:`prepare`, :func:`choose_lrs`, then :func:`run_pending`: the whole comparison,
    resumable."""
    store = prepare(grid, out)
    grid = choose_lrs(grid, store.root, progress=progress)
    return run_pending(grid, store, progress=progress, workers=workers)


def _positive(what: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


def _number(value: Any) -> float | None:
    """A float for numeric values (bools included, as 0/1); None for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0:
        return float(value)  # a fit log's 0-d tensor: read once per row, outside any hot loop
    return None


def _row(
    phase: str,
    episode: int,
    step: float | None,
    metric: str,
    value: float,
    wall_time: float | None,
    student_seed: int = -1,
) -> dict[str, Any]:
    return {
        "phase": phase,
        "episode": episode,
        "step": math.nan if step is None else float(step),
        "metric": metric,
        "value": float(value),
        "wall_time": math.nan if wall_time is None else float(wall_time),
        "student_seed": student_seed,
    }
