"""Large-margin softmax (L-Softmax; Liu, Wen, Yu & Yang, ICML 2016): L2T-DLF's third baseline.

With the classifier's input features x and its weight rows W_j, the true-class logit
W_y . x = |W_y| |x| cos(theta_y) is replaced by |W_y| |x| psi(theta_y), with an integer margin m:

    psi(theta) = (-1)^k cos(m theta) - 2k,   theta in [k pi / m, (k + 1) pi / m],  k = 0..m-1

psi is monotone decreasing and psi <= cos, so the true class must beat the others by an angular
margin. cos(m theta) is the Chebyshev polynomial T_m(cos theta) (no arccos, so gradients stay
finite at theta = 0 or pi, as in the authors' implementation) and k is counted from the
thresholds cos(j pi / m), outside the graph. The usual annealing mixes it with plain softmax,

    f_y = (beta |W_y| |x| cos(theta_y) + |W_y| |x| psi(theta_y)) / (1 + beta) + b_y
        = (1 - lambda) W_y . x + lambda |W_y| |x| psi(theta_y) + b_y,    lambda = 1 / (1 + beta),

and the loss is cross-entropy on the logits with z_y replaced by f_y. The coefficient is lambda in
[0, 1] (action a -> lambda = (a + 1) / 2; lambda = 0 is plain cross-entropy, lambda = 1 pure
L-Softmax). beta decays over training (teachers/large_margin.py). Our students' last layer has a
bias: b_y is added unchanged (L-Softmax's paper drops it; the margin acts on W_y . x only).
At test time the student predicts with its plain logits, as in the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from envs.loss_family import LossFamily


def chebyshev(m: int, c: torch.Tensor) -> torch.Tensor:
    """T_m(c) = cos(m arccos c) by the recurrence T_{n+1} = 2 c T_n - T_{n-1}."""
    prev, cur = torch.ones_like(c), c
    if m == 0:
        return prev
    for _ in range(m - 1):
        prev, cur = cur, 2 * c * cur - prev
    return cur


def psi(m: int, cos: torch.Tensor) -> torch.Tensor:
    """(-1)^k cos(m theta) - 2k for cos = cos(theta), k = #{j in 1..m-1 : theta >= j pi / m}."""
    with torch.no_grad():
        k = torch.zeros_like(cos)
        for j in range(1, m):
            k = k + (cos <= math.cos(j * math.pi / m)).to(cos.dtype)
        sign = 1 - 2 * torch.remainder(k, 2)
    return sign * chebyshev(m, cos) - 2 * k


class LargeMargin(LossFamily):
    """L-Softmax with margin ``margin`` (m, an integer >= 1; Liu et al. used 2-4, 4 on MNIST);
    one coefficient, the margin weight lambda = 1 / (1 + beta) in [0, 1], default ``weight``."""

    name = "large-margin"
    needs_head = True

    def __init__(self, num_classes: int, margin: int = 4, weight: float = 1.0) -> None:
        super().__init__(num_classes)
        if not isinstance(margin, int) or margin < 1:
            raise ValueError(f"large-margin needs an integer margin m >= 1, got {margin!r}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"the margin weight lambda must lie in [0, 1], got {weight}")
        self.margin = margin
        self.weight = float(weight)
        self.dim = 1

    def default_coeffs(self, dtype=torch.float32, device=None):
        return torch.full((1,), self.weight, dtype=dtype, device=device)

    def _action_to_coeffs(self, a):
        return (a + 1) / 2

    def coeffs_to_action(self, coeffs):
        return 2 * coeffs.detach().double().cpu() - 1

    def loss(self, logits, y, coeffs):
        raise ValueError(
            "the large-margin loss needs the classifier's features and weights, not only logits: "
            "call head_loss(logits, y, coeffs, features, weight, bias) (TeachingProcess does)"
        )

    def head_loss(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        coeffs: torch.Tensor,
        features: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean L-Softmax loss. logits = features @ weight.T + bias (B, C); features (B, D)."""
        lam = coeffs.to(logits.dtype)[0]
        w_y = weight[y]  # (B, D)
        dot = (features * w_y).sum(-1)  # W_y . x
        norm = torch.linalg.vector_norm(w_y, dim=-1) * torch.linalg.vector_norm(features, dim=-1)
        cos = (dot / norm.clamp_min(1e-12)).clamp(-1.0, 1.0)
        f_y = (1 - lam) * dot + lam * norm * psi(self.margin, cos)
        if bias is not None:
            f_y = f_y + bias[y]
        onehot = F.one_hot(y, self.num_classes).to(logits.dtype)
        return F.cross_entropy(logits + onehot * (f_y - (logits * onehot).sum(-1)).unsqueeze(-1), y)
