"""Students: parameter counts against closed forms, functional forward, seeded init, vmap."""

import math

import pytest
import torch
from torch.func import functional_call, vmap

from students.models import STUDENTS, build_student, count_parameters, init_student

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def he_resnet_count(n: int, widths=(16, 32, 64), shortcut="A", fc_in=None, c=3, k=10) -> int:
    """Closed form for a CIFAR ResNet-(6n+2): conv3x3 without bias, BN = 2 per channel."""
    total = 9 * c * widths[0] + 2 * widths[0]
    prev = widths[0]
    for w in widths:
        total += 9 * prev * w + 9 * w * w + 4 * w  # first block of the stage
        if shortcut == "B" and prev != w:
            total += prev * w + 2 * w  # 1x1 conv + BN
        total += (n - 1) * (18 * w * w + 4 * w)
        prev = w
    fc_in = fc_in or widths[-1]
    return total + fc_in * k + k


@pytest.mark.parametrize(
    "name, n, paper",
    [("resnet8", 1, 78_000), ("resnet20", 3, 270_000), ("resnet32", 5, 460_000)],
)
def test_he_resnet_counts(name, n, paper):
    count = count_parameters(build_student(name, CIFAR, 10))
    assert count == he_resnet_count(n)  # 75,290 / 269,722 / 464,154
    assert abs(count - paper) / paper < 0.05  # He et al. 2016 Table 6: 0.27M, 0.46M


@pytest.mark.parametrize(
    "name, n, reported",
    [("resnet8-wide", 1, 1.24e6), ("resnet20-wide", 3, 4.34e6), ("resnet32-wide", 5, 7.44e6)],
)
def test_l2t_dln_wide_resnet_counts(name, n, reported):
    count = count_parameters(build_student(name, CIFAR, 10))
    # 64/128/256 widths, 4x4 pool on the 8x8 map -> 256 x 2 x 2 = 1024 classifier inputs
    assert count == he_resnet_count(n, (64, 128, 256), shortcut="B", fc_in=1024)
    assert abs(count - reported) / reported < 0.01


def test_wrn_16_4_count():
    # Zagoruyko & Komodakis 2016, Table 1: WRN-16-4 has 2.7M parameters (2,748,890 exactly).
    assert count_parameters(build_student("wrn", CIFAR, 10)) == 2_748_890
    assert count_parameters(build_student("wrn", CIFAR, 10, depth=10, widen=1)) < 100_000


@pytest.mark.parametrize("shape", [MNIST, CIFAR])
def test_lenet_and_mlp_counts(shape):
    c = shape[0]
    lenet = (
        (6 * 25 * c + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    )
    assert count_parameters(build_student("lenet", shape, 10)) == lenet
    d = math.prod(shape)
    assert count_parameters(build_student("mlp", shape, 10)) == d * 256 + 256 + 256 * 10 + 10
    deep = build_student("mlp", shape, 10, hidden=(64, 32))
    assert count_parameters(deep) == d * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10


@pytest.mark.parametrize("shape", [MNIST, CIFAR])
@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_functional_forward_gives_logits(name, shape):
    model = build_student(name, shape, 10)
    params, buffers = init_student(model, torch.Generator().manual_seed(0))
    assert params.keys() == dict(model.named_parameters()).keys()
    assert buffers.keys() == dict(model.named_buffers()).keys()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    logits = functional_call(model, (params, buffers), (x,))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    # Two paths agree: the functional call equals the module holding the same state.
    model.eval()
    model.load_state_dict({**params, **buffers})
    torch.testing.assert_close(functional_call(model, (params, buffers), (x,)), model(x))


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_init_is_seeded_and_leaves_global_rng_alone(name):
    rng = torch.random.get_rng_state()
    model = build_student(name, CIFAR, 10)
    p0, b0 = init_student(model, torch.Generator().manual_seed(7))
    p0_again, b0_again = init_student(model, torch.Generator().manual_seed(7))
    p1, b1 = init_student(model, torch.Generator().manual_seed(8))
    assert torch.equal(rng, torch.random.get_rng_state())
    for key in p0:
        torch.testing.assert_close(p0[key], p0_again[key], rtol=0, atol=0)
    for key in b0:
        torch.testing.assert_close(b0[key], b1[key], rtol=0, atol=0)  # buffers have no randomness
    drawn = [k for k in p0 if k.endswith("weight") and p0[k].dim() > 1]
    assert drawn and all(not torch.equal(p0[k], p1[k]) for k in drawn)


def test_init_follows_the_named_schemes():
    params, buffers = init_student(
        build_student("resnet20", CIFAR, 10), torch.Generator().manual_seed(0)
    )
    conv = params["features.9.conv2.weight"]  # 64 x 64 x 3 x 3, 36,864 draws
    assert conv.shape == (64, 64, 3, 3)
    expected_std = math.sqrt(2 / (64 * 9))  # Kaiming normal, fan_out, ReLU gain
    assert abs(conv.std().item() / expected_std - 1) < 0.03
    bound = 1 / math.sqrt(64)  # PyTorch's Linear default: U(+-1/sqrt(fan_in)) for both
    assert params["fc.weight"].abs().max() <= bound and params["fc.bias"].abs().max() <= bound
    assert torch.equal(params["features.1.weight"], torch.ones(16))
    assert torch.equal(buffers["features.1.running_var"], torch.ones(16))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet8"])
def test_vmap_over_stacked_students_equals_separate_calls(name, train):
    model = build_student(name, MNIST, 10).train(train)
    students = [init_student(model, torch.Generator().manual_seed(s)) for s in (0, 1)]
    params = {k: torch.stack([p[k] for p, _ in students]) for k in students[0][0]}
    buffers = {k: torch.stack([b[k] for _, b in students]) for k in students[0][1]}
    x = torch.randn(2, 4, *MNIST, generator=torch.Generator().manual_seed(2))  # a batch each

    def forward(p, b, xb):
        return functional_call(model, (p, b), (xb,))

    batched = vmap(forward)(params, buffers, x)
    separate = torch.stack([forward(p, b, xb) for (p, b), xb in zip(students, x, strict=True)])
    torch.testing.assert_close(batched, separate, rtol=1e-4, atol=1e-5)
    # In train mode BatchNorm updates each student's running stats in place, under vmap too.
    for key in buffers:
        torch.testing.assert_close(buffers[key], torch.stack([b[key] for _, b in students]))
    if train and name == "resnet8":
        assert not torch.equal(buffers["features.1.running_mean"], torch.zeros(2, 16))


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown student 'ResNet20'.*Did you mean 'resnet20'\?"):
        build_student("ResNet20", CIFAR, 10)


@pytest.mark.parametrize(
    "name, shape, kwargs",
    [("mlp", (28, 28), {}), ("lenet", (1, 8, 8), {}), ("wrn", CIFAR, {"depth": 15})],
)
def test_bad_arguments_raise_value_error(name, shape, kwargs):
    with pytest.raises(ValueError):
        build_student(name, shape, 10, **kwargs)
