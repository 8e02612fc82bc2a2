"""clarena-backbones-core and clarena-backbones-cl installed (nox session ``isolation(core+cl)``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from _probe import run_fresh


def test_only_core_and_cl_are_installed() -> None:
    for present in ("clarena.backbones", "clarena.cl"):
        assert importlib.util.find_spec(present) is not None
    for absent in ("clarena.hat", "clarena.wsn", "clarena.experiments"):
        assert importlib.util.find_spec(absent) is None


def test_cl_names_resolve_through_the_core_registry() -> None:
    import clarena.backbones
    import clarena.cl

    assert clarena.backbones.CLMLP is clarena.cl.CLMLP
    assert clarena.backbones.CLResNet52 is clarena.cl.CLResNet50
    available = clarena.backbones.available_backbones()
    assert available["CLResNet18"] == "clarena-backbones-cl"
    assert available["MLP"] == "clarena-backbones-core"


def test_mask_backbones_name_their_distributions() -> None:
    import clarena.backbones

    with pytest.raises(
        ImportError, match=r"HATMaskMLP is provided by clarena-hat.*pip install clarena-hat"
    ):
        clarena.backbones.HATMaskMLP  # noqa: B018
    with pytest.raises(ImportError, match=r"pip install clarena-wsn"):
        clarena.backbones.WSNMaskResNet18  # noqa: B018


def test_cl_import_stays_light() -> None:
    loaded = json.loads(
        run_fresh(
            """
            import json, sys
            import clarena.backbones, clarena.cl
            clarena.backbones.CLMLP
            print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))
            """
        )
    )
    assert "lightning" not in loaded
    assert "hydra" not in loaded
