"""Up-front checks: training length, task lists, algorithm hyperparameters and backbones."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from clarena.backbones import CLMLP, HATMaskMLP, WSNMaskMLP
from clarena.cl import HeadsTIL
from clarena.experiments.booleans import BOOLEAN_KEYS, config_bool
from clarena.experiments.config_checks import (
    MAX_SEED,
    check_experiment_config,
    check_optimizer_builds,
    check_seed_and_threads,
    task_list,
)
from clarena.experiments.running.algorithms import WSN, AdaHAT, Finetuning, Independent
from clarena.experiments.running.algorithms.base import CLConfigError
from clarena.experiments.running.pipelines import run_pipeline
from clarena.experiments.running.pipelines.common import PipelineConfigError

SMALL = {"input_dim": 4, "hidden_dims": [3], "output_dim": 2}


def config(**values: Any) -> Any:
    return OmegaConf.create({"pipeline": "CL_MAIN_EXPR", "trainer": {"max_epochs": 2}, **values})


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"max_epochs": -1}, "-1 would train forever"),
        ({"max_epochs": 0}, "0 would train nothing"),
        ({"max_epochs": 1.5}, "must be a positive number of epochs"),
        ({"max_epochs": 2, "max_steps": 0}, "max_steps must be -1"),
    ],
)
def test_training_length_is_refused(trainer: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineConfigError, match=message):
        check_experiment_config(config(trainer=trainer))


def test_good_training_lengths_pass() -> None:
    check_experiment_config(config(trainer={"max_epochs": 1, "max_steps": -1}))
    check_experiment_config(config(trainer={"max_epochs": None, "max_steps": 10}))
    # An evaluation does not train: its trainer's max_epochs is not read.
    check_experiment_config(OmegaConf.create({"pipeline": "CL_MAIN_EVAL", "trainer": {}}))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "names no task"),
        (-2, "names no task"),
        ([], "non-empty list"),
        ([1, 3, 1, 3], r"names tasks \[1, 3\] more than once"),
        ([0, 2], r"names tasks \[0\], but the dataset has tasks 1..5"),
        ([2, 6], r"names tasks \[6\], but the dataset has tasks 1..5"),
        (True, "task count >= 1 or a non-empty list"),
        ("1,2", "task count >= 1 or a non-empty list"),
    ],
)
def test_bad_task_lists_are_refused(value: Any, message: str) -> None:
    with pytest.raises(PipelineConfigError, match=message):
        task_list(value, 5, "train_tasks")


def test_task_lists() -> None:
    assert task_list(None, 3, "train_tasks") == [1, 2, 3]
    assert task_list(2, 3, "train_tasks") == [1, 2]
    assert task_list(OmegaConf.create([3, 1]), 3, "eval_tasks") == [3, 1]
    with pytest.raises(PipelineConfigError, match="eval_tasks names tasks"):
        check_experiment_config(
            OmegaConf.create({"pipeline": "CL_MAIN_EVAL", "eval_tasks": [2, 2]})
        )


@pytest.mark.parametrize("algorithm", [Finetuning, Independent])
@pytest.mark.parametrize("backbone_class", [HATMaskMLP, WSNMaskMLP])
def test_plain_algorithms_refuse_masked_backbones(algorithm: type, backbone_class: type) -> None:
    plain = backbone_class.__name__.replace("HATMask", "CL").replace("WSNMask", "CL")
    # A builder's backbone is the plain one with a mask method attached.
    named = rf"mask method '\w+' is attached to {plain}"
    with pytest.raises(CLConfigError, match=rf"{named}.*clarena.backbones.{plain}"):
        algorithm(backbone=backbone_class(**SMALL), heads=HeadsTIL(input_dim=2))
    algorithm(backbone=CLMLP(**SMALL), heads=HeadsTIL(input_dim=2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adjustment_intensity": -0.1}, "adjustment_intensity must be a number > 0; got -0.1"),
        ({"adjustment_intensity": 0}, "adjustment_intensity must be a number > 0; got 0"),
        ({"epsilon": 0.0}, "epsilon must be a number > 0"),
        ({"aggregation": "median"}, "aggregation must be one of 'min', 'max', 'mean'"),
        ({"s_max": -400}, "s_max must be a number > 0"),
        ({"clamp_threshold": 0}, "clamp_threshold must be a number > 0"),
        ({"mask_sparsity_reg_factor": -1}, "mask_sparsity_reg_factor must be a number >= 0"),
        ({"embedding_clamp": "6"}, "embedding_clamp must be a number > 0; got '6'"),
        ({"task_embedding_init_mode": "zeros"}, "task_embedding_init_mode must be one of"),
    ],
)
def test_adahat_hyperparameters_are_range_checked_on_construction(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(CLConfigError, match=message):
        AdaHAT(backbone=HATMaskMLP(**SMALL), heads=HeadsTIL(input_dim=2), **kwargs)


def test_wsn_score_init_mode_is_checked_on_construction() -> None:
    with pytest.raises(CLConfigError, match="parameter_score_init_mode must be one of"):
        WSN(
            backbone=WSNMaskMLP(**SMALL),
            heads=HeadsTIL(input_dim=2),
            parameter_score_init_mode="zeros",
        )


def test_optimizer_and_scheduler_are_built_once_up_front() -> None:
    check_optimizer_builds(functools.partial(torch.optim.SGD, lr=0.1), None)
    with pytest.raises(PipelineConfigError, match=r"optimizer cannot be built.*Invalid learning"):
        check_optimizer_builds(functools.partial(torch.optim.SGD, lr=-0.1), None)
    with pytest.raises(PipelineConfigError, match=r"lr_scheduler cannot be built.*step_sizee"):
        check_optimizer_builds(
            functools.partial(torch.optim.SGD, lr=0.1),
            functools.partial(torch.optim.lr_scheduler.StepLR, step_sizee=2),
        )


@pytest.mark.parametrize("key", sorted(BOOLEAN_KEYS))
@pytest.mark.parametrize("value", ["no", "off", "yes", 1, 0, None, "true", "false", ""])
def test_a_boolean_key_that_is_not_a_bool_is_refused_naming_it(key: str, value: Any) -> None:
    with pytest.raises(
        PipelineConfigError,
        match=rf"^{key} must be true or false \(unquoted\); got {re.escape(repr(value))}, which ",
    ):
        check_experiment_config(config(**{key: value}))


@pytest.mark.parametrize("key", sorted(BOOLEAN_KEYS))
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_key_true_or_false_passes(key: str, value: bool) -> None:
    check_experiment_config(config(**{key: value}))
    assert config_bool(config(**{key: value}), key) is value


def test_yaml_booleans_are_bools_and_absent_keys_take_their_defaults() -> None:
    # OmegaConf reads YAML 1.1 spellings as booleans; a quoted string stays a string.
    cfg = OmegaConf.create("compile: yes\nsave_model: off\noverwrite: 'true'\n")
    assert config_bool(cfg, "compile") is True
    assert config_bool(cfg, "save_model") is False
    with pytest.raises(PipelineConfigError, match=r"^overwrite must be true or false"):
        config_bool(cfg, "overwrite")
    assert config_bool(cfg, "resume_state") is True
    assert config_bool(cfg, "trust_model_file") is False


def test_overwrite_that_is_not_true_keeps_the_previous_run(tmp_path: Path) -> None:
    # bool("no") is True: read that way, overwrite=no would delete the previous run's results.
    results = tmp_path / "run" / "results"
    results.mkdir(parents=True)
    (results / "acc.csv").write_text("previous")
    cfg = OmegaConf.create(
        {"pipeline": "STL_EXPR", "output_dir": str(tmp_path / "run"), "overwrite": "no"}
    )
    with pytest.raises(PipelineConfigError, match=r"^overwrite must be true or false"):
        run_pipeline(cfg)
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == ["acc.csv", "results"]
    assert (results / "acc.csv").read_text() == "previous"


@pytest.mark.parametrize("precision", ["16-mixed", "16", 16])
def test_fp16_mixed_precision_on_the_cpu_is_refused(precision: Any) -> None:
    # Lightning itself only warns and trains in bf16-mixed instead.
    trainer = {"max_epochs": 1, "accelerator": "cpu", "precision": precision}
    with pytest.raises(PipelineConfigError, match=r"needs a CUDA GPU.*Use trainer.precision=bf16"):
        check_experiment_config(config(trainer=trainer))


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true", "64-true", 32, None])
def test_cpu_precisions_pass(precision: Any) -> None:
    check_experiment_config(
        config(trainer={"max_epochs": 1, "accelerator": "cpu", "precision": precision})
    )


def test_fp16_mixed_precision_passes_on_a_gpu_trainer() -> None:
    check_experiment_config(
        config(trainer={"max_epochs": 1, "accelerator": "gpu", "precision": "16-mixed"})
    )


@pytest.mark.parametrize("seed", ["abc", 1.5, -1, MAX_SEED + 1, True, None])
def test_a_seed_that_is_not_an_integer_in_numpys_range_is_refused(seed: Any) -> None:
    with pytest.raises(PipelineConfigError) as error:
        check_experiment_config(config(global_seed=seed))
    assert str(error.value) == (
        f"global_seed must be an integer from 0 to {MAX_SEED}; got {seed!r}. Set global_seed=1 "
        f"(or another integer in that range)."
    )


@pytest.mark.parametrize("threads", [-1, 0, "4", 2.0])
def test_num_threads_below_one_or_not_an_integer_is_refused(threads: Any) -> None:
    with pytest.raises(PipelineConfigError) as error:
        check_experiment_config(config(num_threads=threads))
    assert str(error.value) == (
        f"num_threads must be null (torch's default) or a number of threads >= 1; got "
        f"{threads!r}. Set num_threads=1, or num_threads=null."
    )


def test_good_seeds_and_thread_counts_pass() -> None:
    for values in ({}, {"global_seed": 0, "num_threads": None}, {"global_seed": MAX_SEED}):
        check_seed_and_threads(config(**values))
    check_seed_and_threads(config(global_seed=7, num_threads=3))
