"""Which ``_target_`` a config read from a file (a model or resume file) may name.

Evaluating a shared ``saved_model.pt`` rebuilds its dataset, backbone and algorithm from the
config saved inside it. Hydra's ``instantiate`` calls whatever ``_target_`` names, so a file
could name ``shutil.copyfile``. Before anything from such a config is built,
:func:`checked_config` walks every section the pipeline builds (nested dicts and lists too) and
refuses any target outside an allowlist the project controls, and any ``${...}`` interpolation
(a resolver could produce a target after the check):

- what the plug-in entry-point groups register: backbones (``clarena.backbones``, as
  ``clarena.backbones.<Name>`` or by their own path), mask methods (``clarena.mask_methods``) and
  algorithms (``clarena.algorithms``; clarena's own register as
  ``clarena.experiments.algorithms.<Name>``), whichever distribution registers them, so a third
  party's saved model is checked like clarena's own,
- ``clarena.experiments.data.<DataModule, task sequence, sequence spec or flat per-sequence
  target>``, the heads ``clarena.cl.Head*``,
- optimisers ``torch.optim.<Optimizer>``, schedulers ``torch.optim.lr_scheduler.<Scheduler>``,
- activation and normalisation layers ``torch.nn.<Layer>`` (e.g. ``torch.nn.ReLU``).

``trust_model_file=true`` skips the check for a file the user trusts; the run says so.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch import nn

from clarena.backbones import available_backbones
from clarena.backbones.registry import ENTRY_POINT_GROUP as BACKBONES_GROUP
from clarena.cl.method import ENTRY_POINT_GROUP as MASK_METHODS_GROUP
from clarena.experiments._moved import old_name
from clarena.experiments.booleans import TRUST_KEY
from clarena.experiments.errors import UntrustedConfigError
from clarena.experiments.running import data
from clarena.experiments.running.algorithms.registry import ENTRY_POINT_GROUP as ALGORITHMS_GROUP
from clarena.experiments.running.algorithms.registry import entry_point_targets
from clarena.experiments.upstream.aliases import ALIASES

#: Config sections the CL, MTL and STL pipelines build objects from.
BUILT_SECTIONS: tuple[str, ...] = (
    "cl_dataset",
    "mtl_dataset",
    "stl_dataset",
    "backbone",
    "heads",
    "cl_algorithm",
    "mtl_algorithm",
    "stl_algorithm",
    "optimizer",
    "lr_scheduler",
)

#: torch.nn modules whose layers a backbone config may name (activation_layer, norm layers).
_LAYER_MODULES = frozenset(
    f"torch.nn.modules.{name}" for name in ("activation", "normalization", "batchnorm")
)

log = logging.getLogger(__name__)


def _is_subclass(value: object, base: type | tuple[type, ...]) -> bool:
    return isinstance(value, type) and issubclass(value, base)


def _exported(module: Any, name: str, base: type | tuple[type, ...]) -> bool:
    return name in getattr(module, "__all__", ()) and _is_subclass(getattr(module, name), base)


def _torch_layer(name: str) -> bool:
    layer = getattr(nn, name, None)
    return _is_subclass(layer, nn.Module) and layer.__module__ in _LAYER_MODULES


def _cl_head(name: str) -> bool:
    import clarena.cl

    return name.startswith("Head") and _exported(clarena.cl, name, nn.Module)


#: Module of a target -> which names in it are allowed. Checked on the string alone: nothing is
#: imported that is not imported already.
_RULES: dict[str, Callable[[str], bool]] = {
    "clarena.backbones": lambda name: name in available_backbones(),
    "clarena.experiments.data": lambda name: (
        _exported(data, name, (LightningDataModule, data.TaskSequence, data.SequenceSpec))
        or (name in data.__all__ and isinstance(getattr(data, name), data.FlatDataModule))
    ),
    "clarena.cl": _cl_head,
    "torch.optim": lambda name: _is_subclass(
        getattr(torch.optim, name, None), torch.optim.Optimizer
    ),
    "torch.optim.lr_scheduler": lambda name: _is_subclass(
        getattr(torch.optim.lr_scheduler, name, None),
        (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
    ),
    "torch.nn": _torch_layer,
}


def allowed_target(target: object) -> bool:
    """Whether a config read from a file may name ``target`` as a ``_target_``.

    An upstream CLArena name is allowed when its registered alias names an allowed target.
    """
    if not isinstance(target, str):
        return False
    # The split layout's names (clarena.experiments.running.data.X) are the 0.1 names' modules.
    target = old_name(target)
    if target in ALIASES:
        return allowed_target(ALIASES[target].target)
    if target in entry_point_targets(BACKBONES_GROUP, MASK_METHODS_GROUP, ALGORITHMS_GROUP):
        return True
    module, _, name = target.rpartition(".")
    rule = _RULES.get(module)
    return rule is not None and name.isidentifier() and not name.startswith("_") and rule(name)


def config_targets(config: Any) -> set[str]:
    """Every ``_target_`` string in ``config`` (a DictConfig or plain containers), nested too."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=False)
    found: set[str] = set()
    if isinstance(config, Mapping):
        if isinstance(config.get("_target_"), str):
            found.add(config["_target_"])
        for value in config.values():
            found |= config_targets(value)
    elif isinstance(config, list | tuple):
        for item in config:
            found |= config_targets(item)
    return found


