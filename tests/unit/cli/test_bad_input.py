"""Bad input names the input: one `error:` line, exit 2, no traceback, through the real doors
(`python -m pipeline STEP`). None of these runs gets as far as training anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import EXIT_BAD_INPUT, EXIT_PASS
from pipeline.core.options import ALL_STEPS
from pipeline.core.workspace import CHECKOUT

Done = subprocess.CompletedProcess[str]
LINE = {
    "messages": [
        {"role": "user", "content": "Show the last 5 commits."},
        {"role": "assistant", "content": "ok"},
    ]
}


def pipeline(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> Done:
    """`python -m pipeline ARGS` in the checkout; `kwargs` go to subprocess.run."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
        **kwargs,
    )


def non_utf8_data(tmp: Path) -> tuple[list[str], str]:
    """train.jsonl whose second line holds byte 0xff."""
    folder = tmp / "data"
    folder.mkdir()
    first = json.dumps(LINE).encode() + b"\n"
    second = json.dumps(LINE).encode().replace(b"commits", b"comm\xffits")
    (folder / "train.jsonl").write_bytes(first + second + b"\n")
    (folder / "valid.jsonl").write_text(json.dumps(LINE) + "\n")
    offset = len(first) + second.index(b"\xff")
    train = folder / "train.jsonl"
    return (
        ["data", "check", "--experiment", "tiny", "--workdir", str(tmp), str(folder)],
        f"error: {train}:2: byte 0xff at offset {offset} is not UTF-8; save the file as UTF-8",
    )


def missing_data(step: str) -> Callable[[Path], tuple[list[str], str]]:
    def case(tmp: Path) -> tuple[list[str], str]:
        missing = tmp / "no-such-data"
        return (
            [step, "--experiment", "tiny", "--workdir", str(tmp), "--data", str(missing)],
            f"error: --data {missing}: no such folder; pass the folder that holds train.jsonl "
            "and valid.jsonl",
        )

    return case


BAD_INPUTS: dict[str, Callable[[Path], tuple[list[str], str]]] = {
    # case: tmp -> (the command's arguments, the one line it prints)
    "a non-UTF-8 byte in train.jsonl (data check)": non_utf8_data,
    "a missing --data folder on tiny (preflight)": missing_data("preflight"),
    "a missing --data folder on tiny (build)": missing_data("build"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    args, line = BAD_INPUTS[case](tmp_path)
    done = pipeline(*args)
    assert (done.returncode, done.stderr.splitlines(), done.stdout) == (EXIT_BAD_INPUT, [line], "")


def test_an_unwritable_reports_folder_is_named_exit_2(tmp_path: Path) -> None:
    """reports/ not writable: the PermissionError is one line naming the folder, exit 2 (not
    1, the code of a real FAIL). root writes through any mode, so as root the folder is made
    immutable instead (chattr +i: EPERM, a PermissionError too)."""
    reports = tmp_path / "reports"
    reports.mkdir()
    if os.geteuid() != 0:
        reports.chmod(0o555)
    elif shutil.which("chattr") is None or _chattr("+i", reports).returncode != 0:
        pytest.skip("running as root, and this filesystem cannot make a folder immutable")
    try:
        done = pipeline("preflight", "--experiment", "tiny", "--workdir", str(tmp_path))
    finally:
        if os.geteuid() == 0:
            _chattr("-i", reports)
        reports.chmod(0o755)
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    # transformers says on stderr that it found no PyTorch: its line, not routegate's
    (line,) = [x for x in done.stderr.splitlines() if not x.startswith("[transformers]")]
    assert line.startswith(f"error: cannot write {reports}/tiny/preflight.json: ")
    assert line.endswith(f"; make {reports} writable or pass --workdir DIR")


def _chattr(flag: str, folder: Path) -> Done:
    return subprocess.run(["chattr", flag, str(folder)], capture_output=True, text=True)


def _tokenizerless(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "qwen3"}\n')
    return base


def test_a_base_model_folder_without_a_tokenizer_is_named(tmp_path: Path) -> None:
    """The preflight records its load check failing with what is missing (not transformers'
    advice to install sentencepiece or tiktoken) and exits 2 with one line naming the input."""
    base = _tokenizerless(tmp_path)
    done = pipeline("preflight", "--experiment", "tiny", "--base-model", str(base),
                    "--workdir", str(tmp_path))  # fmt: skip
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "[load] base tokenizer: cannot load\n" in done.stdout
    assert f"\n{base} has no tokenizer (tokenizer.json / tokenizer.model)\n" in done.stdout
    (line,) = [x for x in done.stderr.splitlines() if not x.startswith("[transformers]")]
    assert line.startswith("error: the preflight could not load 1 input(s): base tokenizer: ")
    assert f"{base} has no tokenizer" in line
    assert "sentencepiece" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((tmp_path / "reports/tiny/preflight.json").read_text())["passed"] is False


def test_pytest_preflight_exits_2_for_a_tokenizerless_base_model(tmp_path: Path) -> None:
    """The pytest door ends the same way as `python -m pipeline preflight`."""
    base = _tokenizerless(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/preflight",
         "--experiment", "tiny", "--base-model", str(base), "--workdir", str(tmp_path)],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == EXIT_BAD_INPUT, done.stdout[-2000:]
    assert "error: the preflight could not load 1 input(s): base tokenizer: " in done.stdout


@pytest.mark.parametrize("step", ALL_STEPS)
def test_every_step_prints_its_help(step: str) -> None:
    """A help text with "95% interval" made argparse's %-formatting crash `--help`."""
    done = pipeline(step, "--help")
    assert done.returncode == EXIT_PASS, done.stderr
    assert done.stdout.startswith("usage: ")
