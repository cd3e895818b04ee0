"""Exception hierarchy of pillar_rerank.

Every error the library raises on purpose derives from :class:`PillarRerankError` and carries
the process exit code the CLI uses for it, so the mapping from error to exit status lives in one
place (``cli/main.py`` reads ``exit_code``).

Exit codes, the same for every ``rerank`` subcommand:

====  ==============================================================
0     success
1     internal error (a bug: the traceback is kept)
2     bad usage or bad input (shape, dtype, NaN, inconsistent map, ...)
3     I/O failure (missing, unreadable or non-regular file, unwritable output, refusing to overwrite)
130   interrupted (Ctrl-C; 128 + SIGINT, the shell convention)
====  ==============================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_IO = 3
EXIT_INTERRUPTED = 130


class PillarRerankError(Exception):
    """Base class of every error pillar_rerank raises deliberately."""

    exit_code: int = EXIT_INTERNAL


class InvalidInputError(PillarRerankError, ValueError):
    """An input array, map or parameter has the wrong shape, dtype or value."""

    exit_code = EXIT_BAD_INPUT


class InvalidParameterError(InvalidInputError):
    """A constructor or function parameter is outside its allowed range."""


class CheckpointError(InvalidInputError):
    """A model directory or checkpoint is corrupt, tampered with, or from another config."""


class InputFileError(PillarRerankError, OSError):
    """A file is missing, unreadable, or would be overwritten against the user's wish."""

    exit_code = EXIT_IO


class NotFittedError(PillarRerankError, ValueError, AttributeError):
    """A method that needs ``fit`` (or ``load``) was called first."""

    exit_code = EXIT_BAD_INPUT


class ConvergenceWarning(UserWarning):
    """An iterative method stopped at its iteration limit before reaching its tolerance."""
