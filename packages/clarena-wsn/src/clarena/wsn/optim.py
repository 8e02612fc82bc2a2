"""Deprecated: WSN's optimiser check is :meth:`clarena.wsn.WSN.check_optimizer`."""

from __future__ import annotations

import warnings

from torch.optim import Optimizer

from clarena.cl.optim import check_optimizer as _check_optimizer


def check_optimizer(optimizer: Optimizer, fresh: bool = False) -> None:
    """Deprecated alias of ``WSN.check_optimizer(optimizer, at_task_start=fresh)``.

    Raises:
        ValueError: as :func:`clarena.cl.check_optimizer` with ``require_fresh=fresh``.
    """
    warnings.warn(
        "clarena.wsn.check_optimizer(optimizer, fresh=...) is deprecated; use "
        "wsn_of(backbone).check_optimizer(optimizer, at_task_start=...) (or "
        "clarena.cl.check_optimizer).",
        DeprecationWarning,
        stacklevel=2,
    )
    _check_optimizer(optimizer, require_fresh=fresh, owner="WSN")
