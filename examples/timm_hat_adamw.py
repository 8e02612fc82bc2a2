"""Continual learning on a pretrained timm ViT with HAT and AdamW, on CPU in about a minute.

    python examples/timm_hat_adamw.py [--weights vit.pth]

Without ``--weights`` the script first writes a stand-in "pretrained" checkpoint (a timm model's
``state_dict`` saved with ``torch.save``), so it runs offline; pass your own local checkpoint
with timm's parameter names instead. Three tasks of two classes each (synthetic 32x32 images)
are learned one after the other with task-incremental heads. HAT masks every weighted layer of
the ViT (patch embedding, attention qkv and projection, MLPs); its layer norms, class token and
position embedding are trained in the first task and frozen after it. The accuracy on every
learned task is printed after each task: task 1's does not change.

The optimiser is AdamW with weight decay 0.05, protected in update space
(:class:`clarena.cl.UpdateSpaceProtection` over HAT's ``protection_factors()``): HAT still
conditions the gradients, and the step AdamW takes (its moments and its decoupled weight decay
included) is then undone on every entry an earlier task owns, so those entries end each step
bit-identical to where they began. ``make_optimizer`` and ``optimizer_step`` are the only lines to
change for another optimiser or protection mode.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from clarena.backbones import HATMaskTimmBackbone
from clarena.cl import CLBackbone, HeadsTIL, UpdateSpaceProtection
from clarena.hat import (
    annealed_scale,
    clamp_task_embedding,
    compensate_embedding_gradients,
    condition_gradients,
    hat_of,
    sparsity_regularization,
)

MODEL = "vit_tiny_patch16_224"
#: timm arguments of the model: 32x32 images, four of ViT-Tiny's twelve blocks (CPU-sized).
TIMM_ARGUMENTS = {"img_size": 32, "depth": 4}
IMAGE_SIZE = 32
TASKS = 3
CLASSES_PER_TASK = 2
STEPS_PER_TASK = 20
BATCH = 16
S_MAX = 400.0
REGULARIZATION = 0.75


def make_optimizer(parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser of one task (a fresh one per task)."""
    return torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.05)


def optimizer_step(
    backbone: CLBackbone,
    optimizer: torch.optim.Optimizer,
    protection: UpdateSpaceProtection,
    scale: float,
) -> None:
    """One protected step: HAT conditions the gradients, the optimiser steps, and the protection
    scales the step it took by HAT's factors (0 on what earlier tasks own)."""
    condition_gradients(backbone)
    compensate_embedding_gradients(backbone, scale, S_MAX)
    protection.before_step()
    optimizer.step()
    protection.after_step()
    clamp_task_embedding(backbone)


def write_stand_in_weights(path: Path) -> Path:
    """A timm ViT's ``state_dict``, saved as a local "pretrained" checkpoint."""
    torch.manual_seed(0)
    model = timm.create_model(MODEL, pretrained=False, num_classes=10, **TIMM_ARGUMENTS)
    torch.save(model.state_dict(), path)
    return path


def task_data(task_id: int, samples: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Images of the task's two classes: a class-specific pattern plus noise (``seed`` draws
    other samples of the same classes)."""
    generator = torch.Generator().manual_seed(task_id)
    patterns = torch.randn(CLASSES_PER_TASK, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    generator.manual_seed(1000 * seed + task_id)
    labels = torch.randint(0, CLASSES_PER_TASK, (samples,), generator=generator)
    noise = torch.randn(samples, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return patterns[labels] + 4.0 * noise, labels


def accuracy(backbone: CLBackbone, heads: HeadsTIL, task_id: int) -> float:
    backbone.eval()
    images, labels = task_data(task_id, 128, seed=1)
    with torch.no_grad():
        feature = backbone(images, "test", test_task_id=task_id).feature
        return (heads(feature, task_id).argmax(1) == labels).float().mean().item()


def train_task(backbone: CLBackbone, heads: HeadsTIL, task_id: int) -> None:
    backbone.setup_task_id(task_id)
    heads.setup_task_id(task_id, num_classes=CLASSES_PER_TASK)
    optimizer = make_optimizer([*backbone.parameters(), *heads.parameters()])
    hat = hat_of(backbone)
    hat.check_optimizer(optimizer, update_space=True)
    # HAT's factors are constant within a task: built once, after the task is set up.
    protection = UpdateSpaceProtection(hat.protection_factors())
    images, labels = task_data(task_id, STEPS_PER_TASK * BATCH)
    backbone.train()
    for step in range(STEPS_PER_TASK):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        scale = annealed_scale(S_MAX, step + 1, STEPS_PER_TASK)
        optimizer.zero_grad()
        feature, mask, _ = backbone(images[batch], "train", scale=scale)
        loss = nn.functional.cross_entropy(heads(feature, task_id), labels[batch])
        loss = loss + REGULARIZATION * sparsity_regularization(mask, hat.cumulative_mask())
        loss.backward()
        optimizer_step(backbone, optimizer, protection, scale)
    hat.end_task(task_id)


def main(weights: Path | None = None) -> tuple[list[list[float]], CLBackbone, HeadsTIL]:
    """Learn the tasks one by one; returns the accuracy matrix (row ``t``: after task ``t``),
    the backbone and the heads."""
    with tempfile.TemporaryDirectory() as folder:
        path = weights or write_stand_in_weights(Path(folder) / f"{MODEL}.pth")
        backbone = HATMaskTimmBackbone(
            MODEL,
            output_dim=64,
            pretrained_weights=path,
            uncovered_parameters="first_task",
            **TIMM_ARGUMENTS,
        )
    torch.manual_seed(1)
    heads = HeadsTIL(64)
    matrix = []
    for task_id in range(1, TASKS + 1):
        train_task(backbone, heads, task_id)
        matrix.append([accuracy(backbone, heads, t) for t in range(1, task_id + 1)])
        row = "  ".join(f"task {t}: {a:.3f}" for t, a in enumerate(matrix[-1], start=1))
        print(f"after task {task_id}: {row}")
    hat = hat_of(backbone)
    print(f"mask bytes per task: {hat.mask_store.nbytes(1)}; capacity used: {hat.capacity():.3f}")
    return matrix, backbone, heads


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="a local timm checkpoint (state dict)")
    main(parser.parse_args().weights)
