"""Every example experiment end to end, checking the files it writes and what they hold."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

Run = Callable[..., Path]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of strings (exact text, no float parsing)."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def accuracy_table(run_dir: Path, num_tasks: int) -> list[dict[str, str]]:
    """acc.csv rows, after checking its columns and its lower-triangular shape."""
    rows = read_rows(run_dir / "results" / "acc.csv")
    assert list(rows[0]) == [
        "after_training_task",
        "average_accuracy",
        *[f"test_on_task_{t}" for t in range(1, num_tasks + 1)],
    ]
    assert [row["after_training_task"] for row in rows] == [str(t) for t in range(1, num_tasks + 1)]
    for trained, row in enumerate(rows, start=1):
        for task in range(1, num_tasks + 1):
            value = row[f"test_on_task_{task}"]
            if task <= trained:
                assert 0.0 <= float(value) <= 1.0
            else:
                assert value == ""
    return rows


def column(rows: list[dict[str, str]], task: int) -> list[str]:
    return [row[f"test_on_task_{task}"] for row in rows if row[f"test_on_task_{task}"] != ""]


def test_main_job_finetuning_forgets_and_eval_reproduces_last_row(run_clarena: Run) -> None:
    run_dir = run_clarena("example_clmain_train")
    rows = accuracy_table(run_dir, 5)
    first = [float(v) for v in column(rows, 1)]
    # Forgetting is measured: task 1's accuracy after the last task is well below its best.
    assert first[-1] < max(first) - 0.05
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["forgetting"] > 0
    assert summary["backward_transfer"] < 0
    assert summary["average_accuracy"] == float(rows[-1]["average_accuracy"])
    for name in ("acc_matrix.png", "ave_acc.png"):
        assert (run_dir / "results" / name).read_bytes()[:4] == b"\x89PNG"
    for task in range(1, 6):
        assert (run_dir / "lightning_logs" / "csv" / f"task_{task}" / "metrics.csv").is_file()
        assert list((run_dir / "lightning_logs" / "tensorboard" / f"task_{task}").glob("events.*"))
    checkpoint = torch.load(run_dir / "saved_model.pt", weights_only=True)
    assert checkpoint["trained_tasks"] == [1, 2, 3, 4, 5]
    assert checkpoint["config"]["backbone"]["_target_"] == "clarena.backbones.CLMLP"

    eval_dir = run_clarena(
        "example_clmain_eval", f"model_path={run_dir / 'saved_model.pt'}", output="eval"
    )
    evaluated = read_rows(eval_dir / "results" / "acc.csv")
    assert evaluated == [rows[-1]]


@pytest.mark.parametrize(
    ("experiment", "num_tasks"),
    [
        ("example_clmain_hat", 5),
        ("example_clmain_wsn", 5),
        ("example_clmain_hat_resnet18", 3),
        ("example_clmain_wsn_resnet18", 3),
    ],
)
def test_masked_algorithms_never_forget(run_clarena: Run, experiment: str, num_tasks: int) -> None:
    run_dir = run_clarena(experiment)
    rows = accuracy_table(run_dir, num_tasks)
    for task in range(1, num_tasks + 1):
        values = column(rows, task)
        assert len(values) == num_tasks - task + 1
        assert len(set(values)) == 1, f"task {task} accuracy changed: {values}"
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["forgetting"] == 0.0
    capacities = [summary["capacity_per_task"][str(t)] for t in range(1, num_tasks + 1)]
    assert all(0 < c <= 1 for c in capacities)
    assert capacities == sorted(capacities)


@pytest.mark.parametrize(
    ("experiment", "overrides"),
    [
        ("example_clmain_wsn", []),
        ("example_clmain_hat", []),
        ("example_clmain_train", ["cl_algorithm=independent"]),
        ("example_clmain_fgadahat", []),
        ("example_clmain_dil", []),
        ("example_clmain_dil", ["cl_algorithm=independent", "backbone=clmlp"]),
    ],
)
def test_saved_model_eval_reproduces_last_row(
    run_clarena: Run, experiment: str, overrides: list[str]
) -> None:
    run_dir = run_clarena(experiment, "train_tasks=2", "trainer.max_epochs=1", *overrides)
    rows = accuracy_table(run_dir, 2)
    eval_dir = run_clarena(
        "example_clmain_eval", f"model_path={run_dir / 'saved_model.pt'}", output="eval"
    )
    assert read_rows(eval_dir / "results" / "acc.csv") == [rows[-1]]
    summary = json.loads((eval_dir / "results" / "summary.json").read_text())
    assert summary.get("task_id_at_test") == ("oracle" if "dil" in experiment else None)


def test_adahat_runs_and_reports_capacity(run_clarena: Run) -> None:
    run_dir = run_clarena("example_clmain_adahat", "train_tasks=3")
    rows = accuracy_table(run_dir, 3)
    assert len(rows) == 3
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["algorithm"] == "AdaHAT"
    assert set(summary["capacity_per_task"]) == {"1", "2", "3"}


def test_independent_never_forgets_and_cil_finetuning_runs(run_clarena: Run) -> None:
    run_dir = run_clarena(
        "example_clmain_train", "cl_algorithm=independent", "train_tasks=3", "trainer.max_epochs=1"
    )
    rows = accuracy_table(run_dir, 3)
    assert len(set(column(rows, 1))) == 1
    run_dir = run_clarena(
        "example_clmain_train",
        "cl_dataset=split_digits",
        "cl_paradigm=CIL",
        "train_tasks=2",
        "trainer.max_epochs=1",
        output="cil",
    )
    rows = read_rows(run_dir / "results" / "acc.csv")
    assert [row["after_training_task"] for row in rows] == ["1", "2"]
    # In CIL the tasks compete in one softmax: after task 2, task 1 is forgotten.
    assert float(rows[1]["test_on_task_1"]) < float(rows[0]["test_on_task_1"])


@pytest.mark.parametrize("kind", ["mtl", "stl"])
def test_mtl_and_stl_train_then_eval_reproduces(run_clarena: Run, kind: str) -> None:
    run_dir = run_clarena(f"example_{kind}_train")
    trained = read_rows(run_dir / "results" / "acc.csv")
    num_tasks = 3 if kind == "mtl" else 1
    assert list(trained[0]) == [
        "average_accuracy",
        *[f"test_on_task_{t}" for t in range(1, num_tasks + 1)],
    ]
    assert float(trained[0]["average_accuracy"]) > 0.8
    assert (run_dir / "lightning_logs" / "csv" / kind / "metrics.csv").is_file()
    eval_dir = run_clarena(
        f"example_{kind}_eval", f"model_path={run_dir / 'saved_model.pt'}", output="eval"
    )
    assert read_rows(eval_dir / "results" / "acc.csv") == trained
