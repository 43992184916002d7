"""What every door shares: its parser from the one options table, the experiment and workspace
it selects, and how it ends (errors and Ctrl-C mapped to one line and one exit code).

Each CLI's `main` parses its arguments with `parser` and hands a function to `run`; a
`RoutegateError` becomes `error: <message>` with its exit code (pipeline.core.errors), Ctrl-C
one line saying that what was computed is kept. No traceback for anything routegate raises on
purpose.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pipeline.core.errors import EXIT_INTERRUPTED, RoutegateError
from pipeline.core.options import Step, add_arguments
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import Experiment
from pipeline.gate import Invocation


def parser(step: Step, description: str) -> argparse.ArgumentParser:
    """`python -m pipeline STEP`'s parser with the step's options from the one table."""
    out = argparse.ArgumentParser(prog=f"python -m pipeline {step}", description=description)
    add_arguments(out, step)
    return out


def selected(args: argparse.Namespace) -> tuple[Experiment, Workspace]:
    """The experiment (with its overrides) and the workspace the arguments select, read as
    every door reads its options (pipeline.gate.Invocation)."""
    invocation = Invocation.from_options(lambda name: getattr(args, name, None))
    return invocation.experiment, invocation.workspace


def run(step: Callable[[], int], interrupted: str = "") -> int:
    try:
        return step()
    except KeyboardInterrupt:
        print(
            interrupted
            or "interrupted: what was computed is kept; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except RoutegateError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
