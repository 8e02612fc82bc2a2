"""Every CL variant takes exactly its family's arguments (one source of truth: core)."""

from __future__ import annotations

import pytest

from clarena.backbones import MLP
from clarena.backbones.resnet import ResNet
from clarena.backbones.testing import assert_extends_arguments
from clarena.cl import CLMLP, CLResNet18, CLResNet34, CLResNet50, CLResNet101, CLResNet152


@pytest.mark.parametrize(
    ("variant", "family"),
    [(CLMLP, MLP)]
    + [(cls, ResNet) for cls in (CLResNet18, CLResNet34, CLResNet50, CLResNet101, CLResNet152)],
)
def test_cl_variant_takes_exactly_the_core_arguments(variant: type, family: type) -> None:
    assert_extends_arguments(variant, family, {})
