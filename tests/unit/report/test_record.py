"""results.json is read back only as the record this routegate writes: another kind of file, a
results.json from before it was a record, or one of another version is bad input that names
the file and says how to rewrite it. (Written and read back whole: test_report's
test_written_files.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import BadInput
from pipeline.core.records import RecordError
from pipeline.report import ReportRecord, read_results

REWRITE = r"run `python -m pipeline report RUN_DIR` again"


def _file(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(content))
    return path


def test_a_results_json_from_before_it_was_a_record_is_named(tmp_path: Path) -> None:
    path = _file(tmp_path, {"format": 1, "experiment": "tiny", "verdict": "PASS"})
    with pytest.raises(RecordError, match=rf"{path}: .*older routegate.*{REWRITE}"):
        read_results(path)


def test_another_kind_of_record_is_named(tmp_path: Path) -> None:
    path = _file(tmp_path, {"kind": "preflight", "version": 1, "experiment": "tiny"})
    with pytest.raises(RecordError, match=rf"{path}: a 'preflight' record, not 'report'.*"):
        read_results(path)


@pytest.mark.parametrize(
    ("version", "said"),
    [
        (ReportRecord.VERSION - 1, "this routegate reads version"),
        (ReportRecord.VERSION + 1, "upgrade routegate"),
    ],
)
def test_another_version_is_named(tmp_path: Path, version: int, said: str) -> None:
    path = _file(tmp_path, {"kind": "report", "version": version, "experiment": "tiny"})
    with pytest.raises(RecordError, match=rf"{path}: .*{said}.*{REWRITE}"):
        read_results(path)


def test_a_field_missing_is_named(tmp_path: Path) -> None:
    path = _file(tmp_path, {"kind": "report", "version": ReportRecord.VERSION})
    with pytest.raises(RecordError, match=rf"{path}: missing field 'experiment'.*{REWRITE}"):
        read_results(path)


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(BadInput, match=rf"{path}:1: not valid JSON"):
        read_results(path)
