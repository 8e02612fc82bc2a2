"""Local file-format sources (uint8), rotated / multi-source sequences, per-batch transforms.

Every source is written in its real on-disk format from small random data
(:func:`write_synthetic_files`) and read back; references are computed another way
(torchvision, pickle, scipy, PIL, ``torch.rot90``).
"""

from __future__ import annotations

import csv
import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from clarena.experiments.cli import shipped_config_dir
from clarena.experiments.running.data import (
    LOCAL_SOURCES,
    BatchTransform,
    CLDataModule,
    DatasetNotFoundError,
    MTLDataModule,
    load_local_source,
)
from clarena.experiments.running.data.synthetic_files import write_synthetic_files
from clarena.experiments.testing import quick_run_overrides

COUNTS = {"train_count": 120, "test_count": 40}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every source's files, small, under one root."""
    folder = tmp_path_factory.mktemp("data")
    for source in LOCAL_SOURCES:
        if source == "tinyimagenet":
            write_synthetic_files(source, folder, train_count=4, test_count=40, num_classes=10)
        elif source == "cifar100":
            write_synthetic_files(source, folder, train_count=200, test_count=100)
        else:
            write_synthetic_files(source, folder, **COUNTS)
    return folder


def test_mnist_readers_match_torchvision(root: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    for source, reference in (
        ("mnist", torchvision.datasets.MNIST),
        ("fashion_mnist", torchvision.datasets.FashionMNIST),
    ):
        splits = load_local_source(source, str(root), val_fraction=0.0)
        expected = reference(str(root), train=False, download=False)
        assert splits.test_images.dtype == torch.uint8
        assert torch.equal(splits.test_images[:, 0], expected.data)
        assert torch.equal(splits.test_labels, expected.targets)
        train = reference(str(root), train=True, download=False)
        assert torch.equal(splits.train_images[:, 0], train.data)


def test_cifar_svhn_tinyimagenet_readers_match_the_files(root: Path) -> None:
    from PIL import Image
    from scipy.io import loadmat

    with (root / "cifar-100-python" / "test").open("rb") as file:
        raw = pickle.load(file, encoding="bytes")
    splits = load_local_source("cifar100", str(root))
    assert splits.num_classes == 100
    assert torch.equal(splits.test_images.flatten(1), torch.from_numpy(raw[b"data"]))
    assert splits.test_labels.tolist() == raw[b"fine_labels"]

    batches = []
    for index in range(1, 6):
        with (root / "cifar-10-batches-py" / f"data_batch_{index}").open("rb") as file:
            batches.append(pickle.load(file, encoding="bytes"))
    cifar10 = load_local_source("cifar10", str(root), val_fraction=0.0)
    assert torch.equal(
        cifar10.train_images.flatten(1),
        torch.from_numpy(np.concatenate([batch[b"data"] for batch in batches])),
    )

    mat = loadmat(root / "test_32x32.mat")
    svhn = load_local_source("svhn", str(root))
    assert torch.equal(svhn.test_images[3].permute(1, 2, 0), torch.from_numpy(mat["X"][..., 3]))
    assert svhn.test_labels.tolist() == [int(y) % 10 for y in mat["y"].ravel()]
    assert sorted(set(svhn.test_labels.tolist())) == list(range(10))

    tiny = load_local_source("tinyimagenet", str(root))
    folder = root / "tiny-imagenet-200"
    wnids = (folder / "wnids.txt").read_text().split()
    rows = list(csv.reader((folder / "val" / "val_annotations.txt").open(), delimiter="\t"))
    assert tiny.num_classes == 10
    assert tiny.test_labels.tolist() == [wnids.index(row[1]) for row in rows]
    with Image.open(folder / "val" / "images" / rows[5][0]) as image:
        decoded = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(tiny.test_images[5], decoded)
    assert tiny.train_images.shape[1:] == (3, 64, 64)


def test_validation_rows_are_split_off_in_place(root: Path) -> None:
    whole = load_local_source("cifar10", str(root), val_fraction=0.0)
    splits = load_local_source("cifar10", str(root), val_fraction=0.25, split_seed=3)
    assert len(splits.val_labels) == round(0.25 * len(whole.train_labels))
    # Train and validation together are the training images, each once.
    joined = torch.cat([splits.train_images, splits.val_images]).flatten(1)
    assert sorted(map(bytes, joined.numpy())) == sorted(
        map(bytes, whole.train_images.flatten(1).numpy())
    )
    # One storage for both: no copy of the images.
    assert splits.val_images.untyped_storage().data_ptr() == (
        splits.train_images.untyped_storage().data_ptr()
    )
    again = load_local_source("cifar10", str(root), val_fraction=0.25, split_seed=3)
    assert torch.equal(again.val_images, splits.val_images)
    other = load_local_source("cifar10", str(root), val_fraction=0.25, split_seed=4)
    assert not torch.equal(other.val_images, splits.val_images)


def test_resize_and_channel_match_keep_uint8(root: Path) -> None:
    splits = load_local_source("mnist", str(root), image_size=32, channels=3)
    assert splits.train_images.shape[1:] == (3, 32, 32)
    assert splits.train_images.dtype == torch.uint8
    assert torch.equal(splits.train_images[:, 0], splits.train_images[:, 2])
    reference = torch.nn.functional.interpolate(
        load_local_source("mnist", str(root)).test_images.float(),
        size=(32, 32),
        mode="bilinear",
        align_corners=False,
    )
    assert torch.equal(splits.test_images[:, :1], reference.round().clamp(0, 255).byte())


@pytest.mark.parametrize("source", LOCAL_SOURCES)
def test_missing_root_names_root_layout_and_where_to_get(source: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as error:
        load_local_source(source, str(missing))
    message = str(error.value)
    assert "\n" not in message
    assert f"root '{missing}'" in message
    assert "does not exist" in message
    assert "expected <root>/" in message
    assert "http" in message
    with pytest.raises(DatasetNotFoundError, match="is missing"):
        load_local_source(source, str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="needs a local root"):
        load_local_source(source, None)


def test_malformed_files_are_named(tmp_path: Path) -> None:
    write_synthetic_files("mnist", tmp_path, train_count=10, test_count=10)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DatasetNotFoundError, match="'t10k-images-idx3-ubyte' is not an idx file"):
        load_local_source("mnist", str(tmp_path))
    write_synthetic_files("cifar100", tmp_path, train_count=10, test_count=10)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"garbage")
    with pytest.raises(DatasetNotFoundError, match="'train' is not a CIFAR pickle"):
        load_local_source("cifar100", str(tmp_path))
    write_synthetic_files("svhn", tmp_path, train_count=10, test_count=10)
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetNotFoundError, match=r"'test_32x32\.mat' is not a \.mat file"):
        load_local_source("svhn", str(tmp_path))
    write_synthetic_files("tinyimagenet", tmp_path, train_count=1, test_count=2, num_classes=2)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(DatasetNotFoundError, match=r"val_annotations\.txt has a bad line"):
        load_local_source("tinyimagenet", str(tmp_path))
    annotations.write_text("val_0.JPEG\tn00000000\t0\t0\t63\t63\n")
    (
        tmp_path / "tiny-imagenet-200" / "train" / "n00000001" / "images" / "n00000001_0.JPEG"
    ).write_bytes(b"truncated")
    with pytest.raises(DatasetNotFoundError, match=r"'n00000001_0\.JPEG' is not a readable image"):
        load_local_source("tinyimagenet", str(tmp_path))


