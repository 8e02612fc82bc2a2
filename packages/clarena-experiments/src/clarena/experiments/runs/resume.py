"""Resume state of a CL main experiment: everything needed to continue after the last task.

After every task the pipeline writes ``<run dir>/checkpoints/resume_state.pt`` atomically (a
temporary file renamed over the old one, so an interruption while writing leaves the previous
state intact), with a SHA-256 of its contents that the resume checks. It holds the algorithm's
state dict (backbone incl. HAT/WSN masks, embeddings, scores and per-task batch norm, all heads),
the trained tasks and their class counts, the accuracy matrix rows so far, the capacities, and
the Python / NumPy / torch RNG states at that point. ``clarena experiment=<name>
resume=<run dir>`` restores all of it and carries on with the next task, so the run ends with
the same ``acc.csv`` as an uninterrupted one.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from clarena.experiments.errors import PipelineConfigError
from clarena.experiments.runs import model_file
from clarena.experiments.runs.run_dir import check_run_dir

#: Resume state file, relative to the run dir.
RESUME_FILE = Path("checkpoints") / "resume_state.pt"

#: Entries of a resume state file.
RESUME_ENTRIES: tuple[str, ...] = (
    "config",
    "rng",
    "state_dict",
    "trained_tasks",
    "num_classes",
    "rows",
    "capacities",
)

#: Config keys that must be equal between the interrupted run and its continuation: they decide
#: what is trained and how. Everything else (trainer, loggers, output files) may change, and
#: ``train_tasks`` may grow (the trained tasks must stay its first tasks), to extend a run.
SAME_KEYS: tuple[str, ...] = (
    "pipeline",
    "cl_paradigm",
    "cl_dataset",
    "backbone",
    "cl_algorithm",
    "optimizer",
    "lr_scheduler",
    "global_seed",
    "batch_norm_statistics",
)


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU) RNG states, as tensors and plain containers only.

    NumPy's key array becomes a tensor so that the file loads with ``weights_only=True``.
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def save_resume_state(run_dir: Path, cfg: DictConfig, **state: Any) -> Path:
    """Write the resume state (``state`` + config + RNG states + checksum) atomically.

    Returns:
        The file's path. A failed write (a full disk) leaves the previous file and no temporary
        file.
    """
    return model_file.write(
        run_dir / RESUME_FILE,
        {"config": OmegaConf.to_container(cfg, resolve=True), "rng": rng_state(), **state},
    )


def resume_file(resume: str | Path) -> Path:
    """The resume state file of the run dir ``resume``.

    The dir is checked for links out of it first (a continuation writes into it).

    Raises:
        PipelineConfigError: ``resume`` is not a dir, or holds no resume state.
        RunDirLinkError: see :func:`clarena.experiments.run_dir.check_run_dir`.
    """
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise PipelineConfigError(
            f"resume='{resume}' is not a directory. Pass the output dir of the interrupted run "
            f"(the dir holding results/ and {RESUME_FILE})."
        )
    check_run_dir(run_dir)
    path = run_dir / RESUME_FILE
    if not path.is_file():
        raise PipelineConfigError(
            f"resume='{resume}' holds no {RESUME_FILE}: the run there finished no task yet, is "
            f"not a CL main experiment, or ran with resume_state=false. Start it afresh without "
            f"resume=."
        )
    return path


def load_resume_state(resume: str | Path) -> dict[str, Any]:
    """Load and verify the resume state of the run dir ``resume``.

    Raises:
        PipelineConfigError: as :func:`resume_file`.
        ModelFileError: the file is empty, truncated or corrupt.
    """
    path = resume_file(resume)
    return model_file.read(path, f"resume file '{path}'", required=RESUME_ENTRIES)


def discard_continuation_hydra_dir() -> None:
    """Remove the ``.hydra/resume_<time>/`` folder Hydra wrote for a refused continuation.

    ``resume=`` sends the continuation's Hydra files there (see ``clarena.experiments.cli``);
    when the resume is refused nothing ran, so the folder is left out of the run dir.
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    subdir = Path(hydra_cfg.output_subdir or "")
    if subdir.parent.name == ".hydra" and subdir.name.startswith("resume_"):
        shutil.rmtree(Path(hydra_cfg.runtime.output_dir) / subdir, ignore_errors=True)


def check_same_experiment(saved: Mapping[str, Any], cfg: DictConfig) -> None:
    """Raise :class:`PipelineConfigError` when ``cfg`` trains differently from the saved run."""
    current = OmegaConf.to_container(cfg, resolve=True)
    differing = [key for key in SAME_KEYS if saved.get(key) != current.get(key)]
    if differing:
        raise PipelineConfigError(
            f"resume: the config differs from the interrupted run's in {', '.join(differing)} "
            f"(e.g. {differing[0]}: saved {saved.get(differing[0])!r}, now "
            f"{current.get(differing[0])!r}). Resume with the same experiment and overrides, or "
            f"start a new run."
        )
