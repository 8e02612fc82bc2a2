"""Per-task modules that ``load_state_dict`` creates before loading into them.

Per-task heads, batch norms and stored masks are created as tasks arrive, so a fresh instance
has none. Loading a saved model first creates, in saving order, every child the state dict holds
under a container, then loads as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn


def create_saved_children(
    container: nn.ModuleDict,
    state_dict: Mapping[str, Tensor],
    prefix: str,
    make: Callable[[dict[str, Tensor]], nn.Module],
) -> None:
    """Add to ``container`` each child that ``state_dict`` holds under ``prefix`` and it lacks.

    Call it from ``_load_from_state_dict`` before ``super()._load_from_state_dict``.

    Args:
        container: the ``nn.ModuleDict`` of per-task children.
        state_dict: the state dict being loaded.
        prefix: the container's key prefix, ending with ``'.'`` (``f"{prefix}heads."``).
        make: builds a child from its saved entries (key without the child prefix → tensor),
            on the device and in the dtype its parent now has. The child is put in the
            container's training or evaluation mode.
    """
    saved: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            child, _, rest = key[len(prefix) :].partition(".")
            saved.setdefault(child, {})[rest] = value
    for child, entries in saved.items():
        if child not in container:
            container[child] = make(entries).train(container.training)
