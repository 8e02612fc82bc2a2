"""Task-aware backbones for continual learning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from torch import Tensor, nn

from clarena.backbones import Backbone
from clarena.backbones.base import check_no_step_arguments, check_stage
from clarena.backbones.output import BackboneOutput
from clarena.cl import layer_graph

if TYPE_CHECKING:
    from clarena.cl.method import MaskMethod

_Backbone = TypeVar("_Backbone", bound="CLBackbone")


class CLBackbone(Backbone):
    """A backbone that learns a sequence of tasks.

    The training loop calls :meth:`setup_task_id` before each task. Plain CL backbones share all
    parameters between tasks; an attached mask method keeps per-task state. The task bookkeeping is
    part of ``state_dict()`` so a reloaded model knows which tasks it has seen.

    A mask method (:class:`~clarena.cl.MaskMethod`: HAT, WSN, ...) is attached with
    :meth:`attach`; the backbone then routes its layer hooks, task set-up and forward pass through
    it.

    A family's CL variant lists ``CLBackbone`` first (``class CLMLP(CLBackbone, MLP)``): its
    constructor passes every argument on to the family's and then sets up the task bookkeeping,
    the one place that does.

    Args:
        arguments: the arguments of the backbone family's constructor (``output_dim`` for a
            direct subclass of :class:`CLBackbone`).
    """

    #: The attached mask method, or ``None`` for a backbone shared by all tasks.
    mask_method: MaskMethod | None = None

    def __init__(self, *args: Any, **arguments: Any) -> None:
        super().__init__(*args, **arguments)
        self.task_id: int | None = None
        self.processed_task_ids: list[int] = []

    @property
    def mask_method_name(self) -> str | None:
        """The :attr:`~clarena.cl.MaskMethod.name` of the attached mask method; ``None`` for none."""
        return None if self.mask_method is None else self.mask_method.name

    def setup_task_id(self, task_id: int) -> None:
        """Make ``task_id`` the current task (tasks need not be consecutive).

        Raises:
            TypeError: ``task_id`` is not an integer.
            ValueError: ``task_id`` is below 1.
        """
        self.task_id = check_task_id(task_id, type(self).__name__)
        is_new = task_id not in self.processed_task_ids
        if is_new:
            self.processed_task_ids.append(task_id)
        if self.mask_method is not None:
            self.mask_method.setup_task(task_id, is_new)

    def attach(self: _Backbone, method: MaskMethod) -> _Backbone:
        """Attach mask method ``method`` (before any task is set up); returns the backbone.

        Raises:
            RuntimeError: a method is already attached, or a task has been set up.
            TypeError: a weighted layer ``method`` cannot cover (see :meth:`MaskMethod.attach`).
        """
        owner = type(self).__name__
        if self.mask_method is not None:
            raise RuntimeError(
                f"{owner} already has {type(self.mask_method).__name__} attached; a backbone "
                f"carries one mask method."
            )
        if self.processed_task_ids:
            raise RuntimeError(
                f"{owner}: attach a mask method before the first setup_task_id; tasks "
                f"{self.processed_task_ids} were already set up without it."
            )
        method.attach(self)
        self.mask_method = method
        # The published API calls some method members on the backbone itself (SPEC §4:
        # ``backbone.initialize_task_embedding('N01')``): exactly the names the method lists.
        for name in method.backbone_api:
            self.__dict__[name] = getattr(method, name)
        return self

    def layer_forward(self, layer_name: str, layer: nn.Module, input: Tensor) -> Tensor:
        """Run weighted layer ``layer`` on ``input``, through the attached method if any."""
        if self.mask_method is None:
            return layer(input)
        return self.mask_method.layer_forward(layer_name, layer, input)

    def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
        """Gate ``layer_name``'s unit outputs, through the attached method if any."""
        if self.mask_method is None:
            return hidden
        return self.mask_method.unit_gate(layer_name, hidden)

    def compile(self, *args: Any, **options: Any) -> None:
        """Compile in place (``torch.compile(**options)``): through the attached method's
        :meth:`~clarena.cl.MaskMethod.compile` if any, else the backbone's layers."""
        if self.mask_method is not None:
            self.mask_method.compile(**options)
        else:
            super().compile(*args, **options)

    def check_task_id_ready(self, task_id: int | None = None) -> int:
        """Return the task to run: ``task_id`` if given, else the current task.

        Raises:
            RuntimeError: no task has been set up yet.
            ValueError: ``task_id`` was never set up.
        """
        owner = type(self).__name__
        if self.task_id is None:
            raise RuntimeError(
                f"{owner}: no task is set up; call setup_task_id(task_id) before forward."
            )
        if task_id is None:
            return self.task_id
        if task_id not in self.processed_task_ids:
            raise ValueError(
                f"{owner}: task {task_id} was never set up (tasks seen: "
                f"{self.processed_task_ids}); call setup_task_id({task_id}) first or test on a "
                f"trained task."
            )
        return task_id

    def forward(
        self, input: Tensor, stage: str | None = None, task_id: int | None = None, **step: Any
    ) -> BackboneOutput:
        """Extract features for the current task (or ``task_id``).

        Args:
            input: a batch of inputs, shaped as the architecture expects.
            stage: ``'train'``, ``'validation'`` or ``'test'``.
            task_id: the task the batch belongs to; ``None`` means the current task. Shared
                backbones compute the same function for every task.
            step: the attached mask method's step arguments (none without a method).

        Returns:
            A :class:`~clarena.backbones.output.BackboneOutput` (``(batch, output_dim)`` feature,
            each weighted layer's hidden output, and what the method adds); it unpacks as the
            published API's tuple.
        """
        if self.mask_method is not None:
            return self.mask_method.forward(input, stage, task_id, step)
        check_stage(stage, type(self).__name__)
        check_no_step_arguments(step, type(self).__name__)
        self.check_task_id_ready(task_id)
        return BackboneOutput(*self._run_features(input))

    def output_layer_names(self, layer_name: str) -> tuple[str, ...]:
        """Weighted layers that read the unit outputs of ``layer_name``; empty if only heads do.

        See :func:`clarena.cl.layer_graph.output_layer_names`.
        """
        return layer_graph.output_layer_names(self, layer_name)

    def feature_layer_names(self) -> tuple[str, ...]:
        """Weighted layers summed into the feature the heads read.

        See :func:`clarena.cl.layer_graph.feature_layer_names`; override for a new family.
        """
        return layer_graph.feature_layer_names(self)

    def get_extra_state(self) -> dict[str, Any]:
        """Task bookkeeping (and the attached method's :meth:`~clarena.cl.MaskMethod.extra_state`)
        saved with ``state_dict()``."""
        state = {"task_id": self.task_id, "processed_task_ids": list(self.processed_task_ids)}
        if self.mask_method is not None:
            state.update(self.mask_method.extra_state())
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the task bookkeeping saved by :meth:`get_extra_state`."""
        self.task_id = state["task_id"]
        self.processed_task_ids = list(state["processed_task_ids"])
        if self.mask_method is not None:
            self.mask_method.load_extra_state(state)


def check_task_id(task_id: object, owner: str) -> int:
    """Return ``task_id`` if it is a task id: an integer >= 1 (tasks are numbered from 1).

    Raises:
        TypeError: ``task_id`` is not an integer.
        ValueError: ``task_id`` is below 1.
    """
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise TypeError(f"{owner}: task_id must be an integer; got {task_id!r}.")
    if task_id < 1:
        raise ValueError(
            f"{owner}: task_id must be >= 1 (tasks are numbered from 1); got {task_id}. Pass "
            f"the task's number, e.g. setup_task_id(1) for the first task."
        )
    return task_id
