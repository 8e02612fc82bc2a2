"""examples/timm_hat_adamw.py: a pretrained timm ViT learns three tasks with HAT and AdamW (weight decay, update space)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "timm_hat_adamw.py"


def load_example():
    spec = importlib.util.spec_from_file_location("timm_hat_adamw", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_starts_from_the_local_checkpoint_and_forgets_nothing(tmp_path: Path) -> None:
    example = load_example()
    weights = example.write_stand_in_weights(tmp_path / "vit.pth")
    saved = torch.load(weights)
    built = example.HATMaskTimmBackbone(
        example.MODEL,
        pretrained_weights=weights,
        uncovered_parameters="first_task",
        **example.TIMM_ARGUMENTS,
    )
    for key, value in saved.items():
        if not key.startswith("head."):
            assert torch.equal(built.state_dict()[key], value), key

    matrix, backbone, heads = example.main(weights)

    # Task 1's accuracy after every later task is the one it had: the test-stage outputs are
    # bit-identical (checked on the logits), and the tasks were learned (above chance).
    assert [row[0] for row in matrix] == [matrix[0][0]] * example.TASKS
    assert all(row[-1] > 0.6 for row in matrix)
    # The checkpoint's parameter names are the backbone's (timm's), plus HAT's own state.
    assert set(saved) - {"head.weight", "head.bias"} <= set(backbone.state_dict())
    assert heads is not None
