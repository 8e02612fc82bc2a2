"""A model or resume file cannot run code, and a damaged one is an error naming it.

Crafted files are 0.1 fixtures (``fixtures/checkpoints-0.1``, copied from what clarena 0.1
saved) with an edited config. A refused target is ``shutil.copyfile`` of a marker file: the copy
must not exist afterwards.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clarena.experiments import cli
from clarena.experiments.running.pipelines import common
from clarena.experiments.runs import model_file
from clarena.experiments.runs.resume import RESUME_FILE, save_resume_state
from clarena.experiments.runs.safe_config import (
    BUILT_SECTIONS,
    UntrustedConfigError,
    allowed_target,
    checked_config,
    config_targets,
)
from clarena.experiments.testing import quick_run_overrides

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints-0.1"
CONFIGS = cli.shipped_config_dir()
EVAL_EXPERIMENT = {
    "example_clmain_train": "example_clmain_eval",
    "example_clmain_hat": "example_clmain_eval",
    "example_clmain_wsn": "example_clmain_eval",
    "example_mtl_train": "example_mtl_eval",
    "example_stl_train": "example_stl_eval",
}


def load(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / name / "saved_model.pt", map_location="cpu", weights_only=True)


def craft(path: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Save fixture ``name`` with its config edited by ``edit`` to ``path``."""
    content = load(name)
    content["config"] = copy.deepcopy(content["config"])
    edit(content["config"])
    torch.save(content, path)
    return path


def evaluate(tmp_path: Path, model: Path, experiment: str, *overrides: str) -> Path:
    """Run the eval experiment on ``model`` quietly (no progress bar, no plots)."""
    run_dir = tmp_path / "eval"
    quiet = ["callbacks=none"]
    if experiment == "example_clmain_eval":
        quiet += ["metrics.accuracy_matrix_plot=null", "metrics.average_accuracy_plot=null"]
    cli.main(
        [
            f"experiment={experiment}",
            f"model_path={model}",
            f"output_dir={run_dir}",
            *quiet,
            *overrides,
        ]
    )
    return run_dir


def last_line(path: Path) -> str:
    return path.read_text().strip().splitlines()[-1]


@pytest.fixture
def marker(tmp_path: Path) -> tuple[Path, Path]:
    """A file and the path a would-be ``shutil.copyfile`` copies it to."""
    source = tmp_path / "secret.txt"
    source.write_text("secret")
    return source, tmp_path / "copied.txt"


def copy_call(marker: tuple[Path, Path]) -> dict[str, Any]:
    return {"_target_": "shutil.copyfile", "_args_": [str(marker[0]), str(marker[1])]}


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for parent in parents:
        config = config[parent]
    if last.endswith("]"):
        last, index = last[:-1].split("[")
        config[last][int(index)] = value
    else:
        config[last] = value


# (fixture, key of the copy call, key the message names)
ATTACKS = [
    ("example_clmain_train", "cl_dataset", "cl_dataset"),
    ("example_clmain_train", "cl_dataset.root", "cl_dataset.root"),
    ("example_clmain_train", "backbone", "backbone"),
    ("example_clmain_hat", "backbone.hidden_dims[1]", "backbone.hidden_dims[1]"),
    ("example_clmain_wsn", "backbone.activation_layer", "backbone.activation_layer"),
    ("example_clmain_train", "cl_algorithm", "cl_algorithm"),
    ("example_clmain_hat", "cl_algorithm.s_max", "cl_algorithm.s_max"),
    ("example_clmain_train", "heads", "heads"),
    ("example_clmain_train", "optimizer", "optimizer"),
    ("example_clmain_train", "optimizer.lr", "optimizer.lr"),
    ("example_clmain_train", "lr_scheduler", "lr_scheduler"),
    ("example_mtl_train", "mtl_dataset", "mtl_dataset"),
    ("example_mtl_train", "mtl_algorithm", "mtl_algorithm"),
    ("example_stl_train", "stl_dataset.root", "stl_dataset.root"),
    ("example_stl_train", "stl_algorithm", "stl_algorithm"),
]


@pytest.mark.parametrize(("name", "key", "named"), ATTACKS)
def test_a_target_outside_the_allowlist_is_refused_before_anything_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    marker: tuple[Path, Path],
    name: str,
    key: str,
    named: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    model = craft(tmp_path / "shared.pt", name, lambda c: _set(c, key, copy_call(marker)))
    with pytest.raises(SystemExit) as exit_info:
        evaluate(tmp_path, model, EVAL_EXPERIMENT[name])
    assert exit_info.value.code == 1
    assert not marker[1].exists()
    err = capsys.readouterr().err
    assert f"model_path '{model}': config key '{named}' names _target_ 'shutil.copyfile'" in err
    assert "trust_model_file=true" in err


