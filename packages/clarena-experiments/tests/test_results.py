from __future__ import annotations

from pathlib import Path

import pytest

from clarena.experiments import results

ROWS = {1: {1: 0.9}, 2: {1: 0.7, 2: 0.8}, 3: {1: 0.6, 2: 0.85, 3: 0.5}}


def test_backward_transfer_and_forgetting() -> None:
    assert results.backward_transfer(ROWS) == pytest.approx(((0.6 - 0.9) + (0.85 - 0.8)) / 2)
    assert results.forgetting(ROWS) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.85)) / 2)
    assert results.backward_transfer({1: {1: 0.5}}) is None
    assert results.forgetting({1: {1: 0.5}}) is None


def test_accuracy_csv_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "acc.csv"
    rows = {1: {1: 1 / 3}, 2: {1: 2 / 7, 2: 0.1 + 0.2}}
    results.write_accuracy_csv(path, rows, [1, 2])
    lines = path.read_text().splitlines()
    assert lines[0] == "after_training_task,average_accuracy,test_on_task_1,test_on_task_2"
    assert lines[1].endswith(",")
    assert results.read_accuracy_csv(path) == rows


def test_plots_are_png_files(tmp_path: Path) -> None:
    results.plot_accuracy_matrix(tmp_path / "m.png", ROWS, [1, 2, 3])
    results.plot_average_accuracy(tmp_path / "a.png", ROWS)
    for name in ("m.png", "a.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
