"""Every CL variant takes exactly its family's arguments (one source of truth: core)."""

from __future__ import annotations

import pytest

from clarena.backbones import MLP, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from clarena.backbones.resnet import ResNet
from clarena.backbones.testing import assert_extends_arguments
from clarena.cl import CLMLP, CLResNet18, CLResNet34, CLResNet50, CLResNet101, CLResNet152


@pytest.mark.parametrize(
    ("variant", "family"),
    [(CLMLP, MLP)]
    + [(cls, ResNet) for cls in (CLResNet18, CLResNet34, CLResNet50, CLResNet101, CLResNet152)]
    + [
        (CLResNet18, ResNet18),
        (CLResNet34, ResNet34),
        (CLResNet50, ResNet50),
        (CLResNet101, ResNet101),
        (CLResNet152, ResNet152),
    ],
)
def test_cl_variant_takes_exactly_the_core_arguments(variant: type, family: type) -> None:
    assert_extends_arguments(variant, family, {})
