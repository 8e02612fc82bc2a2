"""hydra/sweeper=optuna: each trial returns its average accuracy and lands in the summary.

Runs only where hydra-optuna-sweeper is installed (``clarena-experiments[optuna]``).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import yaml

from clarena.experiments import cli
from clarena.experiments.runs.sweep import SUMMARY_FILE

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="hydra-optuna-sweeper is not installed (pip install 'clarena-experiments[optuna]')",
)


@pytest.mark.slow
def test_optuna_trials_land_in_the_summary_with_their_objective(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    cli.main(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.direction=maximize",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.seed=0",
            "optimizer.lr=interval(0.0001, 0.01)",
            f"hydra.sweep.dir={sweep}",
            "experiment=example_clmain_train",
            "train_tasks=1",
            "trainer.max_epochs=1",
            "++trainer.limit_train_batches=3",
            "lightning_loggers=none",
            "callbacks=none",
            "save_model=false",
        ]
    )
    with (sweep / SUMMARY_FILE).open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["ok", "ok", "ok"]
    learning_rates = [float(row["optimizer.lr"]) for row in rows]
    assert len(set(learning_rates)) == 3
    assert all(0.0001 <= lr <= 0.01 for lr in learning_rates)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(float(row["average_accuracy"]) for row in rows)
