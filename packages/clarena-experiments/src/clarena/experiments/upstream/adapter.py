"""Read an upstream CLArena experiment config as clarena's, once, before anything is built.

:func:`adapt_config` runs at the start of every pipeline. On a config written for clarena it
changes nothing and prints nothing. On one written for upstream CLArena it

- rewrites upstream ``_target_``s through the alias table (:mod:`.aliases`), refusing the
  classes clarena does not implement;
- turns the list-shaped ``metrics`` and ``callbacks`` groups into clarena's settings;
- infers a missing ``pipeline:`` (the old ``experiment/`` layout) from the keys present;
- honours or refuses each upstream key (``num_tasks``, ``eval_after_tasks``, ``eval_tasks``,
  ``test``, ``eval``, ``misc.*``, ``main_model_path``) by name;
- maps torchvision weight names to the same weights (:mod:`.weights`).

Each mapping is announced by one line on stderr (and in the run's log), once per run.
"""

from __future__ import annotations

import logging
import sys
from pathlib import PurePosixPath
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clarena.experiments.config_checks import task_list
from clarena.experiments.errors import PipelineConfigError
from clarena.experiments.upstream import aliases, config_tree, datasets, weights

log = logging.getLogger(__name__)

#: Upstream pipelines clarena does not run -> what it offers instead.
REFUSED_PIPELINES: dict[str, str] = {
    **dict.fromkeys(
        (
            "CUL_MAIN_EXPR",
            "CUL_MAIN_EVAL",
            "CUL_FULL_EVAL",
            "CUL_FULL_EVAL_ATTACHED",
            "CUL_REF_RETRAIN_EXPR",
            "CUL_REF_ORIGINAL_EXPR",
        ),
        "continual unlearning is not in clarena; its pipelines are CL_MAIN_EXPR, CL_MAIN_EVAL, "
        "MTL_EXPR, MTL_EVAL, STL_EXPR and STL_EVAL",
    ),
    "CL_FULL_EVAL": "clarena's CL_MAIN_EXPR writes average accuracy, backward transfer and "
    "forgetting to results/summary.json; forward transfer against reference runs is not in "
    "clarena",
    "CL_FULL_EVAL_ATTACHED": "clarena's CL_MAIN_EXPR writes average accuracy, backward transfer "
    "and forgetting to results/summary.json",
    "CL_REF_JOINT_EXPR": "run pipeline: MTL_EXPR on the same tasks (mtl_dataset: "
    "clarena.mtl_datasets.MTLDatasetFromCL)",
    "CL_REF_INDEPENDENT_EXPR": "run pipeline: CL_MAIN_EXPR with cl_algorithm Independent",
    "CL_REF_RANDOM_EXPR": "an untrained reference run is not in clarena",
}

_METRIC_FILES: dict[str, dict[str, str]] = {
    "clarena.metrics.CLAccuracy": {
        "test_acc_csv_name": "accuracy_csv",
        "test_acc_matrix_plot_name": "accuracy_matrix_plot",
        "test_ave_acc_plot_name": "average_accuracy_plot",
    },
    "clarena.metrics.MTLAccuracy": {"test_acc_csv_name": "accuracy_csv"},
    "clarena.metrics.STLAccuracy": {"test_acc_csv_name": "accuracy_csv"},
    "clarena.metrics.CLLoss": {
        "test_loss_cls_csv_name": "loss_csv",
        "test_loss_cls_matrix_plot_name": "loss_matrix_plot",
        "test_ave_loss_cls_plot_name": "average_loss_plot",
    },
    "clarena.metrics.MTLLoss": {"test_loss_cls_csv_name": "loss_csv"},
    "clarena.metrics.STLLoss": {"test_loss_cls_csv_name": "loss_csv"},
}

_OUTPUT_DIR = "${output_dir}"


class _Notices:
    """The notices of one adaptation, each printed once."""

    def __init__(self) -> None:
        self.lines: dict[str, None] = {}

    def add(self, line: str) -> None:
        self.lines[line] = None

    def emit(self) -> None:
        # A job logging that echoes the log on the console (upstream's) shows the log line as the
        # notice; otherwise it is printed, and logged to the run's log file.
        for line in self.lines:
            if not _console_logging():
                print(f"clarena: {line}", file=sys.stderr)
            log.info(line)


def _console_logging() -> bool:
    """Whether this Hydra job's logging sends the root logger's records to a console handler."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    logging_cfg = HydraConfig.get().job_logging
    handlers = OmegaConf.select(logging_cfg, "root.handlers", default=None) or []
    classes = {
        str(OmegaConf.select(logging_cfg, f"handlers.{name}.class", default=""))
        for name in handlers
    }
    return "logging.StreamHandler" in classes


def adapt_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` read as clarena's config: unchanged unless it uses upstream CLArena's forms.

    Raises:
        PipelineConfigError: an upstream class, pipeline or key clarena does not implement (the
            message names it and what clarena offers instead).
    """
    data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    notices = _Notices()
    _pipeline(data, notices)
    _task_keys(data, notices)
    _metrics(data, notices)
    _callbacks(data, notices)
    _targets(data, "", notices)
    _misc(data, notices)
    _logging(notices)
    if not notices.lines:
        return cfg
    _pin_output_dir(data)
    notices.emit()
    adapted = OmegaConf.create(data)
    config_tree.show(adapted)
    return adapted


def _pin_output_dir(data: dict[str, Any]) -> None:
    """Fix ``output_dir`` to the run dir Hydra resolved it to.

    A rebuilt config resolves ``${now:...}`` (upstream's ``misc.timestamp``) afresh, which a
    second later would name another folder.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or "${" not in str(data.get("output_dir", "")):
        return
    runtime = HydraConfig.get().runtime
    if not OmegaConf.is_missing(runtime, "output_dir"):  # missing under the compose API
        data["output_dir"] = runtime.output_dir


def _pipeline(data: dict[str, Any], notices: _Notices) -> None:
    name = data.get("pipeline")
    if name in REFUSED_PIPELINES:
        raise PipelineConfigError(
            f"pipeline: upstream CLArena's {name} has no clarena counterpart: "
            f"{REFUSED_PIPELINES[name]}. See docs/coming-from-clarena.md."
        )
    if name is not None:
        return
    if data.get("cul_algorithm") is not None or data.get("unlearning_requests") is not None:
        raise PipelineConfigError(
            f"pipeline: this experiment is continual unlearning (cul_algorithm), which has no "
            f"clarena counterpart: {REFUSED_PIPELINES['CUL_MAIN_EXPR']}."
        )
    evaluates = any(data.get(k) is not None for k in ("model_path", "main_model_path"))
    for section, kind in (("mtl", "MTL"), ("stl", "STL"), ("cl", "CL_MAIN")):
        if data.get(f"{section}_algorithm") is not None:
            inferred, reason = f"{kind}_EXPR", f"{section}_algorithm"
            break
        if data.get(f"{section}_dataset") is not None and evaluates:
            inferred, reason = f"{kind}_EVAL", f"{section}_dataset and a model path"
            break
    else:
        return
    data["pipeline"] = inferred
    notices.add(
        f"no pipeline: key (upstream's old experiment/ layout); running pipeline: {inferred}, "
        f"inferred from {reason}. Add `pipeline: {inferred}` to the file to make it explicit."
    )
    if inferred.startswith("MTL") and "mtl_dataset" not in data and "cl_dataset" in data:
        data["mtl_dataset"] = {
            "_target_": "clarena.mtl_datasets.MTLDatasetFromCL",
            "cl_dataset": data.pop("cl_dataset"),
        }
        notices.add("cl_dataset of an MTL experiment: its tasks are the MTL tasks, all at once")


def _as_tasks(value: Any, key: str) -> list[int]:
    return task_list(value, None, key)


def _task_keys(data: dict[str, Any], notices: _Notices) -> None:
    pipeline = data.get("pipeline")
    if "num_tasks" in data:
        count = data.pop("num_tasks")
        if data.get("train_tasks") is None:
            data["train_tasks"] = count
        elif _as_tasks(data["train_tasks"], "train_tasks") != _as_tasks(count, "num_tasks"):
            raise PipelineConfigError(
                f"num_tasks={count!r} and train_tasks={data['train_tasks']!r} disagree; upstream's "
                f"old top-level num_tasks is the number of tasks to train. Keep one of them."
            )
        notices.add(f"top-level num_tasks={count} (upstream's old layout) is train_tasks={count}")
    for key in ("test", "eval"):
        if key in data:
            value = data.pop(key)
            if value is not True:
                raise PipelineConfigError(
                    f"{key}={value!r}: clarena always tests after training (upstream's {key}: "
                    f"true); drop the key."
                )
            notices.add(f"{key}: true is clarena's behaviour (it always tests after training)")
    if pipeline == "CL_MAIN_EXPR":
        trained = data.get("train_tasks")
        for key in ("eval_after_tasks", "eval_tasks"):
            if key not in data:
                continue
            value = data.pop(key)
            if trained is None:
                raise PipelineConfigError(
                    f"{key}={value!r} needs train_tasks to compare with; set train_tasks "
                    f"(clarena evaluates after every trained task, on every task seen so far)."
                )
            missing = [
                t for t in _as_tasks(trained, "train_tasks") if t not in _as_tasks(value, key)
            ]
            if missing:
                raise PipelineConfigError(
                    f"{key}={value!r} leaves out trained tasks {missing}; clarena evaluates after "
                    f"every trained task, on every task seen so far (the accuracy matrix, BWT and "
                    f"forgetting need each row). Drop {key} or make it cover train_tasks."
                )
            notices.add(
                f"{key}={value!r}: honoured, clarena evaluates after every trained task on every "
                f"task seen so far"
            )
    if pipeline in ("MTL_EXPR", "MTL_EVAL"):
        _mtl_tasks(data, notices)
    if data.get("main_model_path") is not None:
        raise PipelineConfigError(
            f"main_model_path={data['main_model_path']!r}: upstream CLArena saves whole pickled "
            f"modules, which clarena does not load. Train with clarena (save_model: true) and set "
            f"model_path to its saved_model.pt."
        )


def _mtl_tasks(data: dict[str, Any], notices: _Notices) -> None:
    """An MTL experiment's ``train_tasks`` / ``eval_tasks``: the first N tasks, or refused."""
    dataset = data.get("mtl_dataset") or {}
    inner = dataset.get("cl_dataset") if isinstance(dataset, dict) else None
    arguments = inner if isinstance(inner, dict) else dataset
    for key in ("train_tasks", "eval_tasks"):
        if data.get(key) is None:
            continue
        value = data.pop(key)
        tasks = _as_tasks(value, key)
        first = list(range(1, len(tasks) + 1))
        split = datasets.class_split_list(arguments.get("class_split"), "class_split")
        count = arguments.get("num_tasks") or (len(split) if split else None)
        if count is not None and tasks == list(range(1, count + 1)):
            notices.add(f"{key}={value!r}: honoured, the MTL run uses the dataset's {count} tasks")
            continue
        if tasks == first and count is not None and len(tasks) < count:
            if split:
                arguments["class_split"] = list(split)[: len(tasks)]
                arguments["num_tasks"] = len(tasks)
                notices.add(f"{key}={value!r}: the MTL run uses the first {len(tasks)} tasks")
                continue
            permuted = arguments.get("sequence") == "permuted" or str(
                arguments.get("_target_", "")
            ).rpartition(".")[2].startswith("Permuted")
            if permuted:
                arguments["num_tasks"] = len(tasks)
                notices.add(f"{key}={value!r}: the MTL run uses the first {len(tasks)} tasks")
                continue
        raise PipelineConfigError(
            f"{key}={value!r}: clarena's MTL pipelines use every task of mtl_dataset"
            + (f", which has {count} tasks" if count is not None else "")
            + f"; the first N tasks can be taken from a permuted dataset or an explicit "
            f"class_split only. Set the dataset's num_tasks / class_split to the tasks you want "
            f"and drop {key}."
        )


