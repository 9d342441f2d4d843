"""Behaviour before and after a change: fit and teach every learning teacher on a tiny spec.

Run it twice, first in a checkout of the old commit, then in this one, with the same directory:

    git worktree add --detach /tmp/l2t-old <commit>
    (cd /tmp/l2t-old && OMP_NUM_THREADS=1 PYTHONPATH=. python $REPO/benchmarks/before_after.py old /tmp/ba)
    OMP_NUM_THREADS=1 python benchmarks/before_after.py new /tmp/ba

"old" fits each teacher (budget: 8 episodes of 40 steps, fitting seed 0), saves it and records
digests of its fitted state and of the student it teaches (seed 3: final metrics, coefficients,
rewards). "new" does the same here and also teaches with the *old* fitted teacher, then prints
per teacher whether the fit and the teaching path are bit-identical. Uses only the public
interface (fit, teach, state_dict, save, load), so it runs on older commits too.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import numpy as np
import torch

from teachers import Teacher, TeachingSpec, make_teacher

SPEC = TeachingSpec(
    horizon=4,
    interval=10,
    batch_size=32,
    dev_subset=64,
    device="cpu",
    student_kwargs={"hidden": 32},
)
TEACHERS = [
    ("ce", {}),
    ("reinforce", {"hidden": 16}),
    ("ppo", {"net_arch": [16]}),
    ("a2c", {"net_arch": [16]}),
    ("l2t-dlf", {"select_seeds": 1}),
    ("l2t-dln", {"hidden": 8, "lookahead": 5}),
]


def digest(value) -> str:
    h = hashlib.sha256()

    def add(v) -> None:
        if isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                add(v[k])
        elif isinstance(v, list | tuple):
            for e in v:
                add(e)
        elif isinstance(v, torch.Tensor):
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(v, np.ndarray):
            h.update(np.ascontiguousarray(v).tobytes())
        else:
            h.update(repr(v).encode())

    add(value)
    return h.hexdigest()[:16]


def taught(teacher: Teacher) -> str:
    r = teacher.teach(SPEC, seed=3)
    final = {k: r.final[k] for k in ("dev_loss", "dev_error", "test_loss", "test_error")}
    return digest([final, r.coeffs, [s["reward"] for s in r.steps]])


def main() -> None:
    mode, out = sys.argv[1], pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, config in TEACHERS:
        teacher = make_teacher(name, **config)
        report = teacher.fit(SPEC, 8 * SPEC.episode_steps, seed=0)
        state = teacher.state_dict()
        if name in ("ppo", "a2c"):  # SB3's zip holds timestamps: compare the policy itself
            state = {"policy": teacher.model.policy.state_dict(), "obs": state["obs_stats"]}
        row = {"fit": digest(state), "episodes": report.episodes, "teach": taught(teacher)}
        if mode == "old":
            teacher.save(out / f"{name}.pt")
        else:
            row["teach_old_teacher"] = taught(Teacher.load(out / f"{name}.pt"))
        results[name] = row
    (out / f"{mode}.json").write_text(json.dumps(results, indent=1))
    if mode == "new":
        old = json.loads((out / "old.json").read_text())
        for name, row in results.items():
            o = old[name]
            print(
                f"{name:<10} fit identical: {row['fit'] == o['fit']!s:<5} "
                f"episodes {o['episodes']} -> {row['episodes']}  "
                f"teaching the old teacher identical: {row['teach_old_teacher'] == o['teach']}"
            )


if __name__ == "__main__":
    main()
