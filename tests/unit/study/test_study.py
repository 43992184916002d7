"""The confound study: each injection does what it says and the real preflight catches it; the
table and rows; the door's bad input; and (slow) the study end to end on a short tiny run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.cli.study import main as study_main
from pipeline.core.errors import EXIT_BAD_INPUT
from pipeline.core.workspace import Workspace
from pipeline.data import SPLITS, ensure_data, message_calls, read_split, write_jsonl
from pipeline.definitions.experiment import SHARED, Experiment, load_experiment, with_overrides
from pipeline.gate import Invocation
from pipeline.preflight import CHECKS, Context, Finding, load_side, run_checks, run_preflight
from pipeline.preflight.checks_calls import stored_syntax
from pipeline.study import BY_NAME, CLEAN, CONFOUNDS, ConfoundRow, chosen, read_rows, run_study
from pipeline.study.confounds import pinned, study_paths
from pipeline.study.inject import OTHER_SYSTEM_PROMPT, BaseTemplate, Clean, Skipped
from pipeline.study.records import write_rows
from pipeline.study.table import markdown

CAUGHT = [c.name for c in CONFOUNDS if c.name != "thinking"]
"""The confounds that apply to the tiny experiment (its template has no think block)."""


def _stamps(folder: Path | None) -> dict[str, int]:
    """Each file's modification time in ns: unchanged when nothing rewrote the model."""
    assert folder is not None
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def _quiet(_: str) -> None:
    pass


def _failed(findings: list[Finding]) -> set[str]:
    return {f.check for f in findings if f.failed}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Clean:
    checkout = Workspace.at()
    tiny = pinned(load_experiment("tiny"), checkout)
    base = BaseTemplate.of(load_side(tiny, "base", checkout))
    return Clean(tiny, ensure_data(tiny, workspace=checkout), base)


@pytest.fixture(scope="module")
def clean_findings(clean: Clean, tmp_path_factory: pytest.TempPathFactory) -> list[Finding]:
    return run_preflight(clean.experiment, workspace=Workspace(tmp_path_factory.mktemp("clean")))


def _inject(clean: Clean, name: str, out: Path) -> Experiment:
    injected = BY_NAME[name].inject(clean, out)
    assert isinstance(injected, Experiment), injected
    return injected


# --- each injection, judged by the real preflight -------------------------------------------


@pytest.mark.parametrize("name", CAUGHT)
def test_the_preflight_catches_each_confound_and_passes_the_clean_data(
    name: str, clean: Clean, clean_findings: list[Finding], tmp_path: Path
) -> None:
    check = BY_NAME[name].catches
    assert check in CHECKS, f"{name} names no preflight check"
    before = {s: (clean.data / f"{s}.jsonl").read_bytes() for s in SPLITS}
    injected = _inject(clean, name, tmp_path / "data")
    findings = run_preflight(injected, workspace=Workspace(tmp_path))
    assert check in _failed(findings), [f.message() for f in findings if f.check == check]
    assert check not in _failed(clean_findings)
    assert {s: (clean.data / f"{s}.jsonl").read_bytes() for s in SPLITS} == before, (
        "an injection wrote into the clean data"
    )


def test_the_clean_tiny_data_passes_every_check_the_study_injects(
    clean_findings: list[Finding],
) -> None:
    assert not _failed(clean_findings) & {c.catches for c in CONFOUNDS}


def test_syntax_writes_every_call_in_the_syntax_the_base_does_not_read(
    clean: Clean, tmp_path: Path
) -> None:
    assert clean.base.parser == "json_tools"
    injected = _inject(clean, "syntax", tmp_path / "data")
    assert injected.data.syntax == "xml"
    stored = {
        stored_syntax(m)
        for e in read_split(tmp_path / "data", "train")
        for m in e.messages
        if m["role"] == "assistant"
    }
    assert stored == {"xml", None}  # None: the answers without a call


def test_masked_leaves_no_call_in_a_trained_turn(clean: Clean, tmp_path: Path) -> None:
    injected = _inject(clean, "masked", tmp_path / "data")
    assert injected.train.mask_prompt
    for split in SPLITS:
        examples = read_split(tmp_path / "data", split)
        assert len(examples) == len(read_split(clean.data, split))
        assert all(not message_calls(e.messages[-1]) for e in examples)
        assert any(message_calls(m) for e in examples for m in e.messages)


def test_system_prompt_trains_under_another_prompt(clean: Clean, tmp_path: Path) -> None:
    _inject(clean, "system-prompt", tmp_path / "data")
    for split in SPLITS:
        assert {e.messages[0]["content"] for e in read_split(tmp_path / "data", split)} == {
            OTHER_SYSTEM_PROMPT
        }


