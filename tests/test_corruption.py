"""students.corruption: label noise and long-tailed imbalance on the training split only."""

from __future__ import annotations

import pytest
import torch

from envs.process import TeachingProcess
from students.corruption import corrupt, long_tail_counts
from students.data import from_tensors, load_dataset


@pytest.fixture(scope="module")
def splits():
    return load_dataset("mnist5k")


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_noise_flips_the_asked_fraction_of_train_only(splits, kind):
    noisy, report = corrupt(splits, label_noise=0.4, label_noise_kind=kind, seed=3)
    flipped = noisy.y_train != splits.y_train
    n = len(splits.y_train)
    assert int(flipped.sum()) == round(0.4 * n)
    assert report["train_flipped_fraction"] == pytest.approx(round(0.4 * n) / n)
    assert torch.equal(noisy.x_train, splits.x_train)
    for name in ("x_dev", "y_dev", "x_test", "y_test", "mean", "std"):
        assert torch.equal(getattr(noisy, name), getattr(splits, name)), name
    if kind == "pairflip":
        C = splits.num_classes
        assert torch.equal(noisy.y_train[flipped], (splits.y_train[flipped] + 1) % C)
    else:  # uniform over the other classes: every (true, noisy) off-diagonal pair occurs
        pairs = splits.y_train[flipped] * 10 + noisy.y_train[flipped]
        assert len(pairs.unique()) == 90


def test_noise_is_deterministic_per_seed_and_differs_across_seeds(splits):
    a, _ = corrupt(splits, label_noise=0.2, seed=1)
    b, _ = corrupt(splits, label_noise=0.2, seed=1)
    c, _ = corrupt(splits, label_noise=0.2, seed=2)
    assert torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_train, c.y_train)


def test_noisy_dev_corrupts_dev_but_never_test(splits):
    noisy, report = corrupt(splits, label_noise=0.3, noisy_dev=True)
    n_dev = len(splits.y_dev)
    assert int((noisy.y_dev != splits.y_dev).sum()) == round(0.3 * n_dev)
    assert report["dev_flipped_fraction"] == pytest.approx(round(0.3 * n_dev) / n_dev)
    assert torch.equal(noisy.y_test, splits.y_test)


def test_imbalance_gives_the_exponential_profile(splits):
    lt, report = corrupt(splits, imbalance=10.0)
    counts = torch.bincount(lt.y_train, minlength=10).tolist()
    n_max = int(torch.bincount(splits.y_train).min())
    assert counts == report["train_class_counts"] == long_tail_counts([n_max] * 10, 10.0)
    assert counts[0] == n_max and counts[-1] == n_max // 10
    assert counts == sorted(counts, reverse=True)
    assert counts[4] == int(n_max * 10 ** (-4 / 9))
    assert torch.equal(lt.y_dev, splits.y_dev) and torch.equal(lt.y_test, splits.y_test)
    # the kept examples are training examples with their own labels
    both, _ = corrupt(splits, imbalance=10.0, label_noise=0.5)
    assert len(both.y_train) == sum(counts)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"label_noise": -0.1}, "label_noise"),
        ({"label_noise": 1.0}, "label_noise"),
        ({"label_noise": "a lot"}, "label_noise"),
        ({"label_noise_kind": "asymmetric", "label_noise": 0.1}, "symmetric"),
        ({"imbalance": 0.5}, "imbalance"),
        ({"imbalance": float("inf")}, "imbalance"),
        ({"imbalance": 1e6}, "rarest class"),
    ],
)
def test_bad_values_are_clear_errors(splits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        corrupt(splits, **kwargs)


def test_env_applies_and_reports_the_noise():
    x = torch.randn(200, 6)
    y = torch.arange(200) % 4
    s = from_tensors(x, y, x[:40], y[:40], dev_size=40)
    proc = TeachingProcess(s, "mlp", "ce", label_noise=0.25, device="cpu", batch_size=16)
    assert proc.corruption["train_flipped_fraction"] == pytest.approx(0.25)
    assert int((proc.data.y_train != s.y_train).sum()) == 40
    assert torch.equal(proc.data.y_dev, s.y_dev)
    with pytest.raises(ValueError, match="label_noise_kind"):
        TeachingProcess(s, "mlp", "ce", label_noise=0.1, label_noise_kind="pair", device="cpu")
