"""pytest's exit status is the verdict's (pipeline/cli/pytest_plugin.py): a FAIL is non-zero even
when every test under tests/eval passed.

The case measured before the plugin set it: a dataset whose preflight failed, judged by
`pytest -m eval` on a model given with --model: every threshold test passed, pytest exited 0,
and results.json said FAIL.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.workspace import CHECKOUT, Workspace
from pipeline.definitions.experiment import load_experiment
from pipeline.preflight import Finding, resolve_model, write_report

pytestmark = pytest.mark.slow


def zero_thresholds(tmp_path: Path) -> Path:
    """tiny.toml with every threshold at 0 (each threshold test passes) and 8 tokens a reply."""
    text = (CHECKOUT / "experiments" / "tiny.toml").read_text()
    text = text.replace('"../fixtures/', f'"{CHECKOUT / "fixtures"}/')
    head, _, rest = text.partition("[thresholds]")
    _, _, tail = rest.partition("\n[baseline]")
    table = "\n".join(f"{c} = 0.0" for c in ("text_tools", "lsp", "domain", "overall"))
    text = f"{head}[thresholds]\npending = false\n{table}\n\n[baseline]{tail}"
    text = re.sub(r"(?m)^max_tokens = \d+", "max_tokens = 8", text)
    path = tmp_path / "tiny-zero.toml"
    path.write_text(text)
    return path


def gate(tmp_path: Path, experiment: Path, model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "eval", "-q", "-p", "no:cacheprovider",
         f"--experiment={experiment}", f"--model={model}", f"--workdir={tmp_path / 'work'}",
         "-k", "threshold or report"],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_fail_verdict_fails_pytest_even_when_every_test_passed(tmp_path: Path) -> None:
    path = zero_thresholds(tmp_path)
    experiment = load_experiment(path)
    workspace = Workspace(tmp_path / "work")
    model = resolve_model("tiny:json", experiment, workspace=Workspace.at())

    passing = gate(tmp_path, path, model)
    assert passing.returncode == 0, passing.stdout[-3000:] + passing.stderr[-2000:]
    results = workspace.reports(experiment.name) / "results.json"
    assert json.loads(results.read_text())["verdict"] == "PASS"

    failed = Finding("masking", "train", "fail", "0/1159 examples train a call", "fix the data")
    write_report(experiment, [failed], workspace)
    refused = gate(tmp_path, path, model)
    assert " failed" not in refused.stdout.splitlines()[-1], refused.stdout[-3000:]
    assert json.loads(results.read_text())["verdict"] == "FAIL"
    assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-2000:]
    assert "the preflight failed (1 check(s))" in refused.stdout
