"""Loss families: a coefficient vector in, a differentiable classification loss out.

A family knows its dimension ``dim``, its default coefficients, and the map from a teacher's
action in ``[-1, 1]^dim`` to coefficients. ``family(logits, y, coeffs)`` is the mean loss over the
batch and is differentiable in both ``logits`` and ``coeffs`` (the gradient teachers need the
mixed second derivative d^2 L / d omega d coeffs). No ``.item()`` and no data-dependent branches,
so the losses run under ``torch.func.vmap``.

| name            | dim         | what the coefficients are                                           |
|-----------------|-------------|---------------------------------------------------------------------|
| bilinear        | C*C (+ C)   | L2T-DLF: l = -sigmoid(Phi[y] . log_softmax(z) + b[y])               |
| dln             | 5,000       | L2T-DLN: the weights of a 4-40-40-40-40-1 loss network               |
| ce              | 1           | inverse temperature tau of cross-entropy on tau * z                  |
| label-smoothing | 1           | smoothing epsilon                                                    |
| gce             | 1           | GCE exponent q: (1 - p_y^q) / q (Zhang & Sabuncu 2018), default 0.7  |
| compact         | 5           | tau, smoothing, focal gamma, logit margin, GCE q; default = plain CE |
| large-margin    | 1           | L-Softmax (Liu et al. 2016) margin weight lambda = 1 / (1 + beta)   |

``large-margin`` needs the classifier's input features and weights, not only the logits
(``needs_head``): the process calls its ``head_loss`` (envs/large_margin.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from envs.large_margin import LargeMargin
from envs.loss_family import LossFamily
from students.names import unknown_name_error

__all__ = [
    "LOSSES",
    "BILINEAR_STARTS",
    "Bilinear",
    "Compact",
    "CrossEntropy",
    "DynamicLossNetwork",
    "GeneralizedCrossEntropy",
    "LabelSmoothing",
    "LR_ACTION_OCTAVES",
    "LearningRateAction",
    "LossFamily",
    "make_loss",
]


class _AffineFamily(LossFamily):
    """A family whose coefficients are ``center + half_range * action`` element-wise."""

    def center_and_half_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(center, half_range), float64 (dim,): coeffs = center + half_range * action. Public so
        that a gradient teacher can apply the same map differentiably (teachers/l2t_dlf.py)."""
        raise NotImplementedError

    def _action_to_coeffs(self, a: torch.Tensor) -> torch.Tensor:
        center, half = self.center_and_half_range()
        return center + half * a

    def coeffs_to_action(self, coeffs: torch.Tensor) -> torch.Tensor:
        center, half = self.center_and_half_range()
        return (coeffs.detach().double().cpu() - center) / half


BILINEAR_STARTS = ("log-c", "zero")
"""named starting points of the bilinear family's bias (``start=``): ``"log-c"`` b = log C (our
default), ``"zero"`` b = 0 (the paper's Phi = I, b = 0)"""


