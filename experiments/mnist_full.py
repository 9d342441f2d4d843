"""Issue 10: ce, label smoothing, large-margin softmax and L2T-DLF on full MNIST, under the named
protocols of analysis/protocols.py (``paper``: MLP and LeNet; ``demo``: the official demo;
``paper-trained``, issue 21: the students trained out, and L2T-DLN too).

    OMP_NUM_THREADS=1 python experiments/mnist_full.py --data-root /work/data \
        --protocols paper,demo --out results/mnist_full

``--teachers ce,...`` limits a paper protocol's run to those teachers (a later full run reuses
their units); ``--time-one LR`` trains one CE student per student type and prints its wall time
and the load (sizing, nothing stored).

``data_root`` holds torchvision's MNIST files or ``mnist.pkl.gz`` (``l2t data fetch mnist``).

Work is split into units (a learning-rate trial, a teacher fit, a pre-trained checkpoint, one
final student), each written to ``<out>/units/<protocol>/<student>/<unit>.json`` through a
temporary name and a rename; a re-run skips finished units, so an interrupted run resumes. The
order puts complete comparisons first: per student, the learning rates, the teacher fit, then
the final students seed-major (every teacher on seed 0, then seed 1, ...). ``summary.csv`` and
``per_seed.csv`` are rebuilt from the units after every final student.

Selection uses dev only: learning rates (mean whole-dev error of the protocol's dev students;
large-margin's m with it where the plan lists margins), learned-teacher candidates, demo
checkpoints. Test error is read once per final student. Learned teachers (L2T-DLF, and L2T-DLN
where the protocol has it) are fitted once per student type on the fit skeleton's own students
(``SeedPlan(0)``), never on test or dev seeds.

L2T-DLF diagnostics (issue 10, point 5) are logged while fitting: per update the hypergradient's
norm per env step of the horizon, the sign agreement of each step's dPhi_k with their sum, the
teacher's parameter movement from its start, and the test students' coefficient schedules.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.protocols import REPORTED, Protocol, StudentPlan, get_protocol, validate  # noqa: E402
from analysis.records import RecordStore, versions  # noqa: E402
from analysis.selection import (  # noqa: E402
    SELECTION_SPLIT,
    Selection,
    Trial,
    choose_start_and_lr,
    evaluate_trial,
    search_lr,
)
from analysis.stats import holm, mean_ci, paired_difference  # noqa: E402
from envs.losses import make_loss  # noqa: E402
from envs.process import TeachingProcess  # noqa: E402
from students.data import DATASETS  # noqa: E402
from students.optim import SGDConfig  # noqa: E402
from teachers import l2t_dlf as l2t_dlf_module  # noqa: E402
from teachers import rmd  # noqa: E402
from teachers.base import Teacher, TeachingSpec  # noqa: E402
from teachers.fixed import FixedTeacher  # noqa: E402
from teachers.l2t_dlf import L2TDLFTeacher  # noqa: E402
from teachers.large_margin import LargeMarginTeacher  # noqa: E402
from teachers.registry import make_teacher  # noqa: E402

LR_LOSSES = ("ce", "label-smoothing", "large-margin")
"""fixed losses whose student lr is tuned on dev"""
START_LOSS = "bilinear-init"
"""L2T-DLF's untrained teacher: its (bilinear start, student lr) pair is chosen on dev and used
for L2T-DLF's fit and its final students"""
DLN_START = "dln-init"
"""L2T-DLN's untrained teacher (its warm-start loss, a fixed action): its lr is chosen on dev
and used for L2T-DLN's fit and its final students"""


# ------------------------------------------------------------------------------------ units


class Units:
    """One protocol x student's units in the shared record store (analysis.records.RecordStore):
    one JSON file per finished unit, ``units/<protocol>/<student>/<unit>.json``, written
    atomically; existing files are skipped (resume)."""

    def __init__(self, out: Path, protocol: Protocol, student: str) -> None:
        self.store = RecordStore(out)
        self.prefix = f"{protocol.name}/{student}"
        self.dir = self.store.units_dir / protocol.name / student
        self.dir.mkdir(parents=True, exist_ok=True)
        self.protocol = protocol
        self.student = student

    def path(self, unit: str) -> Path:
        return self.store.meta_path(f"{self.prefix}/{unit}")

    def get(self, unit: str) -> dict | None:
        return self.store.read_meta(f"{self.prefix}/{unit}")

    def put(self, unit: str, row: dict) -> dict:
        row = {
            "protocol": self.protocol.name,
            "protocol_version": self.protocol.version,
            "student": self.student,
            "unit": unit,
            **row,
        }
        row = json.loads(json.dumps(row, default=float))  # numpy scalars -> JSON numbers
        self.store.write_meta(f"{self.prefix}/{unit}", row)
        print(f"[{time.strftime('%H:%M:%S')}] {self.protocol.name}/{self.student}/{unit}: "
              + json.dumps({k: v for k, v in row.items() if not isinstance(v, (list, dict))},
                           default=float), flush=True)  # fmt: skip
        return row


# ------------------------------------------------------------------------- paper protocol


def paper_spec(p: Protocol, student: str, plan: StudentPlan, data_root: str) -> TeachingSpec:
    return TeachingSpec(
        dataset=p.dataset,
        student=student,
        horizon=plan.horizon,
        interval=plan.interval,
        batch_size=p.batch_size,
        momentum=p.momentum,
        weight_decay=p.weight_decay,
        schedule=p.schedule,
        device="cpu",
        data_root=data_root,
        student_kwargs=dict(plan.student_kwargs),
    )


