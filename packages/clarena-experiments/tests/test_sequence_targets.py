"""Each task sequence is its own config target with only its own arguments (#24).

``PermutedCLDataModule`` ... compose a typed sequence spec with a DataModule; the 0.1 flat form
``CLDataModule(sequence=..., ...)`` (saved model files, upstream configs) builds the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clarena.experiments import cli
from clarena.experiments.running import data
from clarena.experiments.running.data import (
    FLAT_TARGETS,
    CLDataModule,
    MTLDataModule,
    PermutedCLDataModule,
    PermutedSTLDataModule,
    PermutedTasks,
    RotatedCLDataModule,
    SplitCLDataModule,
    SplitTasks,
    STLDataModule,
)
from clarena.experiments.runs.safe_config import allowed_target

DATASET_GROUPS = {"cl_dataset": "CL", "mtl_dataset": "MTL", "stl_dataset": "STL"}
KINDS = {
    "Permuted": "permuted",
    "Split": "split",
    "Rotated": "rotated",
    "MultiSource": "multi_source",
}


def shipped_dataset_configs() -> list[tuple[str, Path]]:
    root = cli.shipped_config_dir()
    return [
        (group, path) for group in DATASET_GROUPS for path in sorted((root / group).glob("*.yaml"))
    ]


@pytest.mark.parametrize(
    ("group", "path"), shipped_dataset_configs(), ids=lambda value: getattr(value, "name", value)
)
def test_each_shipped_dataset_names_its_sequence_target_and_builds_the_01_flat_forms_data(
    group: str, path: Path
) -> None:
    config = OmegaConf.load(path)
    module, _, name = str(config._target_).rpartition(".")
    assert module == "clarena.experiments.data"
    assert name in FLAT_TARGETS
    assert name.endswith(f"{DATASET_GROUPS[group]}DataModule")
    assert "sequence" not in config
    built = instantiate(config)  # the constructors read no file
    # The same config in the 0.1 flat form: the paradigm's DataModule plus `sequence: <kind>`.
    kind = KINDS[name.removesuffix(f"{DATASET_GROUPS[group]}DataModule")]
    legacy = OmegaConf.merge(
        config,
        {
            "_target_": f"clarena.experiments.data.{DATASET_GROUPS[group]}DataModule",
            "sequence": kind,
        },
    )
    old = instantiate(legacy)
    assert type(built) is type(old)
    assert built.spec == old.spec
    assert built.spec.kind == kind
    for attribute in ("batch_size", "eval_batch_size", "num_workers"):
        assert getattr(built, attribute) == getattr(old, attribute)
    for transform in ("train_transform", "eval_transform"):
        new_state, old_state = vars(getattr(built, transform)), vars(getattr(old, transform))
        assert new_state.keys() == old_state.keys()
        for key, value in new_state.items():
            same = (
                torch.equal(value, old_state[key])
                if isinstance(value, torch.Tensor)
                else value == old_state[key]
            )
            assert same, (transform, key)


def test_flat_target_and_01_flat_form_serve_identical_batches() -> None:
    new = PermutedCLDataModule(source="digits", num_tasks=3, permutation_seed=4, batch_size=16)
    old = CLDataModule(
        sequence="permuted", source="digits", num_tasks=3, permutation_seed=4, batch_size=16
    )
    for task_id in (1, 3):
        for module in (new, old):
            module.setup_task_id(task_id)
        for split in ("train", "test"):
            new_images, new_labels = new.sequence.dataset(task_id, split).tensors
            old_images, old_labels = old.sequence.dataset(task_id, split).tensors
            assert torch.equal(new_images, old_images)
            assert torch.equal(new_labels, old_labels)


def test_composed_spec_equals_the_flat_target() -> None:
    spec = SplitTasks(source="digits", class_split=[[0, 1], [2, 3]])
    composed = CLDataModule(spec, batch_size=8)
    flat = SplitCLDataModule(source="digits", class_split=[[0, 1], [2, 3]], batch_size=8)
    assert composed.spec == flat.spec == spec
    assert composed.num_tasks == 2
    assert composed.num_classes(2) == 2
    with pytest.raises(
        TypeError, match=r"got 'num_tasks' beside a sequence spec; give them to SplitTasks"
    ):
        CLDataModule(spec, num_tasks=2)


@pytest.mark.parametrize(
    ("target", "key", "message"),
    [
        (
            SplitCLDataModule,
            "num_task",
            r"^SplitCLDataModule\(\) got an unknown argument 'num_task'\. Did you mean 'num_tasks'\?",
        ),
        (
            RotatedCLDataModule,
            "angle",
            r"^RotatedCLDataModule\(\) got an unknown argument 'angle'\. Did you mean 'angles'\?",
        ),
        (
            PermutedCLDataModule,
            "class_split",
            r"^PermutedCLDataModule\(\) got an unknown argument 'class_split'\.",
        ),
    ],
)
def test_an_argument_of_another_sequence_is_refused_naming_the_nearest(
    target: Callable[..., object], key: str, message: str
) -> None:
    with pytest.raises(TypeError, match=message) as error:
        target(source="digits", num_tasks=2, **{key: 1})
    assert "\n" not in str(error.value)


def test_the_cli_refuses_another_sequences_key_before_training(
    run_clarena: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_clarena("example_clmain_train", "cl_dataset=split_digits", "+cl_dataset.num_task=3")
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (
        "clarena: PipelineConfigError: unknown config key cl_dataset.num_task: did you mean "
        "cl_dataset.num_tasks? Fix or remove it (an override can delete it with "
        "~cl_dataset.num_task); clarena refuses keys it does not read, so that a misspelt setting "
        "is never silently ignored."
    )


def test_cli_override_of_num_tasks_keeps_working(run_clarena: Callable[..., Path]) -> None:
    run_dir = run_clarena(
        "example_clmain_train",
        "cl_dataset.num_tasks=2",
        "train_tasks=2",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=1",
        "++trainer.limit_val_batches=1",
    )
    header = (run_dir / "results" / "acc.csv").read_text().splitlines()[0]
    assert header.split(",")[-2:] == ["test_on_task_1", "test_on_task_2"]


def test_stl_target_counts_tasks_up_to_task_id() -> None:
    module = PermutedSTLDataModule(source="digits", task_id=3)
    assert isinstance(module, STLDataModule)
    assert module.spec == PermutedTasks(source="digits", num_tasks=3)
    assert module.task_id == 3


def test_mtl_target_builds_the_mtl_module() -> None:
    assert isinstance(data.PermutedMTLDataModule(num_tasks=2), MTLDataModule)


def test_dataset_identity_reads_both_forms() -> None:
    new = OmegaConf.create(
        {
            "_target_": "clarena.experiments.data.MultiSourceCLDataModule",
            "sources": ["mnist", "svhn"],
        }
    )
    old = OmegaConf.create(
        {
            "_target_": "clarena.experiments.data.CLDataModule",
            "sequence": "split",
            "source": "cifar10",
        }
    )
    assert data.dataset_identity(new) == ("multi_source", ["mnist", "svhn"])
    assert data.dataset_identity(old) == ("split", ["cifar10"])
    assert data.dataset_identity(
        OmegaConf.create({"_target_": "clarena.experiments.data.SplitSTLDataModule"})
    ) == ("split", ["digits"])


def test_the_allowlist_admits_what_it_did_plus_the_sequence_targets_and_specs() -> None:
    admitted = {name for name in data.__all__ if allowed_target(f"clarena.experiments.data.{name}")}
    before = {
        "CLDataModule",
        "MTLDataModule",
        "STLDataModule",
        "MultiSourceSequence",
        "PermutedSequence",
        "RotatedSequence",
        "SplitSequence",
        "TaskSequence",
    }
    specs = {"SequenceSpec", "PermutedTasks", "SplitTasks", "RotatedTasks", "MultiSourceTasks"}
    assert admitted == before | set(FLAT_TARGETS) | specs
    assert not allowed_target("clarena.experiments.data.FlatDataModule")
    assert not allowed_target("clarena.experiments.data.dataset_identity")
