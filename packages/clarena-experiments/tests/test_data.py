from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clarena.experiments.running.data import (
    CLDataModule,
    DatasetNotFoundError,
    MTLDataModule,
    STLDataModule,
    load_local_source,
    load_source,
)
from clarena.experiments.running.data.synthetic_files import write_synthetic_files


def test_digits_are_28x28_in_unit_range_and_split_without_overlap() -> None:
    splits = load_source("digits")
    assert splits.train_images.shape[1:] == (1, 28, 28)
    assert splits.num_classes == 10
    total = len(splits.train_labels) + len(splits.val_labels) + len(splits.test_labels)
    assert total == 1797
    assert len(splits.test_labels) == round(0.2 * 1797)
    for images in (splits.train_images, splits.val_images, splits.test_images):
        assert float(images.min()) >= 0.0
        assert float(images.max()) <= 1.0
    assert float(splits.train_images.max()) == 1.0
    again = load_source("digits")
    assert torch.equal(again.test_labels, splits.test_labels)
    other = load_source("digits", split_seed=1)
    assert not torch.equal(other.test_labels, splits.test_labels)


def test_rgb32_option_repeats_the_grey_channel() -> None:
    splits = load_source("digits", image_size=32, channels=3)
    assert splits.train_images.shape[1:] == (3, 32, 32)
    assert torch.equal(splits.train_images[:, 0], splits.train_images[:, 2])


def test_permuted_sequence_permutes_pixels_and_keeps_task_1() -> None:
    module = CLDataModule(sequence="permuted", num_tasks=3)
    source = module.sequence.splits
    images_1, labels_1 = module.sequence.dataset(1, "test").tensors
    images_2, labels_2 = module.sequence.dataset(2, "test").tensors
    assert torch.equal(images_1, source.test_images)
    assert torch.equal(labels_1, labels_2)
    assert not torch.equal(images_1, images_2)
    # Same pixel values per image, in another order.
    assert torch.equal(
        images_1.flatten(1).sort(dim=1).values, images_2.flatten(1).sort(dim=1).values
    )
    assert module.num_classes(3) == 10


def test_split_sequence_gives_local_labels() -> None:
    module = CLDataModule(sequence="split", class_split=[[0, 1], [2, 3], [7, 9]])
    assert module.num_tasks == 3
    source = module.sequence.splits
    _, labels = module.sequence.dataset(3, "train").tensors
    assert set(labels.tolist()) == {0, 1}
    expected = int(((source.train_labels == 7) | (source.train_labels == 9)).sum())
    assert len(labels) == expected
    assert int((labels == 1).sum()) == int((source.train_labels == 9).sum())
    module.setup_task_id(2)
    batch_images, batch_labels = next(iter(module.train_dataloader()))
    assert batch_images.shape[1:] == (1, 28, 28)
    assert set(batch_labels.tolist()) <= {0, 1}


def test_split_needs_a_valid_class_split() -> None:
    with pytest.raises(ValueError, match="disjoint"):
        _ = CLDataModule(sequence="split", class_split=[[0, 1], [1, 2]]).num_tasks


def test_mtl_batches_carry_task_ids_and_stl_is_one_task() -> None:
    mtl = MTLDataModule(num_tasks=3)
    images, labels, task_ids = next(iter(mtl.val_dataloader()))
    assert images.shape[1:] == (1, 28, 28)
    assert labels.shape == task_ids.shape == (images.shape[0],)
    assert set(mtl._joint("val").datasets[2].tensors[2].tolist()) == {3}
    assert len(mtl.test_dataloader()) == 3
    stl = STLDataModule()
    assert stl.num_classes(stl.task_id) == 10
    assert len(stl.test_dataloader().dataset) == round(0.2 * 1797)


def test_missing_file_root_names_root_and_how_to_get_data(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError, match="does not exist") as error:
        load_source("mnist", root=str(missing))
    assert str(missing) in str(error.value)
    assert "download=True" in str(error.value)
    with pytest.raises(DatasetNotFoundError, match="'data_batch_1' is missing under root") as error:
        load_source("cifar10", root=str(tmp_path))
    assert "cifar-10-batches-py/{data_batch_1..5,test_batch}" in str(error.value)
    with pytest.raises(DatasetNotFoundError, match="needs a local root"):
        load_source("mnist")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_tasks": 3}, r"num_tasks=3 does not divide the source's 10 classes.*\[1, 2, 5, 10\]"),
        ({"num_tasks": 20}, r"num_tasks=20 does not divide .*\[1, 2, 5, 10\]"),
        ({"num_tasks": 3, "classes_per_task": 3}, r"covers 9 of the source's 10 classes"),
        (
            {"num_tasks": 8, "class_split": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]},
            r"num_tasks=8 but class_split has 5 groups",
        ),
        ({"num_tasks": 0}, r"num_tasks must be a positive integer; got 0"),
        ({"source": "imagenet", "num_tasks": 2}, r"unknown source 'imagenet'"),
    ],
)
def test_split_refuses_num_tasks_that_would_drop_or_disagree(
    kwargs: dict[str, object], message: str
) -> None:
    # Refused in the constructor: before any data is read.
    with pytest.raises(ValueError, match=message):
        CLDataModule(sequence="split", **kwargs)


