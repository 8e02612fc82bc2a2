"""DDP: 2 CPU processes (gloo) train HAT, WSN and FG-AdaHAT; every rank holds the same state
(FG-AdaHAT's importance buffers included) after each task.

The runs go through the ``clarena`` console script in a subprocess, since Lightning's DDP
launcher starts the other rank by re-running the command line.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from clarena.experiments.running.scaleout import (
    RankStateMismatchError,
    check_ranks_agree,
    state_fingerprint,
)
from clarena.experiments.testing import quick_run_overrides

CLARENA = Path(sys.executable).parent / "clarena"

TINY = quick_run_overrides(3, train_batches=4)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "hard_masks"),
    [
        ("example_clmain_hat", True),
        ("example_clmain_wsn", True),
        ("example_clmain_fgadahat", False),
    ],
)
def test_two_process_cpu_ddp_keeps_every_rank_identical(
    tmp_path: Path, experiment: str, hard_masks: bool
) -> None:
    run_dir = tmp_path / "run"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(CLARENA), f"experiment={experiment}", "trainer=ddp_cpu", *TINY]
    completed = subprocess.run(
        [*command, f"output_dir={run_dir}"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in completed.stderr + completed.stdout
    for task in (1, 2, 3):
        check = json.loads((run_dir / "rank_check" / f"task_{task}.json").read_text())
        assert check["task"] == task
        assert len(check["fingerprints"]) == 2
        assert check["fingerprints"][0] == check["fingerprints"][1]
    fingerprints = [
        json.loads((run_dir / "rank_check" / f"task_{t}.json").read_text())["fingerprints"][0]
        for t in (1, 2, 3)
    ]
    assert len(set(fingerprints)) == 3
    with (run_dir / "results" / "acc.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    if hard_masks:
        # Conditioning acted on the all-reduced gradients: task 1's test accuracy never moves.
        assert len({row["test_on_task_1"] for row in rows}) == 1
    assert [row["after_training_task"] for row in rows] == ["1", "2", "3"]
    # Only rank 0 wrote results; rank 1 logged to its own file.
    assert (run_dir / "train_ddp_process_1.log").is_file()


def test_fingerprint_sees_a_one_bit_change_in_a_buffer() -> None:
    module = torch.nn.BatchNorm1d(3)
    before = state_fingerprint(module)
    assert state_fingerprint(module) == before
    module.num_batches_tracked += 1
    assert state_fingerprint(module) != before


class _Strategy:
    """A two-rank all_gather whose second rank reports ``other``."""

    root_device = torch.device("cpu")

    def __init__(self, other: torch.Tensor | None) -> None:
        self.other = other

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.stack([tensor, tensor if self.other is None else self.other])


def test_rank_check_writes_fingerprints_and_refuses_a_mismatch(tmp_path: Path) -> None:
    module = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(strategy=_Strategy(None), is_global_zero=True)
    fingerprints = check_ranks_agree(trainer, module, tmp_path, 4)
    assert fingerprints == [state_fingerprint(module)] * 2
    saved = json.loads((tmp_path / "rank_check" / "task_4.json").read_text())
    assert saved == {"task": 4, "fingerprints": fingerprints}
    trainer = SimpleNamespace(
        strategy=_Strategy(torch.zeros(4, dtype=torch.int64)), is_global_zero=True
    )
    with pytest.raises(RankStateMismatchError, match="After task 4 the DDP ranks hold different"):
        check_ranks_agree(trainer, module, tmp_path, 4)
