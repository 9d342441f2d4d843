"""One interface for every teacher: fit within a budget, act on observations, save and load.

A teacher is fitted on an :class:`TeachingSpec` (how to build the environment) within a budget counted
in student-step equivalents, charged by the :class:`~envs.process.TeachingProcess` for every pass
it runs (``envs.cost``); wall time is recorded beside it. The fit loop and the episode loop live
here, once (:meth:`Teacher.fit`, :meth:`Teacher.rollout`); teachers write their decision and
their update. It then teaches fresh students with its parameters frozen
(:meth:`Teacher.teach`), one :class:`EpisodeResult` per student seed. Teachers read what the env
exposes and nothing else; the analysis suite builds on this module and nothing here imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from envs.config import EnvConfig
from envs.cost import Meter, price
from envs.loss_teaching import LossTeachingEnv
from envs.losses import unknown_name_error


@dataclass
class TeachingSpec(EnvConfig):
    """Everything needed to build a :class:`LossTeachingEnv`; the unit of equal comparison. Its
    fields and their defaults are :class:`envs.config.EnvConfig`'s (defined there, once). Not
    called EnvSpec: that is Gymnasium's registration record of an env id, a different thing."""

    @property
    def episode_steps(self) -> int:
        """Student SGD steps in one full episode."""
        return self.horizon * self.interval

    def replace(self, **changes: Any) -> TeachingSpec:
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
    def from_dict(cls, d: dict[str, Any]) -> TeachingSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"unknown TeachingSpec fields {sorted(unknown)}; known: {sorted(names)}"
            )
        return cls(**d)


@dataclass
class FitReport:
    """What fitting cost and what it logged."""

    student_steps: float = 0.0
    """student-step equivalents charged to the fit's processes (<= the budget): every pass
    they ran, priced by ``envs.cost.KINDS``"""
    cost: dict[str, float] = field(default_factory=dict)
    """the same spend by kind (train, lookahead, unroll, reverse, dev_grad, ...)"""
    wall_time: float = 0.0
    """seconds"""
    episodes: int = 0
    log: list[dict] = field(default_factory=list)
    """one row per teacher update (episode return, dev objective, ...) and one per selection
    candidate (``kind="select"``), for the records"""
    selection: dict = field(default_factory=dict)
    """the selection rule's options, candidates scored, their cost and the one kept
    (:class:`Selection`); empty for a teacher that does not select"""


@dataclass
class EpisodeResult:
    """One fresh student taught by a frozen teacher."""

    seed: int
    steps: list[dict]
    """per env step: t, student_steps, reward and the env's info metrics"""
    coeffs: list[np.ndarray]
    """the loss coefficients used at each env step"""
    final: dict
    """whole-split dev and test loss/error of the final student, diverged, wall_time, and the
    teaching cost: ``teach_cost`` (student-step equivalents the process was charged for this
    student, the teacher's look-aheads included) and ``teach_cost_ratio`` (over the episode's
    student steps: plain cross-entropy's cost, so CE is 1)"""


class Transition(NamedTuple):
    """One row of the episode loop: the observation the action was chosen on, the action
    (None on the reset row), the reward, the env's info and whether the episode ended."""

    obs: np.ndarray
    action: np.ndarray | None
    reward: float
    info: dict
    done: bool


class BatchTransition(NamedTuple):
    """One step of N students (:meth:`Teacher.rollout_batch`); arrays with a leading N."""

    obs: np.ndarray
    actions: np.ndarray | None
    rewards: np.ndarray
    infos: dict
    active: np.ndarray
    """students still in their episode when the step was taken"""
    done: np.ndarray
    """students whose episode ended at this step"""
    terminated: np.ndarray


FIT_SEED_OFFSET = 1_000_000
"""student seeds of a fit's plan start here (seed * 10_000 on top), disjoint from the small
seeds (0, 1, ...) the evaluation gives fresh students"""
HELD_OUT_OFFSET = 5_000
"""held-out students (model selection) are numbered from here within a fit's plan"""


