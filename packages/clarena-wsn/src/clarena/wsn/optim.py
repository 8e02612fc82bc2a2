"""Optimiser checks for WSN: settings that would move parameters frozen for earlier tasks."""

from __future__ import annotations

from torch.optim import Optimizer


def check_optimizer(optimizer: Optimizer, fresh: bool = False) -> None:
    """Refuse an optimiser that would break WSN's no-forgetting guarantee.

    Weight decay shrinks every parameter in the optimiser, including those frozen for earlier
    tasks whose gradients :meth:`~clarena.wsn.WSNMaskBackbone.freeze_used_parameter_gradients`
    zeroed, so a stored task's subnetwork would drift. (``torch.optim.AdamW`` decays by default:
    pass ``weight_decay=0``.) Momentum or Adam state carried over from an earlier task moves
    frozen parameters too: create a fresh optimiser for every task.

    Args:
        optimizer: the optimiser about to train a task.
        fresh: also require that the optimiser has not stepped yet (no state), as at task start.

    Raises:
        ValueError: a parameter group has ``weight_decay > 0``, or ``fresh`` and the optimiser
            already holds state.
    """
    for index, group in enumerate(optimizer.param_groups):
        weight_decay = group.get("weight_decay", 0.0)
        if weight_decay and weight_decay > 0:
            raise ValueError(
                f"WSN: {type(optimizer).__name__} parameter group {index} has "
                f"weight_decay={weight_decay}; weight decay moves the parameters frozen for "
                f"earlier tasks and breaks no-forgetting. Set weight_decay=0 (AdamW defaults to "
                f"0.01)."
            )
    if fresh and any(optimizer.state.values()):
        raise ValueError(
            f"WSN: this {type(optimizer).__name__} already holds state (momentum / moment "
            f"estimates) from earlier steps, which would move parameters frozen for earlier "
            f"tasks; create a fresh optimiser for every task."
        )