def _relative_dir(save_dir: Any, key: str) -> PurePosixPath:
    """``save_dir`` as a path under the run dir (``${output_dir}/results/`` -> ``results``)."""
    text = str(save_dir or _OUTPUT_DIR)
    if not text.startswith(_OUTPUT_DIR):
        raise PipelineConfigError(
            f"{key}.save_dir={save_dir!r}: clarena writes results under the run's output dir; "
            f"give save_dir as ${{output_dir}}/<folder>."
        )
    return PurePosixPath(text[len(_OUTPUT_DIR) :].strip("/") or ".")


def _metrics(data: dict[str, Any], notices: _Notices) -> None:
    """List-shaped ``metrics`` (upstream metric objects) as clarena's result-file settings."""
    metrics = data.get("metrics")
    if not isinstance(metrics, list):
        return
    settings: dict[str, Any] = {}
    for index, item in enumerate(metrics):
        key = f"metrics[{index}]"
        target = item.get("_target_") if isinstance(item, dict) else None
        if target == "clarena.metrics.HATNetworkCapacity":
            notices.add(f"{target} is {aliases.HONOURED_BY_SETTINGS[target]}")
            continue
        if target not in _METRIC_FILES:
            if aliases.is_upstream(target):
                raise aliases.refusal(str(target), key)
            raise PipelineConfigError(
                f"{key}: a list-shaped metrics group may name upstream CLArena's metrics only; "
                f"got {target!r}. clarena's own metrics group sets result files, e.g. "
                f"metrics=cl_default."
            )
        folder = _relative_dir(item.get("save_dir"), key)
        for name, value in item.items():
            if name in ("_target_", "save_dir"):
                continue
            if name not in _METRIC_FILES[target]:
                raise PipelineConfigError(
                    f"{key}.{name}={value!r}: clarena writes no such file for {target} (it "
                    f"writes {', '.join(_METRIC_FILES[target])}); set it to null or remove it."
                )
            if value is not None:
                settings[_METRIC_FILES[target][name]] = str(folder / str(value))
        if target.endswith("Accuracy"):
            settings["summary"] = str(folder / "summary.json")
        notices.add(f"{target} is {aliases.HONOURED_BY_SETTINGS[target]}")
    data["metrics"] = settings


