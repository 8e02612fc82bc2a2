"""Upstream's ``misc.config_tree``: print and / or save the run's config as a tree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

from clarena.experiments.errors import PipelineConfigError
from clarena.experiments.runs.run_dir import create_for_write

#: The keys of ``misc.config_tree`` (upstream's), all honoured.
KEYS: tuple[str, ...] = ("print", "save", "save_path", "style", "guide_style", "fields_order")


def check(settings: Any, key: str) -> None:
    """Refuse a ``misc.config_tree`` key that is not upstream's."""
    if not isinstance(settings, dict):
        raise PipelineConfigError(f"{key}={settings!r}: give a mapping of {', '.join(KEYS)}.")
    for name, value in settings.items():
        if name not in KEYS:
            raise PipelineConfigError(
                f"{key}.{name}={value!r}: config_tree takes {', '.join(KEYS)}; remove {name}."
            )


def build(cfg: DictConfig, settings: DictConfig) -> Tree:
    """The config as a tree: one branch per top-level key, ``fields_order`` first."""
    style = settings.get("style") or "dim"
    tree = Tree("CONFIG", style=style, guide_style=settings.get("guide_style") or style)
    order = [str(f) for f in settings.get("fields_order") or [] if f in cfg]
    for field in [*order, *(str(k) for k in cfg if str(k) not in order)]:
        branch = tree.add(field, style=style, guide_style=style)
        value = cfg[field]
        text = (
            OmegaConf.to_yaml(value, resolve=False)
            if isinstance(value, DictConfig | list) or OmegaConf.is_list(value)
            else str(OmegaConf.select(cfg, field, throw_on_resolution_failure=False))
        )
        branch.add(Syntax(text, "yaml"))
    return tree


def show(cfg: DictConfig) -> None:
    """Print and / or save the tree as ``cfg.misc.config_tree`` asks (nothing if unset)."""
    settings = OmegaConf.select(cfg, "misc.config_tree", default=None)
    if settings is None:
        return
    tree = build(cfg, settings)
    if settings.get("print"):
        Console().print(tree)
    if settings.get("save"):
        try:
            path = Path(str(settings.save_path))
        except Exception as error:
            raise PipelineConfigError(
                f"misc.config_tree.save_path cannot be resolved ({error}); give a path, e.g. "
                f"${{output_dir}}/config_tree.log."
            ) from error
        with os.fdopen(create_for_write(path), "w") as file:
            Console(file=file, width=120).print(tree)
