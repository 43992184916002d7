"""`python -m pipeline gate`: the whole gate on one experiment, as the pytest run it is.

The preflight, the build, the eval and the thresholds are pytest tests (tests/preflight and
tests/eval), so the gate's verdict, its exit code and its JUnit report are pytest's own.
Options are pytest's and routegate's (pipeline/core/options.py), e.g. `--experiment phase40`.
"""

from __future__ import annotations

import sys

import pytest

from pipeline.core.options import joined
from pipeline.core.workspace import CHECKOUT


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [str(CHECKOUT / "tests" / "preflight"), str(CHECKOUT / "tests" / "eval")]
    # The checkout's own config and rootdir, and every path value joined to its option, so no
    # value can move pytest's rootdir (pipeline/cli/pytest_plugin.py says why).
    setup = ["-c", str(CHECKOUT / "pyproject.toml"), "--rootdir", str(CHECKOUT)]
    return int(pytest.main([*setup, *paths, *joined(args)]))
