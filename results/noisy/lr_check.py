"""Dev-only student-lr check for the fixed baselines under 40% symmetric label noise (mnist5k,
mlp, one 600-step episode, 2 students). Usage, from the repository root:

    PYTHONPATH=. OMP_NUM_THREADS=1 python results/noisy/lr_check.py --lrs 0.03,0.1,0.3 \
        --teachers ce,label-smoothing,gce
"""

import argparse

import torch

from teachers import EnvSpec, make_teacher

parser = argparse.ArgumentParser()
parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03,0.1,0.3")
parser.add_argument("--teachers", default="ce,label-smoothing,gce")
args = parser.parse_args()
torch.set_num_threads(1)
for lr in map(float, args.lrs.split(",")):
    spec = EnvSpec(label_noise=0.4, device="cpu", lr=lr)
    for name in args.teachers.split(","):
        teacher = make_teacher(name)
        # seeds below 2**31: disjoint from the comparison's taught students (2**31 + ...)
        errs = [teacher.teach(spec, seed=2**31 - 1 - s).final["dev_error"] for s in range(2)]
        print(f"lr={lr} {name} dev_error={sum(errs) / len(errs):.4f} {errs}", flush=True)
