"""Shared timing helpers for the scripts in ``benchmarks/`` (import them as ``from _timing import``)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def step_time(
    backbone: nn.Module,
    input: Tensor,
    repeats: int,
    warmup: int = 3,
    lr: float = 0.01,
    **forward_kwargs: Any,
) -> float:
    """Median wall time in seconds of one training step of ``backbone`` on ``input``.

    A step is forward (``backbone(input, stage="train", **forward_kwargs)``, whose first output
    is the ``(batch, output_dim)`` feature), a mean-square loss on the feature, backward, and an
    SGD update. ``warmup`` untimed steps run first so allocator and kernel caches are warm.

    Args:
        backbone: the network to time; it is put in training mode.
        input: one batch, on the device the backbone lives on.
        repeats: timed steps; the median is returned.
        warmup: untimed steps before timing.
        lr: SGD learning rate (the update is timed, its value hardly matters).
        forward_kwargs: extra forward arguments (mask backbones: ``s_max``, ``batch_idx`` ...);
            they override ``stage``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}.")
    backbone.train()
    optimizer = torch.optim.SGD(backbone.parameters(), lr=lr)
    kwargs = {"stage": "train", **forward_kwargs}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        feature = backbone(input, **kwargs)[0]
        feature.square().mean().backward()
        optimizer.step()
        if input.is_cuda:
            torch.cuda.synchronize(input.device)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_rounds(
    steps: list[Callable[[], None]],
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Time ``steps`` round after round (rotating their order) for ``repeats`` rounds.

    Args:
        steps: the callables to time.
        repeats: timed rounds.
        warmup: untimed rounds first.
        clock: seconds, wall time by default (``time.thread_time`` for this thread's CPU time).

    Returns:
        For each step, its seconds in each round (``repeats`` values, in round order).
    """
    for _ in range(warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[] for _ in steps]
    for round_index in range(repeats):
        shift = round_index % len(steps)
        for index in [*range(shift, len(steps)), *range(shift)]:
            start = clock()
            steps[index]()
            times[index].append(clock() - start)
    return times


def paired_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of ``times / reference`` in the same round (see ``paired_rounds``)."""
    return statistics.median(a / b for a, b in zip(times, reference, strict=True))


def paired_timings(
    steps: list[Callable[[], None]],
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[float], list[float]]:
    """Time ``steps`` round after round (rotating their order) for ``repeats`` rounds.

    Args:
        steps: the callables to time; the first is the reference of the ratios.
        repeats: timed rounds.
        warmup: untimed rounds first.
        clock: seconds, wall time by default (``time.thread_time`` for this thread's CPU time).

    Returns:
        ``(medians, ratios)``: each step's median wall seconds, and for each step the median over
        rounds of its time divided by the first step's time in the same round. Pairing within a
        round cancels most of the drift caused by other processes on a shared machine.
    """
    times = paired_rounds(steps, repeats, warmup, clock)
    medians = [statistics.median(t) for t in times]
    ratios = [paired_ratio(t, times[0]) for t in times]
    return medians, ratios


def synchronized(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``step``, waiting for ``device`` to finish its work when it is a GPU (so it can be timed)."""
    if device.type != "cuda":
        return step

    def run() -> None:
        step()
        torch.cuda.synchronize(device)

    return run


def paired_summary(
    times: dict[str, list[float]],
    ratios: dict[str, tuple[str, str]],
    targets: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A JSON-ready record of paired timings (``paired_rounds``) and the ratios taken from them.

    Args:
        times: each step's label -> its seconds per round.
        ratios: a ratio's name -> (numerator label, denominator label).
        targets: a ratio's name -> the most it should be (absent: no target).

    Returns:
        ``{"steps": {label: {"median_s", "rounds_s"}}, "ratios": {name: {"value", "numerator",
        "denominator", "target", "ok"}}}``; ``value`` is ``paired_ratio`` of the two steps' rounds.
    """
    targets = targets or {}
    record_ratios = {}
    for name, (numerator, denominator) in ratios.items():
        value = paired_ratio(times[numerator], times[denominator])
        target = targets.get(name)
        record_ratios[name] = {
            "value": value,
            "numerator": numerator,
            "denominator": denominator,
            "target": target,
            "ok": None if target is None else value <= target,
        }
    return {
        "steps": {
            label: {"median_s": statistics.median(rounds), "rounds_s": rounds}
            for label, rounds in times.items()
        },
        "ratios": record_ratios,
    }


def add_clock_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads T`` (torch CPU threads, default 2) and ``--clock wall|thread``."""
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="wall time, or this thread's CPU time (use with --threads 1 on a busy machine)",
    )


def chosen_clock(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Callable[[], float]:
    """The clock of :func:`add_clock_arguments`' options; ``--clock thread`` needs ``--threads 1``."""
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread measures one thread: pass --threads 1")
    return time.thread_time if args.clock == "thread" else time.perf_counter