def test_split_by_num_tasks_covers_every_class_once() -> None:
    module = CLDataModule(sequence="split", num_tasks=5)
    assert module.sequence.class_split == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    module = CLDataModule(sequence="split", num_tasks=2, classes_per_task=5)
    assert module.sequence.class_split == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_garbage_files_name_root_layout_and_how_to_get_them(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (raw / f"{split}-{kind}-ubyte").write_bytes(b"garbage")
    with pytest.raises(DatasetNotFoundError) as error:
        load_source("mnist", root=str(tmp_path))
    message = str(error.value)
    assert "'train-images-idx3-ubyte' is not an idx file of 3 dimensions" in message
    assert f"under root '{tmp_path}'" in message
    assert "expected <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte" in message
    assert "download=True" in message


def test_file_sources_are_the_local_readers_as_floats(tmp_path: Path) -> None:
    write_synthetic_files("cifar10", tmp_path, train_count=50, test_count=20)
    floats = load_source("cifar10", root=str(tmp_path), val_fraction=0.0)
    uint8 = load_local_source("cifar10", str(tmp_path), val_fraction=0.0)
    assert floats.num_classes == uint8.num_classes == 10
    assert torch.equal(floats.test_images, uint8.test_images.float() / 255.0)
    assert torch.equal(floats.test_labels, uint8.test_labels)
    assert len(floats.train_labels) == 50


def test_stl_task_id_must_be_a_task() -> None:
    with pytest.raises(ValueError, match=r"task_id must be a task of the sequence.*got 0"):
        STLDataModule(task_id=0)
    with pytest.raises(ValueError, match=r"has tasks 1\.\.5; got task 6"):
        STLDataModule(task_id=6, sequence="split", num_tasks=5).num_classes(6)


@pytest.mark.parametrize("module", [CLDataModule, MTLDataModule, STLDataModule])
@pytest.mark.parametrize(
    ("argument", "value", "expected"),
    [
        (
            "batch_size",
            0,
            "batch_size must be an integer >= 1 (samples per training batch, e.g. "
            "batch_size=64); got 0.",
        ),
        (
            "batch_size",
            2.5,
            "batch_size must be an integer >= 1 (samples per training batch, "
            "e.g. batch_size=64); got 2.5.",
        ),
        (
            "eval_batch_size",
            -1,
            "eval_batch_size must be an integer >= 1 (e.g. eval_batch_size=512); got -1.",
        ),
        (
            "num_workers",
            -1,
            "num_workers must be an integer >= 0 (0 loads the data in the main process); got -1.",
        ),
    ],
)
def test_bad_batch_sizes_and_worker_counts_are_refused_on_construction(
    module: type, argument: str, value: object, expected: str
) -> None:
    extra = {} if module is STLDataModule else {"num_tasks": 2}
    with pytest.raises(ValueError, match=rf"^{module.__name__}: {argument} must be") as error:
        module(**extra, **{argument: value})
    assert str(error.value) == f"{module.__name__}: {expected}"


def test_a_one_sample_last_training_batch_is_dropped_and_evaluation_keeps_every_sample() -> None:
    # 1294 training digits = 3 x 431 + 1: the last batch would hold one sample, which batch
    # norm cannot train on.
    data = CLDataModule(num_tasks=1, batch_size=431, eval_batch_size=431)
    data.setup_task_id(1)
    train = data.train_dataloader()
    assert len(train.dataset) % 431 == 1
    assert [len(labels) for _, labels in train] == [431, 431, 431]
    for loader in (data.val_dataloader(), data.test_dataloader()):
        assert sum(len(labels) for _, labels in loader) == len(loader.dataset)
    # Any other incomplete last batch is kept.
    data = CLDataModule(num_tasks=1, batch_size=430)
    data.setup_task_id(1)
    assert [len(labels) for _, labels in data.train_dataloader()] == [430, 430, 430, 4]
