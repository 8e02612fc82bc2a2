"""The one table of upstream CLArena names clarena answers, and of those it refuses.

Upstream CLArena is a regular package named ``clarena``; its configs name classes such as
``clarena.cl_algorithms.HAT`` or ``clarena.cl_datasets.PermutedMNIST``. Here ``clarena`` is a
namespace shared by five distributions, and those modules do not exist: such a ``_target_`` is
rewritten to clarena's class when the config is loaded, before anything is instantiated, so
the model-file allowlist keeps naming only clarena's own classes.

Each :class:`Alias` maps one upstream class to one clarena target and translates its arguments
(upstream argument names that mean the same thing are renamed; ones clarena cannot honour are
refused by name). :data:`UNSUPPORTED` names the upstream classes and modules clarena does not
implement, with what it offers instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clarena.experiments.errors import PipelineConfigError
from clarena.experiments.upstream import datasets

#: Arguments translator: ``(config key path, upstream arguments) -> clarena arguments``.
Translate = Callable[[str, dict[str, Any]], dict[str, Any]]

#: Upstream's top-level modules, whose targets this table answers.
UPSTREAM_MODULES: tuple[str, ...] = (
    "clarena.cl_algorithms",
    "clarena.cl_datasets",
    "clarena.mtl_algorithms",
    "clarena.mtl_datasets",
    "clarena.stl_algorithms",
    "clarena.stl_datasets",
    "clarena.metrics",
    "clarena.callbacks",
    "clarena.cul_algorithms",
    "clarena.unlearning_algorithms",
    "clarena.cl_heads",
    "clarena.heads",
)

_ALGORITHMS = "clarena.experiments.algorithms"
_DATA = "clarena.experiments.data"


def _same(key: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return dict(arguments)


@dataclass(frozen=True)
class Alias:
    """One upstream class answered by a clarena target.

    Attributes:
        upstream: upstream's ``_target_`` (``clarena.cl_algorithms.HAT``).
        target: clarena's ``_target_`` it becomes.
        translate: maps upstream's arguments to clarena's (refusing those it cannot honour).
        note: what the notice adds (e.g. what differs), empty when nothing does.
    """

    upstream: str
    target: str
    translate: Translate = field(default=_same)
    note: str = ""

    def notice(self) -> str:
        """The one-line notice printed the first time a run uses this alias."""
        text = f"upstream CLArena's {self.upstream} is {self.target} (registered alias)"
        return f"{text}; {self.note}" if self.note else text


def _refuse(key: str, name: str, value: Any, why: str) -> PipelineConfigError:
    return PipelineConfigError(f"{key}.{name}={value!r}: {why}")


def _hat_arguments(modes: Mapping[str, str]) -> Translate:
    """HAT / AdaHAT arguments: ``adjustment_mode`` and ``mask_sparsity_reg_mode`` mapped.

    Args:
        modes: the upstream ``adjustment_mode`` values the clarena class implements exactly
            (value -> the clarena class it means), others are refused.
    """

    def translate(key: str, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = dict(arguments)
        mode = arguments.pop("adjustment_mode", next(iter(modes)))
        if mode not in modes:
            raise _refuse(
                key,
                "adjustment_mode",
                mode,
                f"clarena implements {', '.join(repr(m) for m in modes)} only ("
                f"{'; '.join(f'{m!r} is {t}' for m, t in modes.items())}); the ablation modes "
                f"(hat_random, hat_const_alpha, hat_const_1, adahat_no_sum, adahat_no_reg) are "
                f"not in clarena. Set adjustment_mode: {next(iter(modes))} or drop the key.",
            )
        sparsity = arguments.pop("mask_sparsity_reg_mode", "original")
        if sparsity != "original":
            raise _refuse(
                key,
                "mask_sparsity_reg_mode",
                sparsity,
                "clarena's sparsity regulariser is HAT's original one (sum a^t (1 - a^<t) / "
                "sum (1 - a^<t)); the 'cross' variant is not in clarena. Set "
                "mask_sparsity_reg_mode: original or drop the key.",
            )
        alpha = arguments.pop("alpha", None)
        if alpha is not None:
            raise _refuse(
                key,
                "alpha",
                alpha,
                "alpha belongs to adjustment_mode 'hat_const_alpha', which clarena does not "
                "implement. Drop alpha.",
            )
        return arguments

    return translate


def _mask_sparsity_only(key: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """FG-AdaHAT: the same arguments as clarena's, plus ``mask_sparsity_reg_mode``."""
    return _hat_arguments({"fgadahat": "FG-AdaHAT"})(
        key, {"adjustment_mode": "fgadahat", **arguments}
    )


