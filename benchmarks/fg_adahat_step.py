"""AdaHAT and FG-AdaHAT step cost: HATMaskMLP training steps against the same step with HAT.

A step is forward, a cross-entropy loss plus HAT's sparsity regulariser, backward, the gradient
adjustment and the embedding compensation (batch 64, 2 CPU threads by default, subnormal floats
kept), while task 3 trains with tasks 1 and 2 stored. Variants: HAT's hard conditioning (the
reference); AdaHAT (layer sparsity and its soft factor); FG-AdaHAT's factor alone (importance of
earlier tasks already carried); FG-AdaHAT factor plus one step's importance
(``output_weight_gradient_abs_sum``, the paper's OG) and its accumulation. Steps alternate and
ratios are medians of per-round ratios (see ``_timing.paired_timings``).

Run from the repository root: ``python benchmarks/fg_adahat_step.py [--repeats N] [--threads T]
[--clock wall|thread]``. Targets: AdaHAT / HAT <= 1.10, FG-AdaHAT (factor) / HAT <= 1.10.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import add_clock_arguments, chosen_clock, paired_timings

from clarena.cl import CLBackbone
from clarena.hat import (
    FGAdaHATImportance,
    HATMaskMLP,
    adahat_condition_gradients,
    annealed_scale,
    compensate_embedding_gradients,
    condition_gradients,
    fg_adahat_condition_gradients,
    hat_of,
    layer_sparsity,
    sparsity_regularization,
    step_importance,
)

S_MAX = 400.0
NUM_BATCHES = 100


def prepared() -> tuple[CLBackbone, nn.Linear, FGAdaHATImportance]:
    """A HATMaskMLP training task 3 with tasks 1 and 2 stored, its head and carried importance."""
    backbone = HATMaskMLP(input_dim=784, hidden_dims=[256, 100], output_dim=64)
    importance = FGAdaHATImportance(hat_of(backbone).layer_units, "add_latest")
    for task_id in (1, 2):
        backbone.setup_task_id(task_id)
        hat_of(backbone).store_mask()
        importance.add_task(
            task_id, {n: torch.rand(u) for n, u in hat_of(backbone).layer_units.items()}
        )
    backbone.setup_task_id(3)
    return backbone.train(), nn.Linear(64, 10), importance


def step(
    backbone: CLBackbone,
    head: nn.Linear,
    importance: FGAdaHATImportance,
    x: torch.Tensor,
    y: torch.Tensor,
    variant: str,
) -> Callable[[], None]:
    counter = [0]

    def run() -> None:
        batch_idx = counter[0] % NUM_BATCHES + 1
        counter[0] += 1
        backbone.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        feature, mask, activations = backbone(
            x, "train", s_max=S_MAX, batch_idx=batch_idx, num_batches=NUM_BATCHES
        )
        cumulative = hat_of(backbone).cumulative_mask()
        loss = nn.functional.cross_entropy(head(feature), y)
        loss = loss + 0.75 * sparsity_regularization(mask, cumulative)
        loss.backward()
        if variant == "hat":
            condition_gradients(backbone)
        elif variant == "adahat":
            with torch.no_grad():  # as the AdaHAT algorithm measures it
                sparsity = layer_sparsity(mask, cumulative)
            adahat_condition_gradients(backbone, sparsity, alpha=0.1)
        else:
            with torch.no_grad():
                sparsity = layer_sparsity(mask, cumulative)
            if variant == "fg+importance":
                values = step_importance(
                    backbone, "output_weight_gradient_abs_sum", activations, head.weight
                )
                importance.add_step(values, training_mask=mask)
            fg_adahat_condition_gradients(backbone, importance, sparsity, alpha=0.1)
        s = annealed_scale(S_MAX, batch_idx, NUM_BATCHES)
        compensate_embedding_gradients(backbone, s, S_MAX)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=300, help="timed rounds")
    add_clock_arguments(parser)
    args = parser.parse_args()
    clock = chosen_clock(parser, args)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(False)
    torch.manual_seed(0)
    backbone, head, importance = prepared()
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    variants = ("hat", "adahat", "fg", "fg+importance")
    targets = {"adahat": 1.10, "fg": 1.10}
    steps = [step(backbone, head, importance, x, y, variant) for variant in variants]
    medians, ratios = paired_timings(steps, args.repeats, warmup=30, clock=clock)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, HATMaskMLP "
        f"(784,[256,100],64), batch 64, flush_denormal False, {args.clock} clock"
    )
    for variant, median, ratio in zip(variants, medians, ratios, strict=True):
        target = targets.get(variant)
        verdict = "" if target is None else f" (target <= {target:.2f}: "
        verdict += "" if target is None else ("ok)" if ratio <= target else "missed)")
        print(f"{variant:<16} {median * 1e3:7.3f} ms  ratio to HAT {ratio:5.3f}{verdict}")


if __name__ == "__main__":
    main()
