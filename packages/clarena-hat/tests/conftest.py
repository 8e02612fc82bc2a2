"""Shared helpers: synthetic task data and a plain-torch HAT / AdaHAT training loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch
from torch import Tensor, nn

from clarena.cl import CLBackbone, HeadsTIL
from clarena.hat import (
    adahat_condition_gradients,
    annealed_scale,
    clamp_task_embedding,
    compensate_embedding_gradients,
    condition_gradients,
    hat_of,
    layer_sparsity,
    sparsity_regularization,
)

S_MAX = 400.0


def reference_gate(x: Tensor) -> Tensor:
    """Reference gate ``sigmoid(x)``, values below the dtype's smallest normal set to 0 (HAT's
    one deviation from the paper: no subnormal gate reaches a kernel)."""
    gate = torch.sigmoid(x)
    return torch.where(gate < torch.finfo(gate.dtype).tiny, torch.zeros_like(gate), gate)


def reference_gates(
    scale: float, embeddings: Mapping[str, Tensor | list[float]]
) -> dict[str, Tensor]:
    """Every layer's reference gates ``sigmoid(scale e)`` (:func:`reference_gate`) as HAT computes
    them: one ``sigmoid`` over all layers' units, in layer order, split back per layer.

    The sigmoid kernel rounds its vectorised and scalar paths differently, and which units take
    which depends on the tensor; gates computed per layer can differ from these in the last bit.
    """
    tensors = [torch.as_tensor(values) for values in embeddings.values()]
    gates = reference_gate(scale * torch.cat(tensors))
    return dict(zip(embeddings, gates.split([t.numel() for t in tensors]), strict=True))


@pytest.fixture(scope="session")
def hat_gates() -> Callable[[float, Mapping[str, Tensor | list[float]]], dict[str, Tensor]]:
    """:func:`reference_gates`, for the exact-reference tests."""
    return reference_gates


def make_task_data(task_id: int, shape: tuple[int, ...], num_batches: int, batch_size: int = 8):
    """Random inputs labelled by a random linear teacher; deterministic per task id."""
    generator = torch.Generator().manual_seed(1000 + task_id)
    batches = []
    teacher = torch.randn(int(torch.tensor(shape).prod()), generator=generator)
    for _ in range(num_batches):
        x = torch.randn(batch_size, *shape, generator=generator)
        y = (x.flatten(1) @ teacher > 0).long()
        batches.append((x, y))
    return batches


def train_task(
    backbone: CLBackbone,
    heads: HeadsTIL,
    task_id: int,
    batches: list[tuple[Tensor, Tensor]],
    conditioning: str = "hat",
    lr: float = 0.1,
    reg_factor: float = 0.75,
    alpha: float = 1.0,
) -> None:
    """Train one task with the HAT recipe of clarena.hat.mechanics, then store its mask.

    ``conditioning``: ``'hat'`` (hard), ``'adahat'`` or ``'none'`` (a control that forgets).
    """
    backbone.setup_task_id(task_id)
    heads.setup_task_id(task_id, num_classes=2)
    backbone.train()
    heads.train()
    optimizer = torch.optim.SGD([*backbone.parameters(), *heads.parameters()], lr=lr)
    hat_of(backbone).check_optimizer(optimizer)
    num_batches = len(batches)
    for batch_idx, (x, y) in enumerate(batches, start=1):
        s = annealed_scale(S_MAX, batch_idx, num_batches)
        optimizer.zero_grad()
        feature, mask, _ = backbone(
            x, "train", s_max=S_MAX, batch_idx=batch_idx, num_batches=num_batches
        )
        cumulative = hat_of(backbone).cumulative_mask()
        loss = nn.functional.cross_entropy(heads(feature, task_id), y)
        loss = loss + reg_factor * sparsity_regularization(mask, cumulative)
        loss.backward()
        if conditioning == "hat":
            condition_gradients(backbone)
        elif conditioning == "adahat":
            sparsity = {k: v.detach() for k, v in layer_sparsity(mask, cumulative).items()}
            adahat_condition_gradients(backbone, sparsity, alpha=alpha)
        compensate_embedding_gradients(backbone, s, S_MAX)
        optimizer.step()
        clamp_task_embedding(backbone)
    hat_of(backbone).store_mask()


def run_test_stage(
    backbone: CLBackbone, heads: HeadsTIL, task_id: int, x: Tensor
) -> tuple[Tensor, Tensor]:
    """``(feature, logits)`` of the test stage on ``task_id``."""
    backbone.eval()
    heads.eval()
    with torch.no_grad():
        feature, _, _ = backbone(x, "test", test_task_id=task_id)
        return feature, heads(feature, task_id)


@pytest.fixture(scope="session")
def hat_loop() -> Callable[..., None]:
    return train_task


@pytest.fixture(scope="session")
def task_data() -> Callable[..., list]:
    return make_task_data


@pytest.fixture(scope="session")
def test_stage() -> Callable[..., tuple[Tensor, Tensor]]:
    return run_test_stage
