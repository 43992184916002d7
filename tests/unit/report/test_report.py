"""Reports from synthetic run folders, written in the real formats by the real writers.

A run of phase40's 30 prompts at two temperatures with two samples is made from hand-chosen
scores: summary.json is the `EvalSummary` of `evaluate.summarize`, scores.jsonl the eval's own
lines, build.json from the build's record, preflight.json from `preflight.write_report`.
Every table of results.md is then checked against the raw scores.jsonl, not against the
summary the report was made from. No server, no model.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline import preflight, report
from pipeline.builder import (
    BUILD_FORMAT,
    BuildInputs,
    BuildPreflight,
    BuildRecord,
    FuseRecord,
    QuantizeRecord,
    Stages,
    TrainRecord,
)
from pipeline.builder.records import Attempt
from pipeline.cli import report as report_cli
from pipeline.core import io
from pipeline.core.workspace import CHECKOUT, Workspace
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Decision, Experiment, ExperimentError, load_experiment
from pipeline.definitions.prompts import EvalPrompt, load_prompts
from pipeline.eval import run as evaluate
from pipeline.eval.client import Record
from pipeline.eval.run import Scored, Settings
from pipeline.eval.scoring import FAILURES, Failure, Score
from pipeline.preflight import Finding
from pipeline.preflight import costs as check_costs
from pipeline.preflight.costs import CheckCost, CheckCosts
from pipeline.report.scores import phrasing_family, robustness

SETTINGS = Settings(samples=2, temperatures=(0.0, 0.7))
FAILURE_OF: dict[float, Failure] = {
    0.0: "prose",
    0.1: "wrong_tool",
    0.5: "format",
    0.6: "wrong_tool",
}
"""The failure type a synthetic answer of each score value carries."""
CATEGORIES = tuple(load_catalog().categories)
RESULTS_KEYS = (
    "format", "experiment", "description", "run_dir", "verdict", "verdict_reasons",
    "thresholds_verdict", "thresholds_pending", "score", "samples", "decision_temperature",
    "baseline_name", "overall", "criteria", "require_decidable", "baseline_run", "max_drop",
    "paired", "decide", "non_inferiority", "prompts", "distribution", "robustness", "changes",
    "failures", "sweep", "training", "integrity", "model_bytes", "preflight", "servers",
    "settings", "repeat", "docs", "files", "warnings", "chart",
)  # fmt: skip
"""results.json's keys, in order, as written before it was a record (which adds kind, version)."""


@pytest.fixture(scope="module")
def experiment() -> Experiment:
    return load_experiment("phase40")  # pre-registered thresholds, seed score, code mode


@pytest.fixture(scope="module")
def prompts(experiment: Experiment) -> tuple[EvalPrompt, ...]:
    return load_prompts(experiment.eval.prompts, load_catalog())


# --- the synthetic run ----------------------------------------------------------------------------


def chosen_value(prompt: EvalPrompt, index: int, sample: int, temperature: float) -> float:
    """At T=0: text/validation/git/cst and no_tool perfect, lsp 1/0.5 (below 0.80), domain
    1/0.1/0 (below 0.60), multi_tool 0.6 (above 0.35). At T=0.7 the second sample scores 0."""
    if temperature > 0 and sample == 1:
        return 0.0
    if prompt.category == "lsp":
        return (1.0, 0.5)[index % 2]
    if prompt.category == "domain":
        return (1.0, 0.1, 0.0)[index % 3]
    if prompt.category == "multi_tool":
        return 0.6
    return 1.0


def scored_run(
    prompts: tuple[EvalPrompt, ...],
    settings: Settings = SETTINGS,
    value=chosen_value,
) -> list[Scored]:
    out = []
    for t in settings.temperatures:
        for i, p in enumerate(prompts):
            for sample in range(settings.samples):
                v = value(p, i, sample, t)
                if p.match == "none" or v == 0.0:
                    calls: list[dict[str, Any]] = []
                elif v == 0.1:
                    calls = [{"name": "run_command", "arguments": {"command": "ls"}}]
                else:
                    calls = [
                        {"name": e.tool, "arguments": {"path": f"{p.id}.py"}} for e in p.expect
                    ]
                reason = "ok: fine" if v == 1.0 else f"wrong | {p.id} s{sample} T={t:g}"
                score = Score(v, v, v, v == 1.0, reason, calls, FAILURE_OF.get(v))
                seconds = round(0.25 + 0.01 * i + 0.001 * sample, 3)
                record = Record(f"{p.id}/{sample}/{t:g}", p.id, sample, t, None, "", seconds)
                out.append(Scored(p, record, score, truncated=False))
    return out


