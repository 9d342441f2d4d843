"""L2T-DLN with one teacher iteration per K steps (the paper's) or per N > K (``update_every``):
what the cheaper teacher gives up, on paired fits and students.

For every fitting seed and every variant (``--variants``: label -> teacher options, JSON; the
first is the reference, by default the defaults, N = K): fit an ``l2t-dln`` teacher at
``--budget`` student-step equivalents on the same seed plan (budget 0: the untrained teacher,
whose identity start leaves the warm-start DLN alone), then teach the same fresh students (seeds
100, 101, ...) with it frozen; report each student's error on dev's ``select`` part (what the
records call ``dev_error``) and on test, the teaching wall time, and the paired difference of
every variant from the first (mean over seeds and students).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/dln_update_every.py --seeds 2 --students 2 \\
        --budget 4800 --label-noise 0.4 \\
        --variants '{"K": {}, "N40": {"update_every": 40}, "N40a4": {"update_every": 40, "dln_step": 0.004}}'

``--teach-variants`` (label -> options, JSON) also teaches the same students with the first
variant's fitted psi under other options (a teacher built with them, psi and its Adam state
loaded): e.g. a teacher fitted at N = K that teaches at N = 40.

Selection among snapshots is off (``select_seeds=0``): at small budgets one candidate costs most
of the budget (README, the selection), which would leave both teachers untrained.
Last lines: ``select_diff_<label>=<mean points>`` per variant, its paired select error minus
the first variant's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from teachers import TeachingSpec, make_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        default='{"K": {}, "N40": {"update_every": 40}}',
        help="JSON: label -> l2t-dln options; the first is the reference",
    )
    parser.add_argument(
        "--teach-variants",
        default="{}",
        help="JSON: label -> options the first variant's fitted teacher also teaches with",
    )
    parser.add_argument("--seeds", type=int, default=2, help="fitting seeds 0..seeds-1")
    parser.add_argument("--students", type=int, default=2, help="taught students per fit")
    parser.add_argument("--budget", type=int, default=4800)
    parser.add_argument("--label-noise", type=float, default=0.0)
    args = parser.parse_args()
    try:
        variants = json.loads(args.variants)
        teach_variants = json.loads(args.teach_variants)
    except json.JSONDecodeError as err:
        parser.error(f"--variants or --teach-variants is not JSON: {err}")
    if not isinstance(variants, dict) or not variants or not isinstance(teach_variants, dict):
        parser.error("--variants and --teach-variants must map labels to option dicts")
    if set(teach_variants) & set(variants):
        parser.error("--teach-variants labels must differ from --variants labels")
    spec = TeachingSpec(label_noise=args.label_noise)
    print(
        f"spec: {spec.dataset}/{spec.student}, noise {args.label_noise}, budget {args.budget}, "
        f"{args.seeds} fitting seeds x {args.students} students; variants {variants}"
    )
    print(f"{'variant':>10}{'seed':>6}{'student':>9}{'select %':>10}{'test %':>9}{'teach s':>9}")
    errors: dict[str, list[float]] = {label: [] for label in [*variants, *teach_variants]}

    def teach(label: str, teacher, seed: int) -> None:
        for j in range(args.students):
            start = time.perf_counter()
            final = teacher.teach(spec, seed=100 + j).final
            wall = time.perf_counter() - start
            errors[label].append(100 * final["dev_error"])
            print(
                f"{label:>10}{seed:>6}{100 + j:>9}{100 * final['dev_error']:>10.2f}"
                f"{100 * final['test_error']:>9.2f}{wall:>9.2f}",
                flush=True,
            )

    for seed in range(args.seeds):
        fitted = None
        for label, options in variants.items():
            teacher = make_teacher("l2t-dln", **{"select_seeds": 0, **options})
            teacher.fit(spec, args.budget, seed=seed)
            fitted = fitted or teacher
            teach(label, teacher, seed)
        for label, options in teach_variants.items():
            teacher = make_teacher("l2t-dln", **{**fitted.config, **options})
            teacher.load_state_dict(fitted.state_dict())
            teach(label, teacher, seed)
    first, *others = [*variants, *teach_variants]
    for label in others:
        diffs = [a - b for a, b in zip(errors[label], errors[first], strict=True)]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        print(
            f"select_diff_{label}={statistics.mean(diffs):+.2f} (sd {spread:.2f}, "
            f"max |diff| {max(abs(d) for d in diffs):.2f}, {len(diffs)} pairs)"
        )


if __name__ == "__main__":
    main()
