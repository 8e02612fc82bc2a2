"""Every method on permuted and split Fashion-MNIST: accuracy, forgetting, BWT and wall time.

Run from the repository root, with the Fashion-MNIST files at hand (``apt-get install
dataset-fashion-mnist`` puts them in /usr/share/datasets/fashion-mnist, the default ``--root``)::

    python benchmarks/real_sequences.py [--epochs 10] [--train-batches 20] [--tasks 5]
        [--only HAT WSN] [--markdown docs/benchmarks/real-sequences-table.md]
        [--plots docs/assets/real-sequences]

Each method runs as ``clarena experiment=<its example> cl_dataset=<permuted|split>_fashion_mnist``
in this process, on the first ``--tasks`` tasks (permuted: 5 of its permutations; split: the 5
tasks of 2 classes), TIL, the examples' MLP (784-256-100-64), with a small budget so the whole
table runs on two shared CPU cores: at most ``--epochs`` epochs per task of ``--train-batches``
batches of 64 (a fresh random subset each epoch), validation on the whole held-out 10% of the
training set, test on every test image. Each method keeps its paper's optimiser and per-task
schedule where it has one:

- HAT: SGD lr 0.05, ``callbacks=plateau_hat`` (lr / 3 after 5 epochs without a lower validation
  loss, stop below 1e-4, restore the best epoch);
- AdaHAT and FG-AdaHAT: SGD lr 0.05 (clarena refuses the authors' Adam for them),
  ``lr_scheduler=reduce_lr_on_plateau`` (the authors' factor 0.1, patience 10);
- WSN: Adam lr 1e-3, c = 0.5, ``callbacks=plateau_wsn`` (lr / 2 after 6 epochs, stop below 1e-6,
  restore the best epoch);
- Finetuning and Independent: the example's Adam lr 1e-3, no schedule;
- MTL (joint training on all tasks, the upper reference): Adam lr 1e-3, ``--tasks`` times the
  batches per epoch, so it sees as many images as a CL run over all tasks;
- STL (one model per task, trained and tested alone): Adam lr 1e-3, the same budget per task.

Batch-norm statistics are recomputed before each validation (clarena's default) for every method.
The table gives the average accuracy over the tasks after the last one, forgetting and backward
transfer (as in ``summary.json``; "-" where they do not apply) and the wall time of each run (STL:
all its per-task runs together). ``--plots`` writes one figure per sequence with the accuracy
matrix of each CL method.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

#: CL methods: (name, example experiment, overrides for the paper's optimiser and schedule).
CL_METHODS: list[tuple[str, str, list[str]]] = [
    ("Finetuning", "example_clmain_train", ["callbacks=none"]),
    ("Independent", "example_clmain_train", ["cl_algorithm=independent", "callbacks=none"]),
    (
        "HAT",
        "example_clmain_hat",
        ["optimizer=sgd", "optimizer.lr=0.05", "callbacks=plateau_hat", "~callbacks.progress_bar"],
    ),
    (
        "AdaHAT",
        "example_clmain_adahat",
        ["lr_scheduler=reduce_lr_on_plateau", "callbacks=none"],
    ),
    (
        "FG-AdaHAT",
        "example_clmain_fgadahat",
        ["lr_scheduler=reduce_lr_on_plateau", "callbacks=none"],
    ),
    ("WSN", "example_clmain_wsn", ["callbacks=plateau_wsn", "~callbacks.progress_bar"]),
]

#: Normalisation of Fashion-MNIST (mean and std of its training images).
FASHION_NORMALISATION = ["++{group}.mean=[0.2860]", "++{group}.std=[0.3530]"]

SEQUENCES = ("permuted", "split")


def _dataset_overrides(group: str, sequence: str, root: str, tasks: int) -> list[str]:
    """Point an ``mtl_dataset``/``stl_dataset`` group at the Fashion-MNIST sequence."""
    kind = {"permuted": "Permuted", "split": "Split"}[sequence]
    paradigm = group.split("_")[0].upper()
    overrides = [
        f"{group}._target_=clarena.experiments.data.{kind}{paradigm}DataModule",
        f"{group}.source=fashion_mnist",
        f"++{group}.root={root}",
        *(item.format(group=group) for item in FASHION_NORMALISATION),
    ]
    if sequence == "split" and group == "mtl_dataset":
        # The shipped mtl_dataset is permuted; a split sequence takes no permutation seed.
        overrides.append(f"~{group}.permutation_seed")
    if group == "mtl_dataset" or sequence == "split":
        overrides.append(f"++{group}.num_tasks={tasks}")
    return overrides


def _run(experiment: str, run_dir: Path, overrides: list[str]) -> float:
    from clarena.experiments import cli

    start = time.perf_counter()
    cli.main([f"experiment={experiment}", f"output_dir={run_dir}", *overrides])
    return time.perf_counter() - start


def _common(epochs: int, batches: int, cl: bool = False) -> list[str]:
    return [
        f"trainer.max_epochs={epochs}",
        f"++trainer.limit_train_batches={batches}",
        "++trainer.enable_progress_bar=false",
        "lightning_loggers=none",
        "save_model=false",
        "num_threads=1",
        *(["metrics.average_accuracy_plot=null"] if cl else []),
    ]


def run_sequence(
    sequence: str, root: str, arguments: argparse.Namespace, work: Path
) -> tuple[list[dict[str, Any]], dict[str, list[list[float | None]]]]:
    """Every chosen method on one sequence; returns table rows and CL accuracy matrices."""
    tasks, epochs, batches = arguments.tasks, arguments.epochs, arguments.train_batches
    rows: list[dict[str, Any]] = []
    matrices: dict[str, list[list[float | None]]] = {}
    cl_dataset = [
        f"cl_dataset={sequence}_fashion_mnist",
        f"cl_dataset.root={root}",
        f"cl_dataset.num_tasks={tasks}",
        f"train_tasks={tasks}",
    ]
    for name, experiment, overrides in CL_METHODS:
        if arguments.only and name not in arguments.only:
            continue
        run_dir = work / sequence / name
        seconds = _run(
            experiment, run_dir, [*cl_dataset, *overrides, *_common(epochs, batches, cl=True)]
        )
        summary = json.loads((run_dir / "results" / "summary.json").read_text())
        rows.append(
            {
                "method": name,
                "average_accuracy": summary["average_accuracy"],
                "forgetting": summary["forgetting"],
                "backward_transfer": summary["backward_transfer"],
                "seconds": seconds,
            }
        )
        with (run_dir / "results" / "acc.csv").open() as file:
            matrices[name] = [
                [
                    float(row[f"test_on_task_{j}"]) if row[f"test_on_task_{j}"] else None
                    for j in range(1, tasks + 1)
                ]
                for row in csv.DictReader(file)
            ]
        print(f"{sequence} {name}: {rows[-1]}", flush=True)
    if not arguments.only or "MTL" in arguments.only:
        run_dir = work / sequence / "MTL"
        seconds = _run(
            "example_mtl_train",
            run_dir,
            [
                *_dataset_overrides("mtl_dataset", sequence, root, tasks),
                *_common(epochs, batches * tasks),
                "callbacks=none",
            ],
        )
        summary = json.loads((run_dir / "results" / "summary.json").read_text())
        rows.append(_plain_row("MTL (joint, upper reference)", summary, seconds))
        print(f"{sequence} MTL: {rows[-1]}", flush=True)
    if not arguments.only or "STL" in arguments.only:
        accuracies, seconds = [], 0.0
        for task in range(1, tasks + 1):
            run_dir = work / sequence / f"STL_{task}"
            seconds += _run(
                "example_stl_train",
                run_dir,
                [
                    *_dataset_overrides("stl_dataset", sequence, root, tasks),
                    f"stl_dataset.task_id={task}",
                    *_common(epochs, batches),
                    "callbacks=none",
                ],
            )
            summary = json.loads((run_dir / "results" / "summary.json").read_text())
            accuracies.append(summary["average_accuracy"])
        rows.append(
            _plain_row(
                "STL (one model per task)",
                {"average_accuracy": sum(accuracies) / len(accuracies)},
                seconds,
            )
        )
        print(f"{sequence} STL: {rows[-1]}", flush=True)
    return rows, matrices


def _plain_row(method: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "method": method,
        "average_accuracy": summary["average_accuracy"],
        "forgetting": None,
        "backward_transfer": None,
        "seconds": seconds,
    }


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    """One table: a row per method, for each sequence its four columns."""
    header = "| method | " + " | ".join(
        f"{s} avg acc | {s} forgetting | {s} BWT | {s} wall s" for s in results
    )
    lines = [header + " |", "|---" * (1 + 4 * len(results)) + "|"]
    methods = list(dict.fromkeys(row["method"] for rows in results.values() for row in rows))
    for method in methods:
        cells = [method]
        for rows in results.values():
            row = next((r for r in rows if r["method"] == method), None)
            if row is None:
                cells += ["-"] * 4
                continue
            cells += [
                _fmt(row["average_accuracy"]),
                _fmt(row["forgetting"]),
                _fmt(row["backward_transfer"], signed=True),
                f"{row['seconds']:.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(path: Path, sequence: str, matrices: dict[str, list[list[float | None]]]) -> None:
    """The accuracy matrix of each CL method on one sequence, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(matrices)
    figure, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        matrix = np.array(
            [[np.nan if v is None else v for v in row] for row in matrices[name]], dtype=float
        )
        axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                if not np.isnan(matrix[i, j]):
                    colour = "white" if matrix[i, j] < 0.6 else "black"
                    axis.text(
                        j,
                        i,
                        f"{100 * matrix[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
        axis.set_title(name, fontsize=9)
        axis.set_xticks(range(matrix.shape[1]), range(1, matrix.shape[1] + 1), fontsize=7)
        axis.set_yticks(range(matrix.shape[0]), range(1, matrix.shape[0] + 1), fontsize=7)
        axis.set_xlabel("tested on task", fontsize=8)
    axes[0][0].set_ylabel("after training task", fontsize=8)
    figure.suptitle(f"{sequence.capitalize()} Fashion-MNIST: test accuracy (%)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="at most, per task")
    parser.add_argument("--train-batches", type=int, default=20, help="batches of 64 per epoch")
    parser.add_argument("--sequences", nargs="*", default=list(SEQUENCES), choices=SEQUENCES)
    parser.add_argument("--only", nargs="*", help="methods to run (names as in the table)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--plots", type=Path, help="folder for the accuracy-matrix figures")
    arguments = parser.parse_args()

    machine = f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    budget = (
        f"{arguments.tasks} tasks, at most {arguments.epochs} epochs per task of "
        f"{arguments.train_batches} batches of 64"
    )
    print(machine, "|", budget, flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for sequence in arguments.sequences:
            rows, matrices = run_sequence(sequence, arguments.root, arguments, Path(workdir))
            results[sequence] = rows
            if arguments.plots and matrices:
                plot(arguments.plots / f"{sequence}_fashion_mnist.png", sequence, matrices)
    table = markdown(results)
    print(table)
    print(f"total wall time {time.perf_counter() - total:.0f} s")
    if arguments.markdown:
        arguments.markdown.parent.mkdir(parents=True, exist_ok=True)
        arguments.markdown.write_text(table)


if __name__ == "__main__":
    main()