@pytest.mark.parametrize(
    "value",
    [
        # A function, not a data module, exported by an allowed module.
        {"_target_": "clarena.experiments.data.load_source", "name": "digits"},
        # An unregistered name under the backbone registry's module.
        {"_target_": "clarena.backbones.os"},
        {"_target_": "torch.optim.lr_scheduler.warnings"},
        {"_target_": "builtins.exec", "_args_": ["open('x', 'w')"]},
        # An interpolation could build a target after the check.
        "${oc.create:'{_target_: shutil.copyfile}'}",
    ],
)
def test_near_misses_and_interpolations_are_refused(value: Any) -> None:
    config = copy.deepcopy(load("example_clmain_train")["config"])
    config["cl_dataset"]["root"] = value
    with pytest.raises(UntrustedConfigError, match=r"^file: config key 'cl_dataset\.root' names "):
        checked_config(config, "file")


def test_an_interpolation_outside_the_built_sections_is_refused() -> None:
    config = copy.deepcopy(load("example_clmain_train")["config"])
    config["cl_paradigm"] = "${oc.env:HOME}"
    with pytest.raises(UntrustedConfigError, match="config key 'cl_paradigm' names the interp"):
        checked_config(config, "file")


def test_every_target_the_shipped_configs_build_is_allowed() -> None:
    checked = 0
    for path in sorted(CONFIGS.rglob("*.yaml")):
        content = yaml.safe_load(path.read_text()) or {}
        group = path.relative_to(CONFIGS).parts[0]
        sections = [content] if group in BUILT_SECTIONS else []
        sections += [content[key] for key in BUILT_SECTIONS if isinstance(content.get(key), dict)]
        for section in sections:
            for target in config_targets(section):
                assert allowed_target(target), f"{path}: {target}"
                checked += 1
    assert checked >= 40


def test_trust_override_builds_an_unlisted_target_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # builtins.int('5') is harmless but unlisted; without calling it num_tasks would be a dict.
    model = craft(
        tmp_path / "trusted.pt",
        "example_clmain_hat",
        lambda c: _set(c, "cl_dataset.num_tasks", {"_target_": "builtins.int", "_args_": ["5"]}),
    )
    with pytest.raises(SystemExit):
        evaluate(tmp_path, model, "example_clmain_eval")
    assert "names _target_ 'builtins.int'" in capsys.readouterr().err
    run_dir = evaluate(tmp_path, model, "example_clmain_eval", "trust_model_file=true")
    err = capsys.readouterr().err
    assert (
        f"trust_model_file=true: the config of model_path '{model}' is built without the allowlist"
        f" check; cl_dataset.num_tasks names _target_ 'builtins.int'" in err
    )
    assert last_line(run_dir / "results" / "acc.csv") == last_line(
        FIXTURES / "example_clmain_hat" / "acc.csv"
    )


@pytest.mark.parametrize("value", ["no", "off", "0", "yes", "'true'"])
def test_trust_model_file_that_is_not_true_keeps_the_allowlist(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    # bool("no") is True: read that way, trust_model_file=no would call os.makedirs.
    monkeypatch.chdir(tmp_path)
    made = tmp_path / "made_by_the_file"
    model = craft(
        tmp_path / "shared.pt",
        "example_clmain_train",
        lambda c: _set(c, "cl_dataset.root", {"_target_": "os.makedirs", "_args_": [str(made)]}),
    )
    with pytest.raises(SystemExit) as exit_info:
        evaluate(tmp_path, model, "example_clmain_eval", f"trust_model_file={value}")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "trust_model_file must be true or false (unquoted); got " in err
    assert not made.exists()
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EVAL_EXPERIMENT))
def test_every_0_1_model_evaluates_to_the_last_row_of_its_acc_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    model = FIXTURES / name / "saved_model.pt"
    run_dir = evaluate(tmp_path, model, EVAL_EXPERIMENT[name])
    assert last_line(run_dir / "results" / "acc.csv") == last_line(FIXTURES / name / "acc.csv")
    assert "has no checksum (saved by clarena 0.1)" in capsys.readouterr().err
    if EVAL_EXPERIMENT[name] == "example_clmain_eval":
        summary = json.loads((run_dir / "results" / "summary.json").read_text())
        assert summary["trained_tasks"] == [1, 2, 3, 4, 5]
        saved = json.loads((FIXTURES / name / "summary.json").read_text())
        assert summary["final_accuracy_per_task"] == saved["final_accuracy_per_task"]


def checksummed_copy(tmp_path: Path, name: str = "example_stl_train") -> Path:
    """The fixture saved again by today's code, so with a checksum."""
    return model_file.write(tmp_path / "model.pt", load(name))


