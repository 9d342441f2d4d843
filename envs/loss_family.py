"""The base class of every loss family (envs/losses.py lists them; envs/large_margin.py is one):
a coefficient vector in, a differentiable classification loss out, and the checked map from a
teacher's action in ``[-1, 1]^dim`` to coefficients.
"""

from __future__ import annotations

import numpy as np
import torch


class LossFamily:
    """Base class: a parametrised loss ``(logits, y, coeffs) -> scalar``.

    Subclasses set ``name`` and ``dim`` and implement :meth:`default_coeffs`,
    :meth:`action_to_coeffs` (on an already validated, clipped tensor), :meth:`coeffs_to_action`
    and :meth:`loss`.
    """

    name: str = "base"
    needs_head: bool = False
    """True: the loss needs the last Linear layer's input and weights; the process calls
    ``head_loss(logits, y, coeffs, features, weight, bias)`` instead of ``loss``"""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"a classification loss needs >= 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.dim = 0

    # -- coefficients -------------------------------------------------------------------------
    def default_coeffs(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        raise NotImplementedError

    def default_action(self) -> np.ndarray:
        """The action in [-1, 1]^dim that gives the default coefficients."""
        action = self.coeffs_to_action(self.default_coeffs(torch.float64))
        return action.clamp(-1, 1).numpy().astype(np.float32)

    def validate_action(self, action) -> torch.Tensor:
        """Check an action's type, shape and finiteness; clip finite values into [-1, 1].

        Raises ``ValueError`` naming the problem: the env must not train a student on garbage
        (a NaN coefficient would silently turn the student's weights into NaN).
        """
        try:
            a = torch.as_tensor(np.asarray(action, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"loss {self.name!r} takes a numeric action of shape ({self.dim},), got {action!r}"
            ) from err
        if a.shape != (self.dim,):
            raise ValueError(
                f"loss {self.name!r} takes an action of shape ({self.dim},), got shape "
                f"{tuple(a.shape)}. A batch of actions passed to a single env?"
            )
        if not torch.isfinite(a).all():
            bad = torch.nonzero(~torch.isfinite(a)).flatten()[:5].tolist()
            raise ValueError(
                f"non-finite action for loss {self.name!r} (NaN or inf at indices {bad}); "
                "actions must be finite numbers in [-1, 1]"
            )
        return a.clamp(-1.0, 1.0)

    def action_to_coeffs(self, action) -> torch.Tensor:
        """Map an action in [-1, 1]^dim (validated, clipped) to float64 coefficients."""
        return self._action_to_coeffs(self.validate_action(action))

    def _action_to_coeffs(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def coeffs_to_action(self, coeffs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- the loss -----------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, y, coeffs)

    def per_example(
        self, logits: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor
    ) -> torch.Tensor:
        """The (B,) per-example terms l_i whose mean is :meth:`loss`, for per-example weighting
        (L2RW, Meta-Weight-Net weight cross-entropy's terms); families without them refuse."""
        raise ValueError(
            f"loss {self.name!r} has no per-example terms to weight; reweighting teachers use 'ce'"
        )

    def lr_multiplier(self, coeffs: torch.Tensor) -> torch.Tensor | None:
        """The factor the student's step multiplies eta_t by, or None: a plain family leaves the
        lr alone (``envs.losses.LearningRateAction`` overrides this)."""
        return None

    def coeff_features(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Three O(1) numbers that summarise how far `coeffs` are from the default, for the
        state vector: mean deviation, mean absolute deviation, max absolute deviation."""
        d = coeffs - self.default_coeffs(coeffs.dtype, coeffs.device)
        return torch.stack([d.mean(), d.abs().mean(), d.abs().max()])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, dim={self.dim})"