def test_batch_transform_scales_normalises_and_augments() -> None:
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(16)
    samples = list(zip(images, labels, strict=True))
    plain, plain_labels = BatchTransform()(samples)
    assert plain.dtype == torch.float32
    assert torch.equal(plain, images.float() / 255)
    assert torch.equal(plain_labels, labels)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    normalised, _ = BatchTransform(mean=mean, std=std)(samples)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    assert torch.allclose(normalised, expected, atol=1e-6)

    torch.manual_seed(0)
    cropped, _ = BatchTransform(crop_padding=2, horizontal_flip=True)(samples)
    padded = torch.nn.functional.pad(images.float() / 255, (2, 2, 2, 2))
    shifted_or_flipped = 0
    for index in range(16):
        windows = [
            padded[index, :, top : top + 8, left : left + 8]
            for top in range(5)
            for left in range(5)
        ]
        candidates = windows + [window.flip(-1) for window in windows]
        assert any(torch.equal(cropped[index], window) for window in candidates)
        shifted_or_flipped += not torch.equal(cropped[index], plain[index])
    assert shifted_or_flipped > 8


def test_augmentation_only_on_training_loaders(root: Path) -> None:
    module = CLDataModule(
        sequence="split",
        source="cifar10",
        root=str(root),
        num_tasks=5,
        crop_padding=4,
        horizontal_flip=True,
        batch_size=512,
        eval_batch_size=512,
    )
    module.setup_task_id(1)
    train = module.train_dataloader()
    assert train.collate_fn.crop_padding == 4
    first, second = (next(iter(module.task_dataloader(1, "test")))[0] for _ in range(2))
    assert torch.equal(first, second)
    images, _ = module.sequence.dataset(1, "test").tensors
    assert torch.equal(first, images.float() / 255)
    assert not torch.equal(next(iter(train))[0], next(iter(train))[0])


