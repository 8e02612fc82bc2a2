"""clarena WSN: Winning SubNetworks (Kang et al., ICML 2022) as a mask method, in plain torch.

:class:`WSN` attaches to any continual-learning backbone whose weighted layers are linear or
convolutional (``CLMLP(...).attach(WSN())``). The published names ``WSNMaskMLP``,
``WSNMaskResNet18`` ... are builders doing exactly that, also reachable as
``clarena.backbones.WSNMaskMLP`` ... through the registry.
"""

from __future__ import annotations

from clarena.wsn._version import __version__
from clarena.wsn.masks import TaskMaskStore, parameter_key
from clarena.wsn.method import (
    FIELDS,
    SCORE_INIT_MODES,
    STEP_ARGUMENTS,
    WSN,
    check_mask_percentage,
    wsn_of,
)
from clarena.wsn.mlp import WSNMaskMLP
from clarena.wsn.optim import check_optimizer
from clarena.wsn.resnet import (
    WSNMaskResNet18,
    WSNMaskResNet34,
    WSNMaskResNet50,
    WSNMaskResNet52,
    WSNMaskResNet101,
    WSNMaskResNet152,
)
from clarena.wsn.topc import (
    ThresholdHint,
    masked_parameter,
    masked_parameters,
    score_mask,
    top_count,
    top_fraction_mask,
)

__all__ = [
    "FIELDS",
    "SCORE_INIT_MODES",
    "STEP_ARGUMENTS",
    "WSN",
    "TaskMaskStore",
    "ThresholdHint",
    "WSNMaskMLP",
    "WSNMaskResNet18",
    "WSNMaskResNet34",
    "WSNMaskResNet50",
    "WSNMaskResNet52",
    "WSNMaskResNet101",
    "WSNMaskResNet152",
    "__version__",
    "check_mask_percentage",
    "check_optimizer",
    "masked_parameter",
    "masked_parameters",
    "parameter_key",
    "score_mask",
    "top_count",
    "top_fraction_mask",
    "wsn_of",
]
