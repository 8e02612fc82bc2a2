"""The published HAT backbone names as registered builders: a CL backbone with :class:`HAT` attached.

``HATMaskMLP(...)`` is ``CLMLP(...).attach(HAT(...))`` with the published constructor arguments
and defaults; ``HATMaskResNet18`` ... likewise over ``CLResNet18`` ... Each is registered in the
``clarena.backbones`` entry-point group, so ``_target_: clarena.backbones.HATMaskMLP`` works.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from clarena.cl import CLBackbone, resolve_batch_norm_mode
from clarena.hat.method import HAT

_Builder = Callable[..., CLBackbone]

#: The published docs' spelling, accepted for the same argument (as the core backbones do).
ARGUMENT_ALIASES: dict[str, str] = {"batch_normalisation": "batch_normalization"}


def _unknown_argument_message(name: str, argument: str, parameters: list[str]) -> str:
    candidates = parameters + [a for a, c in ARGUMENT_ALIASES.items() if c in parameters]
    nearest = difflib.get_close_matches(argument, candidates, n=1, cutoff=0.5)
    hint = f" Did you mean '{nearest[0]}'?" if nearest else ""
    described = ", ".join(
        f"{p} (alias {alias})" if (alias := _alias_of(p)) else p for p in parameters
    )
    return f"{name}() got an unknown argument '{argument}'.{hint} {name} takes: {described}."


def _alias_of(parameter: str) -> str | None:
    return next((a for a, c in ARGUMENT_ALIASES.items() if c == parameter), None)


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
        for alias, canonical in ARGUMENT_ALIASES.items():
            if alias in kwargs:
                if canonical in kwargs:
                    raise TypeError(
                        f"{name}() got both '{alias}' and '{canonical}', two spellings of the "
                        f"same argument; keep one of them."
                    )
                kwargs[canonical] = kwargs.pop(alias)
        for key in kwargs:
            if key not in names:
                raise TypeError(_unknown_argument_message(name, key, names))
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
