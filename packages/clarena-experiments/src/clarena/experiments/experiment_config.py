"""The experiment config, typed: parsed once from the composed ``DictConfig``, at the boundary.

The ``clarena`` command composes the experiment config with Hydra; :func:`run_pipeline
<clarena.experiments.pipelines.run_pipeline>` reads upstream CLArena's forms as clarena's
(:func:`~clarena.experiments.upstream.adapter.adapt_config`) and then calls
:meth:`ExperimentConfig.parse`, which

- refuses an unknown key, naming the nearest valid one: at the top level, in ``metrics``, and in
  every component node (a mapping with ``_target_``, at any depth), whose keys must be arguments
  of its target (a misspelt ``global_sead`` would otherwise train with seed 0, a misspelt
  ``trainer.max_epoch`` would fail inside Hydra's instantiate with a long traceback);
- checks every value the pipelines read (booleans, seed, threads, task lists, training length,
  precision, evaluation resources; :mod:`clarena.experiments.config_checks`);
- says in one line when a key is accepted but does nothing in this run (upstream's
  ``expr_name`` when ``output_dir`` does not use it, ``misc`` keys read by the adapter).

The pipelines receive the :class:`ExperimentConfig` and read typed fields only. Components (the
dataset, backbone, algorithm, optimizer, trainer, loggers, callbacks) stay sub-config nodes built
with :func:`hydra.utils.instantiate`, carried explicitly in :class:`Components`. The composed
config itself travels as :attr:`ExperimentConfig.record`: it is what a model file, the resume
state and the loggers save, never read for values.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from clarena.experiments import config_checks
from clarena.experiments.booleans import BOOLEAN_KEYS, strict_bool
from clarena.experiments.errors import PipelineConfigError

log = logging.getLogger(__name__)

#: The sub-configs built with ``hydra.utils.instantiate`` (one :class:`Components` field each).
COMPONENT_KEYS: tuple[str, ...] = (
    "backbone",
    "cl_dataset",
    "mtl_dataset",
    "stl_dataset",
    "cl_algorithm",
    "mtl_algorithm",
    "stl_algorithm",
    "optimizer",
    "lr_scheduler",
    "trainer",
    "lightning_loggers",
    "callbacks",
)

#: Upstream CLArena keys clarena accepts, and what they do here (see docs/coming-from-clarena.md).
UPSTREAM_KEYS: tuple[str, ...] = ("expr_name", "misc", "timestamp")

#: Upstream keys whose only effect is naming the output dir through ``output_dir``.
OUTPUT_DIR_KEYS: tuple[str, ...] = ("expr_name", "timestamp")

#: ``model_file`` when the config names none.
DEFAULT_MODEL_FILE = "saved_model.pt"

#: ``data_root`` of an evaluation when the config names none (the shipped datasets' root).
DEFAULT_DATA_ROOT = "data"

#: Targets whose constructors check their own arguments (nearest name, aliases).
SELF_CHECKING_TARGETS: tuple[str, ...] = ("clarena.backbones.",)

#: Values of ``batch_norm_statistics``.
BATCH_NORM_STATISTICS: tuple[str, ...] = ("recompute", "running")


def nearest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``name`` (difflib's ratio >= 0.6), or ``None``."""
    found = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return found[0] if found else None


def refuse_unknown(keys: Iterable[str], valid: Iterable[str], where: str) -> None:
    """Raise naming the first key of ``keys`` not in ``valid`` and the nearest valid one.

    Args:
        keys: the keys given.
        valid: the keys accepted.
        where: the key path they sit under (``""`` for the top level, ``"metrics."`` ...).

    Raises:
        PipelineConfigError: one line naming the unknown key, the nearest valid key and the fix.
    """
    valid = list(valid)
    for key in keys:
        if key in valid:
            continue
        guess = nearest(key, valid)
        hint = f"did you mean {where}{guess}?" if guess else f"valid keys: {', '.join(valid)}."
        raise PipelineConfigError(
            f"unknown config key {where}{key}: {hint} Fix or remove it (an override can delete "
            f"it with ~{where}{key}); clarena refuses keys it does not read, so that a misspelt "
            f"setting is never silently ignored."
        )


