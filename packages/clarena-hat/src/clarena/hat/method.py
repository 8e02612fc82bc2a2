"""HAT as a mask method attached to a backbone: task embeddings, unit masks per stage, stored and
combined masks, per-task batch norm."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from clarena.backbones.base import check_stage
from clarena.backbones.output import BackboneOutput
from clarena.cl import (
    BatchNormMode,
    MaskMethod,
    TaskBatchNorm,
    check_uncovered_mode,
    make_batch_norm_task_independent,
    method_of,
    resolve_batch_norm_mode,
    shared_parameters,
)
from clarena.hat._family import activations_to_check, normalization_paths
from clarena.hat.mask_store import PackedMaskStore
from clarena.hat.masked_batch_norm import (
    MaskedBatchNorm1d,
    MaskedBatchNorm2d,
    _MaskedBatchNorm,
    masked_copy,
)

if TYPE_CHECKING:
    from clarena.cl import CLBackbone

#: Gates turning task embeddings into unit masks. Only HAT's sigmoid is supported.
GATES: tuple[str, ...] = ("sigmoid",)

#: Task-embedding initialisations of :meth:`HAT.initialize_task_embedding`.
EMBEDDING_INIT_MODES: tuple[str, ...] = ("N01", "U01", "U-10", "masked", "unmasked")

#: The step arguments :meth:`HAT.forward` takes (SPEC §4, plus the algorithm's ``scale``).
STEP_ARGUMENTS: tuple[str, ...] = ("scale", "s_max", "batch_idx", "num_batches", "test_task_id")

#: Batch norms HAT folds its mask into (others, such as timm's routed norms, gate by unit_gate).
_FOLDABLE: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    MaskedBatchNorm1d,
    MaskedBatchNorm2d,
)

_Gated = Callable[..., tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]]


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

    One ``threshold`` call (values at or below the dtype's largest subnormal become 0), in the
    autograd graph with one cheap backward node.

    Args:
        gate: ``(units,)`` gate values in [0, 1].
    """
    threshold = _LARGEST_SUBNORMAL.get(gate.dtype)
    if threshold is None:
        threshold = _largest_subnormal(gate.dtype)
    return torch.threshold(gate, threshold, 0.0)


def _largest_subnormal(dtype: torch.dtype) -> float:
    """The largest subnormal number of floating ``dtype``: ``tiny (1 - eps)``, exact in float64,
    so ``x <= it`` is ``x < tiny`` in that dtype."""
    info = torch.finfo(dtype)
    return info.tiny * (1 - info.eps)


