"""The base class of every clarena backbone network."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from clarena.backbones._arguments import check_constructor_arguments
from clarena.backbones.output import BackboneOutput

#: The stages a backbone can run in. ``None`` means "no stage-specific behaviour".
STAGES: tuple[str, ...] = ("train", "validation", "test")


class Backbone(nn.Module, ABC):
    """A feature extractor placed before the output heads.

    Every layer with weights is a *weighted layer*, named like its module path with ``/`` for
    ``.`` (``fc/0``, ``conv1``, ``layer1/0/downsample/0``). Subclasses build their layers,
    append each weighted layer's name to :attr:`weighted_layer_names` (input to output) and
    implement :meth:`_features`. Their forward passes route every weighted layer through
    :meth:`layer_forward` and every layer's normalised unit outputs through :meth:`unit_gate`, the
    two places where mask-based subclasses (WSN weight masks, HAT unit masks) hook in.

    :meth:`compile` compiles the tensor computation in place with ``torch.compile``; the stage and
    argument checks of :meth:`forward` stay eager.

    Constructor arguments of every subclass are checked: unknown names raise ``TypeError`` with the
    nearest valid name, and ``batch_normalisation`` is accepted for ``batch_normalization``.

    Args:
        output_dim: number of features in the output feature, handed to the heads.
    """

    #: ``torch.compile`` of the function ``_features(self, input)``, set by :meth:`compile`;
    #: ``None`` runs it eagerly. A function, not a bound method, so a ``copy.deepcopy`` of a
    #: compiled backbone runs on its own parameters.
    _compiled_features: Callable[[Backbone, Tensor], tuple[Tensor, dict[str, Tensor]]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = check_constructor_arguments(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(self, output_dim: int) -> None:
        nn.Module.__init__(self)
        if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(
                f"{type(self).__name__}: output_dim must be a positive integer (the number of "
                f"features handed to the heads); got {output_dim!r}."
            )
        self.output_dim: int = output_dim
        self.weighted_layer_names: list[str] = []
        self._layer_inputs: dict[str, tuple[str, ...]] = {}

    @property
    def architecture(self) -> str:
        """The network's published name for messages (the class name; ``ResNet`` adds its depth)."""
        return type(self).__name__

    def _add_weighted_layer(self, name: str, inputs: tuple[str, ...]) -> None:
        """Register weighted layer ``name`` whose input sums the unit outputs of ``inputs``."""
        self.weighted_layer_names.append(name)
        self._layer_inputs[name] = inputs

    def get_layer_by_name(self, layer_name: str) -> nn.Module:
        """Return the weighted layer module called ``layer_name`` (``/``-separated path)."""
        self._check_layer_name(layer_name)
        return self.get_submodule(layer_name.replace("/", "."))

    def preceding_layer_name(self, layer_name: str) -> str | None:
        """Name of the weighted layer listed before ``layer_name``; ``None`` for the first."""
        index = self._layer_index(layer_name)
        return self.weighted_layer_names[index - 1] if index > 0 else None

    def next_layer_name(self, layer_name: str) -> str | None:
        """Name of the weighted layer listed after ``layer_name``; ``None`` for the last."""
        index = self._layer_index(layer_name)
        names = self.weighted_layer_names
        return names[index + 1] if index + 1 < len(names) else None

    def input_layer_names(self, layer_name: str) -> tuple[str, ...]:
        """Weighted layers whose unit outputs reach the input channels of ``layer_name``.

        In a chain (MLP) this is the preceding layer. In a residual network the input of a block
        is the sum of its predecessor's last convolution and that block's shortcut, so every layer
        summed into it is listed (identity shortcuts are followed back). Empty for a layer fed by
        the raw input. Mask methods use this to know which input units a weight connects.
        """
        self._check_layer_name(layer_name)
        return self._layer_inputs[layer_name]

    def _layer_index(self, layer_name: str) -> int:
        self._check_layer_name(layer_name)
        return self.weighted_layer_names.index(layer_name)

    def _check_layer_name(self, layer_name: str) -> None:
        if layer_name not in self._layer_inputs:
            raise KeyError(
                f"{type(self).__name__} has no weighted layer '{layer_name}'; its weighted layers "
                f"are: {', '.join(self.weighted_layer_names)}."
            )

    def layer_forward(self, layer_name: str, layer: nn.Module, input: Tensor) -> Tensor:
        """Apply weighted layer ``layer`` (named ``layer_name``) to ``input``.

        Subclasses that mask weights (WSN) override this to run the layer with masked parameters.
        """
        return layer(input)

    def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
        """Gate the unit outputs of ``layer_name`` after normalisation, before the activation.

        Args:
            layer_name: the weighted layer that produced ``hidden``.
            hidden: ``(batch, units)`` for linear layers, ``(batch, units, height, width)`` for
                convolutions.

        Returns:
            ``hidden`` unchanged here; unit-mask subclasses (HAT) multiply their mask in.
        """
        return hidden

    def forward(self, input: Tensor, stage: str | None = None, **step: Any) -> BackboneOutput:
        """Extract features.

        Args:
            input: a batch of inputs; the expected shape is given by the subclass.
            stage: ``'train'``, ``'validation'``, ``'test'`` or ``None``. Plain backbones behave
                the same in every stage (dropout and batch norm follow ``train()``/``eval()``).
            step: step arguments of an attached mask method (see :class:`clarena.cl.MaskMethod`);
                a plain backbone takes none.

        Returns:
            A :class:`~clarena.backbones.output.BackboneOutput`: the ``(batch, output_dim)``
            feature and a dict mapping each weighted layer name to its hidden output. It unpacks
            as ``feature, activations = backbone(input)``.

        Raises:
            TypeError: a step argument was given.
        """
        check_stage(stage, type(self).__name__)
        check_no_step_arguments(step, type(self).__name__)
        return BackboneOutput(*self._run_features(input))

    def compile(self, *args: Any, **options: Any) -> None:
        """Compile the backbone in place: ``torch.compile(**options)`` of its tensor computation.

        Only the layers' computation (:meth:`_features`, and in mask subclasses the mask
        computation) is compiled; the checks and per-task bookkeeping of :meth:`forward` stay
        eager, so forward's signature and results are unchanged and the compiled graph is reused
        across batches, epochs and tasks (one graph per training/evaluation mode). Pass
        ``fullgraph=True`` to make any graph break an error. Compile after moving the backbone to
        its device.

        Args:
            options: keyword arguments of ``torch.compile`` (``fullgraph``, ``backend``, ``mode``,
                ``dynamic``, ``options``).
        """
        self._compiled_features = torch.compile(type(self)._features, *args, **options)

    def _run_features(self, input: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`_features`, compiled if :meth:`compile` was called."""
        if self._compiled_features is not None:
            return self._compiled_features(self, input)
        return self._features(input)

    @abstractmethod
    def _features(self, input: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute ``(feature, activations)`` for ``input``, whatever the stage."""


def check_stage(stage: str | None, owner: str, required: bool = False) -> None:
    """Raise ``ValueError`` unless ``stage`` is one of :data:`STAGES` (or ``None``, if not
    ``required``: mask forwards need a stage)."""
    if stage in STAGES or (stage is None and not required):
        return
    allowed = ", ".join(repr(s) for s in STAGES) + ("" if required else " (or None)")
    raise ValueError(f"{owner}: stage must be one of {allowed}; got {stage!r}.")


def check_no_step_arguments(step: dict[str, Any], owner: str) -> None:
    """Raise ``TypeError`` naming the step arguments in ``step``: only mask methods take them."""
    if step:
        raise TypeError(
            f"{owner}.forward got step arguments {', '.join(sorted(step))}, which only a backbone "
            f"with a mask method attached takes (HAT: s_max, batch_idx, num_batches, "
            f"test_task_id; WSN: mask_percentage, test_task_id)."
        )


def check_batch(input: Tensor, owner: str) -> None:
    """Raise ``ValueError`` if ``input`` holds no sample (a batch dimension of size 0).

    Empty batches would otherwise fail deep inside a layer (batch norm, indexing); they come from
    a task or split with no samples, or a loader that yields its remainder as an empty batch.
    """
    if input.ndim == 0 or input.shape[0] == 0:
        raise ValueError(
            f"{owner} got an empty batch (input shape {tuple(input.shape)}); a backbone needs at "
            f"least one sample. Check that the task's dataset split is not empty and that the "
            f"data loader yields no empty batches."
        )
