"""Finding a backbone's mask method, and builders that attach one: the twins of HAT and WSN."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from clarena.backbones import checked_keywords
from clarena.cl.base import CLBackbone
from clarena.cl.method import MaskMethod
from clarena.cl.task_batch_norm import resolve_batch_norm_mode

_Method = TypeVar("_Method", bound=MaskMethod)

#: A registered builder: the published name's constructor, returning a backbone with a method.
Builder = Callable[..., CLBackbone]


def method_of(target: object, cls: type[_Method], builders: str | None = None) -> _Method:
    """The mask method of class ``cls`` of ``target``: a backbone with one attached, or the method.

    Args:
        target: a backbone, or a ``cls`` instance (returned as is).
        cls: the method's class (:class:`~clarena.hat.HAT`, :class:`~clarena.wsn.WSN` ...).
        builders: the builders that make such a backbone, named in the error
            (``'clarena.backbones.HATMaskMLP / HATMaskResNet18 ...'``).

    Raises:
        TypeError: ``target`` carries no ``cls`` method; the message says how to get one.
    """
    if isinstance(target, cls):
        return target
    method = getattr(target, "mask_method", None)
    if not isinstance(method, cls):
        what = "no mask method" if method is None else type(method).__name__
        how = f"build it with {builders} or attach" if builders else "attach"
        raise TypeError(
            f"{type(target).__name__} has {what} attached, not {cls.__name__}; {how} one with "
            f"backbone.attach({cls.__name__}())."
        )
    return method


def method_builder(
    name: str,
    family: Callable[..., CLBackbone],
    method: Callable[..., MaskMethod],
    batch_normalization_default: str | None,
    method_parameters: Sequence[inspect.Parameter] = (),
    return_annotation: Any = CLBackbone,
) -> Builder:
    """A builder called ``name``: the CL backbone ``family`` (``CLMLP``, ``CLResNet18`` ...) with
    ``method(batch_normalization=..., **method arguments)`` attached.

    Its signature is the family's, ``batch_normalization`` defaulting to
    ``batch_normalization_default`` and taking the methods' modes (``None``/``False``,
    ``'shared'``/``True``, ``'independent'``; alias ``batch_normalisation``), plus
    ``method_parameters`` (keyword-only, passed to ``method``). Unknown arguments raise
    ``TypeError`` naming the nearest valid one. The method is made first, so its argument errors
    come before the backbone is built; the family gets ``batch_normalization=True`` unless the
    mode is ``None``.
    """
    parameters = [
        parameter.replace(default=batch_normalization_default, annotation="str | bool | None")
        if parameter.name == "batch_normalization"
        else parameter
        for parameter in inspect.signature(family).parameters.values()
    ]
    signature = inspect.Signature(
        [*parameters, *method_parameters], return_annotation=return_annotation
    )
    names = list(signature.parameters)
    own = [parameter.name for parameter in method_parameters]

    def build(*args: Any, **kwargs: Any) -> CLBackbone:
        kwargs = checked_keywords(name, kwargs, names)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        options = {key: arguments.pop(key) for key in own}
        mode = resolve_batch_norm_mode(arguments.pop("batch_normalization"), name)
        attached = method(batch_normalization=mode, **options)
        return family(batch_normalization=mode is not None, **arguments).attach(attached)

    build.__name__ = build.__qualname__ = name
    build.__signature__ = signature  # type: ignore[attr-defined]
    return build
