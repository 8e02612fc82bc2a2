"""WSN's optimiser check: :func:`clarena.cl.check_optimizer` with WSN's keyword and default."""

from __future__ import annotations

from torch.optim import Optimizer

from clarena.cl.optim import check_optimizer as _check_optimizer


def check_optimizer(optimizer: Optimizer, fresh: bool = False) -> None:
    """Refuse an optimiser that would break WSN's no-forgetting guarantee.

    Weight decay shrinks every parameter in the optimiser, including those frozen for earlier
    tasks whose gradients :meth:`~clarena.wsn.WSNMaskBackbone.freeze_used_parameter_gradients`
    zeroed, so a stored task's subnetwork would drift. (``torch.optim.AdamW`` decays by default:
    pass ``weight_decay=0``.) Momentum or Adam state carried over from an earlier task moves
    frozen parameters too: create a fresh optimiser for every task.

    Args:
        optimizer: the optimiser about to train a task.
        fresh: also require that the optimiser has not stepped yet (no state), as at task start;
            ``require_fresh`` of :func:`clarena.cl.check_optimizer`.

    Raises:
        ValueError: a parameter group has ``weight_decay > 0``, or ``fresh`` and the optimiser
            already holds state.
    """
    _check_optimizer(optimizer, require_fresh=fresh, owner="WSN")