@dataclass(frozen=True)
class ResultFiles:
    """The ``metrics`` group: result files under the run dir (``None``: not written)."""

    accuracy_csv: str | None = None
    accuracy_matrix_plot: str | None = None
    average_accuracy_plot: str | None = None
    summary: str | None = None
    loss_csv: str | None = None
    loss_matrix_plot: str | None = None
    average_loss_plot: str | None = None

    @classmethod
    def parse(cls, node: Any, strict: bool = True) -> ResultFiles:
        """The ``metrics`` node (a mapping of file settings, or null); ``strict``: refuse
        unknown keys."""
        if node is None:
            return cls()
        if not isinstance(node, Mapping):
            raise PipelineConfigError(
                f"metrics must be a mapping of result files (e.g. metrics=cl_default); got "
                f"{_plain(node)!r}."
            )
        names = [f.name for f in fields(cls)]
        if strict:
            refuse_unknown([str(k) for k in node], names, "metrics.")
        values = {}
        for name in names:
            value = node.get(name)
            if value is not None and not isinstance(value, str):
                raise PipelineConfigError(
                    f"metrics.{name} must be a path under the run dir or null; got {value!r}."
                )
            values[name] = value
        return cls(**values)

    def paths(self) -> list[str]:
        """Every result file written, relative to the run dir."""
        return [value for value in (getattr(self, f.name) for f in fields(self)) if value]


