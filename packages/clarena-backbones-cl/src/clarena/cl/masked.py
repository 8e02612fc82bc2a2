"""The base of every mask-based continual-learning backbone (HAT, WSN, your own)."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any

from clarena.backbones.base import Backbone
from clarena.cl.base import CLBackbone
from clarena.cl.task_batch_norm import (
    BatchNormMode,
    TaskBatchNorm,
    make_batch_norm_task_independent,
    resolve_batch_norm_mode,
)


class MaskedBackbone(CLBackbone):
    """A continual-learning backbone whose weighted layers carry per-task masks.

    This base holds what every mask method shares; a subclass says what a mask *is* (HAT: unit
    gates from task embeddings; WSN: parameter masks from scores) through the core hooks
    :meth:`layer_forward` and :meth:`unit_gate`, and keeps finished tasks' masks in a
    :class:`~clarena.cl.TaskMaskStore`. Shared here:

    - construction over a core family (:meth:`_build_family`) with the ``batch_normalization``
      modes of :func:`~clarena.cl.resolve_batch_norm_mode`; with ``'independent'``, every batch
      norm becomes a :class:`~clarena.cl.TaskBatchNorm`, one per task, created by
      :meth:`setup_task_id` and selected by :meth:`_select_task_batch_norms`;
    - the capacity API: :meth:`capacity` and :meth:`capacity_per_layer`, from the subclass's
      :meth:`_layer_usage`;

    Pair it with :func:`clarena.cl.check_optimizer`: weight decay and carried-over optimiser state
    move parameters that masks protect.
    """

    batch_norm_mode: BatchNormMode
    _task_norms: tuple[TaskBatchNorm, ...]

    def _build_family(
        self, family: type[Backbone], batch_normalization: object, arguments: dict[str, Any]
    ) -> BatchNormMode:
        """Build the layers with core ``family`` (``MLP``, ``ResNet``) and the task bookkeeping.

        Args:
            family: the core class whose ``__init__`` builds the layers.
            batch_normalization: the masked variant's ``batch_normalization`` argument.
            arguments: every other argument of ``family``.

        Returns:
            The resolved batch-norm mode; pass it to :meth:`_init_batch_norm` once the layers
            that must see the original batch norms are set up.
        """
        mode = resolve_batch_norm_mode(batch_normalization, type(self).__name__)
        # CLBackbone's __init__ passes the arguments on to the family's (next in the MRO).
        CLBackbone.__init__(self, batch_normalization=mode is not None, **arguments)
        return mode

    @property
    def mask_method_name(self) -> str | None:
        """The mask method these legacy subclasses build in: their distribution's ``hat``/``wsn``.

        Transitional: HAT and WSN become :class:`~clarena.cl.MaskMethod` objects (#24) and this
        module goes with them.
        """
        return type(self).__module__.split(".")[1]

    def _init_batch_norm(self, batch_norm_mode: BatchNormMode) -> None:
        """Make batch norms per task for ``'independent'``; remember the per-task ones."""
        self.batch_norm_mode = batch_norm_mode
        if batch_norm_mode == "independent":
            make_batch_norm_task_independent(self)
        self._task_norms = tuple(m for m in self.modules() if isinstance(m, TaskBatchNorm))

    def setup_task_id(self, task_id: int) -> None:
        """Make ``task_id`` the current task; with independent batch norm, give it its own.

        Create the task's optimiser after this call, so it holds the new batch norm.
        """
        super().setup_task_id(task_id)
        for norm in self._task_norms:
            norm.select(task_id, create=True)

    def _select_task_batch_norms(self, task_id: int) -> None:
        """Run every per-task batch norm with task ``task_id``'s."""
        for norm in self._task_norms:
            if norm.active_task != task_id:
                norm.select(task_id)

    # ------------------------------------------------------------------ capacity

    @abstractmethod
    def _layer_usage(self) -> dict[str, tuple[int, int]]:
        """Per weighted layer, ``(used, total)``: masked elements used by some stored task."""

    def capacity_per_layer(self) -> dict[str, float]:
        """Per weighted layer, the fraction of its masked elements used by some stored task."""
        return {name: used / total for name, (used, total) in self._layer_usage().items()}

    def capacity(self) -> float:
        """Fraction of all masked elements used by some stored task."""
        usage = self._layer_usage().values()
        return sum(used for used, _ in usage) / sum(total for _, total in usage)

    def layer_capacity(self) -> dict[str, float]:
        """Deprecated name of :meth:`capacity_per_layer`."""
        warnings.warn(
            "layer_capacity() is deprecated; use capacity_per_layer().",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.capacity_per_layer()
