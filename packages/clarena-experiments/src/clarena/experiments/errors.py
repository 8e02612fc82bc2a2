"""clarena-experiments' error classes, and turning an exception from a run into one paragraph.

Every error class here derives from :class:`~clarena.backbones.errors.ClarenaError`; the
``clarena`` command recognises clarena's own messages by that type.
"""

from __future__ import annotations

import re

from clarena.backbones.errors import ClarenaError

__all__ = [
    "FULL_ERROR_ENV",
    "CLConfigError",
    "ClarenaError",
    "DatasetNotFoundError",
    "ModelFileError",
    "PipelineConfigError",
    "RankStateMismatchError",
    "RunDirBusyError",
    "RunDirLinkError",
    "RunDirUsedError",
    "TrainingDivergedError",
    "UntrustedConfigError",
    "exception_chain",
    "explain",
]

#: Set this environment variable to 1 to get the full traceback instead of the short message.
FULL_ERROR_ENV = "CLARENA_FULL_ERROR"

_FULL_KEY = re.compile(r"full_key:\s*(\S+)")


class PipelineConfigError(ClarenaError, ValueError):
    """The experiment config is missing something the pipeline needs, or holds a bad value."""


class CLConfigError(ClarenaError, ValueError):
    """An algorithm was configured in a way it cannot work (e.g. HAT with CIL)."""


class DatasetNotFoundError(ClarenaError, FileNotFoundError):
    """A dataset's files are not under the given root (and nothing is downloaded)."""


class RankStateMismatchError(ClarenaError, RuntimeError):
    """The algorithm state differs between DDP ranks after a task."""


class ModelFileError(ClarenaError, ValueError):
    """A model or resume file is empty, truncated, corrupt or not a file clarena saved."""


class UntrustedConfigError(ClarenaError, ValueError):
    """A config read from a file names a target outside the allowlist (or an interpolation)."""


class RunDirBusyError(ClarenaError, RuntimeError):
    """Another run is writing into the output dir."""


class RunDirUsedError(ClarenaError, RuntimeError):
    """The output dir holds a previous run's files and no override says to delete them."""


class RunDirLinkError(ClarenaError, RuntimeError):
    """The output dir holds a link (or special file) through which a write would leave it."""


class TrainingDivergedError(ClarenaError, RuntimeError):
    """The training loss became nan or infinite: the run stopped without saving results."""


def exception_chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _is_hydra_wrapper(error: BaseException) -> bool:
    message = str(error)
    return type(error).__name__ == "InstantiationException" or message.startswith(
        ("Error loading '", "Error locating target")
    )


def explain(error: BaseException) -> str:
    """One paragraph naming the problem of ``error``.

    Hydra wraps errors raised while building objects from the config
    (``InstantiationException`` -> ``ImportError`` -> ...); the message that says what is wrong
    (an unknown backbone name with its nearest match, a misspelt argument) is deeper in the
    chain. This picks the outermost :class:`ClarenaError` of the chain, else its innermost
    non-wrapper error, and adds the config key Hydra was building.
    """
    chain = exception_chain(error)
    ours = [e for e in chain if isinstance(e, ClarenaError)]
    plain = [
        e for e in chain if not _is_hydra_wrapper(e) and not isinstance(e, ModuleNotFoundError)
    ]
    cause = ours[0] if ours else (plain or chain)[-1]
    where = ""
    for link in chain:
        match = _FULL_KEY.search(str(link))
        if match:
            where = f" (while building config key '{match.group(1)}')"
            break
    message = str(cause).strip() or type(cause).__name__
    return (
        f"clarena: {type(cause).__name__}{where}: {message}\n"
        f"Set {FULL_ERROR_ENV}=1 to see the full traceback."
    )
