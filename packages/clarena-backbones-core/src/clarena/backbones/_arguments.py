"""Constructor-argument checking shared by every backbone class.

Configs reach backbones through ``hydra.utils.instantiate``, which passes every YAML key as a
keyword argument. A misspelt key must fail loudly instead of vanishing into ``**kwargs``, and the
British spelling used by the published docs (``batch_normalisation``) must mean the same as the
argument it names.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

#: Alternative spellings accepted for constructor arguments: alias -> canonical name.
ARGUMENT_ALIASES: dict[str, str] = {"batch_normalisation": "batch_normalization"}


def _describe(parameters: list[str]) -> str:
    aliases = {canonical: alias for alias, canonical in ARGUMENT_ALIASES.items()}
    return ", ".join(
        f"{name} (alias {aliases[name]})" if name in aliases else name for name in parameters
    )


def check_constructor_arguments(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a backbone ``__init__`` so that argument aliases resolve and unknown names fail.

    Args:
        init: the ``__init__`` function of a backbone class.

    Returns:
        A function with the same signature that renames aliases to their canonical argument and
        raises ``TypeError`` naming an unknown argument and the nearest valid one.
    """
    signature = inspect.signature(init)
    parameters = [
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    ][1:]
    takes_any_keyword = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        check = _resolve_aliases if takes_any_keyword else checked_keywords
        init(self, *args, **check(type(self).__name__, kwargs, parameters))

    return checked_init


def _resolve_aliases(owner: str, kwargs: dict[str, Any], parameters: list[str]) -> dict[str, Any]:
    kwargs = dict(kwargs)
    for alias, canonical in ARGUMENT_ALIASES.items():
        if alias in kwargs and canonical in parameters:
            if canonical in kwargs:
                raise TypeError(
                    f"{owner}() got both '{alias}' and '{canonical}', two spellings of the "
                    f"same argument; keep one of them."
                )
            kwargs[canonical] = kwargs.pop(alias)
    return kwargs


def checked_keywords(owner: str, kwargs: dict[str, Any], parameters: list[str]) -> dict[str, Any]:
    """``kwargs`` with aliases renamed to their canonical argument, once every name is known.

    Args:
        owner: the class or builder name the messages give.
        kwargs: keyword arguments of a call.
        parameters: the names ``owner`` takes.

    Raises:
        TypeError: an unknown name (with the nearest valid one), or an argument given under both
            of its spellings.
    """
    kwargs = _resolve_aliases(owner, kwargs, parameters)
    for name in kwargs:
        if name not in parameters:
            raise TypeError(unknown_argument_message(owner, name, parameters))
    return kwargs


_Built = TypeVar("_Built")


def make_builder(family: type[_Built], name: str, doc: str, **fixed: Any) -> Callable[..., _Built]:
    """A thin registered builder: ``name(**arguments)`` returns ``family(**fixed, **arguments)``.

    As timm's ``@register_model`` functions do for its ``ResNet`` class, a builder fixes what
    makes a variant (``depth=18``) and takes every other constructor argument of ``family``, with
    the same defaults, positions, alias and checks; an unknown argument is named with the nearest
    one ``name`` takes::

        ResNet18 = make_builder(ResNet, "ResNet18", "ResNet-18.", depth=18)

    Args:
        family: the class that builds the network.
        name: the builder's published name (its ``__name__`` and the name its messages give).
        doc: the builder's docstring.
        fixed: arguments of ``family`` the builder fixes; they are not arguments of the builder.

    Returns:
        The builder function, its signature that of ``family`` without ``fixed``.
    """
    signature = inspect.signature(family)
    own = [p for p in signature.parameters.values() if p.name not in fixed]
    builder_signature = signature.replace(parameters=own, return_annotation=family.__name__)
    parameters = [p.name for p in own if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def builder(*args: Any, **arguments: Any) -> _Built:
        arguments = checked_keywords(name, arguments, parameters)
        bound = builder_signature.bind(*args, **arguments)
        return family(**fixed, **bound.arguments)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    builder.__module__ = family.__module__
    builder.__signature__ = builder_signature  # type: ignore[attr-defined]
    return builder


def unknown_argument_message(cls_name: str, name: str, parameters: list[str]) -> str:
    """Error text for an argument ``name`` that ``cls_name`` does not take."""
    candidates = parameters + [a for a, c in ARGUMENT_ALIASES.items() if c in parameters]
    nearest = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    hint = f" Did you mean '{nearest[0]}'?" if nearest else ""
    return (
        f"{cls_name}() got an unknown argument '{name}'.{hint} "
        f"{cls_name} takes: {_describe(parameters)}."
    )


def extends_arguments(
    family: type[Any] | Callable[..., None],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a variant's ``__init__`` the arguments of its family plus its own.

    The family (``MLP``, ``ResNet``) is the one source of truth for its constructor arguments. A
    variant (CL, HAT, WSN) writes only the arguments it adds or whose default it changes, as
    keyword-only parameters, and receives every other family argument in ``**arguments``::

        @extends_arguments(MLP)
        def __init__(self, *, gate: str = "sigmoid", **arguments: Any) -> None: ...

    Args:
        family: the family class (its ``__init__`` is read) or an ``__init__`` function.

    Returns:
        A decorator. The decorated ``__init__`` has the family's signature, the variant's own
        parameters replacing family ones of the same name in place and new ones appended as
        keyword-only, so ``inspect.signature``, argument checking and positional calls see
        one complete signature. The variant ``__init__`` is called with every argument by
        keyword, defaults filled in.
    """
    family_init = cast("type[Any]", family).__init__ if isinstance(family, type) else family

    def decorate(init: Callable[..., None]) -> Callable[..., None]:
        own = {
            name: parameter
            for name, parameter in inspect.signature(init).parameters.items()
            if parameter.kind is parameter.KEYWORD_ONLY
        }
        merged = []
        for name, parameter in inspect.signature(family_init).parameters.items():
            override = own.pop(name, None)
            if override is None:
                merged.append(parameter)
            else:
                merged.append(
                    parameter.replace(default=override.default, annotation=override.annotation)
                )
        keyword_only = [*merged, *own.values()]
        # A family's ``**kwargs`` must stay last, after the variant's own keyword-only ones.
        extra_parameters = [p for p in keyword_only if p.kind is p.VAR_KEYWORD]
        signature = inspect.Signature(
            [p for p in keyword_only if p.kind is not p.VAR_KEYWORD] + extra_parameters
        )
        extra = extra_parameters[0].name if extra_parameters else None

        @functools.wraps(init)
        def variant_init(self: Any, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            del arguments[next(iter(signature.parameters))]
            if extra is not None:
                # The family's ``**kwargs`` (TimmBackbone's timm arguments) pass on flat.
                arguments.update(arguments.pop(extra, {}))
            init(self, **arguments)

        variant_init.__signature__ = signature  # type: ignore[attr-defined]
        return variant_init

    return decorate
