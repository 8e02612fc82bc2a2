"""HAT mask overhead: training-step time of HAT backbones against their unmasked CL counterparts.

A step is forward + backward of a mean-square loss on the feature (batch 64, 2 CPU threads by
default, subnormal floats kept: ``torch.set_flush_denormal(False)``, as a user's run has them).
The HAT backbone trains task 2 with task 1's mask stored, so its mask path is the one of a real
run. Steps of the backbones alternate and the reported ratio is the median over rounds of the
per-round ratio, so load from other processes affects both alike. "+mechanics" adds what a HAT
training loop does per step besides forward/backward: the sparsity regulariser, gradient
conditioning and embedding compensation.

Masks (``--masks``): ``fresh`` anneals the gate scale over an epoch of 100 batches, the steps
cycling through it; ``trained`` runs every step at ``s = s_max``, as the end of a task's epoch
and its validation do, where the gates saturate and a unit whose ``s_max e`` lies in about
(-88.7, -87.3] has a subnormal gate ``sigmoid(s_max e)`` (the count is printed). Subnormal operands
are slow on many CPUs, which fresh masks hide.

Also prints the bytes stored per task mask (packed, one bit per unit), and for the MLP a floor:
the CL backbone whose units are only multiplied by constant masks (no mask computation and no
mask gradient), which is the least any unit-masking backbone adds in eager PyTorch.

Run from the repository root: ``python benchmarks/hat_overhead.py [--repeats N] [--masks
fresh|trained|both] [--skip-resnet] [--skip-mlp] [--batch-norm shared|independent|both] [--threads T] [--clock wall|thread]``.
Targets: HATMaskMLP / CLMLP <= 1.10 and with mechanics <= 1.30; HATMaskResNet18 / CLResNet18
<= 1.05 with mechanics and trained masks (same batch norm); ResNet-18 mask <= 620 bytes per task
(upstream CLArena keeps 15,616 bytes of float32).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (
    add_clock_arguments,
    chosen_clock,
    paired_rounds,
    paired_summary,
    synchronized,
)

from clarena.cl import CLMLP, CLBackbone, CLResNet18
from clarena.hat import (
    HATMaskMLP,
    HATMaskResNet18,
    annealed_scale,
    compensate_embedding_gradients,
    condition_gradients,
    hat_of,
    sparsity_regularization,
)

S_MAX = 400.0
NUM_BATCHES = 100


def cl_step(backbone: CLMLP | CLResNet18, x: Tensor) -> Callable[[], None]:
    def step() -> None:
        backbone.zero_grad(set_to_none=True)
        feature, _ = backbone(x, "train")
        feature.square().mean().backward()

    return step


def hat_step(backbone: CLBackbone, x: Tensor, mechanics: bool, trained: bool) -> Callable[[], None]:
    """A HAT step: annealed over an epoch (fresh masks) or at ``s_max`` (trained masks)."""
    counter = [0]

    def step() -> None:
        batch_idx = NUM_BATCHES if trained else counter[0] % NUM_BATCHES + 1
        counter[0] += 1
        backbone.zero_grad(set_to_none=True)
        s = annealed_scale(S_MAX, batch_idx, NUM_BATCHES)  # once per step, as the algorithm
        feature, mask, _ = backbone(x, "train", scale=s)
        loss = feature.square().mean()
        if mechanics:
            loss = loss + 0.75 * sparsity_regularization(mask, hat_of(backbone).cumulative_mask())
        loss.backward()
        if mechanics:
            condition_gradients(backbone)
            compensate_embedding_gradients(backbone, s, S_MAX)

    return step


def prepared_hat(backbone: CLBackbone) -> CLBackbone:
    """``backbone`` training task 2, with task 1's mask stored (both embeddings ``N(0, 1)``)."""
    backbone.setup_task_id(1)
    hat_of(backbone).store_mask()
    backbone.setup_task_id(2)
    return backbone.train()


def subnormal_gates(backbone: CLBackbone, s: float) -> tuple[int, int]:
    """How many of the backbone's units have a subnormal gate ``sigmoid(s e)``, and of how many."""
    tiny = torch.finfo(torch.float32).tiny
    count = 0
    with torch.no_grad():
        for embedding in backbone.task_embedding.values():
            gate = torch.sigmoid(s * embedding.float())
            count += int(((gate > 0) & (gate < tiny)).sum())
    return count, hat_of(backbone).num_units