def time_one(p: Protocol, student: str, data_root: str, lr: float) -> dict:
    """Sizing: one plain-CE student of the protocol (its whole run at `lr`), its wall time and
    the machine's load average (os.getloadavg) before and after, and its select / test error."""
    plan = p.students[student]
    spec = paper_spec(p, student, plan, data_root).replace(lr=lr)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    result = make_teacher("ce").teach(spec, p.seeds[0])
    row = {"protocol": p.version, "student": student, "student_kwargs": plan.student_kwargs,
           "steps": spec.episode_steps, "lr": lr, "wall_s": time.perf_counter() - t0,
           "load_before": load0, "load_after": os.getloadavg(), "cpu_count": os.cpu_count(),
           "dev_error": result.final["dev_error"], "test_error": result.final["test_error"]}  # fmt: skip
    print(json.dumps(row, default=float), flush=True)
    return row


def time_fit(p: Protocol, student: str, data_root: str, lr: float, name: str, rows: int) -> dict:
    """Sizing: the first `rows` logged updates of learned teacher `name`'s fit (no selection),
    its wall seconds per charged student-step equivalent between the first and the last row
    (setup excluded), to set beside a CE student's seconds per step."""
    plan = p.students[student]
    spec = paper_spec(p, student, plan, data_root).replace(lr=lr)
    teacher = make_teacher(name, **{**p.teachers[name], "select_seeds": 0})
    log: list[dict] = []

    def callback(row: dict) -> bool | None:
        if "student_steps" in row and row.get("kind") != "checkpoint":
            log.append(row)
        return False if len(log) >= rows else None

    load0 = os.getloadavg()
    teacher.fit(spec, 100 * spec.episode_steps, seed=0, callback=callback)
    first, last = log[0], log[-1]
    charged = last["student_steps"] - first["student_steps"]
    out = {"protocol": p.version, "student": student, "teacher": name, "lr": lr,
           "updates": len(log) - 1, "charged": charged,
           "wall_s": last["wall_time"] - first["wall_time"],
           "wall_s_per_equivalent": (last["wall_time"] - first["wall_time"]) / charged,
           "load_before": load0, "load_after": os.getloadavg()}  # fmt: skip
    print(json.dumps(out, default=float), flush=True)
    return out


def paper_teacher(p: Protocol, name: str, spec: TeachingSpec) -> Teacher:
    """A fresh teacher; "bilinear-init" is L2T-DLF's untrained teacher."""
    if name == "bilinear-init":
        t = L2TDLFTeacher(**p.teachers["l2t-dlf"])
        env = t.spec_for(spec).make_env()
        t.build(env.observation_space.shape[0], env.family.dim)
        return t
    return make_teacher(name, **p.teachers[name])


def stored_trials(units: Units, loss: str, **extra):
    """analysis.selection's trial function, one unit per (loss, candidate): a finished unit is
    read back, so an interrupted selection resumes. Units: ``lr_<loss>_<lr>`` and, for the
    bilinear start, ``lr_<loss>_<start>_<lr>``; `extra` (e.g. large-margin's m) is recorded."""

    def trial(teacher: Teacher, spec: TeachingSpec, changes: dict, seeds) -> Trial:
        start = f"_{changes['start']}" if "start" in changes else ""
        unit = f"lr_{loss}{start}_{changes['lr']:g}"
        row = units.get(unit)
        if row is None:
            t0 = time.perf_counter()
            t = evaluate_trial(teacher, spec, changes, seeds)
            row = units.put(unit, {"kind": "lr", "loss": loss, **extra, **changes,
                            "dev_seeds": list(seeds),
                            "dev_errors": list(t.errors), "dev_error": t.error,
                            "student_steps": t.student_steps,
                            "wall_time": time.perf_counter() - t0})  # fmt: skip
        # units written before the step count was stored: every student ran the episode
        steps = row.get("student_steps", len(seeds) * spec.episode_steps)
        return Trial(dict(changes), tuple(row["dev_errors"]), int(steps))

    return trial


@contextmanager
def hypergradient_probe(log: list[dict]):
    """Record, per RMD reverse pass of the L2T-DLF teacher, how dM/dPhi_k behaves over the
    horizon: norm per env step k, and the sign agreement of each dPhi_k with their sum."""
    original = rmd.reverse

    def probed(*args, **kwargs):
        h = original(*args, **kwargs)
        g = h.coeff_grads.detach().double()
        total = g.sum(0)
        agree = ((torch.sign(g) == torch.sign(total)) & (total != 0)).double().mean(1)
        half = len(g) // 2
        a, b = g[:half].sum(0), g[half:].sum(0)
        cos = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30)) if half else math.nan
        log.append(
            {
                "objective": float(h.objective),
                "grad_norm_total": float(total.norm()),
                "grad_norm_per_step": [float(v) for v in g.norm(dim=1)],
                "sign_agreement_per_step": [float(v) for v in agree],
                "cos_first_vs_second_half": cos,
            }
        )
        return h

    l2t_dlf_module.rmd.reverse = probed
    try:
        yield log
    finally:
        l2t_dlf_module.rmd.reverse = original


def coefficient_rows(result, family, interval: int) -> list[dict]:
    """Per env step of one taught student: summaries of the coefficients it was given."""
    rows = []
    for t, c in enumerate(result.coeffs):
        row = {"seed": result.seed, "student_step": t * interval}
        if family.name == "bilinear":
            C = family.num_classes
            phi, b = c[: C * C].reshape(C, C), c[C * C :]
            eye = np.eye(C, dtype=bool)
            row.update(
                diag_phi=float(phi[eye].mean()),
                offdiag_phi=float(phi[~eye].mean()),
                offdiag_abs_phi=float(np.abs(phi[~eye]).mean()),
                bias=float(b.mean()) if len(b) else 0.0,
            )
        else:
            row["coeff"] = float(c[0])
        rows.append(row)
    return rows


