"""One interface for every teacher: fit within a budget, act on observations, save and load.

A teacher is fitted on an :class:`EnvSpec` (how to build the environment) within a budget counted
in student SGD steps, the unit the :class:`~envs.process.TeachingProcess` counts; wall time is
recorded beside it. It then teaches fresh students with its parameters frozen
(:meth:`Teacher.teach`), one :class:`EpisodeResult` per student seed. Teachers read what the env
exposes and nothing else; the analysis suite builds on this module and nothing here imports it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from envs.config import EnvConfig
from envs.loss_teaching import LossTeachingEnv
from envs.losses import unknown_name_error


@dataclass
class EnvSpec(EnvConfig):
    """Everything needed to build a :class:`LossTeachingEnv`; the unit of equal comparison. Its
    fields and their defaults are :class:`envs.config.EnvConfig`'s (defined there, once)."""

    @property
    def episode_steps(self) -> int:
        """Student SGD steps in one full episode."""
        return self.horizon * self.interval

    def replace(self, **changes: Any) -> EnvSpec:
        return dataclasses.replace(self, **changes)

    def make_env(self, **overrides: Any) -> LossTeachingEnv:
        kwargs = {**self.to_dict(), **overrides}
        return LossTeachingEnv(
            kwargs.pop("dataset"), kwargs.pop("student"), kwargs.pop("loss"), **kwargs
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field; in-memory Splits stay the object itself (asdict would turn the dataclass
        into a dict of tensors, which no loader accepts)."""
        out = dataclasses.asdict(self.replace(dataset="mnist5k"))
        out["dataset"] = self.dataset
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnvSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown EnvSpec fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


@dataclass
class FitReport:
    """What fitting cost and what it logged."""

    student_steps: int = 0
    """student SGD steps spent (<= the budget)"""
    wall_time: float = 0.0
    """seconds"""
    episodes: int = 0
    log: list[dict] = field(default_factory=list)
    """one row per teacher update (episode return, dev objective, ...), for the records"""


@dataclass
class EpisodeResult:
    """One fresh student taught by a frozen teacher."""

    seed: int
    steps: list[dict]
    """per env step: t, student_steps, reward and the env's info metrics"""
    coeffs: list[np.ndarray]
    """the loss coefficients used at each env step"""
    final: dict
    """whole-split dev and test loss/error of the final student, diverged, wall_time"""


FIT_SEED_OFFSET = 1_000_000
"""student seeds of a fit's plan start here (seed * 10_000 on top), disjoint from the small
seeds (0, 1, ...) the evaluation gives fresh students"""


class SeedPlan:
    """The student seeds one fit trains on, a function of the fit's `seed` alone, away from the
    small evaluation seeds. Two forms, whichever a teacher's loop needs:

    * :meth:`nth`: ``base + i``, the i-th student of a numbered plan (``base`` defaults to
      ``FIT_SEED_OFFSET + 10_000 * seed``; a teacher may set its own through
      :meth:`Teacher.seed_plan`);
    * :meth:`draw`: the next seed of the stream ``numpy.random.default_rng([seed, 0x5EED])``.
    """

    def __init__(self, seed: int, base: int | None = None) -> None:
        self.seed = int(seed)
        self.base = FIT_SEED_OFFSET + 10_000 * self.seed if base is None else int(base)
        self.stream = np.random.default_rng([self.seed, 0x5EED])

    def nth(self, i: int) -> int:
        return self.base + int(i)

    def draw(self) -> int:
        return int(self.stream.integers(2**31 - 1))


class FitRun:
    """One call of :meth:`Teacher.fit`, handed to the teacher's :meth:`Teacher._fit` hook: the
    teacher's spec (after :meth:`Teacher.spec_for`), the checked budget, the seed plan, the
    report it fills (``student_steps``, ``episodes``) and :meth:`log`.

    The stop rule: :meth:`log` appends a row to the report, stamps its ``wall_time`` and forwards
    it to the user's callback; a callback that returns ``False`` (exactly ``False``: ``None``
    goes on) stops the fit. :attr:`stopped` is then True, :meth:`log` returns False, and the
    teacher starts no further update (no further student step beyond the one in progress, which
    may finish), so ``report.student_steps`` ends within one update of the row that stopped it.
    Rows logged after the stop (the rest of an update already computed) are kept in the report
    but not forwarded."""

    def __init__(
        self,
        spec: EnvSpec,
        budget: int,
        seeds: SeedPlan,
        callback: Callable[[dict], bool | None] | None,
    ) -> None:
        self.spec, self.budget, self.seeds, self.callback = spec, budget, seeds, callback
        self.seed = seeds.seed
        self.report = FitReport()
        self.stopped = False
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, row: dict) -> bool:
        """Record `row` and forward it to the callback; False once the fit must stop."""
        row["wall_time"] = self.elapsed()
        self.report.log.append(row)
        if not self.stopped and self.callback is not None and self.callback(row) is False:
            self.stopped = True
        return not self.stopped


