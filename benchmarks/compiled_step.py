"""Compiled training step: each backbone pair eager and through ``backbone.compile(fullgraph=True)``.

A step is forward + backward of a mean-square loss on the feature and a plain SGD update (batch
64, 2 CPU threads by default). The HAT backbone trains task 2 with task 1's mask stored and its
annealed scale moves with the batch index, as in ``hat_overhead.py``; the WSN backbone trains
task 2 with task 1's mask stored and zeroes the gradients of the parameters task 1 uses, as in
``wsn_overhead.py``. Each backbone is timed eager and compiled in place (a copy of it, through
the backbones' ``compile``); the steps of one family (CL, HAT, WSN, eager and compiled) alternate
round after round and every ratio is the median over rounds of the per-round ratio, so load from
other processes affects all alike. The first compiled step, which compiles the train stage's
forward and backward, is timed alone: the first-compilation time (Inductor's caches are off
unless ``--warm-cache``, so it is what a first run costs). "graphs" counts the graphs dynamo
compiled for the backbone over all its steps: 1 means it never recompiled while the scale, the
scores and the batch index moved; 0 means ``compile`` compiled nothing that the step runs. A
backbone that does not compile is reported with the error.

``--precision bf16`` runs forward and loss under ``torch.autocast`` in bfloat16.

``--inductor`` picks Inductor's CPU options: ``default``; ``cpp_wrapper`` (the graph's Python
wrapper generated as C++, less per-call overhead); ``max-autotune`` (``mode="max-autotune"``:
benchmarks kernel choices while compiling); ``freezing`` (weights folded into the graph as
constants, which Inductor allows for inference only: the timed step is then an evaluation
forward under ``torch.no_grad``, stage ``test`` with task 1's stored mask, eager and compiled).
``--kinds CL,HAT`` times some of the backbones only.

Run from the repository root: ``python benchmarks/compiled_step.py [--repeats N] [--skip-resnet]
[--skip-mlp] [--device cpu|cuda] [--precision fp32|bf16] [--inductor default|cpp_wrapper|max-autotune|freezing]
[--kinds CL,HAT,WSN] [--threads T] [--clock wall|thread] [--json PATH]``
(``--threads 1 --clock thread`` times this thread's CPU time, for a busy machine).
Targets (this CPU, 2 threads, fp32): compiled HATMaskMLP / CLMLP <= 1.05, compiled
HATMaskResNet18 / CLResNet18 <= 1.03, compiled WSNMaskMLP / CLMLP <= 1.5; compiled / eager
<= 0.8 for the MLP family; first compilation of HATMaskResNet18's train stage <= 60 s.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (
    add_clock_arguments,
    chosen_clock,
    paired_rounds,
    paired_summary,
    synchronized,
)
from hat_overhead import NUM_BATCHES, S_MAX, prepared_hat
from wsn_overhead import LEARNING_RATE, MASK_PERCENTAGE, prepared_wsn

from clarena.cl import CLMLP, CLResNet18
from clarena.hat import HATMaskMLP, HATMaskResNet18
from clarena.wsn import WSNMaskMLP, WSNMaskResNet18, wsn_of

MLP_ARGS = {"input_dim": 784, "hidden_dims": [256, 100], "output_dim": 64}
RESNET_ARGS = {"input_channels": 3, "output_dim": 512, "small_input": True}
#: family -> (label, input shape without the batch, {kind: backbone builder}).
FAMILIES: dict[str, tuple[str, tuple[int, ...], dict[str, Callable[[], nn.Module]]]] = {
    "MLP": (
        "MLP (784,[256,100],64)",
        (784,),
        {
            "CL": functools.partial(CLMLP, **MLP_ARGS),
            "HAT": functools.partial(HATMaskMLP, **MLP_ARGS),
            "WSN": functools.partial(WSNMaskMLP, **MLP_ARGS),
        },
    ),
    "ResNet18": (
        "ResNet18 small_input 32x32, shared BN",
        (3, 32, 32),
        {
            "CL": functools.partial(CLResNet18, **RESNET_ARGS, batch_normalization=True),
            "HAT": functools.partial(HATMaskResNet18, **RESNET_ARGS, batch_normalization="shared"),
            "WSN": functools.partial(WSNMaskResNet18, **RESNET_ARGS, batch_normalization="shared"),
        },
    ),
}
#: (family, ratio name) -> the most it should be, on this CPU in fp32.
TARGETS = {
    ("MLP", "HAT/CL compiled"): 1.05,
    ("ResNet18", "HAT/CL compiled"): 1.03,
    ("MLP", "WSN/CL compiled"): 1.5,
    ("MLP", "CL compiled/eager"): 0.8,
    ("MLP", "HAT compiled/eager"): 0.8,
    ("MLP", "WSN compiled/eager"): 0.8,
}
#: ``--inductor`` choices: (``torch.compile`` options, Inductor config, evaluation step).
INDUCTOR_OPTIONS: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {
    "default": ({}, {}, False),
    "cpp_wrapper": ({}, {"cpp_wrapper": True}, False),
    "max-autotune": ({"mode": "max-autotune"}, {}, False),
    "freezing": ({}, {"freezing": True}, True),
}
#: (family, kind) -> the most seconds its first compilation (train stage) should take.
FIRST_COMPILE_TARGETS = {("ResNet18", "HAT"): 60.0}


def evaluation_step(kind: str, backbone: nn.Module, x: Tensor) -> Callable[[], None]:
    """One evaluation forward of ``backbone`` on ``x`` under ``torch.no_grad`` (stage ``test``;
    HAT and WSN with task 1's stored mask)."""
    backbone.eval()

    def step() -> None:
        with torch.no_grad():
            if kind == "CL":
                backbone(x, "test")
            else:
                backbone(x, "test", test_task_id=1)

    return synchronized(step, x.device)


def training_step(kind: str, backbone: nn.Module, x: Tensor, precision: str) -> Callable[[], None]:
    """One training step of ``backbone`` (a prepared CL, HAT or WSN backbone) on ``x``."""
    optimizer = torch.optim.SGD(backbone.parameters(), lr=LEARNING_RATE)
    counter = [0]

    def forward() -> Tensor:
        if kind == "HAT":
            batch_idx = counter[0] % NUM_BATCHES + 1
            counter[0] += 1
            return backbone(x, "train", s_max=S_MAX, batch_idx=batch_idx, num_batches=NUM_BATCHES)[
                0
            ]
        if kind == "WSN":
            return backbone(x, "train", mask_percentage=MASK_PERCENTAGE)[0]
        return backbone(x, "train")[0]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = forward().float().square().mean()
        loss.backward()
        if kind == "WSN":
            wsn_of(backbone).condition_gradients()
        optimizer.step()

    return synchronized(step, x.device)


def prepared(kind: str, backbone: nn.Module, device: torch.device) -> nn.Module:
    """``backbone`` on ``device`` in training mode, training task 2 after task 1 (CL: task 1)."""
    backbone = backbone.to(device)
    if kind == "HAT":
        return prepared_hat(backbone)
    if kind == "WSN":
        return prepared_wsn(backbone)
    backbone.setup_task_id(1)
    return backbone.train()


def counting_graphs(step: Callable[[], None], graphs: list[int]) -> Callable[[], None]:
    """``step``, adding to ``graphs[0]`` the graphs dynamo compiles while it runs."""

    def run() -> None:
        before = counters["stats"]["unique_graphs"]
        step()
        graphs[0] += counters["stats"]["unique_graphs"] - before

    return run


def warm_up_compiler(device: torch.device, backend: str) -> None:
    """Compile a tiny function once, so importing the compiler is not charged to a backbone."""
    compiled = torch.compile(lambda t: (t * 2).sum(), fullgraph=True, backend=backend)
    compiled(torch.ones(4, device=device, requires_grad=True)).backward()


def measure_family(
    family: str,
    device: torch.device,
    precision: str,
    repeats: int,
    warmup: int,
    backend: str = "inductor",
    batch: int = 64,
    kinds: tuple[str, ...] = ("CL", "HAT", "WSN"),
    clock: Callable[[], float] = time.perf_counter,
    inductor: str = "default",
) -> dict[str, Any]:
    """Eager and compiled steps of ``family``'s backbones, timed in alternating rounds.

    Args:
        family: a key of ``FAMILIES``.
        device: where backbones and batch live.
        precision: ``"fp32"`` or ``"bf16"`` (autocast).
        repeats: timed rounds; warmup: untimed rounds after the first (compiling) step.
        backend: ``torch.compile`` backend (``inductor``; ``aot_eager`` captures graphs without
            generating kernels, for quick checks).
        batch: batch size.
        kinds: which of CL, HAT, WSN to time (CL is the reference of the ratios).
        clock: seconds of the timed rounds (the first compilation is always wall time).
        inductor: a key of ``INDUCTOR_OPTIONS`` (``freezing`` times evaluation steps).

    Returns:
        ``paired_summary`` of the steps (labels ``"<kind> eager"``, ``"<kind> compiled"``) and
        their ratios, plus ``"label"``, ``"backbones"`` (class names) and per kind
        ``"first_compile_s"``, ``"graphs"`` and ``"error"`` (a compilation error, or None).
    """
    label, shape, builders = FAMILIES[family]
    compile_options, config, evaluation = INDUCTOR_OPTIONS[inductor]
    saved = {key: getattr(inductor_config, key) for key in config}
    for key, value in config.items():
        setattr(inductor_config, key, value)

    def make_step(kind: str, backbone: nn.Module) -> Callable[[], None]:
        if evaluation:
            return evaluation_step(kind, backbone, x)
        return training_step(kind, backbone, x, precision)

    torch._dynamo.reset()
    torch.manual_seed(0)
    x = torch.randn(batch, *shape, device=device)
    steps: dict[str, Callable[[], None]] = {}
    compiled: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for kind in kinds:
        backbone = prepared(kind, builders[kind](), device)
        # The published name it was built by (a class, or a builder attaching a mask method).
        names[kind] = getattr(builders[kind], "func", builders[kind]).__name__
        twin = copy.deepcopy(backbone)
        steps[f"{kind} eager"] = make_step(kind, backbone)
        graphs = [0]
        info: dict[str, Any] = {"first_compile_s": None, "graphs": graphs, "error": None}
        try:
            twin.compile(fullgraph=True, backend=backend, **compile_options)
            step = counting_graphs(make_step(kind, twin), graphs)
            start = time.perf_counter()
            step()
            info["first_compile_s"] = time.perf_counter() - start
            steps[f"{kind} compiled"] = step
        except Exception as error:  # reported; the other backbones still run
            info["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
        compiled[kind] = info
    times = paired_rounds(list(steps.values()), repeats, warmup, clock)
    timed = dict(zip(steps, times, strict=True))
    ratios = {}
    for kind in kinds:
        if f"{kind} compiled" in timed:
            ratios[f"{kind} compiled/eager"] = (f"{kind} compiled", f"{kind} eager")
    for kind in kinds[1:]:
        ratios[f"{kind}/CL eager"] = (f"{kind} eager", "CL eager")
        if f"{kind} compiled" in timed and "CL compiled" in timed:
            ratios[f"{kind}/CL compiled"] = (f"{kind} compiled", "CL compiled")
    # The targets are set for this CPU in fp32 with Inductor; elsewhere the figures stand alone.
    with_targets = (
        device.type == "cpu" and precision == "fp32" and backend == "inductor" and not evaluation
    )
    targets = {name: value for (fam, name), value in TARGETS.items() if fam == family}
    if not with_targets:
        targets = {}
    record = paired_summary(timed, ratios, targets)
    for kind, info in compiled.items():
        info["graphs"] = info["graphs"][0]
        target = FIRST_COMPILE_TARGETS.get((family, kind)) if with_targets else None
        info["first_compile_target_s"] = target
        info["first_compile_ok"] = (
            None
            if target is None or info["first_compile_s"] is None
            else info["first_compile_s"] <= target
        )
    for key, value in saved.items():
        setattr(inductor_config, key, value)
    label += f", Inductor {inductor}" + (" (evaluation forward)" if evaluation else "")
    return {"family": family, "label": label, "backbones": names, "compiled": compiled, **record}


def _verdict(target: float | None, ok: bool | None) -> str:
    return "" if target is None else f" (target <= {target:g}: {'ok' if ok else 'missed'})"


def print_family(record: dict[str, Any]) -> None:
    """Print ``measure_family``'s record: a line per backbone, then the HAT/CL and WSN/CL ratios."""
    print(record["label"], flush=True)
    steps, ratios = record["steps"], record["ratios"]
    for kind, name in record["backbones"].items():
        eager = steps[f"{kind} eager"]["median_s"]
        info = record["compiled"][kind]
        if info["error"] is not None:
            print(f"  {name:<16} eager {eager * 1e3:8.2f} ms  compile failed: {info['error']}")
            continue
        ratio = ratios[f"{kind} compiled/eager"]
        print(
            f"  {name:<16} eager {eager * 1e3:8.2f} ms  compiled "
            f"{steps[f'{kind} compiled']['median_s'] * 1e3:8.2f} ms  compiled/eager "
            f"{ratio['value']:5.3f}{_verdict(ratio['target'], ratio['ok'])}  first compile "
            f"{info['first_compile_s']:6.1f} s"
            f"{_verdict(info['first_compile_target_s'], info['first_compile_ok'])}, "
            f"{info['graphs']} graph(s)"
            + (" - nothing was compiled" if info["graphs"] == 0 else ""),
            flush=True,
        )
    cl = record["backbones"]["CL"]
    for kind, name in list(record["backbones"].items())[1:]:
        eager = ratios[f"{kind}/CL eager"]["value"]
        compiled = ratios.get(f"{kind}/CL compiled")
        figure = (
            "n/a (not compiled)"
            if compiled is None
            else f"{compiled['value']:5.3f}{_verdict(compiled['target'], compiled['ok'])}"
        )
        print(f"  compiled {name} / {cl}: {figure}  (eager {eager:5.3f})", flush=True)


def machine() -> dict[str, Any]:
    """Where the figures were measured: platform, CPUs, torch, threads and the GPU if any."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per family")
    parser.add_argument("--skip-resnet", action="store_true", help="time the MLP family only")
    parser.add_argument("--skip-mlp", action="store_true", help="time the ResNet-18 family only")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--precision", "--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast"
    )
    add_clock_arguments(parser)
    parser.add_argument(
        "--warm-cache", action="store_true", help="let Inductor reuse graphs compiled before"
    )
    parser.add_argument(
        "--inductor",
        choices=tuple(INDUCTOR_OPTIONS),
        default="default",
        help="Inductor's CPU options (freezing: evaluation steps)",
    )
    parser.add_argument("--kinds", default="CL,HAT,WSN", help="backbones to time, CL first")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    kinds = tuple(args.kinds.split(","))
    if kinds[0] != "CL" or not set(kinds) <= {"CL", "HAT", "WSN"}:
        parser.error(f"--kinds must start with CL and name CL, HAT or WSN; got {args.kinds!r}.")
    clock = chosen_clock(parser, args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("compiled_step.py: --device cuda, but torch sees no CUDA GPU; drop it.")
    inductor_config.force_disable_caches = not args.warm_cache
    torch.set_num_threads(args.threads)
    warm_up_compiler(device, "inductor")
    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch 64, "
        f"{args.precision}, step = fwd + bwd + SGD update, {args.clock} clock, Inductor caches "
        f"{'on' if args.warm_cache else 'off'}",
        flush=True,
    )
    records = []
    for family, repeats, warmup in [("MLP", 300, 30), ("ResNet18", 10, 2)]:
        if (family == "ResNet18" and args.skip_resnet) or (family == "MLP" and args.skip_mlp):
            continue
        record = measure_family(
            family,
            device,
            args.precision,
            args.repeats or repeats,
            warmup,
            kinds=kinds,
            clock=clock,
            inductor=args.inductor,
        )
        print_family(record)
        records.append(record)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "precision": args.precision,
                    "inductor": args.inductor,
                    "clock": args.clock,
                    "families": records,
                }
            )
        )


if __name__ == "__main__":
    main()
