"""The eval's records: what `<run>/eval/summary.json` holds, typed and versioned.

The report, the pytest gate and the CLI read these fields, never the file's keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import io
from pipeline.core.errors import BadInput
from pipeline.core.records import Record
from pipeline.core.workspace import RunFolder
from pipeline.eval.metrics import CategoryScore, NonInferiorityRow, PairedRow


@dataclass(frozen=True)
class CategoryRow(CategoryScore):
    """One category (or `overall`) at one temperature: its score against its threshold."""

    threshold: float | None = None
    """None: the category is not gated."""
    baseline: float | None = None
    passed: bool | None = None
    fragile: bool = False
    """The interval straddles the threshold: the pass could flip on a rerun."""
    decidable: bool | None = None
    """The 95% interval lies wholly on one side of the threshold; None when not gated."""
    prompts_needed: int | None = None
    """Prompts of this category that, at the observed rate, would make the interval clear the
    threshold; None when not gated, when the rate equals the threshold, or out of reach."""
    pass_all: float | None = None
    """pass^k: the share of prompts whose every sample was fully right (samples > 1; None
    with one sample, where it is the mean): a model right only sometimes shows here."""


@dataclass(frozen=True)
class TemperatureRow:
    temperature: float
    categories: dict[str, CategoryRow]
    passed: bool
    """The verdict's thresholds all hold at this temperature."""
    errors: int = 0
    truncated: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)
    """Replies per kind of pipeline.eval.scoring.ANOMALIES (kinds with none left out); absent
    from summaries written before it, which read as none."""


@dataclass(frozen=True)
class ServerRow:
    """One server of the eval: what it answered, and whether it stopped mid-run."""

    url: str
    """Its root URL, as each of its records in responses.jsonl names it."""
    answered: int = 0
    """Requests it answered (answers reused from an earlier run of the same servers too)."""
    errors: int = 0
    """Requests it was asked that got no usable answer."""
    stopped: str = ""
    """Why it stopped answering mid-run and where its requests went; "" when it did not."""


@dataclass(frozen=True)
class ServedRow:
    """What the eval's own server loaded for the model folder judged, and why
    (pipeline.models.expanded.served_weights); absent when it asked a server it did not start."""

    weights: str
    """"as built", or "float32 expansion" of the quantized folder (the same function)."""
    folder: str
    why: str
    batch: int | None = None
    """The requests the server decoded together (its --decode-concurrency)."""


@dataclass(frozen=True)
class EvalSummary(Record):
    KIND = "eval-summary"
    VERSION = 1

    experiment: str
    fingerprint: str
    score: str
    samples: int
    temperatures: dict[str, TemperatureRow]
    decision_temperature: float
    max_tokens: int
    verdict: str
    """PASS / FAIL / PENDING / ERROR, from pipeline.eval.verdict.judge."""
    verdict_reasons: tuple[str, ...] = ()
    enable_thinking: bool | None = None
    stop: tuple[str, ...] = ()
    seed: int = 0
    thresholds_pending: bool = False
    flips: tuple[str, ...] = ()
    """Categories whose pass/fail differs between temperatures of the sweep."""
    versions: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    server_url: str | None = None
    """The --server-url as given (the first of several; `servers` lists each)."""
    model_id: str = ""
    restarts: int = 0
    seconds: float = 0.0
    requests: int = 0
    require_decidable: bool = False
    """A pass had to be decidable (its interval wholly above the threshold)."""
    max_drop: float | None = None
    """The pre-registered regression criterion against the baseline run (None: none)."""
    baseline_run: str = ""
    """The run folder `paired` compares with; "" for none."""
    paired: dict[str, PairedRow] = field(default_factory=dict)
    """Per category and overall: this run minus the baseline run, prompt by prompt."""
    decide: str = "thresholds"
    """What the verdict rested on: "thresholds" or "non-inferiority" ([decision] rule)."""
    non_inferiority: dict[str, NonInferiorityRow] = field(default_factory=dict)
    """Per category with a [decision] margin: can this run replace the baseline run?"""
    servers: tuple[ServerRow, ...] = ()
    """Each server the requests went to, in the order given; absent from summaries written
    before it, which read as none."""
    served: ServedRow | None = None
    """The weights the eval's own server loaded; None for --server-url runs."""
    concurrency: int = 0
    """Requests in flight at once on each server (0 in summaries written before it)."""

    def at(self, temperature: float) -> TemperatureRow:
        return self.temperatures[temperature_key(temperature)]

    def decision(self) -> TemperatureRow:
        return self.at(self.decision_temperature)


def temperature_key(t: float) -> str:
    """How a temperature names its row: 0 -> "0", 0.7 -> "0.7"."""
    return f"{t:g}"


def eval_files(run_dir: Path) -> dict[str, Path]:
    """The eval's outputs in a run folder, named once: written by pipeline.eval.run, read here
    and listed by the report."""
    folder = RunFolder(Path(run_dir))
    return {
        "summary": folder.eval_summary,
        "scores": folder.eval_scores,
        "responses": folder.eval_responses,
        "server_log": folder.server_log,
    }


def read_summary(run_dir: Path) -> EvalSummary:
    """`<run>/eval/summary.json` of a finished eval; a folder without one is bad input."""
    path = eval_files(run_dir)["summary"]
    if not path.is_file():
        raise BadInput(
            f"{path} does not exist: pass a run folder whose eval finished "
            "(runs/<experiment>/<key>/, written by `pytest -m eval` or `python -m pipeline eval`)"
        )
    return EvalSummary.read(path)


def read_scores(run_dir: Path) -> tuple[dict[str, Any], ...]:
    """`<run>/eval/scores.jsonl`: one scored answer per line (prompt_id, category, sample,
    temperature, value, ...); a missing file or a line that is not JSON is bad input."""
    path = eval_files(run_dir)["scores"]
    if not path.is_file():
        raise BadInput(f"{path} does not exist: the eval did not finish scoring")
    rows = []
    for number, line in io.read_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadInput(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise BadInput(f"{path}:{number}: not a scored answer")
        rows.append(row)
    return tuple(rows)