def test_worker_processes_load_uint8_batches(root: Path) -> None:
    module = CLDataModule(
        sequence="split",
        source="cifar100",
        root=str(root),
        num_tasks=10,
        num_workers=2,
        batch_size=4,
        mean=[0.5, 0.5, 0.5],
        std=[0.5, 0.5, 0.5],
    )
    module.setup_task_id(2)
    batches = list(module.train_dataloader())
    images = torch.cat([batch[0] for batch in batches])
    labels = torch.cat([batch[1] for batch in batches])
    _, expected = module.sequence.dataset(2, "train").tensors
    assert images.dtype == torch.float32
    assert float(images.min()) >= -1.0
    assert float(images.max()) <= 1.0
    assert sorted(labels.tolist()) == sorted(expected.tolist())


def test_rotated_sequence_rotates_each_task(root: Path) -> None:
    module = CLDataModule(
        sequence="rotated", source="mnist", root=str(root), num_tasks=3, angles=[0, 90, 45]
    )
    task_1, labels_1 = module.sequence.dataset(1, "test").tensors
    task_2, labels_2 = module.sequence.dataset(2, "test").tensors
    assert task_2.dtype == torch.uint8
    assert torch.equal(task_1, module.sequence.splits.test_images)
    assert torch.equal(labels_1, labels_2)
    assert torch.equal(task_2, torch.rot90(task_1, k=1, dims=(2, 3)))
    assert module.num_classes(3) == 10
    assert CLDataModule(sequence="rotated", num_tasks=4).sequence.angles == {
        1: 0.0,
        2: 45.0,
        3: 90.0,
        4: 135.0,
    }


def test_multi_source_sequence_gives_one_source_per_task(root: Path) -> None:
    sources = ["mnist", "fashion_mnist", "svhn", "cifar10"]
    module = MTLDataModule(
        sequence="multi_source", sources=sources, root=str(root), image_size=32, channels=3
    )
    assert module.num_tasks == 4
    svhn = load_local_source("svhn", str(root))
    images, labels = module.sequence.dataset(3, "test").tensors
    assert torch.equal(images, svhn.test_images)
    assert torch.equal(labels, svhn.test_labels)
    batch = next(iter(module.train_dataloader()))
    assert batch[0].shape[1:] == (3, 32, 32)
    assert set(batch[2].tolist()) <= {1, 2, 3, 4}
    with pytest.raises(ValueError, match="differ in shape"):
        _ = CLDataModule(sequence="multi_source", sources=sources, root=str(root)).sequence


