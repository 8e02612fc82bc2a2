"""The CL names resolve through the core registry once clarena-backbones-cl is installed."""

from __future__ import annotations

import pytest

from clarena import backbones, cl

CL_NAMES = ["CLMLP", "CLResNet18", "CLResNet34", "CLResNet50", "CLResNet101", "CLResNet152"]


@pytest.mark.parametrize("name", CL_NAMES)
def test_cl_name_resolves_to_the_clarena_cl_class(name):
    assert getattr(backbones, name) is getattr(cl, name)
    assert backbones.resolve_backbone(name) is getattr(cl, name)


def test_available_backbones_lists_the_cl_names_under_this_distribution():
    available = backbones.available_backbones()
    for name in [*CL_NAMES, "CLResNet52"]:
        assert available[name] == "clarena-backbones-cl"
    assert available["MLP"] == "clarena-backbones-core"


def test_misspelt_cl_name_suggests_the_right_one():
    with pytest.raises(AttributeError, match=r"no backbone 'CLMPL'.*Did you mean CLMLP"):
        backbones.resolve_backbone("CLMPL")
