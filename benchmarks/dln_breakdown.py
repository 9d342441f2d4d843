"""Where one L2T-DLN iteration's wall time goes, in plain cross-entropy steps of the same student.

One iteration acts every K = ``lookahead`` student steps. Timed parts (median of interleaved
repeats, the student 0-K steps into its run, default teacher options, 5,000 DLN coordinates):

* ``plain``: K plain CE steps (nn.Module, F.cross_entropy, torch.optim.SGD with the spec's
  momentum and weight decay): the unit;
* ``commit``: the env's K committed steps under the DLN (``process.advance``, fast path);
* ``stage1``: the differentiable K-step look-ahead and its CE_val gradient to phi
  (``lookahead_hypergradient``), what teaching runs per iteration besides the commit;
* ``lstm``: T_psi's forward over the 5,000 coordinates without a graph (teaching);
* ``learn``: a whole fit iteration's decision (``learn_step``: stage 1, the LSTM with psi's
  graph, stage 3's look-ahead, the backward to psi, Adam).

    OMP_NUM_THREADS=1 python benchmarks/dln_breakdown.py [--repeats 7] [--update-every 40,60]

With ``update_every`` = N > K (one teacher iteration per N student steps, the look-ahead over
the first K of them), an iteration is the same parts with N / K commits instead of one; the
per-step figures for each N given are computed from the same medians, one line each:
``update_every=<N> teach_per_step=<(N/K commit + stage1 + lstm) / (N/K plain)>
fit_per_step=<(N/K commit + learn) / (N/K plain)>``.

``--profile-teach`` instead profiles one whole taught student (cProfile; after a 300-step fit so
that psi is not the identity start, and one taught student to warm up) and prints the share of
its wall time in stage 1 (``lookahead_hypergradient``), the LSTM (``CoordinateLSTM.forward``),
the env's steps (the commit ``advance`` and the observation) and the rest.

Last line: ``teach_per_step=<(commit + stage1 + lstm) / plain>``
``fit_per_step=<(commit + learn) / plain>``, per committed student step, in plain CE steps
(N = K, the default).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch
import torch.nn.functional as F

from teachers import TeachingSpec, make_teacher
from teachers.l2t_dln import lookahead_hypergradient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile-teach", action="store_true", help="profile one taught student")
    parser.add_argument(
        "--update-every", default="", help="comma-separated N > K to project the per-step cost to"
    )
    args = parser.parse_args()
    windows = [int(n) for n in args.update_every.split(",") if n.strip()]
    if args.profile_teach:
        profile_teach()
        return
    teacher = make_teacher("l2t-dln")
    k = teacher.cfg.lookahead
    spec = teacher.spec_for(TeachingSpec())
    env = spec.make_env()
    env.reset(seed=0)
    teacher.begin_episode(env)
    proc = env.unwrapped.process
    phi = teacher.phi
    model, cfg = proc.model, proc.optim
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )

    def plain() -> None:
        for t in range(k):
            x, y = proc.batch(t)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

    grad = torch.randn(proc.family.dim, dtype=proc.dtype)

    def lstm() -> None:
        with torch.no_grad():
            teacher.lstm(grad, teacher.memory)

    parts = {
        "plain": plain,
        "commit": lambda: proc.advance(phi, k),
        "stage1": lambda: lookahead_hypergradient(proc, phi, k),
        "lstm": lstm,
        "learn": lambda: teacher.learn_step(proc, k),
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(args.repeats):
        for name, fn in parts.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    print(f"K = {k}; ms per iteration (median of {args.repeats}); x = over K plain CE steps")
    for name, v in ms.items():
        print(f"{name:<8}{v:>9.1f} ms{v / ms['plain']:>8.2f} x")
    for n in windows:
        r = n / k  # commits (and plain K-step blocks) per iteration
        teach = (r * ms["commit"] + ms["stage1"] + ms["lstm"]) / (r * ms["plain"])
        fit = (r * ms["commit"] + ms["learn"]) / (r * ms["plain"])
        print(f"update_every={n} teach_per_step={teach:.2f} fit_per_step={fit:.2f}")
    teach = (ms["commit"] + ms["stage1"] + ms["lstm"]) / ms["plain"]
    fit = (ms["commit"] + ms["learn"]) / ms["plain"]
    print(f"teach_per_step={teach:.2f} fit_per_step={fit:.2f}")


def profile_teach() -> None:
    """Where one taught default student's wall time goes, by cProfile's cumulative times."""
    teacher = make_teacher("l2t-dln")
    spec = TeachingSpec()
    teacher.fit(spec, 300, seed=0)
    teacher.teach(spec, seed=1)  # warm: the BCE warm start, allocator, caches
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    teacher.teach(spec, seed=0)
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)

    def cumulative(name: str, file_end: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[2] == name and k[0].endswith(file_end))

    parts = {
        "stage 1 (look-ahead + CE_val gradient)": cumulative(
            "lookahead_hypergradient", "l2t_dln.py"
        ),
        "LSTM forward": cumulative("forward", "l2t_dln.py"),
        "commit (advance)": cumulative("advance", "process.py"),
        "env step besides the commit": cumulative("step", "loss_teaching.py")
        - cumulative("advance", "process.py"),
    }
    parts["the rest"] = total - sum(parts.values())
    print(f"one taught student, {spec.episode_steps} steps: {total:.2f} s (under cProfile)")
    for name, seconds in parts.items():
        print(f"{name:<40}{seconds:>8.2f} s{100 * seconds / total:>7.1f} %")


if __name__ == "__main__":
    main()
