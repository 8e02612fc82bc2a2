"""GPU suite: the HAT and WSN overheads, the compiled steps and a 5-task experiment, one JSON file.

On a machine with a CUDA GPU, one command runs, in under 5 minutes:

- the HAT and WSN overheads, eager (``hat_overhead.compare`` with masks trained to s_max, ``wsn_overhead.compare``): MLP
  (784,[256,100],64) and ResNet-18 (32x32, shared batch norm) against their CL counterparts;
- the compiled steps (``compiled_step.measure_family``) of the MLP and ResNet-18 families, in
  fp32 and in bf16 autocast: eager and compiled step times, HAT/CL and WSN/CL ratios, compiled /
  eager ratios, first-compilation times and graph counts;
- a 5-task experiment, ``clarena experiment=example_clmain_hat trainer.accelerator=gpu`` in a
  temporary output dir: its wall time and average accuracy.

It writes one JSON file: the machine (platform, CPUs, torch, CUDA, GPU name), each part's
figures (every step's median and per-round seconds, every ratio with what it divides), each
part's wall time and the total. Without a GPU it stops with one line, unless ``--cpu``:
``--cpu --quick`` runs the same parts on CPU with tiny sizes (a few rounds, the MLP only, graphs
captured with the ``aot_eager`` backend rather than Inductor's kernels, 2 tasks x 1 epoch), which
checks the suite itself in about a minute; its figures mean nothing.

Run from the repository root: ``python benchmarks/gpu_suite.py [--json PATH]`` on a GPU machine;
``python benchmarks/gpu_suite.py --cpu --quick --json PATH`` anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch._inductor import config as inductor_config

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compiled_step
import hat_overhead
import wsn_overhead

from clarena.cl import CLMLP, CLResNet18
from clarena.hat import HATMaskMLP, HATMaskResNet18
from clarena.wsn import WSNMaskMLP, WSNMaskResNet18

NO_GPU = (
    "gpu_suite.py: torch sees no CUDA GPU; run it on a GPU machine, or pass --cpu "
    "(--cpu --quick: the tiny CPU check)."
)
EXPERIMENT = "example_clmain_hat"


def overheads(device: torch.device, quick: bool) -> dict[str, Any]:
    """Eager HAT/CL and WSN/CL step ratios of the MLP and (unless ``quick``) ResNet-18."""
    mlp_args = compiled_step.MLP_ARGS
    resnet_args = compiled_step.RESNET_ARGS
    mlp_input = torch.randn(64, 784, device=device)
    image = torch.randn(64, 3, 32, 32, device=device)
    mlp_repeats, mlp_warmup = (5, 1) if quick else (200, 20)
    records = {
        "HAT MLP": hat_overhead.compare(
            "HATMaskMLP / CLMLP (784,[256,100],64)",
            CLMLP(**mlp_args).to(device),
            HATMaskMLP(**mlp_args).to(device),
            mlp_input,
            mlp_repeats,
            mlp_warmup,
            1.10,
            1.30,
            trained=True,
        ),
        "WSN MLP": wsn_overhead.compare(
            "WSNMaskMLP / CLMLP (784,[256,100],64)",
            CLMLP(**mlp_args).to(device),
            WSNMaskMLP(**mlp_args).to(device),
            mlp_input,
            mlp_repeats,
            mlp_warmup,
            2.0,
        ),
    }
    if not quick:
        records["HAT ResNet18"] = hat_overhead.compare(
            "HATMaskResNet18 (shared BN) / CLResNet18 32x32",
            CLResNet18(**resnet_args, batch_normalization=True).to(device),
            HATMaskResNet18(**resnet_args, batch_normalization="shared").to(device),
            image,
            50,
            5,
            1.05,
            1.05,
            trained=True,
        )
        records["WSN ResNet18"] = wsn_overhead.compare(
            "WSNMaskResNet18 / CLResNet18 32x32 shared BN",
            CLResNet18(**resnet_args, batch_normalization=True).to(device),
            WSNMaskResNet18(**resnet_args, batch_normalization="shared").to(device),
            image,
            50,
            5,
            None,
        )
    return records


def compiled_steps(device: torch.device, precision: str, quick: bool) -> dict[str, Any]:
    """``compiled_step.measure_family`` of the MLP and (unless ``quick``) ResNet-18 families."""
    print(f"compiled steps, {precision}", flush=True)
    backend = "aot_eager" if quick else "inductor"
    compiled_step.warm_up_compiler(device, backend)
    records = {}
    for family, repeats, warmup in [("MLP", 200, 20), ("ResNet18", 50, 5)]:
        if quick and family != "MLP":
            continue
        record = compiled_step.measure_family(
            family, device, precision, 3 if quick else repeats, 1 if quick else warmup, backend
        )
        compiled_step.print_family(record)
        records[family] = record
    return records


def experiment(device: torch.device, quick: bool, workdir: Path) -> dict[str, Any]:
    """Run the ``EXPERIMENT`` through the ``clarena`` CLI in its own process; its figures."""
    output_dir = workdir / EXPERIMENT
    command = [
        sys.executable,
        "-m",
        "clarena.experiments.cli",
        f"experiment={EXPERIMENT}",
        f"output_dir={output_dir}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        *(["train_tasks=2", "trainer.max_epochs=1"] if quick else []),
    ]
    env = {**os.environ, "MPLBACKEND": os.environ.get("MPLBACKEND", "Agg")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{result.stderr[-2000:]}")
    summary = json.loads((output_dir / "results" / "summary.json").read_text())
    print(
        f"{EXPERIMENT}: {len(summary['trained_tasks'])} tasks, average accuracy "
        f"{summary['average_accuracy']:.4f}",
        flush=True,
    )
    return {
        "command": command[2:],
        "trained_tasks": summary["trained_tasks"],
        "average_accuracy": summary["average_accuracy"],
    }


def timed_part(parts: dict[str, Any], name: str, run: Callable[[], dict[str, Any]]) -> None:
    """Run one part into ``parts[name]`` with its wall time; an error is recorded, not raised."""
    start = time.perf_counter()
    try:
        parts[name] = {"figures": run(), "error": None}
    except Exception as error:  # recorded; the other parts still run
        print(f"{name} failed: {error}", file=sys.stderr, flush=True)
        parts[name] = {"figures": None, "error": f"{type(error).__name__}: {error}"}
    parts[name]["wall_s"] = time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cpu", action="store_true", help="run on CPU (no GPU needed)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes: checks the suite runs, figures mean nothing",
    )
    parser.add_argument(
        "--json", type=Path, default=Path("gpu_suite.json"), help="where to write the figures"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        sys.exit(NO_GPU)
    device = torch.device("cpu" if args.cpu else "cuda")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    parts: dict[str, Any] = {}
    print(f"gpu suite on {device}{', quick' if args.quick else ''}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        timed_part(parts, "overheads", lambda: overheads(device, args.quick))
        for precision in ("fp32", "bf16"):
            timed_part(
                parts,
                f"compiled_{precision}",
                lambda precision=precision: compiled_steps(device, precision, args.quick),
            )
        timed_part(parts, "experiment", lambda: experiment(device, args.quick, Path(workdir)))
    total = time.perf_counter() - start
    report = {
        "machine": compiled_step.machine(),
        "device": str(device),
        "quick": args.quick,
        "inductor_caches": not inductor_config.force_disable_caches,
        "parts": parts,
        "wall_s": total,
    }
    args.json.write_text(json.dumps(report, indent=1))
    failed = [name for name, part in parts.items() if part["error"] is not None]
    print(
        f"total {total:.1f} s{' (over the 5 minutes it should take)' if total > 300 else ''}; "
        f"figures in {args.json}" + (f"; failed: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