def compare(
    name: str,
    cl_backbone: CLMLP | CLResNet18,
    hat_backbone: CLBackbone,
    x: Tensor,
    repeats: int,
    warmup: int,
    target: float,
    mechanics_target: float | None,
    trained: bool,
    floor: bool = False,
) -> dict[str, Any]:
    """Print the comparison's line(s); return its ``paired_summary`` (steps CL, HAT, ...)."""
    cl_backbone.setup_task_id(1)
    cl_backbone.train()
    hat_backbone = prepared_hat(hat_backbone)
    steps = [
        cl_step(cl_backbone, x),
        hat_step(hat_backbone, x, False, trained),
        hat_step(hat_backbone, x, True, trained),
    ]
    if floor:
        steps.append(cl_step(constant_gate(cl_backbone, hat_backbone), x))
    labels = ["CL", "HAT", "HAT+mechanics", "floor"][: len(steps)]
    times = paired_rounds([synchronized(step, x.device) for step in steps], repeats, warmup, CLOCK)
    targets = {"HAT/CL": target}
    if mechanics_target is not None:
        targets["HAT+mechanics/CL"] = mechanics_target
    record = paired_summary(
        dict(zip(labels, times, strict=True)),
        {"HAT/CL": ("HAT", "CL"), "HAT+mechanics/CL": ("HAT+mechanics", "CL")}
        | ({"floor/CL": ("floor", "CL")} if floor else {}),
        targets,
    )
    medians = [record["steps"][label]["median_s"] for label in labels]
    ratios = [1.0] + [record["ratios"][f"{label}/CL"]["value"] for label in labels[1:]]
    cl, hat, hat_mechanics = medians[:3]
    verdict = "ok" if ratios[1] <= target else "missed"
    mechanics_verdict = (
        ""
        if mechanics_target is None
        else f" (target <= {mechanics_target:.2f}: "
        f"{'ok' if ratios[2] <= mechanics_target else 'missed'})"
    )
    masks = "trained" if trained else "fresh"
    print(
        f"{name + ', ' + masks + ' masks':<62} CL {cl * 1e3:8.2f} ms  HAT {hat * 1e3:8.2f} ms  "
        f"ratio {ratios[1]:5.3f} (target <= {target:.2f}: {verdict})  HAT+mechanics "
        f"{hat_mechanics * 1e3:8.2f} ms, ratio {ratios[2]:5.3f}{mechanics_verdict}",
        flush=True,
    )
    if trained:
        count, units = subnormal_gates(hat_backbone, S_MAX)
        print(f"  {count} of {units} units have a subnormal gate sigmoid(s_max e)", flush=True)
    if floor:
        print(
            f"{'  floor: CL x constant unit masks':<46} {medians[3] * 1e3:8.2f} ms, ratio "
            f"{ratios[3]:5.3f} (no mask computation, no mask gradient)",
            flush=True,
        )
    return record


def constant_gate(cl_backbone: CLMLP | CLResNet18, hat_backbone: CLBackbone) -> nn.Module:
    """A copy of ``cl_backbone`` whose units are multiplied by fixed masks (no gradient to them)."""
    gated = copy.deepcopy(cl_backbone)
    with torch.no_grad():
        masks = {
            name: mask.detach()
            for name, mask in hat_of(hat_backbone)
            .get_mask("validation", s_max=S_MAX, test_task_id=None)
            .items()
        }

    def unit_gate(layer_name: str, hidden: Tensor) -> Tensor:
        return hidden * masks[layer_name]

    gated.unit_gate = unit_gate  # type: ignore[method-assign]
    return gated


#: The clock steps are timed with: wall time, or (``--clock thread``, for ``--threads 1``) the CPU
#: time of this thread, which leaves out the time other processes on a busy machine take.
CLOCK: Callable[[], float] = time.perf_counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per backbone")
    parser.add_argument("--skip-resnet", action="store_true", help="time the MLP only")
    parser.add_argument("--skip-mlp", action="store_true", help="time the ResNet-18 only")
    parser.add_argument(
        "--masks",
        choices=("fresh", "trained", "both"),
        default="both",
        help="annealed fresh masks, trained masks at s_max, or both",
    )
    parser.add_argument(
        "--batch-norm",
        choices=("shared", "independent", "both"),
        default="both",
        help="the ResNet-18's batch norm",
    )
    add_clock_arguments(parser)
    args = parser.parse_args()
    global CLOCK
    CLOCK = chosen_clock(parser, args)
    torch.set_num_threads(args.threads)
    # Explicit: subnormal floats stay subnormal, as in a user's run (the default of torch).
    torch.set_flush_denormal(False)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 64, fwd+bwd, "
        f"flush_denormal False, {args.clock} clock",
        flush=True,
    )
    modes = [False, True] if args.masks == "both" else [args.masks == "trained"]

    mlp_args = {"input_dim": 784, "hidden_dims": [256, 100], "output_dim": 64}
    for trained in [] if args.skip_mlp else modes:
        torch.manual_seed(0)
        compare(
            "HATMaskMLP / CLMLP (784,[256,100],64)",
            CLMLP(**mlp_args),
            HATMaskMLP(**mlp_args),
            torch.randn(64, 784),
            args.repeats or 400,
            50,
            1.10,
            1.30,
            trained,
            floor=True,
        )
    resnet_args = {"input_channels": 3, "output_dim": 512, "small_input": True}
    norms = ["shared", "independent"] if args.batch_norm == "both" else [args.batch_norm]
    for batch_normalization in [] if args.skip_resnet else norms:
        for trained in modes:
            torch.manual_seed(0)
            compare(
                f"HATMaskResNet18 ({batch_normalization} BN) / CLResNet18 32x32",
                CLResNet18(**resnet_args, batch_normalization=True),
                HATMaskResNet18(**resnet_args, batch_normalization=batch_normalization),
                torch.randn(64, 3, 32, 32),
                args.repeats or 12,
                2,
                1.05,
                1.05 if trained else None,
                trained,
            )

    for label, backbone in (
        ("HATMaskResNet18 small_input", HATMaskResNet18(**resnet_args)),
        (
            "HATMaskResNet18 small_input + proj to 64",
            HATMaskResNet18(**{**resnet_args, "output_dim": 64}),
        ),
        ("HATMaskMLP (784,[256,100],64)", HATMaskMLP(**mlp_args)),
    ):
        backbone = prepared_hat(backbone)
        num_bytes = backbone.mask_store.nbytes(1)
        print(
            f"{label:<44} {hat_of(backbone).num_units:5d} units: {num_bytes:4d} bytes per stored task "
            f"mask (float32: {hat_of(backbone).num_units * 4:6d} bytes)"
        )
    print("upstream CLArena HATMaskResNet18 (no shortcut masks): 3,904 units, 15,616 bytes")


if __name__ == "__main__":
    main()
