"""What resume and DDP cost: the per-task resume state, and one process vs 2-process CPU DDP.

Run from the repository root: ``python benchmarks/experiment_scaleout.py [--skip-ddp]``.

1. Resume state: for the MLP and ResNet-18 HAT/WSN examples, the algorithm is built and set up for
   every task of the example (as after the last task), then ``save_resume_state`` (what the
   pipeline writes after each task) and ``load_resume_state`` + restore are timed (median of 5)
   and the file size is shown.
2. DDP: wall time of ``clarena experiment=<example>`` with ``trainer=cpu`` (one process) and
   ``trainer=ddp_cpu`` (2 processes over gloo), each process with 1 torch thread, and
   the last-row average accuracy of each. They differ: every rank takes ``batch_size`` samples
   per step, so DDP's effective batch is twice as large and an epoch has half the optimiser
   steps (and HAT anneals over half as many batches); compare DDP runs with DDP runs.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from clarena.experiments.cli import shipped_config_dir
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.running.pipelines.cl import _restore, build_algorithm
from clarena.experiments.runs.resume import load_resume_state, save_resume_state

RESUME_EXAMPLES = [
    "example_clmain_hat",
    "example_clmain_wsn",
    "example_clmain_hat_resnet18",
    "example_clmain_wsn_resnet18",
]
DDP_EXAMPLES = ["example_clmain_hat", "example_clmain_wsn"]


def _median_ms(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _resume_state_cost(name: str) -> tuple[int, float, float, float]:
    """(tasks, file MB, save ms, load + restore ms) of ``name``'s state after its last task."""
    cfg = compose("entrance", [f"experiment={name}", "output_dir=unused"])
    datamodule = instantiate(cfg.cl_dataset)
    config = ExperimentConfig.parse(cfg)
    algorithm = build_algorithm(config)
    tasks = list(range(1, int(cfg.train_tasks) + 1))
    for task in tasks:
        algorithm.setup_task_id(task, datamodule.num_classes(task))
        if "wsn" in name:
            algorithm.wsn.store_mask(algorithm.mask_percentage)
        else:
            algorithm.hat.end_task(task)
    state = {
        "state_dict": algorithm.state_dict(),
        "trained_tasks": tasks,
        "num_classes": {t: datamodule.num_classes(t) for t in tasks},
        "rows": {t: dict.fromkeys(tasks[:t], 0.5) for t in tasks},
        "capacities": dict.fromkeys(tasks, 0.5),
    }
    with tempfile.TemporaryDirectory() as directory:
        run_dir = Path(directory)
        path = save_resume_state(run_dir, cfg, **state)
        save_ms = _median_ms(lambda: save_resume_state(run_dir, cfg, **state))

        def load_and_restore() -> None:
            _restore(build_algorithm(config), load_resume_state(run_dir), tasks)

        load_ms = _median_ms(load_and_restore)
        size = path.stat().st_size / 1e6
    return len(tasks), size, save_ms, load_ms


def resume_state_costs() -> None:
    print("resume state after the last task (median of 5)")
    print(f"{'example':32} {'tasks':>5} {'size MB':>8} {'save ms':>8} {'load+restore ms':>16}")
    with initialize_config_dir(config_dir=str(shipped_config_dir()), version_base=None):
        for name in RESUME_EXAMPLES:
            tasks, size, save_ms, load_ms = _resume_state_cost(name)
            print(f"{name:32} {tasks:>5} {size:>8.2f} {save_ms:>8.1f} {load_ms:>16.1f}")


def ddp_wall_times() -> None:
    print("\nwall time, one process vs 2-process CPU DDP (gloo), 1 torch thread per process")
    print(f"{'example':24} {'trainer':8} {'wall s':>7} {'average accuracy':>17}")
    clarena = Path(sys.executable).parent / "clarena"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in DDP_EXAMPLES:
        for trainer in ("cpu", "ddp_cpu"):
            with tempfile.TemporaryDirectory() as directory:
                run_dir = Path(directory) / "run"
                start = time.perf_counter()
                subprocess.run(
                    [
                        str(clarena),
                        f"experiment={name}",
                        f"trainer={trainer}",
                        f"output_dir={run_dir}",
                        "lightning_loggers=none",
                        "callbacks=none",
                        "save_model=false",
                    ],
                    cwd=directory,
                    env=environment,
                    check=True,
                    capture_output=True,
                )
                wall = time.perf_counter() - start
                with (run_dir / "results" / "acc.csv").open(newline="") as file:
                    last = list(csv.DictReader(file))[-1]["average_accuracy"]
            print(f"{name:24} {trainer:8} {wall:>7.1f} {float(last):>17.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-ddp", action="store_true", help="only the resume state costs")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    resume_state_costs()
    if not arguments.skip_ddp:
        ddp_wall_times()


if __name__ == "__main__":
    main()
