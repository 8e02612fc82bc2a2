"""The HAT-masked backbone: task embeddings, unit masks per stage, stored and combined masks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from clarena.backbones.base import check_stage
from clarena.cl import BatchNormMode, TaskBatchNorm
from clarena.cl.masked import MaskedBackbone
from clarena.hat.mask_store import PackedMaskStore
from clarena.hat.masked_batch_norm import MaskSource, _MaskedBatchNorm

#: Gates turning task embeddings into unit masks. Only HAT's sigmoid is supported.
GATES: tuple[str, ...] = ("sigmoid",)

#: Task-embedding initialisations of :meth:`HATMaskBackbone.initialize_task_embedding`.
EMBEDDING_INIT_MODES: tuple[str, ...] = ("N01", "U01", "U-10", "masked", "unmasked")


def annealed_scale(s_max: float, batch_idx: int, num_batches: int) -> float:
    """HAT's annealed gate scale for training batch ``batch_idx`` of ``num_batches``.

    ``s = 1/s_max + (s_max - 1/s_max) (b - 1) / (B - 1)``, rising from ``1/s_max`` at the first
    batch to ``s_max`` at the last; a task of one batch uses ``s_max``.

    Args:
        s_max: the largest scale (HAT's :math:`s_{max}`, e.g. 400).
        batch_idx: the batch within the epoch, counting ``1..num_batches``.
        num_batches: batches per epoch.

    Raises:
        ValueError: ``s_max`` is not positive, or ``batch_idx`` is outside ``1..num_batches``.
    """
    if not s_max > 0:
        raise ValueError(f"s_max must be positive; got {s_max!r}.")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer; got {num_batches!r}.")
    if isinstance(batch_idx, bool) or not isinstance(batch_idx, int):
        raise ValueError(f"batch_idx must be an integer in 1..{num_batches}; got {batch_idx!r}.")
    if not 1 <= batch_idx <= num_batches:
        raise ValueError(
            f"batch_idx counts 1..num_batches (1..{num_batches}); got {batch_idx}. "
            f"Pass batch_idx + 1 if your loop counts from 0."
        )
    if num_batches == 1:
        return float(s_max)
    return 1 / s_max + (s_max - 1 / s_max) * (batch_idx - 1) / (num_batches - 1)


def zero_subnormal_gates(gate: Tensor) -> Tensor:
    """``gate`` with every value below its dtype's smallest normal number set to 0.

    ``sigmoid(s e)`` is subnormal (below ``torch.finfo(torch.float32).tiny``, about 1.18e-38) for
    ``s e`` in about (-88.7, -87.3] (below, ``exp(-s e)`` overflows and the gate is 0), which a
    large gate scale reaches. Many CPUs process subnormal
    operands tens of times slower, and a masked unit's outputs, their gradients and everything
    computed from them would carry them; a gate that small multiplies a unit's output by less than
    1e-38, far below any value that can change a prediction, so it is made an exact 0 (and passes
    no gradient). This is HAT's one deviation from ``sigmoid(s e)``. A NaN stays NaN.

    Args:
        gate: ``(units,)`` gate values in [0, 1].
    """
    return torch.where(gate < torch.finfo(gate.dtype).tiny, 0.0, gate)


class HATMaskBackbone(MaskedBackbone):
    """A continual-learning backbone whose units are gated by HAT task masks (Serra et al., 2018).

    Every weighted layer ``l`` has a task embedding ``e_l`` with one value per output unit
    (``out_features`` of a linear layer, ``out_channels`` of a convolution), kept in
    :attr:`task_embedding` (an ``nn.ParameterDict`` keyed by layer name). The mask
    ``a_l = sigmoid(s * e_l)`` multiplies the layer's unit outputs after normalisation and before
    the activation (the core :meth:`unit_gate` hook):

    - ``train``: ``s`` anneals over the batches of an epoch (:func:`annealed_scale`);
    - ``validation``: ``s = s_max``;
    - ``test``: the stored binary mask ``1[e_l > 0]`` of ``test_task_id``.

    Only the current task's embedding is kept: it is re-initialised when a new task is set up,
    and a finished task lives on as its stored binary mask (:meth:`store_mask`, one bit per unit),
    which is all the test stage needs. The cumulative mask (elementwise max of the stored masks)
    and the summative mask (their sum) drive the gradient conditioning of
    :mod:`clarena.hat.mechanics`.

    Batch norm (``batch_normalization``): ``None``; ``'shared'`` (one batch norm for all tasks —
    its running statistics keep moving, so earlier tasks' test outputs change); ``'independent'``
    (one batch norm per task, selected by the task a forward runs on: no leak).

    Subclasses build their layers with :meth:`_build_family`, then call :meth:`_init_hat`; see
    :class:`~clarena.hat.HATMaskMLP`. Activations must map 0 to 0 (ReLU, GELU, SiLU, tanh ...):
    a masked unit then contributes exactly nothing downstream.

    :meth:`compile` compiles the mask computation and the masked layers together; the annealed
    scale enters them as a 0-d tensor and the test stage's stored mask as tensors, so one graph
    per training/evaluation mode serves every batch, epoch and task.
    """

    task_embedding: nn.ParameterDict
    mask_store: PackedMaskStore
    # Non-persistent buffers registered in __init__: every stored task's masks combined.
    _cumulative: Tensor
    _summative: Tensor
    #: ``torch.compile`` of the function ``_gated_features``, set by :meth:`compile`.
    _compiled_gated: Callable[..., tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]] | None = (
        None
    )

    def _init_hat(self, gate: str, batch_norm_mode: BatchNormMode) -> None:
        """Set up HAT state once the weighted layers exist (end of a subclass ``__init__``).

        Args:
            gate: must be ``'sigmoid'``.
            batch_norm_mode: the resolved ``batch_normalization`` mode.

        Raises:
            ValueError: another gate.
        """
        owner = type(self).__name__
        if gate not in GATES:
            raise ValueError(
                f"{owner}: gate={gate!r} is not supported; only gate='sigmoid' is supported "
                f"(HAT's mask a = sigmoid(s * e))."
            )
        self.gate: str = gate
        # Layers whose batch norm applies the mask itself (see unit_gate); per-task copies made
        # below are of the same kind.
        self._fused_layers: frozenset[str] = frozenset(
            name
            for name in self.weighted_layer_names
            if isinstance(self.normalization_layer(name), _MaskedBatchNorm)
        )
        self._init_batch_norm(batch_norm_mode)
        self.layer_units: dict[str, int] = {
            name: _units_of(self.get_layer_by_name(name), name, owner)
            for name in self.weighted_layer_names
        }
        self.num_units: int = sum(self.layer_units.values())
        # Filled in order: ParameterDict sorts a plain dict's keys ('layer3/10' < 'layer3/2').
        self.task_embedding = nn.ParameterDict()
        for name, units in self.layer_units.items():
            self.task_embedding[name] = nn.Parameter(torch.zeros(units))
        self.mask_store = PackedMaskStore(self.num_units)
        self.register_buffer("_cumulative", torch.zeros(self.num_units), persistent=False)
        self.register_buffer("_summative", torch.zeros(self.num_units), persistent=False)
        #: Bumped whenever the stored masks change, so derived quantities can be cached.
        self.mask_version: int = 0
        self._active_mask: dict[str, Tensor] | None = None
        self._mask_source = MaskSource()
        self._bind_masked_norms()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def _bind_masked_norms(self) -> None:
        """Let every masked batch norm (per-task ones included) read its layer's mask."""
        for name in self._fused_layers:
            norm = self.normalization_layer(name)
            # _fused_layers holds only layers with a (masked) batch norm.
            assert norm is not None
            norms = norm.norms.values() if isinstance(norm, TaskBatchNorm) else [norm]
            for module in norms:
                assert isinstance(module, _MaskedBatchNorm)  # only those are in _fused_layers
                module.hat_layer_name = name
                module.hat_mask_source = self._mask_source

    # ------------------------------------------------------------------ tasks and embeddings

    def setup_task_id(self, task_id: int) -> None:
        """Make ``task_id`` the current task.

        A task not seen before gets a fresh ``N01`` task embedding (call
        :meth:`initialize_task_embedding` afterwards for another mode) and, with independent
        batch norm, its own batch norm. Create a new optimiser after this call.
        """
        is_new = task_id not in self.processed_task_ids
        super().setup_task_id(task_id)
        if self._task_norms:
            self._bind_masked_norms()
        if is_new:
            self.initialize_task_embedding("N01")

    def initialize_task_embedding(self, mode: str) -> None:
        """Re-initialise the current task embedding in place.

        Args:
            mode: ``'N01'`` standard normal, ``'U01'`` uniform on [0, 1], ``'U-10'`` uniform on
                [-1, 0], ``'masked'`` all -1 (units start closed), ``'unmasked'`` all 1.

        Raises:
            ValueError: an unknown mode.
        """
        if mode not in EMBEDDING_INIT_MODES:
            raise ValueError(
                f"{type(self).__name__}: unknown task embedding init mode {mode!r}; use one of "
                f"{', '.join(repr(m) for m in EMBEDDING_INIT_MODES)}."
            )
        with torch.no_grad():
            for embedding in self.task_embedding.values():
                if mode == "N01":
                    nn.init.normal_(embedding, 0.0, 1.0)
                elif mode == "U01":
                    nn.init.uniform_(embedding, 0.0, 1.0)
                elif mode == "U-10":
                    nn.init.uniform_(embedding, -1.0, 0.0)
                else:
                    embedding.fill_(-1.0 if mode == "masked" else 1.0)

    # ------------------------------------------------------------------ masks

    def get_mask(
        self,
        stage: str,
        s_max: float | None = None,
        batch_idx: int | None = None,
        num_batches: int | None = None,
        test_task_id: int | None = None,
    ) -> dict[str, Tensor]:
        """The unit mask of each weighted layer for ``stage`` (arguments as for :meth:`forward`).

        Returns:
            Layer name → ``(units,)`` mask: ``sigmoid(s * e)`` for train/validation (in the
            autograd graph of the embedding), the stored 0/1 mask for test.
        """
        scale, stored, _ = self._mask_inputs(stage, s_max, batch_idx, num_batches, test_task_id)
        return stored if scale is None else self._embedding_masks(scale)

    def _mask_inputs(
        self,
        stage: str,
        s_max: float | None,
        batch_idx: int | None,
        num_batches: int | None,
        test_task_id: int | None,
    ) -> tuple[float | None, dict[str, Tensor], int]:
        """Check the stage's arguments; return ``(scale, stored, task_id)``.

        ``scale`` is the gate scale ``s`` of the embedding masks (train, validation) or ``None``
        for the test stage, whose mask is ``stored`` (empty otherwise); ``task_id`` is the task
        the forward runs on.
        """
        owner = type(self).__name__
        check_stage(stage, owner, required=True)
        current = self.check_task_id_ready()
        if stage == "test":
            task_id = current if test_task_id is None else test_task_id
            return None, self.stored_mask(task_id), task_id
        if test_task_id is not None and test_task_id != current:
            raise ValueError(
                f"{owner}: stage {stage!r} runs the current task {current} with its embedding; "
                f"got test_task_id={test_task_id}. Use stage 'test' for other tasks."
            )
        if stage == "train":
            missing = [
                name
                for name, value in (
                    ("s_max", s_max),
                    ("batch_idx", batch_idx),
                    ("num_batches", num_batches),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"{owner}: stage 'train' needs s_max, batch_idx and num_batches to anneal the "
                    f"mask; missing {', '.join(missing)}. Call forward(input, 'train', "
                    f"s_max=..., batch_idx=..., num_batches=...) with batch_idx counting "
                    f"1..num_batches."
                )
            # All three were checked just above.
            assert s_max is not None
            assert batch_idx is not None
            assert num_batches is not None
            s = annealed_scale(s_max, batch_idx, num_batches)
        else:
            if s_max is None:
                raise ValueError(
                    f"{owner}: stage 'validation' needs s_max (the mask is sigmoid(s_max * e)); "
                    f"call forward(input, 'validation', s_max=...)."
                )
            s = float(s_max)
        return s, {}, current

    def _embedding_masks(self, scale: float | Tensor) -> dict[str, Tensor]:
        """``sigmoid(scale * e)`` per layer, subnormal gates zeroed (:func:`zero_subnormal_gates`);
        ``scale`` a float or a 0-d tensor (compiled)."""
        # sigmoid per layer, so a mask is torch.sigmoid(s * e) of its layer bit for bit (a flat
        # tensor would put some units through the vectorised kernel, which rounds differently);
        # the zeroing on all units at once.
        embeddings = list(self.task_embedding.values())
        masks = torch._foreach_sigmoid(torch._foreach_mul(embeddings, scale))
        flat = zero_subnormal_gates(torch.cat(masks))
        sizes = [embedding.numel() for embedding in embeddings]
        return dict(zip(self.task_embedding.keys(), flat.split(sizes), strict=True))

    @property
    def stored_task_ids(self) -> list[int]:
        """Tasks whose binary mask is stored, in storing order."""
        return self.mask_store.task_ids

    def store_mask(self, task_id: int | None = None) -> None:
        """Store the binary mask ``1[e > 0]`` of the current task (call when a task is done).

        Updates the cumulative and summative masks. Storing a task again replaces its mask.

        Args:
            task_id: the task to store it as; must be ``None`` or the current task.

        Raises:
            ValueError: ``task_id`` is not the current task.
        """
        current = self.check_task_id_ready()
        if task_id is not None and task_id != current:
            raise ValueError(
                f"{type(self).__name__}: store_mask stores the current task's embedding (task "
                f"{current}); got task_id={task_id}."
            )
        with torch.no_grad():
            flat = torch.cat([self.task_embedding[name].detach() > 0 for name in self.layer_units])
        self.mask_store.store(current, flat)
        self._refresh_combined_masks()

    def stored_mask(self, task_id: int) -> dict[str, Tensor]:
        """Task ``task_id``'s stored binary mask: layer name → ``(units,)`` float 0/1 tensor.

        Raises:
            ValueError: the task has no stored mask.
        """
        if task_id not in self.mask_store:
            raise ValueError(
                f"{type(self).__name__}: task {task_id} has no stored mask (tasks with stored "
                f"masks: {self.stored_task_ids}). Train task {task_id} and call store_mask() "
                f"before testing on it, or pass the test_task_id of a trained task."
            )
        flat = self.mask_store.load(task_id).to(self._cumulative.dtype)
        return self._split(flat)

    def cumulative_mask(self) -> dict[str, Tensor]:
        """Elementwise max of the stored masks (all zeros before any task is stored).

        Returns:
            Layer name → ``(units,)`` float 0/1 tensor; during task ``t`` (not yet stored) this is
            HAT's :math:`a^{<t}`.
        """
        return self._split(self._cumulative)

    def summative_mask(self) -> dict[str, Tensor]:
        """Sum of the stored masks (AdaHAT's :math:`m^{<t,sum}`): layer name → ``(units,)``."""
        return self._split(self._summative)

    def _layer_usage(self) -> dict[str, tuple[int, int]]:
        """Per layer, units used by some stored task (cumulative mask is 1) and all its units."""
        return {
            name: (int(mask.count_nonzero()), mask.numel())
            for name, mask in self.cumulative_mask().items()
        }

    def _split(self, flat: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.layer_units, flat.split(list(self.layer_units.values())), strict=True))

    def _refresh_combined_masks(self) -> None:
        self.mask_version += 1
        device = self._cumulative.device
        self.mask_store.to(device)
        stacked = self.mask_store.stacked().to(device=device, dtype=self._cumulative.dtype)
        if stacked.shape[0] == 0:
            self._cumulative = torch.zeros_like(self._cumulative)
            self._summative = torch.zeros_like(self._summative)
        else:
            self._cumulative = stacked.amax(dim=0)
            self._summative = stacked.sum(dim=0)

    # ------------------------------------------------------------------ forward

    def normalization_layer(self, layer_name: str) -> nn.Module | None:
        """The normalisation module right after weighted layer ``layer_name``, if any.

        Gradient conditioning uses it to protect shared batch-norm affine parameters.
        """
        return None

    def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
        """Multiply the active mask of ``layer_name`` into ``hidden`` (``(batch, units, ...)``).

        Layers followed by batch norm had the mask folded into the batch norm's affine transform
        (:mod:`clarena.hat.masked_batch_norm`), which is the same function computed cheaper.
        """
        if layer_name in self._fused_layers:
            return hidden
        if self._active_mask is None:
            raise RuntimeError(
                f"{type(self).__name__}: no mask is active; run the network through forward()."
            )
        mask = self._active_mask[layer_name]
        if hidden.ndim > 2:
            mask = mask.view(-1, *(1,) * (hidden.ndim - 2))
        if mask.dtype != hidden.dtype:
            mask = mask.to(hidden.dtype)
        return hidden * mask

    def forward(  # type: ignore[override]
        self,
        input: Tensor,
        stage: str,
        s_max: float | None = None,
        batch_idx: int | None = None,
        num_batches: int | None = None,
        test_task_id: int | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Extract masked features.

        Args:
            input: a batch of inputs, shaped as the architecture expects.
            stage: ``'train'`` (needs ``s_max``, ``batch_idx``, ``num_batches``), ``'validation'``
                (needs ``s_max``) or ``'test'`` (uses the stored mask of ``test_task_id``, the
                current task if ``None``).
            s_max: the largest gate scale.
            batch_idx: the training batch within the epoch, counting ``1..num_batches``.
            num_batches: training batches per epoch.
            test_task_id: the task to test on.

        Returns:
            ``(feature, mask, activations)``: the ``(batch, output_dim)`` feature, layer name →
            ``(units,)`` mask used, and each weighted layer's hidden output.

        Raises:
            ValueError: a missing argument for the stage, or a test task without stored mask.
        """
        scale, stored, task_id = self._mask_inputs(
            stage, s_max, batch_idx, num_batches, test_task_id
        )
        self._select_task_batch_norms(task_id)
        if self._compiled_gated is None:
            return self._gated_features(input, scale, stored)
        # A tensor, not a float: a Python float would be baked into the graph and guarded on.
        scale_tensor = None
        if scale is not None:
            like = self._cumulative
            scale_tensor = torch.full((), scale, dtype=like.dtype, device=like.device)
        return self._compiled_gated(self, input, scale_tensor, stored)

    def compile(self, *args: Any, **options: Any) -> None:
        """Compile in place: the mask computation and the masked layers (``torch.compile``).

        The stage checks, the choice of the task's stored mask and batch norm, and the annealed
        scale arithmetic stay eager; the scale enters the compiled function as a 0-d tensor and
        the stored mask as tensors, so it is not recompiled across batches, epochs or tasks.
        See :meth:`clarena.backbones.Backbone.compile`.
        """
        self._compiled_gated = torch.compile(type(self)._gated_features, *args, **options)

    def _gated_features(
        self, input: Tensor, scale: float | Tensor | None, stored: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """``(feature, mask, activations)`` of ``input`` under the embedding masks at ``scale``,
        or under ``stored`` if ``scale`` is ``None``."""
        mask = stored if scale is None else self._embedding_masks(scale)
        self._active_mask = self._mask_source.mask = mask
        try:
            feature, activations = self._features(input)
        finally:
            self._active_mask = self._mask_source.mask = None
        return feature, mask, activations


def _refresh_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    assert isinstance(module, HATMaskBackbone)  # registered by HATMaskBackbone itself
    module._refresh_combined_masks()
    module._bind_masked_norms()


def _units_of(layer: nn.Module, name: str, owner: str) -> int:
    for attribute in ("out_features", "out_channels"):
        units = getattr(layer, attribute, None)
        if isinstance(units, int):
            return units
    raise TypeError(
        f"{owner}: weighted layer '{name}' ({type(layer).__name__}) has neither out_features nor "
        f"out_channels, so its units cannot be masked."
    )


def check_zero_preserving(activation: nn.Module, owner: str) -> None:
    """Raise ``ValueError`` unless ``activation`` maps 0 to 0, which HAT's masking relies on."""
    with torch.no_grad():
        value = activation(torch.zeros(1, 1, 1, 1))
    if value.abs().max().item() != 0 or not math.isfinite(value.sum().item()):
        raise ValueError(
            f"{owner}: the activation {type(activation).__name__} maps 0 to "
            f"{value.flatten()[0].item()}; HAT needs an activation with f(0) = 0 (ReLU, GELU, "
            f"SiLU, tanh, ...) so a masked unit passes nothing on to later layers."
        )
