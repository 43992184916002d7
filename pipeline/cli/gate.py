"""`python -m pipeline gate`: the whole gate on one experiment, as the pytest run it is.

The preflight, the build, the eval and the thresholds are pytest tests (tests/preflight and
tests/eval), so the gate's verdict, its exit code and its JUnit report are pytest's own.
Options are pytest's and routegate's (pipeline/core/options.py), e.g. `--experiment phase40`.
"""

from __future__ import annotations

import sys

import pytest

from pipeline.cli import door
from pipeline.core.options import joined
from pipeline.core.workspace import CHECKOUT

PYTEST_HELP = "--help-pytest"


def help_text() -> str:
    """The gate's own options first, under its own usage line; then where pytest's are."""
    parser = door.parser(
        "gate",
        "The whole gate on one experiment: the preflight (tests/preflight), the build (or "
        "--model / --server-url), its integrity check, the eval and the thresholds "
        "(tests/eval), as one pytest run: the verdict is its exit status (0 PASS, 1 FAIL, 2 "
        "bad input, 3 a fault) and its JUnit XML (--junitxml FILE).",
    )
    parser.usage = "python -m pipeline gate [options] [pytest options]"
    return (
        parser.format_help()
        + f"\nEvery pytest option works here too (-k, -x, --junitxml, ...): `python -m pipeline "
        f"gate {PYTEST_HELP}` lists them.\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print(help_text(), end="")
        return 0
    if PYTEST_HELP in args:
        args = ["--help" if a == PYTEST_HELP else a for a in args]
    paths = [str(CHECKOUT / "tests" / "preflight"), str(CHECKOUT / "tests" / "eval")]
    # The checkout's own config and rootdir, and every path value joined to its option, so no
    # value can move pytest's rootdir (pipeline/cli/pytest_plugin.py says why).
    setup = ["-c", str(CHECKOUT / "pyproject.toml"), "--rootdir", str(CHECKOUT)]
    return int(pytest.main([*setup, *paths, *joined(args)]))