#: :func:`_largest_subnormal` of the floating dtypes, computed once (``torch.finfo`` per forward
#: costs more than the threshold itself).
_LARGEST_SUBNORMAL: dict[torch.dtype, float] = {
    dtype: _largest_subnormal(dtype)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


class HAT(MaskMethod):
    """Hard attention to the task (Serra et al., 2018), attached to a continual-learning backbone.

    ``CLMLP(...).attach(HAT())`` gives every weighted layer ``l`` a task embedding ``e_l`` with
    one value per output unit (``out_features`` of a linear layer, ``out_channels`` of a
    convolution), kept in the backbone's ``task_embedding`` (an ``nn.ParameterDict`` keyed by
    layer name). The mask ``a_l = sigmoid(s * e_l)`` multiplies the layer's unit outputs after
    normalisation and before the activation (the backbone's ``unit_gate`` hook):

    - ``train``: the gate scale ``s`` the algorithm passes as ``scale`` (once per step, usually
      :func:`annealed_scale`), or the published ``s_max``, ``batch_idx``, ``num_batches``;
    - ``validation``: ``s = s_max`` (or ``scale``);
    - ``test``: the stored binary mask ``1[e_l > 0]`` of ``test_task_id`` (or ``task_id``).

    Only the current task's embedding is kept: it is re-initialised when a new task is set up,
    and a finished task lives on as its stored binary mask (:meth:`end_task`, one bit per unit),
    which is all the test stage needs. The cumulative mask (elementwise max of the stored masks)
    and the summative mask (their sum) drive the gradient conditioning of
    :mod:`clarena.hat.mechanics`.

    Batch norm (``batch_normalization``, for a backbone that has batch norms): ``'shared'`` (one
    for all tasks — its running statistics keep moving, so earlier tasks' test outputs change) or
    ``'independent'`` (one per task, selected by the task a forward runs on: no leak); ``None``
    refuses a backbone with batch norms. The mask is folded into each batch norm's affine
    transform (:mod:`clarena.hat.masked_batch_norm`): attaching replaces the backbone's
    ``BatchNorm1d``/``BatchNorm2d`` by masked ones with the same parameters and buffers.

    Activations must map 0 to 0 (ReLU, GELU, SiLU, tanh ...): a masked unit then contributes
    exactly nothing downstream. Every weighted layer needs ``out_features`` or ``out_channels``
    and a weight.

    State on the backbone (its ``state_dict`` keys, as clarena-hat 0.1 saved them):
    ``task_embedding.<layer>``, ``mask_store.tasks.<t>.units`` and the per-task batch norms.

    Args:
        gate: the mask gate; only ``'sigmoid'`` is supported.
        batch_normalization: ``'independent'`` (default), ``'shared'``/``True`` or
            ``None``/``False``.
        uncovered_parameters: trainable parameters outside any weighted or normalisation layer
            (a timm ViT's ``cls_token`` and ``pos_embed``, ConvNeXt's layer scale): ``'refuse'``
            the backbone at attach, naming them (default); ``'first_task'``: trained in the
            first task, frozen after it; ``'freeze'``: never trained. Layer/group-norm affine
            parameters are always shared that way (:meth:`shared_parameters`).
    """

    name: ClassVar[str] = "hat"
    state_names: ClassVar[tuple[str, ...]] = ("task_embedding", "mask_store")
    backbone_api: ClassVar[tuple[str, ...]] = (
        "initialize_task_embedding",
        "get_mask",
        "store_mask",
        "stored_mask",
        "cumulative_mask",
        "summative_mask",
        "capacity",
        "capacity_per_layer",
    )

    #: The unit masks of the forward pass in progress (read by the masked batch norms).
    active_mask: dict[str, Tensor] | None = None
    #: ``torch.compile`` of :func:`_gated_features`, set by :meth:`compile`.
    _compiled_gated: _Gated | None = None

    def __init__(
        self,
        gate: str = "sigmoid",
        batch_normalization: str | bool | None = "independent",
        uncovered_parameters: str = "refuse",
    ) -> None:
        if gate not in GATES:
            raise ValueError(
                f"HAT: gate={gate!r} is not supported; only gate='sigmoid' is supported "
                f"(HAT's mask a = sigmoid(s * e))."
            )
        self.gate: str = gate
        #: The ``batch_normalization`` asked for; :attr:`batch_norm_mode` is what applies (``None``
        #: for a backbone without batch norms).
        self.requested_batch_norm_mode: BatchNormMode = resolve_batch_norm_mode(
            batch_normalization, "HAT"
        )
        self.batch_norm_mode: BatchNormMode = None
        #: What happens to trainable parameters outside weighted and normalisation layers
        #: (:data:`clarena.cl.UNCOVERED_MODES`).
        self.uncovered_parameters: str = check_uncovered_mode(uncovered_parameters, "HAT")
        self._shared: dict[str, nn.Parameter] = {}
        #: Weighted layers whose batch norm applies the mask (folded into its affine transform);
        #: the others are gated by :meth:`unit_gate` (timm's routed norms call it themselves).
        self._fused: set[str] = set()
        #: Bumped whenever the stored masks change, so derived quantities can be cached.
        self.mask_version: int = 0
        #: The cumulative-mask buffer and its per-layer views (:meth:`cumulative_mask`), reused
        #: while the buffer is the same tensor.
        self._cumulative_views: tuple[Tensor, dict[str, Tensor]] | None = None
        self.layer_units: dict[str, int] = {}
        self.num_units: int = 0

    # ------------------------------------------------------------------ attach

    def _attach(self, backbone: CLBackbone) -> None:
        owner = type(backbone).__name__
        for activation in activations_to_check(backbone):
            check_zero_preserving(activation, owner)
        self.layer_units = {
            name: _units_of(backbone.get_layer_by_name(name), name, owner)
            for name in backbone.weighted_layer_names
        }
        self.num_units = sum(self.layer_units.values())
        self._norm_paths = normalization_paths(backbone, owner)
        has_norms = any(path is not None for path in self._norm_paths.values()) or any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()
        )
        if has_norms and self.requested_batch_norm_mode is None:
            raise ValueError(
                f"{owner}: the backbone has batch norms but HAT got batch_normalization=None; "
                f"pass batch_normalization='independent' (one per task) or 'shared'."
            )
        self.batch_norm_mode = self.requested_batch_norm_mode if has_norms else None
        independent = self.batch_norm_mode == "independent"
        # Checked before the backbone changes, so a refusal leaves it as it was.
        covered = {
            id(p)
            for name in backbone.weighted_layer_names
            for p in backbone.get_layer_by_name(name).parameters()
        }
        for path in self._norm_paths.values():
            if path is not None:
                covered.update(id(p) for p in backbone.get_submodule(path).parameters())
        if independent:
            covered.update(
                id(p)
                for m in backbone.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for p in m.parameters()
            )
        self._shared = shared_parameters(backbone, covered, "HAT", self.uncovered_parameters)
        self._fused = set()
        # A timm backbone's per-task batch norms start from its (pretrained) ones.
        keep_state = bool(getattr(backbone, "per_task_norms_keep_state", False))
        for name, path in self._norm_paths.items():
            if path is None:
                continue
            norm = backbone.get_submodule(path)
            replacement: nn.Module = norm
            if type(norm) in _FOLDABLE:
                assert isinstance(norm, nn.modules.batchnorm._BatchNorm)
                replacement = masked_copy(norm)
                self._fused.add(name)
            if independent and isinstance(replacement, nn.modules.batchnorm._BatchNorm):
                replacement = TaskBatchNorm(replacement, keep_state)
            if replacement is not norm:
                parent, _, child = path.rpartition(".")
                setattr(backbone.get_submodule(parent), child, replacement)
        if independent:
            # Batch norms no gate follows (on a residual sum ...) get per-task copies as well.
            make_batch_norm_task_independent(backbone, keep_state)
        self.task_norms: tuple[TaskBatchNorm, ...] = tuple(
            m for m in backbone.modules() if isinstance(m, TaskBatchNorm)
        )
        # Filled in order: ParameterDict sorts a plain dict's keys ('layer3/10' < 'layer3/2').
        embedding = nn.ParameterDict()
        for name, units in self.layer_units.items():
            embedding[name] = nn.Parameter(torch.zeros(units))
        backbone.add_module("task_embedding", embedding)
        backbone.add_module("mask_store", PackedMaskStore(self.num_units))
        backbone.register_buffer("_cumulative", torch.zeros(self.num_units), persistent=False)
        backbone.register_buffer("_summative", torch.zeros(self.num_units), persistent=False)
        self._bind_masked_norms()
        backbone.register_load_state_dict_post_hook(_refresh_after_load)

    def _bind_masked_norms(self) -> None:
        """Let every masked batch norm (per-task ones included) read its layer's mask."""
        for name in self.weighted_layer_names:
            norm = self.normalization_layer(name)
            norms = norm.norms.values() if isinstance(norm, TaskBatchNorm) else [norm]
            for module in norms:
                if isinstance(module, _MaskedBatchNorm):
                    module.hat_layer_name = name
                    module.hat = self

    # ------------------------------------------------------------------ backbone state

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters no mask ties to units, trained in the first task and frozen from the second
        on: layer/group-norm affine parameters, batch norms no gate follows under
        ``batch_normalization='shared'``, and with ``uncovered_parameters='first_task'`` those
        outside any layer (see :mod:`clarena.cl.shared_parameters`)."""
        return dict(self._shared)

    @property
    def weighted_layer_names(self) -> list[str]:
        """The backbone's weighted layers, input to output."""
        return self.backbone.weighted_layer_names

    @property
    def task_embedding(self) -> nn.ParameterDict:
        """Layer name → ``(units,)`` task embedding of the current task (on the backbone)."""
        embedding = self.backbone.task_embedding
        assert isinstance(embedding, nn.ParameterDict)  # registered by _attach
        return embedding

    @property
    def mask_store(self) -> PackedMaskStore:
        """The stored binary masks, one bit per unit per task (on the backbone)."""
        store = self.backbone.mask_store
        assert isinstance(store, PackedMaskStore)  # registered by _attach
        return store

    def _buffer(self, name: str) -> Tensor:
        # Read through the backbone each time: .to() and .double() replace buffers.
        return self.backbone.get_buffer(name)

    @property
    def fused_layers(self) -> frozenset[str]:
        """Weighted layers whose batch norm applies the mask (folded into its affine transform)."""
        return frozenset(self._fused)

    def normalization_layer(self, layer_name: str) -> nn.Module | None:
        """The batch norm right after weighted layer ``layer_name`` (a :class:`TaskBatchNorm`
        with independent batch norm), or ``None``.

        Gradient conditioning uses it to protect shared batch-norm affine parameters.
        """
        if layer_name not in self._norm_paths:
            self.backbone._check_layer_name(layer_name)  # raises KeyError naming the layers
        path = self._norm_paths[layer_name]
        return None if path is None else self.backbone.get_submodule(path)

    # ------------------------------------------------------------------ tasks and embeddings

    def setup_task(self, task_id: int, is_new: bool) -> None:
        """A task not seen before gets a fresh ``N01`` task embedding (call
        :meth:`initialize_task_embedding` afterwards for another mode); with independent batch
        norm every task has its own. Create a new optimiser after this."""
        for norm in self.task_norms:
            norm.select(task_id, create=True)
        if self.task_norms:
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
                f"{self._owner}: unknown task embedding init mode {mode!r}; use one of "
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

    @property
    def _owner(self) -> str:
        return type(self.backbone).__name__ if self._backbone is not None else "HAT"

    # ------------------------------------------------------------------ masks

    def get_mask(
        self,
        stage: str,
        s_max: float | None = None,
        batch_idx: int | None = None,
        num_batches: int | None = None,
        test_task_id: int | None = None,
        scale: float | None = None,
    ) -> dict[str, Tensor]:
        """The unit mask of each weighted layer for ``stage`` (arguments as for :meth:`forward`).

        Returns:
            Layer name → ``(units,)`` mask: ``sigmoid(s * e)`` for train/validation (in the
            autograd graph of the embedding), the stored 0/1 mask for test.
        """
        step = {
            "s_max": s_max,
            "batch_idx": batch_idx,
            "num_batches": num_batches,
            "test_task_id": test_task_id,
            "scale": scale,
        }
        s, stored, _ = self._mask_inputs(
            stage, None, {k: v for k, v in step.items() if v is not None}
        )
        return stored if s is None else self._embedding_masks(s)

    def _mask_inputs(
        self, stage: str | None, task_id: int | None, step: Mapping[str, Any]
    ) -> tuple[float | None, dict[str, Tensor], int]:
        """Check the stage's arguments; return ``(scale, stored, task_id)``.

        ``scale`` is the gate scale ``s`` of the embedding masks (train, validation) or ``None``
        for the test stage, whose mask is ``stored`` (empty otherwise); ``task_id`` is the task
        the forward runs on.
        """
        owner = self._owner
        unknown = [name for name in step if name not in STEP_ARGUMENTS]
        if unknown:
            nearest = difflib.get_close_matches(unknown[0], STEP_ARGUMENTS, n=1, cutoff=0.5)
            hint = f" Did you mean '{nearest[0]}'?" if nearest else ""
            raise TypeError(
                f"{owner}.forward got an unknown step argument '{unknown[0]}'.{hint} HAT takes: "
                f"{', '.join(STEP_ARGUMENTS)}."
            )
        check_stage(stage, owner, required=True)
        current = self.backbone.check_task_id_ready()
        test_task_id = step.get("test_task_id")
        if task_id is not None and test_task_id is not None and task_id != test_task_id:
            raise ValueError(
                f"{owner}: got task_id={task_id} and test_task_id={test_task_id}; pass one of them."
            )
        requested = test_task_id if test_task_id is not None else task_id
        if stage == "test":
            run = current if requested is None else requested
            return None, self.stored_mask(run), run
        if requested is not None and requested != current:
            raise ValueError(
                f"{owner}: stage {stage!r} runs the current task {current} with its embedding; "
                f"got test_task_id={requested}. Use stage 'test' for other tasks."
            )
        scale = step.get("scale")
        if scale is not None:
            clashing = [name for name in ("batch_idx", "num_batches") if name in step]
            if clashing:
                raise ValueError(
                    f"{owner}: got scale and {', '.join(clashing)}; pass either the gate scale "
                    f"(scale=...) or what it is annealed from (s_max, batch_idx, num_batches)."
                )
            if isinstance(scale, bool) or not isinstance(scale, Real) or not float(scale) > 0:
                raise ValueError(f"{owner}: scale must be a positive number; got {scale!r}.")
            return float(scale), {}, current
        s_max = step.get("s_max")
        if stage == "train":
            missing = [
                name for name in ("s_max", "batch_idx", "num_batches") if step.get(name) is None
            ]
            if missing:
                raise ValueError(
                    f"{owner}: stage 'train' needs s_max, batch_idx and num_batches to anneal the "
                    f"mask, or the gate scale itself; missing {', '.join(missing)}. Call "
                    f"forward(input, 'train', s_max=..., batch_idx=..., num_batches=...) with "
                    f"batch_idx counting 1..num_batches, or forward(input, 'train', scale=...)."
                )
            assert s_max is not None  # checked just above
            return annealed_scale(s_max, step["batch_idx"], step["num_batches"]), {}, current
        if s_max is None:
            raise ValueError(
                f"{owner}: stage 'validation' needs s_max (the mask is sigmoid(s_max * e)); "
                f"call forward(input, 'validation', s_max=...)."
            )
        return float(s_max), {}, current

    def _embedding_masks(self, scale: float | Tensor) -> dict[str, Tensor]:
        """``sigmoid(scale * e)`` on all layers' units at once, subnormal gates zeroed
        (:func:`zero_subnormal_gates`), split into the layers' ``(units,)`` masks; ``scale`` a
        float or a 0-d tensor (compiled).

        One ``sigmoid`` call over the concatenated embeddings: a gate can differ in the last bit
        from a per-layer ``torch.sigmoid`` (the kernel's vectorised and scalar paths round
        differently, and which units each takes depends on the tensor), never by more.
        """
        # One node per operation for all layers, instead of one per layer and operation. (A
        # custom autograd.Function doing all of it in one node was measured slower in eager:
        # its Python forward and backward cost more than the nodes it saves.)
        embeddings = self._embeddings_by_layer
        flat = zero_subnormal_gates(torch.sigmoid(torch.cat(list(embeddings.values())) * scale))
        sizes = list(self.layer_units.values())
        return dict(zip(embeddings, flat.split_with_sizes(sizes), strict=True))

    @property
    def _embeddings_by_layer(self) -> dict[str, Tensor]:
        """Layer name → task embedding, in layer order: the ``task_embedding`` dict's own
        mapping, read per step without ``ParameterDict.values()``'s attribute lookup per entry."""
        # A ParameterDict holds no None entry.
        return self.task_embedding._parameters  # type: ignore[return-value]

    @property
    def stored_task_ids(self) -> list[int]:
        """Tasks whose binary mask is stored, in storing order."""
        return self.mask_store.task_ids

    def end_task(self, task_id: int) -> None:
        """Store task ``task_id``'s binary mask (it must be the current task): :meth:`store_mask`."""
        self.store_mask(task_id)

    def store_mask(self, task_id: int | None = None) -> None:
        """Store the binary mask ``1[e > 0]`` of the current task (call when a task is done).

        Updates the cumulative and summative masks. Storing a task again replaces its mask.

        Args:
            task_id: the task to store it as; must be ``None`` or the current task.

        Raises:
            ValueError: ``task_id`` is not the current task.
        """
        current = self.backbone.check_task_id_ready()
        if task_id is not None and task_id != current:
            raise ValueError(
                f"{self._owner}: store_mask stores the current task's embedding (task "
                f"{current}); got task_id={task_id}."
            )
        embedding = self.task_embedding
        with torch.no_grad():
            flat = torch.cat([embedding[name].detach() > 0 for name in self.layer_units])
        self.mask_store.store(current, flat)
        self._refresh_combined_masks()

    def stored_mask(self, task_id: int) -> dict[str, Tensor]:
        """Task ``task_id``'s stored binary mask: layer name → ``(units,)`` float 0/1 tensor.

        Raises:
            ValueError: the task has no stored mask.
        """
        if task_id not in self.mask_store:
            raise ValueError(
                f"{self._owner}: task {task_id} has no stored mask (tasks with stored "
                f"masks: {self.stored_task_ids}). Train task {task_id} and call store_mask() "
                f"(end_task) before testing on it, or pass the test_task_id of a trained task."
            )
        flat = self.mask_store.load(task_id).to(self._buffer("_cumulative").dtype)
        return self._split(flat)

    def cumulative_mask(self) -> dict[str, Tensor]:
        """Elementwise max of the stored masks (all zeros before any task is stored).

        Returns:
            Layer name → ``(units,)`` float 0/1 tensor; during task ``t`` (not yet stored) this is
            HAT's :math:`a^{<t}`.
        """
        cumulative = self.backbone._buffers["_cumulative"]
        assert cumulative is not None  # registered by _attach
        cached = self._cumulative_views
        if cached is None or cached[0] is not cumulative:
            cached = (cumulative, self._split(cumulative))
            # Views made in inference mode cannot be used in place outside it: not kept.
            if not torch.is_inference_mode_enabled():
                self._cumulative_views = cached
        return dict(cached[1])

    def summative_mask(self) -> dict[str, Tensor]:
        """Sum of the stored masks (AdaHAT's :math:`m^{<t,sum}`): layer name → ``(units,)``."""
        return self._split(self._buffer("_summative"))

    def layer_usage(self) -> dict[str, tuple[int, int]]:
        """Per layer, units used by some stored task (cumulative mask is 1) and all its units."""
        return {
            name: (int(mask.count_nonzero()), mask.numel())
            for name, mask in self.cumulative_mask().items()
        }

    def _split(self, flat: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.layer_units, flat.split(list(self.layer_units.values())), strict=True))

    def _refresh_combined_masks(self) -> None:
        self.mask_version += 1
        backbone = self.backbone
        reference = self._buffer("_cumulative")
        self.mask_store.to(reference.device)
        stacked = self.mask_store.stacked().to(device=reference.device, dtype=reference.dtype)
        if stacked.shape[0] == 0:
            cumulative, summative = torch.zeros_like(reference), torch.zeros_like(reference)
        else:
            cumulative, summative = stacked.amax(dim=0), stacked.sum(dim=0)
        backbone.register_buffer("_cumulative", cumulative, persistent=False)
        backbone.register_buffer("_summative", summative, persistent=False)

    # ------------------------------------------------------------------ forward

    def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
        """Multiply the active mask of ``layer_name`` into ``hidden`` (``(batch, units, ...)``).

        Layers followed by batch norm had the mask folded into the batch norm's affine transform
        (:mod:`clarena.hat.masked_batch_norm`), which is the same function computed cheaper.
        """
        if layer_name in self._fused:
            return hidden
        if self.active_mask is None:
            raise RuntimeError(
                f"{self._owner}: no mask is active; run the network through forward()."
            )
        mask = self.active_mask[layer_name]
        if hidden.ndim > 2:
            mask = mask.view(-1, *(1,) * (hidden.ndim - 2))
        if mask.dtype != hidden.dtype:
            mask = mask.to(hidden.dtype)
        return hidden * mask

    def forward(
        self, input: Tensor, stage: str | None, task_id: int | None, step: Mapping[str, Any]
    ) -> BackboneOutput:
        """Extract masked features.

        Args:
            input: a batch of inputs, shaped as the architecture expects.
            stage: ``'train'``, ``'validation'`` or ``'test'`` (uses the stored mask of
                ``test_task_id`` or ``task_id``, the current task if neither).
            task_id: the task to run; train and validation run the current task only.
            step: ``scale`` (the gate scale of train or validation, computed by the algorithm
                once per step) or the published ``s_max`` (validation), ``s_max``,
                ``batch_idx``, ``num_batches`` (train, annealed by :func:`annealed_scale`);
                ``test_task_id``.

        Returns:
            ``feature, mask, activations``: the ``(batch, output_dim)`` feature, layer name →
            ``(units,)`` mask used (``extras['mask']``), and each weighted layer's hidden output.

        Raises:
            ValueError: a missing argument for the stage, or a test task without stored mask.
            TypeError: an unknown step argument (named, with the nearest valid one).
        """
        scale, stored, run = self._mask_inputs(stage, task_id, step)
        for norm in self.task_norms:
            if norm.active_task != run:
                norm.select(run)
        backbone = self.backbone
        if self._compiled_gated is None:
            feature, mask, activations = _gated_features(backbone, input, scale, stored)
        else:
            # A tensor, not a float: a Python float would be baked into the graph and guarded on.
            scale_tensor = None
            if scale is not None:
                like = self._buffer("_cumulative")
                scale_tensor = torch.full((), scale, dtype=like.dtype, device=like.device)
            feature, mask, activations = self._compiled_gated(backbone, input, scale_tensor, stored)
        return BackboneOutput(
            feature, activations, extras={"mask": mask}, fields=("feature", "mask", "activations")
        )

    def compile(self, **options: Any) -> None:
        """Compile in place: the mask computation and the masked layers (``torch.compile``).

        The stage checks, the choice of the task's stored mask and batch norm, and the annealed
        scale arithmetic stay eager; the scale enters the compiled function as a 0-d tensor and
        the stored mask as tensors, so it is not recompiled across batches, epochs or tasks.
        """
        self._compiled_gated = torch.compile(_gated_features, **options)

    # ------------------------------------------------------------------ training

    def regularization(self, output: BackboneOutput) -> Tensor | None:
        """HAT's sparsity regulariser of a training forward's mask (unweighted; see
        :func:`clarena.hat.sparsity_regularization`)."""
        from clarena.hat.mechanics import sparsity_regularization

        return sparsity_regularization(output.get("mask"), self.cumulative_mask())

    def condition_gradients(self) -> None:
        """HAT's hard gradient conditioning (:func:`clarena.hat.condition_gradients`)."""
        from clarena.hat.mechanics import condition_gradients

        condition_gradients(self)

    def protection_factors(self) -> dict[nn.Parameter, Tensor]:
        """HAT's per-task factors for update-space protection
        (:func:`clarena.hat.protection.protection_factors`)."""
        from clarena.hat.protection import protection_factors

        return protection_factors(self)


def _gated_features(
    backbone: CLBackbone, input: Tensor, scale: float | Tensor | None, stored: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """``(feature, mask, activations)`` of ``input`` under the embedding masks at ``scale``, or
    under ``stored`` if ``scale`` is ``None``.

    A function of the backbone, not a bound method, so a ``copy.deepcopy`` of a compiled backbone
    runs on its own parameters.
    """
    method = backbone.mask_method
    assert isinstance(method, HAT)  # only HAT.forward calls it
    mask = stored if scale is None else method._embedding_masks(scale)
    method.active_mask = mask
    try:
        feature, activations = backbone._features(input)
    finally:
        method.active_mask = None
    return feature, mask, activations


def hat_of(target: CLBackbone | HAT) -> HAT:
    """The :class:`HAT` method of ``target``: a backbone with HAT attached, or the method itself.

    Raises:
        TypeError: ``target`` has no HAT method attached.
    """
    return method_of(target, HAT, "clarena.backbones.HATMaskMLP / HATMaskResNet18 ...")


def _refresh_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    method = getattr(module, "mask_method", None)
    assert isinstance(method, HAT)  # registered by HAT._attach
    method._refresh_combined_masks()
    method._bind_masked_norms()


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
