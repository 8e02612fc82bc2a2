"""The README's training-loop recipe runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_recipe_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    recipe = next(block for block in blocks if "condition_gradients(backbone)" in block)
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(recipe, str(README), "exec"), namespace)
    backbone, heads, x_test = namespace["backbone"], namespace["heads"], namespace["x_test"]
    assert backbone.stored_task_ids == [1, 5, 7]
    assert 0 < backbone.capacity() <= 1
    feature, _, _ = backbone(x_test, "test", test_task_id=1)
    assert heads(feature, 1).shape == (8, 10)