@dataclass
class NoOptions:
    """A teacher without options."""


class UnknownOption(TypeError, ValueError):
    """An option a teacher does not have: a TypeError like Python's for an unexpected keyword,
    and a ValueError like every other bad input the command line reports in one line."""


def check_options(cls: type[Teacher], options: dict[str, Any]) -> None:
    """Raise :class:`UnknownOption` for a key of `options` that is not a field of ``cls.Config``,
    naming the teacher, the key, the teacher's options and the nearest one."""
    known = [f.name for f in dataclasses.fields(cls.Config)]
    for key in options:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            listed = ", ".join(known) if known else "none"
            raise UnknownOption(
                f"teacher {cls.name!r} has no option {key!r}; its options: {listed}.{hint}"
            )


class Teacher(ABC):
    """Base class. Subclasses set ``name`` and ``Config`` and implement :meth:`act`; learning
    teachers implement :meth:`_fit` (the hook of :meth:`fit`) and :meth:`state_dict` /
    :meth:`load_state_dict`."""

    name: ClassVar[str] = "teacher"
    family: ClassVar[str | None] = None
    """the loss family this teacher acts on; None = the spec's"""
    is_oracle: ClassVar[bool] = False
    """a limit of the setting that reads what no teacher may (e.g. which labels were flipped),
    shown as such in tables, never as a teacher or a baseline"""
    acts_on_observation: ClassVar[bool] = True
    """:meth:`act` reads only the observation, so one teacher can act for a batch of students
    (``teachers.batch_eval``); False for a teacher that reads the student it was bound to"""

    Config: ClassVar[type] = NoOptions
    """the teacher's options: a dataclass, defined at the top of the teacher's file, whose fields
    (defaults, docstrings, checks in ``__post_init__``) are the constructor's keywords and what
    ``--teacher-config`` may set"""

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        """``Teacher(Config(...))`` or ``Teacher(**options)``; an unknown option raises
        :class:`UnknownOption`, a bad value the Config's ValueError."""
        if config is None:
            check_options(type(self), options)
            config = self.Config(**options)
        elif not isinstance(config, self.Config) or options:
            raise TypeError(
                f"{type(self).__name__} takes a {self.Config.__name__} or keyword options, "
                f"got {config!r} and {options}"
            )
        self.cfg = config
        self.config: dict[str, Any] = dataclasses.asdict(config)
        """the options as a dict: saved with the teacher, rebuilt by :meth:`load`"""

    # -- the interface ------------------------------------------------------------------------
    def spec_for(self, spec: EnvSpec) -> EnvSpec:
        """The spec this teacher runs on: the given one, with its own loss family if it has one
        (the spec's ``loss_kwargs`` belong to the spec's family and are dropped on a switch)."""
        family = self.config.get("family", self.family)
        if family is None or family == spec.loss:
            return spec
        return spec.replace(loss=family, loss_kwargs={})

    def fit(
        self,
        spec: EnvSpec,
        budget: int,
        *,
        seed: int = 0,
        callback: Callable[[dict], bool | None] | None = None,
    ) -> FitReport:
        """Learn within `budget` student SGD steps, training students from :meth:`seed_plan`
        (`seed`). `callback(row)` sees every log row (one per teacher update); returning False
        stops the fit after that update (:class:`FitRun`). The skeleton for every teacher:
        budget check, :meth:`spec_for`, seed plan, timing, logging; the learning is
        :meth:`_fit`'s."""
        run = FitRun(self.spec_for(spec), check_budget(budget), self.seed_plan(seed), callback)
        self._fit(run)
        report = run.report
        if report.student_steps > run.budget:  # a teacher's bug, never a silent unequal budget
            raise RuntimeError(
                f"{type(self).__name__} spent {report.student_steps} student steps, over its "
                f"budget of {run.budget}"
            )
        report.wall_time = run.elapsed()
        return report

    def _fit(self, run: FitRun) -> None:
        """Learn on ``run.spec`` within ``run.budget`` student steps, on students of
        ``run.seeds``; fill ``run.report.student_steps`` / ``episodes``, ``run.log(row)`` each
        update and start no update once ``run.stopped``. Fixed teachers learn nothing."""

    def seed_plan(self, seed: int) -> SeedPlan:
        """The student seeds a fit with `seed` trains on."""
        return SeedPlan(seed)

    @abstractmethod
    def act(self, observation: np.ndarray) -> np.ndarray:
        """An action in [-1, 1]^d for the current observation."""

    def begin_episode(self, env: LossTeachingEnv) -> None:
        """Called after each reset of a taught episode; stateful teachers reset memory here."""

    def rollout(
        self, env: LossTeachingEnv, seed: int
    ) -> Iterator[tuple[np.ndarray | None, float, dict]]:
        """Play one episode on a fresh student (seed `seed`) with this teacher as it is: yields
        (None, 0.0, reset info), then (action, reward, info) after every env step."""
        obs, info = env.reset(seed=seed)
        self.begin_episode(env)
        yield None, 0.0, info
        done = False
        while not done:
            action = self.act(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            yield action, reward, info

    def teach(
        self,
        spec: EnvSpec,
        seed: int,
        *,
        env: LossTeachingEnv | None = None,
        checkpoint: str = "last",
        checks: int = 10,
    ) -> EpisodeResult:
        """Train one fresh student (seed `seed`) from scratch with this teacher frozen.

        ``checkpoint="last"`` reports the student as training left it; ``"best-select"`` the
        best of `checks` evenly spaced states (the last included) on dev's ``select`` error,
        as early stopping on held-out data picks, the same rule for every teacher (recorded in
        the final metrics as ``checkpoint_step`` and ``checks``)."""
        if checkpoint not in CHECKPOINTS:
            raise unknown_name_error("checkpoint", checkpoint, CHECKPOINTS)
        if isinstance(checks, bool) or not isinstance(checks, int) or checks < 1:
            raise ValueError(f"checks must be a positive number of select checks, got {checks!r}")
        env = env or self.spec_for(spec).make_env()
        family, proc = env.unwrapped.family, env.unwrapped.process
        horizon = env.unwrapped.horizon
        at = set()
        if checkpoint == "best-select":  # env steps round(i H / K), i = 1..K, K <= H
            k = min(checks, horizon)
            at = {round(i * horizon / k) for i in range(1, k + 1)}
        start = time.perf_counter()
        rows, coeffs, info = [], [], {}
        best: tuple[float, Any] = (math.inf, None)
        for t, (action, reward, info) in enumerate(self.rollout(env, seed)):
            if action is not None:
                coeffs.append(family.action_to_coeffs(action).numpy().astype(np.float32))
            rows.append({"t": t, "reward": reward, **info})
            if t in at and not info["diverged"]:  # a diverged run keeps its best check so far
                error = proc.evaluate("select")["error"]
                if error < best[0]:
                    best = (error, proc.state.clone())
        if best[1] is not None:
            proc.restore(best[1])
        final = final_metrics(env, start, info["diverged"])
        if checkpoint == "best-select":
            final.update(checkpoint_step=proc.step, checks=len(at))
        return EpisodeResult(seed, rows, coeffs, final)

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"name": self.name, "config": self.config, "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> Teacher:
        """Rebuild a saved teacher; works from the base class or the right subclass."""
        from teachers.registry import make_teacher

        blob = torch.load(Path(path), map_location="cpu", weights_only=False)
        teacher = make_teacher(blob["name"], **blob["config"])
        teacher.load_state_dict(blob["state"])
        return teacher

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


CHECKPOINTS = ("last", "best-select")
"""which state of a taught student is reported (:meth:`Teacher.teach`)"""


def check_budget(budget: int) -> int:
    if not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(
            f"budget must be a non-negative number of student SGD steps, got {budget!r}"
        )
    return int(budget)


REPORTED_SPLITS = {"dev": "select", "test": "test"}
"""record name -> process split of the final metrics: the records' ``dev_loss`` / ``dev_error``
are on dev's ``select`` part, which no teacher's training signal reads (the ``meta`` part may
have been learned from, so an error on it would flatter the teachers that did)"""


def final_metrics(env: LossTeachingEnv, start: float, diverged: bool) -> dict:
    """Dev (its held-out ``select`` part: :data:`REPORTED_SPLITS`) and test metrics of the env's
    current student (test reported, never used), and the meta/select sizes applied."""
    proc = env.unwrapped.process
    out = {"diverged": bool(diverged), "student_steps": proc.step}
    if proc.corruption.get("train_flipped_fraction"):  # the noise actually applied, in the records
        out["train_flipped_fraction"] = proc.corruption["train_flipped_fraction"]
    out["meta_size"] = proc.meta_size
    out["select_size"] = len(proc.data.y_dev) - proc.meta_size
    for split, part in REPORTED_SPLITS.items():
        m = proc.evaluate(part)
        out[f"{split}_loss"], out[f"{split}_error"] = m["loss"], m["error"]
    out["wall_time"] = time.perf_counter() - start
    return out
