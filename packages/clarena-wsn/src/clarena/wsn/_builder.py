"""Registered builders: the published ``WSNMask*`` names build a CL backbone and attach WSN."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from clarena.backbones import checked_keywords
from clarena.cl import CLBackbone, resolve_batch_norm_mode
from clarena.wsn.method import WSN

Builder = Callable[..., CLBackbone]


def wsn_builder(
    name: str, cl_backbone: Callable[..., CLBackbone], batch_norm_default: str | None
) -> Builder:
    """A builder named ``name``: ``cl_backbone(...)`` with :class:`~clarena.wsn.WSN` attached.

    The builder takes exactly ``cl_backbone``'s arguments (positional or keyword, same defaults),
    except that ``batch_normalization`` defaults to ``batch_norm_default`` and takes WSN's modes
    (``None``/``False``, ``'shared'``/``True``, ``'independent'``; alias
    ``batch_normalisation``). An unknown argument is a ``TypeError`` naming the nearest valid
    one, as for every backbone class.

    Args:
        name: the published name (``'WSNMaskMLP'``), used in messages and as ``__name__``.
        cl_backbone: the published CL backbone (``CLMLP``, ``CLResNet18`` ...), a class or a
            builder.
        batch_norm_default: the default ``batch_normalization``.
    """
    parameters = [
        parameter.replace(default=batch_norm_default, annotation="str | bool | None")
        if parameter.name == "batch_normalization"
        else parameter
        for parameter in inspect.signature(cl_backbone).parameters.values()
    ]
    signature = inspect.Signature(parameters, return_annotation="CLBackbone")
    names = list(signature.parameters)

    def build(*args: Any, **kwargs: Any) -> CLBackbone:
        kwargs = checked_keywords(name, kwargs, names)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        mode = resolve_batch_norm_mode(arguments.pop("batch_normalization"), name)
        backbone = cl_backbone(batch_normalization=mode is not None, **arguments)
        return backbone.attach(WSN(batch_normalization=mode))

    functools.update_wrapper(build, cl_backbone, assigned=("__module__",), updated=())
    build.__name__ = build.__qualname__ = name
    build.__signature__ = signature  # type: ignore[attr-defined]
    return build
