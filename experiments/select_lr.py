"""Choose, on held-out data, each teacher's student lr, and for teachers that train their
students on the bilinear family its start jointly with the lr (analysis/selection.py).

Fixed losses (ce, label-smoothing, gce, ...) get an lr from ``--lrs``; a teacher acting on the
bilinear family (l2t-dlf; reinforce / ppo with ``{"family": "bilinear"}``) gets a (start, lr)
pair chosen for the family's untrained start (action 0 throughout) from ``--starts`` x ``--lrs``.
Every candidate trains ``--seeds`` fresh students (seeds 2**31 - 1, 2**31 - 2, ...: none of them
a comparison's taught student) for one episode of the spec; the score is their mean error on the
selection split (dev); test is never read. Example (the lrs of results/noisy/README.md):

    OMP_NUM_THREADS=1 python experiments/select_lr.py --label-noise 0.4 \
        --teachers ce,label-smoothing,gce --lrs 0.001,0.003,0.01,0.03,0.1,0.3

Prints one line per candidate and the choice with its cost in student steps; ``--out FILE.csv``
writes the trials (one row per teacher x candidate).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.selection import (  # noqa: E402
    SELECTION_SEEDS,
    acts_on_bilinear,
    choose_start_and_lr,
    search_lr,
)
from envs.losses import BILINEAR_STARTS  # noqa: E402
from teachers.base import TeachingSpec  # noqa: E402
from teachers.registry import make_teacher  # noqa: E402


def parse_start(text: str) -> str | float:
    return text if text in BILINEAR_STARTS else float(text)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", default="ce,label-smoothing,gce")
    ap.add_argument("--lrs", default="0.001,0.003,0.01,0.03,0.1,0.3")
    ap.add_argument("--starts", default=",".join(BILINEAR_STARTS), help="bilinear starts")
    ap.add_argument("--seeds", type=int, default=len(SELECTION_SEEDS), help="students per lr")
    ap.add_argument("--teacher-config", default="{}", help="JSON: teacher name -> its config")
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--student", default="mlp")
    ap.add_argument("--label-noise", type=float, default=0.0)
    ap.add_argument("--label-noise-kind", default="symmetric")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="CSV of the trials")
    return ap


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    spec = TeachingSpec(
        dataset=args.dataset,
        student=args.student,
        label_noise=args.label_noise,
        label_noise_kind=args.label_noise_kind,
        device=args.device,
    )
    lrs = [float(v) for v in args.lrs.split(",")]
    starts = [parse_start(v) for v in args.starts.split(",")]
    seeds = [2**31 - 1 - s for s in range(args.seeds)]
    configs = json.loads(args.teacher_config)
    rows = []
    for name in args.teachers.split(","):
        # the spec's lr is what is searched: a teacher's own lr would override it
        config = {k: v for k, v in configs.get(name, {}).items() if k != "lr"}
        teacher = make_teacher(name, **config)
        if acts_on_bilinear(teacher, spec):
            sel = choose_start_and_lr(spec, {"start": starts, "lr": lrs}, seeds)
        else:
            sel = search_lr(teacher, spec, lrs, seeds)
        for row in sel.rows():
            rows.append({"teacher": name, **row})
            print(json.dumps(rows[-1], default=float), flush=True)
        print(f"{name}: chosen {sel.chosen} on {sel.split} ({sel.student_steps} student steps)")
    frame = pd.DataFrame(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
    return frame


if __name__ == "__main__":
    main()
