"""WSN as a mask method: parameter scores, top-c% subnetworks, stored and accumulated masks."""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Mapping
from numbers import Real
from typing import Any, ClassVar, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from clarena.backbones.base import check_stage
from clarena.backbones.output import BackboneOutput
from clarena.cl import (
    BatchNormMode,
    CLBackbone,
    MaskMethod,
    TaskBatchNorm,
    check_task_id,
    check_uncovered_mode,
    make_batch_norm_task_independent,
    method_of,
    resolve_batch_norm_mode,
    shared_parameters,
)
from clarena.wsn.masks import TaskMaskStore, parameter_key
from clarena.wsn.topc import ThresholdHint, masked_parameters, top_count, top_fraction_mask
from clarena.wsn.topc_sync_free import masked_parameters_sync_free

#: Score initialisations of :meth:`WSN.initialize_parameter_score`.
SCORE_INIT_MODES: tuple[str, ...] = ("default", "N01", "U01")

#: The step arguments of a WSN forward (SPEC §4): ``backbone(input, stage, **step)``.
STEP_ARGUMENTS: tuple[str, ...] = ("mask_percentage", "test_task_id")

#: How a WSN forward's output unpacks, the published API's tuple.
FIELDS: tuple[str, ...] = ("feature", "weight_mask", "bias_mask", "activations")

#: The parameters of a weighted layer that WSN masks.
_KINDS: tuple[str, ...] = ("weight", "bias")

#: ``(weight_mask, bias_mask)``: layer name → mask shaped like the layer's weight / bias.
Masks = tuple[dict[str, Tensor], dict[str, Tensor]]

_OWNER = "WSN"


