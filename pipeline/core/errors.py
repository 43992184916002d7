"""One error base class for routegate, carrying the exit code every door maps it to.

Exit codes (the README's table): 0 PASS (or PENDING thresholds), 1 FAIL (the verdict, a failed
preflight, or a build the preflight refused), 2 bad input (a file, folder, option or setting
that cannot be used: the message names it and says what to do), 3 ERROR (a fault outside the
model's answers: a server that cannot be reached, a stage that crashed), 130 interrupted
(what was computed is kept; the same command resumes).
"""

from __future__ import annotations

from typing import ClassVar

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_BAD_INPUT = 2
EXIT_ERROR = 3
EXIT_INTERRUPTED = 130


class RoutegateError(Exception):
    """Base of every error routegate raises on purpose; its message is meant for the user."""

    exit_code: ClassVar[int] = EXIT_ERROR


class BadInput(RoutegateError, ValueError):
    """An input cannot be used: the message names it and says what to do."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


class Refused(RoutegateError):
    """A step refused to run on inputs the preflight failed (exit code of a FAIL)."""

    exit_code: ClassVar[int] = EXIT_FAIL


class Fault(RoutegateError, RuntimeError):
    """Something outside the inputs broke (a server, a subprocess): the run is an ERROR."""

    exit_code: ClassVar[int] = EXIT_ERROR


def exit_code(err: BaseException) -> int:
    """The exit code a door returns for `err`."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, RoutegateError):
        return err.exit_code
    return EXIT_ERROR
