"""What every backbone's forward returns: one typed output for plain, CL and masked backbones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

#: How a plain backbone's output unpacks: ``feature, activations = backbone(input)``.
PLAIN_FIELDS: tuple[str, ...] = ("feature", "activations")


@dataclass(frozen=True, eq=False)
class BackboneOutput:
    """The output of a backbone's forward pass.

    Attributes:
        feature: ``(batch, output_dim)`` feature handed to the heads.
        activations: each weighted layer's name mapped to its hidden output (after its
            activation), ``(batch, units)`` or ``(batch, units, height, width)``.
        extras: what an attached mask method adds, by name (HAT: ``'mask'``, layer name →
            ``(units,)`` unit mask; WSN: ``'weight_mask'`` and ``'bias_mask'``, layer name → a
            mask shaped like the weight / bias). Empty for plain and CL backbones.
        fields: the order in which the output unpacks as a tuple, the published API's return
            value: ``(feature, activations)`` for plain and CL backbones, ``(feature, mask,
            activations)`` with HAT, ``(feature, weight_mask, bias_mask, activations)`` with WSN.
            Each name is ``'feature'``, ``'activations'`` or a key of :attr:`extras`.
    """

    feature: Tensor
    activations: dict[str, Tensor]
    extras: Mapping[str, Any] = field(default_factory=dict)
    fields: tuple[str, ...] = PLAIN_FIELDS

    def __post_init__(self) -> None:
        unknown = [
            name
            for name in self.fields
            if name not in ("feature", "activations") and name not in self.extras
        ]
        if unknown:
            raise ValueError(
                f"BackboneOutput: fields {unknown} are neither 'feature', 'activations' nor keys "
                f"of extras ({sorted(self.extras)})."
            )

    def get(self, name: str) -> Any:
        """The value named ``name``: ``'feature'``, ``'activations'`` or a key of :attr:`extras`.

        Raises:
            KeyError: no such value; the message lists the names this output holds.
        """
        if name == "feature":
            return self.feature
        if name == "activations":
            return self.activations
        if name in self.extras:
            return self.extras[name]
        raise KeyError(
            f"this backbone output has no '{name}'; it holds feature, activations"
            + "".join(f", {key}" for key in self.extras)
            + "."
        )

    def __iter__(self) -> Iterator[Any]:
        return (self.get(name) for name in self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, index: int) -> Any:
        return self.get(self.fields[index])
