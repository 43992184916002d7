"""Benchmark the preflight on the real Qwen3 tokenizers and the generated phase40 data
(1,159 + 123 examples): the library call, and the pytest gate serially and with xdist.

    python benchmarks/preflight.py

Needs ../shared/models (the offline tokenizer copies). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import ROOT, SHARED, load_experiment, with_overrides
from pipeline.preflight import run_preflight

MODELS = SHARED / "models"
OPTIONS = [
    "--experiment",
    "phase40",
    "--base-model",
    str(MODELS / "qwen3-8b-tokenizer"),
    "--reference-model",
    str(MODELS / "qwen3-coder-30b-a3b-tokenizer"),
]


def timed(cmd: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode
    return time.perf_counter() - started, rc


def main() -> None:
    experiment = with_overrides(
        load_experiment("phase40"),
        base_model=OPTIONS[3],
        reference_model=OPTIONS[5],
    )
    workspace = Workspace.at()
    # the data is generated on first use; time the steady state
    run_preflight(experiment, workspace=workspace)
    started = time.perf_counter()
    findings = run_preflight(experiment, workspace=workspace)
    library = time.perf_counter() - started
    failed = sum(f.failed for f in findings)
    print(
        f"run_preflight (in process, warm imports): {library:6.2f} s, {len(findings)} "
        f"findings, {failed} failed"
    )
    cli, rc = timed([sys.executable, "-m", "pipeline", "preflight", *OPTIONS])
    print(f"python -m pipeline preflight:              {cli:6.2f} s wall (exit {rc})")
    pytest = [sys.executable, "-m", "pytest", "tests/preflight", "-q", "-p", "no:cacheprovider"]
    serial, rc = timed([*pytest, *OPTIONS])
    print(f"pytest tests/preflight:                    {serial:6.2f} s wall (exit {rc})")
    parallel, rc = timed([*pytest, "-n", "auto", *OPTIONS])
    print(f"pytest tests/preflight -n auto:            {parallel:6.2f} s wall (exit {rc})")


if __name__ == "__main__":
    main()