def flip_tensor_bytes(path: Path, tensor: torch.Tensor, count: int) -> None:
    """Invert ``count`` bytes of ``tensor``'s data where it lies in the file."""
    raw = bytearray(path.read_bytes())
    start = raw.find(tensor.contiguous().view(torch.uint8).numpy().tobytes()[:64])
    assert start > 0
    raw[start : start + count] = bytes(255 - b for b in raw[start : start + count])
    path.write_bytes(bytes(raw))


def _damage(kind: str, path: Path, content: dict[str, Any]) -> None:
    if kind == "flipped":
        flip_tensor_bytes(path, content["state_dict"]["backbone.fc.0.weight"], 4096)
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(bytes(range(256)) * 64)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("flipped", "is corrupt: its contents do not match the SHA-256 recorded when it was saved"),
        ("truncated", "cannot be loaded: it is truncated, corrupt or not a file clarena saved"),
        ("empty", "is an empty file"),
        ("garbage", "cannot be loaded: it is truncated, corrupt or not a file clarena saved"),
    ],
)
def test_a_damaged_model_file_is_an_error_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    model = checksummed_copy(tmp_path)
    _damage(kind, model, load("example_stl_train"))
    with pytest.raises(SystemExit) as exit_info:
        evaluate(tmp_path, model, "example_stl_eval")
    assert exit_info.value.code == 1
    assert f"model_path '{model}' {message}" in capsys.readouterr().err


def test_a_tampered_file_with_a_recomputed_checksum_loads_the_checksum_is_no_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Documented limitation (docs/cl/save-and-evaluate.md): zeroed head weights plus a new
    # checksum verify, and the model answers class 0 for every image.
    monkeypatch.chdir(tmp_path)
    content = load("example_stl_train")
    content["state_dict"]["head.weight"].zero_()
    content["state_dict"]["head.bias"].zero_()
    model = model_file.write(tmp_path / "tampered.pt", content)
    run_dir = evaluate(tmp_path, model, "example_stl_eval")
    datamodule = instantiate(OmegaConf.create(content["config"]["stl_dataset"]))
    labels = torch.cat([batch[1] for batch in datamodule.test_dataloader()])
    with (run_dir / "results" / "acc.csv").open(newline="") as file:
        accuracy = float(next(csv.DictReader(file))["test_on_task_1"])
    assert accuracy == (labels == 0).sum().item() / len(labels)
    assert accuracy < 0.2


def test_the_checksum_sees_one_flipped_bit_and_not_the_key_order() -> None:
    content = load("example_clmain_hat")
    reference = model_file.checksum(content)
    reordered = {**content, "state_dict": dict(reversed(list(content["state_dict"].items())))}
    assert model_file.checksum(dict(reversed(list(reordered.items())))) == reference
    weight = content["state_dict"]["backbone.fc.1.weight"]
    weight.view(torch.int32)[3, 7] ^= 1
    assert model_file.checksum(content) != reference


def test_a_saved_model_round_trips_with_its_checksum(tmp_path: Path) -> None:
    content = load("example_clmain_wsn")
    path = model_file.write(tmp_path / "m.pt", content)
    raw = torch.load(path, weights_only=True)
    assert raw[model_file.CHECKSUM_KEY] == model_file.checksum(content)
    read = model_file.read(path, "m")
    assert model_file.CHECKSUM_KEY not in read
    assert model_file.checksum(read) == model_file.checksum(content)