class Bilinear(_AffineFamily):
    """L2T-DLF's loss (Wu et al. 2018, Fig. 2; official demo lines 483-509).

        l_Phi(z, y) = -sigmoid( Phi[y, :] . log_softmax(z) + b[y] )

    ``Phi`` is C x C in the paper's orientation (row = true label; the demo's ``W`` is Phi^T),
    ``b`` an optional per-class bias (the demo's extra, absent from the paper's caption).
    Coefficients are ``[Phi.flatten(), b]``. Default (action 0): Phi = I and b set by ``start``:

    * ``"zero"``, the paper's start: l = -p_y / (1 + p_y), a bounded, MAE-like loss, i.e. CE
      re-weighted per example by p_y / (1 + p_y)^2 <= 1/4, which vanishes on examples the
      student gets confidently wrong: robust to label noise, slower early on clean labels;
    * ``"log-c"`` (the default, kept so that committed results replay): b = log C puts the
      sigmoid at its steepest point for a uniform prediction, closer to CE;
    * a number: b = that value for every class.

    Neither start wins everywhere (untrained, mnist5k / mlp, 600 steps, 5 students, test error;
    results/bilinear_start/): clean, ``log-c`` 6.56 +- 0.32 % vs ``zero`` 7.42 +- 0.33 %; under
    40% symmetric label noise, ``zero`` 11.36 +- 0.19 % vs ``log-c`` 18.74 +- 1.11 %. So the
    start is a choice made on held-out data with the student lr (analysis/selection.py). Actions
    move Phi by +-``phi_range`` and b by +-``bias_range`` around the start.
    """

    name = "bilinear"

    def __init__(
        self,
        num_classes: int,
        bias: bool = True,
        start: str | float = "log-c",
        phi_range: float = 1.0,
        bias_range: float = 3.0,
    ) -> None:
        super().__init__(num_classes)
        self.bias = bias
        self.start = start
        self.bias_init = bilinear_bias(start, num_classes)
        """b at action 0, a number"""
        self.phi_range = phi_range
        self.bias_range = bias_range
        C = num_classes
        self.dim = C * C + (C if bias else 0)

    def default_coeffs(self, dtype=torch.float32, device=None) -> torch.Tensor:
        C = self.num_classes
        parts = [torch.eye(C, dtype=dtype, device=device).flatten()]
        if self.bias:
            parts.append(torch.full((C,), self.bias_init, dtype=dtype, device=device))
        return torch.cat(parts)

    def center_and_half_range(self):
        C = self.num_classes
        half = torch.full((self.dim,), self.phi_range, dtype=torch.float64)
        if self.bias:
            half[C * C :] = self.bias_range
        return self.default_coeffs(torch.float64), half

    def split(self, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Phi as C x C, b or None) views of a coefficient vector."""
        C = self.num_classes
        phi = coeffs[: C * C].reshape(C, C)
        return phi, (coeffs[C * C :] if self.bias else None)

    def loss(self, logits, y, coeffs):
        phi, b = self.split(coeffs.to(logits.dtype))
        u = (phi[y] * F.log_softmax(logits, dim=-1)).sum(-1)  # y^T Phi log p
        if b is not None:
            u = u + b[y]
        return -torch.sigmoid(u).mean()

    def coeff_features(self, coeffs):
        phi, b = self.split(coeffs)
        eye = torch.eye(self.num_classes, dtype=coeffs.dtype, device=coeffs.device)
        off = phi - phi * eye
        bias_shift = (b - self.bias_init).mean() if b is not None else coeffs.new_zeros(())
        return torch.stack([phi.diagonal().mean() - 1.0, off.abs().sum() / off.numel(), bias_shift])


class DynamicLossNetwork(_AffineFamily):
    """L2T-DLN's loss network g_phi (Hai et al. 2023; official ``MetaOptimizer`` class).

    The 1-vs-1 transformation turns the sigmoid scores s = sigmoid(z) of a sample with label y
    into C rows u_j = [s_y, s_j, 1, 0] for j != y and u_y = 0; g_phi is a bias-free MLP
    4-40-40-40-40-1 with LeakyReLU(0.01) and no output activation, and

        L_phi(z, y) = 1/(B C) sum_b sum_j g_phi(u_{b, j}).

    The coefficients are its 4*40 + 3*40*40 + 40 = 5,000 weights, flattened layer by layer. The
    default is a Kaiming-normal (fan_out, leaky-ReLU gain) draw from a fixed seed, as in the
    official code; the loss is unbounded (divergence is handled by the env).
    """

    name = "dln"
    widths = (4, 40, 40, 40, 40, 1)

    def __init__(self, num_classes: int, init_seed: int = 0, action_range: float = 0.1) -> None:
        super().__init__(num_classes)
        self.init_seed = init_seed
        self.action_range = action_range
        self.shapes = [(o, i) for i, o in zip(self.widths[:-1], self.widths[1:], strict=True)]
        self.dim = sum(o * i for o, i in self.shapes)
        gen = torch.Generator().manual_seed(init_seed)
        gain = math.sqrt(2.0 / (1 + 0.01**2))  # leaky-ReLU(0.01) gain, Kaiming fan_out
        weights = [
            torch.empty(shape, dtype=torch.float64).normal_(
                0.0, gain / math.sqrt(shape[0]), generator=gen
            )
            for shape in self.shapes
        ]
        self._default = torch.cat([w.flatten() for w in weights])

    def default_coeffs(self, dtype=torch.float32, device=None) -> torch.Tensor:
        return self._default.to(dtype=dtype, device=device)

    def center_and_half_range(self):
        return self._default, torch.full((self.dim,), self.action_range, dtype=torch.float64)

    def weights(self, coeffs: torch.Tensor) -> list[torch.Tensor]:
        """The layer weight matrices (out, in) as views of the coefficient vector."""
        out, start = [], 0
        for shape in self.shapes:
            n = shape[0] * shape[1]
            out.append(coeffs[start : start + n].reshape(shape))
            start += n
        return out

    def one_vs_one(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, C, 4) rows [s_y, s_j, 1, 0], zeroed where j == y."""
        s = torch.sigmoid(logits)
        s_y = s.gather(-1, y.unsqueeze(-1)).expand_as(s)
        rows = torch.stack([s_y, s, torch.ones_like(s), torch.zeros_like(s)], dim=-1)
        rival = 1.0 - _one_hot(y, self.num_classes, s.dtype)
        return rows * rival.unsqueeze(-1)

    def loss(self, logits, y, coeffs):
        h = self.one_vs_one(logits, y)
        layers = self.weights(coeffs.to(logits.dtype))
        for w in layers[:-1]:
            h = F.leaky_relu(h @ w.T, 0.01)
        return (h @ layers[-1].T).mean()