def refused_entries(
    config: Any, key: str, also_allowed: Collection[str] = ()
) -> Iterator[tuple[str, str]]:
    """``(key path, what it names)`` for every refused target or interpolation under ``key``.

    Args:
        config: plain containers (as loaded from the file) at config key ``key``.
        key: the dotted key path of ``config``, for the messages.
        also_allowed: targets allowed beyond the allowlist (those the user's own config names).
    """
    if isinstance(config, Mapping):
        if "_target_" in config:
            target = config["_target_"]
            if not (allowed_target(target) or target in also_allowed):
                yield key, f"_target_ {target!r}"
        for name, value in config.items():
            yield from refused_entries(value, f"{key}.{name}", also_allowed)
    elif isinstance(config, list | tuple):
        for index, item in enumerate(config):
            yield from refused_entries(item, f"{key}[{index}]", also_allowed)
    elif isinstance(config, str) and "${" in config:
        yield key, f"the interpolation {config!r}"


def checked_config(
    config: Mapping[str, Any],
    source: str,
    *,
    trust: bool = False,
    sections: Sequence[str] = BUILT_SECTIONS,
    also_allowed: Collection[str] = (),
) -> DictConfig:
    """The config read from a file, as a DictConfig, once nothing in it can call foreign code.

    Args:
        config: the file's config as loaded (plain dicts and lists).
        source: how messages name the file, e.g. ``"model_path 'x/saved_model.pt'"``.
        trust: the user's ``trust_model_file``: build it unchecked, saying so.
        sections: the top-level keys whose targets are checked (those the pipeline builds).
            Interpolations are refused everywhere.
        also_allowed: targets allowed beyond the allowlist.

    Raises:
        UntrustedConfigError: the first refused target or interpolation, with its key path.
    """
    if not isinstance(config, Mapping):
        raise UntrustedConfigError(
            f"{source}: its config is a {type(config).__name__}, not a dict."
        )
    refused = [
        entry
        for key, value in config.items()
        for entry in refused_entries(value, str(key), also_allowed)
        if key in sections or entry[1].startswith("the interpolation")
    ]
    if trust:
        _note(
            f"{TRUST_KEY}=true: the config of {source} is built without the allowlist check"
            + "".join(f"; {key} names {what}" for key, what in refused)
        )
    elif refused:
        key, what = refused[0]
        raise UntrustedConfigError(
            f"{source}: config key '{key}' names {what}, which a saved file may not build; nothing "
            f"was run. A file may name registered backbones, mask methods and algorithms (the "
            f"clarena.backbones, clarena.mask_methods and clarena.algorithms entry points), "
            f"clarena data modules and heads, torch.optim optimisers and schedulers and torch.nn layers. Only if you trust "
            f"the file, rerun with {TRUST_KEY}=true."
        )
    return OmegaConf.create(dict(config))


def _note(message: str) -> None:
    print(f"clarena: {message}", file=sys.stderr)
    log.warning(message)
