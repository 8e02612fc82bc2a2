"""benchmarks/real_sequences.py: a tiny run on files in the Debian package's layout.

The files hold random images (the ``dataset-fashion-mnist`` package is not needed); only the
table's shape, the guarantees that hold on any data, and the figures are checked.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from clarena.experiments.running.data.synthetic_files import write_synthetic_files

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_sequences.py"

METHODS = [
    "Finetuning",
    "Independent",
    "HAT",
    "AdaHAT",
    "FG-AdaHAT",
    "WSN",
    "MTL (joint, upper reference)",
    "STL (one model per task)",
]


@pytest.mark.slow
def test_tiny_run_writes_the_table_and_the_accuracy_matrices(tmp_path: Path) -> None:
    write_synthetic_files("fashion_mnist", tmp_path / "tree", train_count=200, test_count=40)
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for path in (tmp_path / "tree" / "FashionMNIST" / "raw").iterdir():
        (root / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    table, plots = tmp_path / "table.md", tmp_path / "plots"
    arguments = ["--root", str(root), "--tasks", "2", "--epochs", "1", "--train-batches", "2"]
    arguments += ["--markdown", str(table), "--plots", str(plots)]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| method | permuted avg acc |")
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[1:] for line in lines[2:]}
    assert list(rows) == METHODS
    for method in ("Independent", "HAT", "WSN"):
        # forgetting and BWT of both sequences: exactly none
        assert [rows[method][i] for i in (1, 2, 5, 6)] == ["0.0000", "+0.0000"] * 2, method
    for method in METHODS[6:]:
        assert [rows[method][i] for i in (1, 2, 5, 6)] == ["-"] * 4, method
    assert sorted(path.name for path in plots.iterdir()) == [
        "permuted_fashion_mnist.png",
        "split_fashion_mnist.png",
    ]
