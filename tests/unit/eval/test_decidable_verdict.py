"""The decidable verdict: a baseline run compared prompt by prompt, the regression criterion,
--require-decidable, and the bad inputs of a baseline run.

Runs are written as the eval writes them (`pipeline.eval.run.summarize` + `_score_line`), from
scored replies made here: one model answers every prompt right, another always calls one tool.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.core import io
from pipeline.core.errors import BadInput
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import (
    OVERALL,
    Experiment,
    Regression,
    Thresholds,
    load_experiment,
)
from pipeline.definitions.prompts import EvalPrompt, load_prompts
from pipeline.eval import run as evaluate
from pipeline.eval.client import Record
from pipeline.eval.run import Scored, Settings
from pipeline.eval.scoring import Score
from pipeline.eval.verdict import judge

CATEGORIES = tuple(load_catalog().categories)
SETTINGS = Settings(samples=3, temperatures=(0.0,))


@pytest.fixture(scope="module")
def phase40() -> Experiment:
    return load_experiment("phase40")


@pytest.fixture(scope="module")
def prompts(phase40: Experiment) -> tuple[EvalPrompt, ...]:
    return load_prompts(phase40.eval.prompts, load_catalog())


def scored(prompts: tuple[EvalPrompt, ...], one_tool: str | None) -> list[Scored]:
    """Every prompt x 3 samples: all right (one_tool None), or every reply a call of one tool."""
    out = []
    for p in prompts:
        for sample in range(SETTINGS.samples):
            if one_tool is None:
                calls = [{"name": e.tool, "arguments": {}} for e in p.expect]
                right = 1.0
            else:
                calls = [{"name": one_tool, "arguments": {}}]
                right = float(p.match == "any_of" and any(e.tool == one_tool for e in p.expect))
            record = Record(f"{p.id}/{sample}", p.id, sample, 0.0, None, "", 0.1)
            out.append(Scored(p, record, Score(right, right, right, True, "", calls), False))
    return out


def write(run_dir: Path, experiment: Experiment, rows: list[Scored], **kwargs) -> Path:
    summary = evaluate.summarize(
        experiment, rows, SETTINGS, categories=CATEGORIES, requests=len(rows), **kwargs
    )
    io.write_jsonl(run_dir / "eval" / "scores.jsonl", [evaluate._score_line(s) for s in rows])
    summary.write(run_dir / "eval" / "summary.json")
    return run_dir


def test_one_tool_model_against_a_perfect_run(tmp_path, phase40, prompts) -> None:
    perfect = write(tmp_path / "perfect", phase40, scored(prompts, None))
    summary = evaluate.summarize(
        phase40,
        scored(prompts, "read_file"),
        SETTINGS,
        categories=CATEGORIES,
        baseline_run=perfect,
    )
    overall = summary.paired[OVERALL]
    assert overall.n == 27
    assert overall.difference < -0.5 and overall.hi < 0
    assert overall.p_value < 0.01
    # each category's difference is its own mean difference
    domain = summary.paired["domain"]
    assert domain.n == 9 and domain.difference == pytest.approx(-1.0)
    assert summary.verdict == "FAIL"  # below phase40's thresholds anyway


def test_regression_criterion_judged_on_the_paired_interval(tmp_path, phase40, prompts) -> None:
    perfect = write(tmp_path / "perfect", phase40, scored(prompts, None))
    lenient = dataclasses.replace(
        phase40,
        thresholds=Thresholds({}, pending=False),
        regression=Regression(max_drop=0.20),
    )
    same = evaluate.summarize(
        lenient, scored(prompts, None), SETTINGS, categories=CATEGORIES, baseline_run=perfect
    )
    assert same.verdict == "PASS" and same.paired[OVERALL].difference == 0.0
    worse = evaluate.summarize(
        lenient, scored(prompts, "read_file"), SETTINGS, categories=CATEGORIES, baseline_run=perfect
    )
    assert worse.verdict == "FAIL"
    assert any("a drop of more than 20.0%" in r for r in worse.verdict_reasons)


@pytest.mark.parametrize(
    ("require", "expected"),
    [(False, "PASS"), (True, "FAIL")],
)
def test_require_decidable(require: bool, expected: str) -> None:
    # 3/3 right against 0.95: a pass by the point rule, never decidable with 3 prompts.
    row = {"mean": 1.0, "lo": 0.44, "hi": 1.0, "prompts_needed": 73}
    verdict = judge(
        Thresholds({"text_tools": 0.95}), {"text_tools": row}, require_decidable=require
    )
    assert verdict.outcome == expected
    if require:
        assert "not decidable" in verdict.reasons[0] and "73 prompts" in verdict.reasons[0]


def test_criteria_rows_carry_decidable_and_prompts_needed(phase40, prompts) -> None:
    summary = evaluate.summarize(phase40, scored(prompts, None), SETTINGS, categories=CATEGORIES)
    text = summary.decision().categories["text_tools"]
    assert text.n == 3  # prompts, not 9 samples
    assert text.decidable is False and text.prompts_needed == 73
    overall = summary.decision().categories[OVERALL]
    assert overall.decidable is True  # 27 of 27 clears 0.80
    assert summary.decision().categories["no_tool"].decidable is None  # not gated


def test_baseline_run_of_another_prompt_set(tmp_path, phase40, prompts) -> None:
    other = [dataclasses.replace(s, prompt=dataclasses.replace(s.prompt, id=f"x-{s.prompt.id}"))
             for s in scored(prompts, None)]  # fmt: skip
    write(tmp_path / "other", phase40, other)
    with pytest.raises(BadInput, match="scored none of this run's 30 prompts"):
        evaluate.summarize(
            phase40,
            scored(prompts, None),
            SETTINGS,
            categories=CATEGORIES,
            baseline_run=tmp_path / "other",
        )


def test_missing_or_corrupt_baseline_run(tmp_path, phase40, prompts) -> None:
    with pytest.raises(BadInput, match=r"nowhere/eval/summary\.json does not exist: pass a run"):
        evaluate.baseline_values(tmp_path / "nowhere")
    run = write(tmp_path / "run", phase40, scored(prompts, None))
    (run / "eval" / "summary.json").write_text("{not json")
    with pytest.raises(BadInput, match=r"summary\.json:1: not valid JSON"):
        evaluate.baseline_values(run)
    run = write(tmp_path / "run2", phase40, scored(prompts, None))
    with (run / "eval" / "scores.jsonl").open("a") as out:
        out.write('{"prompt_id": "x"}\n')
    with pytest.raises(BadInput, match=r"scores\.jsonl:91: not a scored answer"):
        evaluate.baseline_values(run)
