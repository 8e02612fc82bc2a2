"""Only clarena-backbones-core is installed (nox session ``isolation(core)``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from _probe import run_fresh


def test_only_core_is_installed() -> None:
    assert importlib.util.find_spec("clarena.backbones") is not None
    for absent in ("clarena.cl", "clarena.hat", "clarena.wsn", "clarena.experiments"):
        assert importlib.util.find_spec(absent) is None, f"{absent} should not be installed here"


def test_import_pulls_in_neither_lightning_nor_hydra() -> None:
    # timm (and through it torchvision) loads only when a ResNet is first used.
    loaded = json.loads(
        run_fresh(
            """
            import json, sys
            import clarena.backbones
            print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))
            """
        )
    )
    for heavy in ("lightning", "pytorch_lightning", "hydra", "omegaconf", "torchvision", "timm"):
        assert heavy not in loaded


def test_clarena_is_a_namespace_package() -> None:
    import clarena

    assert getattr(clarena, "__file__", None) is None
    assert len(list(clarena.__path__)) >= 1


def test_cl_backbone_names_its_distribution() -> None:
    import clarena.backbones
    from clarena.backbones import BackboneNotInstalledError

    with pytest.raises(
        BackboneNotInstalledError, match=r"clarena-backbones-cl.*pip install clarena-backbones-cl"
    ):
        clarena.backbones.CLMLP  # noqa: B018
    with pytest.raises(ImportError, match="clarena-backbones-cl"):
        from clarena.backbones import CLResNet18  # noqa: F401
    with pytest.raises(ImportError, match="clarena-hat"):
        clarena.backbones.HATMaskMLP  # noqa: B018


def test_core_backbones_work_and_are_listed() -> None:
    import torch

    import clarena.backbones

    assert clarena.backbones.available_backbones() == {
        name: "clarena-backbones-core"
        for name in (
            "MLP",
            "ResNet101",
            "ResNet152",
            "ResNet18",
            "ResNet34",
            "ResNet50",
            "ResNet52",
            "TimmBackbone",
        )
    }
    feature, _ = clarena.backbones.MLP(784, [32], 16)(torch.randn(4, 1, 28, 28))
    assert feature.shape == (4, 16)


def test_command_line_lists_core_installed_and_the_rest_missing() -> None:
    from clarena.backbones.registry import KNOWN_BACKBONES

    output = subprocess.run(
        [sys.executable, "-m", "clarena.backbones"], capture_output=True, text=True, check=True
    ).stdout
    header, *rows = output.splitlines()
    assert header.split() == ["backbone", "distribution", "state"]
    states = {row.split(maxsplit=2)[0]: row.split(maxsplit=2)[2] for row in rows}
    assert set(states) == set(KNOWN_BACKBONES)
    for name, provider in KNOWN_BACKBONES.items():
        if provider == "clarena-backbones-core":
            assert states[name] == "installed", name
        else:
            assert states[name] == f"missing: pip install {provider}", name
