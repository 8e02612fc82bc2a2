"""Every clarena distribution installed (nox session ``tests``)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution

import clarena.backbones
from clarena.backbones.registry import KNOWN_BACKBONES


def test_every_known_backbone_name_resolves_to_its_distribution() -> None:
    available = clarena.backbones.available_backbones()
    for name, provider in KNOWN_BACKBONES.items():
        assert available.get(name) == provider, f"{name} should come from {provider}"
        backbone_class = getattr(clarena.backbones, name)
        if isinstance(backbone_class, type):
            assert issubclass(backbone_class, clarena.backbones.Backbone)
        else:  # a registered builder returning a backbone with a mask method attached (#24)
            assert callable(backbone_class), name
            assert backbone_class.__name__ in (name, name.replace("52", "50")), name


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
    assert listed == {name: [provider, "installed"] for name, provider in KNOWN_BACKBONES.items()}
