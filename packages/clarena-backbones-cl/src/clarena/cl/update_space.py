"""Protection in update space: scale the step an optimiser takes, not the gradient it reads.

Let ``θ`` be a parameter and ``f ∈ [0, 1]`` its per-entry protection factor for the current task
(0: the entry belongs to an earlier task and must not move; 1: free; in between: AdaHAT's and
FG-AdaHAT's soft factors). Let ``θ'`` be what the optimiser's own step produces. The step taken is

    θ ← θ + f ⊙ (θ' − θ)

computed with PyTorch's ``lerp`` (exact at ``f = 0`` and ``f = 1``), so entries with ``f = 0`` end
the step bit-identical to where they began and entries with ``f = 1`` take the optimiser's step
bit for bit, whatever the optimiser did: momentum, Adam's moments, decoupled weight decay.

Under SGD (with or without momentum; no weight decay) and a factor constant within a task,
this equals multiplying the gradient by ``f``: the momentum buffer of scaled gradients is ``f``
times the buffer of raw gradients, by induction. Under Adam and AdamW the two differ by design:
Adam's per-entry normalisation cancels a constant gradient factor, not an update factor, and
decoupled weight decay is part of ``θ' − θ``, so a fully protected entry does not decay.

Memory: one copy of each protected parameter (a parameter with at least one entry below 1),
taken before the step. The factors themselves are kept as given (a method's cached factors are
shared, not copied).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn


def _check_fits(factor: Tensor, parameter: nn.Parameter) -> None:
    try:
        fits = torch.broadcast_shapes(factor.shape, parameter.shape) == parameter.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"UpdateSpaceProtection: a factor of shape {tuple(factor.shape)} does not "
            f"broadcast to its parameter's shape {tuple(parameter.shape)}."
        )


class UpdateSpaceProtection:
    """Applies per-entry protection factors to the updates of an optimiser step.

    Use it around every optimiser step of a task::

        protection = UpdateSpaceProtection(factors)   # once per task: factors are constant
        ...
        protection.before_step()
        optimizer.step()
        protection.after_step()

    Factors that change from step to step (AdaHAT's depend on the step's network sparsity) are
    passed to each :meth:`after_step` instead, for the parameters named once::

        protection = UpdateSpaceProtection.per_step(parameters)
        protection.before_step()
        optimizer.step()
        protection.after_step(factors)                # one factor per parameter, same order

    Args:
        factors: each protected parameter mapped to its factor ``f``, a tensor of the parameter's
            shape (or broadcastable to it) with values in ``[0, 1]``; a ``bool`` tensor means
            ``True`` = free (1), ``False`` = protected (0). Parameters not listed, and those whose
            factor is 1 everywhere, move freely (and cost no copy).

    Raises:
        ValueError: a factor does not broadcast to its parameter's shape.
    """

    def __init__(self, factors: Mapping[nn.Parameter, Tensor]) -> None:
        self._parameters: list[nn.Parameter] = []
        #: Per parameter: the float factor (applied with ``lerp``) or ``None`` for a bool one.
        self._weights: list[Tensor | None] = []
        #: Per parameter: the bool ``free`` mask (applied with ``where``) or ``None``.
        self._free: list[Tensor | None] = []
        for parameter, factor in factors.items():
            _check_fits(factor, parameter)
            factor = factor.to(device=parameter.device)
            if factor.dtype == torch.bool:
                if bool(factor.all()):
                    continue
                self._free.append(factor)
                self._weights.append(None)
            else:
                if bool((factor == 1).all()):
                    continue
                # lerp needs the weight in the parameter's dtype (no copy when it already is).
                self._weights.append(factor.to(parameter.dtype))
                self._free.append(None)
            self._parameters.append(parameter)
        self._per_step = False
        #: The protected parameters' values before the step; allocated once, on first use.
        self._before: list[Tensor] = []
        self._armed = False

    @classmethod
    def per_step(cls, parameters: Iterable[nn.Parameter]) -> UpdateSpaceProtection:
        """Protection of ``parameters`` whose factors :meth:`after_step` gets at every step."""
        protection = cls({})
        protection._parameters = list(parameters)
        protection._per_step = True
        return protection

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The protected parameters, in the order they were given (all-free ones left out)."""
        return list(self._parameters)

    def before_step(self) -> None:
        """Remember the protected parameters' values (call right before ``optimizer.step()``)."""
        with torch.no_grad():
            if len(self._before) != len(self._parameters):
                self._before = [torch.empty_like(p) for p in self._parameters]
            if self._parameters:
                torch._foreach_copy_(self._before, [p.detach() for p in self._parameters])
        self._armed = True

    def after_step(self, factors: Sequence[Tensor] | None = None) -> None:
        """Replace each protected parameter's step by ``f`` times it (right after the step).

        ``θ ← lerp(θ_before, θ', f)``: PyTorch's ``lerp`` computes ``θ + f (θ' − θ)`` for
        ``f < 0.5`` and ``θ' − (1 − f)(θ' − θ)`` otherwise, so ``f = 0`` gives ``θ`` and ``f = 1``
        gives ``θ'`` bit for bit (for a finite step; a bool factor uses ``where``, exact even for
        a non-finite one). One fused call over all parameters, then one fused copy back.

        Args:
            factors: for :meth:`per_step` protection, this step's factor of each parameter (in
                :attr:`parameters` order, in the parameter's dtype, broadcastable to it);
                ``None`` otherwise.

        Raises:
            RuntimeError: :meth:`before_step` was not called for this step.
            ValueError: ``factors`` missing for per-step protection, given for constant
                factors, or not one per parameter.
        """
        if not self._armed:
            raise RuntimeError(
                "UpdateSpaceProtection.after_step() needs before_step() right before the "
                "optimiser step."
            )
        self._armed = False
        if self._per_step != (factors is not None):
            raise ValueError(
                "UpdateSpaceProtection.after_step(): per-step protection needs this step's "
                "factors, constant protection takes none."
                if self._per_step
                else "UpdateSpaceProtection.after_step(): this protection has constant factors; "
                "build it with UpdateSpaceProtection.per_step(parameters) to pass them per step."
            )
        with torch.no_grad():
            if factors is not None:
                if len(factors) != len(self._parameters):
                    raise ValueError(
                        f"UpdateSpaceProtection.after_step(): got {len(factors)} factors for "
                        f"{len(self._parameters)} parameters."
                    )
                self._lerp(self._parameters, self._before, list(factors))
                return
            parameters, before, weights = [], [], []
            for parameter, old, weight, free in zip(
                self._parameters, self._before, self._weights, self._free, strict=True
            ):
                if weight is not None:
                    parameters.append(parameter)
                    before.append(old)
                    weights.append(weight)
                else:
                    assert free is not None  # one of the two is set in __init__
                    new = parameter.detach()
                    # Written in place: where() reads each element before writing it.
                    torch.where(free, new, old, out=new)
            self._lerp(parameters, before, weights)

    @staticmethod
    def _lerp(parameters: list[nn.Parameter], before: list[Tensor], weights: list[Tensor]) -> None:
        if not parameters:
            return
        new = [p.detach() for p in parameters]
        # Into the copy (which the next before_step overwrites), then back into the parameters.
        torch._foreach_lerp_(before, new, weights)
        torch._foreach_copy_(new, before)

    def extra_bytes(self) -> int:
        """Bytes of the copy :meth:`before_step` keeps: one copy of the protected parameters."""
        return sum(p.numel() * p.element_size() for p in self._parameters)
