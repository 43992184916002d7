"""`python -m pipeline gate`: the whole gate on one experiment, as the pytest run it is.

The preflight, the build, the eval and the thresholds are pytest tests (tests/preflight and
tests/eval), so the gate's verdict, its exit code and its JUnit report are pytest's own.
Options are pytest's and routegate's (see conftest.py), e.g. `--experiment phase40`.
"""

from __future__ import annotations

import sys

import pytest

from pipeline.experiment import ROOT


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [str(ROOT / "tests" / "preflight"), str(ROOT / "tests" / "eval")]
    return int(pytest.main(["--rootdir", str(ROOT), *paths, *args]))
