"""The name registry: ``clarena.backbones.<Name>`` from entry points, aliases, helpful errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

import clarena.backbones
from clarena.backbones import Backbone, BackboneNotInstalledError, registry, resolve_backbone

CORE_NAMES = [
    "MLP",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet52",
    "ResNet101",
    "ResNet152",
    "TimmBackbone",
]


@pytest.fixture
def core_only(monkeypatch):
    """Pretend only clarena-backbones-core is installed, whatever this environment holds."""
    core = {
        name: ep
        for name, ep in registry._entry_points().items()
        if ep.dist is not None and ep.dist.name == "clarena-backbones-core"
    }
    monkeypatch.setattr(registry, "_entry_points", lambda: core)
    for name in registry.KNOWN_BACKBONES:
        if name not in CORE_NAMES:
            monkeypatch.delitem(vars(clarena.backbones), name, raising=False)


def test_available_backbones_lists_core_with_its_distribution():
    available = clarena.backbones.available_backbones()
    for name in CORE_NAMES:
        assert available[name] == "clarena-backbones-core"


@pytest.mark.parametrize("name", CORE_NAMES)
def test_core_entry_points_resolve_to_the_exported_backbones(name):
    build = resolve_backbone(name)
    assert build is getattr(clarena.backbones, name)
    arguments: dict[str, object] = {}
    if name == "MLP":
        arguments = {"input_dim": 4, "hidden_dims": [3], "output_dim": 2}
    elif name == "TimmBackbone":
        arguments = {"model_name": "resnet10t", "output_dim": 2}
    assert isinstance(build(**arguments), Backbone)


def test_resnet52_is_the_50_layer_network():
    assert clarena.backbones.ResNet52 is clarena.backbones.ResNet50
    from clarena.backbones import ResNet52

    assert ResNet52().depth == 50


def test_hydra_target_resolves_the_docs_alias():
    backbone = instantiate(
        OmegaConf.create({"_target_": "clarena.backbones.ResNet52", "output_dim": 2048})
    )
    assert type(backbone) is clarena.backbones.ResNet
    assert (backbone.depth, backbone.architecture) == (50, "ResNet50")
    assert backbone.proj is None


@pytest.mark.usefixtures("core_only")
@pytest.mark.parametrize(
    ("name", "distribution"),
    [
        ("CLMLP", "clarena-backbones-cl"),
        ("CLResNet52", "clarena-backbones-cl"),
        ("HATMaskResNet18", "clarena-hat"),
        ("WSNMaskMLP", "clarena-wsn"),
    ],
)
def test_missing_distribution_is_named_with_the_install_command(name, distribution):
    message = f"{name} is provided by {distribution}.*pip install {distribution}"
    with pytest.raises(BackboneNotInstalledError, match=message):
        resolve_backbone(name)
    with pytest.raises(BackboneNotInstalledError, match=message):
        getattr(clarena.backbones, name)


@pytest.mark.usefixtures("core_only")
def test_from_import_of_a_missing_distribution_is_an_import_error():
    with pytest.raises(ImportError, match="pip install clarena-backbones-cl"):
        from clarena.backbones import CLMLP  # noqa: F401


@pytest.mark.usefixtures("core_only")
def test_hydra_target_of_a_missing_distribution_chains_the_install_hint():
    with pytest.raises(InstantiationException, match=r"clarena\.backbones\.HATMaskMLP") as error:
        instantiate(OmegaConf.create({"_target_": "clarena.backbones.HATMaskMLP"}))
    cause = error.value.__cause__
    assert isinstance(cause, BackboneNotInstalledError)
    assert "pip install clarena-hat" in str(cause)


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(AttributeError, match=r"no backbone 'MLPP'\. Did you mean MLP"):
        clarena.backbones.MLPP  # noqa: B018
    with pytest.raises(AttributeError, match="Did you mean ResNet18"):
        resolve_backbone("Resnet18")
    assert not hasattr(clarena.backbones, "MLPP")


@pytest.mark.parametrize("name", [None, 18, ["ResNet18"]])
def test_a_name_that_is_not_a_string_is_a_type_error_naming_the_argument(name):
    with pytest.raises(TypeError) as error:
        resolve_backbone(name)
    assert str(error.value) == (
        f"resolve_backbone: name must be a backbone's name, a string such as 'ResNet18' or "
        f"'CLMLP'; got {name!r}. clarena.backbones.available_backbones() lists the names."
    )


def test_from_import_of_an_unknown_name_is_an_import_error():
    with pytest.raises(ImportError, match="MLPP"):
        from clarena.backbones import MLPP  # noqa: F401


def test_dunder_lookups_are_plain_attribute_errors():
    assert not hasattr(clarena.backbones, "__wrapped__")


def _listed_states(monkeypatch, capsys) -> dict[str, tuple[str, str]]:
    """Run ``python -m clarena.backbones``'s main; map each listed name to (distribution, state)."""
    from clarena.backbones.__main__ import main

    monkeypatch.setattr(sys, "argv", ["python -m clarena.backbones"])
    main()
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["backbone", "distribution", "state"]
    listed = {}
    for row in rows:
        name, distribution, state = row.split(maxsplit=2)
        listed[name] = (distribution, state)
    return listed


@pytest.mark.usefixtures("core_only")
def test_command_line_shows_installed_and_missing_states(monkeypatch, capsys):
    listed = _listed_states(monkeypatch, capsys)
    assert set(listed) == set(registry.KNOWN_BACKBONES)
    for name, distribution in registry.KNOWN_BACKBONES.items():
        expected = "installed" if name in CORE_NAMES else f"missing: pip install {distribution}"
        assert listed[name] == (distribution, expected), name


def test_command_line_shows_the_state_of_this_environment(monkeypatch, capsys):
    listed = _listed_states(monkeypatch, capsys)
    installed = registry.available_backbones()
    for name, distribution in registry.KNOWN_BACKBONES.items():
        expected = "installed" if name in installed else f"missing: pip install {distribution}"
        assert listed[name] == (distribution, expected), name


def test_command_line_demo_runs_every_core_backbone():
    result = subprocess.run(
        [sys.executable, "-m", "clarena.backbones", "--demo"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "feature (8, 64)" in result.stdout
    assert result.stdout.count("feature (2, 64)") == 5


def test_install_hints_come_from_the_published_catalogue(monkeypatch):
    monkeypatch.setattr(registry, "_entry_points", dict)
    catalogue = {"FooMaskMLP": "clarena-foo"}
    monkeypatch.setattr(
        registry,
        "published_names",
        lambda group: catalogue if group == registry.ENTRY_POINT_GROUP else {},
    )
    with pytest.raises(BackboneNotInstalledError) as error:
        resolve_backbone("FooMaskMLP")
    assert str(error.value) == (
        "FooMaskMLP is provided by clarena-foo, which is not installed: pip install clarena-foo"
    )
    with pytest.raises(AttributeError, match="no backbone 'HATMaskMLP'"):
        resolve_backbone("HATMaskMLP")


def test_the_catalogue_is_package_data_covering_every_group():
    assert registry.published_names("clarena.backbones")["HATMaskResNet52"] == "clarena-hat"
    assert registry.published_names("clarena.mask_methods") == {
        "hat": "clarena-hat",
        "wsn": "clarena-wsn",
    }
    assert registry.published_names("clarena.algorithms")["WSN"] == "clarena-experiments"
    assert registry.install_hint("clarena.mask_methods", "my_method") is None
