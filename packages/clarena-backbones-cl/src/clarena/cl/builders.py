"""Finding a backbone's mask method, and builders that attach one: the twins of HAT and WSN."""

from __future__ import annotations

import difflib
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


def _near(key: str, names: list[str]) -> bool:
    return bool(difflib.get_close_matches(key, names, n=1, cutoff=0.8))


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
    mode is ``None`` (a family without that argument, such as ``CLTimmBackbone``, keeps its own
    batch norms and the argument goes to the method alone; its ``**kwargs`` stay last).
    """
    parameters = [
        parameter.replace(default=batch_normalization_default, annotation="str | bool | None")
        if parameter.name == "batch_normalization"
        else parameter
        for parameter in inspect.signature(family).parameters.values()
    ]
    family_has_batch_norm_argument = any(p.name == "batch_normalization" for p in parameters)
    if not family_has_batch_norm_argument:
        # A family that finds its batch norms itself (timm): the argument is the method's only.
        parameters.append(
            inspect.Parameter(
                "batch_normalization",
                inspect.Parameter.KEYWORD_ONLY,
                default=batch_normalization_default,
                annotation="str | bool | None",
            )
        )
    variadic = [p for p in parameters if p.kind is p.VAR_KEYWORD]
    fixed = [p for p in parameters if p.kind is not p.VAR_KEYWORD]
    signature = inspect.Signature(
        [*fixed, *method_parameters, *variadic], return_annotation=return_annotation
    )
    names = list(signature.parameters)
    own = [parameter.name for parameter in method_parameters]

    named = [p.name for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]

    def build(*args: Any, **kwargs: Any) -> CLBackbone:
        if variadic:
            # Further keywords go to the family (timm's model arguments), which checks them; a
            # near miss of a named argument is still caught here.
            near = {k: v for k, v in kwargs.items() if k not in named and _near(k, named)}
            checked_keywords(name, near, named)
            kwargs = checked_keywords(name, kwargs, [*named, *kwargs])
        else:
            kwargs = checked_keywords(name, kwargs, names)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for parameter in variadic:
            arguments.update(arguments.pop(parameter.name, {}))
        options = {key: arguments.pop(key) for key in own}
        mode = resolve_batch_norm_mode(arguments.pop("batch_normalization"), name)
        attached = method(batch_normalization=mode, **options)
        if family_has_batch_norm_argument:
            arguments["batch_normalization"] = mode is not None
        return family(**arguments).attach(attached)

    build.__name__ = build.__qualname__ = name
    build.__signature__ = signature  # type: ignore[attr-defined]
    return build
