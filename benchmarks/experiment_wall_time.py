"""Wall time of every example experiment on the embedded digits, and where it goes.

Run from the repository root: ``python benchmarks/experiment_wall_time.py [--only NAME ...]``.

Each example runs as its own ``clarena experiment=<name>`` process (the eval examples on the model
the matching train example saved) with the ``callbacks=timed`` group, whose
:class:`clarena.experiments.callbacks.StepTimer` adds up the time spent inside training steps
(forward, backward, optimiser step). The table shows per example: the process wall time, the
training-step time, and the share of the wall time spent outside training steps (interpreter and
library start-up, data preparation, validation and testing, logging, plots, saving). The start-up
alone (importing torch, Lightning, Hydra and clarena) is measured once and shown first; the
last column leaves it out (the share of the run itself spent outside training steps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: (example, the train example whose saved model it evaluates, or None).
EXAMPLES: list[tuple[str, str | None]] = [
    ("example_clmain_train", None),
    ("example_clmain_eval", "example_clmain_train"),
    ("example_clmain_hat", None),
    ("example_clmain_adahat", None),
    ("example_clmain_wsn", None),
    ("example_clmain_hat_resnet18", None),
    ("example_clmain_wsn_resnet18", None),
    ("example_mtl_train", None),
    ("example_mtl_eval", "example_mtl_train"),
    ("example_stl_train", None),
    ("example_stl_eval", "example_stl_train"),
]

IMPORTS = "import clarena.experiments.pipelines, clarena.experiments.algorithms"


def _run(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only these examples (and their trains)")
    arguments = parser.parse_args()
    clarena = str(Path(sys.executable).with_name("clarena"))
    chosen = EXAMPLES
    if arguments.only:
        needed = set(arguments.only) | {
            source for name, source in EXAMPLES if name in arguments.only and source
        }
        chosen = [(name, source) for name, source in EXAMPLES if name in needed]

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        startup = _run([sys.executable, "-c", IMPORTS], work)
        for name, source in chosen:
            run_dir = work / name
            command = [clarena, f"experiment={name}", f"output_dir={run_dir}", "callbacks=timed"]
            if source is not None:
                command.append(f"model_path={work / source / 'saved_model.pt'}")
            wall = _run(command, work)
            timer = run_dir / "results" / "step_time.json"
            steps = json.loads(timer.read_text()) if timer.is_file() else {}
            step_seconds = steps.get("training_step_seconds", 0.0)
            rows.append((name, wall, step_seconds, steps.get("training_steps", 0)))

    print(f"\nstart-up (imports only): {startup:.1f} s\n")
    header = (
        f"{'example':<30} {'wall s':>7} {'steps':>6} {'in steps s':>11} {'outside %':>10} "
        f"{'outside w/o start-up %':>23}"
    )
    print(header)
    print("-" * len(header))
    for name, wall, step_seconds, count in rows:
        outside = 100.0 * (wall - step_seconds) / wall
        run = max(wall - startup, 1e-9)
        outside_run = 100.0 * max(run - step_seconds, 0.0) / run
        print(
            f"{name:<30} {wall:>7.1f} {count:>6} {step_seconds:>11.1f} {outside:>9.1f}% "
            f"{outside_run:>22.1f}%"
        )


if __name__ == "__main__":
    main()
