"""`pytest tests/preflight` as a user runs it: real tokenizers pass; bad input fails once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import ROOT, SHARED

MODELS = SHARED / "models"
pytestmark = pytest.mark.skipif(
    not (MODELS / "qwen3-8b-tokenizer").is_dir(),
    reason=f"real Qwen3 tokenizers not found at {MODELS} (set ROUTEGATE_SHARED)",
)


def _gate(workdir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/preflight",
        "-q",
        "-p",
        "no:cacheprovider",
        "--experiment",
        "phase40",
        "--reference-model",
        str(MODELS / "qwen3-coder-30b-a3b-tokenizer"),
        f"--workdir={workdir}",
        *options,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_phase40_on_real_tokenizers_passes_and_writes_its_report(tmp_path: Path) -> None:
    run = _gate(tmp_path, "--base-model", str(MODELS / "qwen3-8b-tokenizer"))
    assert run.returncode == 0, run.stdout[-3000:]
    assert "routegate preflight" in run.stdout and "preflight: PASS" in run.stdout
    report = json.loads(Workspace.at(tmp_path).preflight_report("phase40").read_text())
    assert report["passed"] and report["base"].endswith("qwen3-8b-tokenizer")


def test_missing_base_folder_is_one_clear_failure(tmp_path: Path) -> None:
    run = _gate(tmp_path / "work", "--base-model", str(tmp_path / "missing"))
    assert run.returncode == 2, "an input that does not load is bad input"
    assert "error: the preflight could not load 1 input(s): base tokenizer: " in run.stdout
    assert "1 failed" in run.stdout, run.stdout[-3000:]
    assert f"model folder {tmp_path / 'missing'} does not exist" in run.stdout
    assert "error" not in run.stdout.splitlines()[-1], "no collection or fixture errors"
    report = json.loads(Workspace.at(tmp_path / "work").preflight_report("phase40").read_text())
    failed = [(f["check"], f["subject"]) for f in report["findings"] if f["verdict"] == "fail"]
    assert failed == [("load", "base tokenizer")] and not report["passed"]
