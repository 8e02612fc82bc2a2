"""Backbone configs: one file of arguments per family, one per method, composed per name.

Every published backbone name keeps its config file (``backbone=hatmaskresnet18``), but those
files only pick the family's arguments, the method's changes and the ``_target_``.
"""

from __future__ import annotations

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from clarena.backbones.registry import published_names
from clarena.experiments import cli

BACKBONE = cli.shipped_config_dir() / "backbone"
MLP = {"input_dim": 784, "hidden_dims": [256, 100], "output_dim": 64, "batch_normalization": True}
#: The published docs' files, kept verbatim (their British spelling included).
VERBATIM = {"MLP", "CLMLP"}
RESNET = {"input_channels": 3, "output_dim": 64, "small_input": True}
TIMM = {"model_name": "resnet18", "in_chans": 3, "output_dim": 64}
METHOD = {
    "HATMask": {"batch_normalization": "independent"},
    "WSNMask": {"batch_normalization": "independent"},
}
NAMES = sorted(published_names("clarena.backbones"))


def expected(name: str) -> dict[str, object]:
    if name in VERBATIM:
        return {"_target_": f"clarena.backbones.{name}"} | {
            "input_dim": 784,
            "hidden_dims": [256, 100],
            "output_dim": 64,
            "batch_normalisation": True,
        }
    family = MLP if name.endswith("MLP") else TIMM if "Timm" in name else RESNET
    arguments = dict(family)
    for prefix, changes in METHOD.items():
        if name.startswith(prefix):
            arguments |= changes
    return arguments | {"_target_": f"clarena.backbones.{name}"}


@pytest.mark.parametrize("name", NAMES)
def test_every_published_name_has_a_config_composing_its_family_and_method(name: str) -> None:
    with initialize_config_dir(str(cli.shipped_config_dir()), version_base=None):
        config = compose(
            "entrance", overrides=["experiment=example_clmain_train", f"backbone={name.lower()}"]
        )
    assert OmegaConf.to_container(config.backbone) == expected(name)


def test_arguments_are_written_once_per_family_and_method() -> None:
    carrying = sorted(
        str(path.relative_to(BACKBONE))
        for path in BACKBONE.rglob("*.yaml")
        if set(yaml.safe_load(path.read_text())) - {"defaults", "_target_"}
    )
    assert carrying == [
        "clmlp.yaml",
        "family/mlp.yaml",
        "family/resnet.yaml",
        "family/timm.yaml",
        "method/hat.yaml",
        "method/wsn.yaml",
        "mlp.yaml",
    ]
    names = sorted(path.stem for path in BACKBONE.glob("*.yaml"))
    assert names == sorted(name.lower() for name in NAMES)
