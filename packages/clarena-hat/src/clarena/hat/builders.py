"""The published HAT backbone names as registered builders: a CL backbone with :class:`HAT` attached.

``HATMaskMLP(...)`` is ``CLMLP(...).attach(HAT(...))`` with the published constructor arguments
and defaults; ``HATMaskResNet18`` ... likewise over ``CLResNet18`` ... Each is registered in the
``clarena.backbones`` entry-point group, so ``_target_: clarena.backbones.HATMaskMLP`` works.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from clarena.cl import CLBackbone, method_builder
from clarena.hat.method import HAT

_Builder = Callable[..., CLBackbone]


def hat_builder(
    name: str,
    family: Callable[..., CLBackbone],
    batch_normalization_default: str | None,
    doc: str,
) -> _Builder:
    """A builder called ``name``: the CL backbone ``family`` (``CLMLP``, ``CLResNet18`` ...) with
    :class:`HAT` attached (:func:`clarena.cl.method_builder`).

    Its signature is the CL backbone's, ``batch_normalization`` defaulting to
    ``batch_normalization_default``, plus ``gate``. Unknown arguments raise ``TypeError`` naming
    the nearest valid one; ``batch_normalisation`` is the same argument as ``batch_normalization``.
    """
    gate = inspect.Parameter(
        "gate", inspect.Parameter.KEYWORD_ONLY, default="sigmoid", annotation="str"
    )
    build = method_builder(name, family, HAT, batch_normalization_default, [gate])
    build.__module__ = __name__
    build.__doc__ = doc
    return build
