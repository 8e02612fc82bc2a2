"""Every clarena distribution installed (nox session ``tests``)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from importlib.metadata import distribution

import clarena.backbones
from clarena.backbones.registry import KNOWN_BACKBONES


def test_every_known_backbone_name_resolves_to_its_distribution() -> None:
    available = clarena.backbones.available_backbones()
    for name, provider in KNOWN_BACKBONES.items():
        assert available.get(name) == provider, f"{name} should come from {provider}"
        backbone = getattr(clarena.backbones, name)
        # A backbone class, or a registered builder taking the same arguments (ResNet18 ...).
        if isinstance(backbone, type):
            assert issubclass(backbone, clarena.backbones.Backbone), name
        else:
            assert "output_dim" in inspect.signature(backbone).parameters, name


def test_sibling_pins_are_ranges_not_paths() -> None:
    for name in ("clarena-backbones-cl", "clarena-hat", "clarena-wsn", "clarena-experiments"):
        for requirement in distribution(name).requires or []:
            if requirement.startswith("clarena"):
                assert ">=" in requirement, requirement
                assert "<" in requirement, requirement
                assert "@" not in requirement, requirement
                assert "file:" not in requirement, requirement


def test_command_line_lists_every_backbone_installed() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "clarena.backbones"], capture_output=True, text=True, check=True
    ).stdout
    header, *rows = output.splitlines()
    assert header.split() == ["backbone", "distribution", "state"]
    listed = {row.split()[0]: row.split()[1:] for row in rows}
    # The demo distribution (integration-tests/third_party_configs) registers a backbone too.
    assert listed.pop("DemoGateMLP") == ["clarena-demo-configs", "installed"]
    assert listed == {name: [provider, "installed"] for name, provider in KNOWN_BACKBONES.items()}