def choose_margin_and_lr(
    p: Protocol, spec: TeachingSpec, units: Units, lrs, dev_seeds
) -> tuple[Selection, int]:
    """Large-margin's m and the student lr, jointly on select: one lr search per m of the
    plan's ``margins`` (units ``lr_large-margin-m<m>_<lr>``), the pair of lowest select error
    kept (ties: the smaller m, then the smaller lr)."""
    margins = sorted(p.students[units.student].margins)
    best = None
    trials = []
    for m in margins:
        teacher = LargeMarginTeacher(**{**p.teachers["large-margin"], "margin": m})
        sel = search_lr(teacher, spec, lrs, dev_seeds,
                        trial=stored_trials(units, f"large-margin-m{m}", margin=m))  # fmt: skip
        trials += sel.trials
        error = min(t.error for t in sel.trials)
        if best is None or error < best[0]:
            best = (error, m, sel.chosen)
    _, margin, changes = best
    return Selection(dict(changes), tuple(trials), SELECTION_SPLIT, tuple(dev_seeds)), margin


def dln_start(p: Protocol, spec: TeachingSpec) -> tuple[FixedTeacher, TeachingSpec]:
    """L2T-DLN's untrained teacher as a fixed action on its own spec (the ``dln`` family): with
    ``identity_start`` its LSTM's Delta is 0, so it teaches its warm-start loss phi_0 all run,
    and a frozen action gives the same students without the look-ahead's cost."""
    teacher = make_teacher("l2t-dln", **p.teachers["l2t-dln"])
    own = teacher.spec_for(spec)
    family = make_loss(own.loss, DATASETS[p.dataset].num_classes, **own.loss_kwargs)
    phi = teacher.initial_coeffs(family, torch.float64, "cpu")
    action = family.coeffs_to_action(phi).clamp(-1.0, 1.0)
    return FixedTeacher(action=[float(a) for a in action]), own