class WSN(MaskMethod):
    """Winning SubNetworks (Kang et al., ICML 2022) as a mask method attached to a backbone.

    Every weight and bias of every weighted layer of the backbone has a learnable score, kept on
    the backbone in ``weight_score`` and ``bias_score`` (``nn.ParameterDict`` keyed by layer name,
    each score shaped like its parameter). A task's subnetwork keeps, per layer, the top ``c``
    (``mask_percentage``) of parameters by ``|score|``; the layer runs with ``weight * mask`` and
    ``bias * mask`` (the :meth:`layer_forward` hook). Per stage:

    - ``train`` / ``validation``: the mask is recomputed from the scores on every forward; a
      straight-through estimator passes the mask's gradient to the scores;
    - ``test``: the stored mask of ``test_task_id``.

    After a task, :meth:`store_mask` (:meth:`end_task`) keeps its binary mask at one bit per
    parameter and adds it to the accumulated mask (the union over stored tasks). While a later
    task trains, parameters in the accumulated mask must not move: call
    :meth:`condition_gradients` after every backward (they may still be *used* by the new task's
    subnetwork, frozen), start a fresh optimiser per task and use no weight decay
    (:meth:`check_optimizer`). Scores are shared by all tasks and keep learning; a stored task
    never reads them again.

    Attach it to any continual-learning backbone whose weighted layers are ``nn.Linear`` or
    convolutions: ``CLMLP(...).attach(WSN())``. ``clarena.backbones.WSNMaskMLP``,
    ``WSNMaskResNet18`` ... build exactly that.

    Args:
        batch_normalization: what happens to the backbone's batch norms: ``'independent'``
            (default; one batch norm per task, selected by the task a forward runs on: no leak),
            ``'shared'``/``True`` (one for all tasks — WSN does not mask its affine parameters or
            statistics, so they keep moving and earlier tasks' test outputs change: a leak) or
            ``None``/``False`` (only for a backbone without batch norm).
        uncovered_parameters: trainable parameters outside any weighted or normalisation layer
            (a timm ViT's ``cls_token`` and ``pos_embed``, ConvNeXt's layer scale): ``'refuse'``
            the backbone at attach, naming them (default); ``'first_task'``: trained in the
            first task, frozen after it; ``'freeze'``: never trained. Layer/group-norm affine
            parameters are always frozen after the first task (:meth:`shared_parameters`).

    Raises:
        ValueError: an unknown ``batch_normalization`` value.
    """

    name: ClassVar[str] = "wsn"
    state_names: ClassVar[tuple[str, ...]] = (
        "weight_score",
        "bias_score",
        "cumulative_masks",
        "task_masks",
    )
    backbone_api: ClassVar[tuple[str, ...]] = (
        "initialize_parameter_score",
        "get_mask",
        "store_mask",
        "stored_mask",
        "cumulative_mask",
        "capacity",
        "capacity_per_layer",
    )

    #: The compiled tensor cores once :meth:`compile` has run (not copied or pickled).
    _compiled: _CompiledCores | None = None

    def __init__(
        self,
        batch_normalization: str | bool | None = "independent",
        uncovered_parameters: str = "refuse",
    ) -> None:
        self._batch_norm: BatchNormMode = resolve_batch_norm_mode(batch_normalization, _OWNER)
        #: What happens to trainable parameters outside weighted and normalisation layers
        #: (:data:`clarena.cl.UNCOVERED_MODES`).
        self.uncovered_parameters: str = check_uncovered_mode(uncovered_parameters, _OWNER)
        self._shared: dict[str, nn.Parameter] = {}
        #: The ``mask_percentage`` of the last train/validation forward (saved with the backbone).
        self.mask_percentage: float | None = None
        self._forward_parameters: dict[str, tuple[Tensor, Tensor | None]] | None = None

    # ------------------------------------------------------------------ attach

    def _attach(self, backbone: CLBackbone) -> None:
        """Register scores, mask stores and per-task batch norms on ``backbone``.

        Scores start with the ``'default'`` initialisation.

        Raises:
            TypeError: a weighted layer is neither ``nn.Linear`` nor a (non-transposed)
                convolution, so its forward cannot run with masked parameters.
            ValueError: ``batch_normalization=None`` but the backbone has batch norms.
        """
        for name in backbone.weighted_layer_names:
            layer = backbone.get_layer_by_name(name)
            if not _is_maskable(layer):
                raise TypeError(
                    f"{_OWNER}: weighted layer '{name}' of {type(backbone).__name__} is a "
                    f"{type(layer).__name__}; WSN masks only nn.Linear and nn.Conv1d/2d/3d layers."
                )
        has_batch_norm = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm | TaskBatchNorm)
            for m in backbone.modules()
        )
        if has_batch_norm and self._batch_norm is None:
            raise ValueError(
                f"{_OWNER}: {type(backbone).__name__} has batch norms but "
                f"batch_normalization=None; pass 'independent' (one per task) or 'shared'."
            )
        covered = {
            id(p)
            for name in backbone.weighted_layer_names
            for p in backbone.get_layer_by_name(name).parameters()
        }
        covered.update(
            id(p)
            for m in backbone.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm | TaskBatchNorm)
            for p in m.parameters()
        )
        self._shared = shared_parameters(backbone, covered, _OWNER, self.uncovered_parameters)
        #: The resolved batch-norm mode: ``None`` for a backbone without batch norm.
        self.batch_norm_mode: BatchNormMode = self._batch_norm if has_batch_norm else None
        if self.batch_norm_mode == "independent":
            # A timm backbone's per-task batch norms start from its (pretrained) ones.
            keep_state = bool(getattr(backbone, "per_task_norms_keep_state", False))
            make_batch_norm_task_independent(backbone, keep_state)
        self._task_norms = tuple(m for m in backbone.modules() if isinstance(m, TaskBatchNorm))
        weight_score, bias_score = nn.ParameterDict(), nn.ParameterDict()
        cumulative_masks = nn.Module()
        # 1 where a parameter is free (not in the accumulated mask), in the parameter's dtype: the
        # gradient factor of condition_gradients (a same-dtype multiply needs no conversion).
        # Derived from cumulative_masks, not saved.
        free_masks = nn.Module()
        shapes: dict[str, tuple[int, ...]] = {}
        for name in backbone.weighted_layer_names:
            layer = backbone.get_layer_by_name(name)
            for kind, scores in zip(_KINDS, (weight_score, bias_score), strict=True):
                parameter = getattr(layer, kind)
                if parameter is None:
                    continue
                scores[name] = nn.Parameter(torch.empty_like(parameter))
                key = parameter_key(name, kind)
                shapes[key] = tuple(parameter.shape)
                cumulative_masks.register_buffer(key, torch.zeros_like(parameter, dtype=torch.bool))
                free_masks.register_buffer(key, torch.ones_like(parameter), persistent=False)
        task_masks = TaskMaskStore(shapes)
        # On the backbone, under the names (state-dict keys) WSN backbones have always saved.
        backbone.weight_score = weight_score
        backbone.bias_score = bias_score
        backbone.cumulative_masks = cumulative_masks
        backbone._free_masks = free_masks
        backbone.task_masks = task_masks
        self.weight_score, self.bias_score = weight_score, bias_score
        self.cumulative_masks, self._free_masks, self.task_masks = (
            cumulative_masks,
            free_masks,
            task_masks,
        )
        # Every masked parameter, resolved once: a training step walks this, not module paths.
        # Each keeps its previous threshold (a speed-up only: masks never depend on it).
        self._slots: tuple[_Slot, ...] = tuple(
            _Slot(name, index, kind, parameter_key(name, kind), layer, ThresholdHint())
            for name in backbone.weighted_layer_names
            for layer in (backbone.get_layer_by_name(name),)
            for index, kind in enumerate(_KINDS)
            if getattr(layer, kind) is not None
        )
        # The float64 bits of mask_percentage, an input of the compiled core: an integer buffer
        # keeps them exact through .half()/.double() and follows .to(device); filling it needs no
        # host synchronisation.
        backbone.register_buffer(
            "_mask_percentage_bits", torch.zeros((), dtype=torch.int64), persistent=False
        )
        self.initialize_parameter_score("default")
        backbone.register_load_state_dict_post_hook(_refresh_free_masks)

    # ------------------------------------------------------------------ tasks and scores

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters no mask covers, trained in the first task and frozen from the second on:
        layer/group-norm affine parameters, and with ``uncovered_parameters='first_task'`` those
        outside any layer (see :mod:`clarena.cl.shared_parameters`)."""
        return dict(self._shared)

    def setup_task(self, task_id: int, is_new: bool) -> None:
        """With independent batch norm, give task ``task_id`` its own (create the task's
        optimiser after ``setup_task_id``, so it holds the new batch norm)."""
        for norm in self._task_norms:
            norm.select(task_id, create=True)

    def _select_task_batch_norms(self, task_id: int) -> None:
        """Run every per-task batch norm with task ``task_id``'s."""
        for norm in self._task_norms:
            if norm.active_task != task_id:
                norm.select(task_id)

    def initialize_parameter_score(self, mode: str = "default") -> None:
        """Re-initialise every score in place.

        Args:
            mode: ``'default'`` like the layer's own parameters (Kaiming-uniform weights with
                ``a = sqrt(5)``, biases uniform in ``±1/sqrt(fan_in)``, as ``nn.Linear`` and
                ``nn.Conv2d`` do); ``'N01'`` standard normal; ``'U01'`` uniform on [0, 1].

        Raises:
            ValueError: an unknown mode.
        """
        if mode not in SCORE_INIT_MODES:
            raise ValueError(
                f"{_OWNER}: unknown parameter score init mode {mode!r}; use one of "
                f"{', '.join(repr(m) for m in SCORE_INIT_MODES)}."
            )
        with torch.no_grad():
            for name, weight_score in self.weight_score.items():
                bias_score = self.bias_score.get(name)
                if mode == "N01":
                    nn.init.normal_(weight_score)
                    if bias_score is not None:
                        nn.init.normal_(bias_score)
                elif mode == "U01":
                    nn.init.uniform_(weight_score)
                    if bias_score is not None:
                        nn.init.uniform_(bias_score)
                else:
                    nn.init.kaiming_uniform_(weight_score, a=math.sqrt(5))
                    if bias_score is not None:
                        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight_score)
                        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                        nn.init.uniform_(bias_score, -bound, bound)

    # ------------------------------------------------------------------ masks

    def get_mask(
        self,
        stage: str,
        mask_percentage: float | None = None,
        test_task_id: int | None = None,
    ) -> Masks:
        """The masks a forward in ``stage`` uses (arguments as for :meth:`forward`'s step).

        Returns:
            ``(weight_mask, bias_mask)``: layer name → 0/1 mask of the parameter's dtype, shaped
            like the weight / bias (``bias_mask`` only for layers with a bias). For train and
            validation, the top-``mask_percentage`` of ``|score|`` per parameter tensor; for test,
            the stored masks of ``test_task_id``.
        """
        masks, _ = self._select(stage, mask_percentage, test_task_id)
        with torch.no_grad():
            return self._masks_and_parameters(masks)[0]

    def _select(
        self,
        stage: str | None,
        mask_percentage: object,
        test_task_id: int | None,
        task_id: int | None = None,
    ) -> tuple[Masks | float, int]:
        """Stored masks (test) or the checked ``mask_percentage`` (train/validation), and the task."""
        backbone = self.backbone
        check_stage(stage, _OWNER, required=True)
        if stage == "test":
            if test_task_id is not None and task_id is not None and test_task_id != task_id:
                raise ValueError(
                    f"{_OWNER}: forward got task_id={task_id} and test_task_id={test_task_id}; "
                    f"pass one of them (the task to test on)."
                )
            chosen = test_task_id if test_task_id is not None else task_id
            task = backbone.check_task_id_ready() if chosen is None else chosen
            return self.stored_mask(task), task
        assert stage is not None  # check_stage(required=True)
        task = backbone.check_task_id_ready()
        if task_id is not None and task_id != task:
            raise ValueError(
                f"{_OWNER}: stage {stage!r} runs the current task's subnetwork (task {task}), "
                f"selected from the scores; got task_id={task_id}. Test a stored task with "
                f"stage='test'."
            )
        fraction = check_mask_percentage(mask_percentage, stage, _OWNER)
        if fraction != self.mask_percentage:
            self._warn_empty_masks(fraction)
        self.mask_percentage = fraction
        return fraction, task

    def empty_mask_parameters(self, mask_percentage: float) -> dict[str, int]:
        """Masked parameters of which a top-``mask_percentage`` mask keeps nothing.

        Returns:
            Parameter key (``<layer>/weight``...) -> its element count ``n``, for every parameter
            with ``round(mask_percentage * n) == 0``.
        """
        sizes = {slot.key: getattr(slot.layer, slot.kind).numel() for slot in self._slots}
        return {key: n for key, n in sizes.items() if top_count(mask_percentage, n) == 0}

    def _warn_empty_masks(self, mask_percentage: float) -> None:
        empty = self.empty_mask_parameters(mask_percentage)
        if empty:
            needed = 0.5 / min(empty.values())
            warnings.warn(
                f"{_OWNER}: mask_percentage={mask_percentage:g} keeps no parameter "
                f"of {', '.join(empty)} (round(c * n) = 0), so their masks are all zero and "
                f"those parameters take no part in the task. Raise mask_percentage above "
                f"{needed:.3g}.",
                stacklevel=5,
            )

    def _masks_and_parameters(
        self, selection: Masks | float
    ) -> tuple[Masks, dict[str, tuple[Tensor, Tensor | None]]]:
        """Masks and masked ``(weight, bias)`` per layer, from stored masks or a fraction ``c``.

        With a fraction, all parameters go through one :func:`~clarena.wsn.topc.masked_parameters`
        node, so their gradients are masked and their scores get the straight-through gradient.
        """
        backbone = self.backbone
        masks: Masks = ({}, {})
        if not isinstance(selection, float):
            parameters: dict[str, tuple[Tensor, Tensor | None]] = {}
            for name in backbone.weighted_layer_names:
                layer = backbone.get_layer_by_name(name)
                masked: list[Tensor | None] = []
                for index, kind in enumerate(_KINDS):
                    parameter = getattr(layer, kind)
                    if parameter is None:
                        masked.append(None)
                        continue
                    mask = selection[index][name]
                    masks[index][name] = mask
                    masked.append(parameter * mask)
                weight, bias = masked
                assert weight is not None  # every weighted layer has a weight
                parameters[name] = (weight, bias)
            return masks, parameters
        # Train/validation: every parameter in one autograd node (see masked_parameters).
        score_dicts = (self.weight_score, self.bias_score)
        masked_values, selected = masked_parameters(
            [getattr(slot.layer, slot.kind) for slot in self._slots],
            [score_dicts[slot.position][slot.name] for slot in self._slots],
            selection,
            [slot.hint for slot in self._slots],
            private=True,
        )
        pairs: dict[str, list[Tensor | None]] = {
            name: [None, None] for name in backbone.weighted_layer_names
        }
        for slot, value, mask in zip(self._slots, masked_values, selected, strict=True):
            masks[slot.position][slot.name] = mask
            pairs[slot.name][slot.position] = value
        # Every weighted layer has a weight, so no pair's first entry is left None.
        return masks, {name: (cast(Tensor, weight), bias) for name, (weight, bias) in pairs.items()}

    def stored_mask(self, task_id: int) -> Masks:
        """Task ``task_id``'s stored masks as float 0/1 tensors (see :meth:`get_mask`).

        Raises:
            ValueError: no mask is stored for ``task_id``.
        """
        check_task_id(task_id, _OWNER)
        if task_id not in self.task_masks:
            raise ValueError(
                f"{_OWNER}: no mask is stored for task {task_id} (stored: "
                f"{self.task_masks.task_ids}). Train the task and call store_mask() at its end "
                f"before testing on it, or pass a stored test_task_id."
            )
        backbone = self.backbone
        unpacked = self.task_masks.unpack(task_id)
        masks: Masks = ({}, {})
        for name in backbone.weighted_layer_names:
            layer = backbone.get_layer_by_name(name)
            for kind, target in zip(_KINDS, masks, strict=True):
                parameter = getattr(layer, kind)
                if parameter is not None:
                    target[name] = unpacked[parameter_key(name, kind)].to(parameter.dtype)
        return masks

    def store_mask(self, mask_percentage: float | None = None, task_id: int | None = None) -> Masks:
        """Store the subnetwork the scores select now as a task's mask; add it to the accumulated mask.

        Call once at the end of each task, before testing on it (:meth:`end_task` does).

        Args:
            mask_percentage: ``c`` in ``(0, 1]``; ``None`` reuses the value of the last
                train/validation forward.
            task_id: the task to store the mask for; ``None`` for the current task.

        Returns:
            ``(weight_mask, bias_mask)`` of bool tensors, the stored masks.

        Raises:
            ValueError: no ``mask_percentage`` given and none used yet, or one out of range.
        """
        task_id = self.backbone.check_task_id_ready() if task_id is None else task_id
        check_task_id(task_id, _OWNER)
        if mask_percentage is None and self.mask_percentage is None:
            raise ValueError(
                f"{_OWNER}: store_mask needs mask_percentage (the c in (0, 1] the task trained "
                f"with); no train/validation forward has used one yet."
            )
        fraction = check_mask_percentage(
            self.mask_percentage if mask_percentage is None else mask_percentage, "store", _OWNER
        )
        masks: Masks = ({}, {})
        flat: dict[str, Tensor] = {}
        for kind, scores, target in zip(
            _KINDS, (self.weight_score, self.bias_score), masks, strict=True
        ):
            for name, score in scores.items():
                mask = top_fraction_mask(score.detach().abs(), fraction)
                target[name] = mask
                flat[parameter_key(name, kind)] = mask
        self.task_masks.store(task_id, flat)
        for key, mask in flat.items():
            self.cumulative_masks.get_buffer(key).logical_or_(mask)
        self._refresh_free_masks()
        return masks

    def end_task(self, task_id: int) -> None:
        """Store task ``task_id``'s mask at the ``mask_percentage`` it trained with
        (:meth:`store_mask`)."""
        self.store_mask(task_id=task_id)

    def _refresh_free_masks(self) -> None:
        for key, used in self.cumulative_masks.named_buffers():
            self._free_masks.get_buffer(key).copy_(used.logical_not())

    def cumulative_mask(self) -> Masks:
        """The accumulated mask: bool ``(weight_mask, bias_mask)``, True where a stored task uses
        the parameter. These parameters are frozen while later tasks train."""
        masks: Masks = ({}, {})
        for kind, scores, target in zip(
            _KINDS, (self.weight_score, self.bias_score), masks, strict=True
        ):
            for name in scores:
                target[name] = self.cumulative_masks.get_buffer(parameter_key(name, kind))
        return masks

    def condition_gradients(self) -> None:
        """Zero the gradients of the weights and biases that stored tasks use.

        Call after ``backward()`` and before ``optimizer.step()``, once per optimiser step (after
        all micro-batches of an accumulated step, and after unscaling); with a fresh optimiser
        per task and no weight decay, this keeps every stored task's parameters, hence its test
        outputs, exactly unchanged (for finite gradients: a NaN or infinite gradient times 0 is
        NaN, and such a run has diverged anyway).
        """
        if not self.task_masks.task_ids:
            return
        # The buffers read from the module's dict: get_buffer resolves a path per parameter,
        # which on a small network costs as much as the multiply.
        buffers = self._free_masks._buffers
        grads: list[Tensor] = []
        free: list[Tensor] = []
        for slot in self._slots:
            grad = getattr(slot.layer, slot.kind).grad
            if grad is not None:
                factor = buffers[slot.key]
                assert factor is not None  # registered in _attach for every slot
                grads.append(grad)
                free.append(factor)
        if grads:
            # A multiply by the 0/1 free mask is many times faster than masked_fill_ on CPU; a
            # non-finite gradient of a used parameter stays NaN.
            torch._foreach_mul_(grads, free)
        shared = [p.grad for p in self._shared.values() if p.grad is not None]
        if shared:
            torch._foreach_zero_(shared)

    def protection_factors(self) -> dict[nn.Parameter, Tensor]:
        """WSN's factors for update-space protection: per masked weight and bias, 1 where it is
        free and 0 where a stored task uses it (the free masks :meth:`condition_gradients`
        multiplies by, shared, in the parameter's dtype), and 0 for every parameter of another
        task's independent batch norm and every shared parameter (:meth:`shared_parameters`,
        frozen from the second task on). Empty before any stored task.
        """
        if not self.task_masks.task_ids:
            return {}
        factors: dict[nn.Parameter, Tensor] = {}
        for slot in self._slots:
            parameter = getattr(slot.layer, slot.kind)
            factors[parameter] = self._free_masks.get_buffer(slot.key)
        current = str(self.backbone.task_id)
        for module in self._task_norms:
            for key, norm in module.norms.items():
                if key != current:
                    for parameter in norm.parameters():
                        factors[parameter] = parameter.new_zeros(())
        # Shared by every task (layer norms ...): trained in the first task, frozen after it.
        for parameter in self._shared.values():
            factors[parameter] = parameter.new_zeros(())
        return factors

    def layer_usage(self) -> dict[str, tuple[int, int]]:
        """Per weighted layer, its weights and biases used by some stored task, and all of them."""
        weight_mask, bias_mask = self.cumulative_mask()
        usage = {}
        for name, mask in weight_mask.items():
            used, total = int(mask.count_nonzero()), mask.numel()
            if name in bias_mask:
                used += int(bias_mask[name].count_nonzero())
                total += bias_mask[name].numel()
            usage[name] = (used, total)
        return usage

    def layer_capacity(self) -> dict[str, float]:
        """Deprecated name of :meth:`capacity_per_layer`."""
        warnings.warn(
            "layer_capacity() is deprecated; use capacity_per_layer().",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.capacity_per_layer()

    # ------------------------------------------------------------------ forward

    def layer_forward(self, layer_name: str, layer: nn.Module, input: Tensor) -> Tensor:
        """Run ``layer`` with its weight and bias multiplied by the active masks."""
        if self._forward_parameters is None:
            raise RuntimeError(
                f"{_OWNER}: weighted layers run only inside forward(input, stage, ...), which "
                f"chooses their masks."
            )
        weight, bias = self._forward_parameters[layer_name]
        forward = type(layer).forward
        if forward is nn.Linear.forward:
            return F.linear(input, weight, bias)
        if forward in _CONV_FORWARDS:
            return layer._conv_forward(input, weight, bias)  # type: ignore[operator]
        if isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            # A subclass with its own forward (timm's Conv2dSame pads first): run it as is.
            replaced = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
            output: Tensor = functional_call(layer, replaced, (input,))
            return output
        raise TypeError(
            f"{_OWNER}: weighted layer '{layer_name}' is a {type(layer).__name__}; "
            f"WSN masks only Linear and Conv1d/2d/3d layers."
        )

    def forward(
        self, input: Tensor, stage: str | None, task_id: int | None, step: Mapping[str, Any]
    ) -> BackboneOutput:
        """Extract features through a task's subnetwork.

        Args:
            input: a batch of inputs, shaped as the architecture expects.
            stage: ``'train'`` or ``'validation'`` (the current task's subnetwork, selected from
                the scores) or ``'test'`` (the stored subnetwork of the task tested on).
            task_id: the task of the batch: in test, the task to test on (as ``test_task_id``);
                in train/validation, ``None`` or the current task.
            step: ``mask_percentage``, ``c`` in ``(0, 1]``, the fraction of each layer's
                parameters a subnetwork keeps (required for train and validation, ignored for
                test); ``test_task_id``, the task to test on (``None``: ``task_id``, else the
                current task).

        Returns:
            The feature ``(batch, output_dim)``, the activations, and ``extras`` ``weight_mask``
            / ``bias_mask`` (see :meth:`get_mask`); it unpacks as ``(feature, weight_mask,
            bias_mask, activations)``.

        Raises:
            TypeError: a step argument WSN does not take.
            ValueError: an unknown stage, a missing or out-of-range ``mask_percentage`` in
                train/validation, or a test task without a stored mask.
            RuntimeError: no task has been set up.
        """
        unknown = sorted(set(step) - set(STEP_ARGUMENTS))
        if unknown:
            raise TypeError(
                f"{_OWNER}: forward got unknown step arguments {', '.join(unknown)}; WSN takes "
                f"{', '.join(STEP_ARGUMENTS)}."
            )
        selection, task = self._select(
            stage, step.get("mask_percentage"), step.get("test_task_id"), task_id
        )
        self._select_task_batch_norms(task)
        if self._compiled is not None:
            feature, weight_mask, bias_mask, activations = self._compiled_forward(
                self._compiled, input, selection
            )
        else:
            masks, self._forward_parameters = self._masks_and_parameters(selection)
            try:
                feature, activations = self.backbone._features(input)
            finally:
                self._forward_parameters = None
            weight_mask, bias_mask = masks
        return BackboneOutput(
            feature,
            activations,
            extras={"weight_mask": weight_mask, "bias_mask": bias_mask},
            fields=FIELDS,
        )

    # ------------------------------------------------------------------ torch.compile

    def compile(self, *args: Any, **options: Any) -> None:
        """Compile the forward's tensor core in place with ``torch.compile(**options)``.

        ``backbone.compile(**options)`` calls this. The stage, task and ``mask_percentage``
        checks, the task's batch norm and the unpacking of a stored mask stay eager; what is
        compiled takes only tensors: the input and ``mask_percentage`` as a 0-d tensor
        (train/validation: the top-c% selection of every parameter, with no host
        synchronisation, and the masked layers), or the stored masks (test). So a compiled
        backbone does not recompile across batches, tasks or values of ``mask_percentage``, and
        ``fullgraph=True`` holds. Results equal the eager forward's (the same masks; features up
        to the compiler's floating-point reordering).

        Args:
            options: keyword arguments of ``torch.compile`` (``fullgraph``, ``backend``,
                ``mode``, ``dynamic`` ...).
        """
        self._compiled = _CompiledCores(
            selected=torch.compile(self._selected_core, *args, **options),
            stored=torch.compile(self._stored_core, *args, **options),
        )

    def _compiled_forward(
        self, compiled: _CompiledCores, input: Tensor, selection: Masks | float
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        if isinstance(selection, float):
            bits = self.backbone.get_buffer("_mask_percentage_bits")
            bits.fill_(struct.unpack("<q", struct.pack("<d", selection))[0])
            feature, weight_mask, bias_mask, activations = compiled.selected(input, bits)
            return feature, weight_mask, bias_mask, activations
        feature, activations = compiled.stored(input, selection[0], selection[1])
        return feature, selection[0], selection[1], activations

    def _selected_core(
        self, input: Tensor, mask_percentage_bits: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Train/validation forward from tensors only: ``mask_percentage`` as float64 bits."""
        score_dicts = (self.weight_score, self.bias_score)
        masked, selected = masked_parameters_sync_free(
            [getattr(slot.layer, slot.kind) for slot in self._slots],
            [score_dicts[slot.position][slot.name] for slot in self._slots],
            mask_percentage_bits.view(torch.float64),
        )
        masks: Masks = ({}, {})
        for slot, mask in zip(self._slots, selected, strict=True):
            masks[slot.position][slot.name] = mask
        feature, activations = self._masked_features(input, masked)
        return feature, masks[0], masks[1], activations

    def _stored_core(
        self, input: Tensor, weight_mask: dict[str, Tensor], bias_mask: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Test forward from tensors only: the stored masks (see :meth:`stored_mask`)."""
        masks = (weight_mask, bias_mask)
        masked = [
            getattr(slot.layer, slot.kind) * masks[slot.position][slot.name] for slot in self._slots
        ]
        return self._masked_features(input, masked)

    def _masked_features(
        self, input: Tensor, masked: list[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The backbone's ``_features`` with each slot's parameter replaced by ``masked``."""
        backbone = self.backbone
        pairs: dict[str, list[Tensor | None]] = {
            name: [None, None] for name in backbone.weighted_layer_names
        }
        for slot, value in zip(self._slots, masked, strict=True):
            pairs[slot.name][slot.position] = value
        self._forward_parameters = {
            name: (cast(Tensor, weight), bias) for name, (weight, bias) in pairs.items()
        }
        try:
            return backbone._features(input)
        finally:
            self._forward_parameters = None

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict[str, Any]:
        """The last ``mask_percentage``, saved in the backbone's ``_extra_state``."""
        return {"mask_percentage": self.mask_percentage}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved."""
        self.mask_percentage = state.get("mask_percentage")

    def __getstate__(self) -> dict[str, Any]:
        # The compiled cores are bound to this instance: a copy or an unpickled backbone runs
        # eager until compiled again.
        state = dict(self.__dict__)
        state.pop("_compiled", None)
        return state


def wsn_of(backbone: object) -> WSN:
    """The :class:`WSN` attached to ``backbone`` (built by ``WSNMaskMLP``, ``WSNMaskResNet18`` ...
    or ``backbone.attach(WSN())``), or the method itself.

    Raises:
        TypeError: ``backbone`` carries no WSN.
    """
    return method_of(backbone, WSN, "clarena.backbones.WSNMaskMLP / WSNMaskResNet18 ...")


class _CompiledCores(NamedTuple):
    """The compiled tensor cores of a WSN forward (see :meth:`WSN.compile`)."""

    selected: Any  # (input, mask_percentage_bits) -> (feature, weight_mask, bias_mask, activations)
    stored: Any  # (input, weight_mask, bias_mask) -> (feature, activations)


class _Slot(NamedTuple):
    """One masked parameter: ``getattr(layer, kind)`` of weighted layer ``name``."""

    name: str
    position: int  # 0 for the weight, 1 for the bias (their place in the mask pairs)
    kind: str
    key: str  # parameter_key(name, kind)
    layer: nn.Module
    hint: ThresholdHint


def _refresh_free_masks(module: nn.Module, incompatible_keys: Any) -> None:
    # Registered on the backbone by WSN._attach; a module-level function, so it pickles.
    wsn_of(module)._refresh_free_masks()


def check_mask_percentage(value: object, stage: str, owner: str) -> float:
    """Return ``value`` as a float if it is a valid WSN ``mask_percentage`` (``0 < c <= 1``).

    Raises:
        ValueError: ``value`` is missing, not a number, or outside ``(0, 1]``.
    """
    if value is None:
        raise ValueError(
            f"{owner}: stage {stage!r} needs mask_percentage, the fraction c in (0, 1] of each "
            f"layer's parameters a task's subnetwork keeps (e.g. mask_percentage=0.5); got None."
        )
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < float(value) <= 1:
        hint = (
            f" For {value}% pass {float(value) / 100:g}."
            if isinstance(value, Real) and not isinstance(value, bool) and 1 < float(value) <= 100
            else ""
        )
        raise ValueError(
            f"{owner}: mask_percentage must be a fraction c with 0 < c <= 1 (the share of each "
            f"layer's parameters a subnetwork keeps); got {value!r}.{hint}"
        )
    return float(value)


_CONV_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)


def _is_maskable(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed
