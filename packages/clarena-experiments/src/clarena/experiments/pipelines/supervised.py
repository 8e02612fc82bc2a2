"""Multi-task (MTL) and single-task (STL) pipelines: experiment and evaluation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from clarena.cl import HeadsMTL, HeadSTL
from clarena.experiments import config_checks, results
from clarena.experiments.booleans import config_bool
from clarena.experiments.data import MTLDataModule, STLDataModule
from clarena.experiments.pipelines.common import (
    choose_batch_norm_statistics,
    log_every_epoch,
    make_trainer,
    output_dir,
    print_table,
    request_compile,
    require,
    save_checkpoint,
    seed,
)
from clarena.experiments.pipelines.evaluation import (
    open_model_file,
    weights_budget,
)
from clarena.experiments.scaleout import full_test_loader

log = logging.getLogger(__name__)


def _optimizers(cfg: DictConfig, train: bool) -> dict[str, Any]:
    if not train:
        return {"optimizer": None, "lr_scheduler": None}
    return {
        "optimizer": instantiate(cfg.optimizer),
        "lr_scheduler": instantiate(cfg.lr_scheduler) if cfg.get("lr_scheduler") else None,
    }


def build_mtl(cfg: DictConfig, datamodule: MTLDataModule, train: bool = True) -> Any:
    """Backbone, one head per task of the dataset, and ``mtl_algorithm``."""
    backbone = instantiate(cfg.backbone)
    heads = HeadsMTL(input_dim=backbone.output_dim)
    heads.setup_tasks({t: datamodule.num_classes(t) for t in datamodule.sequence.task_ids})
    return instantiate(
        cfg.mtl_algorithm,
        backbone=backbone,
        heads=heads,
        _recursive_=False,
        **_optimizers(cfg, train),
    )


def build_stl(cfg: DictConfig, datamodule: STLDataModule, train: bool = True) -> Any:
    """Backbone, a head with the task's classes, and ``stl_algorithm``."""
    backbone = instantiate(cfg.backbone)
    head = HeadSTL(
        input_dim=backbone.output_dim, num_classes=datamodule.num_classes(datamodule.task_id)
    )
    return instantiate(
        cfg.stl_algorithm,
        backbone=backbone,
        head=head,
        _recursive_=False,
        **_optimizers(cfg, train),
    )


def _write(
    run_dir: Path,
    cfg: DictConfig,
    accuracies: dict[int, float],
    extra: dict[str, Any],
    losses: dict[int, float],
) -> None:
    metrics = cfg.get("metrics") or {}
    if metrics.get("accuracy_csv"):
        results.write_task_accuracy_csv(run_dir / metrics.accuracy_csv, accuracies)
    if metrics.get("loss_csv"):
        results.write_task_accuracy_csv(run_dir / metrics.loss_csv, losses, "loss")
    if metrics.get("summary"):
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


def _run_experiment(cfg: DictConfig, mtl: bool) -> dict[int, float]:
    kind = "mtl" if mtl else "stl"
    require(cfg, f"{kind}_dataset", "backbone", f"{kind}_algorithm", "optimizer", "trainer")
    config_checks.check_experiment_config(cfg)
    run_dir = output_dir(cfg)
    seed(cfg)
    datamodule = instantiate(cfg[f"{kind}_dataset"])
    algorithm = build_mtl(cfg, datamodule) if mtl else build_stl(cfg, datamodule)
    config_checks.check_optimizer_builds(
        algorithm.optimizer_factory, algorithm.lr_scheduler_factory
    )
    request_compile(cfg, algorithm)
    batch_norm_statistics = choose_batch_norm_statistics(cfg, algorithm)
    trainer = make_trainer(cfg, run_dir, version=kind)
    log_every_epoch(trainer, len(datamodule.train_dataloader()))
    trainer.fit(algorithm, datamodule=datamodule)
    accuracies = _test(trainer, algorithm, datamodule, mtl)
    if not trainer.is_global_zero:
        return accuracies
    _write(
        run_dir,
        cfg,
        accuracies,
        {"algorithm": type(algorithm).__name__, "batch_norm_statistics": batch_norm_statistics},
        algorithm.test_loss,
    )
    if config_bool(cfg, "save_model"):
        model_path = run_dir / cfg.get("model_file", "saved_model.pt")
        save_checkpoint(model_path, cfg, algorithm.state_dict())
        log.info("saved the model to %s", model_path)
    print_table(
        f"{kind.upper()} experiment ({type(algorithm).__name__})",
        ["tasks", "average accuracy"],
        [str(len(accuracies)), f"{results.average(accuracies):.4f}"],
        [f"Results in {run_dir}"],
    )
    return accuracies


def _run_evaluation(cfg: DictConfig, mtl: bool) -> dict[int, float]:
    kind = "mtl" if mtl else "stl"
    require(cfg, "model_path", "trainer")
    config_checks.check_experiment_config(cfg)
    run_dir = output_dir(cfg)
    checkpoint, saved = open_model_file(cfg, "MTL_EXPR" if mtl else "STL_EXPR")
    datamodule = instantiate(saved[f"{kind}_dataset"])
    with weights_budget(checkpoint, f"model_path '{cfg.model_path}'"):
        algorithm = (
            build_mtl(saved, datamodule, train=False)
            if mtl
            else build_stl(saved, datamodule, train=False)
        )
    algorithm.load_state_dict(checkpoint["state_dict"])
    request_compile(cfg, algorithm)
    trainer = make_trainer(cfg, run_dir, version="eval")
    accuracies = _test(trainer, algorithm, datamodule, mtl)
    if not trainer.is_global_zero:
        return accuracies
    _write(run_dir, cfg, accuracies, {"model_path": str(cfg.model_path)}, algorithm.test_loss)
    print_table(
        f"{kind.upper()} evaluation",
        ["tasks", "average accuracy"],
        [str(len(accuracies)), f"{results.average(accuracies):.4f}"],
        [f"Model {cfg.model_path}", f"Results in {run_dir}"],
    )
    return accuracies


def run_mtl_experiment(cfg: DictConfig) -> dict[int, float]:
    """Train all tasks jointly, test each task; returns accuracy per task."""
    return _run_experiment(cfg, mtl=True)


def run_mtl_evaluation(cfg: DictConfig) -> dict[int, float]:
    """Reload a saved MTL model (``model_path``) and test every task."""
    return _run_evaluation(cfg, mtl=True)


def run_stl_experiment(cfg: DictConfig) -> dict[int, float]:
    """Train and test one task; returns ``{1: accuracy}``."""
    return _run_experiment(cfg, mtl=False)


def run_stl_evaluation(cfg: DictConfig) -> dict[int, float]:
    """Reload a saved STL model (``model_path``) and test it."""
    return _run_evaluation(cfg, mtl=False)
