"""Cost of update-space protection (SPEC §9): step time and memory against gradient space.

A step is HAT's whole training step of task 2 with task 1's mask stored: forward at the annealed
gate scale, mean-square loss on the feature plus the sparsity regulariser, backward, gradient
conditioning, embedding compensation, the optimiser step, the embedding clamp. In update space
the step is also wrapped by :class:`clarena.cl.UpdateSpaceProtection` (a copy of the protected
parameters before it, ``lerp`` back after); AdaHAT's update space replaces its gradient factor by
the per-step update factor. Steps of the two modes alternate round after round and each ratio is
the median over rounds of the per-round ratio (``_timing.paired_rounds``), so load from other
processes affects both alike.

Memory: ``UpdateSpaceProtection.extra_bytes()`` (the copy kept across the step) against the bytes
of the protected parameters and of all parameters. The factors are the ones gradient
conditioning caches anyway, shared, not copied.

Run from the repository root: ``python benchmarks/update_space.py [--repeats N] [--skip-resnet]
[--optimizer sgd|adamw|both] [--device cpu|cuda] [--threads T] [--clock wall|thread]
[--json PATH]``. Targets: update / gradient <= 1.15 on HATMaskMLP and HATMaskResNet18; extra
memory <= one copy of the protected parameters.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
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

from clarena.cl import CLBackbone, UpdateSpaceProtection
from clarena.hat import (
    HATMaskMLP,
    HATMaskResNet18,
    adahat_condition_gradients,
    adahat_update_factors,
    annealed_scale,
    clamp_task_embedding,
    compensate_embedding_gradients,
    condition_gradients,
    hat_of,
    layer_sparsity,
    sparsity_regularization,
    update_parameters,
)

S_MAX = 400.0
NUM_BATCHES = 100
TARGET = 1.15

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9),
    "adamw": functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0),
}


def prepared(backbone: CLBackbone, device: torch.device) -> CLBackbone:
    """``backbone`` on ``device`` training task 2, with task 1's mask stored."""
    backbone.to(device)
    backbone.setup_task_id(1)
    hat_of(backbone).store_mask()
    backbone.setup_task_id(2)
    return backbone.train()


def hat_step(
    backbone: CLBackbone,
    x: Tensor,
    optimizer: torch.optim.Optimizer,
    method: str,
    protection: UpdateSpaceProtection | None,
) -> Callable[[], None]:
    """One training step; ``method`` ``'hat'`` or ``'adahat'``; ``protection`` for update space."""
    hat = hat_of(backbone)
    counter = [0]

    def step() -> None:
        batch_idx = counter[0] % NUM_BATCHES + 1
        counter[0] += 1
        optimizer.zero_grad(set_to_none=True)
        s = annealed_scale(S_MAX, batch_idx, NUM_BATCHES)
        feature, mask, _ = backbone(x, "train", scale=s)
        cumulative = hat.cumulative_mask()
        loss = feature.square().mean() + 0.75 * sparsity_regularization(mask, cumulative)
        loss.backward()
        sparsity = None
        if method == "adahat":
            with torch.no_grad():
                sparsity = layer_sparsity(mask, cumulative)
        if method == "hat":
            condition_gradients(backbone)
        elif protection is None:
            adahat_condition_gradients(backbone, sparsity or {}, alpha=0.1)
        compensate_embedding_gradients(backbone, s, S_MAX)
        if protection is not None:
            protection.before_step()
        optimizer.step()
        if protection is not None:
            if method == "hat":
                protection.after_step()
            else:
                protection.after_step(adahat_update_factors(backbone, sparsity or {}, alpha=0.1))
        clamp_task_embedding(backbone)

    return step


def compare(
    name: str,
    make: Callable[[], CLBackbone],
    x: Tensor,
    optimizer_name: str,
    method: str,
    repeats: int,
    warmup: int,
    clock: Callable[[], float],
) -> dict[str, Any]:
    """Time gradient against update space on two equal copies; print and return the record."""
    device = x.device
    steps = []
    protections: list[UpdateSpaceProtection | None] = []
    for update_space in (False, True):
        torch.manual_seed(0)
        backbone = prepared(make(), device)
        optimizer = OPTIMIZERS[optimizer_name](backbone.parameters())
        protection = None
        if update_space:
            if method == "hat":
                protection = UpdateSpaceProtection(hat_of(backbone).protection_factors())
            else:
                protection = UpdateSpaceProtection.per_step(update_parameters(backbone))
        protections.append(protection)
        steps.append(synchronized(hat_step(backbone, x, optimizer, method, protection), device))
    times = paired_rounds(steps, repeats, warmup, clock)
    label = f"{name} {method} {optimizer_name}"
    record = paired_summary(
        {"gradient": times[0], "update": times[1]},
        {"update/gradient": ("update", "gradient")},
        {"update/gradient": TARGET} if method == "hat" else None,
    )
    protection = protections[1]
    assert protection is not None
    parameters = list(backbone.parameters())
    extra = protection.extra_bytes()
    protected = sum(p.numel() * p.element_size() for p in protection.parameters)
    total = sum(p.numel() * p.element_size() for p in parameters)
    record["memory"] = {
        "extra_bytes": extra,
        "protected_parameter_bytes": protected,
        "all_parameter_bytes": total,
        "extra_per_protected_copy": extra / protected,
    }
    ratio = record["ratios"]["update/gradient"]
    verdict = "" if ratio["ok"] is None else ("  ok" if ratio["ok"] else "  OVER TARGET")
    print(
        f"{label:<40} gradient {record['steps']['gradient']['median_s'] * 1e3:8.2f} ms  "
        f"update {record['steps']['update']['median_s'] * 1e3:8.2f} ms  "
        f"ratio {ratio['value']:.3f}"
        + (f" (target <= {TARGET})" if ratio["target"] else "")
        + verdict,
        flush=True,
    )
    print(
        f"{'':<40} extra memory {extra / 2**20:7.2f} MiB = {extra / protected:.2f} x the "
        f"protected parameters ({protected / 2**20:.2f} MiB; all parameters "
        f"{total / 2**20:.2f} MiB)",
        flush=True,
    )
    return {label: record}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--optimizer", choices=("sgd", "adamw", "both"), default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    add_clock_arguments(parser)
    args = parser.parse_args()
    clock = chosen_clock(parser, args)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    optimizers = ["sgd", "adamw"] if args.optimizer == "both" else [args.optimizer]
    print(f"torch {torch.__version__}, device {device}, {args.threads} CPU threads", flush=True)
    records: dict[str, Any] = {}
    mlp = functools.partial(HATMaskMLP, 784, [256, 100], 64)
    x = torch.randn(64, 784, device=device)
    for optimizer_name in optimizers:
        for method in ("hat", "adahat"):
            records |= compare(
                "HATMaskMLP (784,[256,100],64)",
                mlp,
                x,
                optimizer_name,
                method,
                args.repeats or 200,
                20,
                clock,
            )
    if not args.skip_resnet:
        resnet = functools.partial(
            HATMaskResNet18, input_channels=3, output_dim=512, small_input=True
        )
        x = torch.randn(64, 3, 32, 32, device=device)
        for optimizer_name in optimizers:
            records |= compare(
                "HATMaskResNet18 32x32",
                resnet,
                x,
                optimizer_name,
                "hat",
                args.repeats or 10,
                2,
                clock,
            )
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
