"""``HATMaskTimmBackbone``: any timm model by name, :class:`~clarena.hat.HAT` attached."""

from __future__ import annotations

import inspect

from clarena.cl import UNCOVERED_MODES, method_builder
from clarena.cl.timm_backbone import CLTimmBackbone
from clarena.hat.method import HAT

_PARAMETERS = [
    inspect.Parameter("gate", inspect.Parameter.KEYWORD_ONLY, default="sigmoid", annotation="str"),
    inspect.Parameter(
        "uncovered_parameters",
        inspect.Parameter.KEYWORD_ONLY,
        default=UNCOVERED_MODES[0],
        annotation="str",
    ),
]

HATMaskTimmBackbone = method_builder(
    "HATMaskTimmBackbone", CLTimmBackbone, HAT, "independent", _PARAMETERS
)
HATMaskTimmBackbone.__module__ = __name__
HATMaskTimmBackbone.__doc__ = """HAT on a timm model: ``CLTimmBackbone(...).attach(HAT(...))``.

    Args:
        model_name, output_dim, pretrained_weights, img_size, in_chans, timm arguments: as for
            ``TimmBackbone``.
        batch_normalization: ``'independent'`` (default; each task its own copy of every batch
            norm, starting from the model's, so pretrained statistics carry over), ``'shared'``
            or ``None`` (a model without batch norms).
        gate: the mask gate; only ``'sigmoid'`` is supported.
        uncovered_parameters: ``'refuse'`` (default), ``'first_task'`` or ``'freeze'`` for
            parameters outside any layer (a ViT's ``cls_token`` and ``pos_embed``, ConvNeXt's
            layer scale); see :class:`~clarena.hat.HAT`.

    Returns:
        The ``CLTimmBackbone``; its HAT method is ``backbone.mask_method``.
    """
