"""The ``clarena`` command: config search, bad configs, the console script, the wheel."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra_plugins.clarena_experiments import searchpath
from hydra_plugins.clarena_experiments.searchpath import SHIPPED_CONFIGS, ClarenaSearchPathPlugin

from clarena.experiments import cli
from clarena.experiments.errors import PipelineConfigError, explain

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
            [
                "experiment=example_clmain_hat",
                "optimizer.weight_decay=0.01",
                "cl_algorithm.protection=gradient",
            ],
            [
                "refuses weight_decay=0.01 with protection=gradient",
                "cl_algorithm.protection=update",
                "optimizer.weight_decay=0",
            ],
        ),
        (
            ["cl_dataset=permuted_mnist", "cl_dataset.root=/nonexistent/mnist"],
            ["DatasetNotFoundError", "'/nonexistent/mnist' does not exist", "download=True"],
        ),
        (["cl_paradigm=DOMAIN"], ["cl_paradigm must be one of TIL, CIL, DIL; got 'DOMAIN'"]),
        (
            ["experiment=example_clmain_fgadahat", "cl_algorithm.protection=weights"],
            [
                "FGAdaHAT: protection must be one of 'update', 'gradient'; got 'weights'",
                "Set cl_algorithm.protection",
            ],
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
    # An installed third party may add its own options (the demo distribution adds one).
    listed = next(line for line in out.splitlines() if line.startswith("cl_algorithm: "))
    clarenas = {"adahat", "fgadahat", "finetuning", "hat", "independent", "wsn"}
    assert clarenas <= set(listed.removeprefix("cl_algorithm: ").split(", "))
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


def test_shipped_tree_is_the_primary_config_path_without_local_configs(tmp_path: Path) -> None:
    assert cli.primary_config_path(tmp_path) == cli.SHIPPED_CONFIGS == SHIPPED_CONFIGS
    assert (cli.shipped_config_dir() / "backbone" / "clmlp.yaml").is_file()
    # A ./configs without entrance.yaml is someone else's folder: not used.
    (tmp_path / "configs").mkdir()
    assert cli.primary_config_path(tmp_path) == cli.SHIPPED_CONFIGS


def test_the_shipped_tree_is_the_repositorys_configs_read_in_place_or_carried_verbatim() -> None:
    """Editable install (the package imported from the checkout's src/): the tree IS the
    repository's top-level configs/, no copy, so an edit there is what the next run reads.
    Installed wheel: its clarena/experiments/configs holds the same files, byte for byte."""
    package = searchpath.package_dir()
    repo_configs = REPO / "configs"
    tree = sorted(p.relative_to(repo_configs) for p in repo_configs.rglob("*.yaml"))
    assert len(tree) > 100
    if package == REPO / "packages" / "clarena-experiments" / "src" / "clarena" / "experiments":
        assert cli.shipped_config_dir() == repo_configs
        assert str(repo_configs) == SHIPPED_CONFIGS
        assert not (package / "configs").exists()
    else:
        shipped = cli.shipped_config_dir()
        assert shipped == package / "configs"
        assert sorted(p.relative_to(shipped) for p in shipped.rglob("*.yaml")) == tree
        for name in tree:
            assert (shipped / name).read_bytes() == (repo_configs / name).read_bytes()


def test_an_edit_in_a_checkouts_configs_is_what_hydra_composes(tmp_path: Path) -> None:
    """The locator on a checkout laid out like this one (a copy in tmp_path, the repository is
    not touched): it returns the checkout's configs/ itself, and Hydra composes the edited file."""
    from hydra import compose, initialize_config_dir

    package = tmp_path / "packages" / "clarena-experiments" / "src" / "clarena" / "experiments"
    package.mkdir(parents=True)
    configs = tmp_path / "configs"
    (configs / "optimizer").mkdir(parents=True)
    (configs / "entrance.yaml").write_text("defaults:\n  - optimizer: sgd\n  - _self_\n")
    (configs / "optimizer" / "sgd.yaml").write_text("lr: 0.1\n")
    assert searchpath.checkout_config_dir(package) == configs
    assert searchpath.checkout_config_dir(tmp_path / "site-packages" / "clarena" / "x") is None
    (configs / "optimizer" / "sgd.yaml").write_text("lr: 0.25\n")
    with initialize_config_dir(str(searchpath.checkout_config_dir(package)), version_base=None):
        assert compose("entrance").optimizer.lr == 0.25


def test_search_path_plugin_appends_the_shipped_tree_once() -> None:
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    discovered = {
        f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(SearchPathPlugin)
    }
    assert "hydra_plugins.clarena_experiments.searchpath.ClarenaSearchPathPlugin" in discovered
    search_path = ConfigSearchPathImpl()
    search_path.append("main", "file:///somewhere/configs")
    ClarenaSearchPathPlugin().manipulate_search_path(search_path)
    ClarenaSearchPathPlugin().manipulate_search_path(search_path)
    assert [e.path for e in search_path.get_path()] == [
        "file:///somewhere/configs",
        SHIPPED_CONFIGS,
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--cfg", "job", "experiment=example_clmain_train", "train_tasks=2"],
        ["experiment=example_clmain_train", "--cfg", "job", "train_tasks=2"],
        ["experiment=example_clmain_train", "train_tasks=2", "--cfg", "job"],
    ],
)
def test_cfg_job_works_in_any_position(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    cli.main(argv)
    out = capsys.readouterr().out
    assert "train_tasks: 2\n" in out
    assert "hidden_dims:" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("position", [0, 1, 2])
def test_help_works_in_any_position(
    position: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["experiment=example_clmain_train", "train_tasks=2"]
    argv.insert(position, "--help")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    assert "clarena is powered by Hydra" in capsys.readouterr().out


@pytest.mark.parametrize("position", [0, 1, 3])
def test_multirun_flag_works_in_any_position(
    position: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        "experiment=example_clmain_train",
        "cl_paradigm=DIL",
        f"hydra.sweep.dir={tmp_path / 's'}",
    ]
    argv.insert(position, "-m")
    # The job fails its config check (how a sweep reports that is the sweep's business); the
    # sweep dir's multirun.yaml shows Hydra ran in multirun mode.
    with contextlib.suppress(SystemExit):
        cli.main(argv)
    assert (tmp_path / "s" / "multirun.yaml").is_file()


def test_error_from_a_user_folder_named_clarena_is_not_taken_for_clarenas(tmp_path: Path) -> None:
    project = tmp_path / "clarena"
    project.mkdir()
    (project / "net.py").write_text(
        "def build():\n"
        "    try:\n"
        "        {}['width']\n"
        "    except KeyError as error:\n"
        "        raise RuntimeError('could not build the net') from error\n"
    )
    spec = importlib.util.spec_from_file_location("user_net", project / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(RuntimeError) as raised:
        module.build()
    # Not clarena's: the innermost error, which names the missing key, is reported.
    assert explain(raised.value).startswith("clarena: KeyError: 'width'")


def test_clarena_errors_are_recognised_by_type_wherever_raised() -> None:
    try:
        try:
            raise PipelineConfigError("model_path is missing; set model_path=...")
        except PipelineConfigError as error:
            raise RuntimeError("Error in call to target") from error
    except RuntimeError as outer:
        message = explain(outer)
    assert message.startswith("clarena: PipelineConfigError: model_path is missing")


@pytest.mark.slow
def test_local_configs_extend_the_shipped_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "configs"
    (local / "experiment").mkdir(parents=True)
    (local / "backbone").mkdir()
    (local / "optimizer").mkdir()
    (local / "entrance.yaml").write_text(
        "defaults:\n  - _self_\n  - experiment: ???\noutput_dir: out\nnum_threads: 1\n"
        "hydra:\n  run:\n    dir: ${output_dir}\n"
    )
    (local / "backbone" / "tiny.yaml").write_text(
        "_target_: clarena.backbones.CLMLP\ninput_dim: 784\nhidden_dims: [16]\noutput_dim: 8\n"
    )
    # Same name as a shipped file: the user's tree comes first on the search path.
    (local / "optimizer" / "sgd.yaml").write_text(
        "_target_: torch.optim.SGD\n_partial_: true\nlr: 0.037\n"
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
    assert cli.primary_config_path() == str(local.resolve())
    cli.main(["experiment=mine", f"output_dir={tmp_path / 'run'}"])
    lines = (tmp_path / "run" / "results" / "acc.csv").read_text().splitlines()
    assert len(lines) == 3
    config = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "hidden_dims:\n  - 16" in config
    assert "lr: 0.037" in config
    assert "momentum" not in config


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
        for path in sorted(cli.shipped_config_dir().rglob("*.yaml")):
            relative = path.relative_to(cli.shipped_config_dir()).as_posix()
            assert archive.read(prefix + relative) == path.read_bytes()
        assert "clarena/experiments/cli.py" in names
        assert "hydra_plugins/clarena_experiments/searchpath.py" in names
        assert "hydra_plugins/__init__.py" not in names
        assert not any(name.startswith("clarena/__init__") for name in names)
        entry_points = archive.read(
            next(n for n in names if n.endswith("entry_points.txt"))
        ).decode()
    assert "clarena = clarena.experiments.cli:main" in entry_points


class _MakeDir:
    """Pickles as ``os.mkdir(path)``: what a crafted config.pickle would run on loading."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.path),)


@pytest.mark.skipif(
    not cli.rerun_unpickles(), reason="Hydra >= 1.4 reruns from the run dir, no pickle"
)
@pytest.mark.parametrize("trust", [None, "trust_model_file=false", "trust_model_file=no"])
def test_experimental_rerun_is_refused_and_the_pickle_never_loaded(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    trust: str | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    made = tmp_path / "made_by_the_pickle"
    crafted = tmp_path / "config.pickle"
    crafted.write_bytes(pickle.dumps(_MakeDir(made)))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--experimental-rerun", str(crafted), *([trust] if trust else [])])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert not made.exists()
    if trust == "trust_model_file=no":
        assert "trust_model_file must be true or false (unquoted); got 'no'" in err
    else:
        assert err.startswith(
            f"clarena: --experimental-rerun unpickles '{crafted}', and a pickle can run any code"
        )
        assert "nothing was read" in err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(
    not cli.rerun_unpickles(), reason="Hydra >= 1.4 reruns from the run dir, no pickle"
)
def test_experimental_rerun_with_trust_model_file_true_says_it_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The override is what lets the pickle load: with it, the (here harmless) payload runs.
    monkeypatch.chdir(tmp_path)
    made = tmp_path / "made_by_the_pickle"
    crafted = tmp_path / "config.pickle"
    crafted.write_bytes(pickle.dumps(_MakeDir(made)))
    with pytest.raises(AttributeError):  # the payload returns None, not a config
        cli.main(["--experimental-rerun", str(crafted), "trust_model_file=true"])
    assert made.is_dir()
    assert (
        f"clarena: trust_model_file=true: --experimental-rerun unpickles '{crafted}' as it stands"
        in capsys.readouterr().err
    )
