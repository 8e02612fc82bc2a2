"""Protection in update space: scale the step an optimiser takes, not the gradient it reads.

Let ``θ`` be a parameter and ``f ∈ [0, 1]`` its per-entry protection factor for the current task
(0: the entry belongs to an earlier task and must not move; 1: free; in between: AdaHAT's and
FG-AdaHAT's soft factors). Let ``θ'`` be what the optimiser's own step produces. The step taken is

    θ ← θ + f ⊙ (θ' − θ)

computed as ``where(f == 0, θ, where(f == 1, θ', θ + f ⊙ (θ' − θ)))``, so entries with ``f = 0``
end the step bit-identical to where they began and entries with ``f = 1`` take the optimiser's
step bit for bit, whatever the optimiser did: momentum, Adam's moments, decoupled weight decay.

Under SGD (with or without momentum or coupled weight decay) and a factor constant within a task,
this equals multiplying the gradient by ``f``: the momentum buffer of scaled gradients is ``f``
times the buffer of raw gradients, by induction. Under Adam and AdamW the two differ by design:
Adam's per-entry normalisation cancels a constant gradient factor, not an update factor, and
decoupled weight decay is part of ``θ' − θ``, so a fully protected entry does not decay.

Memory: one copy of each protected parameter (a parameter with at least one entry below 1),
taken before the step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class UpdateSpaceProtection:
    """Applies per-entry protection factors to the updates of an optimiser step.

    Use it around every optimiser step of a task::

        protection = UpdateSpaceProtection(factors)   # once per task: factors are constant
        ...
        protection.before_step()
        optimizer.step()
        protection.after_step()

    Args:
        factors: each protected parameter mapped to its factor ``f``, a tensor of the parameter's
            shape (or broadcastable to it) with values in ``[0, 1]``; a ``bool`` tensor means
            ``True`` = free (1), ``False`` = protected (0). Parameters not listed move freely.

    Raises:
        ValueError: a factor does not broadcast to its parameter's shape.
    """

    def __init__(self, factors: Mapping[nn.Parameter, Tensor]) -> None:
        self._parameters: list[nn.Parameter] = []
        #: Per parameter: ``None`` for a hard factor, else the soft factor ``f``.
        self._soft: list[Tensor | None] = []
        #: Per parameter: where it is free to move (``f == 1``) and where it is frozen (``f == 0``).
        self._free: list[Tensor] = []
        self._frozen: list[Tensor] = []
        for parameter, factor in factors.items():
            try:
                fits = torch.broadcast_shapes(factor.shape, parameter.shape) == parameter.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"UpdateSpaceProtection: a factor of shape {tuple(factor.shape)} does not "
                    f"broadcast to its parameter's shape {tuple(parameter.shape)}."
                )
            factor = factor.to(device=parameter.device)
            if factor.dtype == torch.bool:
                free, frozen = factor, ~factor
            else:
                free, frozen = factor == 1, factor == 0
            hard = bool((free | frozen).all())
            self._parameters.append(parameter)
            self._free.append(free.expand(parameter.shape))
            self._frozen.append(frozen.expand(parameter.shape))
            self._soft.append(None if hard else factor.to(parameter.dtype).expand(parameter.shape))
        #: The protected parameters' values before the step; allocated once, on first use.
        self._before: list[Tensor] = []
        self._armed = False

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The protected parameters, in the order they were given."""
        return list(self._parameters)

    def before_step(self) -> None:
        """Remember the protected parameters' values (call right before ``optimizer.step()``)."""
        with torch.no_grad():
            if len(self._before) != len(self._parameters):
                self._before = [torch.empty_like(p) for p in self._parameters]
            if self._parameters:
                torch._foreach_copy_(self._before, [p.detach() for p in self._parameters])
        self._armed = True

    def after_step(self) -> None:
        """Replace each protected parameter's step by ``f`` times it (right after the step).

        Raises:
            RuntimeError: :meth:`before_step` was not called for this step.
        """
        if not self._armed:
            raise RuntimeError(
                "UpdateSpaceProtection.after_step() needs before_step() right before the "
                "optimiser step."
            )
        self._armed = False
        with torch.no_grad():
            for parameter, old, free, frozen, soft in zip(
                self._parameters, self._before, self._free, self._frozen, self._soft, strict=True
            ):
                new = parameter.detach()
                if soft is None:
                    # Written in place: where() reads each element before writing it.
                    torch.where(free, new, old, out=new)
                else:
                    scaled = torch.addcmul(old, soft, new - old)
                    new.copy_(torch.where(frozen, old, torch.where(free, new, scaled)))

    def extra_bytes(self) -> int:
        """Bytes of the copy :meth:`before_step` keeps: one copy of the protected parameters."""
        return sum(p.numel() * p.element_size() for p in self._parameters)
