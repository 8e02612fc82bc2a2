"""``backbone=hatmasktimmbackbone`` / ``wsnmasktimmbackbone``: any timm model with a mask method
through the command line, end to end at a tiny size."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clarena.experiments.testing import quick_run_overrides


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backbone", "algorithm"), [("hatmasktimmbackbone", "hat"), ("wsnmasktimmbackbone", "wsn")]
)
def test_convnext_with_a_mask_method_trains_two_til_tasks_without_forgetting(
    run_clarena: Callable[..., Path], backbone: str, algorithm: str
) -> None:
    run_dir = run_clarena(
        "example_clmain_train",
        *quick_run_overrides(2, train_batches=2),
        f"backbone={backbone}",
        "backbone.model_name=convnext_atto",
        "+backbone.depths=[1,1,1,1]",
        "+backbone.uncovered_parameters=first_task",
        "backbone.output_dim=16",
        f"cl_algorithm={algorithm}",
        "cl_dataset=split_digits_rgb32",
        "optimizer=sgd",
    )
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["algorithm"] == algorithm.upper()
    assert summary["trained_tasks"] == [1, 2]
    # Task 1's accuracy after task 2 is exactly what it was: nothing forgotten.
    assert summary["backward_transfer"] == 0.0
    assert summary["forgetting"] == 0.0
