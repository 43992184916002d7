"""results.json as a record: `ReportRecord`, written by `write_results` and read back by
`read_results`, the one place its kind and version are checked.

The JSON keeps every key results.json had before it was a record (`format` among them), with
`kind` and `version` added in front, so tools reading the file keep working. The top-level
sections are typed fields; the rows inside them (criteria, prompts, the sweep's cells, the
training and preflight sections) stay plain JSON objects: they are made in
`pipeline.report.scores` and `pipeline.report.content`, read by key in markdown.py, html.py,
chart.py and compare.py, and written as they are.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.core import io
from pipeline.core.records import Record, RecordError
from pipeline.eval.verdict import Outcome, Verdict

Row = dict[str, Any]
"""One row of a section, as written: a plain JSON object."""

RERUN = "run `python -m pipeline report RUN_DIR` again on its run folder to rewrite it"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportRecord(Record):
    """reports/<experiment>/results.json: one run's report (pipeline.report.content builds it)."""

    KIND = "report"
    VERSION = 1
    """Bump when results.json changes shape: `read_results` refuses a file of another one."""

    format: int = VERSION
    """results.json's shape before it had `version` (the same number), kept for its readers."""
    experiment: str
    description: str
    run_dir: str
    verdict: Outcome
    verdict_reasons: tuple[str, ...]
    thresholds_verdict: str
    """The summary's own verdict (its thresholds alone), beside the gate's."""
    thresholds_pending: bool
    score: str
    samples: int
    decision_temperature: float
    baseline_name: str
    overall: Row | None
    """The overall row at the decision temperature (pipeline.eval.records.CategoryRow)."""
    criteria: tuple[Row, ...]
    """Per category: its CategoryRow with its name under "category"."""
    require_decidable: bool
    baseline_run: str
    max_drop: float | None
    paired: dict[str, Row]
    decide: str
    non_inferiority: dict[str, Row]
    prompts: tuple[Row, ...]
    distribution: Row
    robustness: Row | None
    changes: tuple[Row, ...] | None
    failures: Row
    sweep: Row
    training: Row | None
    """None where routegate did not build the model."""
    integrity: Row | None
    model_bytes: int | None
    preflight: Row | None
    servers: tuple[Row, ...]
    settings: Row
    repeat: str
    """The command that repeats the eval."""
    docs: Row | None
    files: dict[str, str | None]
    warnings: tuple[str, ...]
    chart: Row | None = None
    """{"file": "results.png"} or {"skipped": why}; None until the report is written."""

    @property
    def gate_verdict(self) -> Verdict:
        """The gate's verdict with its reasons."""
        return Verdict(self.verdict, self.verdict_reasons)


def write_results(report: ReportRecord, path: Path) -> Path:
    """results.json, replaced atomically."""
    return report.write(path)


def read_results(path: Path) -> ReportRecord:
    """A results.json this routegate wrote. Another kind of file, a results.json written before
    it was a record or by another version is bad input naming the file and how to rewrite it."""
    raw = io.read_json(path)
    if isinstance(raw, dict):
        if "kind" not in raw and "verdict" in raw:
            raise RecordError(
                f"{path}: a results.json written by an older routegate (it has no kind and "
                f"version): {RERUN}"
            )
        version = raw.get("version")
        kind = raw.get("kind")
        if (
            kind == ReportRecord.KIND
            and isinstance(version, int)
            and version < ReportRecord.VERSION
        ):
            raise RecordError(
                f"{path}: results.json version {version}, and this routegate reads version "
                f"{ReportRecord.VERSION}: {RERUN}"
            )
    try:
        return ReportRecord.from_json(raw, str(path))
    except RecordError as err:
        raise RecordError(f"{err}; {RERUN}") from err
