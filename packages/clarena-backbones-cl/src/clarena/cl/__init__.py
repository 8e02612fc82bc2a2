"""clarena continual-learning backbones and output heads.

Backbones here are also reachable as ``clarena.backbones.CLMLP`` ... through the registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clarena.cl._version import __version__
from clarena.cl.base import CLBackbone, check_task_id
from clarena.cl.bits import pack_bits, unpack_bits
from clarena.cl.builders import method_builder, method_of
from clarena.cl.head_dil import HeadDIL
from clarena.cl.heads import HeadsCIL, HeadsMTL, HeadsTIL, HeadSTL
from clarena.cl.layer_graph import feature_layer_names, output_layer_names
from clarena.cl.mask_store import TaskMaskStore
from clarena.cl.method import MaskMethod, available_mask_methods, resolve_mask_method
from clarena.cl.mlp import CLMLP
from clarena.cl.optim import check_optimizer
from clarena.cl.shared_parameters import UNCOVERED_MODES, check_uncovered_mode, shared_parameters
from clarena.cl.state import create_saved_children
from clarena.cl.task_batch_norm import (
    BatchNormMode,
    TaskBatchNorm,
    make_batch_norm_task_independent,
    resolve_batch_norm_mode,
    select_task_batch_norm,
)
from clarena.cl.update_space import UpdateSpaceProtection

if TYPE_CHECKING:
    from clarena.cl.resnet import (
        CLResNet,
        CLResNet18,
        CLResNet34,
        CLResNet50,
        CLResNet52,
        CLResNet101,
        CLResNet152,
    )

__all__ = [
    "CLMLP",
    "UNCOVERED_MODES",
    "BatchNormMode",
    "CLBackbone",
    "CLResNet",
    "CLResNet18",
    "CLResNet34",
    "CLResNet50",
    "CLResNet52",
    "CLResNet101",
    "CLResNet152",
    "HeadDIL",
    "HeadSTL",
    "HeadsCIL",
    "HeadsMTL",
    "HeadsTIL",
    "MaskMethod",
    "TaskBatchNorm",
    "TaskMaskStore",
    "UpdateSpaceProtection",
    "__version__",
    "available_mask_methods",
    "check_optimizer",
    "check_task_id",
    "check_uncovered_mode",
    "create_saved_children",
    "feature_layer_names",
    "make_batch_norm_task_independent",
    "method_builder",
    "method_of",
    "output_layer_names",
    "pack_bits",
    "resolve_batch_norm_mode",
    "resolve_mask_method",
    "select_task_batch_norm",
    "shared_parameters",
    "unpack_bits",
]


def __getattr__(name: str) -> Any:
    # ResNets load on first access: they import timm, which loads torchvision.
    if name.startswith("CLResNet"):
        resnet = importlib.import_module("clarena.cl.resnet")
        if hasattr(resnet, name):
            return getattr(resnet, name)
    raise AttributeError(f"module 'clarena.cl' has no attribute '{name}'")
