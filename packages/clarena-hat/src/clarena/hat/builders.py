"""The published HAT backbone names as registered builders: a CL backbone with :class:`HAT` attached.

``HATMaskMLP(...)`` is ``CLMLP(...).attach(HAT(...))`` with the published constructor arguments
and defaults; ``HATMaskResNet18`` ... likewise over ``CLResNet18`` ... Each is registered in the
``clarena.backbones`` entry-point group, so ``_target_: clarena.backbones.HATMaskMLP`` works.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from clarena.backbones import checked_keywords
from clarena.cl import CLBackbone, resolve_batch_norm_mode
from clarena.hat.method import HAT

_Builder = Callable[..., CLBackbone]


def hat_builder(
    name: str,
    family: Callable[..., CLBackbone],
    batch_normalization_default: str | None,
    doc: str,
) -> _Builder:
    """A builder called ``name``: the CL backbone ``family`` (``CLMLP``, ``CLResNet18`` ...) with
    :class:`HAT` attached.

    Its signature is the CL backbone's, ``batch_normalization`` defaulting to
    ``batch_normalization_default``, plus ``gate``. Unknown arguments raise ``TypeError`` naming
    the nearest valid one; ``batch_normalisation`` is the same argument as ``batch_normalization``.
    """
    parameters = [
        parameter.replace(default=batch_normalization_default, annotation="str | bool | None")
        if parameter.name == "batch_normalization"
        else parameter
        for parameter in inspect.signature(family).parameters.values()
    ]
    gate = inspect.Parameter(
        "gate", inspect.Parameter.KEYWORD_ONLY, default="sigmoid", annotation="str"
    )
    signature = inspect.Signature([*parameters, gate], return_annotation=CLBackbone)
    names = list(signature.parameters)

    def build(*args: Any, **kwargs: Any) -> CLBackbone:
        kwargs = checked_keywords(name, kwargs, names)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        hat = HAT(
            gate=arguments.pop("gate"),
            batch_normalization=resolve_batch_norm_mode(arguments["batch_normalization"], name),
        )
        arguments["batch_normalization"] = hat.requested_batch_norm_mode is not None
        return family(**arguments).attach(hat)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    build.__signature__ = signature  # type: ignore[attr-defined]
    return build
