"""What a budget buys the gradient teachers: their charged passes and the selection of candidates.

Every pass is charged at its envs/cost.py price (an L2T-DLF training episode its T forward and
T reverse steps and its dev gradient; an L2T-DLN fit iteration its two differentiable K-step
look-aheads, two dev gradients and K committed steps), and every learning teacher is chosen among
snapshots of its fit by the skeleton's selection (``teachers.base.Selection``), whose candidates'
students are charged to the same budget. This runs the real fit skeleton (``Teacher.fit``) with a
dry teacher whose updates charge a process what the teacher's would, and a dry selection whose
candidates charge what their held-out students would (training nothing), and prints updates per
budget under L2T-DLF's former rule (a candidate every 5 episodes, ``select_every_updates=5``) and
under the rule every teacher now shares (``select_every=0.2``), with the candidates scored.
Default spec.

    python benchmarks/budget_episodes.py [--budgets 1000,4000,16000,64000]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import teachers.base
from envs.cost import price
from teachers import TeachingSpec
from teachers.base import Selection, SelectOptions, Teacher
from teachers.l2t_dlf import L2TDLFTeacher
from teachers.l2t_dln import L2TDLNTeacher


@dataclass
class DryConfig(SelectOptions):
    update_cost: float = 1.0
    student_cost: float = 1.0


class Dry(Teacher):
    """A teacher whose update charges ``update_cost`` and whose taught student ``student_cost``."""

    name = "dry"
    Config = DryConfig

    def setup(self, run):
        self.env = run.make_env()

    def next_update(self, run):
        return self.cfg.update_cost

    def update(self, run):
        self.env.unwrapped.process.cost.add("train", self.cfg.update_cost)
        run.report.episodes += 1
        return [{}]

    def student_cost(self, run):
        return self.cfg.student_cost

    def act(self, observation):
        raise NotImplementedError


class DrySelection(Selection):
    def score_students(self, candidate):
        self.env.unwrapped.process.cost.add("train", self.cost)
        return [0.5] * len(self.seeds), [1.0] * len(self.seeds)


def fit(spec: TeachingSpec, budget: int, **options) -> tuple[int, int]:
    """(updates, candidates) of the dry fit."""
    report = Dry(**options).fit(spec, budget)
    return report.episodes, report.selection["candidates"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="1000,4000,16000,64000")
    args = ap.parse_args()
    teachers.base.Selection = DrySelection  # the skeleton's selection, dry
    spec = TeachingSpec()
    dlf, dln = L2TDLFTeacher(), L2TDLNTeacher()
    process = dln.spec_for(spec).make_env().unwrapped.process
    episode = dlf.episode_cost(process, spec)
    k, n = dln.cfg.lookahead, process.dev_subset / process.batch_size
    iteration = price("unroll", 2 * k) + 2 * price("dev_grad", n) + price("train", k)
    per_run = spec.episode_steps // k
    dln_student = per_run * (price("unroll", k) + price("dev_grad", n) + price("train", k))
    print(f"spec: {spec.dataset} {spec.student} {spec.horizon} x {spec.interval} steps")
    print(
        f"l2t-dlf episode {episode:.0f}, selection student {spec.episode_steps}; "
        f"l2t-dln iteration {iteration:.0f}, selection student {dln_student:.0f}"
    )
    print(
        "| budget | L2T-DLF episodes (candidates): every 5 episodes -> every 0.2 of the budget "
        "| L2T-DLN iterations (episodes; candidates): no selection -> every 0.2 |"
    )
    print("|---:|---:|---:|")
    for budget in map(int, args.budgets.split(",")):
        old = fit(spec, budget, update_cost=episode, student_cost=spec.episode_steps,
                  select_every_updates=5)  # fmt: skip
        new = fit(spec, budget, update_cost=episode, student_cost=spec.episode_steps)
        bare = int(budget // iteration)
        it, cand = fit(spec, budget, update_cost=iteration, student_cost=dln_student)
        print(
            f"| {budget:,} | {old[0]} ({old[1]}) -> {new[0]} ({new[1]}) | {bare} "
            f"({bare / per_run:.1f}) -> {it} ({it / per_run:.1f}; {cand}) |"
        )


if __name__ == "__main__":
    main()