def test_leak_adds_the_eval_prompts_to_train_only(clean: Clean, tmp_path: Path) -> None:
    _inject(clean, "leak", tmp_path / "data")
    added = len(read_split(tmp_path / "data", "train")) - len(read_split(clean.data, "train"))
    assert added > 20  # the seed set's prompts with stated arguments
    assert len(read_split(tmp_path / "data", "valid")) == len(read_split(clean.data, "valid"))


def test_thinking_is_skipped_with_its_reason_where_the_template_has_no_think_block(
    clean: Clean, tmp_path: Path
) -> None:
    assert not clean.base.thinks
    skipped = BY_NAME["thinking"].inject(clean, tmp_path / "data")
    assert isinstance(skipped, Skipped)
    assert "no think block" in skipped.reason
    assert not (tmp_path / "data").exists()


QWEN3 = SHARED / "models" / "qwen3-8b-tokenizer"


@pytest.mark.skipif(not QWEN3.is_dir(), reason=f"real Qwen3 tokenizer not found at {QWEN3}")
def test_thinking_on_qwen3_fails_the_thinking_check_that_phase40_passes(tmp_path: Path) -> None:
    phase40 = with_overrides(load_experiment("phase40"), base_model=str(QWEN3))
    full = ensure_data(phase40, workspace=Workspace(tmp_path))
    small = tmp_path / "small"  # the check reads every target: 40 render in a blink
    for split in SPLITS:
        write_jsonl(small / f"{split}.jsonl", [e.record for e in read_split(full, split)[:40]])
    phase40 = with_overrides(phase40, data=str(small))
    base = BaseTemplate.of(load_side(phase40, "base", Workspace(tmp_path)))
    assert base.thinks
    injected = BY_NAME["thinking"].inject(Clean(phase40, small, base), tmp_path / "unused")
    assert isinstance(injected, Experiment)
    assert injected.eval.enable_thinking is True and "<think>" in injected.eval.stop
    assert injected.data == phase40.data, "only eval settings change"

    def thinking(experiment: Experiment) -> set[str]:
        return _failed(run_checks(Context(experiment, Workspace(tmp_path)), [CHECKS["thinking"]]))

    assert thinking(phase40) == set()
    assert thinking(injected) == {"thinking"}


# --- rows, table, door ----------------------------------------------------------------------


def _row(name: str, overall: float, model: Path | None = None) -> ConfoundRow:
    return ConfoundRow(
        confound=name,
        preflight_failed=("call-syntax",) if name != CLEAN else (),
        overall=overall,
        categories={"git": overall, "lsp": 0.5},
        train_loss=0.5,
        val_loss=0.75,
        seconds=90.0,
        model=model,
    )


def test_rows_round_trip_through_confounds_json(tmp_path: Path) -> None:
    rows = [
        _row(CLEAN, 0.5, model=tmp_path / "m"),
        ConfoundRow(confound="thinking", skipped="no think block"),
    ]
    write_rows(rows, tmp_path / "confounds.json")
    raw = json.loads((tmp_path / "confounds.json").read_text())
    assert [r["confound"] for r in raw] == [CLEAN, "thinking"]
    assert {"preflight_failed", "overall", "categories", "train_loss", "seconds"} <= raw[0].keys()
    assert read_rows(tmp_path / "confounds.json") == rows


def test_the_table_calls_out_rows_at_most_half_the_clean_overall() -> None:
    text = markdown(
        "tiny",
        [
            _row(CLEAN, 0.5),
            _row("syntax", 0.25),
            _row("masked", 0.26),
            ConfoundRow(confound="thinking", skipped="no think block"),
        ],
    )
    head = "| confound | preflight failed | overall | git | lsp | train loss | val loss | minutes |"
    assert head in text
    assert "| syntax | call-syntax | 0.25 (collapsed) | 0.25 | 0.50 | 0.500 | 0.750 | 1.5 |" in text
    assert "| masked | call-syntax | 0.26 |" in text
    assert "**syntax**: overall 0.25 is at most half the clean row's 0.50" in text
    assert "**masked**" not in text
    assert "| thinking | skipped: no think block |" in text


def test_only_keeps_the_registry_order_and_takes_commas() -> None:
    assert [c.name for c in chosen(["leak", "syntax"])] == ["syntax", "leak"]
    assert [c.name for c in chosen(["masked,syntax"])] == ["syntax", "masked"]
    assert chosen(None) == CONFOUNDS