# Each shipped sequence / paper setup for two tasks on synthetic files of the real shape.
PIPELINE_RUNS = [
    ("example_clmain_train", ["cl_dataset=permuted_mnist"]),
    ("example_clmain_train", ["cl_dataset=rotated_mnist", "cl_dataset.num_tasks=2"]),
    ("example_clmain_dil", ["cl_dataset=rotated_mnist", "cl_dataset.num_tasks=2"]),
    ("example_clmain_hat_resnet18", ["cl_dataset=multi_source"]),
    ("example_clmain_hat_resnet18", ["cl_dataset=split_cifar10"]),
    ("example_clmain_hat_resnet18", ["cl_dataset=split_cifar100_20"]),
    ("example_clmain_hat_resnet18", ["cl_dataset=split_tinyimagenet", "cl_dataset.num_tasks=5"]),
    ("hat_split_cifar100", []),
    ("hat_pmnist", []),
    ("adahat_pmnist", ["cl_dataset.num_tasks=2"]),
    ("adahat_split_cifar100", []),
    ("wsn_pmnist", []),
    ("wsn_split_cifar100", []),
    ("wsn_split_tinyimagenet", ["cl_dataset.num_tasks=5"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("experiment", "overrides"), PIPELINE_RUNS)
def test_sequence_runs_two_tasks_through_the_pipeline(
    run_clarena: Callable[..., Path], root: Path, experiment: str, overrides: list[str]
) -> None:
    run_dir = run_clarena(
        experiment,
        *overrides,
        f"cl_dataset.root={root}",
        "trainer=cpu",
        "train_tasks=2",
        "num_threads=1",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        "cl_dataset.batch_size=8",
        "cl_dataset.eval_batch_size=64",
    )
    rows = list(csv.DictReader((run_dir / "results" / "acc.csv").open()))
    assert len(rows) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "overrides"),
    [
        ("example_mtl_train", ["mtl_dataset=permuted_mnist", "mtl_dataset.num_tasks=2"]),
        ("example_mtl_train", ["mtl_dataset=split_cifar100", "backbone.input_dim=3072"]),
        ("example_mtl_train", ["mtl_dataset=multi_source", "backbone.input_dim=3072"]),
        ("example_stl_train", ["stl_dataset=cifar100", "backbone.input_dim=3072"]),
        (
            "example_stl_train",
            [
                "stl_dataset=tinyimagenet",
                "stl_dataset.classes_per_task=10",
                "backbone.input_dim=12288",
            ],
        ),
    ],
)
def test_mtl_and_stl_configs_run(
    run_clarena: Callable[..., Path], root: Path, experiment: str, overrides: list[str]
) -> None:
    group = "mtl_dataset" if "mtl" in experiment else "stl_dataset"
    run_dir = run_clarena(
        experiment,
        *overrides,
        f"{group}.root={root}",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        f"{group}.batch_size=8",
    )
    assert run_dir.is_dir()


def test_paper_setup_without_files_exits_1_with_one_line(
    run_clarena: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_clarena("hat_split_cifar100", f"cl_dataset.root={tmp_path}", "trainer=cpu")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    line = err[err.index("clarena: ") :].splitlines()[0]
    assert f"'train' is missing under root '{tmp_path}'" in line
    assert "expected <root>/cifar-100-python/{train,test}" in line
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in line
    assert "Traceback" not in err


#: Where Debian's dataset-fashion-mnist package installs the four original files.
DEBIAN_FASHION_ROOT = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def debian_fashion_root(tmp_path: Path) -> Path:
    """Fashion-MNIST as Debian's ``dataset-fashion-mnist`` lays it out: the four original
    ``*-ubyte.gz`` files in one folder (random images; the package itself is not needed)."""
    write_synthetic_files("fashion_mnist", tmp_path / "tree", **COUNTS)
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for path in (tmp_path / "tree" / "FashionMNIST" / "raw").iterdir():
        (root / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    return root


@pytest.mark.parametrize(
    ("experiment", "sequence"),
    [("example_clmain_fashion_permuted", "permuted"), ("example_clmain_fashion_split", "split")],
)
def test_fashion_mnist_examples_read_the_debian_package_layout(
    run_clarena: Callable[..., Path], debian_fashion_root: Path, experiment: str, sequence: str
) -> None:
    config = (shipped_config_dir() / "cl_dataset" / f"{sequence}_fashion_mnist.yaml").read_text()
    assert f"root: {DEBIAN_FASHION_ROOT}\n" in config
    assert "source: fashion_mnist\n" in config
    run_dir = run_clarena(
        experiment,
        *quick_run_overrides(2),
        f"cl_dataset.root={debian_fashion_root}",
        "cl_dataset.batch_size=8",
    )
    rows = list(csv.DictReader((run_dir / "results" / "acc.csv").open()))
    assert [row["after_training_task"] for row in rows] == ["1", "2"]
