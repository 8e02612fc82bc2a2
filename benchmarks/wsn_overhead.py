"""WSN mask overhead: step time against the unmasked CL backbones, top-c% cost, mask bytes.

A step is forward + backward of a mean-square loss on the feature (batch 64, 2 CPU threads)
followed by a plain SGD update, so the WSN scores change between steps as in training (the
selection's cost depends on it: ``kthvalue`` runs several times faster on data it has just seen).
The WSN backbone trains task 2 with task 1's mask stored, so every step computes the top-c%
masks of all layers from the scores and zeroes the gradients of parameters task 1 uses
(``WSN.condition_gradients``), as a real run does. Steps of the two backbones alternate
and the reported ratio is the median over rounds of the per-round ratio, so load from other
processes affects both alike.

Also: the time to compute the top-c% mask of one 25M-weight layer (5000x5000) against
``torch.quantile`` (which refuses inputs over 2^24 elements, so it is timed on the largest it
takes and scaled linearly, a lower bound for its sort), and the bytes stored per task mask.

Run from the repository root: ``python benchmarks/wsn_overhead.py [--repeats N] [--threads T]
[--clock wall|thread] [--skip-resnet]``.
Targets: WSNMaskMLP / CLMLP <= 2.0; 25M-weight mask <= 0.3 s; MLP(784,[256,100],64) mask
<= 30,000 bytes per task (float32 masks: 932,496).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (
    add_clock_arguments,
    chosen_clock,
    paired_rounds,
    paired_summary,
    synchronized,
)

from clarena.cl import CLMLP, CLBackbone, CLResNet18
from clarena.wsn import WSNMaskMLP, WSNMaskResNet18, score_mask, wsn_of

MASK_PERCENTAGE = 0.5
LEARNING_RATE = 0.01


def cl_step(backbone: CLMLP | CLResNet18, x: Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(backbone.parameters(), lr=LEARNING_RATE)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        feature, _ = backbone(x, "train")
        feature.square().mean().backward()
        optimizer.step()

    return step


def wsn_step(backbone: CLBackbone, x: Tensor) -> Callable[[], None]:
    wsn = wsn_of(backbone)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=LEARNING_RATE)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        feature, *_ = backbone(x, "train", mask_percentage=MASK_PERCENTAGE)
        feature.square().mean().backward()
        wsn.condition_gradients()
        optimizer.step()

    return step


#: The clock steps are timed with: wall time, or (``--clock thread``, for ``--threads 1``) the CPU
#: time of this thread, which leaves out the time other processes on a busy machine take.
CLOCK: Callable[[], float] = time.perf_counter


def prepared_wsn(backbone: CLBackbone) -> CLBackbone:
    """``backbone`` (WSN attached) training task 2, with task 1's mask stored."""
    backbone.setup_task_id(1)
    wsn_of(backbone).store_mask(MASK_PERCENTAGE)
    wsn_of(backbone).initialize_parameter_score("default")
    backbone.setup_task_id(2)
    return backbone.train()


def compare(
    name: str,
    cl_backbone: CLMLP | CLResNet18,
    wsn_backbone: CLBackbone,
    x: Tensor,
    repeats: int,
    warmup: int,
    target: float | None,
) -> dict[str, Any]:
    """Print the comparison's line; return its ``paired_summary`` (steps CL and WSN)."""
    cl_backbone.setup_task_id(1)
    cl_backbone.train()
    wsn_backbone = prepared_wsn(wsn_backbone)
    steps = [cl_step(cl_backbone, x), wsn_step(wsn_backbone, x)]
    times = paired_rounds([synchronized(step, x.device) for step in steps], repeats, warmup, CLOCK)
    record = paired_summary(
        {"CL": times[0], "WSN": times[1]},
        {"WSN/CL": ("WSN", "CL")},
        {} if target is None else {"WSN/CL": target},
    )
    cl, wsn = (record["steps"][label]["median_s"] for label in ("CL", "WSN"))
    ratio = record["ratios"]["WSN/CL"]["value"]
    verdict = (
        ""
        if target is None
        else f" (target <= {target:.2f}, {'ok' if ratio <= target else 'MISSED'})"
    )
    print(f"{name:<46} CL {cl * 1e3:8.2f} ms  WSN {wsn * 1e3:8.2f} ms  ratio {ratio:5.3f}{verdict}")
    return record


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = CLOCK()
        run()
        times.append(CLOCK() - start)
    return statistics.median(times)