def test_an_unknown_confound_is_bad_input_naming_it_and_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert study_main(["confounds", "--only", "syntax", "nope"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: --only nope: no such confound (known: syntax, masked, ")


def test_an_unknown_study_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert study_main(["variance"]) == EXIT_BAD_INPUT
    assert "error: unknown study 'variance' (known: confounds)" in capsys.readouterr().err


def test_a_crash_keeps_every_finished_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """confounds.json is written after each row: a build that crashes on the second row leaves
    the clean row on disk (the real preflight runs; build and eval are stand-ins)."""
    from pipeline.study import confounds

    def category(mean: float) -> SimpleNamespace:
        return SimpleNamespace(mean=mean)

    summary = SimpleNamespace(
        verdict="PASS",
        verdict_reasons=(),
        seconds=30.0,
        decision=lambda: SimpleNamespace(
            categories={"overall": category(0.5), "git": category(0.25)}
        ),
    )
    built: list[Experiment] = []

    def model_under_test(invocation: Invocation, **_: object) -> SimpleNamespace:
        if built:
            raise RuntimeError("the second build crashed")
        built.append(invocation.experiment)
        train = SimpleNamespace(train_loss=1.5, val_loss=2.5)
        record = SimpleNamespace(seconds=90.0, stages=SimpleNamespace(train=train))
        result = SimpleNamespace(key="k", quantized=tmp_path / "q", record=record)
        return SimpleNamespace(built=result)

    monkeypatch.setattr(confounds, "model_under_test", model_under_test)
    monkeypatch.setattr(confounds, "evaluate", lambda *a, **k: SimpleNamespace(summary=summary))
    workspace = Workspace(tmp_path)
    with pytest.raises(RuntimeError, match="second build"):
        run_study(load_experiment("tiny"), workspace=workspace, only=["masked"], log=_quiet)
    json_path, md_path = study_paths(load_experiment("tiny"), workspace)
    (row,) = read_rows(json_path)
    assert row.confound == CLEAN and row.overall == 0.5 and row.categories == {"git": 0.25}
    assert (row.train_loss, row.val_loss, row.seconds) == (1.5, 2.5, 120.0)
    assert "| clean | none | 0.50 | 0.25 | 1.500 | 2.500 | 2.0 |" in md_path.read_text()


# --- end to end (trains and serves) ---------------------------------------------------------

SHORT_TRAIN = {
    "iters": 8,
    "batch_size": 2,
    "save_every": 4,
    "steps_per_report": 2,
    "steps_per_eval": 1000,  # validation at the first and last iteration only
    "val_batches": 2,
    "max_seq_length": 2048,
}


@pytest.mark.slow
def test_the_study_writes_clean_and_syntax_rows_and_a_rerun_is_a_cache_hit(
    tmp_path: Path,
) -> None:
    tiny = load_experiment("tiny")
    short = dataclasses.replace(
        tiny,
        name="tiny-study",
        train=dataclasses.replace(tiny.train, **SHORT_TRAIN),
        eval=dataclasses.replace(tiny.eval, max_tokens=32),
    )
    experiment = with_overrides(short, data=str(ensure_data(tiny, workspace=Workspace.at())))
    workspace = Workspace(tmp_path)

    started = time.perf_counter()
    rows = run_study(experiment, workspace=workspace, only=["syntax"], log=_quiet)
    first = time.perf_counter() - started
    assert [r.confound for r in rows] == [CLEAN, "syntax"]
    clean, syntax = rows
    assert "call-syntax" in syntax.preflight_failed
    assert "call-syntax" not in clean.preflight_failed
    for row in rows:
        assert row.overall is not None and 0.0 <= row.overall <= 1.0
        assert row.categories and row.train_loss is not None and row.val_loss is not None
        assert row.seconds > 0
    json_path, md_path = study_paths(experiment, workspace)
    assert read_rows(json_path) == rows
    assert "| syntax | " in md_path.read_text()

    # a cache hit is what the rerun did, not how long it took (timing depends on the machine)
    weights = {row.confound: _stamps(row.model) for row in rows}
    said: list[str] = []
    started = time.perf_counter()
    again = run_study(experiment, workspace=workspace, only=["syntax"], log=said.append)
    second = time.perf_counter() - started
    print(f"study clean + syntax: first {first:.1f} s, rerun {second:.1f} s")
    assert again == rows
    assert sum("[build] cache hit" in line for line in said) == 2, said
    assert sum("[study] reusing the eval" in line for line in said) == 2, said
    assert {row.confound: _stamps(row.model) for row in again} == weights
