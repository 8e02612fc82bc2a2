"""Multi-task (MTL) and single-task (STL) pipelines: experiment and evaluation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from clarena.cl import HeadsMTL, HeadSTL
from clarena.experiments import config_checks
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.running import results
from clarena.experiments.running.data import MTLDataModule, STLDataModule
from clarena.experiments.running.pipelines.common import (
    choose_batch_norm_statistics,
    log_every_epoch,
    make_trainer,
    output_dir,
    print_table,
    request_compile,
    save_checkpoint,
    seed,
)
from clarena.experiments.running.pipelines.evaluation import (
    open_model_file,
    weights_budget,
)
from clarena.experiments.running.scaleout import full_test_loader

log = logging.getLogger(__name__)


def _optimizers(config: ExperimentConfig, train: bool) -> dict[str, Any]:
    components = config.components
    if not train:
        return {"optimizer": None, "lr_scheduler": None}
    return {
        "optimizer": instantiate(components.optimizer),
        "lr_scheduler": (instantiate(components.lr_scheduler) if components.lr_scheduler else None),
    }


def build_mtl(config: ExperimentConfig, datamodule: MTLDataModule, train: bool = True) -> Any:
    """Backbone, one head per task of the dataset, and ``mtl_algorithm``."""
    backbone = instantiate(config.components.backbone)
    heads = HeadsMTL(input_dim=backbone.output_dim)
    heads.setup_tasks({t: datamodule.num_classes(t) for t in datamodule.sequence.task_ids})
    return instantiate(
        config.components.mtl_algorithm,
        backbone=backbone,
        heads=heads,
        _recursive_=False,
        **_optimizers(config, train),
    )


def build_stl(config: ExperimentConfig, datamodule: STLDataModule, train: bool = True) -> Any:
    """Backbone, a head with the task's classes, and ``stl_algorithm``."""
    backbone = instantiate(config.components.backbone)
    head = HeadSTL(
        input_dim=backbone.output_dim, num_classes=datamodule.num_classes(datamodule.task_id)
    )
    return instantiate(
        config.components.stl_algorithm,
        backbone=backbone,
        head=head,
        _recursive_=False,
        **_optimizers(config, train),
    )


def _write(
    run_dir: Path,
    config: ExperimentConfig,
    accuracies: dict[int, float],
    extra: dict[str, Any],
    losses: dict[int, float],
) -> None:
    metrics = config.metrics
    if metrics.accuracy_csv:
        results.write_task_accuracy_csv(run_dir / metrics.accuracy_csv, accuracies)
    if metrics.loss_csv:
        results.write_task_accuracy_csv(run_dir / metrics.loss_csv, losses, "loss")
    if metrics.summary:
        results.write_json(
            run_dir / metrics.summary,
            {
                "average_accuracy": results.average(accuracies),
                "accuracy_per_task": {str(t): a for t, a in accuracies.items()},
                **extra,
            },
        )


def _test(trainer: Any, algorithm: Any, datamodule: Any, mtl: bool) -> dict[int, float]:
    if mtl:
        algorithm.test_task_ids = list(datamodule.sequence.task_ids)
    loaders = datamodule.test_dataloader()
    if trainer.world_size > 1:
        # Every rank tests on the whole test set: exact counts, equal on every rank.
        loaders = (
            [full_test_loader(loader) for loader in loaders]
            if isinstance(loaders, list)
            else full_test_loader(loaders)
        )
    trainer.test(algorithm, dataloaders=loaders, verbose=False)
    accuracies = dict(algorithm.test_accuracy)
    log.info(
        "test accuracy %s; average %.4f",
        ", ".join(f"task {t} {a:.4f}" for t, a in accuracies.items()),
        results.average(accuracies),
    )
    return accuracies


def _run_experiment(config: ExperimentConfig, mtl: bool) -> dict[int, float]:
    kind = "mtl" if mtl else "stl"
    config.require(f"{kind}_dataset", "backbone", f"{kind}_algorithm", "optimizer", "trainer")
    run_dir = output_dir(config)
    seed(config)
    datamodule = instantiate(config.components.dataset(kind))
    algorithm = build_mtl(config, datamodule) if mtl else build_stl(config, datamodule)
    config_checks.check_optimizer_builds(
        algorithm.optimizer_factory, algorithm.lr_scheduler_factory
    )
    request_compile(config, algorithm)
    batch_norm_statistics = choose_batch_norm_statistics(config, algorithm)
    trainer = make_trainer(config, run_dir, version=kind)
    log_every_epoch(trainer, len(datamodule.train_dataloader()))
    trainer.fit(algorithm, datamodule=datamodule)
    accuracies = _test(trainer, algorithm, datamodule, mtl)
    if not trainer.is_global_zero:
        return accuracies
    _write(
        run_dir,
        config,
        accuracies,
        {"algorithm": type(algorithm).__name__, "batch_norm_statistics": batch_norm_statistics},
        algorithm.test_loss,
    )
    if config.save_model:
        model_path = run_dir / config.model_file
        save_checkpoint(model_path, config.record, algorithm.state_dict())
        log.info("saved the model to %s", model_path)
    print_table(
        f"{kind.upper()} experiment ({type(algorithm).__name__})",
        ["tasks", "average accuracy"],
        [str(len(accuracies)), f"{results.average(accuracies):.4f}"],
        [f"Results in {run_dir}"],
    )
    return accuracies


def _run_evaluation(config: ExperimentConfig, mtl: bool) -> dict[int, float]:
    kind = "mtl" if mtl else "stl"
    config.require("model_path", "trainer")
    run_dir = output_dir(config)
    checkpoint, saved = open_model_file(config, "MTL_EXPR" if mtl else "STL_EXPR")
    datamodule = instantiate(saved.components.dataset(kind))
    with weights_budget(checkpoint, f"model_path '{config.model_path}'"):
        algorithm = (
            build_mtl(saved, datamodule, train=False)
            if mtl
            else build_stl(saved, datamodule, train=False)
        )
    algorithm.load_state_dict(checkpoint["state_dict"])
    request_compile(config, algorithm)
    trainer = make_trainer(config, run_dir, version="eval")
    accuracies = _test(trainer, algorithm, datamodule, mtl)
    if not trainer.is_global_zero:
        return accuracies
    _write(run_dir, config, accuracies, {"model_path": str(config.model_path)}, algorithm.test_loss)
    print_table(
        f"{kind.upper()} evaluation",
        ["tasks", "average accuracy"],
        [str(len(accuracies)), f"{results.average(accuracies):.4f}"],
        [f"Model {config.model_path}", f"Results in {run_dir}"],
    )
    return accuracies


def run_mtl_experiment(config: ExperimentConfig) -> dict[int, float]:
    """Train all tasks jointly, test each task; returns accuracy per task."""
    return _run_experiment(config, mtl=True)


def run_mtl_evaluation(config: ExperimentConfig) -> dict[int, float]:
    """Reload a saved MTL model (``model_path``) and test every task."""
    return _run_evaluation(config, mtl=True)


def run_stl_experiment(config: ExperimentConfig) -> dict[int, float]:
    """Train and test one task; returns ``{1: accuracy}``."""
    return _run_experiment(config, mtl=False)


def run_stl_evaluation(config: ExperimentConfig) -> dict[int, float]:
    """Reload a saved STL model (``model_path``) and test it."""
    return _run_evaluation(config, mtl=False)