def large_layer_mask(repeats: int) -> None:
    score = torch.randn(5000, 5000)
    ours = median_seconds(lambda: score_mask(score, MASK_PERCENTAGE), repeats)
    print(
        f"top-c% mask of a 5000x5000 layer (25M weights, |score| + selection): {ours:.3f} s "
        f"(target <= 0.30, {'ok' if ours <= 0.30 else 'MISSED'})"
    )
    largest = (1 << 24) - 1
    part = score.reshape(-1)[:largest].abs()
    quantile = median_seconds(
        lambda: torch.quantile(part, 1 - MASK_PERCENTAGE), max(1, repeats // 2)
    )
    print(
        f"torch.quantile on its largest input (2^24 - 1 elements): {quantile:.3f} s; scaled to "
        f"25M: >= {quantile * 25e6 / largest:.3f} s (it refuses the 25M layer itself); "
        f"ours is {quantile * 25e6 / largest / ours:.1f}x faster"
    )


def mask_bytes() -> None:
    backbone = WSNMaskMLP(input_dim=784, hidden_dims=[256, 100], output_dim=64)
    backbone.setup_task_id(1)
    wsn_of(backbone).store_mask(MASK_PERCENTAGE)
    packed = backbone.task_masks.nbytes(1)
    float32 = 4 * sum(s.numel() for s in backbone.weight_score.values()) + 4 * sum(
        s.numel() for s in backbone.bias_score.values()
    )
    print(
        f"MLP(784,[256,100],64) mask per task: {packed:,} bytes packed vs {float32:,} float32 "
        f"(target <= 30,000, {'ok' if packed <= 30_000 else 'MISSED'})"
    )
    resnet = WSNMaskResNet18(input_channels=3, output_dim=512, small_input=True)
    resnet.setup_task_id(1)
    wsn_of(resnet).store_mask(MASK_PERCENTAGE)
    numel = sum(s.numel() for s in resnet.weight_score.values())
    print(
        f"ResNet18 mask per task: {resnet.task_masks.nbytes(1):,} bytes packed vs "
        f"{4 * numel:,} float32 ({numel:,} weights)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per backbone")
    add_clock_arguments(parser)
    parser.add_argument(
        "--skip-resnet", action="store_true", help="leave out the (slow) ResNet-18 comparison"
    )
    args = parser.parse_args()
    global CLOCK
    CLOCK = chosen_clock(parser, args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 64, "
        f"step = fwd + bwd + SGD update, {args.clock} clock"
    )

    mlp_args = {"input_dim": 784, "hidden_dims": [256, 100], "output_dim": 64}
    compare(
        "WSNMaskMLP / CLMLP (784,[256,100],64)",
        CLMLP(**mlp_args),
        WSNMaskMLP(**mlp_args),
        torch.randn(64, 784),
        args.repeats or 300,
        30,
        2.0,
    )
    resnet_args = {"input_channels": 3, "output_dim": 512, "small_input": True}
    if not args.skip_resnet:
        compare(
            "WSNMaskResNet18 / CLResNet18 32x32 shared BN",
            CLResNet18(**resnet_args, batch_normalization=True),
            WSNMaskResNet18(**resnet_args, batch_normalization="shared"),
            torch.randn(64, 3, 32, 32),
            args.repeats or 10,
            2,
            None,
        )
    large_layer_mask(args.repeats or 5)
    mask_bytes()


if __name__ == "__main__":
    main()
