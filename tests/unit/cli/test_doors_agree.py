"""The CLI's eval and the pytest gate give the same verdict, scores and files for the same inputs.

Both doors run tiny against one canned server (read_file for every request, so some prompts
are right and most are wrong), each in a workspace of its own: `python -m pipeline eval` and
`python -m pipeline gate` (pytest's tests/preflight and tests/eval). What the line writes must
not depend on the door: the verdict and its reasons, every prompt's score, and the same report
files under reports/tiny/ and the same eval files in the run folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import report
from pipeline.core.workspace import CHECKOUT, Workspace
from tests.unit.fake_http import ReadFileHandler, serving

pytestmark = pytest.mark.slow


def _door(command: list[str], url: str, work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *command, "--experiment", "tiny", "--server-url", url,
         "--workdir", str(work)],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _scores(run_dir: Path) -> dict[str, float]:
    lines = (run_dir / "eval" / "scores.jsonl").read_text().splitlines()
    return {row["prompt_id"]: row["value"] for row in map(json.loads, lines)}


def test_the_cli_and_the_pytest_door_agree(tmp_path: Path) -> None:
    cli_work, gate_work = tmp_path / "cli", tmp_path / "gate"
    with serving(ReadFileHandler) as url:
        cli = _door(["eval"], url, cli_work)
        gate = _door(["gate", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"], url, gate_work)
    # tiny's thresholds fail a model that reads a file for every request: both say so, alike
    assert cli.returncode == gate.returncode == 1, cli.stdout[-2000:] + gate.stdout[-2000:]
    by_cli = report.read_results(Workspace(cli_work).reports("tiny") / "results.json")
    by_gate = report.read_results(Workspace(gate_work).reports("tiny") / "results.json")
    assert by_cli.gate_verdict == by_gate.gate_verdict
    assert by_cli.criteria == by_gate.criteria
    cli_runs = list(Workspace(cli_work).runs("tiny").glob("server-*"))
    gate_runs = list(Workspace(gate_work).runs("tiny").glob("server-*"))
    assert len(cli_runs) == len(gate_runs) == 1
    assert _scores(cli_runs[0]) == _scores(gate_runs[0])
    assert _files(cli_runs[0] / "eval") == _files(gate_runs[0] / "eval")
    # the gate's pytest run adds its preflight report; the rest is the same set of files
    assert _files(Workspace(cli_work).reports("tiny")) - {"preflight.json"} == _files(
        Workspace(gate_work).reports("tiny")
    ) - {"preflight.json"}
