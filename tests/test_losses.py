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
    """Phi = I, b = 0: l = -sigmoid(log p_y) = -p_y / (1 + p_y) (the paper's start)."""
    z, y = batch
    fam = make_loss("bilinear", C, start="zero")
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
    c = torch.tensor([2.0, 0.3, 0.0, 0.0, 0.0], dtype=torch.float64)
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


@pytest.mark.parametrize("name", ["bilinear", "compact", "dln", "gce"])
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


@pytest.mark.parametrize(("start", "bias"), [("log-c", math.log(C)), ("zero", 0.0), (-1.5, -1.5)])
def test_bilinear_start_sets_the_bias_at_action_zero(start, bias):
    """The named starts give b = log C and b = 0 at action 0 (Phi = I either way), and the
    action box moves b around that start."""
    fam = make_loss("bilinear", C, start=start)
    phi, b = fam.split(fam.action_to_coeffs(np.zeros(fam.dim)))
    torch.testing.assert_close(phi, torch.eye(C, dtype=torch.float64))
    torch.testing.assert_close(b, torch.full((C,), bias, dtype=torch.float64))
    _, b_top = fam.split(fam.action_to_coeffs(np.ones(fam.dim)))
    torch.testing.assert_close(b_top, torch.full((C,), bias + fam.bias_range, dtype=torch.float64))
    torch.testing.assert_close(fam.default_action(), np.zeros(fam.dim, np.float32))


@pytest.mark.parametrize("bad", ["logc", "", float("nan"), None, True])
def test_bilinear_start_rejects_unknown_values(bad):
    with pytest.raises(ValueError, match="bilinear start must be one of"):
        make_loss("bilinear", C, start=bad)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_action_coeffs_round_trip_away_from_the_default(name):
    """coeffs_to_action inverts action_to_coeffs on random actions across the box (not only at
    the default), and distinct actions give distinct coefficients."""
    fam = make_loss(name, C)
    rng = np.random.default_rng(0)
    for _ in range(3):
        action = rng.uniform(-0.95, 0.95, fam.dim)
        coeffs = fam.action_to_coeffs(action)
        assert not torch.allclose(coeffs, fam.default_coeffs(torch.float64), atol=1e-3)
        np.testing.assert_allclose(fam.coeffs_to_action(coeffs).numpy(), action, atol=1e-9)
    for edge in (-1.0, 1.0):  # the box's corners map back to themselves too
        a = np.full(fam.dim, edge)
        np.testing.assert_allclose(
            fam.coeffs_to_action(fam.action_to_coeffs(a)).numpy(), a, atol=1e-9
        )


def test_vmap_over_labels_and_coefficients(batch):
    """Every family runs under vmap over (logits, labels, coeffs) together, as the batched
    process needs (F.one_hot's range check cannot)."""
    z, y = batch
    for name in sorted(LOSSES):
        fam = make_loss(name, C)
        if fam.needs_head:  # large-margin reads the head's features: single processes only
            continue
        coeffs = torch.stack([fam.action_to_coeffs(np.full(fam.dim, a)) for a in (-0.3, 0.0, 0.3)])
        zs, ys = torch.stack([z, z * 0.5, -z]), torch.stack([y, y.flip(0), y])
        batched = torch.func.vmap(fam)(zs, ys, coeffs)
        separate = torch.stack([fam(zs[i], ys[i], coeffs[i]) for i in range(3)])
        torch.testing.assert_close(batched, separate)


def test_gce_matches_its_formula_and_its_limits(batch):
    """GCE (Zhang & Sabuncu 2018): (1 - p_y^q) / q; q -> 0 is CE, q = 1 is 1 - p_y."""
    z, y = batch
    fam = make_loss("gce", C)
    p_y = F.softmax(z, -1)[torch.arange(len(y)), y]
    for q in (0.7, 0.3, 1.0):
        coeffs = torch.tensor([q], dtype=torch.float64)
        torch.testing.assert_close(fam(z, y, coeffs), ((1 - p_y**q) / q).mean())
    torch.testing.assert_close(
        fam(z, y, torch.zeros(1, dtype=torch.float64)), F.cross_entropy(z, y)
    )
    torch.testing.assert_close(
        fam(z, y, torch.tensor([1e-7], dtype=torch.float64)), F.cross_entropy(z, y)
    )
    assert float(fam.default_coeffs()[0]) == pytest.approx(0.7)
    assert float(fam.action_to_coeffs(np.array([0.4]))[0]) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="q"):
        make_loss("gce", C, q=1.5)


def test_compact_gce_knob(batch):
    """compact's 5th knob is GCE's q: with the other knobs at default it is the gce family, and
    its default action keeps compact exactly CE (q = 0), with a finite gradient in q there."""
    z, y = batch
    compact, gce = make_loss("compact", C), make_loss("gce", C)
    assert compact.dim == 5
    a = compact.default_action()
    np.testing.assert_array_equal(a, [0, -1, -1, -1, -1])
    c = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.7], dtype=torch.float64)
    torch.testing.assert_close(
        compact(z, y, c), gce(z, y, torch.tensor([0.7], dtype=torch.float64))
    )
    c0 = compact.default_coeffs(torch.float64).requires_grad_()
    (g,) = torch.autograd.grad(compact(z, y, c0), c0)
    assert torch.isfinite(g).all() and g[4] != 0


def test_compact_all_knobs_match_its_formula_written_out(batch):
    """Every knob on at once: compact's loss and its gradients in the logits and the
    coefficients equal the docstring's formula written example by example, with (p^q - 1) / q
    and (1 - p_y)^gamma taken literally (no shared terms, no Taylor guard)."""
    z, y = batch
    compact = make_loss("compact", C)
    c = torch.tensor([1.7, 0.2, 2.0, 0.6, 0.4], dtype=torch.float64, requires_grad=True)
    z = z.detach().clone().requires_grad_(True)

    def written_out(z, c):
        tau, eps, gamma, m, q = c
        total = 0.0
        for zi, yi in zip(z, y, strict=True):
            shifted = zi - m * F.one_hot(yi, C).to(zi.dtype)
            p = torch.softmax(tau * shifted, dim=-1)
            bc = (p**q - 1) / q
            total = total + (1 - p[yi]) ** gamma * (-(1 - eps) * bc[yi] - eps * bc.mean())
        return total / len(y)

    ours, ref = compact(z, y, c), written_out(z, c)
    torch.testing.assert_close(ours, ref)
    for got, want in zip(
        torch.autograd.grad(ours, [z, c]), torch.autograd.grad(ref, [z, c]), strict=True
    ):
        torch.testing.assert_close(got, want)
