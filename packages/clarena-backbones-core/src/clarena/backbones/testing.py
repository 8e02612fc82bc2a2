"""A reusable pytest suite checking the backbone contract (SPEC §4) for any clarena backbone.

Each package subclasses :class:`BackboneContract` in its tests, once per backbone configuration::

    class TestMLP(BackboneContract):
        def make_backbone(self):
            return MLP(784, [256, 100], 64)

        def example_input(self):
            return torch.randn(4, 1, 28, 28)

Backbones whose ``forward`` takes more than ``(input, stage)`` (CL, HAT, WSN) override
:meth:`BackboneContract.forward`. This module imports pytest, which is not a dependency of
clarena-backbones-core: import it from tests only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from clarena.backbones.base import Backbone
from clarena.backbones.output import BackboneOutput

#: Modules whose parameters are normalisation statistics' affine terms, not weighted layers.
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


class BackboneContract:
    """Contract tests for one backbone configuration; subclass it as ``Test<Something>``."""

    #: Names (or name prefixes) of trainable parameters that legitimately belong to no weighted or
    #: normalisation layer, such as task embeddings or parameter scores of mask backbones.
    extra_parameter_prefixes: tuple[str, ...] = ()

    def make_backbone(self) -> Backbone:
        """Return a freshly constructed backbone to test."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_backbone()")

    def example_input(self) -> Tensor:
        """Return an input batch (batch size at least 2) the backbone accepts."""
        raise NotImplementedError(f"{type(self).__name__} must implement example_input()")

    def forward(self, backbone: Backbone, input: Tensor) -> BackboneOutput:
        """Run ``backbone`` on ``input`` in the test stage; return its output."""
        return backbone(input, stage="test")

    @pytest.fixture
    def backbone(self) -> Backbone:
        return self.make_backbone()

    @pytest.fixture
    def outputs(self, backbone: Backbone) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        input = self.example_input()
        backbone.eval()
        with torch.no_grad():
            result = self.forward(backbone, input)
        assert isinstance(result, BackboneOutput), (
            f"forward returned {type(result).__name__}, not a BackboneOutput"
        )
        return input, result.feature, result.activations

    def test_feature_shape_is_batch_by_output_dim(self, backbone, outputs):
        input, feature, _ = outputs
        assert tuple(feature.shape) == (input.shape[0], backbone.output_dim)

    def test_activations_cover_the_weighted_layers(self, backbone, outputs):
        input, _, activations = outputs
        names = backbone.weighted_layer_names
        assert len(set(names)) == len(names), f"duplicate weighted layer names: {names}"
        assert set(activations) == set(names)
        for name, activation in activations.items():
            assert activation.shape[0] == input.shape[0], f"{name}: batch dimension lost"

    def test_weighted_layer_names_resolve_to_layers_with_weights(self, backbone):
        for name in backbone.weighted_layer_names:
            layer = backbone.get_layer_by_name(name)
            assert isinstance(getattr(layer, "weight", None), Tensor), f"{name} has no weight"

    def test_preceding_and_next_layer_names_agree(self, backbone):
        names = backbone.weighted_layer_names
        assert names, "a backbone has at least one weighted layer"
        assert backbone.preceding_layer_name(names[0]) is None
        assert backbone.next_layer_name(names[-1]) is None
        for name in names[1:]:
            assert backbone.next_layer_name(backbone.preceding_layer_name(name)) == name
        for name in names[:-1]:
            assert backbone.preceding_layer_name(backbone.next_layer_name(name)) == name

    def test_every_trainable_parameter_belongs_to_a_layer(self, backbone):
        owned = set()
        for name in backbone.weighted_layer_names:
            owned.update(map(id, backbone.get_layer_by_name(name).parameters()))
        for module in backbone.modules():
            if isinstance(module, _NORM_TYPES):
                owned.update(map(id, module.parameters()))
        stray = [
            name
            for name, parameter in backbone.named_parameters()
            if parameter.requires_grad
            and id(parameter) not in owned
            and not name.startswith(self.extra_parameter_prefixes)
        ]
        assert not stray, f"trainable parameters outside weighted/normalisation layers: {stray}"

    def test_unknown_constructor_argument_is_named(self, backbone):
        with pytest.raises(TypeError, match=r"'output_dimm'.*Did you mean 'output_dim'"):
            type(backbone)(output_dimm=8)

    def test_empty_batch_is_a_value_error(self, backbone):
        empty = self.example_input()[:0]
        backbone.eval()
        with torch.no_grad(), pytest.raises(ValueError, match=r"empty batch.*at least one sample"):
            self.forward(backbone, empty)


def constructor_arguments(cls: Callable[..., Any]) -> dict[str, object]:
    """The arguments of backbone class or builder ``cls`` in order, name → default
    (``inspect.Parameter.empty``). A family's ``depth`` is left out: its published builders
    (``ResNet18`` ...) fix it."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls).parameters.items()
        if name != "depth"
    }


def assert_extends_arguments(
    variant: Callable[..., Any], family: Callable[..., Any], own: dict[str, object]
) -> None:
    """Assert ``variant`` takes exactly ``family``'s arguments plus ``own`` (name → default).

    An ``own`` argument that ``family`` also takes keeps the family's place with the variant's
    default; the others follow the family's, in ``own``'s order.
    """
    family_arguments = constructor_arguments(family)
    expected = {**family_arguments, **own}
    assert constructor_arguments(variant) == expected
    assert list(constructor_arguments(variant)) == list(expected)


class StageRecorder:
    """Records, per stage, the graphs ``torch.compile`` builds and the feature each forward returns.

    For compile tests: pass ``torch._dynamo.testing.CompileCounterWithBackend`` (or any object
    with a ``frame_count``) as ``counter`` and as the ``backend`` of ``backbone.compile``; without
    a counter the graph counts stay zero (an eager reference run).
    """

    def __init__(self, counter: Any | None = None) -> None:
        self.counter = counter
        #: Stage -> graphs compiled while that stage's forwards ran.
        self.graphs: dict[str, int] = {"train": 0, "validation": 0, "test": 0}
        #: A detached copy of every recorded forward's feature (its first output), in order.
        self.outputs: list[Tensor] = []

    def run(self, stage: str, forward: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        """Call ``forward()`` (a backbone forward in ``stage``), record it, return its result."""
        before = self._frames()
        result = forward()
        self.graphs[stage] += self._frames() - before
        self.outputs.append(result[0].detach().clone())
        return result

    def _frames(self) -> int:
        return 0 if self.counter is None else int(self.counter.frame_count)
