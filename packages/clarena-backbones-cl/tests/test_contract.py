"""CL backbones satisfy the core backbone contract once a task is set up."""

from __future__ import annotations

import torch

from clarena.backbones.testing import BackboneContract
from clarena.cl import (
    CLMLP,
    CLResNet18,
    CLResNet50,
    make_batch_norm_task_independent,
    select_task_batch_norm,
)


class CLContract(BackboneContract):
    """CL backbones need a task before forward."""

    def forward(self, backbone, input):
        backbone.setup_task_id(3)
        return backbone(input, stage="test", task_id=3)


class TestCLMLPContract(CLContract):
    def make_backbone(self):
        return CLMLP(784, [256, 100], 64, batch_normalization=True, dropout=0.2)

    def example_input(self):
        return torch.randn(4, 1, 28, 28)


class TestCLMLPTaskBatchNormContract(CLContract):
    def make_backbone(self):
        mlp = CLMLP(20, [16, 8], 5, batch_normalization=True)
        make_batch_norm_task_independent(mlp)
        select_task_batch_norm(mlp, 3, create=True)
        return mlp

    def example_input(self):
        return torch.randn(3, 20)


class TestCLResNet18Contract(CLContract):
    def make_backbone(self):
        return CLResNet18(input_channels=3, output_dim=64, small_input=True)

    def example_input(self):
        return torch.randn(2, 3, 16, 16)


class TestCLResNet50Contract(CLContract):
    def make_backbone(self):
        return CLResNet50(input_channels=1, output_dim=2048, small_input=True)

    def example_input(self):
        return torch.randn(2, 1, 8, 8)