def fit_learned(
    p: Protocol, plan: StudentPlan, units: Units, name: str, spec: TeachingSpec,
    changes: dict, selection_steps: int,
) -> Teacher:  # fmt: skip
    """Fit learned teacher `name` once (seed 0: SeedPlan's fit students, none a test or dev
    student) on `spec` (its select-chosen lr and start), its snapshot chosen on select by the
    fit skeleton; stored as ``teacher_<name>.pt`` and unit ``fit_<name>``. A stored fit made
    under other choices than `changes` is refused. `selection_steps`, the student steps of this
    teacher's own search on select, is recorded beside the fit's own steps."""
    cfg = dict(p.teachers[name])
    episode = spec.episode_steps
    if plan.fit_budget:
        budget = round(plan.fit_budget * episode)
    else:  # paper-3: fit_episodes training episodes and a selection every select_every of them
        cfg["select_every_updates"] = plan.select_every
        selects = 1 + -(-plan.fit_episodes // plan.select_every)
        budget = (plan.fit_episodes + selects * cfg["select_seeds"]) * episode
    path = units.dir / f"teacher_{name}.pt"
    fitted = units.get(f"fit_{name}")
    stored = {k: (fitted or {}).get(k, "log-c" if k == "start" else None) for k in changes}
    if fitted is not None and stored != changes:
        raise ValueError(
            f"{units.dir} holds a {name} fit made with {stored}; select now chooses {changes}. "
            "Use another --out directory."
        )
    if fitted is not None and path.exists():
        return Teacher.load(path)
    if name == "l2t-dlf":
        teacher = L2TDLFTeacher(**cfg)
        env = teacher.spec_for(spec).make_env()
        teacher.build(env.observation_space.shape[0], env.family.dim)
        theta0 = {k: v.detach().clone() for k, v in teacher.params.items()}
    else:
        teacher, theta0 = make_teacher(name, **cfg), {}
    fit_rows: list[dict] = []
    probes: list[dict] = []

    def callback(row: dict) -> None:
        row = dict(row)
        for k, v in theta0.items():
            d = (teacher.params[k].detach() - v).norm()
            row[f"move_{k}"] = float(d)
            row[f"move_rel_{k}"] = float(d / v.norm().clamp_min(1e-30))
        if row.get("kind") == "train" and probes:
            row.update({f"probe_{k}": v for k, v in probes[-1].items()})
        fit_rows.append(row)
        print(
            f"  fit {name} {json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}, default=float)}",
            flush=True,
        )

    t0 = time.perf_counter()
    with hypergradient_probe(probes) if name == "l2t-dlf" else nullcontext():
        report = teacher.fit(spec, budget, seed=FIT_SEED, callback=callback)
    teacher.save(path)
    pd.DataFrame(fit_rows).to_json(
        units.dir / f"fit_log_{name}.jsonl", orient="records", lines=True
    )
    units.put(
        f"fit_{name}",
        {
            "kind": "fit",
            "teacher": name,
            **changes,
            "fit_seed": FIT_SEED,  # its students: teachers.base.SeedPlan(FIT_SEED)
            "selection_student_steps": selection_steps,
            "config": cfg,
            "budget": budget,
            "student_steps": report.student_steps,
            "episodes": report.episodes,
            "best_dev_error": getattr(teacher, "best_dev_error", None),
            "untrained_dev_error": next(
                (r["dev_error"] for r in fit_rows if r.get("kind") == "select"), None
            ),
            "wall_time": time.perf_counter() - t0,
        },
    )
    return Teacher.load(path)


FIT_SEED = 0
"""every learned teacher's fit seed: its students are SeedPlan(0)'s (1,000,000 + i, held-out
1,005,000 + j), none of them a test seed (p.seeds) or a dev seed (p.dev_seeds)"""
LEARNED = ("l2t-dlf", "l2t-dln")
"""the protocols' learned teachers: fitted once per student type, then frozen"""


def run_paper(
    p: Protocol, student: str, out: Path, data_root: str, smoke: bool,
    only: set[str] | None = None,
    test_seeds: list[int] | None = None,
) -> None:  # fmt: skip
    """The paper protocols' units for one student: selections, fits, finals; `only` limits them
    to these teachers and `test_seeds` the final students to these of the protocol's seeds, in
    this order (a later run with more reuses every unit made; two processes can split a
    teacher's final students between them once its fit is stored)."""
    plan = p.students[student]
    wanted = [t for t in p.teachers if only is None or t in only]
    units = Units(out, p, student)
    spec = paper_spec(p, student, plan, data_root)
    dev_seeds = p.dev_seeds[:1] if smoke else p.dev_seeds

    # 1. on select: the student lr per fixed loss (large-margin's m with it where the plan
    # lists margins); L2T-DLF's bilinear start and lr together; L2T-DLN's lr at its start
    lrs = sorted(plan.lrs)  # ties go to the smaller lr
    chosen: dict[str, Selection] = {}
    margin = p.teachers["large-margin"].get("margin")
    for loss in (t for t in LR_LOSSES if t in wanted):
        if loss == "large-margin" and plan.margins:
            chosen[loss], margin = choose_margin_and_lr(p, spec, units, lrs, dev_seeds)
        else:
            chosen[loss] = search_lr(paper_teacher(p, loss, spec), spec, lrs, dev_seeds,
                                     trial=stored_trials(units, loss))  # fmt: skip
    if "l2t-dlf" in wanted:
        chosen["l2t-dlf"] = choose_start_and_lr(
            spec,
            {"start": plan.starts, "lr": lrs},
            dev_seeds,
            teacher=paper_teacher(p, START_LOSS, spec),
            trial=stored_trials(units, START_LOSS),
        )
    if "l2t-dln" in wanted:
        start_dln, own = dln_start(p, spec)
        chosen["l2t-dln"] = search_lr(
            start_dln, own, lrs, dev_seeds, trial=stored_trials(units, DLN_START)
        )
    lr = {name: sel.chosen["lr"] for name, sel in chosen.items()}
    start = chosen["l2t-dlf"].chosen["start"] if "l2t-dlf" in chosen else None

    # 2. the learned teachers, each fitted once on fit students at its select-chosen choices
    fitted = {
        name: fit_learned(
            p,
            plan,
            units,
            name,
            chosen[name].apply(spec),
            dict(chosen[name].chosen),
            chosen[name].student_steps,  # its own search only, whichever --teachers ran
        )  # fmt: skip
        for name in LEARNED
        if name in wanted
    }

    # 3. fresh test students, seed-major, every teacher on the same seeds
    seeds = p.seeds[:2] if smoke else p.seeds
    seeds = [s for s in test_seeds if s in seeds] if test_seeds is not None else seeds
    for seed in seeds:
        for name in wanted:
            unit = f"final_{name}_{seed}"
            done = units.get(unit)
            if done is not None and done.get("lr") != lr[name]:
                raise ValueError(
                    f"{units.path(unit)} was taught at lr {done.get('lr')}; select now chooses "
                    f"{lr[name]} for {name}. Use another --out directory."
                )
            if done is not None:
                continue
            if name in fitted:
                teacher = fitted[name]
            elif name == "large-margin":
                teacher = LargeMarginTeacher(**{**p.teachers[name], "margin": margin})
            else:
                teacher = paper_teacher(p, name, spec)
            s = chosen[name].apply(spec)
            own = teacher.spec_for(s)
            env = own.make_env()
            result = teacher.teach(s, seed, env=env)
            family = env.unwrapped.family
            units.put(
                unit,
                {
                    "kind": "final",
                    "teacher": name,
                    "seed": seed,
                    "lr": lr[name],
                    **({"start": start} if name == "l2t-dlf" else {}),
                    **({"margin": margin} if name == "large-margin" else {}),
                    "student_steps": s.episode_steps,
                    **result.final,
                    "coefficients": []
                    if family.name == "dln"  # 5,000 loss-network weights a step: not logged
                    else coefficient_rows(result, family, own.interval),
                },
            )
            summarise(out)


# -------------------------------------------------------------------------- demo protocol


def demo_process(p: Protocol, student: str, loss: str, data_root: str, **loss_kwargs):
    total = p.extra["pretrain_steps"] + max(p.extra["final_steps"], p.students[student].interval)
    return TeachingProcess(
        p.dataset,
        student,
        loss,
        batch_size=p.batch_size,
        optim=SGDConfig(
            lr=p.students[student].lrs[0],
            momentum=p.momentum,
            weight_decay=p.weight_decay,
            schedule=p.schedule,
            total_steps=total,
        ),
        device="cpu",
        data_root=data_root,
        loss_kwargs=loss_kwargs,
    )


def restore(proc: TeachingProcess, snap: dict) -> None:
    """The pre-trained student of snap's seed (its data order) from the saved StudentState, at
    its step: the data order continues as it would have."""
    proc.reset(snap["seed"])
    proc.restore(snap["state"].clone())


def run_demo(p: Protocol, student: str, out: Path, data_root: str, smoke: bool) -> None:
    plan = p.students[student]
    units = Units(out, p, student)
    ex = dict(p.extra)
    if smoke:
        ex.update(pretrain_steps=20, final_steps=20)
    seeds = p.seeds[:2] if smoke else p.seeds
    procs = {
        "ce": demo_process(p, student, "ce", data_root),
        "label-smoothing": demo_process(
            p,
            student,
            "label-smoothing",
            data_root,
            epsilon=p.teachers["label-smoothing"]["epsilon"],
        ),
        "large-margin": demo_process(
            p, student, "large-margin", data_root, margin=p.teachers["large-margin"]["margin"]
        ),
        "l2t-dlf": demo_process(p, student, "bilinear", data_root, start=plan.starts[0]),
    }
    ce = procs["ce"]

    def pretrained(seed: int) -> dict:
        path = units.dir / f"pretrain_{seed}.pt"
        if not path.exists():
            t0 = time.perf_counter()
            ce.reset(seed)
            ce.advance(ce.family.default_coeffs(), ex["pretrain_steps"])
            snap = {"seed": seed, "state": ce.state.clone()}
            tmp = path.with_suffix(".tmp")
            torch.save(snap, tmp)
            os.replace(tmp, path)
            units.put(f"pretrain_{seed}", {"kind": "pretrain", "seed": seed,
                      "steps": ex["pretrain_steps"], "dev_error": ce.evaluate("dev")["error"],
                      "wall_time": time.perf_counter() - t0})  # fmt: skip
        return torch.load(path, weights_only=False)

    # teacher: a static (Phi, b), SGD on the window's exact hypergradient
    cfg = p.teachers["l2t-dlf"]
    proc = procs["l2t-dlf"]
    coeff_path = units.dir / "teacher_l2t-dlf_coeffs.pt"
    updates = 2 if smoke else plan.fit_episodes
    if units.get("fit_l2t-dlf") is None or not coeff_path.exists():
        t0 = time.perf_counter()
        snap = pretrained(seeds[0])
        coeffs = proc.family.default_coeffs(torch.float32)
        start = coeffs.clone()
        best, best_coeffs, log, prev_g = math.inf, coeffs.clone(), [], None
        for u in range(updates + 1):
            restore(proc, snap)
            tape = rmd.Tape(1)
            with proc.recording(tape):
                proc.advance(coeffs, plan.interval)
            dev = proc.evaluate("dev")["error"]  # the window's end, this candidate's score
            row = {"update": u, "dev_error": dev, "coeff_move": float((coeffs - start).norm())}
            if dev < best:
                best, best_coeffs = dev, coeffs.clone()
                row["best"] = True
            if u < updates:  # the last candidate is scored, not updated
                h = rmd.reverse(
                    proc,
                    tape,
                    objective=cfg["objective"],
                    sharpness=cfg["sharpness"],
                    full_dev=True,
                )
                g = h.coeff_grads.sum(0).to(coeffs.dtype)
                row.update(objective=float(h.objective), grad_norm=float(g.norm()))
                if prev_g is not None:
                    row["sign_agreement_with_previous"] = float(
                        (torch.sign(g) == torch.sign(prev_g)).double().mean()
                    )
                prev_g = g
                coeffs = coeffs - cfg["teacher_lr"] * g
            del tape
            row["wall_time"] = time.perf_counter() - t0
            log.append(row)
            print("  demo fit", json.dumps(row, default=float), flush=True)
        torch.save(best_coeffs, coeff_path)
        units.put("fit_l2t-dlf", {"kind": "fit", "updates": updates, "best_dev_error": best,
                  "untrained_dev_error": log[0]["dev_error"], "log": log,
                  "wall_time": time.perf_counter() - t0})  # fmt: skip
    learned = torch.load(coeff_path, weights_only=False)

    lm_teacher = LargeMarginTeacher(**p.teachers["large-margin"])
    evals = ex["final_evals"]
    for seed in seeds:
        snap = pretrained(seed)
        for name, proc in procs.items():
            unit = f"final_{name}_{seed}"
            if units.get(unit) is not None:
                continue
            t0 = time.perf_counter()
            restore(proc, snap)
            chunk = 50 if name == "large-margin" else ex["final_steps"] // evals
            every = ex["final_steps"] // evals
            best = (math.inf, None, None)
            done = 0
            while done < ex["final_steps"]:
                if name == "l2t-dlf":
                    coeffs = learned
                elif name == "large-margin":
                    coeffs = torch.tensor([1.0 / (1.0 + lm_teacher.beta(proc.step))])
                else:
                    coeffs = proc.family.default_coeffs()
                n = min(chunk, ex["final_steps"] - done)
                proc.advance(coeffs, n)
                done += n
                if done % every == 0 or done == ex["final_steps"]:
                    d = 1.0 if bool(proc.diverged) else proc.evaluate("dev")["error"]
                    if d < best[0]:
                        best = (d, done, {k: v.clone() for k, v in proc.params.items()})
            if best[2] is not None:
                proc.restore(proc.state._replace(params=best[2]))
            test = proc.evaluate("test")
            units.put(unit, {"kind": "final", "teacher": name, "seed": seed, "lr": plan.lrs[0],
                      "student_steps": ex["pretrain_steps"] + ex["final_steps"],
                      "selected_step": best[1], "dev_error": best[0],
                      "test_error": test["error"], "test_loss": test["loss"],
                      "diverged": bool(proc.diverged), "wall_time": time.perf_counter() - t0})  # fmt: skip
            summarise(out)


# ----------------------------------------------------------------------------- summary


def load_units(out: Path) -> pd.DataFrame:
    rows = [json.loads(f.read_text()) for f in sorted((out / "units").rglob("*.json"))]
    return pd.DataFrame(rows)


def summarise(out: Path) -> pd.DataFrame | None:
    """summary.csv and per_seed.csv from the finished units (errors in %)."""
    df = load_units(out)
    if df.empty or "kind" not in df or not (df.kind == "final").any():
        return None
    final = df[df.kind == "final"].copy()
    final["test_error"] *= 100
    final["dev_error"] *= 100
    for col in ("start", "margin"):  # units made before these were choices
        if col not in final:
            final[col] = None
    keep = ["protocol", "protocol_version", "student", "teacher", "seed", "lr", "start", "margin"]
    keep += ["student_steps", "dev_error", "test_error", "wall_time"]
    final[keep].sort_values(["protocol", "student", "teacher", "seed"]).to_csv(
        out / "per_seed.csv", index=False
    )
    fits = {  # (protocol, student, teacher) -> fit wall time; paper-2's fit unit names none
        (r.protocol, r.student, r.unit.removeprefix("fit_")): float(r.wall_time)
        for r in df[df.kind == "fit"].itertuples()
    }
    prep, grids = _preparation(df)
    rows = []
    for (proto, student), g_run in final.groupby(["protocol", "student"]):
        # the best baseline: the fixed loss (LR_LOSSES) of lowest mean dev error, chosen on dev
        # like every other choice; ties go to the earlier loss in LR_LOSSES
        dev = g_run.groupby("teacher").dev_error.mean()
        fixed = [t for t in LR_LOSSES if t in dev.index]
        best = min(fixed, key=lambda t: (dev[t], fixed.index(t))) if fixed else "ce"
        vs = {}
        for base in ("ce", best):
            d = paired_difference(
                g_run, base, value="test_error", group="teacher", pair_on="seed"
            ).set_index("teacher")
            d["p_holm"] = holm(d.diff_p.to_numpy())  # family: every teacher against `base`
            vs[base] = d
        for teacher, g in g_run.groupby("teacher"):
            key = (proto, student, teacher)
            rows.append(_summary_row(key, g, vs["ce"].loc[teacher], best, vs[best].loc[teacher],
                                     fits.get(key, 0.0), prep.get(key, 0), grids.get(key, set())))  # fmt: skip
    summary = pd.DataFrame(rows)
    summary.to_csv(out / "summary.csv", index=False)
    return summary


def _trial_owner(loss: str) -> str:
    """The teacher a trial on select was made for: large-margin's units carry their m in the
    loss name, the learned teachers' trials are of their untrained starts."""
    if loss.startswith("large-margin"):
        return "large-margin"
    return {START_LOSS: "l2t-dlf", DLN_START: "l2t-dln"}.get(loss, loss)


def _preparation(df: pd.DataFrame) -> tuple[dict, dict]:
    """(protocol, student, teacher) -> (a) the student steps a teacher spent before its test
    students: its own trials on select (lr, and m or the bilinear start with it) plus, for a
    learned teacher, its fit's charged steps (``envs.cost``; divided by a run's steps, its price
    in whole CE students, comparable across teachers); (b) the lr grid its trials covered."""
    steps: dict = {}
    grid: dict = {}
    for r in df.itertuples():
        if r.kind == "lr":
            key = (r.protocol, r.student, _trial_owner(r.loss))
            grid.setdefault(key, set()).add(float(r.lr))
        elif r.kind == "fit" and isinstance(getattr(r, "teacher", None), str):
            key = (r.protocol, r.student, r.teacher)
        else:
            continue
        steps[key] = steps.get(key, 0) + int(r.student_steps)
    return steps, grid


def _summary_row(key, g, vs_ce, best, vs_best, fit_wall, prep_steps, grid) -> dict:
    """One summary.csv row: a teacher's test error over its seeds, its paired differences
    against CE and against the run's best baseline (Holm-adjusted within each family), its
    price before teaching (`prep_steps`, in whole students) and whether its lr is an end of
    the `grid` its trials covered (a wider grid might move it)."""
    proto, student, teacher = key
    test = mean_ci(g.test_error)
    lr, steps = g.lr.iloc[0], int(g.student_steps.iloc[0])
    reported = REPORTED.get(student, {}).get(teacher) if proto.startswith("paper") else None
    return {
        "protocol": proto,
        "protocol_version": g.protocol_version.iloc[0],
        "student": student,
        "teacher": teacher,
        "seeds": len(g),
        "test_error_mean": test.mean,
        "test_error_ci95": test.half,
        "dev_error_mean": g.dev_error.mean(),
        "test_minus_ce_mean": 0.0 if teacher == "ce" else vs_ce.diff_mean,
        "test_minus_ce_ci95": 0.0 if teacher == "ce" else vs_ce.diff_ci,
        "test_minus_ce_p_holm": vs_ce.p_holm,
        "paired_seeds": int(vs_ce.diff_n),
        "best_baseline": best,
        "test_minus_best_mean": 0.0 if teacher == best else vs_best.diff_mean,
        "test_minus_best_ci95": 0.0 if teacher == best else vs_best.diff_ci,
        "test_minus_best_p_holm": vs_best.p_holm,
        "reported_unverified": reported,
        "lr": lr,
        "lr_at_grid_edge": len(grid) > 1 and lr in (min(grid), max(grid)),
        "start": g.start.iloc[0],
        "margin": g.margin.iloc[0],
        "student_steps": steps,
        "prep_runs": prep_steps / steps,
        "teach_wall_s_per_student": g.wall_time.mean(),
        "fit_wall_s": fit_wall,
    }


def markdown(df: pd.DataFrame, index: bool = True, digits: int = 4) -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    if index:
        df = df.reset_index()

    def cell(v) -> str:
        if isinstance(v, float):
            return "-" if v != v else f"{v:.{digits}g}"
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _p(p: float) -> str:
    return "-" if p != p else f"{p:.3f}"


def _fmt(m: float, h: float) -> str:
    return "-" if m != m else (f"{m:.2f}" if h != h else f"{m:.2f} +- {h:.2f}")


def write_readme(out: Path) -> Path:
    """results README from the units: facts only (commands, tables, diagnostics); the
    interpretation is written by hand below the generated part."""
    summary = summarise(out)
    df = load_units(out)
    runs = sorted(out.glob("run_*.json"))
    first = json.loads(runs[0].read_text()) if runs else {}
    lines = [
        "# Full MNIST: ce, label smoothing, large-margin, L2T-DLF (issue 10)",
        "",
        "<!-- generated by `python experiments/mnist_full.py --report-only --out DIR` -->",
        "",
        "Command (resumable; " + f"{len(runs)} invocation(s) recorded in `run_*.json`):",
        "",
        "```bash",
        "OMP_NUM_THREADS=1 python " + " ".join(first.get("argv", ["experiments/mnist_full.py"])),
        "```",
        "",
        f"Code commit: `{first.get('git_commit', first.get('commit'))}` (dirty: "
        f"{first.get('git_dirty', first.get('dirty'))}). Started "
        f"{first.get('start')}. Unit wall time, summed: {df.wall_time.sum() / 60:.0f} min "
        "(one shared CPU core; the machine was oversubscribed, so wall times are upper bounds).",
        "",
        "Test error in %, mean +- 95% t-interval over the fresh test students (one teacher fit "
        "per student type); `- ce` is the paired difference on the same students (same init, "
        "same data order); `p (Holm)`: its paired t-test, Holm-adjusted over the teachers "
        "compared with the same baseline; the best baseline is the fixed loss (ce, label "
        "smoothing, large-margin) of lowest mean dev error. `select + fit`: the student steps a "
        "teacher spent before its test students (its own trials on select, and a learned "
        "teacher's fit, charged as `envs.cost` prices it) in whole CE students of that "
        "length. `(edge)`: the lr chosen on select is an end of the grid its trials covered, so a "
        "wider grid might choose another. `reported, unverified`: the paper's MNIST numbers as recalled in "
        "our notes on the paper, not checked against the PDF, for a different "
        "(full-length) training run.",
        "",
    ]
    if summary is not None:
        lines += [
            "| protocol | student | teacher | seeds | lr | steps | dev error | test error | "
            "test - ce (paired) | p (Holm) | test - best baseline (paired) | p (Holm) | "
            "reported, unverified | select + fit (CE students) | fit s | s / student |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in summary.itertuples():
            rep_ = (
                "-"
                if r.reported_unverified != r.reported_unverified or r.reported_unverified is None
                else f"{r.reported_unverified:.2f}"
            )
            diff = "-" if r.teacher == "ce" else _fmt(r.test_minus_ce_mean, r.test_minus_ce_ci95)
            best = (
                f"- ({r.teacher} is best on dev)"
                if r.teacher == r.best_baseline
                else _fmt(r.test_minus_best_mean, r.test_minus_best_ci95)
            )
            lines.append(
                f"| {r.protocol} ({r.protocol_version}) | {r.student} | {r.teacher} | {r.seeds} | "
                f"{r.lr:g}{' (edge)' if r.lr_at_grid_edge else ''} | {r.student_steps} | "
                f"{r.dev_error_mean:.2f} | "
                f"{_fmt(r.test_error_mean, r.test_error_ci95)} | {diff} | "
                f"{_p(r.test_minus_ce_p_holm)} | {best} | {_p(r.test_minus_best_p_holm)} | {rep_} | "
                f"{r.prep_runs:.1f} | "
                f"{r.fit_wall_s:.0f} | {r.teach_wall_s_per_student:.0f} |"
            )
        lines.append("")
    lr = df[df.kind == "lr"] if "kind" in df else df.iloc[:0]
    if len(lr):
        lines += ["## Learning rates (dev error %, picked per loss on dev)", ""]
        index = ["student", "loss"]
        if "start" in lr:  # L2T-DLF's untrained teacher: one row per bilinear start
            lr = lr.assign(loss=[f"{n} ({s})" if isinstance(s, str) else n
                                 for n, s in zip(lr["loss"], lr["start"], strict=True)])  # fmt: skip
        piv = (lr.assign(dev=lr.dev_error * 100)
               .pivot_table(index=index, columns="lr", values="dev"))  # fmt: skip
        lines += [markdown(piv.round(2)), ""]
    for fit in sorted(out.glob("units/*/*/fit_log_l2t-dlf.jsonl")):
        log = pd.read_json(fit, lines=True)
        train = log[log.kind == "train"]
        lines += [f"## L2T-DLF fit diagnostics: {fit.parent.parent.name}/{fit.parent.name}", ""]
        if len(train):
            rows = []
            for r in train.itertuples():
                norms = np.asarray(getattr(r, "probe_grad_norm_per_step", []) or [], float)
                agree = np.asarray(getattr(r, "probe_sign_agreement_per_step", []) or [], float)
                k = max(1, len(norms) // 3)
                rows.append({
                    "update": r.episode,
                    "dev CE (subset)": r.objective,
                    "norm g (pre-clip)": r.grad_norm,
                    "norm dM/dPhi_k, first third": norms[:k].mean() if len(norms) else np.nan,
                    "norm dM/dPhi_k, last third": norms[-k:].mean() if len(norms) else np.nan,
                    "sign agreement first third": agree[:k].mean() if len(agree) else np.nan,
                    "sign agreement last third": agree[-k:].mean() if len(agree) else np.nan,
                    "cos(1st half, 2nd half)": getattr(r, "probe_cos_first_vs_second_half", np.nan),
                    "rel. move M": getattr(r, "move_rel_M", np.nan),
                    "rel. move V": getattr(r, "move_rel_V", np.nan),
                })  # fmt: skip
            table = pd.DataFrame(rows)
            if len(table) > WINDOW_ROWS:  # windowed estimators: hundreds of updates, a row per
                # fit student instead (first / last window's figures, medians between)
                table = table.groupby("update").agg(["first", "median", "last"])
                table.columns = [f"{c} ({how})" for c, how in table.columns]
                keep = [c for c in table if not c.startswith(("sign", "cos"))]
                table = table[keep].reset_index().rename(columns={"update": "fit student"})
                table.insert(1, "windows", train.groupby("episode").size().to_numpy())
            lines += [markdown(table, index=False, digits=3), ""]
        lines += _candidate_lines(log[log.kind == "select"])
    for fit in sorted(out.glob("units/*/*/fit_log_l2t-dln.jsonl")):
        lines += _dln_fit_lines(fit)
    finals = df[(df.kind == "final") & (df.teacher == "l2t-dlf")] if "kind" in df else df.iloc[:0]
    for (proto, student), g in finals.groupby(["protocol", "student"]):
        coef = [c for cs in g.get("coefficients", []) if isinstance(cs, list) for c in cs]
        if coef:
            c = pd.DataFrame(coef).groupby("student_step").mean(numeric_only=True)
            c = c.drop(columns=["seed"], errors="ignore")
            lines += [f"## L2T-DLF coefficient schedule on the test students: {proto}/{student}",
                      "", markdown(c), ""]  # fmt: skip
    for f in sorted(out.glob("units/demo/*/fit_l2t-dlf.json")):
        log = pd.DataFrame(json.loads(f.read_text())["log"])
        lines += ["## Demo protocol: teacher updates (static Phi, b)", "",
                  markdown(log.drop(columns=["wall_time"], errors="ignore"), index=False, digits=4), ""]  # fmt: skip
    notes = out / "NOTES.md"  # the hand-written interpretation, kept across regenerations
    if notes.exists():
        lines = lines[:4] + [notes.read_text().strip(), ""] + lines[4:]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


WINDOW_ROWS = 24
"""an L2T-DLF fit log with more updates than this is shown a row per fit student"""


def _dln_fit_lines(fit: Path) -> list[str]:
    """L2T-DLN's fit, one row per fit student: its iterations, the meta CE after the look-ahead
    (first, largest, last), and how often the LSTM's step |Delta| reached 0.9 (saturated: phi
    then drifts by about alpha per weight and iteration, whatever the loss state says)."""
    log = pd.read_json(fit, lines=True)
    kind = log["kind"] if "kind" in log else pd.Series(None, index=log.index)
    train = log[kind.isna() | (kind == "train")]
    lines = [f"## L2T-DLN fit diagnostics: {fit.parent.parent.name}/{fit.parent.name}", ""]
    if len(train) and "val_ce_lookahead" in train:
        rows = [
            {
                "fit student": int(ep),
                "iterations": len(g),
                "meta CE first": g.val_ce_lookahead.iloc[0],
                "meta CE max": g.val_ce_lookahead.max(),
                "meta CE last": g.val_ce_lookahead.iloc[-1],
                "share |Delta| >= 0.9": float((g.max_abs_delta >= 0.9).mean()),
                "skipped updates": int(g.diverged.sum()),
            }
            for ep, g in train.groupby("episode")
        ]
        lines += [markdown(pd.DataFrame(rows), index=False, digits=3), ""]
    return lines + _candidate_lines(log[kind == "select"])


def _candidate_lines(sel: pd.DataFrame) -> list[str]:
    """A learned teacher's snapshots scored on select during its fit (the best is kept)."""
    if not len(sel):
        return []
    cols = [c for c in ("updates", "dev_error", "dev_loss", "best") if c in sel]
    return ["Candidates (dev error of fresh students, on the split the protocol selects on; "
            "best kept):", "",
            markdown(sel[cols], index=False, digits=4), ""]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", help="holds MNIST files or mnist.pkl.gz (required to run)")
    ap.add_argument("--protocols", default="paper,demo")
    ap.add_argument("--students", default=None, help="comma list; default: the protocol's")
    ap.add_argument("--teachers", default=None,
                    help="comma list (paper protocols): only these teachers' selections, fits "
                    "and final students; default: the protocol's")  # fmt: skip
    ap.add_argument("--seeds", default=None,
                    help="comma list (paper protocols): only these test seeds' final students, "
                    "in this order; default: the protocol's")  # fmt: skip
    ap.add_argument("--out", default="results/mnist_full")
    ap.add_argument("--smoke", action="store_true", help="tiny run of every code path (tests)")
    ap.add_argument("--report-only", action="store_true", help="rebuild summary + README.md")
    ap.add_argument("--time-one", metavar="LR", type=float,
                    help="sizing: train one CE student per --students at this lr, print its "
                    "wall time and load, run nothing else")  # fmt: skip
    ap.add_argument("--time-fit", metavar="N", type=int, default=0,
                    help="with --time-one: instead time N logged updates of each learned "
                    "teacher's fit (seconds per charged student-step equivalent)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.report_only:
        if not any(Path(args.out).glob("units/*/*/*.json")):
            ap.error(f"--report-only: no units under {args.out}/units (nothing has run there)")
        print(write_readme(Path(args.out)))
        return
    if not args.data_root:
        ap.error("--data-root is required to run")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    protocols = [get_protocol(n) for n in args.protocols.split(",")]
    for p in protocols:
        validate(p)
    only = set(args.teachers.split(",")) if args.teachers else None
    unknown = only - {t for p in protocols for t in p.teachers} if only else set()
    if unknown:
        ap.error(f"--teachers: not in the protocols: {sorted(unknown)}")
    test_seeds = None
    if args.seeds:
        try:
            test_seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            ap.error(f"--seeds: a comma list of integers, got {args.seeds!r}")
        stray = set(test_seeds) - {s for p in protocols for s in p.seeds}
        if stray:
            ap.error(f"--seeds: not test seeds of the protocols: {sorted(stray)}")
    if args.smoke:
        protocols = [smoke_version(p) for p in protocols]
    if args.time_one is not None:
        for p in protocols:
            for student in args.students.split(",") if args.students else p.students:
                if args.time_fit:
                    for name in (t for t in LEARNED if t in p.teachers):
                        time_fit(p, student, args.data_root, args.time_one, name, args.time_fit)
                else:
                    time_one(p, student, args.data_root, args.time_one)
        return
    run = {"argv": sys.argv, "start": time.strftime("%Y-%m-%d %H:%M:%S"), **versions(),
           "protocols": {p.name: p.to_dict() for p in protocols}}  # fmt: skip
    (out / f"run_{time.strftime('%Y%m%d_%H%M%S')}.json").write_text(json.dumps(run, indent=1))
    start = time.perf_counter()
    for p in protocols:
        students = args.students.split(",") if args.students else list(p.students)
        for student in students:
            if student not in p.students:
                continue
            if p.kind == "episode":
                run_paper(p, student, out, args.data_root, args.smoke, only, test_seeds)
            else:
                run_demo(p, student, out, args.data_root, args.smoke)
    summary = summarise(out)
    if summary is not None:
        print(summary.to_string(index=False))
    print(f"total wall time {time.perf_counter() - start:.0f} s", flush=True)


def smoke_version(p: Protocol) -> Protocol:
    """The same protocol at toy size: every code path, seconds of compute."""
    import dataclasses

    small = {
        s: dataclasses.replace(
            plan,
            horizon=min(plan.horizon, 2),
            interval=min(plan.interval, 5),
            lrs=plan.lrs[:2],
            margins=plan.margins[:2],
            fit_episodes=1,
            select_every=1,
        )  # fmt: skip
        for s, plan in p.students.items()
    }
    teachers = dict(p.teachers)
    if teachers["l2t-dlf"].get("estimator", "full") != "full":  # windows shorter than a run
        teachers["l2t-dlf"] = {**teachers["l2t-dlf"], "K": 3}
    return dataclasses.replace(p, version=p.version + "-smoke", students=small, teachers=teachers)


if __name__ == "__main__":
    main()
