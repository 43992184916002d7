"""Both doors onto the preflight record the same findings on the same inputs.

`python -m pipeline preflight` and `pytest tests/preflight` each write
`reports/<experiment>/preflight.json` (here in their own --workdir): the same checks, subjects
and verdicts, in the same order, and exactly those the registry declares. The tiny experiment
needs no network: its models are built locally in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.core.workspace import CHECKOUT, Workspace
from pipeline.definitions.experiment import load_experiment
from pipeline.preflight import Context
from pipeline.preflight.runner import expected


def _findings(workdir: Path) -> list[tuple[str, str, str]]:
    report: dict[str, Any] = json.loads(
        Workspace.at(workdir).preflight_report("tiny").read_text(encoding="utf-8")
    )
    # The disk check's subject is the workspace's runs folder: the one thing that differs.
    return [
        (f["check"], f["subject"].replace(str(workdir.resolve()), "WORKDIR"), f["verdict"])
        for f in report["findings"]
    ]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", *args]
    return subprocess.run(cmd, cwd=CHECKOUT, capture_output=True, text=True, timeout=600)


def test_cli_and_pytest_record_the_same_findings(tmp_path: Path) -> None:
    cli_dir, pytest_dir = tmp_path / "cli", tmp_path / "pytest"
    cli = _run("pipeline", "preflight", "--experiment", "tiny", "--workdir", str(cli_dir))
    gate = _run(
        "pytest",
        "tests/preflight",
        "-q",
        "-p",
        "no:cacheprovider",
        "--experiment=tiny",
        f"--workdir={pytest_dir}",
    )
    assert cli.returncode in (0, 1), cli.stdout[-3000:] + cli.stderr[-3000:]
    assert gate.returncode == cli.returncode, gate.stdout[-3000:]
    from_cli, from_pytest = _findings(cli_dir), _findings(pytest_dir)
    assert from_cli == from_pytest
    ctx = Context(load_experiment("tiny"), Workspace.at(cli_dir))
    declared = [(c, s.replace(str(cli_dir.resolve()), "WORKDIR")) for c, s in expected(ctx)]
    assert [(c, s) for c, s, _ in from_cli] == declared
    assert ("tool-trained", "hover") in declared and ("load", "data") in declared
