"""What a budget buys the gradient teachers, before and after their extra passes were charged.

Before, a budget counted forward student steps only: an L2T-DLF training episode cost its T steps
(its reverse pass was free) and an L2T-DLN fit iteration its 2K look-ahead and committed steps.
Now the process charges every pass at its envs/cost.py price. This runs L2T-DLF's real fit loop
(``Teacher.fit``: the skeleton, the teacher's plan of selections and episodes) with each update
charging the process what it would without training anything, once at each price, and prints
training episodes per budget; L2T-DLN iterations are budget // iteration cost. Default spec.

    python benchmarks/budget_episodes.py [--budgets 1000,4000,16000,64000]
"""

from __future__ import annotations

import argparse

from envs.cost import price
from teachers import TeachingSpec
from teachers.l2t_dlf import L2TDLFTeacher
from teachers.l2t_dln import L2TDLNTeacher


class DryDLF(L2TDLFTeacher):
    """L2T-DLF's plan through the real skeleton; updates charge their cost and train nothing."""

    def __init__(self, forward_only: bool) -> None:
        super().__init__()
        self.forward_only = forward_only

    def episode_cost(self, process, spec) -> float:
        return spec.episode_steps if self.forward_only else super().episode_cost(process, spec)

    def train_episode(self, env, seed, opt) -> list[dict]:
        env.unwrapped.process.cost.add("train", self._train_cost)
        return [{"updated": True}]

    def _select(self, run) -> dict:
        self._env.unwrapped.process.cost.add("train", self._select_cost)
        self._best = (0.0, 0.0)
        return {"kind": "select"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="1000,4000,16000,64000")
    args = ap.parse_args()
    spec = TeachingSpec()
    dln = L2TDLNTeacher()
    process = dln.spec_for(spec).make_env().unwrapped.process
    k, n = dln.cfg.lookahead, process.dev_subset / process.batch_size
    iteration = price("unroll", 2 * k) + 2 * price("dev_grad", n) + price("train", k)
    per_run = spec.episode_steps // k
    print(f"spec: {spec.dataset} {spec.student} {spec.horizon} x {spec.interval} steps")
    print(f"l2t-dlf episode: {spec.episode_steps} before, "
          f"{DryDLF(False).episode_cost(process, spec):.0f} now; "
          f"l2t-dln iteration: {2 * k} before, {iteration:.0f} now")  # fmt: skip
    print("| budget | l2t-dlf episodes (before -> now) | l2t-dln iterations (episodes) |")
    print("|---:|---:|---:|")
    for budget in map(int, args.budgets.split(",")):
        before, now = (DryDLF(f).fit(spec, budget).episodes for f in (True, False))
        it_before, it_now = budget // (2 * k), int(budget // iteration)
        print(
            f"| {budget:,} | {before} -> {now} | {it_before} ({it_before / per_run:.1f}) -> "
            f"{it_now} ({it_now / per_run:.1f}) |"
        )


if __name__ == "__main__":
    main()
