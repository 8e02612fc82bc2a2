"""Registered builders: the published ``WSNMask*`` names build a CL backbone and attach WSN."""

from __future__ import annotations

from collections.abc import Callable

from clarena.cl import CLBackbone, method_builder
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
    build = method_builder(
        name, cl_backbone, WSN, batch_norm_default, return_annotation="CLBackbone"
    )
    build.__module__ = cl_backbone.__module__
    return build