def _callbacks(data: dict[str, Any], notices: _Notices) -> None:
    """Upstream's callbacks (a list, or the old layout's named dict) as clarena's.

    The logging callbacks are clarena's run log and ``SaveModels`` is ``save_model``; the rest
    stay callbacks, named, with their targets rewritten by :func:`_targets`.
    """
    callbacks = data.get("callbacks")
    if isinstance(callbacks, list):
        entries = [(f"callbacks[{i}]", None, item) for i, item in enumerate(callbacks)]
    elif isinstance(callbacks, dict):
        entries = [(f"callbacks.{name}", str(name), item) for name, item in callbacks.items()]
    else:
        return
    named: dict[str, Any] = {}
    changed = isinstance(callbacks, list)
    for key, name, item in entries:
        target = item.get("_target_") if isinstance(item, dict) else None
        if item is None:
            continue
        if not isinstance(target, str):
            raise PipelineConfigError(f"{key}: a callback needs a _target_; got {item!r}.")
        if target.endswith("Pylogger") and target in aliases.HONOURED_BY_SETTINGS:
            notices.add(f"{target} is {aliases.HONOURED_BY_SETTINGS[target]}")
            changed = True
        elif target == "clarena.callbacks.SaveModels":
            folder = _relative_dir(item.get("save_dir"), key)
            data["save_model"] = True
            data["model_file"] = str(folder / "saved_model.pt")
            notices.add(
                f"{target} is save_model: true, model_file: {data['model_file']} (clarena's own "
                f"model file, read by its *_EVAL pipelines)"
            )
            changed = True
        elif aliases.is_upstream(target) and target not in aliases.ALIASES:
            raise aliases.refusal(target, key)
        else:
            short = name or target.rpartition(".")[2]
            named[short if short not in named else f"{short}_{len(named)}"] = item
    if changed:
        data["callbacks"] = named


def _targets(node: Any, key: str, notices: _Notices) -> None:
    """Rewrite every upstream ``_target_`` under ``node`` in place (nested dicts and lists)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _targets(item, f"{key}[{index}]", notices)
        return
    if not isinstance(node, dict):
        return
    target = node.get("_target_")
    if aliases.is_upstream(target):
        alias = aliases.ALIASES.get(str(target))
        if alias is None:
            raise aliases.refusal(str(target), key)
        special = {k: v for k, v in node.items() if k.startswith("_")}
        arguments = alias.translate(key, {k: v for k, v in node.items() if not k.startswith("_")})
        node.clear()
        node.update(special | arguments | {"_target_": alias.target})
        notices.add(alias.notice())
    elif isinstance(target, str) and weights.is_torchvision_name(node.get("pretrained_weights")):
        value = node["pretrained_weights"]
        node["pretrained_weights"], how = weights.clarena_weights(
            target, value, f"{key}.pretrained_weights"
        )
        notices.add(f"{key}.pretrained_weights={value} (torchvision's name) is {how}")
    if (
        isinstance(target, str)
        and target.startswith("clarena.backbones.HATMask")
        and ("gate" in node)
    ):
        gate = node.pop("gate")
        if gate != "sigmoid":
            raise PipelineConfigError(
                f"{key}.gate={gate!r}: clarena's HAT masks gate with the sigmoid (upstream's "
                f"'sigmoid'); set gate: sigmoid or drop the key."
            )
        notices.add(f"{key}.gate=sigmoid is clarena's HAT gate")
    for name, value in list(node.items()):
        if not name.startswith("_"):
            _targets(value, f"{key}.{name}" if key else name, notices)


def _misc(data: dict[str, Any], notices: _Notices) -> None:
    misc = data.get("misc")
    if not isinstance(misc, dict):
        return
    for name, value in misc.items():
        if name == "timestamp":
            notices.add("misc.timestamp: honoured through the output_dir it names")
        elif name == "config_tree":
            config_tree.check(value, "misc.config_tree")
            notices.add("misc.config_tree: the config tree is printed / saved as asked")
        else:
            raise PipelineConfigError(
                f"misc.{name}={value!r}: clarena reads misc.timestamp and misc.config_tree only; "
                f"remove misc.{name}."
            )


def _logging(notices: _Notices) -> None:
    """Say so when upstream's ``hydra/job_logging: colorlog`` ran as Hydra's plain logging."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if hydra.runtime.choices.get("hydra/job_logging") != "colorlog":
        return
    if "clarena_plain" in (hydra.job_logging.get("formatters") or {}):
        notices.add(
            "hydra/job_logging: colorlog (upstream's hydra/default.yaml) runs as Hydra's default, "
            "uncoloured logging; pip install hydra-colorlog for colours"
        )
