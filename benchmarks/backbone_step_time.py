"""Training-step time of the core backbones on CPU (forward, backward, SGD step; batch 64).

Run from the repository root: ``python benchmarks/backbone_step_time.py [--repeats N]``.
Prints the median milliseconds per step over ``--repeats`` timed steps after a warmup.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import step_time

from clarena.backbones import MLP, ResNet18

BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per backbone")
    parser.add_argument(
        "--large-repeats",
        type=int,
        default=3,
        help="timed steps for the 224x224 ResNet18, which takes seconds per step",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cases = [
        ("MLP(784, [256, 100], 64)", lambda: MLP(784, [256, 100], 64), (1, 28, 28), args.repeats),
        (
            "ResNet18(small_input=True)",
            lambda: ResNet18(output_dim=512, small_input=True),
            (3, 32, 32),
            args.repeats,
        ),
        ("ResNet18", lambda: ResNet18(output_dim=512), (3, 224, 224), args.large_repeats),
    ]
    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}, batch {BATCH}")
    print(f"{'backbone':<28} {'input':<16} {'repeats':>7} {'ms/step':>10}")
    for label, build, shape, repeats in cases:
        input = torch.randn(BATCH, *shape)
        seconds = step_time(build(), input, repeats=repeats, warmup=1 if repeats < 5 else 3)
        print(f"{label:<28} {'x'.join(map(str, shape)):<16} {repeats:>7} {seconds * 1e3:>10.1f}")


if __name__ == "__main__":
    main()
