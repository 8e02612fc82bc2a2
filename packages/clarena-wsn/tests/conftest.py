"""Shared test settings for clarena-wsn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run these small-tensor tests on one thread.

    On a busy 2-core machine (parallel test sessions, CI neighbours) two OpenMP threads wait on
    each other and a ResNet-18 step can take ten times longer; one thread is fast and steady.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