def write_run(
    run_dir: Path,
    experiment: Experiment,
    scored: list[Scored],
    *,
    settings: Settings = SETTINGS,
    built: bool = True,
    workspace: Workspace,
    preflight_failed: bool = False,
    forced: bool = False,
    baseline_run: Path | None = None,
) -> Path:
    """A run folder as routegate leaves it, its preflight.json in `workspace`; returns the
    preflight.json path."""
    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True)
    summary = evaluate.summarize(
        experiment,
        scored,
        settings,
        categories=CATEGORIES,
        model=str(run_dir / "quantized") if built else "/models/qwen3-8b-phase40",
        server_url=None,
        model_id="default_model",
        restarts=0,
        seconds=12.5,
        requests=len(scored),
        baseline_run=baseline_run,
    )
    io.write_jsonl(eval_dir / "scores.jsonl", [evaluate._score_line(s) for s in scored])
    summary.write(eval_dir / "summary.json")
    findings = [
        Finding("special-tokens", "base <tool_call>", "pass", "single token, id 151657"),
        Finding("chatml", "system + user", "pass", "identical (8123 chars)"),
        Finding("rendering", "train", "info", "1159/1159 prompts framed alike"),
    ]
    if preflight_failed:
        findings.append(
            Finding("thinking", "eval settings", "fail", "1159 targets start with <think>", "fix")
        )
    pf_path = preflight.write_report(experiment, findings, workspace)
    if built:
        write_build_record(run_dir, experiment, findings, pf_path, forced=forced)
    return pf_path


def write_build_record(
    run_dir: Path, experiment: Experiment, findings: list[Finding], report: Path, *, forced: bool
) -> None:
    """build.json as the build writes it: a BuildRecord of three completed stages."""
    failures = tuple(f.message() for f in findings if f.failed)
    record = BuildRecord(
        format=BUILD_FORMAT,
        experiment=experiment.name,
        experiment_file=experiment.source,
        fingerprint=experiment.fingerprint(),
        key="0123456789abcdef",
        inputs=BuildInputs(
            format=BUILD_FORMAT,
            base={"hub": experiment.models.base, "revision": ""},
            data_sha256="0" * 64,
            train={},
            fuse={},
            quantize={},
            versions={"mlx": "0.32.4", "mlx-lm": "0.32.2"},
        ),
        base_model=experiment.models.base,
        base_folder=None,
        data_folder=run_dir / "data",
        preflight=BuildPreflight(
            fingerprint=experiment.fingerprint(),
            passed=not failures,
            forced=bool(failures) and forced,
            failed=failures,
            checks=len(findings),
            report=report,
        ),
        started="2026-02-18T10:09:00",
        complete=True,
        finished="2026-02-18T10:40:00",
        seconds=1834.2,
        stages=Stages(
            train=TrainRecord(
                seconds=1500.0,
                wall_seconds=1501.5,
                peak_memory_bytes=9_100_000_000,
                command=("mlx_lm", "lora"),
                complete=True,
                output_bytes=30_700_000,
                mlx_peak_memory_gb=8.7,
                train_loss=0.412,
                val_loss=0.538,
                val_loss_step=800,
                trainable_parameters=7_667_712,
                trainable_parameters_reported="0.094% (7.668M/8190.735M)",
                total_parameters_millions=8190.735,
                fine_tune_type="lora",
                iters=800,
                resumed_from=None,
                attempts=(
                    Attempt(
                        offset=0,
                        iters=800,
                        resume_from=None,
                        command=("mlx_lm", "lora"),
                        started="2026-02-18T10:09:10",
                    ),
                ),
            ),
            fuse=FuseRecord(
                seconds=120.0,
                wall_seconds=121.0,
                peak_memory_bytes=17_000_000_000,
                command=("mlx_lm", "fuse"),
                complete=True,
                output_bytes=16_400_000_000,
                fine_tune_type="lora",
                nothing_to_merge=False,
                dequantize=False,
                dtype="bfloat16",
                dtype_note=None,
                removed=True,
            ),
            quantize=QuantizeRecord(
                seconds=200.0,
                wall_seconds=201.0,
                peak_memory_bytes=17_500_000_000,
                command=("mlx_lm", "convert"),
                complete=True,
                output_bytes=5_700_000_000,
                bits=5,
                group_size=64,
                dtype="bfloat16",
                bits_per_weight=5.5,
            ),
        ),
    )
    record.write(run_dir / "build.json")


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """Where preflight.json and the reports go: under tmp_path, never the checkout's reports/."""
    return Workspace(tmp_path)


@pytest.fixture
def run(tmp_path: Path, workspace: Workspace, experiment, prompts) -> tuple[Path, Path]:
    run_dir = tmp_path / "runs" / "phase40" / "0123456789abcdef"
    pf = write_run(run_dir, experiment, scored_run(prompts), workspace=workspace)
    return run_dir, pf


def collected(run_dir: Path, experiment: Experiment, pf: Path) -> report.RunData:
    """The run read back with the preflight report at `pf` (the run folder sits in its
    workspace's runs/<experiment>/)."""
    workspace = Workspace(run_dir.parents[2])
    return report.collect(run_dir, experiment, preflight_path=pf, workspace=workspace)


def made(run_dir: Path, experiment: Experiment, pf: Path) -> report.ReportRecord:
    return report.build_report(collected(run_dir, experiment, pf))


def raw_lines(run_dir: Path) -> list[dict[str, Any]]:
    text = (run_dir / "eval" / "scores.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def table(markdown: str, header: str) -> list[list[str]]:
    """The body rows of the first markdown table whose header line starts with `header`."""
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {header}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


def cut(text: str) -> str:
    """A markdown cell: results.md cuts long cells (results.json keeps them whole)."""
    return text if len(text) <= 110 else text[:107] + "..."


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


# --- the results document ------------------------------------------------------------------------


def test_criteria_table_matches_the_raw_scores(run, experiment) -> None:
    run_dir, pf = run
    r = made(run_dir, experiment, pf)
    md = report.render_markdown(r)
    rows = {row[0].strip("*"): row for row in table(md, "category | baseline")}
    at0 = [x for x in raw_lines(run_dir) if x["temperature"] == 0.0]
    thresholds = experiment.thresholds.as_dict()
    baseline = experiment.baseline.as_dict()
    for cat in [*CATEGORIES, "no_tool", "overall"]:
        chosen = [
            x
            for x in at0
            if x["category"] == cat or (cat == "overall" and x["category"] in CATEGORIES)
        ]
        values = [x["value"] for x in chosen]
        mean = sum(values) / len(values)  # every prompt has the same number of samples
        row = rows[cat]
        assert row[3] == pct(mean), cat
        # n counts prompts, not samples (a prompt's samples are one observation)
        assert row[5] == str(len({x["prompt_id"] for x in chosen})), cat
        if cat in thresholds:
            assert row[1] == pct(baseline[cat])
            assert row[2] == f">= {pct(thresholds[cat])}"
            assert row[6] == ("PASS" if mean >= thresholds[cat] else "FAIL"), cat
        else:
            assert row[2] == "not gated" and row[6] == "-"
    # lsp (0.8 = threshold) passes only just, its interval straddles the threshold
    assert rows["lsp"][6] == "PASS" and rows["lsp"][7] == "fragile"
    assert rows["domain"][6] == "FAIL"
    assert r.verdict == "FAIL"
    assert any("domain" in reason for reason in r.verdict_reasons)
    assert md.startswith("# phase40: FAIL\n")
    assert r.overall is not None and f"overall {pct(r.overall['mean'])}" in md


def test_prompt_table_matches_the_raw_scores(run, experiment, prompts) -> None:
    run_dir, pf = run
    md = report.render_markdown(made(run_dir, experiment, pf))
    rows = {row[0]: row for row in table(md, "id |")}
    assert set(rows) == {p.id for p in prompts}
    at0 = [x for x in raw_lines(run_dir) if x["temperature"] == 0.0]
    for p in prompts:
        samples = sorted((x for x in at0 if x["prompt_id"] == p.id), key=lambda x: x["sample"])
        values = [x["value"] for x in samples]
        row = rows[p.id]
        assert row[1] == p.category
        assert row[2] == cut(" ".join(p.text.split()))
        mean = sum(values) / len(values)
        assert row[3] == f"{mean:.2f} ({', '.join(f'{v:g}' for v in values)})"
        seconds = sum(x["seconds"] for x in samples) / len(samples)
        assert row[4] == f"{seconds:.2f}"
        wrong = [x for x in samples if x["value"] < 1.0]
        others = len({x["reason"] for x in wrong[1:]} - {wrong[0]["reason"]}) if wrong else 0
        suffix = f" (+{others} other failure mode{'s' if others > 1 else ''})" if others else ""
        assert row[5] == (wrong[0] if wrong else samples[0])["reason"] + suffix
        texts = [
            ", ".join(
                f"{c['name']}({', '.join(f'{k}={v!r}' for k, v in c['arguments'].items())})"
                for c in x["calls"]
            )
            or "(no call)"
            for x in samples
        ]
        if len(set(texts)) == 1:
            assert row[6] == cut(f"{texts[0]} (all 2 samples)")
        else:
            assert row[6] == cut("; ".join(f"{t} x1" for t in dict.fromkeys(texts)))


def test_distribution_counts_every_raw_value(run, experiment) -> None:
    run_dir, pf = run
    md = report.render_markdown(made(run_dir, experiment, pf))
    header = next(ln for ln in md.splitlines() if ln.startswith("| category | 1 |"))
    values = [c.strip() for c in header.strip("|").split("|")][1:-1]
    assert values == ["1", "0.6", "0.5", "0.1", "0"]
    rows = table(md, "category | 1 |")
    assert [row[0] for row in rows] == [*CATEGORIES, "no_tool"]
    raw = Counter(
        (x["category"], f"{x['value']:g}") for x in raw_lines(run_dir) if x["temperature"] == 0
    )
    for row in rows:
        cat, counts, n = row[0], row[1:-1], row[-1]
        assert [int(c) for c in counts] == [raw[cat, v] for v in values], cat
        assert int(n) == sum(raw[cat, v] for v in values)


def test_failure_types_count_every_raw_answer_that_is_not_right(run, experiment) -> None:
    run_dir, pf = run
    r = made(run_dir, experiment, pf)
    md = report.render_markdown(r)
    raw = [x for x in raw_lines(run_dir) if x["temperature"] == 0]
    wanted = Counter((x["category"], x["failure"]) for x in raw if x["failure"])
    types = r.failures["types"]
    assert types == [k for k in FAILURES if any(t == k for _, t in wanted)]
    rows = table(md, "category | " + " | ".join(types))
    assert [row[0] for row in rows] == [*(c for c in (*CATEGORIES, "no_tool") if any(
        x["category"] == c for x in raw)), "all"]  # fmt: skip
    for row in rows[:-1]:
        cat = row[0]
        assert [int(c or 0) for c in row[1:-1]] == [wanted[cat, k] for k in types], cat
        assert int(row[-1]) == sum(1 for x in raw if x["category"] == cat)
    assert [int(c) for c in rows[-1][1:-1]] == [
        sum(n for (_, k), n in wanted.items() if k == t) for t in types
    ]
    assert f"- wrong_tool: {FAILURES['wrong_tool']}" in md
    assert r.failures["shift"] is None  # no baseline run


def test_failure_types_against_a_baseline_run_say_which_grew(
    tmp_path, workspace, experiment, prompts
) -> None:
    base_dir = tmp_path / "runs" / "phase40" / "base"
    write_run(base_dir, experiment, scored_run(prompts), workspace=workspace)

    def worse(p: EvalPrompt, i: int, s: int, t: float) -> float:
        return 0.1 if p.category == "text_tools" else chosen_value(p, i, s, t)

    run_dir = tmp_path / "runs" / "phase40" / "worse"
    pf = write_run(run_dir, experiment, scored_run(prompts, value=worse), workspace=workspace,
                   baseline_run=base_dir)  # fmt: skip
    r = made(run_dir, experiment, pf)
    shift = {row["type"]: row for row in r.failures["shift"]["rows"]}
    text_answers = sum(2 for p in prompts if p.category == "text_tools")  # two samples each
    assert shift["wrong_tool"]["change"] == text_answers
    assert shift["prose"]["change"] == 0 and shift["format"]["change"] == 0
    md = report.render_markdown(r)
    rows = table(md, "failure type | baseline")
    assert rows[0][0] == "wrong_tool" and rows[0][3] == f"+{text_answers}"


def test_sweep_shows_each_temperature_and_the_flips(run, experiment) -> None:
    run_dir, pf = run
    r = made(run_dir, experiment, pf)
    md = report.render_markdown(r)
    rows = {row[0]: row for row in table(md, "category | T=0 | T=0.7 |")}
    lines = raw_lines(run_dir)
    for cat in ("text_tools", "git", "multi_tool"):
        for col, t in ((1, 0.0), (2, 0.7)):
            values = [x["value"] for x in lines if x["category"] == cat and x["temperature"] == t]
            assert rows[cat][col].startswith(pct(sum(values) / len(values)))
    # text_tools: 100% at T=0, 50% at T=0.7; multi_tool 60% -> 30%, below its 35%
    assert "text_tools" in r.sweep["flips"] and "multi_tool" in r.sweep["flips"]
    assert rows["text_tools"][3] == "flips" and rows["git"][3] == "flips"
    assert "Verdict flips between temperatures: " in md


def test_training_preflight_settings_and_docs(run, experiment) -> None:
    run_dir, pf = run
    r = made(run_dir, experiment, pf)
    md = report.render_markdown(r, out_dir=Workspace(CHECKOUT).reports("phase40"))
    stages = {row[0]: row for row in table(md, "stage |")}
    assert stages["train"][1] == "25.0 min" and stages["train"][2] == "9.10 GB"
    assert stages["fuse"][3] == "16.40 GB (removed)"
    assert "train loss 0.412, validation loss 0.538 (at iteration 800)" in md
    assert "trainable parameters: 7,667,712 (0.094% (7.668M/8190.735M)" in md
    assert "model size: 5.70 GB, 5 bits / group size 64 (5.500 bits per weight)" in md
    assert r.preflight is not None
    assert r.preflight["passed"] and not r.preflight["failed_for_this_run"]
    assert "passed (2 pass, 1 info)" in md
    settings = dict(table(md, "setting |"))
    assert settings["experiment fingerprint (the run's)"] == experiment.fingerprint()
    assert settings["temperatures (first decides)"] == "0, 0.7"
    assert settings["samples per prompt"] == "2"
    assert settings["eval seed"] == "0"
    assert settings["enable_thinking"] == "False"
    assert settings["stop sequences"] == "'<think>'"
    assert settings["model id (server)"] == "default_model"
    assert settings["mlx (build)"] == "0.32.4"
    assert "mlx-lm (eval)" in settings
    assert "python -m pipeline eval --experiment phase40 --samples 2 --temperature 0,0.7" in md
    if experiment.docs is not None:
        assert r.docs is not None and r.docs["path"] == "experiments/phase40"
        assert "[experiments/phase40](../../experiments/phase40)" in md
        for name in ("plan.md", "shape.md", "standards.md", "references.md"):
            assert f"[{name}](../../experiments/phase40/{name})" in md


def test_written_files(run, experiment, tmp_path: Path) -> None:
    run_dir, pf = run
    r = made(run_dir, experiment, pf)
    written = report.write_report(r, tmp_path / "out")
    data = json.loads(written.json.read_text())
    assert written.report == dataclasses.replace(r, chart={"file": "results.png"})
    assert data == json.loads(json.dumps(written.report.to_json()))
    # results.json keeps the keys it had before it was a record, `kind` and `version` in front
    assert list(data) == ["kind", "version", *RESULTS_KEYS]
    assert data["kind"] == "report" and data["version"] == data["format"] == 1
    read_back = report.read_results(written.json)
    assert read_back.to_json() == data
    assert written.markdown.read_text() == report.render_markdown(read_back, tmp_path / "out")
    # matplotlib is a default dependency: the chart is drawn by default
    assert written.chart is not None
    assert written.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["chart"] == {"file": "results.png"}
    assert "![per-category score" in written.markdown.read_text()


def test_build_report_is_a_pure_function_of_the_run(run, experiment) -> None:
    run_dir, pf = run
    data = collected(run_dir, experiment, pf)
    assert report.build_report(data) == report.build_report(data)
    assert report.render_markdown(report.build_report(data)) == report.render_markdown(
        report.build_report(data)
    )


# --- runs without a build, without matplotlib, with a failed preflight --------------------------


def test_a_model_run_without_build_json(tmp_path, workspace, experiment, prompts) -> None:
    run_dir = tmp_path / "runs" / "phase40" / "model-abc"
    pf = write_run(run_dir, experiment, scored_run(prompts), built=False, workspace=workspace)
    r = made(run_dir, experiment, pf)
    assert r.training is None
    md = report.render_markdown(r)
    assert "Not built by routegate (a `--model` or `--server-url` run)" in md
    assert "--model /models/qwen3-8b-phase40" in r.repeat
    assert dict(table(md, "setting |"))["model folder"] == "/models/qwen3-8b-phase40"
    assert len(table(md, "id |")) == len(prompts)


def test_without_matplotlib_the_chart_is_skipped(
    run, experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    run_dir, pf = run
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.png").write_bytes(b"an old chart")
    with pytest.raises(report.ChartUnavailable):
        report.render_chart(made(run_dir, experiment, pf))
    written = report.write_report(made(run_dir, experiment, pf), out)
    assert written.chart is None and not (out / "results.png").exists()
    assert "matplotlib is not installed" in written.chart_skipped
    md = written.markdown.read_text()
    assert "Chart skipped: matplotlib is not installed" in md
    assert json.loads(written.json.read_text())["chart"]["skipped"] == written.chart_skipped


def test_a_build_forced_past_a_failed_preflight_fails(
    tmp_path, workspace, experiment, prompts
) -> None:
    run_dir = tmp_path / "runs" / "phase40" / "forced"
    pf = write_run(
        run_dir,
        experiment,
        scored_run(prompts, value=lambda p, i, s, t: 1.0),
        workspace=workspace,
        preflight_failed=True,
        forced=True,
    )
    r = made(run_dir, experiment, pf)
    assert r.thresholds_verdict == "PASS"
    assert r.verdict == "FAIL"
    assert any("--force" in reason for reason in r.verdict_reasons)
    md = report.render_markdown(r)
    assert "thinking (eval settings): 1159 targets start with <think>" in md
    assert "At build time: FAILED, built anyway (--force)" in md


def test_each_failed_check_links_to_what_ignoring_it_cost(
    tmp_path, workspace, experiment, prompts, monkeypatch
) -> None:
    """The confound study's costs: the failed thinking check's line says what ignoring it
    cost, and a table lists each measured check with this run's verdict on it. The shipped
    measurement is shown (naming the experiment that measured it) until the experiment's own
    study writes one in its workspace."""
    run_dir = tmp_path / "runs" / "phase40" / "forced"
    pf = write_run(
        run_dir, experiment, scored_run(prompts), workspace=workspace, preflight_failed=True
    )
    measured = CheckCosts(
        experiment="smol-route",
        command="python -m pipeline study confounds --experiment smol-route --seeds 3",
        written="2026-12-05T10:00:00+00:00",
        trainings=3,
        costs=(
            CheckCost("thinking", "thinking", "on", "extended", 224, -0.25, -0.33, -0.18, "p"),
            CheckCost("masking", "masked", "masked", "extended", 224, -0.8, -0.85, -0.75, "t"),
        ),
    )
    monkeypatch.setattr(check_costs, "SHIPPED_COSTS", measured.write(tmp_path / "shipped.json"))
    md = report.render_markdown(made(run_dir, experiment, pf))
    assert (
        "- thinking (eval settings): 1159 targets start with <think>; ignoring it cost -25.0 "
        "[-33.0, -18.0] on smol-route's extended prompts (p; below)"
    ) in md
    assert table(md, "check | here") == [
        ["thinking", "FAILED", "thinking", "extended (224)", "-25.0 [-33.0, -18.0]", "p"],
        ["masking", "-", "masked", "extended (224)", "-80.0 [-85.0, -75.0]", "t"],
    ]
    assert "shipped.json" in md and "--experiment smol-route --seeds 3" in md
    # --seeds 3 is a most: a collapse stops at one training
    assert "; up to 3 trainings per row, each row stopping at the first that decides it)" in md

    own = dataclasses.replace(measured, experiment="phase40", costs=measured.costs[1:])
    own.write(workspace.check_costs("phase40"))
    md = report.render_markdown(made(run_dir, experiment, pf))
    assert "; ignoring it cost" not in md  # the experiment's own study measured no thinking row
    assert table(md, "check | here") == [
        ["masking", "-", "masked", "extended (224)", "-80.0 [-85.0, -75.0]", "t"]
    ]


def test_a_stale_preflight_is_shown_not_counted(tmp_path, workspace, experiment, prompts) -> None:
    run_dir = tmp_path / "runs" / "phase40" / "stale"
    other = dataclasses.replace(experiment, description="changed since")
    write_run(
        run_dir,
        other,
        scored_run(prompts, value=lambda p, i, s, t: 1.0),
        built=False,
        workspace=workspace,
    )
    pf = preflight.write_report(
        experiment, [Finding("disk", "runs", "fail", "0.1 GB free", "free space")], workspace
    )
    r = made(run_dir, other, pf)
    assert r.verdict == "PASS"
    assert r.preflight is not None
    assert not r.preflight["current"] and not r.preflight["failed_for_this_run"]
    assert any("not counted" in w for w in r.warnings)
    current = made(
        run_dir,
        other,
        preflight.write_report(other, [Finding("disk", "runs", "fail", "x")], workspace),
    )
    assert current.verdict == "FAIL"


def test_pending_thresholds(tmp_path, workspace, prompts) -> None:
    tiny = load_experiment("tiny")
    tiny = dataclasses.replace(tiny, thresholds=dataclasses.replace(tiny.thresholds, pending=True))
    settings = Settings(1, (0.0,))
    run_dir = tmp_path / "runs" / "tiny" / "x"
    pf = write_run(
        run_dir,
        tiny,
        scored_run(prompts, settings),
        settings=settings,
        built=False,
        workspace=workspace,
    )
    r = made(run_dir, tiny, pf)
    assert r.verdict == "PENDING"
    md = report.render_markdown(r)
    assert "pending (met)" in md
    assert "One temperature only (T=0)" in md


# --- comparing runs and the command line -------------------------------------------------------


def test_compare_shows_category_and_prompt_differences(
    tmp_path, workspace, experiment, prompts, capsys
) -> None:
    a_dir = tmp_path / "runs" / "phase40" / "a"
    b_dir = tmp_path / "runs" / "phase40" / "b"
    write_run(a_dir, experiment, scored_run(prompts), workspace=workspace)

    # the first domain prompt that called the wrong tool (0.1) gets it right in run B
    fixed = next(
        p.id
        for i, p in enumerate(prompts)
        if p.category == "domain" and chosen_value(p, i, 0, 0.0) == 0.1
    )

    def better(p: EvalPrompt, i: int, s: int, t: float) -> float:
        return 1.0 if p.id == fixed else chosen_value(p, i, s, t)

    pf = write_run(b_dir, experiment, scored_run(prompts, value=better), workspace=workspace)
    a, b = made(a_dir, experiment, pf), made(b_dir, experiment, pf)
    cmp = report.compare(a, b)
    domain = next(c for c in cmp["categories"] if c["category"] == "domain")
    lines = raw_lines(a_dir), raw_lines(b_dir)
    means = [
        sum(v := [x["value"] for x in ls if x["category"] == "domain" and x["temperature"] == 0])
        / len(v)
        for ls in lines
    ]
    assert domain["a"] == pytest.approx(means[0]) and domain["b"] == pytest.approx(means[1])
    assert domain["delta"] == pytest.approx(means[1] - means[0])
    changed = [p for p in cmp["prompts"] if p["delta"] or p["calls_changed"]]
    assert [p["id"] for p in changed] == [fixed]
    assert changed[0]["a"] == pytest.approx(0.1) and changed[0]["b"] == 1.0
    assert changed[0]["calls_changed"]
    text = report.render_compare(cmp)
    row = next(ln.split() for ln in text.splitlines() if ln.startswith("  domain "))
    assert row == ["domain", f"{means[0]:.3f}", f"{means[1]:.3f}", f"{means[1] - means[0]:+.3f}"]
    assert f"prompts: 1 of {len(prompts)} differ in score or extracted calls" in text
    line = next(ln for ln in text.splitlines() if ln.startswith(f"  {fixed} "))
    assert line.split()[1:4] == ["0.10", "1.00", "+0.90"]
    assert "run_command(command='ls') (all 2 samples)  ->  " in line

    # the command line prints the same
    args = ["--compare", str(a_dir), str(b_dir), "--experiment", "phase40"]
    assert report_cli.main(args) == 0
    printed = capsys.readouterr().out
    assert f"prompts: 1 of {len(prompts)} differ" in printed

    # and the same from the two runs' results.json, read back (run folders not needed)
    a_json = report.write_report(a, tmp_path / "report-a", chart=False).json
    b_json = report.write_report(b, tmp_path / "report-b", chart=False).json
    assert report_cli.main(["--compare", str(a_json), str(b_json)]) == 0
    assert capsys.readouterr().out == printed


def test_the_command_line_writes_the_report(run, tmp_path: Path, capsys) -> None:
    run_dir, _ = run
    out = tmp_path / "cli"
    code = report_cli.main(
        [str(run_dir), "--out", str(out), "--no-chart", "--workdir", str(tmp_path)]
    )
    assert code == 1  # phase40's domain is below its threshold: FAIL
    printed = capsys.readouterr().out
    assert printed.startswith("phase40: FAIL")
    assert (out / "results.md").is_file() and (out / "results.json").is_file()
    assert "Chart skipped: turned off (--no-chart)" in (out / "results.md").read_text()
    assert report_cli.main([str(tmp_path / "nowhere")]) == 2
    assert "summary.json does not exist" in capsys.readouterr().err


def test_report_run_writes_into_the_workspace_with_its_chart(run, experiment, workspace) -> None:
    run_dir, _ = run
    written = report.report_run(run_dir, experiment, workspace)
    folder = workspace.reports("phase40")
    assert report.report_dir("phase40", workspace) == folder
    assert written.markdown == folder / "results.md" and written.json == folder / "results.json"
    # the preflight.json of that workspace is the one read
    assert written.report.preflight is not None
    assert written.report.preflight["path"] == str(workspace.preflight_report("phase40"))
    assert written.chart == folder / "results.png"
    assert (folder / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = written.markdown.read_text()
    assert "![per-category score, 95% interval, threshold and baseline](results.png)" in md
    assert written.verdict.outcome == written.report.verdict == "FAIL"
    assert written.verdict.exit_code == 1


def test_unanswered_requests_make_an_error(tmp_path, workspace, experiment, prompts) -> None:
    scored = scored_run(prompts, value=lambda p, i, s, t: 1.0)
    first = scored[0]
    scored[0] = dataclasses.replace(
        first, record=dataclasses.replace(first.record, error="connection refused")
    )
    run_dir = tmp_path / "runs" / "phase40" / "error"
    pf = write_run(run_dir, experiment, scored, built=False, workspace=workspace)
    r = made(run_dir, experiment, pf)
    assert r.verdict == r.thresholds_verdict == "ERROR"
    assert list(r.verdict_reasons) == [
        f"1 of {len(scored)} request(s) got no usable answer: connection refused"
    ]
    assert any("T=0: 1 request(s) got no answer" in w for w in r.warnings)
    args = [str(run_dir), "--out", str(tmp_path / "cli"), "--no-chart", "--workdir", str(tmp_path)]
    assert report_cli.main(args) == 3


def test_the_verdict_can_rest_on_non_inferiority_against_the_baseline_run(
    tmp_path, workspace, experiment, prompts
) -> None:
    base_dir = tmp_path / "runs" / "phase40" / "base"
    write_run(base_dir, experiment, scored_run(prompts), workspace=workspace)
    deciding = dataclasses.replace(
        experiment, decision=Decision(rule="non-inferiority", margins={"overall": 0.05})
    )
    run_dir = tmp_path / "runs" / "phase40" / "same"
    pf = write_run(run_dir, deciding, scored_run(prompts), workspace=workspace,
                   baseline_run=base_dir)  # fmt: skip
    r = made(run_dir, deciding, pf)
    row = r.non_inferiority["overall"]
    # the same answers on the seed set's 27 scored prompts: a 5-point drop is not ruled out
    assert (row["decision"], row["difference"], row["n"]) == ("UNDECIDED", 0.0, 27)
    assert r.verdict == "FAIL" and r.decide == "non-inferiority"
    assert r.verdict_reasons[0].startswith("not shown non-inferior to the baseline run: overall")
    assert f"{row['prompts_needed']} prompts would decide" in r.verdict_reasons[0]
    md = report.render_markdown(r)
    assert "## Can it replace the baseline run? (non-inferiority)" in md
    assert table(md, "category | difference | 95% lower bound")[0][-1].startswith("UNDECIDED (")


def test_non_inferiority_without_a_baseline_run_is_bad_input(experiment, prompts) -> None:
    deciding = dataclasses.replace(
        experiment, decision=Decision(rule="non-inferiority", margin=0.05)
    )
    with pytest.raises(ExperimentError, match="--decide non-inferiority needs a baseline run"):
        evaluate.summarize(deciding, scored_run(prompts), SETTINGS, categories=CATEGORIES)


def test_pass_k_counts_the_prompts_whose_every_sample_was_right(run, experiment) -> None:
    run_dir, pf = run
    summary = collected(run_dir, experiment, pf).summary
    raw = raw_lines(run_dir)
    for key, row in summary.temperatures.items():
        lines = [x for x in raw if f"{x['temperature']:g}" == key]
        for name, cat in row.categories.items():
            if name == "overall":
                continue
            ids = {x["prompt_id"] for x in lines if x["category"] == name}
            every = [all(x["value"] == 1.0 for x in lines if x["prompt_id"] == i) for i in ids]
            assert cat.pass_all == pytest.approx(sum(every) / len(every)), (key, name)
    assert summary.at(0.7).categories["text_tools"].pass_all == 0.0  # the second sample is 0
    md = report.render_markdown(made(run_dir, experiment, pf))
    assert "pass^2 (all samples right)" in md


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ("Could you fetch the current contents of a.py?", "polite"),
        ("Please run the tests.", "polite"),
        ("What exactly does a.py contain right now?", "question"),
        ("I need the source of a.py in front of me.", "want"),
        ("Let's start by looking at a.csv in full.", "want"),
        ("Bring a.py up on screen, all of it.", "imperative"),
    ],
)
def test_phrasing_families(text: str, family: str) -> None:
    assert phrasing_family(text) == family


def test_robustness_groups_rephrasings_and_finds_the_largest_family_gap() -> None:
    def line(pid: str, text: str, value: float) -> dict[str, Any]:
        return {"prompt_id": pid, "category": "text_tools", "text": text, "value": value,
                "temperature": 0.0, "sample": 0,
                "expected": [{"tool": pid.rpartition("-")[0]}]}  # fmt: skip

    scores = [
        *(line(f"read_file-0{i}", f"Could you show file {i}?", 1.0) for i in range(1, 6)),
        *(line(f"git_log-0{i}", f"Show the last {i} commits.", float(i > 2)) for i in range(1, 6)),
        *(line(f"hover-0{i}", f"What type is x{i}?", 0.0) for i in range(1, 6)),
        line("seedlike", "Run it.", 1.0),
    ]
    rob = robustness(scores, 0.0)
    assert rob is not None
    by_group = {g["group"]: g for g in rob["groups"]}
    assert set(by_group) == {"read_file", "git_log", "hover"}  # "seedlike" has no number
    assert [by_group[k]["status"] for k in ("read_file", "git_log", "hover")] == [
        "all", "some", "none"]  # fmt: skip
    assert by_group["git_log"]["wrong"] == ["git_log-01", "git_log-02"]
    assert rob["counts"] == {"all": 1, "some": 1, "none": 1}
    assert rob["families"]["polite"] == {"prompts": 5, "right": 5, "share": 1.0}
    assert rob["gap"] == {"best": "polite", "worst": "question", "gap": 1.0}
    assert robustness([line("text-1", "Run it.", 1.0)], 0.0) is None
    # numbered alike but asking for other tools (the seed set's text-01..03): no group
    other = [{**line(f"text-0{i}", "Run it.", 1.0), "expected": [{"tool": t}]}
             for i, t in enumerate(("read_file", "write_file"))]  # fmt: skip
    assert robustness(other, 0.0) is None
