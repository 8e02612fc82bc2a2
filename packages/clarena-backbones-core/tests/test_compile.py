"""Core backbones under ``backbone.compile``: one graph per mode, eager results."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor
from torch._dynamo.testing import CompileCounterWithBackend

from clarena.backbones import MLP, Backbone, ResNet18, ResNet50
from clarena.backbones.testing import StageRecorder

NUM_EPOCHS = 2
NUM_BATCHES = 3
#: Small enough that training stays bounded on every kernel set. At 0.01 the setup diverged: the
#: loss of ResNet50 (batch norm over 4 samples of 2x2 maps in its last stage) grew ~30x per step,
#: to inf/NaN features after 6 steps with AVX2 and AVX512 kernels and 1e29 with default ones.
LEARNING_RATE = 1e-3


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    torch._dynamo.reset()


def drive(
    backbone: Backbone, batches: list[Tensor], counter: CompileCounterWithBackend | None
) -> tuple[dict[str, int], list[Tensor]]:
    """Train (SGD), validate and test for ``NUM_EPOCHS`` epochs of ``NUM_BATCHES`` batches.

    Returns the graphs compiled in each stage (zeros without ``counter``) and every feature.
    """
    record = StageRecorder(counter)

    def run(stage: str, batch: Tensor) -> Tensor:
        return record.run(stage, lambda: backbone(batch, stage))[0]

    optimizer = torch.optim.SGD(backbone.parameters(), lr=LEARNING_RATE)
    for _ in range(NUM_EPOCHS):
        backbone.train()
        for batch in batches:
            optimizer.zero_grad()
            run("train", batch).square().mean().backward()
            optimizer.step()
        backbone.eval()
        with torch.no_grad():
            for stage in ("validation", "test"):
                for batch in batches:
                    run(stage, batch)
    return record.graphs, record.outputs


def check_compiled_like_eager(backbone: Backbone, batches: list[Tensor]) -> None:
    """One graph for training, one for evaluation (validation and test share it); eager results."""
    eager = copy.deepcopy(backbone)
    counter = CompileCounterWithBackend("aot_eager")
    backbone.compile(backend=counter, fullgraph=True)
    graphs, compiled = drive(backbone, batches, counter)
    assert graphs == {"train": 1, "validation": 1, "test": 0}
    _, expected = drive(eager, batches, None)
    assert len(compiled) == len(expected)
    # A diverging setup would compare inf or NaN (NaN is unequal to itself): it must fail here.
    assert all(bool(output.isfinite().all()) for output in expected)
    # aot_eager runs the aten kernels eager runs, in the same order (no code generation): the
    # same floats on every kernel set, so the comparison is exact.
    for actual, reference in zip(compiled, expected, strict=True):
        assert torch.equal(actual, reference)


@pytest.mark.parametrize("batch_normalization", [False, True])
def test_mlp_compiles_once_per_mode_and_matches_eager(batch_normalization: bool) -> None:
    torch.manual_seed(0)
    backbone = MLP(12, [10, 8], 6, batch_normalization=batch_normalization, dropout=None)
    check_compiled_like_eager(backbone, [torch.randn(5, 12) for _ in range(NUM_BATCHES)])


def test_compiled_forward_still_checks_its_arguments() -> None:
    backbone = MLP(12, [10], 6)
    backbone.compile(backend="eager", fullgraph=True)
    with pytest.raises(ValueError, match="stage must be one of"):
        backbone(torch.randn(2, 12), "training")


@pytest.mark.slow
@pytest.mark.parametrize("family", [ResNet18, ResNet50])
def test_resnet_compiles_once_per_mode_and_matches_eager(family: type[Backbone]) -> None:
    torch.manual_seed(0)
    backbone = family(input_channels=3, output_dim=6, small_input=True)
    check_compiled_like_eager(backbone, [torch.randn(4, 3, 16, 16) for _ in range(NUM_BATCHES)])


def test_a_copy_of_a_compiled_backbone_runs_its_own_parameters() -> None:
    torch.manual_seed(0)
    backbone = MLP(12, [10], 6)
    backbone.compile(backend="aot_eager", fullgraph=True)
    copied = copy.deepcopy(backbone)
    with torch.no_grad():
        for parameter in copied.parameters():
            parameter.add_(1.0)
    batch = torch.randn(3, 12)
    eager = copy.deepcopy(copied)
    eager._compiled_features = None
    assert torch.equal(copied(batch)[0], eager(batch)[0])
    assert not torch.equal(copied(batch)[0], backbone(batch)[0])
