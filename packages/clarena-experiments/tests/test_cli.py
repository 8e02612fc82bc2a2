"""The ``clarena`` command: config search, bad configs, the console script, the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from clarena.experiments import cli

REPO = Path(__file__).resolve().parents[3]
Run = Callable[..., Path]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["backbone._target_=clarena.backbones.CLMPL"],
            ["config key 'backbone'", "no backbone 'CLMPL'", "Did you mean CLMLP?"],
        ),
        (
            ["+backbone.hiden_dims=[10]"],
            ["unknown argument 'hiden_dims'", "Did you mean 'hidden_dims'?"],
        ),
        (
            ["experiment=example_clmain_hat", "cl_paradigm=CIL"],
            ["HAT works only in task-incremental learning", "cl_paradigm=TIL"],
        ),
        (
            ["experiment=example_clmain_wsn", "cl_paradigm=CIL"],
            ["WSN works only in task-incremental learning"],
        ),
        (
            ["experiment=example_clmain_hat", "optimizer.weight_decay=0.01"],
            ["refuses weight_decay=0.01", "optimizer.weight_decay=0"],
        ),
        (
            ["cl_dataset=permuted_mnist", "cl_dataset.root=/nonexistent/mnist"],
            ["DatasetNotFoundError", "'/nonexistent/mnist' does not exist", "download=True"],
        ),
        (["cl_paradigm=DOMAIN"], ["cl_paradigm must be one of TIL, CIL, DIL; got 'DOMAIN'"]),
        (
            ["experiment=example_clmain_fgadahat", "optimizer=adam"],
            ["FGAdaHAT cannot protect earlier tasks with Adam", "optimizer=sgd"],
        ),
        (
            [
                "experiment=example_clmain_fgadahat",
                "cl_algorithm.importance_summing_strategy=linear_decrease",
            ],
            [
                "importance_summing_strategy 'linear_decrease' needs "
                "importance_summing_strategy_linear_step"
            ],
        ),
    ],
)
def test_bad_config_exits_1_with_one_paragraph(
    run_clarena: Run, capsys: pytest.CaptureFixture[str], overrides: list[str], expected: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_clarena("example_clmain_train", *overrides)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    message = err[err.index("clarena: ") :]
    for text in expected:
        assert text in message
    assert "Traceback" not in err
    assert message.rstrip().endswith("Set CLARENA_FULL_ERROR=1 to see the full traceback.")


def test_no_experiment_says_how_to_choose_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([f"output_dir={tmp_path / 'run'}"])
    assert exit_info.value.code == 1
    assert "experiment=example_clmain_train" in capsys.readouterr().err
    # Stopped before Hydra made a run dir: no stray outputs/None/<time>/, no output_dir.
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_config_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "clarena is powered by Hydra" in out
    assert "cl_algorithm: adahat, fgadahat, finetuning, hat, independent, wsn" in out
    assert "example_clmain_train" in out


def test_full_error_env_keeps_the_traceback(
    run_clarena: Run, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLARENA_FULL_ERROR", "1")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="cl_paradigm must be one of"):
        run_clarena("example_clmain_train", "cl_paradigm=DOMAIN")
    assert "Set CLARENA_FULL_ERROR" not in capsys.readouterr().err


def test_eval_without_model_path_names_the_key(
    run_clarena: Run, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        run_clarena("example_clmain_eval", f"model_path={tmp_path / 'missing.pt'}")
    assert "missing.pt' is not a file" in capsys.readouterr().err


def test_shipped_tree_is_used_without_local_configs(tmp_path: Path) -> None:
    primary, search = cli.config_search(tmp_path)
    assert primary == cli.shipped_config_dir()
    assert search == []
    assert (primary / "backbone" / "clmlp.yaml").is_file()


@pytest.mark.slow
def test_local_configs_extend_the_shipped_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "configs"
    (local / "experiment").mkdir(parents=True)
    (local / "backbone").mkdir()
    (local / "entrance.yaml").write_text(
        "defaults:\n  - _self_\n  - experiment: ???\noutput_dir: out\nnum_threads: 1\n"
        "hydra:\n  run:\n    dir: ${output_dir}\n"
    )
    (local / "backbone" / "tiny.yaml").write_text(
        "_target_: clarena.backbones.CLMLP\ninput_dim: 784\nhidden_dims: [16]\noutput_dim: 8\n"
    )
    (local / "experiment" / "mine.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n"
        "  - /cl_dataset: permuted_digits.yaml\n"
        "  - /backbone: tiny.yaml\n"
        "  - /cl_algorithm: finetuning.yaml\n"
        "  - /optimizer: sgd.yaml\n"
        "  - /trainer: cpu.yaml\n"
        "  - /metrics: cl_default.yaml\n"
        "  - _self_\n"
        "pipeline: CL_MAIN_EXPR\ncl_paradigm: TIL\ntrain_tasks: 2\n"
        "trainer:\n  max_epochs: 1\n  limit_train_batches: 2\n"
    )
    monkeypatch.chdir(tmp_path)
    primary, search = cli.config_search()
    assert primary == local.resolve()
    assert search == [f"file://{cli.shipped_config_dir()}"]
    cli.main(["experiment=mine", f"output_dir={tmp_path / 'run'}"])
    lines = (tmp_path / "run" / "results" / "acc.csv").read_text().splitlines()
    assert len(lines) == 3
    config = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "hidden_dims:\n  - 16" in config


@pytest.mark.slow
def test_console_script_reports_unknown_backbone_without_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("clarena")
    env = {
        k: v for k, v in os.environ.items() if k not in ("CLARENA_FULL_ERROR", "HYDRA_FULL_ERROR")
    }
    result = subprocess.run(
        [
            str(script),
            "experiment=example_clmain_train",
            "backbone._target_=clarena.backbones.HATMaskMPL",
            f"output_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1
    assert "no backbone 'HATMaskMPL'" in result.stderr
    assert "Did you mean HATMaskMLP" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_wheel_ships_the_config_tree(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO / "packages" / "clarena-experiments"),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("clarena_experiments-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        prefix = "clarena/experiments/configs/"
        for path in sorted((REPO / "configs").rglob("*.yaml")):
            relative = path.relative_to(REPO / "configs").as_posix()
            assert archive.read(prefix + relative) == path.read_bytes()
        assert "clarena/experiments/cli.py" in names
        assert not any(name.startswith("clarena/__init__") for name in names)
        entry_points = archive.read(
            next(n for n in names if n.endswith("entry_points.txt"))
        ).decode()
    assert "clarena = clarena.experiments.cli:main" in entry_points
