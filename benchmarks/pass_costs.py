"""What each kind of student-sized pass costs, in training steps: the figures behind envs.cost.KINDS.

One process (the default student: mlp 784-256-10 on mnist5k, batch 64, the bilinear family at its
default coefficients, momentum SGD with the cosine schedule), and for each kind of pass the
process runs, the time per unit, measured side by side (repeats interleaved, medians):

    train      advance(coeffs, S): S committed fast-path steps
    lookahead  lookahead(coeffs, S): S fast-path steps, not committed
    unroll     lookahead(coeffs, S, differentiable=True) and one backward through the S steps
               (to the coefficients and the starting weights), per step
    recompute  replay(state, S, ...): the RMD recompute of S steps
    reverse    step_vjp(...) S times: RMD reverse steps
    dev_grad   dev_objective(w) and its gradient in w, per batch_size dev examples

    python benchmarks/pass_costs.py [--steps 50] [--repeats 15] [--device auto] [--loss bilinear]

Last line: the ratios to ``train``, ``key=value``, what envs/cost.py's KINDS holds (rounded).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from envs import LossTeachingEnv
from envs.process import StudentState


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="S, passes per timed unit")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--student", default="mlp")
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--loss", default="bilinear")
    args = ap.parse_args()

    env = LossTeachingEnv(args.dataset, args.student, args.loss, device=args.device)
    proc = env.process
    proc.reset(0)
    S = args.steps
    coeffs = proc.family.default_coeffs(proc.dtype, proc.device)
    proc.advance(coeffs, S)  # a student past its first steps; every pass starts from here
    start = proc.state.clone()
    gen = torch.Generator().manual_seed(0)
    probe = {k: torch.randn(p.shape, generator=gen).to(p) for k, p in start.params.items()}
    adj_w = [torch.randn(p.shape, generator=gen).to(p) for p in start.params.values()]
    adj_v = [torch.zeros_like(p) for p in start.params.values()]
    dev_units = proc.dev_subset / proc.batch_size

    def train() -> None:
        proc.restore(start.clone())
        proc.advance(coeffs, S)

    def lookahead() -> None:
        proc.lookahead(coeffs, S, state=start)

    def unroll() -> None:
        c = coeffs.clone().requires_grad_(True)
        w0 = {k: p.clone().requires_grad_(True) for k, p in start.params.items()}
        end, _ = proc.lookahead(c, S, differentiable=True, state=start._replace(params=w0))
        m = sum((end.params[k] * probe[k]).sum() for k in probe)  # a scalar of w_S
        torch.autograd.grad(m, [c, *w0.values()])

    def recompute() -> None:
        proc.replay(start, S, lambda t: coeffs)

    def reverse() -> None:
        dw, dv = adj_w, adj_v
        for t in range(S):
            state = StudentState(start.params, start.velocity, start.buffers, start.step + t)
            dw, dv, _ = proc.step_vjp(state, coeffs, dw, dv)

    def dev_grad() -> None:
        w = {k: p.detach().requires_grad_(True) for k, p in start.params.items()}
        with torch.enable_grad():
            m = proc.dev_objective(w)
            torch.autograd.grad(m, list(w.values()))

    kinds = {
        "train": (train, S),
        "lookahead": (lookahead, S),
        "unroll": (unroll, S),
        "recompute": (recompute, S),
        "reverse": (reverse, S),
        "dev_grad": (dev_grad, dev_units),
    }
    for fn, _ in kinds.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for kind, (fn, units) in kinds.items():
            sync(proc.device)
            t0 = time.perf_counter()
            fn()
            sync(proc.device)
            times[kind].append((time.perf_counter() - t0) / units)
    per_unit = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"device={proc.device} student={args.student} dataset={args.dataset} loss={args.loss} "
        f"batch={proc.batch_size} dev_subset={proc.dev_subset} S={S} repeats={args.repeats} "
        f"threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    print(f"{'kind':<10} {'ms/unit':>9} {'x train':>8}")
    for kind, t in per_unit.items():
        print(f"{kind:<10} {1e3 * t:9.3f} {t / per_unit['train']:8.2f}")
    print(" ".join(f"{k}={t / per_unit['train']:.2f}" for k, t in per_unit.items()))


if __name__ == "__main__":
    main()