def _no_arguments(upstream: str, meaning: str) -> Translate:
    """A class upstream configures with no arguments (extra ones are refused by name)."""

    def translate(key: str, arguments: dict[str, Any]) -> dict[str, Any]:
        for name, value in arguments.items():
            raise _refuse(key, name, value, f"{upstream} takes no such argument ({meaning}).")
        return {}

    return translate


def _aliases() -> dict[str, Alias]:
    table = [
        Alias("clarena.cl_algorithms.Finetuning", f"{_ALGORITHMS}.Finetuning"),
        Alias("clarena.cl_algorithms.Independent", f"{_ALGORITHMS}.Independent"),
        Alias(
            "clarena.cl_algorithms.HAT",
            f"{_ALGORITHMS}.HAT",
            _hat_arguments({"hat": "HAT's hard gradient conditioning"}),
        ),
        Alias(
            "clarena.cl_algorithms.AdaHAT",
            f"{_ALGORITHMS}.AdaHAT",
            _hat_arguments({"adahat": "AdaHAT's summative soft adjustment"}),
        ),
        Alias("clarena.cl_algorithms.FGAdaHAT", f"{_ALGORITHMS}.FGAdaHAT", _mask_sparsity_only),
        Alias("clarena.cl_algorithms.WSN", f"{_ALGORITHMS}.WSN"),
        Alias(
            "clarena.mtl_algorithms.JointLearning",
            f"{_ALGORITHMS}.JointLearning",
            _no_arguments("JointLearning", "one head per task, trained jointly"),
        ),
        Alias(
            "clarena.stl_algorithms.SingleLearning",
            f"{_ALGORITHMS}.SingleLearning",
            _no_arguments("SingleLearning", "one head, one task"),
        ),
    ]
    for name in datasets.CL_DATASETS:
        table.append(
            Alias(
                f"clarena.cl_datasets.{name}",
                f"{_DATA}.CLDataModule",
                datasets.cl_translator(name),
                datasets.describe(name),
            )
        )
    table.append(
        Alias(
            "clarena.mtl_datasets.MTLDatasetFromCL",
            f"{_DATA}.MTLDataModule",
            datasets.mtl_from_cl,
            "its cl_dataset's tasks, all at once",
        )
    )
    for name in datasets.STL_DATASETS:
        table.append(
            Alias(
                f"clarena.stl_datasets.{name}",
                f"{_DATA}.STLDataModule",
                datasets.stl_translator(name),
                datasets.describe_stl(name),
            )
        )
    table.append(
        Alias(
            "clarena.callbacks.CLRichProgressBar",
            "clarena.experiments.callbacks.ProgressBar",
            _no_arguments("CLRichProgressBar", "a progress bar"),
        )
    )
    table.append(
        Alias(
            "clarena.callbacks.SaveFirstBatchImages",
            "clarena.experiments.upstream.first_batch_images.SaveFirstBatchImages",
            note="the first training batch of each task as one PNG per task under save_dir",
        )
    )
    return {alias.upstream: alias for alias in table}


#: Upstream ``_target_`` -> the alias answering it.
ALIASES: dict[str, Alias] = _aliases()