def test_a_failing_save_leaves_no_temporary_file_and_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = {"pipeline": "CL_MAIN_EXPR"}
    state = {
        "state_dict": {"w": torch.ones(3)},
        "trained_tasks": [1],
        "num_classes": {1: 2},
        "rows": {1: {1: 0.5}},
        "capacities": {},
    }
    resume = save_resume_state(tmp_path, OmegaConf.create(cfg), **state)
    common.save_checkpoint(tmp_path / "saved_model.pt", OmegaConf.create(cfg), {"w": torch.ones(3)})
    before = {p: p.read_bytes() for p in (resume, tmp_path / "saved_model.pt")}

    def full_disk(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_resume_state(tmp_path, OmegaConf.create(cfg), **state)
    with pytest.raises(OSError, match="No space left"):
        common.save_checkpoint(tmp_path / "saved_model.pt", OmegaConf.create(cfg), {})
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["resume_state.pt", "saved_model.pt"]
    assert {p: p.read_bytes() for p in before} == before


#: One short task, as in test_resume.py.
TINY = quick_run_overrides(1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CL run dir holding the resume state of one trained task."""
    run_dir = tmp_path_factory.mktemp("run") / "run"
    cli.main(["experiment=example_clmain_train", f"output_dir={run_dir}", *TINY])
    return run_dir


def _resume(run_dir: Path) -> None:
    cli.main(["experiment=example_clmain_train", *TINY[1:], "train_tasks=2", f"resume={run_dir}"])


def _resume_dirs(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / ".hydra").iterdir() if p.name.startswith("resume_"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flipped", "truncated", "empty", "garbage", "target"])
def test_a_damaged_or_crafted_resume_file_is_refused_and_leaves_nothing(
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    marker: tuple[Path, Path],
    kind: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    path = run_dir / RESUME_FILE
    content = model_file.read(path, "resume file")
    if kind == "target":
        content["config"]["cl_dataset"]["root"] = copy_call(marker)
        model_file.write(path, content)
    elif kind == "flipped":
        flip_tensor_bytes(path, content["state_dict"]["backbone.fc.0.weight"], 4096)
    else:
        _damage(kind, path, content)
    acc = (run_dir / "results" / "acc.csv").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        _resume(run_dir)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"resume file '{path}'" in err
    if kind == "target":
        assert "config key 'cl_dataset.root' names _target_ 'shutil.copyfile'" in err
    assert not marker[1].exists()
    assert (run_dir / "results" / "acc.csv").read_bytes() == acc
    assert _resume_dirs(run_dir) == []


@pytest.mark.slow
def test_a_checksummed_resume_file_resumes(trained_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    assert model_file.CHECKSUM_KEY in torch.load(run_dir / RESUME_FILE, weights_only=True)
    _resume(run_dir)
    with (run_dir / "results" / "acc.csv").open(newline="") as file:
        assert [row["after_training_task"] for row in csv.DictReader(file)] == ["1", "2"]
    assert len(_resume_dirs(run_dir)) == 1


@pytest.mark.parametrize(
    "view",
    [
        lambda t: t,
        lambda t: t.t(),
        lambda t: t[::3, 5:],
        lambda t: t.reshape(30, 40, 400).permute(2, 0, 1),
        # Rows (1.9 MB) larger than a hashing chunk (1 MiB): hashed one row at a time.
        lambda t: t.reshape(4, 120000).t().reshape(1, 120000, 4).expand(2, 120000, 4),
        lambda t: t[0, 0],
    ],
)
def test_the_checksum_of_a_view_equals_the_digest_of_its_copy(
    view: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    # Files checksummed before hashing became chunked must still verify: the digest is that of
    # the tensor's contiguous copy, computed here directly.
    tensor = view(torch.randn(1200, 400, generator=torch.Generator().manual_seed(0)))
    copied = tensor.contiguous()
    reference = hashlib.sha256(
        b"D1|S1|w"
        + f"T{copied.dtype}{tuple(copied.shape)}|".encode()
        + copied.reshape(-1).view(torch.uint8).numpy().tobytes()
    )
    assert model_file.checksum({"w": tensor}) == reference.hexdigest()


#: Run in a fresh process: evaluate the crafted file, print the peak-memory growth in KiB.
_PEAK_SCRIPT = """
import resource, sys
import clarena.experiments.running.pipelines  # imports first, so the growth is the evaluation's
from clarena.experiments import cli
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    cli.main(sys.argv[1:])
except SystemExit as exit_:
    print("exit", exit_.code)
print("grew", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_stride_0_tensor_is_refused_without_allocating_what_it_claims(tmp_path: Path) -> None:
    # 1.6 GB of float32 claimed by one stored number, in a file of a few hundred KB that has a
    # checksum entry (so the checksum step is reached).
    content = load("example_stl_train")
    name = "backbone.fc.0.weight"
    content["state_dict"][name] = torch.zeros(1).expand(20000, 20000)
    content[model_file.CHECKSUM_KEY] = "0" * 64
    model = tmp_path / "stride0.pt"
    torch.save(content, model)
    assert model.stat().st_size < 1_000_000
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_SCRIPT,
            "experiment=example_stl_eval",
            f"model_path={model}",
            f"output_dir={tmp_path / 'eval'}",
            "callbacks=none",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert lines[-2] == "exit 1", result.stderr
    assert int(lines[-1].split()[1]) < 200 * 1024  # KiB; the claimed tensor is 1.6 GB
    assert (
        f"model_path '{model}' is not a file clarena saved: the tensor state_dict['{name}'] "
        f"claims 400000000 elements of shape (20000, 20000) but its storage holds 1. It was "
        f"refused before anything was built from it" in result.stderr
    )
    assert not (tmp_path / "eval" / "results").exists()


def test_a_compressed_archive_entry_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deflated entry could inflate to any size: refused from the zip directory alone.
    plain = checksummed_copy(tmp_path)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w") as target:
        for entry in source.infolist():
            target.writestr(entry, source.read(entry), compress_type=zipfile.ZIP_DEFLATED)

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(model_file.ModelFileError) as error:
        model_file.read(deflated, "m")
    assert str(error.value).startswith(
        "m cannot be loaded: it is truncated, corrupt or not a file clarena saved (ValueError: "
        "its entry "
    )
    assert "is compressed, which torch.save never does" in str(error.value)
