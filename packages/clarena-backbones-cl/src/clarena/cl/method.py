"""The mask-method contract: an object attached to a continual-learning backbone.

A mask method (HAT and its extensions, WSN, a third party's) is not a subclass of a backbone. It
is attached to any :class:`~clarena.cl.CLBackbone` built from the layer hooks
(:meth:`~clarena.backbones.Backbone.layer_forward`, :meth:`~clarena.backbones.Backbone.unit_gate`)
with :meth:`CLBackbone.attach <clarena.cl.CLBackbone.attach>`, and from then on the backbone
routes its hooks, its task set-up and its forward pass through the method. Methods are
discovered through the entry-point group :data:`ENTRY_POINT_GROUP`; no clarena layer below the
method names it.

One contract covers what a training loop needs from any method:

============================  =============================================================
task set-up                   :meth:`MaskMethod.setup_task` (from ``setup_task_id``)
what a step needs             ``forward(input, stage, task_id, **step)``: the step arguments
                              (HAT's annealed ``scale``, WSN's ``mask_percentage``) are
                              computed by the algorithm and passed through
regulariser                   :meth:`MaskMethod.regularization`
gradient conditioning          :meth:`MaskMethod.condition_gradients`
update-space protection        :meth:`MaskMethod.protection_factors`
end of a task                 :meth:`MaskMethod.end_task`
compilation                   :meth:`MaskMethod.compile`
state-dict layout             the method registers its parameters, buffers and modules on the
                              backbone in :meth:`MaskMethod.attach`, under the names it lists
                              in :attr:`MaskMethod.state_names`
optimiser check               :meth:`MaskMethod.check_optimizer`
capacity                      :meth:`MaskMethod.capacity_per_layer`, :meth:`MaskMethod.capacity`
============================  =============================================================
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn
from torch.optim import Optimizer

from clarena.backbones.output import BackboneOutput

if TYPE_CHECKING:
    from clarena.cl.base import CLBackbone

#: Entry-point group under which distributions register their mask-method classes.
ENTRY_POINT_GROUP = "clarena.mask_methods"


class MaskMethod(ABC):
    """A continual-learning mask method, attached to one backbone.

    Subclasses implement :meth:`_attach` (build per-task state on the backbone), :meth:`forward`
    and :meth:`end_task`; every other hook has a do-nothing default.
    """

    #: The method's name, as registered in :data:`ENTRY_POINT_GROUP` (``'hat'``, ``'wsn'``).
    name: ClassVar[str]
    #: Names of the attributes the method registers on its backbone (its state-dict keys start
    #: with these); fixed per class so saved models keep loading.
    state_names: ClassVar[tuple[str, ...]] = ()
    #: Methods the published backbone API calls on the backbone itself (SPEC §4: HAT's
    #: ``initialize_task_embedding``, WSN's ``initialize_parameter_score`` ...);
    #: :meth:`CLBackbone.attach <clarena.cl.CLBackbone.attach>` makes exactly these callable on
    #: the backbone, bound to the method.
    backbone_api: ClassVar[tuple[str, ...]] = ()

    _backbone: CLBackbone | None = None

    @property
    def backbone(self) -> CLBackbone:
        """The backbone this method is attached to.

        Raises:
            RuntimeError: the method is not attached yet.
        """
        if self._backbone is None:
            raise RuntimeError(
                f"{type(self).__name__} is not attached to a backbone; call "
                f"backbone.attach(method) first."
            )
        return self._backbone

    def attach(self, backbone: CLBackbone) -> None:
        """Attach to ``backbone``: check its layers and register the method's state on it.

        Called once, by :meth:`CLBackbone.attach <clarena.cl.CLBackbone.attach>`.

        Raises:
            RuntimeError: the method is already attached to a backbone.
            TypeError: a weighted layer the method cannot cover (named in the message).
        """
        if self._backbone is not None:
            raise RuntimeError(
                f"{type(self).__name__} is already attached to a {type(self._backbone).__name__}; "
                f"a method object serves one backbone. Create a new one."
            )
        self._backbone = backbone
        self._attach(backbone)

    @abstractmethod
    def _attach(self, backbone: CLBackbone) -> None:
        """Build the method's per-task state on ``backbone`` (see :attr:`state_names`)."""

    # ------------------------------------------------------------------ tasks

    def setup_task(self, task_id: int, is_new: bool) -> None:
        """Prepare task ``task_id`` (``is_new``: never set up before). Called by the backbone's
        ``setup_task_id`` after it records the task."""
        return None

    @abstractmethod
    def end_task(self, task_id: int) -> None:
        """The current task ``task_id`` has finished training: keep what its test stage needs."""

    # ------------------------------------------------------------------ forward

    def layer_forward(self, layer_name: str, layer: nn.Module, input: Tensor) -> Tensor:
        """Run weighted layer ``layer`` on ``input`` (weight masks act here)."""
        return layer(input)

    def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
        """Gate ``layer_name``'s normalised unit outputs before the activation (unit masks)."""
        return hidden

    @abstractmethod
    def forward(
        self, input: Tensor, stage: str | None, task_id: int | None, step: Mapping[str, Any]
    ) -> BackboneOutput:
        """The backbone's forward pass under this method.

        Args:
            input: the batch, shaped as the backbone expects.
            stage: ``'train'``, ``'validation'`` or ``'test'`` (``None`` as the backbone got it;
                a method that needs a stage refuses it).
            task_id: the task the batch belongs to; ``None`` for the current task.
            step: the method's step arguments, as passed to the backbone's ``forward``.
        """

    # ------------------------------------------------------------------ training

    def regularization(self, output: BackboneOutput) -> Tensor | None:
        """The method's regulariser for a training forward's ``output``; ``None`` for none."""
        return None

    def condition_gradients(self) -> None:
        """Condition the current task's gradients (after backward, accumulation and unscaling;
        before clipping and the optimiser step)."""
        return None

    def protection_factors(self) -> dict[nn.Parameter, Tensor]:
        """The current task's protection factor ``f`` of every parameter the method protects.

        For update-space protection (SPEC §9, :class:`clarena.cl.UpdateSpaceProtection`): each
        parameter mapped to ``f`` in ``[0, 1]`` (0: kept for earlier tasks, 1: free),
        broadcastable to the parameter, or a ``bool`` tensor (``True`` = free). Constant within a
        task: build the protection once per task, after ``setup_task_id`` (and after loading a
        state dict). Parameters not listed are free. The default protects nothing.
        """
        return {}

    def check_optimizer(
        self, optimizer: Optimizer, *, at_task_start: bool = True, update_space: bool = False
    ) -> None:
        """Refuse optimiser settings that would move what the method protects.

        The default is :func:`clarena.cl.check_optimizer` with the method's name;
        ``update_space``: the protection acts on the update (:meth:`protection_factors`), so
        weight decay is allowed.
        """
        from clarena.cl.optim import check_optimizer

        check_optimizer(
            optimizer,
            require_fresh=at_task_start,
            owner=self.name.upper(),
            update_space=update_space,
        )

    # ------------------------------------------------------------------ state

    def extra_state(self) -> dict[str, Any]:
        """Plain values saved in the backbone's ``_extra_state`` next to its task bookkeeping
        (keys must not clash with ``task_id`` / ``processed_task_ids``); none by default."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved, from the backbone's whole ``_extra_state``."""
        return None

    # ------------------------------------------------------------------ compile, capacity

    def compile(self, *args: Any, **options: Any) -> None:
        """Compile the method's tensor computation in place (``torch.compile(**options)``);
        the backbone's ``compile`` calls this."""
        raise NotImplementedError(f"{type(self).__name__} does not support compile().")

    def capacity_per_layer(self) -> dict[str, float]:
        """Per weighted layer, the fraction of its masked elements some stored task uses."""
        return {name: used / total for name, (used, total) in self.layer_usage().items()}

    def capacity(self) -> float:
        """Fraction of all masked elements some stored task uses."""
        usage = self.layer_usage().values()
        return sum(used for used, _ in usage) / sum(total for _, total in usage)

    @abstractmethod
    def layer_usage(self) -> dict[str, tuple[int, int]]:
        """Per weighted layer, ``(used, total)``: masked elements used by some stored task."""


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_mask_methods() -> dict[str, str]:
    """Every installed mask method's name mapped to the distribution providing it."""
    return {
        name: (ep.dist.name if ep.dist is not None else "unknown")
        for name, ep in sorted(_entry_points().items())
    }


def resolve_mask_method(name: str) -> type[MaskMethod]:
    """The mask-method class registered as ``name`` in :data:`ENTRY_POINT_GROUP`.

    Raises:
        KeyError: no installed distribution registers ``name``; the message lists those that do.
    """
    entry_point = _entry_points().get(name)
    if entry_point is None:
        installed = ", ".join(sorted(_entry_points())) or "none"
        raise KeyError(
            f"no mask method '{name}' is installed (installed: {installed}); install the "
            f"distribution that registers it in the '{ENTRY_POINT_GROUP}' entry-point group."
        )
    method = entry_point.load()
    if not (isinstance(method, type) and issubclass(method, MaskMethod)):
        raise TypeError(
            f"entry point '{name}' in '{ENTRY_POINT_GROUP}' is {method!r}, not a MaskMethod "
            f"subclass."
        )
    return method
