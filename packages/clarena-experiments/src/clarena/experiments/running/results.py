"""Result files: the accuracy matrix as CSV, its plots and a JSON summary.

The accuracy matrix ``A`` has one row per trained task: ``A[i][j]`` is the test accuracy on task
``j`` after training task ``i`` (``None`` for tasks not seen yet). Every file is opened with
:func:`clarena.experiments.run_dir.create_for_write`, which follows no link.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from clarena.experiments.running.data.datamodules import dataset_identity
from clarena.experiments.runs.run_dir import create_for_write, write_text

#: Accuracy-matrix rows: trained task id -> {tested task id: accuracy}.
AccuracyRows = Mapping[int, Mapping[int, float]]


def write_accuracy_csv(
    path: Path, rows: AccuracyRows, task_ids: Sequence[int], value: str = "accuracy"
) -> None:
    """Write ``after_training_task, average_accuracy, test_on_task_<id>...`` (blank = unseen).

    ``value`` names the measure in the header (``loss`` for the test-loss matrix).
    """
    with os.fdopen(create_for_write(path), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["after_training_task", f"average_{value}", *[f"test_on_task_{t}" for t in task_ids]]
        )
        for trained, accuracies in rows.items():
            writer.writerow(
                [
                    trained,
                    repr(average(accuracies)),
                    *[repr(accuracies[t]) if t in accuracies else "" for t in task_ids],
                ]
            )


def write_task_accuracy_csv(
    path: Path, accuracies: Mapping[int, float], value: str = "accuracy"
) -> None:
    """Write ``average_accuracy, test_on_task_<id>...`` in one row (MTL and STL results)."""
    with os.fdopen(create_for_write(path), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([f"average_{value}", *[f"test_on_task_{t}" for t in accuracies]])
        writer.writerow([repr(average(accuracies)), *[repr(a) for a in accuracies.values()]])


def read_accuracy_csv(path: Path) -> dict[int, dict[int, float]]:
    """Read a file written by :func:`write_accuracy_csv` back into accuracy rows."""
    rows: dict[int, dict[int, float]] = {}
    with Path(path).open(newline="") as file:
        for record in csv.DictReader(file):
            rows[int(record["after_training_task"])] = {
                int(key.removeprefix("test_on_task_")): float(value)
                for key, value in record.items()
                if key.startswith("test_on_task_") and value != ""
            }
    return rows


def average(accuracies: Mapping[int, float]) -> float:
    """Mean accuracy over the tested tasks."""
    return sum(accuracies.values()) / len(accuracies)


def backward_transfer(rows: AccuracyRows) -> float | None:
    """BWT: mean over earlier tasks of (final accuracy - accuracy right after learning it).

    ``None`` with fewer than two trained tasks.
    """
    trained = list(rows)
    if len(trained) < 2:
        return None
    last = rows[trained[-1]]
    earlier = [t for t in trained[:-1] if t in last and t in rows[t]]
    return sum(last[t] - rows[t][t] for t in earlier) / len(earlier)


def forgetting(rows: AccuracyRows) -> float | None:
    """Average forgetting: mean over earlier tasks of (best earlier accuracy - final accuracy).

    ``None`` with fewer than two trained tasks.
    """
    trained = list(rows)
    if len(trained) < 2:
        return None
    last = rows[trained[-1]]
    values = []
    for task in trained[:-1]:
        history = [rows[i][task] for i in trained[:-1] if task in rows[i]]
        if history and task in last:
            values.append(max(history) - last[task])
    return sum(values) / len(values)


def summary(rows: AccuracyRows, extra: Mapping[str, object] | None = None) -> dict[str, object]:
    """Average accuracy after the last task, backward transfer, forgetting (+ ``extra``)."""
    last = rows[list(rows)[-1]]
    result: dict[str, object] = {
        "trained_tasks": list(rows),
        "average_accuracy": average(last),
        "backward_transfer": backward_transfer(rows),
        "forgetting": forgetting(rows),
        "final_accuracy_per_task": {str(t): a for t, a in last.items()},
    }
    result.update(extra or {})
    return result


def write_json(path: Path, content: Mapping[str, object]) -> None:
    """Write ``content`` as indented JSON."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def run_title(algorithm: str, backbone: str, dataset: Mapping[str, object]) -> str:
    """Plot title naming the run: ``Finetuning · CLResNet18 · split digits``.

    Args:
        algorithm: the algorithm's class name.
        backbone: the backbone's class name or ``_target_`` (the last dotted part is shown).
        dataset: the dataset config; its target (or 0.1 ``sequence``) and ``source`` name it.
    """
    kind, sources = dataset_identity(dataset) if dataset else ("", [])
    name = f"{kind} {'+'.join(sources)}".strip()
    return " · ".join(part for part in (algorithm, backbone.rsplit(".", 1)[-1], name) if part)


