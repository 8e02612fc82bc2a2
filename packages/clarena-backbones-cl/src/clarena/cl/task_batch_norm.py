"""Per-task batch normalisation for mask-based continual-learning backbones.

Shared batch norm leaks between tasks: its statistics and affine parameters keep moving after a
task is learned. The ``independent`` mode gives each task its own batch norm, chosen by task id,
so a task's normalisation is frozen once the task is done.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import Tensor, nn

from clarena.cl.state import create_saved_children

BatchNormMode = Literal["shared", "independent"] | None

_MODES: dict[object, BatchNormMode] = {
    None: None,
    False: None,
    "none": None,
    "null": None,
    True: "shared",
    "shared": "shared",
    "independent": "independent",
}


def resolve_batch_norm_mode(value: object, owner: str) -> BatchNormMode:
    """Normalise a ``batch_normalization`` argument of a mask-based backbone.

    ``None``/``False`` → no batch norm; ``True``/``'shared'`` → one batch norm for all tasks;
    ``'independent'`` → one per task.

    Raises:
        ValueError: any other value.
    """
    key = value.lower() if isinstance(value, str) else value
    # Only None, real bools and strings: 1 == True and 0 == False would otherwise match.
    if (key is None or isinstance(key, bool | str)) and key in _MODES:
        return _MODES[key]
    raise ValueError(
        f"{owner}: batch_normalization must be null, 'shared' or 'independent' (true means "
        f"'shared', false means null); got {value!r}."
    )


class TaskBatchNorm(nn.Module):
    """One batch norm per task, each a copy of the one it replaces.

    Task ``t``'s batch norm is ``norms[str(t)]``, created by :meth:`select` with ``create=True``:
    a deep copy of ``template`` (a module holding more than the norm, such as timm's
    ``BatchNormAct2d`` with its activation, is copied whole), on the module's current device and
    in its current dtype (after ``.to()``, ``.double()`` ...), its statistics and affine
    parameters reset unless ``keep_state``.

    Args:
        template: the batch-norm module being made per task (a ``BatchNorm1d``/``BatchNorm2d``
            or a subclass of them).
        keep_state: start every task from ``template``'s affine parameters and running
            statistics as they are now (a pretrained timm model's); by default each task's
            batch norm starts fresh, as clarena's own backbones always have.
    """

    def __init__(self, template: nn.modules.batchnorm._BatchNorm, keep_state: bool = False) -> None:
        super().__init__()
        self.keep_state = keep_state
        self._kind = type(template)
        # Not a registered child: it is not in the state dict and no task trains it.
        self.__dict__["_template"] = copy.deepcopy(template)
        self.norms = nn.ModuleDict()
        self.active_task: int | None = None
        # The active task's batch norm, held in a plain list (not a registered child): a compiled
        # forward reads its tensors through this list, so switching tasks needs no recompilation
        # (indexing norms by the task id would make torch.compile guard on, and recompile per, id).
        self._active: list[nn.Module] = []
        # Empty and not saved: it follows .to()/.double() even before any task's batch norm
        # exists, so new ones are built where and in the dtype the module now is.
        floating = [t for t in template.state_dict().values() if t.is_floating_point()]
        placement = floating[0].new_empty(0) if floating else torch.empty(0)
        self.register_buffer("_placement", placement, persistent=False)

    def select(self, task_id: int, create: bool = False) -> None:
        """Use task ``task_id``'s batch norm; create it first if ``create``.

        Raises:
            ValueError: the task has no batch norm and ``create`` is false.
        """
        key = str(task_id)
        if key not in self.norms:
            if not create:
                raise ValueError(
                    f"TaskBatchNorm: task {task_id} has no batch norm (tasks: "
                    f"{list(self.norms)}); it was never trained."
                )
            self.norms[key] = self._new_norm()
        self.active_task = task_id
        self._active[:] = [self.norms[key]]

    def _new_norm(self) -> nn.Module:
        placement = self.get_buffer("_placement")
        template = self.__dict__.get("_template")
        if template is None:  # unpickled from clarena-backbones-cl 0.1, which kept the options
            options = self.__dict__["_options"]
            return self._kind(**options, device=placement.device, dtype=placement.dtype)
        norm: nn.Module = copy.deepcopy(template)
        if not self.__dict__.get("keep_state", False):
            norm.reset_parameters()  # type: ignore[operator]
        norm.train(self.training)
        return norm.to(device=placement.device, dtype=placement.dtype)

    def forward(self, input: Tensor) -> Tensor:
        """Normalise with the active task's batch norm; shape unchanged."""
        if not self._active:
            raise RuntimeError("TaskBatchNorm: no task selected; set up a task before forward.")
        return self._active[0](input)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        create_saved_children(self.norms, state_dict, f"{prefix}norms.", lambda _: self._new_norm())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def make_batch_norm_task_independent(module: nn.Module, keep_state: bool = False) -> None:
    """Replace every ``BatchNorm1d``/``BatchNorm2d`` (or subclass) inside ``module`` by a
    :class:`TaskBatchNorm` (``keep_state`` as there)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
            setattr(module, name, TaskBatchNorm(child, keep_state))
        else:
            make_batch_norm_task_independent(child, keep_state)


def select_task_batch_norm(module: nn.Module, task_id: int, create: bool = False) -> None:
    """Make every :class:`TaskBatchNorm` inside ``module`` use task ``task_id``'s batch norm."""
    for child in module.modules():
        if isinstance(child, TaskBatchNorm):
            child.select(task_id, create=create)