#: Upstream targets that are not instantiated in clarena but honoured by a clarena setting
#: (the metrics and logging callbacks); see :mod:`clarena.experiments.upstream.results`.
HONOURED_BY_SETTINGS: dict[str, str] = {
    "clarena.metrics.CLAccuracy": "metrics.accuracy_csv / accuracy_matrix_plot / "
    "average_accuracy_plot (+ summary.json)",
    "clarena.metrics.MTLAccuracy": "metrics.accuracy_csv (+ summary.json)",
    "clarena.metrics.STLAccuracy": "metrics.accuracy_csv (+ summary.json)",
    "clarena.metrics.CLLoss": "metrics.loss_csv / loss_matrix_plot / average_loss_plot "
    "(mean test cross-entropy per task)",
    "clarena.metrics.MTLLoss": "metrics.loss_csv (mean test cross-entropy per task)",
    "clarena.metrics.STLLoss": "metrics.loss_csv (mean test cross-entropy)",
    "clarena.metrics.HATNetworkCapacity": "capacity_per_task in results/summary.json",
    "clarena.callbacks.CLPylogger": "clarena's run log (<output_dir>/<job>.log)",
    "clarena.callbacks.MTLPylogger": "clarena's run log (<output_dir>/<job>.log)",
    "clarena.callbacks.STLPylogger": "clarena's run log (<output_dir>/<job>.log)",
    "clarena.callbacks.SaveModels": "save_model: true (clarena's own model file format)",
}

_CL_OFFER = "clarena's CL algorithms are Finetuning, Independent, HAT, AdaHAT, FGAdaHAT and WSN"

#: Upstream classes and modules clarena does not implement -> what it offers instead.
UNSUPPORTED: dict[str, str] = {
    "clarena.cul_algorithms": "continual unlearning is not in clarena; " + _CL_OFFER,
    "clarena.unlearning_algorithms": "continual unlearning is not in clarena; " + _CL_OFFER,
    "clarena.cl_algorithms.EWC": "EWC (a regularisation method) is not in clarena; " + _CL_OFFER,
    "clarena.cl_algorithms.LwF": "LwF (distillation) is not in clarena; " + _CL_OFFER,
    "clarena.cl_algorithms.DER": "DER (replay) is not in clarena; " + _CL_OFFER,
    "clarena.cl_algorithms.DERpp": "DER++ (replay) is not in clarena; " + _CL_OFFER,
    "clarena.cl_algorithms.CBP": "CBP is not in clarena; " + _CL_OFFER,
    "clarena.cl_algorithms.Fix": "Fix is not in clarena; " + _CL_OFFER,
    "clarena.cl_algorithms.Random": "Random is not in clarena; " + _CL_OFFER,
    "clarena.cl_algorithms.NISPA": "NISPA is not in clarena; " + _CL_OFFER,
    "clarena.metrics.HATMasks": "clarena does not plot masks (the masks are in the saved "
    "model's state dict, capacity per task in results/summary.json); remove HATMasks from metrics",
    "clarena.metrics.HATAdjustmentRate": "clarena does not plot adjustment rates; remove "
    "HATAdjustmentRate from metrics",
    "clarena.metrics": "this metric is not in clarena, which writes acc.csv, the accuracy "
    "plots and results/summary.json (average accuracy, BWT, forgetting); remove it from metrics",
    "clarena.callbacks": "this callback is not in clarena; remove it from callbacks",
    "clarena.cl_algorithms": _CL_OFFER,
    "clarena.mtl_algorithms": "clarena's MTL algorithm is JointLearning",
    "clarena.stl_algorithms": "clarena's STL algorithm is SingleLearning",
    "clarena.cl_datasets": datasets.CL_OFFER,
    "clarena.mtl_datasets": "clarena's MTL data is MTLDatasetFromCL over one of: "
    + datasets.CL_OFFER,
    "clarena.stl_datasets": datasets.STL_OFFER,
    "clarena.cl_heads": "heads are built by clarena's pipelines from cl_paradigm; drop the key",
    "clarena.heads": "heads are built by clarena's pipelines from cl_paradigm; drop the key",
}


def is_upstream(target: object) -> bool:
    """Whether ``target`` names one of upstream CLArena's modules (answered or refused here)."""
    return isinstance(target, str) and any(
        target == module or target.startswith(f"{module}.") for module in UPSTREAM_MODULES
    )


def refusal(target: str, key: str) -> PipelineConfigError:
    """The error for an upstream ``target`` clarena does not implement, at config ``key``."""
    module = target
    while module and module not in UNSUPPORTED:
        module = module.rpartition(".")[0]
    offer = UNSUPPORTED.get(module, _CL_OFFER)
    return PipelineConfigError(
        f"{key}: upstream CLArena's {target} has no clarena counterpart: {offer}. See "
        f"docs/coming-from-clarena.md."
    )
