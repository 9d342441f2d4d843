"""Cost of teaching through the env: `interval` student steps via env.step vs. a hand-written loop.

Both sides train the default student (mlp on mnist5k, batch 64) with the same loss (the bilinear
family at its default coefficients), the same momentum SGD + schedule and the same minibatches
(the env's own seeded index stream). The hand loop is what a researcher would write without the
env: an nn.Module, torch.optim.SGD, a LambdaLR schedule. The env side also computes its observation
(a dev-subset forward pass) once per env step; the hand loop does not. Repeats are interleaved and
the medians compared, because this machine is noisy.

    python benchmarks/env_overhead.py [--interval 50] [--repeats 7] [--device auto]

Last line: overhead_ratio=<env time / hand time>.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from envs import LossTeachingEnv


def hand_loop(env: LossTeachingEnv, steps: int, start: int) -> None:
    """`steps` plain PyTorch steps on the env's minibatches from step `start` (fresh student)."""
    proc = env.unwrapped.process
    model = proc.model
    cfg = proc.optim
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: cfg.lr_at(t) / cfg.lr)
    coeffs = proc.family.default_coeffs(proc.dtype, proc.device)
    batches = [proc.batch(start + i) for i in range(steps)]
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = proc.family(model(x), y, coeffs)
        loss.backward()
        opt.step()
        sched.step()
    sync(proc.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--env-steps", type=int, default=6, help="env steps timed per repeat")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--student", default="mlp")
    ap.add_argument("--dataset", default="mnist5k")
    args = ap.parse_args()

    env = LossTeachingEnv(
        args.dataset,
        args.student,
        "bilinear",
        interval=args.interval,
        horizon=args.env_steps,
        device=args.device,
    )
    action = env.family.default_action()
    steps = args.interval * args.env_steps
    env.reset(seed=0)  # warm-up both paths
    env.step(action)
    hand_loop(env, args.interval, 0)

    env_times, hand_times, state_times = [], [], []
    for _ in range(args.repeats):
        env.reset(seed=0)
        t0 = time.perf_counter()
        for _ in range(args.env_steps):
            env.step(action)
        sync(env.process.device)
        env_times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        hand_loop(env, steps, 0)
        hand_times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        for _ in range(args.env_steps):
            # restore(state) invalidates the cached dev metrics: each observation pays its pass
            env.process.restore(env.process.state)
            env._observe()
        sync(env.process.device)
        state_times.append(time.perf_counter() - t0)

    env_med, hand_med = statistics.median(env_times), statistics.median(hand_times)
    state_med = statistics.median(state_times)
    print(
        f"device={env.process.device} student={args.student} interval={args.interval} "
        f"steps/repeat={steps} repeats={args.repeats} torch={torch.__version__}"
    )
    print(f"env.step:   {1e3 * env_med / steps:.3f} ms/student step (median)")
    print(f"hand loop:  {1e3 * hand_med / steps:.3f} ms/student step (median)")
    print(
        f"observation: {1e3 * state_med / args.env_steps:.3f} ms/env step "
        f"({100 * state_med / env_med:.1f}% of env time)"
    )
    print(f"training_only_ratio={(env_med - state_med) / hand_med:.3f}")
    print(f"overhead_ratio={env_med / hand_med:.3f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
