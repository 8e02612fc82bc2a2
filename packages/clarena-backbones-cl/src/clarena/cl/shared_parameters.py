"""Parameters a mask method cannot tie to units or entries of a task: shared by every task.

A mask method protects a weighted layer's weights and biases by its masks and gives each task its
own batch norms. Other trainable parameters of a backbone serve every task at once: the affine
parameters of a layer or group norm (its statistics mix all channels, so no channel of it is
unused by a task), and, in timm models, parameters outside any layer (a ViT's ``cls_token`` and
``pos_embed``, ConvNeXt's layer-scale ``gamma``, relative-position tables). A method keeps the
earlier tasks exact by training such a *shared* parameter in the first task only and freezing it
from the second task on. Normalisation layers are shared that way always; the parameters outside
any layer only when the user says so (``uncovered_parameters``), since freezing them is a choice
about plasticity: otherwise the method refuses the backbone at attach, naming them.
"""

from __future__ import annotations

from torch import nn

#: What a mask method does with trainable parameters outside its weighted and normalisation
#: layers: refuse the backbone (default), train them in the first task and freeze them from
#: the second on, or freeze them from the start.
UNCOVERED_MODES: tuple[str, ...] = ("refuse", "first_task", "freeze")


def check_uncovered_mode(value: object, owner: str) -> str:
    """Return ``value`` if it is one of :data:`UNCOVERED_MODES`.

    Raises:
        ValueError: any other value.
    """
    if value not in UNCOVERED_MODES:
        raise ValueError(
            f"{owner}: uncovered_parameters must be one of "
            f"{', '.join(repr(m) for m in UNCOVERED_MODES)}; got {value!r}."
        )
    return str(value)


def shared_parameters(
    backbone: nn.Module, covered: set[int], owner: str, mode: str
) -> dict[str, nn.Parameter]:
    """The trainable parameters of ``backbone`` a method shares across tasks (see the module).

    Args:
        backbone: the backbone the method attaches to, before the method's own state is on it.
        covered: ids of the parameters the method protects by its masks or makes per task.
        owner: the method's name, for messages.
        mode: one of :data:`UNCOVERED_MODES`, for parameters outside weighted and normalisation
            layers (normalisation layers are listed by ``backbone.normalization_layer_names``
            where the backbone has it, as timm backbones do).

    Returns:
        Parameter name → parameter: those of normalisation layers, and, with
        ``mode='first_task'``, those outside any layer. With ``'freeze'`` the latter get
        ``requires_grad=False`` here and are not returned.

    Raises:
        TypeError: ``mode='refuse'`` and the backbone has trainable parameters outside its
            weighted and normalisation layers; the message names them.
    """
    norm_names = getattr(backbone, "normalization_layer_names", ())
    in_norms: set[int] = set()
    for name in norm_names:
        in_norms.update(id(p) for p in backbone.get_submodule(name.replace("/", ".")).parameters())
    shared: dict[str, nn.Parameter] = {}
    outside: dict[str, nn.Parameter] = {}
    for name, parameter in backbone.named_parameters():
        if not parameter.requires_grad or id(parameter) in covered:
            continue
        (shared if id(parameter) in in_norms else outside)[name] = parameter
    if outside and mode == "refuse":
        names = list(outside)
        listed = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise TypeError(
            f"{owner} cannot protect {listed} of {type(backbone).__name__}: no weighted or "
            f"normalisation layer holds them, so earlier tasks would be forgotten. Pass "
            f"uncovered_parameters='first_task' (trained in the first task, frozen after it) or "
            f"'freeze' (never trained), or set requires_grad=False on them."
        )
    if mode == "freeze":
        for parameter in outside.values():
            parameter.requires_grad_(False)
    elif mode == "first_task":
        shared.update(outside)
    return shared
