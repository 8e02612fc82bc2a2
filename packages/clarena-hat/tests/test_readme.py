"""The README's training-loop recipe runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from clarena.hat import hat_of

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_recipe_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    recipe = next(block for block in blocks if "condition_gradients(backbone)" in block)
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(recipe, str(README), "exec"), namespace)
    backbone, heads, x_test = namespace["backbone"], namespace["heads"], namespace["x_test"]
    assert hat_of(backbone).stored_task_ids == [1, 5, 7]
    assert 0 < hat_of(backbone).capacity() <= 1
    feature, _, _ = backbone(x_test, "test", test_task_id=1)
    assert heads(feature, 1).shape == (8, 10)


def test_readme_attach_snippet_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    snippet = next(block for block in blocks if ".attach(HAT())" in block)
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)
    backbone = namespace["backbone"]
    hat = hat_of(backbone)
    assert type(backbone).__name__ == "CLMLP"
    assert hat.batch_norm_mode == "independent"
    assert hat.layer_units == {"fc/0": 256, "fc/1": 100, "fc/2": 64}
    backbone.setup_task_id(1)
    feature, mask, activations = backbone(torch.randn(4, 784), "train", scale=2.0)
    assert feature.shape == (4, 64)
    assert set(mask) == set(activations) == set(hat.layer_units)
