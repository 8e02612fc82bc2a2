"""clarena.experiments shows its two halves, and the 0.1 module paths still name them (#24).

``running`` holds what runs an experiment, ``runs`` what manages a run; the old paths
(``clarena.experiments.data`` ...) are the same module objects, so saved configs' targets,
entry points, pickles and ``mock.patch`` paths keep working.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import pytest
from hydra.utils import get_object

import clarena.experiments
from clarena.experiments import _moved
from clarena.experiments.running.algorithms.registry import ENTRY_POINT_GROUP, entry_point_targets
from clarena.experiments.runs.safe_config import allowed_target

PACKAGE = Path(clarena.experiments.__file__).parent


def test_each_half_holds_its_modules_and_nothing_is_left_at_the_old_place() -> None:
    for half, names in (("running", _moved.RUNNING), ("runs", _moved.RUNS)):
        for name in names:
            found = (PACKAGE / half / f"{name}.py").is_file() or (
                PACKAGE / half / name / "__init__.py"
            ).is_file()
            assert found, f"{half}/{name}"
            assert not (PACKAGE / f"{name}.py").exists()
            assert not (PACKAGE / name).exists()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("clarena.experiments.data", "clarena.experiments.running.data"),
        ("clarena.experiments.data.datamodules", "clarena.experiments.running.data.datamodules"),
        ("clarena.experiments.algorithms.hat", "clarena.experiments.running.algorithms.hat"),
        ("clarena.experiments.pipelines.cl", "clarena.experiments.running.pipelines.cl"),
        ("clarena.experiments.results", "clarena.experiments.running.results"),
        ("clarena.experiments.run_lock", "clarena.experiments.runs.run_lock"),
        ("clarena.experiments.safe_config", "clarena.experiments.runs.safe_config"),
        ("clarena.experiments.model_file", "clarena.experiments.runs.model_file"),
    ],
)
def test_the_old_path_is_the_same_module(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new
    assert _moved.new_name(old) == new
    assert _moved.old_name(new) == old


def test_saved_targets_resolve_and_pickles_round_trip_under_both_names() -> None:
    from clarena.experiments.running.data import CLDataModule, PermutedTasks

    assert get_object("clarena.experiments.data.CLDataModule") is CLDataModule
    assert get_object("clarena.experiments.algorithms.HAT") is get_object(
        "clarena.experiments.running.algorithms.HAT"
    )
    spec = PermutedTasks(num_tasks=3)
    assert pickle.loads(pickle.dumps(spec)) == spec
    # A 0.1 pickle names the class by its 0.1 module (protocol 0: names as text, no lengths).
    current = pickle.dumps(spec, protocol=0)
    legacy = current.replace(
        b"clarena.experiments.running.data.specs", b"clarena.experiments.data.specs"
    )
    assert legacy != current
    assert pickle.loads(legacy) == spec


def test_the_allowlist_admits_the_01_names_and_their_new_spelling_alike() -> None:
    for name in ("CLDataModule", "SplitCLDataModule", "PermutedSequence"):
        assert allowed_target(f"clarena.experiments.data.{name}")
        assert allowed_target(f"clarena.experiments.running.data.{name}")
    for target in sorted(entry_point_targets(ENTRY_POINT_GROUP)):
        if target.startswith("clarena.experiments."):
            assert allowed_target(target)
            assert allowed_target(_moved.new_name(target) or target)
    assert not allowed_target("clarena.experiments.running.data.dataset_identity")
    assert not allowed_target("clarena.experiments.runs.run_lock.RunLock")
