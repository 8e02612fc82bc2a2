"""Hydra multirun sweeps: one output dir per job and the combined multirun_summary.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from clarena.experiments import cli
from clarena.experiments.runs.sweep import ERROR_FILE, SUMMARY_FILE, write_multirun_summary
from clarena.experiments.testing import quick_run_overrides

TINY = quick_run_overrides(2)


def test_multirun_2x2_gives_4_job_dirs_and_a_4_row_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cli.main(
        [
            "-m",
            "experiment=example_clmain_train",
            "cl_algorithm=finetuning,independent",
            "optimizer=adam,sgd",
            *TINY,
        ]
    )
    # The default sweep dir: multirun/<time>/.
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    with (sweep / SUMMARY_FILE).open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["job"], r["cl_algorithm"], r["optimizer"]) for r in rows] == [
        ("0", "finetuning", "adam"),
        ("1", "finetuning", "sgd"),
        ("2", "independent", "adam"),
        ("3", "independent", "sgd"),
    ]
    for row in rows:
        job_dir = Path(row["output_dir"])
        summary = json.loads((job_dir / "results" / "summary.json").read_text())
        assert row["status"] == "ok"
        assert float(row["average_accuracy"]) == summary["average_accuracy"]
        assert float(row["forgetting"]) == summary["forgetting"]
        assert (job_dir / "results" / "acc.csv").read_text().count("\n") == 3
    # Independent never forgets.
    assert [float(r["forgetting"]) for r in rows[2:]] == [0.0, 0.0]
    # Only the sweep dir was written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun"]


def test_summary_lists_a_failed_job_without_results(tmp_path: Path) -> None:
    for job, overrides in (("0", ["optimizer=adam"]), ("1", ["optimizer=sgd"])):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in overrides)
        )
    (tmp_path / "0" / "results").mkdir()
    (tmp_path / "0" / "results" / "summary.json").write_text(
        json.dumps({"average_accuracy": 0.5, "backward_transfer": None, "forgetting": 0.25})
    )
    path = write_multirun_summary(tmp_path)
    assert path.read_text().splitlines() == [
        "job,optimizer,average_accuracy,backward_transfer,forgetting,status,error,output_dir",
        f"0,adam,0.5,,0.25,ok,,{tmp_path / '0'}",
        f"1,sgd,,,,no results,,{tmp_path / '1'}",
    ]
    (tmp_path / "1" / ERROR_FILE).write_text("clarena: ValueError: lr must be positive\n")
    assert write_multirun_summary(tmp_path).read_text().splitlines()[2] == (
        f"1,sgd,,,,failed,clarena: ValueError: lr must be positive,{tmp_path / '1'}"
    )
