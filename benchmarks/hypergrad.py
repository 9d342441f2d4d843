"""Cost of one L2T-DLF teacher gradient (RMD forward + reverse) against plain training.

For each horizon T in {50, 200, 1000} student steps: the time of one hypergradient
(``teachers.rmd.hypergradient``: the process's fast path storing checkpoints, then the explicit
reverse pass) over the time of T plain steps written the way a researcher would (an nn.Module,
torch.optim.SGD with momentum and weight decay, a LambdaLR schedule) on the same loss (the bilinear
family at its default coefficients) and the same minibatches. Medians of interleaved repeats,
because this machine is shared and noisy. Peak memory of both memory modes (every-step checkpoints,
and checkpoints every sqrt(T) steps with recompute) is measured in a fresh subprocess per case as
the rise of the resident-set high-water mark (VmHWM, reset just before) over the resident set
before the run, with glibc told to mmap blocks >= 64 KiB so that freed memory leaves the set (on CUDA:
torch.cuda.max_memory_allocated).

    OMP_NUM_THREADS=1 python benchmarks/hypergrad.py [--repeats 3] [--device auto]

    OMP_NUM_THREADS=1 python benchmarks/hypergrad.py --split [--repeats 9]

``--split`` times, interleaved, T = 200 plain steps against the hypergradient's two halves: the
recorded forward and the reverse pass (``rmd.reverse``), with the tape keeping each step's
first-layer output (the default) and without (``Tape(keep_outputs=False)``: the reverse step
recomputes x W^T), and prints each as a ratio to the plain steps (fastest and median repeats).

Last line: time_ratio=<hypergradient / T plain steps, T=200> memory_mb_per_step=<peak MB / T,
T=200, every-step checkpoints> time_ratio_best=<the same ratio of the fastest repeats>. The median
is the figure; the ratio of the fastest repeats (timeit's rule: other processes only ever add
time) is printed beside it for a loaded machine, where the medians of both sides move with the load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

from envs.process import TeachingProcess
from students.optim import SGDConfig
from teachers import rmd

HORIZONS = (50, 200, 1000)


def make_process(args: argparse.Namespace, total: int) -> TeachingProcess:
    proc = TeachingProcess(
        args.dataset,
        args.student,
        "bilinear",
        batch_size=args.batch_size,
        optim=SGDConfig(args.lr, 0.9, 5e-4, "cosine", total),
        device=args.device,
    )
    proc.reset(0)
    return proc


def schedule(proc: TeachingProcess, total: int, interval: int) -> torch.Tensor:
    """Default coefficients, one row per interval (what a frozen teacher at init would give)."""
    k = math.ceil(total / interval)
    return proc.family.default_coeffs(proc.dtype, proc.device).repeat(k, 1)


def plain_steps(proc: TeachingProcess, total: int) -> None:
    """`total` plain PyTorch steps on the process's minibatches, from the process's init."""
    model = proc.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(proc.params[name])
    cfg = proc.optim
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: cfg.lr_at(t) / cfg.lr)
    coeffs = proc.family.default_coeffs(proc.dtype, proc.device)
    for t in range(total):
        x, y = proc.batch(t)
        opt.zero_grad(set_to_none=True)
        proc.family(model(x), y, coeffs).backward()
        opt.step()
        sched.step()
    sync(proc.device)


def one_hypergradient(
    proc: TeachingProcess, total: int, interval: int, every: int
) -> rmd.Hypergradient:
    proc.reset(0)
    h = rmd.hypergradient(proc, schedule(proc, total, interval), interval, checkpoint_every=every)
    h.coeff_grads.sum().item()  # the one host sync, at the end
    return h


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    """Peak memory of one hypergradient, printed as JSON (run in a fresh process)."""
    total, every = args.child
    proc = make_process(args, total)
    interval = min(args.interval, total)
    one_hypergradient(proc, min(total, 2 * interval), interval, every)  # warm-up, small
    tape_mb = 0.0
    if proc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
            f.write("5")
        before = rss_mb("VmRSS")
    tape = rmd.Tape(every)
    proc.reset(0)
    with proc.recording(tape):
        for row in schedule(proc, total, interval):
            proc.advance(row, interval)
    tape_mb = tape.nbytes() / 2**20
    rmd.reverse(proc, tape).coeff_grads.sum().item()
    if proc.device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = rss_mb("VmHWM") - before
    print(json.dumps({"peak_mb": peak, "checkpoint_mb": tape_mb}))


def split(args: argparse.Namespace, total: int = 200) -> None:
    """Forward and reverse halves of one hypergradient, with and without kept outputs."""
    proc = make_process(args, total)
    interval = min(args.interval, total)
    rows = schedule(proc, total, interval)

    def forward(keep: bool) -> tuple[rmd.Tape, float]:
        proc.reset(0)
        tape = rmd.Tape(1, keep_outputs=keep)
        t0 = time.perf_counter()
        with proc.recording(tape):
            for row in rows:
                proc.advance(row, interval)
        return tape, time.perf_counter() - t0

    def reverse(tape: rmd.Tape) -> float:
        t0 = time.perf_counter()
        rmd.reverse(proc, tape).coeff_grads.sum().item()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {}
    plain_steps(proc, 20)
    forward(True)
    for i in range(args.repeats):
        proc.reset(0)
        t0 = time.perf_counter()
        plain_steps(proc, total)
        times.setdefault("plain", []).append(time.perf_counter() - t0)
        for keep in (True, False) if i % 2 == 0 else (False, True):
            tape, f = forward(keep)
            name = "kept" if keep else "recomputed"
            times.setdefault(f"forward, outputs {name}", []).append(f)
            times.setdefault(f"reverse, outputs {name}", []).append(reverse(tape))
            del tape
    p, pm = min(times["plain"]), statistics.median(times["plain"])
    print(f"T={total}: ratio to {total} plain steps (fastest / median of {args.repeats} repeats)")
    for name, ts in times.items():
        fast, med = min(ts), statistics.median(ts)
        print(
            f"{name:>28} {1e3 * fast:8.1f} ms {fast / p:5.2f}x   {1e3 * med:8.1f} ms {med / pm:5.2f}x"
        )


def measure_memory(args: argparse.Namespace, total: int, every: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(total), str(every)]
    cmd += ["--device", args.device, "--student", args.student, "--dataset", args.dataset]
    # large blocks through mmap, so freed memory leaves the resident set and VmHWM sees the peak
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interval", type=int, default=50, help="student steps per coefficient row")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--student", default="mlp")
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS))
    ap.add_argument("--split", action="store_true", help="time the forward and reverse halves")
    ap.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.child:
        child(args)
        return
    if args.split:
        split(args)
        return

    print(
        f"student={args.student} dataset={args.dataset} batch={args.batch_size} "
        f"torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    print(
        f"{'T':>5} {'plain ms':>9} {'hypergrad ms':>13} {'time_ratio':>10} "
        f"{'peak MB k=1':>12} {'peak MB k=sqrtT':>16} {'k':>3}"
    )
    result = {}
    for total in args.horizons:
        proc = make_process(args, total)
        interval = min(args.interval, total)
        plain_steps(proc, min(total, 20))  # warm-up both
        one_hypergradient(proc, min(total, 20), min(interval, 20), 1)
        plain, hyper = [], []
        for _ in range(args.repeats):
            proc.reset(0)
            t0 = time.perf_counter()
            plain_steps(proc, total)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            one_hypergradient(proc, total, interval, 1)
            hyper.append(time.perf_counter() - t0)
        p, h = statistics.median(plain), statistics.median(hyper)
        best = min(hyper) / min(plain)
        every = max(1, round(math.sqrt(total)))
        mem1 = measure_memory(args, total, 1)
        memk = measure_memory(args, total, every)
        result[total] = (h / p, mem1["peak_mb"] / total, best)
        print(
            f"{total:>5} {1e3 * p:>9.1f} {1e3 * h:>13.1f} {h / p:>10.2f} "
            f"{mem1['peak_mb']:>12.1f} {memk['peak_mb']:>16.1f} {every:>3}   "
            f"(checkpoints {mem1['checkpoint_mb']:.1f} / {memk['checkpoint_mb']:.1f} MB; "
            f"fastest repeats {best:.2f})",
            flush=True,
        )
    key = 200 if 200 in result else args.horizons[0]
    ratio, per_step, best = result[key]
    print(f"time_ratio={ratio:.3f} memory_mb_per_step={per_step:.3f} time_ratio_best={best:.3f}")


if __name__ == "__main__":
    main()
