"""benchmarks/gpu_suite.py: its tiny CPU run writes real figures, and it refuses without a GPU."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"


def _suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SUITE), *args], capture_output=True, text=True)


def _check_paired(record: dict[str, Any]) -> None:
    """Every step's median is that of its rounds; every ratio is the median per-round ratio."""
    for label, step in record["steps"].items():
        rounds = step["rounds_s"]
        assert rounds, label
        assert all(math.isfinite(t) and t > 0 for t in rounds), label
        assert step["median_s"] == statistics.median(rounds), label
    for name, ratio in record["ratios"].items():
        numerator = record["steps"][ratio["numerator"]]["rounds_s"]
        denominator = record["steps"][ratio["denominator"]]["rounds_s"]
        expected = statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))
        assert ratio["value"] == pytest.approx(expected, rel=1e-12), name
        if ratio["target"] is not None:
            assert ratio["ok"] == (ratio["value"] <= ratio["target"]), name


@pytest.mark.slow
def test_quick_cpu_suite_writes_real_figures(tmp_path: Path) -> None:
    report_path = tmp_path / "suite.json"
    result = _suite("--cpu", "--quick", "--json", str(report_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())

    assert report["machine"]["torch"] == torch.__version__
    assert (report["device"], report["quick"]) == ("cpu", True)
    parts = report["parts"]
    assert set(parts) == {"overheads", "compiled_fp32", "compiled_bf16", "experiment"}
    assert all(part["error"] is None and part["wall_s"] > 0 for part in parts.values())
    assert sum(part["wall_s"] for part in parts.values()) <= report["wall_s"]

    overheads = parts["overheads"]["figures"]
    assert set(overheads) == {"HAT MLP", "WSN MLP"}
    for record in overheads.values():
        _check_paired(record)
    for precision in ("fp32", "bf16"):
        record = parts[f"compiled_{precision}"]["figures"]["MLP"]
        _check_paired(record)
        assert record["backbones"] == {"CL": "CLMLP", "HAT": "HATMaskMLP", "WSN": "WSNMaskMLP"}
        assert record["compiled"]["CL"]["error"] is None  # the reference compiles
        for kind, compiled in record["compiled"].items():
            timed = f"{kind} compiled" in record["steps"]
            assert timed == (compiled["error"] is None), kind
            if timed:
                assert math.isfinite(compiled["first_compile_s"])
                assert compiled["first_compile_s"] > 0
                assert compiled["graphs"] >= 1
                assert f"{kind} compiled/eager" in record["ratios"]

    run = parts["experiment"]["figures"]
    assert run["trained_tasks"] == [1, 2]
    assert 0 < run["average_accuracy"] <= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_refuses_without_gpu_unless_cpu(tmp_path: Path) -> None:
    report_path = tmp_path / "suite.json"
    result = _suite("--json", str(report_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "gpu_suite.py: torch sees no CUDA GPU; run it on a GPU machine, or pass --cpu "
        "(--cpu --quick: the tiny CPU check)."
    )
    assert not report_path.exists()
