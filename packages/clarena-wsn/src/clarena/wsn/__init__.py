"""clarena WSN: Winning SubNetworks (Kang et al., ICML 2022) for MLPs and ResNets, in plain torch.

Backbones here are also reachable as ``clarena.backbones.WSNMaskMLP`` ... through the registry.
"""

from __future__ import annotations

from clarena.wsn._version import __version__
from clarena.wsn.backbone import SCORE_INIT_MODES, WSNMaskBackbone, check_mask_percentage
from clarena.wsn.masks import TaskMaskStore, parameter_key
from clarena.wsn.mlp import WSNMaskMLP
from clarena.wsn.optim import check_optimizer
from clarena.wsn.resnet import (
    WSNMaskResNet,
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
    "SCORE_INIT_MODES",
    "TaskMaskStore",
    "ThresholdHint",
    "WSNMaskBackbone",
    "WSNMaskMLP",
    "WSNMaskResNet",
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
]
