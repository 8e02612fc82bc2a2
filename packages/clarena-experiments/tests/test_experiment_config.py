"""The experiment config is parsed once into typed values; unknown keys are refused by name."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from clarena.experiments.cli import shipped_config_dir
from clarena.experiments.errors import PipelineConfigError
from clarena.experiments.experiment_config import Components, ExperimentConfig, ResultFiles
from clarena.experiments.running.pipelines import parse_experiment

EXPERIMENTS = sorted(path.stem for path in (shipped_config_dir() / "experiment").glob("*.yaml"))
FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints-0.1"


def composed(name: str, *overrides: str) -> DictConfig:
    extra = ["model_path=m.pt"] if name.endswith("_eval") else []
    with initialize_config_dir(config_dir=str(shipped_config_dir()), version_base=None):
        return compose("entrance", [f"experiment={name}", "output_dir=out", *extra, *overrides])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_shipped_experiment_parses_strictly(name: str) -> None:
    config = parse_experiment(composed(name))
    assert config.pipeline == OmegaConf.select(composed(name), "pipeline")


def test_the_typed_config_holds_the_values_of_the_yaml() -> None:
    config = parse_experiment(composed("example_clmain_train"))
    assert (config.pipeline, config.cl_paradigm, config.train_tasks) == ("CL_MAIN_EXPR", "TIL", 5)
    assert (config.global_seed, config.num_threads, config.save_model) == (1, 1, True)
    assert (config.compile, config.overwrite, config.resume_state, config.resume) == (
        False,
        False,
        True,
        None,
    )
    assert config.metrics == ResultFiles(
        accuracy_csv="results/acc.csv",
        accuracy_matrix_plot="results/acc_matrix.png",
        average_accuracy_plot="results/ave_acc.png",
        summary="results/summary.json",
    )
    components = config.components
    assert isinstance(components, Components)
    assert components.backbone is not None
    assert components.backbone._target_ == "clarena.backbones.CLMLP"
    assert components.mtl_dataset is None
    assert sorted(components.lightning_loggers) == ["csv", "tensorboard"]
    assert config.model_file == "saved_model.pt"


@pytest.mark.parametrize(
    ("override", "key", "nearest"),
    [
        ("+global_sead=3", "global_sead", "global_seed"),
        ("+save_modle=true", "save_modle", "save_model"),
        ("+metrics.accuracy_cvs=a.csv", "metrics.accuracy_cvs", "metrics.accuracy_csv"),
        ("+trainer.max_epoch=3", "trainer.max_epoch", "trainer.max_epochs"),
        ("+optimizer.lrr=0.1", "optimizer.lrr", "optimizer.lr"),
        ("+cl_dataset.num_taks=3", "cl_dataset.num_taks", "cl_dataset.num_tasks"),
        (
            "+cl_algorithm.mask_sparsity_reg_factr=1",
            "cl_algorithm.mask_sparsity_reg_factr",
            "cl_algorithm.mask_sparsity_reg_factor",
        ),
    ],
)
def test_an_unknown_key_is_refused_naming_the_nearest_valid_one(
    override: str, key: str, nearest: str
) -> None:
    experiment = "example_clmain_hat" if "mask_sparsity" in override else "example_clmain_train"
    with pytest.raises(PipelineConfigError) as raised:
        parse_experiment(composed(experiment, override))
    message = str(raised.value)
    assert message.startswith(f"unknown config key {key}: did you mean {nearest}? ")
    assert "\n" not in message


def test_an_unknown_key_of_a_nested_component_is_refused() -> None:
    cfg = composed("example_clmain_train")
    cfg.callbacks = OmegaConf.create(
        {"lr": {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor", "log_momentm": 1}}
    )
    with pytest.raises(
        PipelineConfigError,
        match=r"^unknown config key callbacks\.lr\.log_momentm: did you mean "
        r"callbacks\.lr\.log_momentum\? ",
    ):
        parse_experiment(cfg)


def test_a_key_far_from_every_valid_one_lists_the_valid_keys() -> None:
    with pytest.raises(
        PipelineConfigError, match=r"^unknown config key zzz: valid keys: pipeline,"
    ):
        parse_experiment(composed("example_clmain_train", "+zzz=1"))


def test_the_cli_refuses_an_unknown_key_in_one_line_before_training(
    run_clarena: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_clarena("example_clmain_train", "+global_sead=3")
    assert exited.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[0].startswith(
        "clarena: PipelineConfigError: unknown config key global_sead: did you mean global_seed? "
    )
    assert error[1:] == ["Set CLARENA_FULL_ERROR=1 to see the full traceback."]
    run_dir = Path.cwd() / "example_clmain_train"
    assert not (run_dir / "results").exists()
    assert not (run_dir / "lightning_logs").exists()


def test_expr_name_without_effect_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    parse_experiment(composed("example_clmain_train", "+expr_name=mine"))
    assert capsys.readouterr().err == (
        "clarena: expr_name='mine' has no effect: output_dir is set and does not use it (the "
        "shipped output_dir names its folder after expr_name)\n"
    )


def test_expr_name_naming_the_output_dir_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = composed("example_clmain_train", "+expr_name=mine")
    cfg.output_dir = "outputs/${expr_name}"
    parse_experiment(cfg)
    assert capsys.readouterr().err == ""


def test_bad_values_are_refused_when_parsed() -> None:
    with pytest.raises(PipelineConfigError, match=r"^batch_norm_statistics must be one of"):
        parse_experiment(composed("example_clmain_train", "batch_norm_statistics=runing"))
    with pytest.raises(PipelineConfigError, match=r"^compile must be true or false"):
        parse_experiment(composed("example_clmain_train", "compile=no"))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_the_config_of_a_saved_model_is_read_as_saved(name: str) -> None:
    checkpoint = torch.load(FIXTURES / name / "saved_model.pt", weights_only=True)
    saved = OmegaConf.create(checkpoint["config"])
    config = ExperimentConfig.parse(saved, strict=False)
    assert config.pipeline == saved.get("pipeline")
    assert config.components.backbone == saved.backbone
    assert re.fullmatch(r"[A-Z_]+", str(config.pipeline))


def test_upstream_timestamp_is_accepted_and_said_to_do_nothing_unless_output_dir_uses_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parse_experiment(composed("example_clmain_train", "+timestamp=t1"))
    assert capsys.readouterr().err == (
        "clarena: timestamp='t1' has no effect: output_dir is set and does not use it (the "
        "shipped output_dir names its folder after expr_name)\n"
    )
    cfg = composed("example_clmain_train", "+timestamp=t1")
    cfg.output_dir = "outputs/${timestamp}"
    parse_experiment(cfg)
    assert capsys.readouterr().err == ""