class CrossEntropy(LossFamily):
    """Cross-entropy on tau * z; one coefficient, tau = 2^action (default tau = 1: plain CE)."""

    name = "ce"

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.dim = 1

    def default_coeffs(self, dtype=torch.float32, device=None):
        return torch.ones(1, dtype=dtype, device=device)

    def _action_to_coeffs(self, a):
        return torch.exp2(a)

    def coeffs_to_action(self, coeffs):
        return torch.log2(coeffs.detach().double().cpu())

    def loss(self, logits, y, coeffs):
        return F.cross_entropy(coeffs.to(logits.dtype)[0] * logits, y)

    def per_example(self, logits, y, coeffs):
        return F.cross_entropy(coeffs.to(logits.dtype)[0] * logits, y, reduction="none")


class LabelSmoothing(_AffineFamily):
    """Cross-entropy against (1 - eps) one-hot + eps uniform; eps in [0, 0.5], default 0.1."""

    name = "label-smoothing"

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__(num_classes)
        if not 0.0 <= epsilon <= 0.5:
            raise ValueError(f"label smoothing epsilon must lie in [0, 0.5], got {epsilon}")
        self.dim = 1
        self.epsilon = epsilon

    def default_coeffs(self, dtype=torch.float32, device=None):
        return torch.full((1,), self.epsilon, dtype=dtype, device=device)

    def center_and_half_range(self):
        return torch.full((1,), 0.25, dtype=torch.float64), torch.full(
            (1,), 0.25, dtype=torch.float64
        )

    def loss(self, logits, y, coeffs):
        eps = coeffs.to(logits.dtype)[0]
        logp = F.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return ((1 - eps) * nll - eps * logp.mean(-1)).mean()