class SeedPlan:
    """The student seeds one fit trains on, a function of the fit's `seed` alone, away from the
    small evaluation seeds; the one seed scheme of every teacher (teachers do not derive their
    own). Three forms, whichever a teacher's loop needs:

    * :meth:`nth`: ``base + i``, the i-th training student (``base = FIT_SEED_OFFSET + 10_000 *
      seed``); :meth:`students` iterates them;
    * :meth:`held_out`: ``base + HELD_OUT_OFFSET + j``, the j-th student of model selection: the
      same students at every selection, so candidates are scored on equal terms;
    * :meth:`draw`: the next seed of the stream ``numpy.random.default_rng([seed, 0x5EED])``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.base = FIT_SEED_OFFSET + 10_000 * self.seed
        self.stream = np.random.default_rng([self.seed, 0x5EED])

    def nth(self, i: int) -> int:
        return self.base + int(i)

    def students(self) -> Iterator[int]:
        return (self.nth(i) for i in itertools.count())

    def held_out(self, j: int) -> int:
        return self.base + HELD_OUT_OFFSET + int(j)

    def draw(self) -> int:
        return int(self.stream.integers(2**31 - 1))


class FitRun:
    """One call of :meth:`Teacher.fit`: the teacher's spec (after :meth:`Teacher.spec_for`),
    the checked budget, the seed plan, the processes whose counters the fit is charged from
    (:meth:`make_env`, :meth:`watch`), the report and :meth:`log`.

    The stop rule: :meth:`log` appends a row to the report, stamps its ``wall_time`` and the
    ``student_steps`` spent so far and forwards it to the user's callback; a callback that
    returns ``False`` (exactly ``False``: ``None`` goes on) stops the fit. :attr:`stopped` is then
    True and the skeleton starts no further update. Rows logged after the stop (the rest of an
    update already computed) are kept in the report but not forwarded."""

    def __init__(
        self,
        spec: TeachingSpec,
        budget: int,
        seeds: SeedPlan,
        callback: Callable[[dict], bool | None] | None,
    ) -> None:
        self.spec, self.budget, self.seeds, self.callback = spec, budget, seeds, callback
        self.seed = seeds.seed
        self.report = FitReport()
        self.stopped = False
        self.start = time.perf_counter()
        self.slack = 1e-9 * max(1, budget)
        """prices such as 2.2 are not exact in binary: sums may pass the budget by a hair"""
        self._meters: list[tuple[Meter, dict[str, float]]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    # -- the counter --------------------------------------------------------------------------
    def watch(self, process) -> None:
        """Charge this fit with everything `process` (its ``cost`` Meter) runs from now on."""
        self._meters.append((process.cost, process.cost.by_kind()))

    def make_env(self, **overrides: Any) -> LossTeachingEnv:
        """The fit's env (``spec.make_env``), its process watched."""
        env = self.spec.make_env(**overrides)
        self.watch(env.unwrapped.process)
        return env

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for meter, before in self._meters:
            for kind, total in meter.by_kind().items():
                out[kind] = out.get(kind, 0.0) + total - before.get(kind, 0.0)
        return out

    @property
    def spent(self) -> float:
        """Student-step equivalents charged to the watched processes since they were watched."""
        return sum(m.total - sum(before.values()) for m, before in self._meters)

    def left(self) -> float:
        """What is left of the budget (up to :attr:`slack`)."""
        return self.budget - self.spent + self.slack

    def log(self, row: dict) -> bool:
        """Record `row` and forward it to the callback; False once the fit must stop."""
        row["student_steps"] = self.spent
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


@dataclass
class SelectOptions:
    """How every learning teacher is chosen among snapshots of its own fit, on dev's ``select``
    part (:class:`Selection`): a teacher's Config inherits these fields, so the defaults are the
    same for every teacher and ``--teacher-config`` sets them like any option. Why: a fit can
    make a teacher worse (L2T-DLN fits whose own dev loss flagged them ended at >= 14 % error),
    and a fair contest gives every teacher the same chance to keep its best state."""

    select_every: float = 0.2
    """a candidate each time the fit has spent another this fraction of its budget (selections
    included), so every teacher gets about the same candidates whatever its update costs; plus
    the untrained teacher before the first update and the last one after the last"""
    select_every_updates: int | None = None
    """instead: a candidate every this many updates (L2T-DLF's old rule: 5 episodes)"""
    select_seeds: int = 2
    """held-out students (``SeedPlan.held_out``) taught by each candidate, frozen, and scored
    by their mean error on dev's ``select`` part (a diverged student scores 1.0); 0 = no
    selection: the fit keeps its last state and spends nothing on candidates"""


