"""Where a mask algorithm protects earlier tasks: the update the optimiser takes, or its gradient.

``cl_algorithm.protection``:

- ``update`` (the default): the method's factor ``f`` scales the step the optimiser takes,
  ``θ ← θ + f ⊙ (θ' − θ)`` (SPEC §9, :class:`clarena.cl.UpdateSpaceProtection`). Hard masks
  (HAT, WSN) keep earlier tasks' parameters bit-identical under any optimiser, with momentum,
  Adam's moments and weight decay; AdaHAT's and FG-AdaHAT's soft factor is not cancelled by Adam.
- ``gradient``: the papers' algorithms, which scale the gradient only; protection holds under SGD
  without weight decay (adaptive optimisers cancel AdaHAT's factor).

The protection wraps Lightning's ``optimizer_step`` (called once per optimiser step, after
gradient accumulation; a step a gradient scaler skips leaves the parameters as they were, which
the protection keeps), and is rebuilt at the start of every fit (each task, and a resumed one).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from typing_extensions import override

from clarena.cl import UpdateSpaceProtection
from clarena.experiments.running.algorithms.base import (
    CLAlgorithm,
    CLConfigError,
    OptimizerFactory,
    check_choice,
    optimizer_weight_decay,
)

#: The values of ``cl_algorithm.protection``.
PROTECTION_MODES: tuple[str, ...] = ("update", "gradient")


def checked_protection(
    owner: str, protection: object, optimizer: OptimizerFactory | None, protected: str
) -> str:
    """``protection`` if it is one of :data:`PROTECTION_MODES` and the optimiser suits it.

    Args:
        owner: the algorithm named in the messages.
        protection: the configured ``cl_algorithm.protection``.
        optimizer: the configured optimiser factory (its weight decay is read).
        protected: what weight decay would move in gradient space, e.g. ``"the weights whose
            gradients the masks zeroed"``.

    Raises:
        CLConfigError: an unknown mode, or ``weight_decay > 0`` with ``protection=gradient``.
    """
    value = check_choice(owner, "protection", protection, PROTECTION_MODES)
    decay = optimizer_weight_decay(optimizer)
    if value == "gradient" and decay > 0:
        raise CLConfigError(
            f"{owner} refuses weight_decay={decay} with protection=gradient: weight decay moves "
            f"{protected}, so earlier tasks would be forgotten. Set cl_algorithm.protection=update "
            f"(the step is protected, decay included) or optimizer.weight_decay=0."
        )
    return value


class ProtectedAlgorithm(CLAlgorithm):
    """A mask algorithm with ``cl_algorithm.protection`` (see the module docstring).

    Subclasses call :meth:`init_protection` in ``__init__`` and give the per-task factors
    (:meth:`protection_factors`) or, for factors that change every step, the parameters
    (:meth:`per_step_parameters`) and each step's factors (:meth:`step_factors`).
    """

    protection: str = "update"
    _update_protection: UpdateSpaceProtection | None = None
    _protection_built: bool = False
    _per_step: bool = False

    def init_protection(self, protection: object) -> None:
        """Check and keep ``protection`` (``update`` or ``gradient``).

        Raises:
            CLConfigError: any other value, named with the valid ones.
        """
        name = type(self).__name__
        self.protection = check_choice(name, "protection", protection, PROTECTION_MODES)

    @property
    def update_space(self) -> bool:
        """Whether the protection acts on the update (``protection=update``)."""
        return self.protection == "update"

    def protection_factors(self) -> dict[Any, Tensor]:
        """The current task's constant factors (the mask method's by default)."""
        method = self.backbone.mask_method
        return {} if method is None else method.protection_factors()

    def per_step_parameters(self) -> list[Any] | None:
        """The parameters of per-step factors, or ``None`` when the factors are per task."""
        return None

    def step_factors(self) -> list[Tensor]:
        """This step's factors, one per :meth:`per_step_parameters` entry."""
        raise NotImplementedError

    def _protection(self) -> UpdateSpaceProtection | None:
        if not self._protection_built:
            parameters = self.per_step_parameters()
            self._per_step = parameters is not None
            if parameters is not None:
                self._update_protection = UpdateSpaceProtection.per_step(parameters)
            else:
                factors = self.protection_factors()
                self._update_protection = UpdateSpaceProtection(factors) if factors else None
            self._protection_built = True
        return self._update_protection

    @override
    def on_train_start(self) -> None:
        super().on_train_start()
        # A new task (or a resumed one, its masks just loaded): factors are rebuilt on first use.
        self._update_protection = None
        self._protection_built = False

    @override
    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        protection = self._protection() if self.update_space else None
        if protection is None:
            super().optimizer_step(*args, **kwargs)
            return
        # The closure (forward, backward, on_before_optimizer_step) runs inside the step and does
        # not move parameters, so this copy is the parameters the update starts from.
        protection.before_step()
        super().optimizer_step(*args, **kwargs)
        if not self._per_step:
            protection.after_step()
        else:
            protection.after_step(self.step_factors())
