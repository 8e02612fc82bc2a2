"""``python -m clarena.backbones``: list every backbone name and whether it is installed here.

Each row names a backbone, the distribution providing it and its state: ``installed``, or the
``pip install`` line that brings it (from a checkout, see the docs' install page).

With ``--demo``, build each installed core backbone on a small input and print its feature shape
and parameter count.
"""

from __future__ import annotations

import argparse

import torch

from clarena.backbones import MLP, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from clarena.backbones.registry import KNOWN_BACKBONES, available_backbones


def backbone_states() -> list[tuple[str, str, str]]:
    """Every known or installed backbone name with its distribution and its state here.

    Returns:
        ``(name, distribution, state)`` rows sorted by name; ``state`` is ``installed`` or the
        ``pip install`` line that brings the name's distribution.
    """
    installed = available_backbones()
    rows = []
    for name in sorted(KNOWN_BACKBONES | installed):
        distribution = installed.get(name) or KNOWN_BACKBONES[name]
        state = "installed" if name in installed else f"missing: pip install {distribution}"
        rows.append((name, distribution, state))
    return rows


def _list() -> None:
    rows = [("backbone", "distribution", "state"), *backbone_states()]
    name_width = max(len(row[0]) for row in rows)
    distribution_width = max(len(row[1]) for row in rows)
    for name, distribution, state in rows:
        print(f"{name:<{name_width}}  {distribution:<{distribution_width}}  {state}")


def _demo() -> None:
    torch.manual_seed(0)
    cases = [
        (
            "MLP(784, [256, 100], 64)",
            MLP(784, [256, 100], 64, batch_normalization=True),
            (8, 1, 28, 28),
        ),
        *(
            (
                f"{cls.__name__}(output_dim=64, small_input=True)",
                cls(3, 64, small_input=True),
                (2, 3, 32, 32),
            )
            for cls in (ResNet18, ResNet34, ResNet50, ResNet101, ResNet152)
        ),
    ]
    for label, backbone, shape in cases:
        backbone.eval()
        with torch.no_grad():
            feature, activations = backbone(torch.randn(shape), stage="test")
        parameters = sum(p.numel() for p in backbone.parameters())
        print(
            f"{label:<45} input {tuple(shape)!s:<16} feature {tuple(feature.shape)!s:<9} "
            f"{len(activations):>3} weighted layers  {parameters:>11,} parameters"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m clarena.backbones", description=__doc__)
    parser.add_argument(
        "--demo", action="store_true", help="build each core backbone and run it once"
    )
    if parser.parse_args().demo:
        _demo()
    else:
        _list()


if __name__ == "__main__":
    main()