def check_select_options(options: SelectOptions) -> None:
    every, updates, seeds = (
        options.select_every,
        options.select_every_updates,
        options.select_seeds,
    )
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not 0 < every <= 1:
        raise ValueError(
            f"select_every is a fraction of the budget in (0, 1], got {every!r} (a candidate "
            f"every N updates: select_every_updates=N)"
        )
    if updates is not None and (
        isinstance(updates, bool) or not isinstance(updates, int) or updates < 1
    ):
        raise ValueError(f"select_every_updates must be None or an int >= 1, got {updates!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 0:
        raise ValueError(f"select_seeds must be an int >= 0 (0: no selection), got {seeds!r}")


class Selection:
    """The selection rule of :meth:`Teacher.fit`, one for every learning teacher (a teacher
    whose Config is a :class:`SelectOptions`). Before the first update and then every
    ``select_every`` of the budget (or ``select_every_updates`` updates), and once more after
    the last update if it was not scored, it snapshots the teacher (``state_dict``, deep-copied),
    teaches the plan's held-out students with a fresh teacher loaded from the snapshot (the fit's
    own state is not touched: L2T-DLN's bound student and memory, an optimiser, a vector env),
    and scores them on dev's ``select`` part, never test. A candidate is scored only if its
    declared cost (``select_seeds`` x :meth:`Teacher.student_cost`) fits in what is left, and
    updates stop early enough for the last one (:meth:`reserve`); the selection students are
    charged like every pass, by the process of the selection env. At
    the end the best snapshot (lowest mean select error, then loss; the earliest on ties) is
    loaded into the teacher; with no candidate scored (a budget below one selection) the
    teacher stays as its fit left it."""

    def __init__(self, teacher: Teacher, run: FitRun) -> None:
        opts: SelectOptions = teacher.cfg
        self.teacher, self.run = teacher, run
        self.every, self.every_updates = float(opts.select_every), opts.select_every_updates
        self.seeds = [run.seeds.held_out(j) for j in range(opts.select_seeds)]
        self.cost = len(self.seeds) * teacher.student_cost(run)
        self.updates = 0
        self.scored_updates: int | None = None
        self.next_point = self.every * run.budget
        self.best: tuple[tuple[float, float], dict, dict] | None = None
        self.candidates = 0
        self.spent = 0.0
        self.env = None

    @classmethod
    def of(cls, teacher: Teacher, run: FitRun) -> Selection | None:
        selects = isinstance(teacher.cfg, SelectOptions) and teacher.cfg.select_seeds > 0
        return cls(teacher, run) if selects else None

    def options(self) -> dict[str, Any]:
        return {
            "select_every": self.every,
            "select_every_updates": self.every_updates,
            "select_seeds": len(self.seeds),
        }

    def reserve(self) -> float:
        """Budget an update must leave for the last candidate: with ``select_every``, once a
        candidate has been scored (so one fits), the teacher as its last update leaves it is
        always scored; with ``select_every_updates`` (L2T-DLF's old rule) nothing is reserved
        and the last candidate is scored only if it still fits."""
        return self.cost if self.every_updates is None and self.candidates else 0.0

    def after_update(self) -> None:
        """Count the update; score the teacher if a selection point was reached."""
        self.updates += 1
        if self.every_updates is not None:
            due = self.updates % self.every_updates == 0
        else:
            due = self.run.spent >= self.next_point
        if due:
            self.score()

    def score(self) -> None:
        """Snapshot the teacher and score it, if its selection students fit in the budget."""
        run = self.run
        if run.stopped or self.cost > run.left():
            return
        snapshot = copy.deepcopy(self.teacher.state_dict())
        candidate = type(self.teacher)(self.teacher.cfg)
        candidate.load_state_dict(copy.deepcopy(snapshot))
        if self.env is None:
            self.env = run.make_env()  # watched: the selection students are charged
        before = run.spent
        errors, losses = self.score_students(candidate)
        spent = run.spent - before
        if spent > self.cost + run.slack:  # a teacher's bug: student_cost under-declares
            raise RuntimeError(
                f"{type(self.teacher).__name__}'s selection students cost {spent:g} student-step "
                f"equivalents, over the {self.cost:g} it declared (Teacher.student_cost)"
            )
        while self.next_point <= run.spent + run.slack:  # points passed (by the update or by
            self.next_point += self.every * run.budget  # these students): the next one ahead
        self.spent += spent
        self.candidates += 1
        self.scored_updates = self.updates
        key = (float(np.mean(errors)), float(np.mean(losses)))
        row = {
            "kind": "select",
            "updates": self.updates,
            "select_error": key[0],
            "select_loss": key[1],
            "dev_error": key[0],  # the older name of the same numbers (dev = its select part)
            "dev_loss": key[1],
            "diverged_students": sum(math.isinf(loss) for loss in losses),
            "select_cost": spent,
            **self.options(),
        }
        if self.best is None or key < self.best[0]:
            self.best = (key, snapshot, row)
            row["best"] = True
        row["best_select_error"] = self.best[0][0]
        run.log(row)

    def score_students(self, candidate: Teacher) -> tuple[list[float], list[float]]:
        """(select error, select loss) of each held-out student `candidate` teaches, frozen,
        through the episode loop (:meth:`Teacher.rollout`: a teacher that reads its bound
        student, L2T-DLN, is bound by ``begin_episode``); a diverged student scores 1.0."""
        proc = self.env.unwrapped.process
        errors, losses = [], []
        for seed in self.seeds:
            for step in candidate.rollout(self.env, seed):
                info = step.info
            m = proc.evaluate("select")  # dev's held-out part; never test
            errors.append(1.0 if info["diverged"] else m["error"])
            losses.append(math.inf if info["diverged"] else m["loss"])
        return errors, losses

    def last(self) -> None:
        """Score the teacher as its last update left it, unless it was scored already."""
        if self.updates and self.scored_updates != self.updates:
            self.score()

    def keep_best(self) -> None:
        """Load the best snapshot into the teacher; record the rule in the report."""
        teacher, run = self.teacher, self.run
        kept = None
        if self.best is not None:
            teacher.load_state_dict(copy.deepcopy(self.best[1]))
            kept = self.best[2]
        teacher.best_dev_error = None if kept is None else kept["select_error"]
        self.env = None
        run.report.selection = {
            **self.options(),
            "candidates": self.candidates,
            "cost": self.spent,
            "best_updates": None if kept is None else kept["updates"],
            "best_select_error": teacher.best_dev_error,
        }


class Teacher(ABC):
    """Base class. Subclasses set ``name`` and ``Config`` and implement :meth:`act`; learning
    teachers implement the hooks of :meth:`fit` (:meth:`setup`, :meth:`next_update`, :meth:`update`,
    :meth:`finish`) and :meth:`state_dict` / :meth:`load_state_dict`."""

    name: ClassVar[str] = "teacher"
    family: ClassVar[str | None] = None
    """the loss family this teacher acts on; None = the spec's"""
    is_oracle: ClassVar[bool] = False
    """a limit of the setting that reads what no teacher may (e.g. which labels were flipped),
    shown as such in tables, never as a teacher or a baseline"""
    best_dev_error: float | None = None
    """the kept candidate's mean error on dev's ``select`` part (:class:`Selection`); None when
    no candidate was scored"""
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
        if isinstance(config, SelectOptions):
            check_select_options(config)
        self.cfg = config
        self.config: dict[str, Any] = dataclasses.asdict(config)
        """the options as a dict: saved with the teacher, rebuilt by :meth:`load`"""

    # -- the interface ------------------------------------------------------------------------
    def spec_for(self, spec: TeachingSpec) -> TeachingSpec:
        """The spec this teacher runs on: the given one, with its own loss family if it has one
        (the spec's ``loss_kwargs`` belong to the spec's family and are dropped on a switch)."""
        family = self.config.get("family", self.family)
        if family is None or family == spec.loss:
            return spec
        return spec.replace(loss=family, loss_kwargs={})

    def frozen_start(self) -> Teacher | None:
        """The teacher before it has learned anything, frozen and cheap: what the lr search
        scores for a learned teacher (analysis.runner.search_teacher). None = its family's
        default action (a FixedTeacher), which is the start of every teacher that begins at
        its family's default; a teacher that starts elsewhere (L2T-DLN's warm start) says so,
        or its lr is chosen for a loss it never teaches."""
        return None

    def fit(
        self,
        spec: TeachingSpec,
        budget: int,
        *,
        seed: int = 0,
        callback: Callable[[dict], bool | None] | None = None,
    ) -> FitReport:
        """Learn within `budget` student-step equivalents, charged from the counters of the
        processes the fit runs (``envs.cost``), on students of ``SeedPlan(seed)``.
        `callback(row)` sees every log row (one per teacher update); returning False stops the
        fit after that update (:class:`FitRun`).

        The loop every teacher runs (SB3's ``learn``): :meth:`setup`, then while the teacher
        declares a next update (:meth:`next_update`: its cost) that fits in what is left of the
        budget, :meth:`update` and log its rows; then :meth:`finish`. A teacher decides and
        learns; the loop, the budget, the seeds, the timing and the logging are here, and so is
        the choice of the fitted teacher among snapshots of its fit on dev's ``select`` part
        (:class:`Selection`, for a teacher whose Config is a :class:`SelectOptions`): its
        candidates are scored between updates, charged to the same budget, and the best one is
        what the fit returns."""
        run = FitRun(self.spec_for(spec), check_budget(budget), SeedPlan(seed), callback)
        self.setup(run)
        selection = Selection.of(self, run)
        if selection is not None:
            selection.score()  # the untrained teacher is a candidate
        while not run.stopped:
            cost = self.next_update(run)
            reserve = 0.0 if selection is None else selection.reserve()
            if cost is None or cost + reserve > run.left():
                break
            for row in self.update(run):
                run.log(row)
            if selection is not None:
                selection.after_update()
        if selection is not None:
            selection.last()
        self.finish(run)
        if selection is not None:
            selection.keep_best()
        report = run.report
        report.student_steps, report.cost = run.spent, run.by_kind()
        if report.student_steps > run.budget + run.slack:  # a teacher's bug: it under-declared
            raise RuntimeError(
                f"{type(self).__name__} spent {report.student_steps:g} student-step equivalents "
                f"({report.cost}), over its budget of {run.budget}"
            )
        report.wall_time = run.elapsed()
        return report

    def setup(self, run: FitRun) -> None:
        """Build what the fit needs (envs through ``run.make_env``, networks, optimisers)."""

    def next_update(self, run: FitRun) -> float | None:
        """The cost (student-step equivalents) of the next :meth:`update` as it will be run
        with ``run.left()`` remaining, or None when there is nothing more to do. The skeleton
        runs it only if it fits, so a fit never overshoots. Fixed teachers learn nothing."""
        return None

    def update(self, run: FitRun) -> list[dict]:
        """One update: collect (through :meth:`rollout` / :meth:`rollout_batch`) and learn;
        returns the rows to log."""
        raise NotImplementedError(f"{type(self).__name__} declares an update it does not define")

    def finish(self, run: FitRun) -> None:
        """After the last update and the last selection candidate (e.g. drop the fit's envs);
        the skeleton then loads the best candidate (:class:`Selection`)."""

    def selection_budget(self, run: FitRun) -> float:
        """What the skeleton's selection is expected to spend on this fit: the untrained
        candidate, one per ``select_every`` of the budget and the last (with
        ``select_every_updates``, the first only), each ``select_seeds`` students; for a teacher
        that sizes its updates from the budget (SB3's rollouts)."""
        cfg = self.cfg
        if not isinstance(cfg, SelectOptions) or cfg.select_seeds == 0:
            return 0.0
        candidates = 1 if cfg.select_every_updates else math.ceil(1 / cfg.select_every - 1e-9) + 1
        return candidates * cfg.select_seeds * self.student_cost(run)

    def student_cost(self, run: FitRun) -> float:
        """What teaching one student with this teacher frozen is charged, in student-step
        equivalents: the declared cost of a selection student (:class:`Selection`). An
        episode's training steps, unless :meth:`act` runs passes of its own (L2T-DLN)."""
        return price("train", run.spec.episode_steps)

    @abstractmethod
    def act(self, observation: np.ndarray) -> np.ndarray:
        """An action in [-1, 1]^d for the current observation."""

    def begin_episode(self, env: LossTeachingEnv) -> None:
        """Called after each reset of a taught episode; stateful teachers reset memory here."""

    # -- the episode loop ---------------------------------------------------------------------
    def rollout(
        self,
        env: LossTeachingEnv,
        seed: int,
        decide: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Iterator[Transition]:
        """The episode loop: a fresh student (seed `seed`), then act and step until the episode
        ends. Yields the reset row (action None) and one :class:`Transition` per env step.
        `decide(obs)` chooses the actions (default :meth:`act`: the teacher as it is; a fit
        passes its exploring or differentiable decision). Lazy: each step runs when the next
        row is asked for, so a caller may wrap steps in ``process.recording``."""
        decide = decide or self.act
        obs, info = env.reset(seed=seed)
        self.begin_episode(env)
        yield Transition(obs, None, 0.0, info, False)
        done = False
        while not done:
            action = decide(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            yield Transition(obs, action, reward, info, done)
            obs = next_obs

    def episodes(
        self,
        env: LossTeachingEnv,
        seeds: Iterable[int],
        decide: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Iterator[Transition]:
        """:meth:`rollout` over one student per seed, one episode after another."""
        for seed in seeds:
            yield from self.rollout(env, seed, decide)

    def rollout_batch(
        self,
        venv,
        seeds: Sequence[int],
        decide: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> Iterator[BatchTransition]:
        """The episode loop for N students of a vector env (envs/vector.py) at once, one episode
        each. `decide(obs, active)` gives (N, d) actions (default: :meth:`act` per active
        student, the family's default for the finished ones, whose actions are ignored while
        they wait). Yields the reset row, then a :class:`BatchTransition` per env step, before
        the next step (which would autoreset the students that just finished)."""
        n = len(seeds)
        default = venv.family.default_action()

        def act_each(obs: np.ndarray, active: np.ndarray) -> np.ndarray:
            return np.stack([self.act(obs[i]) if active[i] else default for i in range(n)])

        decide = decide or act_each
        obs, infos = venv.reset(seed=[int(s) for s in seeds])
        active = np.ones(n, dtype=bool)
        none = np.zeros(n, dtype=bool)
        yield BatchTransition(obs, None, np.zeros(n), infos, active.copy(), none, none)
        while active.any():
            actions = decide(obs, active)
            next_obs, rewards, terminated, truncated, infos = venv.step(actions)
            done = active & (terminated | truncated)
            yield BatchTransition(obs, actions, rewards, infos, active.copy(), done, terminated)
            active &= ~done
            obs = next_obs

    def teach(
        self,
        spec: TeachingSpec,
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
        meter = proc.cost
        start, spent = time.perf_counter(), meter.total
        rows, coeffs, info = [], [], {}
        best: tuple[float, Any] = (math.inf, None)
        for t, step in enumerate(self.rollout(env, seed)):
            if step.action is not None:
                coeffs.append(family.action_to_coeffs(step.action).numpy().astype(np.float32))
            info = step.info
            rows.append({"t": t, "reward": step.reward, **info})
            if t in at and not info["diverged"]:  # a diverged run keeps its best check so far
                error = proc.evaluate("select")["error"]
                if error < best[0]:
                    best = (error, proc.state.clone())
        cost = teaching_cost(meter.total - spent, proc.step)  # the whole episode, as CE's
        if best[1] is not None:
            proc.restore(best[1])
        final = final_metrics(env, start, info["diverged"])
        final.update(cost)
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
        config = dict(blob["config"])
        if "select_every" in config and "select_every_updates" not in config:
            # saved before the common selection (SelectOptions): L2T-DLF's select_every counted
            # episodes, which is select_every_updates now
            config["select_every_updates"] = config.pop("select_every")
        teacher = make_teacher(blob["name"], **config)
        teacher.load_state_dict(blob["state"])
        return teacher

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


CHECKPOINTS = ("last", "best-select")
"""which state of a taught student is reported (:meth:`Teacher.teach`)"""


def check_budget(budget: int) -> int:
    if not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(
            f"budget must be a non-negative number of student-step equivalents, got {budget!r}"
        )
    return int(budget)


REPORTED_SPLITS = {"dev": "select", "test": "test"}
"""record name -> process split of the final metrics: the records' ``dev_loss`` / ``dev_error``
are on dev's ``select`` part, which no teacher's training signal reads (the ``meta`` part may
have been learned from, so an error on it would flatter the teachers that did)"""


def teaching_cost(cost: float, student_steps: int) -> dict[str, float]:
    """A taught student's cost in student-step equivalents and its ratio to plain
    cross-entropy's, which is the episode's student steps (CE: 1.0)."""
    return {"teach_cost": cost, "teach_cost_ratio": cost / student_steps if student_steps else 0.0}


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
