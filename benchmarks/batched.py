"""Student SGD steps per second: N students in one BatchedTeachingProcess vs N single processes.

For each student and N, both sides train the same N students (seeds 0..N-1, mnist5k, batch 64,
the bilinear family at its default coefficients, momentum SGD with the cosine schedule) for
`--steps` student steps each: the batched side in one vmapped step per student step
(envs/batched.py), the other side N ``TeachingProcess``es one after another on their fast path
(``train``, in place, no host sync). Repeats are interleaved and the medians compared, because
this machine is shared and noisy; the ratio is what to read, not the absolute rates.

    OMP_NUM_THREADS=1 python benchmarks/batched.py [--ns 1,8,32,128] [--students mlp,mlp-32]
    python benchmarks/batched.py --device cuda --ns 1,8,32,64,128      # on a GPU machine

`mlp` is the default 784-256-10 student; `mlp-32` a 784-32-10 one; any registered student name
works (e.g. `lenet`, `resnet8`). Last line: speedup_32=<batched / single steps per second for the
first student at N=32> (or the largest N below 32 when 32 is not run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from envs.batched import BatchedTeachingProcess
from envs.process import TeachingProcess
from students.optim import SGDConfig

ALIASES = {"mlp-32": ("mlp", {"hidden": 32})}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(student: str, n: int, steps: int, repeats: int, device: str) -> tuple[float, float]:
    """(batched, single) student SGD steps per second, medians over interleaved repeats."""
    name, kwargs = ALIASES.get(student, (student, {}))
    common = dict(
        batch_size=64, optim=SGDConfig(total_steps=10_000), device=device, student_kwargs=kwargs
    )
    batched = BatchedTeachingProcess("mnist5k", name, "bilinear", n, **common)
    batched.reset(list(range(n)))
    singles = [TeachingProcess("mnist5k", name, "bilinear", **common) for _ in range(n)]
    for seed, p in enumerate(singles):
        p.reset(seed)
    coeffs = batched.family.default_coeffs(batched.dtype, batched.device)
    dev = batched.device

    def run_batched():
        batched.advance(coeffs, steps)
        sync(dev)

    def run_singles():
        for p in singles:
            p.advance(coeffs, steps)
        sync(dev)

    run_batched(), run_singles()  # warm-up: first-call costs, epoch permutations
    t_batched, t_single = [], []
    for _ in range(repeats):
        t_batched.append(timed(run_batched))
        t_single.append(timed(run_singles))
    work = n * steps
    return work / statistics.median(t_batched), work / statistics.median(t_single)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="1,8,32,128", help="numbers of students, comma-separated")
    ap.add_argument("--students", default="mlp,mlp-32", help="first one gives speedup_32")
    ap.add_argument("--steps", type=int, default=20, help="student steps per student per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    ns = [int(v) for v in args.ns.split(",")]
    students = args.students.split(",")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    print(f"{'student':>8} {'N':>5} {'batched steps/s':>16} {'single steps/s':>15} {'speedup':>8}")
    speedups: dict[tuple[str, int], float] = {}
    for student in students:
        for n in ns:
            b, s = bench(student, n, args.steps, args.repeats, args.device)
            speedups[student, n] = b / s
            print(f"{student:>8} {n:>5} {b:>16.1f} {s:>15.1f} {b / s:>8.2f}", flush=True)
    key_n = max((n for n in ns if n <= 32), default=ns[0])
    print(f"speedup_32={speedups[students[0], key_n]:.3f}")


if __name__ == "__main__":
    main()
