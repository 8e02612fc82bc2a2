"""Optimiser checks shared by mask-based backbones (HAT, WSN, ...).

Mask methods keep earlier tasks intact by zeroing or scaling the gradients of the parameters those
tasks use. Two optimiser settings move such parameters anyway, whatever their gradient: weight
decay, and momentum or Adam state carried over from an earlier task.
"""

from __future__ import annotations

from torch.optim import Optimizer


def check_optimizer(
    optimizer: Optimizer, require_fresh: bool = True, owner: str = "", update_space: bool = False
) -> None:
    """Refuse optimiser settings that move parameters protected for earlier tasks.

    Call it with a new optimiser at the start of each task.

    Args:
        optimizer: the optimiser about to train the current task.
        require_fresh: also refuse an optimiser that already holds state (has taken steps).
        owner: the method named at the start of the error message (``'WSN'``), if any.
        update_space: the protection acts on the update (:class:`clarena.cl.UpdateSpaceProtection`),
            which weight decay cannot get past, so weight decay is not refused.

    Raises:
        ValueError: a parameter group has ``weight_decay > 0`` (``AdamW`` defaults to 0.01), or
            ``require_fresh`` and the optimiser holds state.
    """
    start = f"{owner}: " if owner else ""
    name = type(optimizer).__name__
    for index, group in enumerate(optimizer.param_groups):
        decay = group.get("weight_decay", 0.0) or 0.0
        if decay > 0 and not update_space:
            raise ValueError(
                f"{start}{name} parameter group {index} has weight_decay={decay}; weight decay "
                f"moves the parameters protected for earlier tasks even where their gradient is "
                f"zero, so earlier tasks would be forgotten. Set weight_decay=0 (AdamW defaults "
                f"to 0.01), or protect in update space (clarena.cl.UpdateSpaceProtection; "
                f"cl_algorithm.protection=update)."
            )
    if require_fresh and any(optimizer.state.values()):
        raise ValueError(
            f"{start}this {name} already holds state (momentum or moment estimates) from earlier "
            f"steps, which would move the parameters protected for earlier tasks; create a new "
            f"optimiser for each task (call setup_task_id, then create a fresh optimiser)."
        )
