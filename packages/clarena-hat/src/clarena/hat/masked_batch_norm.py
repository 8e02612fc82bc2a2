"""Batch norm with the HAT unit mask folded into its affine transform.

HAT multiplies a layer's normalised outputs by its mask ``m``. After batch norm that is
``(x_hat * gamma + beta) * m = x_hat * (gamma * m) + beta * m``: scaling the ``(units,)`` affine
parameters instead of the ``(batch, units, H, W)`` activations saves a pass over every activation
forward and two backward, which is most of HAT's cost in a convolutional network. Statistics,
gradients and parameter names are those of ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional


class MaskSource:
    """The masks of the forward pass in progress, shared by a backbone and its batch norms."""

    __slots__ = ("mask",)

    def __init__(self) -> None:
        self.mask: dict[str, Tensor] | None = None


class _MaskedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``_BatchNorm`` whose affine parameters are multiplied by the mask of ``hat_layer_name``."""

    hat_layer_name: str | None = None
    hat_mask_source: MaskSource | None = None

    def forward(self, input: Tensor) -> Tensor:
        """Normalise ``input`` (``(batch, units, ...)``) and apply the masked affine transform."""
        source = self.hat_mask_source
        if source is None or source.mask is None or self.hat_layer_name is None:
            raise RuntimeError(
                f"{type(self).__name__}: no HAT mask is active; run it inside a HAT backbone's "
                f"forward()."
            )
        self._check_input_dim(input)
        mask = source.mask[self.hat_layer_name]
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