def box_cox(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(p^q - 1) / q from log p, exactly log p at q = 0 (its limit), finite gradients everywhere.

    -box_cox(log p_y, q) is GCE's (1 - p_y^q) / q: q -> 0 is cross-entropy, q = 1 is the MAE
    (1 - p_y), robust to symmetric label noise (Zhang & Sabuncu 2018, eq. 5). Written as
    log p * expm1(x) / x with x = q log p, and a Taylor series near x = 0, without a branch on data.
    """
    x = q * log_p
    small = x.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(x), x)
    ratio = torch.where(small, 1 + x / 2 + x * x / 6, torch.expm1(safe) / safe)
    return log_p * ratio


class GeneralizedCrossEntropy(_AffineFamily):
    """Generalized cross-entropy (Zhang & Sabuncu 2018): l_q = (1 - p_y^q) / q, q in [0, 1].

    q = 0 is cross-entropy, q = 1 the mean absolute error; the paper's default is 0.7. Actions move
    q over [0, 1] (q = (a + 1) / 2).
    """

    name = "gce"

    def __init__(self, num_classes: int, q: float = 0.7) -> None:
        super().__init__(num_classes)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"GCE exponent q must lie in [0, 1], got {q}")
        self.dim = 1
        self.q = q

    def default_coeffs(self, dtype=torch.float32, device=None):
        return torch.full((1,), self.q, dtype=dtype, device=device)

    def center_and_half_range(self):
        return torch.full((1,), 0.5, dtype=torch.float64), torch.full(
            (1,), 0.5, dtype=torch.float64
        )

    def loss(self, logits, y, coeffs):
        q = coeffs.to(logits.dtype)[0]
        logp_y = F.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return -box_cox(logp_y, q).mean()


class Compact(LossFamily):
    """A few interpretable knobs for RL teachers; the all-default point is plain CE.

    coefficients  [tau, eps, gamma, m, q]:
        tau   = 2^a0             in [0.5, 2]  inverse temperature on the logits
        eps   = 0.15 (a1 + 1)    in [0, 0.3]  label smoothing
        gamma = 1.5 (a2 + 1)     in [0, 3]    focal exponent (Lin et al. 2017)
        m     = 0.5 (a3 + 1)     in [0, 1]    additive margin subtracted from the true logit
        q     = 0.5 (a4 + 1)     in [0, 1]    GCE exponent (Zhang & Sabuncu 2018); 0 = log

        z' = tau (z - m e_y);  l = (1 - p'_y)^gamma [ -(1 - eps) BC_q(log p'_y) - eps mean_j BC_q(log p'_j) ]

    with BC_q(log p) = (p^q - 1) / q (:func:`box_cox`), so q = 0 is the log and eps = gamma = m = 0
    with tau = 1 is GCE with exponent q. The default action is a = [0, -1, -1, -1, -1].
    """

    name = "compact"

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.dim = 5

    def default_coeffs(self, dtype=torch.float32, device=None):
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=dtype, device=device)

    def _action_to_coeffs(self, a):
        return torch.stack(
            [
                torch.exp2(a[0]),
                0.15 * (a[1] + 1),
                1.5 * (a[2] + 1),
                0.5 * (a[3] + 1),
                0.5 * (a[4] + 1),
            ]
        )

    def coeffs_to_action(self, coeffs):
        c = coeffs.detach().double().cpu()
        return torch.stack(
            [torch.log2(c[0]), c[1] / 0.15 - 1, c[2] / 1.5 - 1, c[3] / 0.5 - 1, c[4] / 0.5 - 1]
        )

    def loss(self, logits, y, coeffs):
        tau, eps, gamma, margin, q = coeffs.to(logits.dtype).unbind()
        onehot = _one_hot(y, self.num_classes, logits.dtype)
        logp = F.log_softmax(tau * (logits - margin * onehot), dim=-1)
        logp_y = (logp * onehot).sum(-1)
        smoothed = -(1 - eps) * box_cox(logp_y, q) - eps * box_cox(logp, q).mean(-1)
        # (1 - p)^gamma through exp/log1p so that gamma = 0 has a finite gradient at p -> 1
        focal = torch.exp(gamma * torch.log1p(-logp_y.exp().clamp(max=1 - 1e-6)))
        return (focal * smoothed).mean()


LR_ACTION_OCTAVES = 2.0
"""k of the lr action: eta_t = schedule(t) * 2^(k a), a in [-1, 1], so a teacher scales the
schedule's lr by 1/4 .. 4 (0.1 -> 0.025 .. 0.4; the L2T-DLF runs used 0.4, results/l2t_dlf)"""


