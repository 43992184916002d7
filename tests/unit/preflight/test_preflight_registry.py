"""The preflight's registry, context and runner on the tiny experiment (no network).

A small data folder keeps renders fast; its counts fail the data check, which is one more
finding among the ones these tests look at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.records import RecordError
from pipeline.core.workspace import Workspace
from pipeline.data import SPLITS, DataError, ensure_data
from pipeline.definitions.experiment import Experiment, load_experiment, with_overrides
from pipeline.models.refs import ModelError
from pipeline.preflight import (
    CHECKS,
    NEEDS,
    REGISTRY,
    Check,
    Context,
    Finding,
    PreflightReport,
    RegistryError,
    read_report,
    run_checks,
    run_preflight,
    write_report,
)
from pipeline.preflight import context as context_module
from pipeline.preflight.context import Need
from pipeline.preflight.runner import expected, finding_for, in_order, run_check


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    tiny = load_experiment("tiny")
    source = ensure_data(tiny, workspace=Workspace.at())
    folder = tmp_path_factory.mktemp("data")
    for split in SPLITS:
        lines = (source / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:12]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return with_overrides(tiny, data=str(folder))


def _context(experiment: Experiment, tmp_path: Path) -> Context:
    return Context(experiment, Workspace.at(tmp_path))


def test_every_check_yields_its_declared_subjects(small: Experiment, tmp_path: Path) -> None:
    ctx = _context(small, tmp_path)
    findings = run_checks(ctx)
    assert [(f.check, f.subject) for f in findings] == expected(ctx)
    assert len({c.name for c in REGISTRY}) == len(REGISTRY)
    by_check = {c.name: [f for f in findings if f.check == c.name] for c in REGISTRY}
    assert len(by_check["special-tokens"]) == 2 * len(small.tokens)
    assert [f.subject for f in by_check["tool-trained"]] == list(ctx.catalog.names())
    assert [f.verdict for f in by_check["data"]] == ["fail", "fail"]  # 12 examples each
    assert by_check["load"] == [
        Finding("load", "base tokenizer", "pass", "loaded"),
        Finding("load", "reference tokenizer", "pass", "loaded"),
        Finding("load", "data", "pass", "loaded"),
    ]


def test_each_input_loads_once_and_only_when_asked(
    small: Experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_side, real_splits = context_module.load_side, context_module.load_splits

    def load_side(experiment, name, workspace):
        calls.append(name)
        return real_side(experiment, name, workspace)

    def load_splits(experiment, workspace):
        calls.append("data")
        return real_splits(experiment, workspace)

    monkeypatch.setattr(context_module, "load_side", load_side)
    monkeypatch.setattr(context_module, "load_splits", load_splits)
    ctx = _context(small, tmp_path)
    run_check(CHECKS["disk"], ctx)
    assert calls == []
    run_check(CHECKS["masking"], ctx)
    assert calls == ["data"]
    assert ctx.rendered("base", "train") is ctx.rendered("base", "train")
    run_checks(ctx)
    assert sorted(calls) == ["base", "data", "reference"]


def test_disk_checks_the_workspace_runs_root(small: Experiment, tmp_path: Path) -> None:
    ctx = _context(small, tmp_path)
    (finding,) = run_check(CHECKS["disk"], ctx)
    assert finding.subject == str(tmp_path.resolve() / "runs")
    assert finding.verdict == "pass" and str(tmp_path.resolve()) in finding.figure


@pytest.mark.parametrize("need", list(NEEDS))
def test_an_input_that_does_not_load_fails_once_and_skips_what_needs_it(
    small: Experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, need: Need
) -> None:
    """Every check declares all it needs: with any input missing, none raises."""
    real_side = context_module.load_side

    def load_side(experiment, name, workspace):
        if name == need:
            raise ModelError(f"model folder /nowhere/{name} does not exist")
        return real_side(experiment, name, workspace)

    def load_splits(experiment, workspace):
        raise DataError("data folder /nowhere does not exist")

    monkeypatch.setattr(context_module, "load_side", load_side)
    if need == "data":
        monkeypatch.setattr(context_module, "load_splits", load_splits)
    ctx = _context(small, tmp_path)
    findings = run_checks(ctx)
    assert [(f.check, f.subject) for f in findings] == expected(ctx)
    (load,) = [f for f in findings if f.failed and f.check == "load"]
    assert load.subject == NEEDS[need] and "/nowhere" in load.detail
    for check in REGISTRY:
        verdicts = {f.verdict for f in findings if f.check == check.name}
        if need in check.needs:
            assert verdicts == {"skip"}, check.name
            skip = next(f for f in findings if f.check == check.name)
            assert skip.figure == f"not run: the {NEEDS[need]} did not load (see load)"
        else:
            assert "skip" not in verdicts, check.name


def test_a_check_that_strays_from_its_subjects_is_a_bug(small: Experiment, tmp_path: Path):
    stray = Check("stray", (), lambda ctx: [Finding("stray", "b", "pass", "")], lambda ctx: ["a"])
    ctx = _context(small, tmp_path)
    with pytest.raises(RegistryError, match=r"declares subjects \['a'\]"):
        run_check(stray, ctx)
    with pytest.raises(RegistryError, match="no subject"):
        finding_for(CHECKS["disk"], "elsewhere", ctx)


def test_in_order_sorts_and_names_what_is_missing(small: Experiment, tmp_path: Path) -> None:
    ctx = _context(small, tmp_path)
    disk = run_check(CHECKS["disk"], ctx)
    loads = run_check(CHECKS["load"], ctx)
    ordered, missing = in_order([*disk, *reversed(loads)], ctx)
    assert ordered == [*loads, *disk]
    assert missing == [k for k in expected(ctx) if k[0] not in ("load", "disk")]


def test_the_report_goes_to_the_workspace(small: Experiment, tmp_path: Path) -> None:
    workspace = Workspace.at(tmp_path)
    findings = run_preflight(small, workspace=workspace)
    path = write_report(small, findings, workspace)
    assert path == tmp_path.resolve() / "reports" / small.name / "preflight.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    assert (report["kind"], report["version"]) == ("preflight", 1)
    assert set(report) == {
        "kind", "version", "experiment", "fingerprint", "base", "reference", "passed", "findings",
    }  # fmt: skip
    assert report["passed"] is False and report["fingerprint"] == small.fingerprint()
    assert read_report(path) == PreflightReport.of(small, findings)
    assert report["findings"][0] == {
        "check": "load",
        "subject": "base tokenizer",
        "verdict": "pass",
        "figure": "loaded",
        "detail": "",
    }


@pytest.mark.parametrize(
    "content",
    [
        '{"experiment": "x", "passed": true}',
        '{"kind": "build", "version": 1}',
        "[]",
    ],
    ids=["lacking fields", "another kind", "not an object"],
)
def test_a_preflight_report_that_is_not_one_is_named(content: str, tmp_path: Path) -> None:
    path = tmp_path / "preflight.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RecordError, match=f"{path}.*run `python -m pipeline preflight` again"):
        read_report(path)
    assert read_report(tmp_path / "absent.json") is None


def test_a_preflight_report_from_before_it_was_a_record_still_reads(
    small: Experiment, tmp_path: Path
) -> None:
    """Workspaces hold preflight.json files written without kind and version: same fields."""
    findings = run_preflight(small, workspace=Workspace.at(tmp_path))
    legacy = PreflightReport.of(small, findings).to_json()
    del legacy["kind"], legacy["version"]
    path = tmp_path / "preflight.json"
    path.write_text(json.dumps(legacy), encoding="utf-8")
    assert read_report(path) == PreflightReport.of(small, findings)
