"""HAT mask overhead: training-step time of HAT backbones against their unmasked CL counterparts.

A step is forward + backward of a mean-square loss on the feature (batch 64, 2 CPU threads). The
HAT backbone trains task 2 with task 1's mask stored, so its mask path is the one of a real
run. Steps of the backbones alternate and the reported ratio is the median over rounds of the
per-round ratio, so load from other processes affects both alike. "+mechanics" adds what a HAT training loop does per step besides
forward/backward: the sparsity regulariser, gradient conditioning and embedding compensation.
Also prints the bytes stored per task mask (packed, one bit per unit), and for the MLP a floor:
the CL backbone whose units are only multiplied by constant masks (no mask computation and no
mask gradient), which is the least any unit-masking backbone adds in eager PyTorch.

Run from the repository root: ``python benchmarks/hat_overhead.py [--repeats N]``.
Targets: HATMaskMLP / CLMLP <= 1.10, HATMaskResNet18 / CLResNet18 <= 1.05 (same batch norm),
ResNet-18 mask <= 620 bytes per task (upstream CLArena keeps 15,616 bytes of float32).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import paired_rounds, paired_summary, synchronized

from clarena.cl import CLMLP, CLResNet18
from clarena.hat import (
    HATMaskBackbone,
    HATMaskMLP,
    HATMaskResNet18,
    annealed_scale,
    compensate_embedding_gradients,
    condition_gradients,
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


def hat_step(backbone: HATMaskBackbone, x: Tensor, mechanics: bool) -> Callable[[], None]:
    counter = [0]

    def step() -> None:
        batch_idx = counter[0] % NUM_BATCHES + 1
        counter[0] += 1
        backbone.zero_grad(set_to_none=True)
        feature, mask, _ = backbone(
            x, "train", s_max=S_MAX, batch_idx=batch_idx, num_batches=NUM_BATCHES
        )
        loss = feature.square().mean()
        if mechanics:
            loss = loss + 0.75 * sparsity_regularization(mask, backbone.cumulative_mask())
        loss.backward()
        if mechanics:
            condition_gradients(backbone)
            s = annealed_scale(S_MAX, batch_idx, NUM_BATCHES)
            compensate_embedding_gradients(backbone, s, S_MAX)

    return step


def prepared_hat(backbone: HATMaskBackbone) -> HATMaskBackbone:
    """``backbone`` training task 2, with task 1's mask stored."""
    backbone.setup_task_id(1)
    backbone.store_mask()
    backbone.setup_task_id(2)
    return backbone.train()


def compare(
    name: str,
    cl_backbone: CLMLP | CLResNet18,
    hat_backbone: HATMaskBackbone,
    x: Tensor,
    repeats: int,
    warmup: int,
    target: float,
    floor: bool = False,
) -> dict[str, Any]:
    """Print the comparison's line(s); return its ``paired_summary`` (steps CL, HAT, ...)."""
    cl_backbone.setup_task_id(1)
    cl_backbone.train()
    hat_backbone = prepared_hat(hat_backbone)
    steps = [
        cl_step(cl_backbone, x),
        hat_step(hat_backbone, x, False),
        hat_step(hat_backbone, x, True),
    ]
    if floor:
        steps.append(cl_step(constant_gate(cl_backbone, hat_backbone), x))
    labels = ["CL", "HAT", "HAT+mechanics", "floor"][: len(steps)]
    times = paired_rounds([synchronized(step, x.device) for step in steps], repeats, warmup)
    record = paired_summary(
        dict(zip(labels, times, strict=True)),
        {"HAT/CL": ("HAT", "CL"), "HAT+mechanics/CL": ("HAT+mechanics", "CL")}
        | ({"floor/CL": ("floor", "CL")} if floor else {}),
        {"HAT/CL": target},
    )
    medians = [record["steps"][label]["median_s"] for label in labels]
    ratios = [1.0] + [record["ratios"][f"{label}/CL"]["value"] for label in labels[1:]]
    cl, hat, hat_mechanics = medians[:3]
    verdict = "ok" if ratios[1] <= target else "missed"
    print(
        f"{name:<46} CL {cl * 1e3:8.2f} ms  HAT {hat * 1e3:8.2f} ms  ratio {ratios[1]:5.3f} "
        f"(target <= {target:.2f}: {verdict})  HAT+mechanics {hat_mechanics * 1e3:8.2f} ms, "
        f"ratio {ratios[2]:5.3f}",
        flush=True,
    )
    if floor:
        print(
            f"{'  floor: CL x constant unit masks':<46} {medians[3] * 1e3:8.2f} ms, ratio "
            f"{ratios[3]:5.3f} (no mask computation, no mask gradient)",
            flush=True,
        )
    return record


def constant_gate(cl_backbone: CLMLP | CLResNet18, hat_backbone: HATMaskBackbone) -> nn.Module:
    """A copy of ``cl_backbone`` whose units are multiplied by fixed masks (no gradient to them)."""
    gated = copy.deepcopy(cl_backbone)
    with torch.no_grad():
        masks = {
            name: mask.detach()
            for name, mask in hat_backbone.get_mask(
                "validation", s_max=S_MAX, test_task_id=None
            ).items()
        }

    def unit_gate(layer_name: str, hidden: Tensor) -> Tensor:
        return hidden * masks[layer_name]

    gated.unit_gate = unit_gate  # type: ignore[method-assign]
    return gated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per backbone")
    parser.add_argument("--skip-resnet", action="store_true", help="time the MLP only")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 64, fwd+bwd",
        flush=True,
    )

    mlp_args = {"input_dim": 784, "hidden_dims": [256, 100], "output_dim": 64}
    compare(
        "HATMaskMLP / CLMLP (784,[256,100],64)",
        CLMLP(**mlp_args),
        HATMaskMLP(**mlp_args),
        torch.randn(64, 784),
        args.repeats or 400,
        50,
        1.10,
        floor=True,
    )
    image = torch.randn(64, 3, 32, 32)
    resnet_args = {"input_channels": 3, "output_dim": 512, "small_input": True}
    for batch_normalization in [] if args.skip_resnet else ["shared", "independent"]:
        compare(
            f"HATMaskResNet18 ({batch_normalization} BN) / CLResNet18 32x32",
            CLResNet18(**resnet_args, batch_normalization=True),
            HATMaskResNet18(**resnet_args, batch_normalization=batch_normalization),
            image,
            args.repeats or 12,
            2,
            1.05,
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
            f"{label:<44} {backbone.num_units:5d} units: {num_bytes:4d} bytes per stored task "
            f"mask (float32: {backbone.num_units * 4:6d} bytes)"
        )
    print("upstream CLArena HATMaskResNet18 (no shortcut masks): 3,904 units, 15,616 bytes")


if __name__ == "__main__":
    main()
