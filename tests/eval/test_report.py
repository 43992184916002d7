"""The session's report: written after the eval, and true to the raw scores on disk.

Each category row of results.json must equal the summary recomputed here from
`<run>/eval/scores.jsonl` with the eval's own `summarize`, at every temperature of the sweep,
so the report can never show numbers the scored answers do not support.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline import report
from pipeline.core.workspace import CHECKOUT, Workspace
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Experiment
from pipeline.definitions.prompts import load_prompts
from pipeline.eval import run as evaluate
from pipeline.eval.client import Record
from pipeline.eval.run import EvalResult, Scored
from pipeline.eval.scoring import Score


def rescored(experiment: Experiment, run_dir: Path) -> list[Scored]:
    """scores.jsonl read back into the values the eval summarised."""
    prompts = {p.id: p for p in load_prompts(experiment.eval.prompts, load_catalog())}
    out = []
    for line in (run_dir / "eval" / "scores.jsonl").read_text().splitlines():
        row: dict[str, Any] = json.loads(line)
        record = Record(
            key="",
            prompt_id=row["prompt_id"],
            sample=row["sample"],
            temperature=row["temperature"],
            response=None,
            error=row["error"],
            seconds=row["seconds"],
        )
        score = Score(
            row["value"],
            row["routing"],
            row["arguments"],
            row["format"],
            row["reason"],
            row["calls"],
        )
        out.append(Scored(prompts[row["prompt_id"]], record, score, row["truncated"]))
    return out


@pytest.fixture(scope="module")
def results(
    eval_report: report.Written, experiment: Experiment, workspace: Workspace
) -> dict[str, Any]:
    path = workspace.reports(experiment.name) / report.JSON
    assert path.is_file(), f"{path} was not written"
    assert path == eval_report.json
    return json.loads(path.read_text())


def test_report_is_of_this_run(results: dict[str, Any], eval_result: EvalResult) -> None:
    assert results["settings"]["fingerprint"] == eval_result.summary.fingerprint
    assert Path(results["run_dir"]).resolve() in {
        eval_result.run_dir.resolve(),
        (CHECKOUT / results["run_dir"]).resolve(),
    }
    assert results["thresholds_verdict"] == eval_result.summary.verdict


def test_category_rows_equal_the_raw_scores(
    results: dict[str, Any], eval_result: EvalResult, experiment: Experiment
) -> None:
    # the run's own baseline, as the gate gave it (--decide non-inferiority requires one)
    baseline = eval_result.summary.baseline_run
    again = evaluate.summarize(
        experiment,
        rescored(experiment, eval_result.run_dir),
        eval_result.settings,
        categories=tuple(load_catalog().categories),
        baseline_run=Path(baseline) if baseline else None,
    )
    decision = again.decision()
    rows = {c["category"]: c for c in results["criteria"]}
    assert set(rows) == set(decision.categories)
    for name, want in decision.categories.items():
        got = rows[name]
        for key in ("mean", "lo", "hi"):
            assert got[key] == pytest.approx(getattr(want, key), abs=1e-12), f"{name} {key}"
        for key in ("n", "threshold", "baseline", "passed", "fragile"):
            assert got[key] == getattr(want, key), f"{name} {key}"
    for t, at_t in again.temperatures.items():
        sweep = {c["category"]: c["by_temperature"][t] for c in results["sweep"]["categories"]}
        for name, want in at_t.categories.items():
            assert sweep[name]["mean"] == pytest.approx(want.mean, abs=1e-12), f"T={t} {name}"
            assert sweep[name]["n"] == want.n
    assert results["sweep"]["flips"] == list(again.flips)


def test_prompt_rows_equal_the_raw_scores(results: dict[str, Any], eval_result: EvalResult) -> None:
    t = eval_result.settings.decision_temperature
    rows = {p["id"]: p for p in results["prompts"]}
    ids = {s.prompt.id for s in eval_result.scored if s.record.temperature == t}
    assert set(rows) == ids
    for pid in ids:
        samples = eval_result.at(pid)
        assert rows[pid]["values"] == [s.score.value for s in samples]
        assert rows[pid]["calls"] == [s.score.calls for s in samples]


def test_markdown_and_chart_exist(eval_report: report.Written, results: dict[str, Any]) -> None:
    text = eval_report.markdown.read_text()
    assert text.startswith(f"# {results['experiment']}: {results['verdict']}")
    for p in results["prompts"]:
        assert f"| {p['id']} |" in text
    # matplotlib is a default dependency: the default install draws the chart and shows it.
    assert eval_report.chart is not None and eval_report.chart.stat().st_size > 0
    assert f"]({eval_report.chart.name})" in text