class LearningRateAction(LossFamily):
    """Any family plus one more action: a bounded log-multiplier of the student's learning rate.

    Action ``[a_base..., a_lr]``; coefficients ``[Phi_base..., ell]`` with ell = k a_lr the log2
    of the multiplier (k = ``octaves``); the loss is the base family's on Phi_base, and the
    process's step uses eta_t = schedule(t) * 2^ell (:meth:`lr_multiplier`, a tensor on the
    differentiable path, so gradient teachers differentiate through it). a_lr = 0 is the
    schedule's lr exactly (2^0 = 1). ell is affine in the action, so an affine base family stays
    affine (:meth:`center_and_half_range`). The state's coefficient features are the base's.
    """

    def __init__(self, base: LossFamily, octaves: float = LR_ACTION_OCTAVES) -> None:
        if isinstance(base, LearningRateAction):
            raise ValueError("the family already has an lr action")
        if not (octaves > 0 and math.isfinite(octaves)):
            raise ValueError(f"octaves must be positive and finite, got {octaves}")
        super().__init__(base.num_classes)
        self.base, self.octaves = base, float(octaves)
        self.name, self.needs_head = base.name, base.needs_head
        self.dim = base.dim + 1

    def default_coeffs(self, dtype=torch.float32, device=None):
        zero = torch.zeros(1, dtype=dtype, device=device)
        return torch.cat([self.base.default_coeffs(dtype, device), zero])

    def _action_to_coeffs(self, a):
        return torch.cat([self.base._action_to_coeffs(a[:-1]), self.octaves * a[-1:]])

    def coeffs_to_action(self, coeffs):
        c = coeffs.detach().double().cpu()
        return torch.cat([self.base.coeffs_to_action(c[:-1]), c[-1:] / self.octaves])

    def center_and_half_range(self):
        """The base's affine map plus ell = 0 + k a (AttributeError for a non-affine base)."""
        center, half = self.base.center_and_half_range()
        one = torch.ones(1, dtype=torch.float64)
        return torch.cat([center, 0 * one]), torch.cat([half, self.octaves * one])

    def lr_multiplier(self, coeffs):
        return torch.exp2(coeffs[..., -1])

    def loss(self, logits, y, coeffs):
        return self.base.loss(logits, y, coeffs[..., :-1])

    def per_example(self, logits, y, coeffs):
        return self.base.per_example(logits, y, coeffs[..., :-1])

    def head_loss(self, logits, y, coeffs, features, weight, bias):
        return self.base.head_loss(logits, y, coeffs[..., :-1], features, weight, bias)

    def coeff_features(self, coeffs):
        return self.base.coeff_features(coeffs[..., :-1])

    def __repr__(self) -> str:
        return f"LearningRateAction({self.base!r}, octaves={self.octaves})"


LOSSES: dict[str, type[LossFamily]] = {
    "bilinear": Bilinear,
    "dln": DynamicLossNetwork,
    "ce": CrossEntropy,
    "label-smoothing": LabelSmoothing,
    "gce": GeneralizedCrossEntropy,
    "compact": Compact,
    "large-margin": LargeMargin,
}


def bilinear_bias(start: str | float, num_classes: int) -> float:
    """The bilinear family's bias at action 0 for a ``start`` (a name of BILINEAR_STARTS or a
    number)."""
    if start == "log-c":
        return math.log(num_classes)
    if start == "zero":
        return 0.0
    if isinstance(start, (int, float)) and not isinstance(start, bool) and math.isfinite(start):
        return float(start)
    raise ValueError(
        f"bilinear start must be one of {list(BILINEAR_STARTS)} or a finite number, got {start!r}"
    )


def _one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """F.one_hot without its data-dependent range check, which vmap over labels cannot run."""
    return (y.unsqueeze(-1) == torch.arange(num_classes, device=y.device)).to(dtype)


def make_loss(
    name: str | LossFamily, num_classes: int, *, lr_action: bool = False, **kwargs
) -> LossFamily:
    """Build a loss family by name (an instance passes through unchanged); `lr_action` appends
    the lr log-multiplier (:class:`LearningRateAction`) unless the family has it already."""
    if isinstance(name, LossFamily):
        family = name
    elif name not in LOSSES:
        raise unknown_name_error("loss", name, LOSSES)
    else:
        family = LOSSES[name](num_classes, **kwargs)
    if lr_action and not isinstance(family, LearningRateAction):
        family = LearningRateAction(family)
    return family
