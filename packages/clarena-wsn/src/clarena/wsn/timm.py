"""``WSNMaskTimmBackbone``: any timm model by name, :class:`~clarena.wsn.WSN` attached."""

from __future__ import annotations

import inspect

from clarena.cl import UNCOVERED_MODES, method_builder
from clarena.cl.timm_backbone import CLTimmBackbone
from clarena.wsn.method import WSN

_UNCOVERED = inspect.Parameter(
    "uncovered_parameters",
    inspect.Parameter.KEYWORD_ONLY,
    default=UNCOVERED_MODES[0],
    annotation="str",
)

WSNMaskTimmBackbone = method_builder(
    "WSNMaskTimmBackbone", CLTimmBackbone, WSN, "independent", [_UNCOVERED]
)
WSNMaskTimmBackbone.__module__ = __name__
WSNMaskTimmBackbone.__doc__ = """WSN on a timm model: ``CLTimmBackbone(...).attach(WSN(...))``.

    Args:
        model_name, output_dim, pretrained_weights, img_size, in_chans, timm arguments: as for
            ``TimmBackbone``.
        batch_normalization: ``'independent'`` (default; each task its own copy of every batch
            norm, starting from the model's), ``'shared'`` or ``None``.
        uncovered_parameters: ``'refuse'`` (default), ``'first_task'`` or ``'freeze'`` for
            parameters outside any layer; see :class:`~clarena.wsn.WSN`.

    Returns:
        The ``CLTimmBackbone``; its WSN method is ``backbone.mask_method``.
    """
