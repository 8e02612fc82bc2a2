"""Multi-process (DDP) helpers: exact test loaders and the check that every rank holds one state.

Under DDP every rank runs the whole pipeline. Lightning's DDP wrapper broadcasts rank 0's
parameters and buffers when each task's fit starts and all-reduces the gradients during
``backward`` (of the last micro-batch, when accumulating), before ``on_before_optimizer_step``
runs, so HAT/WSN gradient conditioning acts on the reduced gradients and every rank takes the same step. Masks, embeddings, scores and per-task
batch norm are registered parameters/buffers, so they stay equal on every rank;
:func:`check_ranks_agree` verifies that after each task.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from clarena.experiments.errors import RankStateMismatchError

#: Per-task rank check files, relative to the run dir.
RANK_CHECK_DIR = Path("rank_check")


def state_fingerprint(module: nn.Module) -> str:
    """SHA-256 of every tensor (and extra state) in ``module.state_dict()``, in key order."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def check_ranks_agree(trainer: Any, module: nn.Module, run_dir: Path, task_id: int) -> list[str]:
    """Gather every rank's :func:`state_fingerprint` of ``module``; all must be equal.

    Rank 0 writes them to ``<run_dir>/rank_check/task_<task_id>.json``
    (``{"task": t, "fingerprints": [rank 0, rank 1, ...]}``).

    Returns:
        The fingerprints, one per rank.

    Raises:
        RankStateMismatchError: two ranks hold different states.
    """
    fingerprint = state_fingerprint(module)
    # 32 bytes of the digest as int64s, so the collective works on any backend.
    code = torch.tensor(
        [int(fingerprint[i : i + 16], 16) - 2**63 for i in range(0, 64, 16)], dtype=torch.int64
    )
    gathered = trainer.strategy.all_gather(code.to(trainer.strategy.root_device)).cpu()
    fingerprints = [
        "".join(f"{int(v) + 2**63:016x}" for v in row) for row in gathered.reshape(-1, 4)
    ]
    if trainer.is_global_zero:
        path = run_dir / RANK_CHECK_DIR / f"task_{task_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"task": task_id, "fingerprints": fingerprints}) + "\n")
    if len(set(fingerprints)) != 1:
        raise RankStateMismatchError(
            f"After task {task_id} the DDP ranks hold different algorithm states (fingerprints "
            f"{fingerprints}); masks or per-task state were changed outside the synchronised "
            f"training step."
        )
    return fingerprints


def full_test_loader(loader: DataLoader) -> DataLoader:
    """``loader`` over its whole dataset on every rank.

    A one-replica :class:`DistributedSampler` keeps Lightning from splitting the test set across
    ranks (which pads it with repeated samples), so per-task test counts stay exact.
    """
    sampler = DistributedSampler(loader.dataset, num_replicas=1, rank=0, shuffle=False)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
    )