@dataclass(frozen=True)
class Components:
    """The sub-configs built with :func:`hydra.utils.instantiate` (``None`` where absent).

    ``lightning_loggers`` and ``callbacks`` map a name to a component node (a null entry turns
    one off).
    """

    backbone: DictConfig | None = None
    cl_dataset: DictConfig | None = None
    mtl_dataset: DictConfig | None = None
    stl_dataset: DictConfig | None = None
    cl_algorithm: DictConfig | None = None
    mtl_algorithm: DictConfig | None = None
    stl_algorithm: DictConfig | None = None
    optimizer: DictConfig | None = None
    lr_scheduler: DictConfig | None = None
    trainer: DictConfig | None = None
    lightning_loggers: dict[str, DictConfig] = field(default_factory=dict)
    callbacks: dict[str, DictConfig] = field(default_factory=dict)

    @classmethod
    def parse(cls, cfg: DictConfig) -> Components:
        values: dict[str, Any] = {}
        for key in COMPONENT_KEYS:
            node = cfg.get(key)
            if key in ("lightning_loggers", "callbacks"):
                if node is not None and not isinstance(node, DictConfig):
                    raise PipelineConfigError(
                        f"{key} must be a mapping of named components (or null); got "
                        f"{_plain(node)!r}."
                    )
                values[key] = {
                    str(name): item for name, item in (node or {}).items() if item is not None
                }
            else:
                if node is not None and not isinstance(node, DictConfig):
                    raise PipelineConfigError(
                        f"{key} must be a component config (a mapping with _target_) or null; "
                        f"got {_plain(node)!r}."
                    )
                values[key] = node
        return cls(**values)

    def dataset(self, kind: str) -> DictConfig | None:
        """The dataset node of ``kind`` (``"cl"``, ``"mtl"`` or ``"stl"``)."""
        node: DictConfig | None = getattr(self, f"{kind}_dataset")
        return node

    def algorithm(self, kind: str) -> DictConfig | None:
        """The algorithm node of ``kind`` (``"cl"``, ``"mtl"`` or ``"stl"``)."""
        node: DictConfig | None = getattr(self, f"{kind}_algorithm")
        return node


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment, as the pipelines read it. Build it with :meth:`parse`.

    Attributes:
        pipeline: ``CL_MAIN_EXPR``, ``CL_MAIN_EVAL``, ``MTL_EXPR``, ``MTL_EVAL``, ``STL_EXPR`` or
            ``STL_EVAL`` (``None`` only in a config read from a model file that has none).
        cl_paradigm: ``TIL``, ``CIL`` or ``DIL`` (CL pipelines).
        train_tasks: the CL tasks to train (a count N means 1..N; ``None``: every task).
        eval_tasks: the tasks a CL evaluation tests (``None``: every trained task).
        global_seed: seeds Python, NumPy and torch.
        num_threads: torch intra-op threads (``None``: torch's default).
        compile: compile the backbone with ``torch.compile``.
        batch_norm_statistics: ``recompute`` or ``running``.
        output_dir: the run dir when not run by Hydra (Hydra's job dir otherwise).
        overwrite: delete a previous run's files in the run dir.
        save_model: write the model file.
        model_file: the model file's path under the run dir.
        resume: the run dir an interrupted CL run continues in.
        resume_state: write the resume state after every task.
        trust_model_file: build a model or resume file's config without the allowlist.
        model_path: the model file an evaluation reads.
        data_root: where an evaluation reads its dataset.
        num_workers: an evaluation's data loader processes.
        metrics: the result files.
        components: the sub-configs built with ``instantiate``.
        record: the composed config as given, saved in model files, resume states and logs.
    """

    pipeline: str | None
    components: Components
    record: DictConfig
    cl_paradigm: str | None = None
    train_tasks: int | list[int] | None = None
    eval_tasks: int | list[int] | None = None
    global_seed: int = 0
    num_threads: int | None = None
    compile: bool = False
    batch_norm_statistics: str = "recompute"
    output_dir: str | None = None
    overwrite: bool = False
    save_model: bool = False
    model_file: str = DEFAULT_MODEL_FILE
    resume: str | None = None
    resume_state: bool = True
    trust_model_file: bool = False
    model_path: str | None = None
    data_root: str | None = DEFAULT_DATA_ROOT
    num_workers: int = 0
    metrics: ResultFiles = field(default_factory=ResultFiles)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The top-level keys an experiment config may hold."""
        own = tuple(f.name for f in fields(cls) if f.name not in ("components", "record"))
        return (*own, *COMPONENT_KEYS, *UPSTREAM_KEYS)

    @classmethod
    def parse(cls, cfg: DictConfig, *, strict: bool = True) -> ExperimentConfig:
        """Check ``cfg`` and read it into typed fields.

        Args:
            cfg: the composed experiment config (after the upstream adapter).
            strict: refuse unknown keys and announce keys without effect (the user's config);
                ``False`` for the config stored in a model file, which is read as saved.

        Raises:
            PipelineConfigError: an unknown key (naming the nearest valid one) or a bad value
                (naming the key and the fix).
        """
        if strict:
            refuse_unknown([str(k) for k in cfg], cls.keys(), "")
            config_checks.check_experiment_config(cfg)
            for key in COMPONENT_KEYS:
                if key in cfg and not OmegaConf.is_missing(cfg, key):
                    check_component_keys(cfg._get_node(key), key)
        else:
            config_checks.check_seed_and_threads(cfg)
        booleans = {
            key: strict_bool(cfg.get(key, default), key)
            for key, (default, _) in BOOLEAN_KEYS.items()
        }
        statistics = str(cfg.get("batch_norm_statistics") or "recompute")
        if strict and statistics not in BATCH_NORM_STATISTICS:
            raise PipelineConfigError(
                f"batch_norm_statistics must be one of {', '.join(BATCH_NORM_STATISTICS)}; got "
                f"{statistics!r}."
            )
        parsed = cls(
            pipeline=_optional_str(cfg, "pipeline"),
            components=Components.parse(cfg),
            record=cfg,
            cl_paradigm=_optional_str(cfg, "cl_paradigm"),
            train_tasks=_tasks(cfg.get("train_tasks"), "train_tasks"),
            eval_tasks=_tasks(cfg.get("eval_tasks"), "eval_tasks"),
            global_seed=int(cfg.get("global_seed", 0)),
            num_threads=None if cfg.get("num_threads") is None else int(cfg.num_threads),
            batch_norm_statistics=statistics,
            output_dir=_output_dir(cfg),
            model_file=str(cfg.get("model_file") or DEFAULT_MODEL_FILE),
            resume=_optional_str(cfg, "resume"),
            model_path=_optional_str(cfg, "model_path"),
            data_root=_data_root(cfg.get("data_root", DEFAULT_DATA_ROOT)),
            num_workers=_num_workers(cfg.get("num_workers", 0)),
            metrics=ResultFiles.parse(cfg.get("metrics"), strict),
            **booleans,
        )
        return parsed

    def require(self, *keys: str) -> None:
        """Raise :class:`PipelineConfigError` naming every key of ``keys`` the config lacks."""
        missing = [key for key in keys if _value(self, key) is None]
        if missing:
            raise PipelineConfigError(
                f"Pipeline {self.pipeline!r} needs the config keys {', '.join(missing)}; add them "
                f"to the experiment config or pass them as overrides (e.g. {missing[0]}=...)."
            )


def _value(config: ExperimentConfig, key: str) -> Any:
    if key in COMPONENT_KEYS:
        return getattr(config.components, key)
    return getattr(config, key)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node


def _optional_str(cfg: DictConfig, key: str) -> str | None:
    value = cfg.get(key)
    return None if value is None else str(value)


def _output_dir(cfg: DictConfig) -> str | None:
    """``output_dir``, or ``None`` where it cannot be resolved here.

    The shipped value names Hydra's job (``${hydra:runtime.choices.experiment}``), resolvable only
    inside a Hydra job, where the pipelines take Hydra's run dir instead of this value.
    """
    value = OmegaConf.select(cfg, "output_dir", default=None, throw_on_resolution_failure=False)
    return None if value is None else str(value)


def _tasks(value: Any, key: str) -> int | list[int] | None:
    """``train_tasks`` / ``eval_tasks``: a count N, a list of task ids, or ``None`` (checked)."""
    if value is None:
        return None
    tasks = config_checks.task_list(value, None, key)
    return tasks if isinstance(value, ListConfig | list | tuple) else len(tasks)


def _data_root(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise PipelineConfigError(
            f"data_root must be a directory path; got {value!r}. Set data_root=/path/to/data."
        )
    return value


def _num_workers(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PipelineConfigError(
            f"num_workers must be a number of data loader processes >= 0; got {value!r}. "
            f"Set num_workers=0 to load in the main process."
        )
    return value


def check_component_keys(node: Any, path: str) -> None:
    """Refuse a key of a component config (any node with ``_target_``, nested ones included)
    that its target does not take, naming the nearest argument it does take.

    A target that takes ``**kwargs``, or that cannot be resolved (``instantiate`` reports that
    itself), is not checked; nor is a ``clarena.backbones.<Name>``, whose constructor checks its
    arguments itself (with the published ``batch_normalisation`` spelling) before any training.
    Keys starting with ``_`` are Hydra's.

    Args:
        node: the config node (mappings and lists are walked).
        path: its key path, for the message (``backbone``, ``callbacks.plateau`` ...).

    Raises:
        PipelineConfigError: one line naming the key, the nearest valid argument and the fix.
    """
    if isinstance(node, ListConfig):
        for position, item in enumerate(node):
            check_component_keys(item, f"{path}[{position}]")
        return
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_") if "_target_" in node else None
    keys = [str(key) for key in node if not str(key).startswith("_")]
    if isinstance(target, str) and not target.startswith(SELF_CHECKING_TARGETS):
        valid = _arguments(target)
        if valid is not None:
            refuse_unknown(keys, valid, f"{path}.")
    for key in keys:
        if not OmegaConf.is_missing(node, key):
            check_component_keys(node._get_node(key), f"{path}.{key}")


def _arguments(target: str) -> list[str] | None:
    """The keyword arguments ``target`` takes; ``None`` if it takes any (or cannot be read)."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        signature = inspect.signature(obj)
    except Exception:  # instantiate reports an unresolvable target itself
        return None
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def announce_without_effect(cfg: DictConfig) -> None:
    """One line for each upstream key that is accepted but changes nothing in this run.

    Called on the composed config before the upstream adapter (which may pin ``output_dir``).
    """
    given: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    lines = [
        f"{key}={given[key]!r} has no effect: output_dir is set and does not use "
        f"it (the shipped output_dir names its folder after expr_name)"
        for key in OUTPUT_DIR_KEYS
        if given.get(key) is not None and not _names_output_dir(given, key)
    ]
    for line in lines:
        print(f"clarena: {line}", file=sys.stderr)
        log.info(line)


def _names_output_dir(given: Mapping[str, Any], key: str) -> bool:
    """Whether ``output_dir`` is built from ``key`` (an unresolved interpolation naming it)."""
    text = given.get("output_dir")
    return isinstance(text, str) and key in text