def plot_accuracy_matrix(
    path: Path,
    rows: AccuracyRows,
    task_ids: Sequence[int],
    title: str | None = None,
    value: str = "accuracy",
) -> plt.Figure:
    """Heat map of the accuracy matrix (trained task x tested task), values annotated.

    Values are written in white on dark cells, black on light ones. ``value="loss"`` draws the
    test-loss matrix instead (colour scale from 0 to the largest loss). Returns the saved
    (closed) figure.
    """
    trained = list(rows)
    figure, axes = plt.subplots(figsize=(2.5 + 0.7 * len(task_ids), 1.6 + 0.6 * len(trained)))
    grid = [[rows[i].get(j, float("nan")) for j in task_ids] for i in trained]
    colormap = plt.get_cmap("Greens" if value == "accuracy" else "Reds")
    top = 1.0 if value == "accuracy" else max((v for r in grid for v in r if v == v), default=1.0)
    image = axes.imshow(grid, vmin=0.0, vmax=top or 1.0, cmap=colormap)
    for r, row in enumerate(grid):
        for c, cell in enumerate(row):
            if cell == cell:
                axes.text(
                    c,
                    r,
                    f"{cell:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if _is_dark(colormap(image.norm(cell))) else "black",
                )
    axes.set_xticks(range(len(task_ids)), [str(t) for t in task_ids])
    axes.set_yticks(range(len(trained)), [str(t) for t in trained])
    axes.set_xlabel("test on task")
    axes.set_ylabel("after training task")
    if title:
        axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return _save(figure, path)


def plot_average_accuracy(
    path: Path, rows: AccuracyRows, title: str | None = None, value: str = "accuracy"
) -> plt.Figure:
    """Average accuracy (or ``value="loss"``: test loss) over seen tasks after each trained task.

    A line with markers; a single row (an evaluation, or one trained task) is a labelled bar,
    since one marker alone is easy to miss. Returns the saved (closed) figure.
    """
    trained = list(rows)
    averages = [average(rows[t]) for t in trained]
    figure, axes = plt.subplots(figsize=(4.5, 3.2))
    if len(trained) == 1:
        bars = axes.bar(trained, averages, width=0.5)
        axes.bar_label(bars, fmt="%.4f")
    else:
        axes.plot(trained, averages, marker="o")
    axes.set_xticks(trained)
    if value == "accuracy":
        axes.set_ylim(0.0, 1.05)
    axes.set_xlabel("after training task")
    axes.set_ylabel(f"average {value}")
    if title:
        axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def _is_dark(rgba: tuple[float, float, float, float]) -> bool:
    """Whether a colour is dark (relative luminance below one half)."""
    red, green, blue = rgba[:3]
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.5


def _save(figure: plt.Figure, path: Path) -> plt.Figure:
    with os.fdopen(create_for_write(path), "wb") as file:
        figure.savefig(file, format=path.suffix.lstrip(".") or None, dpi=100)
    plt.close(figure)
    return figure
