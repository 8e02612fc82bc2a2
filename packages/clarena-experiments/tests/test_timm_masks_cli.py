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


TIMM_TINY = (
    "backbone.model_name=convnext_atto",
    "+backbone.depths=[1,1,1,1]",
    "backbone.output_dim=16",
)


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "optimizer"), [("adahat", "adamw"), ("fgadahat", "adam")])
def test_adahat_and_fg_adahat_on_a_timm_model_under_adam_family_optimisers(
    run_clarena: Callable[..., Path], algorithm: str, optimizer: str
) -> None:
    """AdaHAT's and FG-AdaHAT's measures (summative mask, FG-AdaHAT's captum importance) on a
    ConvNeXt, under AdamW (weight decay 0.01) and Adam in update space, the default."""
    run_dir = run_clarena(
        "example_clmain_train",
        *quick_run_overrides(2, train_batches=2),
        "backbone=hatmasktimmbackbone",
        *TIMM_TINY,
        "+backbone.uncovered_parameters=first_task",
        f"cl_algorithm={algorithm}",
        "cl_dataset=split_digits_rgb32",
        f"optimizer={optimizer}",
    )
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["algorithm"] == {"adahat": "AdaHAT", "fgadahat": "FGAdaHAT"}[algorithm]
    assert summary["trained_tasks"] == [1, 2]
    # Soft protection: task 1 may move a little, not as under fine-tuning.
    assert 0.0 <= summary["forgetting"] <= 0.05
    assert set(summary["capacity_per_task"]) == {"1", "2"}


@pytest.mark.slow
def test_hat_on_a_timm_model_in_dil_forgets_nothing(run_clarena: Callable[..., Path]) -> None:
    run_dir = run_clarena(
        "example_clmain_train",
        *quick_run_overrides(2, train_batches=2),
        "backbone=hatmasktimmbackbone",
        *TIMM_TINY,
        "+backbone.uncovered_parameters=first_task",
        "cl_algorithm=hat",
        "cl_paradigm=DIL",
        "cl_dataset=split_digits_rgb32",
        "optimizer=adamw",
    )
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["cl_paradigm"] == "DIL"
    assert summary["backward_transfer"] == 0.0
    assert summary["forgetting"] == 0.0


@pytest.mark.slow
def test_a_timm_model_in_cil_mtl_and_stl(run_clarena: Callable[..., Path]) -> None:
    """The plain timm backbones in the other settings: CIL fine-tuning (CLTimmBackbone), and MTL
    and STL (TimmBackbone) on 3-channel 32x32 digits."""
    cil = run_clarena(
        "example_clmain_train",
        *quick_run_overrides(2, train_batches=2),
        "backbone=cltimmbackbone",
        *TIMM_TINY,
        "cl_algorithm=finetuning",
        "cl_paradigm=CIL",
        "cl_dataset=split_digits_rgb32",
    )
    summary = json.loads((cil / "results" / "summary.json").read_text())
    assert (summary["cl_paradigm"], summary["trained_tasks"]) == ("CIL", [1, 2])
    for experiment, group, algorithm, tasks in (
        ("example_mtl_train", "mtl_dataset", "JointLearning", {"1", "2", "3"}),
        ("example_stl_train", "stl_dataset", "SingleLearning", {"1"}),
    ):
        run_dir = run_clarena(
            experiment,
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "lightning_loggers=none",
            "callbacks=none",
            "backbone=timmbackbone",
            *TIMM_TINY,
            f"+{group}.image_size=32",
            f"+{group}.channels=3",
        )
        summary = json.loads((run_dir / "results" / "summary.json").read_text())
        assert summary["algorithm"] == algorithm
        assert set(summary["accuracy_per_task"]) == tasks
        # 2 training batches of 10 classes: better than chance (0.1) on every task.
        assert all(value > 0.1 for value in summary["accuracy_per_task"].values()), summary
