"""The gate's options reach pytest whatever their values: absolute paths outside the checkout,
in the space form (`--model /abs/dir`), which pytest would otherwise take for test paths when
it picks its rootdir (pipeline/cli/pytest_plugin.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.core.options import OPTIONS, joined
from pipeline.core.workspace import CHECKOUT

_PROBE = textwrap.dedent(
    """
    import json, sys
    import pytest

    class Probe:
        def pytest_collection_finish(self, session):
            c = session.config
            print("PROBE " + json.dumps({
                "rootdir": str(c.rootpath), "inifile": str(c.inipath),
                "strict_markers": bool(c.getoption("strict_markers")),
                **{k: c.getoption(k) for k in ("model", "data", "base_model", "experiment")},
            }))

    sys.exit(pytest.main(sys.argv[1:], plugins=[Probe()]))
    """
)


@pytest.mark.parametrize("form", ["space", "equals"])
def test_path_options_outside_the_checkout(tmp_path: Path, form: str) -> None:
    outside = {name: tmp_path / name for name in ("model", "data", "base")}
    for folder in outside.values():
        folder.mkdir()
    pairs = [
        ("--experiment", "tiny"),
        ("--model", outside["model"]),
        ("--data", outside["data"]),
        ("--base-model", outside["base"]),
    ]
    flat = [
        arg
        for flag, value in pairs
        for arg in ([flag, str(value)] if form == "space" else [f"{flag}={value}"])
    ]
    run = subprocess.run(
        # No test path before the options: the first value is the first free argument.
        [sys.executable, "-c", _PROBE, *flat, "--co", "-q", "-p", "no:cacheprovider",
         "-m", "eval"],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith("PROBE "))
    seen = json.loads(line.removeprefix("PROBE "))
    assert seen["rootdir"] == str(CHECKOUT)
    assert seen["inifile"] == str(CHECKOUT / "pyproject.toml")
    assert seen["strict_markers"], "the checkout's addopts were not applied"
    assert seen["model"] == str(outside["model"])
    assert seen["data"] == str(outside["data"])
    assert seen["base_model"] == str(outside["base"])
    assert seen["experiment"] == "tiny"


def test_joined_writes_every_valued_option_with_equals() -> None:
    args = ["-m", "eval", "--model", "/x", "--force", "--samples", "3", "-q"]
    assert joined(args) == ["-m", "eval", "--model=/x", "--force", "--samples=3", "-q"]
    valued = [o.flag for o in OPTIONS if o.kind != "switch"]
    assert joined([f for flag in valued for f in (flag, "v")]) == [f"{f}=v" for f in valued]
