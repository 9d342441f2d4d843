"""DefaultState: each feature's value against a hand computation from the student itself."""

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from envs.process import TeachingProcess
from envs.state import DefaultState
from students.optim import SGDConfig

C = 10


def dev_by_hand(proc):
    n = proc.dev_subset
    x, y = proc.data.x_dev[:n], proc.data.y_dev[:n]
    with torch.no_grad():
        proc.model.eval()
        logits = functional_call(proc.model, (proc.params, proc.buffers), (x,))
        proc.model.train()
    ce = torch.nn.functional.cross_entropy(logits, y).item()
    return ce, (logits.argmax(-1) == y).double().mean().item()


def features(proc):
    return dict(zip(DefaultState.names, DefaultState()(proc).tolist(), strict=True))


@pytest.fixture(scope="module")
def proc():
    p = TeachingProcess(
        "mnist5k",
        "mlp",
        "bilinear",
        batch_size=32,
        dev_subset=96,
        optim=SGDConfig(lr=0.1, schedule="cosine", total_steps=60),
        device="cpu",
        dtype=torch.float64,
        student_kwargs={"hidden": 32},
    )
    p.reset(0)
    return p


def test_features_after_reset_are_the_initial_student(proc):
    f = features(proc)
    dev_ce, dev_acc = dev_by_hand(proc)
    assert f["progress"] == 0 and f["lr_ratio"] == 1
    assert f["dev_ce"] == pytest.approx(dev_ce / math.log(C), abs=1e-9)
    assert f["dev_accuracy"] == pytest.approx(dev_acc, abs=1e-9)
    # before any training the train features are the dev ones; nothing moved yet
    assert f["train_ce"] == f["dev_ce"] and f["train_accuracy"] == f["dev_accuracy"]
    assert f["best_dev_accuracy"] == f["dev_accuracy"]
    for name in ("update_norm", "coeff_mean_shift", "coeff_abs_shift", "coeff_max_shift"):
        assert f[name] == 0, name
    assert f["family_loss"] == 0


def test_features_after_an_interval_away_from_the_default(proc):
    fam = proc.family
    rng = np.random.default_rng(0)
    action = rng.uniform(-0.3, 0.3, fam.dim)
    coeffs = fam.action_to_coeffs(action)
    first = proc.observe()["dev_accuracy"]  # the process keeps the best accuracy it observed
    interval = proc.advance(coeffs, 20)
    f = features(proc)
    dev_ce, dev_acc = dev_by_hand(proc)
    assert f["progress"] == pytest.approx(20 / 60)
    assert f["lr_ratio"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 60)))
    assert f["dev_ce"] == pytest.approx(dev_ce / math.log(C), abs=1e-9)
    assert f["dev_accuracy"] == pytest.approx(dev_acc, abs=1e-9)
    assert f["best_dev_accuracy"] == pytest.approx(max(first, dev_acc), abs=1e-9)
    assert f["train_ce"] == pytest.approx(interval["train_ce"].item() / math.log(C), abs=1e-9)
    assert f["train_accuracy"] == pytest.approx(interval["train_accuracy"].item(), abs=1e-6)
    norm = math.sqrt(sum((v**2).sum().item() for v in proc.velocity.values()))
    assert norm > 0 and f["update_norm"] == pytest.approx(math.log1p(norm), abs=1e-9)
    phi = coeffs[: C * C].reshape(C, C).numpy()
    b = coeffs[C * C :].numpy()
    off = phi - np.diag(np.diag(phi))
    assert f["coeff_mean_shift"] == pytest.approx(np.diag(phi).mean() - 1, abs=1e-9)
    assert f["coeff_abs_shift"] == pytest.approx(np.abs(off).sum() / (C * C), abs=1e-9)
    assert f["coeff_max_shift"] == pytest.approx((b - math.log(C)).mean(), abs=1e-9)
    loss = interval["loss"].item()
    assert loss < 0  # the bilinear loss is -sigmoid(.)
    assert f["family_loss"] == pytest.approx(-math.log1p(-loss), abs=1e-9)
