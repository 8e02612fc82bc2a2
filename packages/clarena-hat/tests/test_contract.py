"""The core backbone contract (SPEC §4) holds for the HAT backbones."""

from __future__ import annotations

import torch

from clarena.backbones.testing import BackboneContract
from clarena.hat import HATMaskMLP, HATMaskResNet18, hat_of


class _HATContract(BackboneContract):
    extra_parameter_prefixes = ("task_embedding.",)

    def forward(self, backbone, input):
        backbone.setup_task_id(1)
        hat_of(backbone).store_mask()
        return backbone(input, "test", test_task_id=1)


class TestHATMaskMLP(_HATContract):
    def make_backbone(self):
        return HATMaskMLP(784, [32, 16], 8, batch_normalization="independent")

    def example_input(self):
        return torch.randn(4, 1, 28, 28)


class TestHATMaskResNet18(_HATContract):
    def make_backbone(self):
        return HATMaskResNet18(input_channels=3, output_dim=10, small_input=True)

    def example_input(self):
        return torch.randn(2, 3, 8, 8)
