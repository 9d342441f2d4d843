"""What a teacher costs in wall time, as a multiple of plain training of the same student.

For every registered teacher (or those named with ``--teachers``): the wall time of
``teacher.fit(spec, budget)`` and of ``teacher.teach(spec, seed)`` (one fresh student of
``episode_steps`` steps, its final whole-split evaluation included), each divided by the wall
time of the same number of plain cross-entropy steps of the same student, written the way a
researcher would (an ``nn.Module``, ``F.cross_entropy``, ``torch.optim.SGD`` with the spec's
momentum and weight decay, the cosine schedule through ``LambdaLR``) on the env's own
minibatches. The budget counts student-step equivalents (``envs/cost.py``), so a fit of budget B
is compared with B plain steps: a teacher whose passes were priced right and that adds no
overhead of its own costs 1.

The machine is shared and its load moves, so each teacher's plain runs are measured right
beside it in the same process: plain(B) just before its fit, plain(episode) just before and
after each taught student (medians over ``--teach-seeds``). The fit is timed once (a fit is
seconds to minutes, long enough to average the load over its own length).

    OMP_NUM_THREADS=1 python benchmarks/teacher_cost.py                 # budget 16,000
    OMP_NUM_THREADS=1 python benchmarks/teacher_cost.py --quick         # budget 1,200: minutes

``--batch-students N`` also teaches N students in one batched process (``teach_batch``, what
the runner does for ``students_per_seed`` > 1) where the teacher allows it, over N x plain(600):
``cost_<teacher>_teach_batched=<x>``.

Prints a table, one ``cost_<teacher>_fit=<x>`` and ``cost_<teacher>_teach=<x>`` line per teacher,
and ``worst_cost=<x>`` last (the largest of all those ratios, and whose it is).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from teachers import TeachingSpec
from teachers.batch_eval import batchable, teach_batch
from teachers.registry import TEACHERS, make_teacher

QUICK_BUDGET = 1_200
"""two default episodes (12 x 50 steps): enough for every teacher to run at least one update"""


def plain_ce_seconds(spec: TeachingSpec, steps: int, seed: int = 0) -> float:
    """Wall time of `steps` plain cross-entropy steps of the spec's student from its seed-`seed`
    initialisation, on the env's minibatches (its seeded index stream, gathered in the loop)."""
    env = spec.make_env()
    env.reset(seed=seed)
    proc = env.unwrapped.process
    model = proc.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(proc.params[name])
    model.train()
    cfg = proc.optim
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: cfg.lr_at(t) / cfg.lr)
    start = time.perf_counter()
    for t in range(steps):
        x, y = proc.batch(t)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    if proc.device.type == "cuda":
        torch.cuda.synchronize(proc.device)
    seconds = time.perf_counter() - start
    env.close()
    return seconds


def measure(
    name: str,
    spec: TeachingSpec,
    budget: int,
    teach_seeds: int,
    config: dict | None = None,
    batch_students: int = 0,
) -> dict:
    teacher = make_teacher(name, **(config or {}))
    plain_fit = plain_ce_seconds(spec, budget)
    report = teacher.fit(spec, budget, seed=0)
    fit_ratio = report.wall_time / plain_fit
    teach_ratios, teach_walls = [], []
    for seed in range(teach_seeds):
        before = plain_ce_seconds(spec, spec.episode_steps, seed=seed)
        start = time.perf_counter()
        teacher.teach(spec, seed=seed)
        wall = time.perf_counter() - start
        after = plain_ce_seconds(spec, spec.episode_steps, seed=seed)
        teach_walls.append(wall)
        teach_ratios.append(wall / ((before + after) / 2))
    batch = float("nan")
    if batch_students > 1 and batchable(teacher, spec):  # the runner's batched teaching
        seeds = list(range(batch_students))
        before = plain_ce_seconds(spec, spec.episode_steps)
        start = time.perf_counter()
        teach_batch(teacher, spec, seeds)
        wall = time.perf_counter() - start
        after = plain_ce_seconds(spec, spec.episode_steps)
        batch = wall / (batch_students * (before + after) / 2)
    return {
        "batch": batch,
        "teacher": name,
        "fit_s": report.wall_time,
        "fit_spent": report.student_steps,
        "plain_fit_s": plain_fit,
        "fit": fit_ratio,
        "teach_s": statistics.median(teach_walls),
        "teach": statistics.median(teach_ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=16_000, help="fit budget (student steps)")
    parser.add_argument("--quick", action="store_true", help=f"budget {QUICK_BUDGET}, 1 seed")
    parser.add_argument("--teach-seeds", type=int, default=3, help="students taught per teacher")
    parser.add_argument("--teachers", default=",".join(TEACHERS), help="comma-separated names")
    parser.add_argument(
        "--configs",
        default="{}",
        help='teacher options as JSON, e.g. \'{"reinforce": {"n_envs": 8, "episodes_per_update": 8}}\'',
    )
    parser.add_argument(
        "--batch-students",
        type=int,
        default=0,
        help="also teach N students in one batch (teach_batch) where the teacher allows it",
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.teach_seeds = QUICK_BUDGET, 1
    names = [n.strip() for n in args.teachers.split(",") if n.strip()]
    unknown = [n for n in names if n not in TEACHERS]
    if unknown:
        parser.error(f"unknown teachers {unknown}; known: {sorted(TEACHERS)}")
    try:
        configs = json.loads(args.configs)
    except json.JSONDecodeError as err:
        parser.error(f"--configs is not JSON: {err}")
    if not isinstance(configs, dict) or set(configs) - set(names):
        parser.error("--configs must map some of the --teachers to their options")
    if args.budget < 1 or args.teach_seeds < 1:
        parser.error("--budget and --teach-seeds must be positive")
    spec = TeachingSpec(device=args.device)
    print(
        f"spec: {spec.dataset}/{spec.student}, {spec.episode_steps} steps per student, batch "
        f"{spec.batch_size}; fit budget {args.budget}; {args.teach_seeds} taught student(s); "
        f"torch threads {torch.get_num_threads()}; options {configs}"
    )
    print(
        f"{'teacher':<16}{'fit s':>9}{'spent':>9}{'plain s':>9}{'fit x':>8}"
        f"{'teach s':>9}{'teach x':>9}{'batch x':>9}"
    )
    rows = []
    for name in names:
        r = measure(
            name, spec, args.budget, args.teach_seeds, configs.get(name), args.batch_students
        )
        rows.append(r)
        print(
            f"{name:<16}{r['fit_s']:>9.2f}{r['fit_spent']:>9.0f}{r['plain_fit_s']:>9.2f}"
            f"{r['fit']:>8.2f}{r['teach_s']:>9.2f}{r['teach']:>9.2f}{r['batch']:>9.2f}",
            flush=True,
        )
    for r in rows:
        print(f"cost_{r['teacher']}_fit={r['fit']:.3f}")
        print(f"cost_{r['teacher']}_teach={r['teach']:.3f}")
        if r["batch"] == r["batch"]:  # not NaN: taught in a batch too
            print(f"cost_{r['teacher']}_teach_batched={r['batch']:.3f}")
    worst = max((r[k], f"{r['teacher']}_{k}") for r in rows for k in ("fit", "teach"))
    print(f"worst_cost={worst[0]:.3f} ({worst[1]})")


if __name__ == "__main__":
    main()
