"""Continual-learning pipelines: the CL main experiment and the evaluation of a saved model."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from clarena.cl import CLBackbone, HeadDIL, HeadsCIL, HeadsTIL
from clarena.experiments import config_checks
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.running import results
from clarena.experiments.running.algorithms.base import CLAlgorithm
from clarena.experiments.running.data import CLDataModule
from clarena.experiments.running.data.sequences import (
    PermutedSequence,
    RotatedSequence,
    SplitSequence,
)
from clarena.experiments.running.pipelines.common import (
    PipelineConfigError,
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
from clarena.experiments.running.scaleout import check_ranks_agree, full_test_loader
from clarena.experiments.runs.resume import (
    check_same_experiment,
    discard_continuation_hydra_dir,
    load_resume_state,
    resume_file,
    save_resume_state,
    set_rng_state,
)
from clarena.experiments.runs.safe_config import checked_config, config_targets

log = logging.getLogger(__name__)

#: Values of ``cl_paradigm``.
CL_PARADIGMS: tuple[str, ...] = ("TIL", "CIL", "DIL")

#: The heads each paradigm uses.
_HEADS: dict[str, type[HeadsTIL | HeadsCIL | HeadDIL]] = {
    "TIL": HeadsTIL,
    "CIL": HeadsCIL,
    "DIL": HeadDIL,
}

#: How the test stage picks the task (its mask, its head) in DIL: the true task id of each test
#: dataloader, as upstream CLArena does; recorded in summary.json as ``task_id_at_test``.
DIL_TEST_TASK_ID = "oracle"


def build_algorithm(config: ExperimentConfig, with_optimizer: bool = True) -> CLAlgorithm:
    """Instantiate backbone, heads (by ``cl_paradigm``) and ``cl_algorithm`` from ``config``."""
    paradigm = config.cl_paradigm
    if paradigm not in CL_PARADIGMS:
        raise PipelineConfigError(
            f"cl_paradigm must be one of {', '.join(CL_PARADIGMS)}; got {paradigm!r}."
        )
    components = config.components
    backbone = instantiate(components.backbone)
    if not isinstance(backbone, CLBackbone):
        target = components.backbone.get("_target_") if components.backbone else None
        raise PipelineConfigError(
            f"The CL pipelines need a continual-learning backbone; backbone "
            f"'{target}' is a {type(backbone).__name__}. Use its CL variant, e.g. "
            f"clarena.backbones.CL{type(backbone).__name__}."
        )
    heads = _HEADS[paradigm](input_dim=backbone.output_dim)
    optimizer = instantiate(components.optimizer) if with_optimizer else None
    lr_scheduler = (
        instantiate(components.lr_scheduler) if with_optimizer and components.lr_scheduler else None
    )
    return instantiate(
        components.cl_algorithm,
        backbone=backbone,
        heads=heads,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        _recursive_=False,
    )


def check_dil_dataset(datamodule: CLDataModule, tasks: list[int]) -> None:
    """Refuse a dataset domain-incremental learning cannot use, before training.

    DIL shares one head, so every task must have the same classes (labels are task-local):
    a permuted or rotated sequence always, a split sequence only when all its groups have the
    same size.

    Raises:
        PipelineConfigError: another sequence, or tasks with different class counts.
    """
    sequence = datamodule.sequence
    if not isinstance(sequence, PermutedSequence | RotatedSequence | SplitSequence):
        raise PipelineConfigError(
            f"cl_paradigm=DIL works with permuted and rotated sequences, and split sequences "
            f"whose tasks have equally many classes; the dataset is a "
            f"{type(sequence).__name__}. Use cl_paradigm=TIL or CIL."
        )
    counts = {task: datamodule.num_classes(task) for task in tasks}
    if len(set(counts.values())) > 1:
        raise PipelineConfigError(
            f"cl_paradigm=DIL shares one head, so every task needs the same number of classes; "
            f"the tasks have {counts} classes. Give the split sequence groups of one size (e.g. "
            f"class_split=[[0,1],[2,3],...]) or use cl_paradigm=TIL or CIL."
        )


def _task_list(value: int | list[int] | None, num_tasks: int, key: str) -> list[int]:
    """``train_tasks``/``eval_tasks``: an int N means tasks 1..N, a list names the tasks."""
    return config_checks.task_list(value, num_tasks, key)


def test_tasks(
    trainer: Any, algorithm: CLAlgorithm, datamodule: CLDataModule, tasks: list[int]
) -> dict[int, float]:
    """Test ``algorithm`` on each task of ``tasks``; returns the exact accuracy per task."""
    algorithm.test_task_ids = list(tasks)
    loaders = [datamodule.task_dataloader(task, "test") for task in tasks]
    if trainer.world_size > 1:
        # Every rank tests on the whole test set: the counts stay exact (no padded duplicates)
        # and the accuracies equal on every rank.
        loaders = [full_test_loader(loader) for loader in loaders]
    trainer.test(algorithm, dataloaders=loaders, verbose=False)
    return dict(algorithm.test_accuracy)


def write_results(
    run_dir: Path,
    config: ExperimentConfig,
    rows: dict[int, dict[int, float]],
    task_ids: list[int],
    extra: dict[str, Any],
    loss_rows: dict[int, dict[int, float]] | None = None,
    model_config: ExperimentConfig | None = None,
) -> None:
    """Write acc.csv, the two plots and summary.json as named by ``metrics``.

    ``loss_rows`` (the test-loss matrix) is written where ``metrics`` names ``loss_csv``,
    ``loss_matrix_plot`` or ``average_loss_plot``. The plots are titled with the algorithm, the
    backbone and the dataset of ``model_config``: the config the model was trained with
    (default ``config``; an evaluation passes the saved one, since its own config names no
    backbone or dataset).
    """
    metrics = config.metrics
    if metrics.accuracy_csv:
        results.write_accuracy_csv(run_dir / metrics.accuracy_csv, rows, task_ids)
    model = (config if model_config is None else model_config).components
    title = results.run_title(
        extra["algorithm"],
        str(model.backbone.get("_target_", "")) if model.backbone is not None else "",
        model.cl_dataset or {},
    )
    if metrics.accuracy_matrix_plot:
        results.plot_accuracy_matrix(
            run_dir / metrics.accuracy_matrix_plot, rows, task_ids, title=title
        )
    if metrics.average_accuracy_plot:
        results.plot_average_accuracy(run_dir / metrics.average_accuracy_plot, rows, title=title)
    if metrics.summary:
        results.write_json(run_dir / metrics.summary, results.summary(rows, extra))
    if loss_rows:
        if metrics.loss_csv:
            results.write_accuracy_csv(run_dir / metrics.loss_csv, loss_rows, task_ids, "loss")
        if metrics.loss_matrix_plot:
            results.plot_accuracy_matrix(
                run_dir / metrics.loss_matrix_plot, loss_rows, task_ids, title, "loss"
            )
        if metrics.average_loss_plot:
            results.plot_average_accuracy(
                run_dir / metrics.average_loss_plot, loss_rows, title, "loss"
            )


def run_cl_main_experiment(config: ExperimentConfig) -> dict[int, dict[int, float]]:
    """Train the tasks in turn; after each, test every task trained so far.

    After each task the resume state is written (``resume_state: false`` skips it), so that
    ``resume=<run dir>`` continues an interrupted run from its last completed task. Under DDP,
    every rank checks after each task that its algorithm state equals every other rank's.

    Returns:
        The accuracy matrix rows (trained task -> {tested task: accuracy}).
    """
    config.require("cl_dataset", "backbone", "cl_algorithm", "optimizer", "trainer", "cl_paradigm")
    run_dir = output_dir(config)
    state = _resume_state(config, run_dir)
    seed(config)
    datamodule: CLDataModule = instantiate(config.components.cl_dataset)
    algorithm = build_algorithm(config)
    config_checks.check_optimizer_builds(
        algorithm.optimizer_factory, algorithm.lr_scheduler_factory
    )
    request_compile(config, algorithm)
    batch_norm_statistics = choose_batch_norm_statistics(config, algorithm)
    tasks = _task_list(config.train_tasks, datamodule.num_tasks, "train_tasks")
    if config.cl_paradigm == "DIL":
        check_dil_dataset(datamodule, tasks)
    rows: dict[int, dict[int, float]] = {}
    # Test losses of the tasks trained by this process (a resumed run's earlier rows are not
    # in its resume state).
    loss_rows: dict[int, dict[int, float]] = {}
    capacities: dict[int, float] = {}
    if state is not None:
        rows, capacities = _restore(algorithm, state, tasks)
        if all(task in rows for task in tasks) and _outputs_written(run_dir, config):
            _report_finished(run_dir, tasks)
            return rows
    metrics = config.metrics
    is_global_zero = True
    for index, task in enumerate(tasks):
        if task in rows:
            continue
        datamodule.setup_task_id(task)
        algorithm.setup_task_id(task, datamodule.num_classes(task))
        trainer = make_trainer(config, run_dir, version=f"task_{task}")
        log_every_epoch(trainer, len(datamodule.train_dataloader()))
        trainer.fit(algorithm, datamodule=datamodule)
        rows[task] = test_tasks(trainer, algorithm, datamodule, tasks[: index + 1])
        loss_rows[task] = dict(algorithm.test_loss)
        log.info("after training task %d: %s", task, _accuracies_text(rows[task]))
        capacity = algorithm.capacity()
        if capacity is not None:
            capacities[task] = capacity
        is_global_zero = trainer.is_global_zero
        if trainer.world_size > 1:
            check_ranks_agree(trainer, algorithm, run_dir, task)
        if not is_global_zero:
            continue
        if metrics.accuracy_csv:
            results.write_accuracy_csv(run_dir / metrics.accuracy_csv, rows, tasks)
        if config.resume_state:
            trained = tasks[: index + 1]
            save_resume_state(
                run_dir,
                config.record,
                state_dict=algorithm.state_dict(),
                trained_tasks=trained,
                num_classes={t: datamodule.num_classes(t) for t in trained},
                rows=rows,
                capacities=capacities,
            )
    if not is_global_zero:
        return rows
    extra: dict[str, Any] = {
        "cl_paradigm": config.cl_paradigm,
        "algorithm": type(algorithm).__name__,
        "batch_norm_statistics": batch_norm_statistics,
    }
    if config.cl_paradigm == "DIL":
        extra["task_id_at_test"] = DIL_TEST_TASK_ID
    if capacities:
        extra["capacity_per_task"] = {str(t): c for t, c in capacities.items()}
    write_results(run_dir, config, rows, tasks, extra, loss_rows)
    log.info("results in %s", run_dir)
    if config.save_model:
        model_path = run_dir / config.model_file
        save_checkpoint(
            model_path,
            config.record,
            algorithm.state_dict(),
            trained_tasks=tasks,
            num_classes={task: datamodule.num_classes(task) for task in tasks},
        )
        log.info("saved the model to %s", model_path)
    last = rows[tasks[-1]]
    print_table(
        f"CL main experiment ({type(algorithm).__name__}, {config.cl_paradigm})",
        ["tasks", "average accuracy", "BWT", "forgetting"],
        [
            str(len(tasks)),
            f"{results.average(last):.4f}",
            _fmt(results.backward_transfer(rows)),
            _fmt(results.forgetting(rows)),
        ],
        [f"Results in {run_dir}"],
    )
    return rows


def _resume_state(config: ExperimentConfig, run_dir: Path) -> dict[str, Any] | None:
    """The saved state of the run ``resume`` continues (``None`` when not resuming)."""
    resume = config.resume
    if resume is None:
        return None
    if Path(resume).resolve() != run_dir.resolve():
        raise PipelineConfigError(
            f"resume='{resume}' continues that run in its own dir, but the output dir is "
            f"'{run_dir}'. Drop output_dir= (resume sets it)."
        )
    with _discarding_refused_resume():
        state = load_resume_state(resume)
        # Nothing is built from the saved config (the run builds its own, which must equal it),
        # but it is held to the same rule as a model file's: targets the user's config names, or
        # allowed ones.
        checked_config(
            state["config"],
            f"resume file '{resume_file(resume)}'",
            trust=config.trust_model_file,
            also_allowed=config_targets(config.record),
        )
        check_same_experiment(state["config"], config.record)
    return state


@contextlib.contextmanager
def _discarding_refused_resume() -> Iterator[None]:
    """On a refused resume, remove the ``.hydra/resume_<time>/`` folder of the continuation."""
    try:
        yield
    except Exception:
        discard_continuation_hydra_dir()
        raise


def _restore(
    algorithm: CLAlgorithm, state: dict[str, Any], tasks: list[int]
) -> tuple[dict[int, dict[int, float]], dict[int, float]]:
    """Load the saved algorithm state and RNG states; returns the saved rows and capacities."""
    trained = [int(t) for t in state["trained_tasks"]]
    if trained != tasks[: len(trained)]:
        discard_continuation_hydra_dir()
        raise PipelineConfigError(
            f"resume: the interrupted run trained tasks {trained}, which are not the first tasks "
            f"of train_tasks {tasks}."
        )
    for task in trained:
        algorithm.setup_task_id(task, int(state["num_classes"][task]))
    algorithm.load_state_dict(state["state_dict"])
    # The RNG states last, after everything above drew from the generators.
    set_rng_state(state["rng"])
    rows = {int(t): {int(j): float(a) for j, a in row.items()} for t, row in state["rows"].items()}
    capacities = {int(t): float(c) for t, c in state["capacities"].items()}
    remaining = [t for t in tasks if t not in rows]
    log.info(
        "resumed: tasks %s trained before; %s",
        trained,
        f"continuing with tasks {remaining}" if remaining else "nothing left to train",
    )
    return rows, capacities


def _outputs_written(run_dir: Path, config: ExperimentConfig) -> bool:
    """Whether every file ``config`` writes at the end of a run is in ``run_dir``."""
    names = config.metrics.paths()
    if config.save_model:
        names.append(config.model_file)
    return all((run_dir / name).is_file() for name in names)


def _report_finished(run_dir: Path, tasks: list[int]) -> None:
    """Say on the console and in the log that a resumed run had nothing left to do."""
    discard_continuation_hydra_dir()
    message = (
        f"The run in '{run_dir}' already trained every task of train_tasks {tasks} and wrote its "
        f"results: nothing was trained or rewritten. To train more tasks, resume it with a longer "
        f"train_tasks."
    )
    log.info("%s", message)
    print(f"clarena: {message}")


def run_cl_main_evaluation(config: ExperimentConfig) -> dict[int, float]:
    """Reload a saved CL model (``model_path``) and test it on its trained tasks.

    The backbone, algorithm, paradigm and dataset come from the config saved with the model, so
    the accuracies equal the last row of the training run's accuracy matrix; the data location
    and the process resources are the user's (:func:`~.evaluation.evaluation_config`).
    ``eval_tasks`` restricts the tested tasks.

    Returns:
        Accuracy per tested task.
    """
    config.require("model_path", "trainer")
    run_dir = output_dir(config)
    checkpoint, saved = open_model_file(config, "CL_MAIN_EXPR")
    datamodule: CLDataModule = instantiate(saved.components.cl_dataset)
    trained = [int(t) for t in checkpoint["trained_tasks"]]
    with weights_budget(checkpoint, f"model_path '{config.model_path}'"):
        algorithm = build_algorithm(saved, with_optimizer=False)
        for task in trained:
            algorithm.setup_task_id(task, int(checkpoint["num_classes"][task]))
    algorithm.load_state_dict(checkpoint["state_dict"])
    request_compile(config, algorithm)
    tasks = _task_list(config.eval_tasks, datamodule.num_tasks, "eval_tasks")
    if config.eval_tasks is None:
        tasks = trained
    untrained = [t for t in tasks if t not in trained]
    if untrained:
        raise PipelineConfigError(
            f"eval_tasks names tasks {untrained} that the saved model never trained (it trained "
            f"{trained})."
        )
    trainer = make_trainer(config, run_dir, version="eval")
    accuracies = test_tasks(trainer, algorithm, datamodule, tasks)
    log.info("evaluation of %s: %s", config.model_path, _accuracies_text(accuracies))
    if not trainer.is_global_zero:
        return accuracies
    rows = {trained[-1]: accuracies}
    write_results(
        run_dir,
        config,
        rows,
        tasks,
        {
            "trained_tasks": trained,
            "model_path": str(config.model_path),
            "algorithm": type(algorithm).__name__,
            **({"task_id_at_test": DIL_TEST_TASK_ID} if saved.cl_paradigm == "DIL" else {}),
        },
        {trained[-1]: dict(algorithm.test_loss)},
        model_config=saved,
    )
    print_table(
        "CL main evaluation",
        ["tasks", "average accuracy"],
        [str(len(tasks)), f"{results.average(accuracies):.4f}"],
        [f"Model {config.model_path}", f"Results in {run_dir}"],
    )
    return accuracies


def _accuracies_text(accuracies: dict[int, float]) -> str:
    """``test accuracy task 1 0.9889, task 2 0.9777; average 0.9833``."""
    per_task = ", ".join(f"task {t} {a:.4f}" for t, a in accuracies.items())
    return f"test accuracy {per_task}; average {results.average(accuracies):.4f}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"
