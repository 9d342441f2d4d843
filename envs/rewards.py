"""Reward functions: ``reward(prev, cur, done) -> float`` from two metric dicts.

``prev`` and ``cur`` are the env's ``info`` metrics before and after an env step (dev accuracy and
loss on the fixed dev subset, train metrics); ``done`` is True on the episode's last step. The
default, a dense change of dev accuracy, sums over an episode to final minus initial dev accuracy,
so a teacher that ends with the better student earns the larger return.
"""

from __future__ import annotations

from collections.abc import Callable

RewardFunction = Callable[[dict, dict, bool], float]


def dev_accuracy_delta(prev: dict, cur: dict, done: bool) -> float:
    """r_t = acc_dev(t) - acc_dev(t - 1) (ALA-style dense reward)."""
    return cur["dev_accuracy"] - prev["dev_accuracy"]


def terminal_dev_accuracy(prev: dict, cur: dict, done: bool) -> float:
    """0 until the horizon, then the final dev accuracy (L2T-DLF's objective)."""
    return cur["dev_accuracy"] if done else 0.0


def dev_loss_delta(prev: dict, cur: dict, done: bool) -> float:
    """r_t = CE_dev(t - 1) - CE_dev(t): smoother than accuracy, same sign convention."""
    return prev["dev_loss"] - cur["dev_loss"]


REWARDS: dict[str, RewardFunction] = {
    "dev-accuracy-delta": dev_accuracy_delta,
    "terminal": terminal_dev_accuracy,
    "dev-loss-delta": dev_loss_delta,
}
