"""Constructor-argument checking: the ``batch_normalisation`` alias and unknown names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clarena.backbones import MLP, ResNet18


def _batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@pytest.mark.parametrize("value", [True, False])
def test_british_spelling_is_the_same_argument(value):
    mlp = MLP(4, [3], 2, batch_normalisation=value)
    assert mlp.batch_normalization is value
    assert _batchnorms(mlp) == (2 if value else 0)
    resnet = ResNet18(batch_normalisation=value)
    assert resnet.batch_normalization is value
    assert _batchnorms(resnet) == (20 if value else 0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MLP(4, [3], 2, batch_normalisation=True, batch_normalization=True),
        lambda: ResNet18(batch_normalisation=False, batch_normalization=False),
    ],
    ids=["MLP", "ResNet18"],
)
def test_both_spellings_together_are_rejected(build):
    with pytest.raises(TypeError, match="both 'batch_normalisation' and 'batch_normalization'"):
        build()


def test_misspelt_argument_is_named_with_the_nearest_valid_one():
    with pytest.raises(
        TypeError, match=r"unknown argument 'hiden_dims'\. Did you mean 'hidden_dims'"
    ):
        MLP(input_dim=4, hiden_dims=[3], output_dim=2)


def test_unknown_argument_lists_what_the_class_takes():
    with pytest.raises(
        TypeError, match=r"ResNet18 takes: input_channels, output_dim.*small_input"
    ) as error:
        ResNet18(depth=18)
    assert "'depth'" in str(error.value)
    assert "batch_normalization (alias batch_normalisation)" in str(error.value)


def test_misspelt_alias_suggests_a_spelling():
    with pytest.raises(TypeError, match=r"Did you mean 'batch_normali[sz]ation'"):
        ResNet18(batch_normalisaton=True)


def test_subclasses_passing_keywords_up_are_checked_too():
    class TaskMLP(MLP):
        def __init__(self, num_tasks: int = 1, **kwargs) -> None:
            super().__init__(**kwargs)
            self.num_tasks = num_tasks

    mlp = TaskMLP(num_tasks=3, input_dim=4, hidden_dims=[3], output_dim=2, batch_normalisation=True)
    assert (mlp.num_tasks, mlp.batch_normalization) == (3, True)
    assert mlp(torch.randn(2, 4))[0].shape == (2, 2)
    with pytest.raises(TypeError, match=r"TaskMLP\(\) got an unknown argument 'dropuot'"):
        TaskMLP(input_dim=4, hidden_dims=[3], output_dim=2, dropuot=0.1)
