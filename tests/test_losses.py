"""Loss families: closed forms, coefficient maps, gradients, bad actions, vmap."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from envs.losses import LOSSES, make_loss

C = 10


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, C, generator=g, dtype=torch.float64), torch.randint(
        0, C, (16,), generator=g
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_default_action_maps_to_default_coeffs(name):
    fam = make_loss(name, C)
    coeffs = fam.action_to_coeffs(fam.default_action())
    torch.testing.assert_close(coeffs, fam.default_coeffs(torch.float64), atol=1e-6, rtol=1e-6)
    assert coeffs.shape == (fam.dim,)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_differentiable_in_logits_and_coeffs(name, batch):
    fam = make_loss(name, C)
    z, y = batch
    z = z.clone().requires_grad_()
    coeffs = fam.default_coeffs(torch.float64).requires_grad_()
    if fam.needs_head:  # large-margin: logits from features through a linear head
        g = torch.Generator().manual_seed(1)
        x, w = (torch.randn(n, 7, generator=g, dtype=torch.float64) for n in (len(y), C))
        z = (x @ w.T).requires_grad_()
        loss = fam.head_loss(z, y, coeffs, x, w)
    else:
        loss = fam(z, y, coeffs)
    gz, gc = torch.autograd.grad(loss, [z, coeffs])
    assert loss.shape == () and torch.isfinite(loss)
    assert torch.isfinite(gz).all() and gz.abs().sum() > 0
    assert torch.isfinite(gc).all() and gc.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bad_actions_raise_value_error(name):
    fam = make_loss(name, C)
    a = fam.default_action()
    for bad in (np.full_like(a, np.nan), np.append(a, 0.0), "left", np.full_like(a, np.inf)):
        with pytest.raises(ValueError):
            fam.action_to_coeffs(bad)
    clipped = fam.action_to_coeffs(np.full_like(a, 7.0))
    torch.testing.assert_close(clipped, fam.action_to_coeffs(np.ones_like(a)))


def test_unknown_loss_lists_names():
    with pytest.raises(ValueError, match="bilinear") as err:
        make_loss("bilinaer", C)
    assert "Did you mean 'bilinear'" in str(err.value)


def test_bilinear_identity_closed_form(batch):
    """Phi = I, b = 0: l = -sigmoid(log p_y) = -p_y / (1 + p_y) (shared/papers/l2t-dlf.md §2.2)."""
    z, y = batch
    fam = make_loss("bilinear", C, bias_init=0.0)
    p_y = z.softmax(-1).gather(-1, y[:, None]).squeeze(-1)
    torch.testing.assert_close(
        fam(z, y, fam.default_coeffs(torch.float64)), (-p_y / (1 + p_y)).mean()
    )


def test_bilinear_row_is_true_label(batch):
    """Phi[y, j] weights log p_j for label y (paper orientation; the demo's W is Phi^T)."""
    z, y = batch
    fam = make_loss("bilinear", C, bias=False)
    phi = torch.zeros(C, C, dtype=torch.float64)
    phi[:, 3] = 1.0  # every label looks at class 3
    expected = -torch.sigmoid(F.log_softmax(z, -1)[:, 3]).mean()
    torch.testing.assert_close(fam(z, y, phi.flatten()), expected)


def test_cross_entropy_families_match_torch(batch):
    z, y = batch
    ce = F.cross_entropy(z, y)
    torch.testing.assert_close(make_loss("ce", C)(z, y, torch.ones(1, dtype=torch.float64)), ce)
    compact = make_loss("compact", C)
    torch.testing.assert_close(compact(z, y, compact.default_coeffs(torch.float64)), ce)
    ls = make_loss("label-smoothing", C)
    torch.testing.assert_close(
        ls(z, y, torch.tensor([0.2], dtype=torch.float64)),
        F.cross_entropy(z, y, label_smoothing=0.2),
    )
    # compact's knobs: smoothing and temperature reduce to torch's forms
    c = torch.tensor([2.0, 0.3, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(compact(z, y, c), F.cross_entropy(2 * z, y, label_smoothing=0.3))


def test_dln_one_vs_one_and_size(batch):
    z, y = batch
    fam = make_loss("dln", C)
    assert fam.dim == 4 * 40 + 3 * 40 * 40 + 40 == 5000
    rows = fam.one_vs_one(z, y)
    s = torch.sigmoid(z)
    b, j = 0, (int(y[0]) + 1) % C
    torch.testing.assert_close(
        rows[b, j], torch.stack([s[b, y[0]], s[b, j], s.new_tensor(1.0), s.new_tensor(0.0)])
    )
    assert rows[torch.arange(16), y].abs().sum() == 0  # the true class's row is masked
    # masked rows contribute exactly 0 (no bias, LeakyReLU(0) = 0), so the mean is over B*C rows
    h = rows
    for w in fam.weights(fam.default_coeffs(torch.float64))[:-1]:
        h = F.leaky_relu(h @ w.T, 0.01)
    assert (h[torch.arange(16), y] == 0).all()


@pytest.mark.parametrize("name", ["bilinear", "compact", "dln"])
def test_losses_vmap_over_coefficients(name, batch):
    z, y = batch
    fam = make_loss(name, C)
    coeffs = torch.stack([fam.action_to_coeffs(np.full(fam.dim, v)) for v in (-0.5, 0.0, 0.5)])
    batched = torch.func.vmap(lambda c: fam(z, y, c))(coeffs)
    looped = torch.stack([fam(z, y, c) for c in coeffs])
    torch.testing.assert_close(batched, looped)


def test_bilinear_bias_default_is_log_classes():
    fam = make_loss("bilinear", C)
    phi, b = fam.split(fam.default_coeffs(torch.float64))
    torch.testing.assert_close(phi, torch.eye(C, dtype=torch.float64))
    assert torch.allclose(b, torch.full((C,), math.log(C), dtype=torch.float64))
