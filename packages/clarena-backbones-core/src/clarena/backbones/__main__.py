"""``python -m clarena.backbones``: list the backbones available in this environment.

With ``--demo``, build each installed core backbone on a small input and print its feature shape
and parameter count.
"""

from __future__ import annotations

import argparse

import torch

from clarena.backbones import MLP, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from clarena.backbones.registry import KNOWN_BACKBONES, available_backbones


def _list() -> None:
    installed = available_backbones()
    width = max(map(len, KNOWN_BACKBONES | installed))
    print(f"{'backbone':<{width}}  distribution")
    for name in sorted(KNOWN_BACKBONES | installed):
        where = installed.get(name)
        status = where if where else f"(not installed: pip install {KNOWN_BACKBONES[name]})"
        print(f"{name:<{width}}  {status}")


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
