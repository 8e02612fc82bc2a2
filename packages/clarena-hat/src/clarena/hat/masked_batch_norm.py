"""Batch norm with the HAT unit mask folded into its affine transform.

HAT multiplies a layer's normalised outputs by its mask ``m``. After batch norm that is
``(x_hat * gamma + beta) * m = x_hat * (gamma * m) + beta * m``: scaling the ``(units,)`` affine
parameters instead of the ``(batch, units, H, W)`` activations saves a pass over every activation
forward and two backward, which is most of HAT's cost in a convolutional network. Statistics,
gradients and parameter names are those of ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional

if TYPE_CHECKING:
    from clarena.hat.method import HAT


class _MaskedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``_BatchNorm`` whose affine parameters are multiplied by the mask of ``hat_layer_name``,
    read from the forward pass in progress of the :class:`~clarena.hat.HAT` method ``hat``."""

    hat_layer_name: str | None = None
    hat: HAT | None = None

    def forward(self, input: Tensor) -> Tensor:
        """Normalise ``input`` (``(batch, units, ...)``) and apply the masked affine transform."""
        method = self.hat
        active = None if method is None else method.active_mask
        if active is None or self.hat_layer_name is None:
            raise RuntimeError(
                f"{type(self).__name__}: no HAT mask is active; run it inside a HAT backbone's "
                f"forward() (a backbone with HAT attached)."
            )
        self._check_input_dim(input)
        mask = active[self.hat_layer_name]
        if mask.dtype != input.dtype:
            mask = mask.to(input.dtype)
        weight = mask if self.weight is None else self.weight * mask
        bias = None if self.bias is None else self.bias * mask
        # Running-statistics bookkeeping as in torch.nn.modules.batchnorm._BatchNorm.forward.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return functional.batch_norm(
            input,
            self.running_mean if keep_stats else None,
            self.running_var if keep_stats else None,
            weight,
            bias,
            use_batch_stats,
            factor,
            self.eps,
        )


class MaskedBatchNorm1d(_MaskedBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with the HAT mask folded into its affine transform."""


class MaskedBatchNorm2d(_MaskedBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the HAT mask folded into its affine transform."""


def masked_copy(norm: nn.modules.batchnorm._BatchNorm) -> _MaskedBatchNorm:
    """A masked batch norm with ``norm``'s options, parameters, buffers and train/eval mode.

    Raises:
        TypeError: ``norm`` is not exactly ``nn.BatchNorm1d`` or ``nn.BatchNorm2d``.
    """
    kinds: dict[type, type[_MaskedBatchNorm]] = {
        nn.BatchNorm1d: MaskedBatchNorm1d,
        nn.BatchNorm2d: MaskedBatchNorm2d,
        MaskedBatchNorm1d: MaskedBatchNorm1d,
        MaskedBatchNorm2d: MaskedBatchNorm2d,
    }
    kind = kinds.get(type(norm))
    if kind is None:
        raise TypeError(
            f"HAT folds its mask into nn.BatchNorm1d / nn.BatchNorm2d only; got "
            f"{type(norm).__name__}."
        )
    reference = next(iter(norm.state_dict().values()), None)
    masked = kind(
        norm.num_features,
        eps=norm.eps,
        momentum=norm.momentum,
        affine=norm.affine,
        track_running_stats=norm.track_running_stats,
        device=None if reference is None else reference.device,
        dtype=None if reference is None or not reference.is_floating_point() else reference.dtype,
    )
    with torch.no_grad():
        masked.load_state_dict(norm.state_dict())
    return masked.train(norm.training)
