"""The confound study: each injection does what it says and the real preflight catches it; the
table and rows; the door's bad input; and (slow) the study end to end on a short tiny run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.builder import plan
from pipeline.cli.study import main as study_main
from pipeline.core.errors import EXIT_BAD_INPUT, BadInput, Fault
from pipeline.core.workspace import Workspace
from pipeline.data import SPLITS, ensure_data, message_calls, read_split, write_jsonl
from pipeline.definitions.experiment import (
    OVERALL,
    PROMPTS_DIR,
    SHARED,
    Experiment,
    load_experiment,
    with_overrides,
)
from pipeline.eval.metrics import (
    PairedRow,
    PromptValue,
    prompts_to_decide,
    t_quantile,
    trainings_to_decide,
)
from pipeline.gate import Invocation, ModelUnderTest
from pipeline.models import smollm2
from pipeline.models.refs import smollm2_variant
from pipeline.preflight import CHECKS, Context, Finding, load_side, run_checks, run_preflight
from pipeline.preflight.checks_calls import stored_syntax
from pipeline.preflight.costs import CheckCosts
from pipeline.study import BY_NAME, CLEAN, CONFOUNDS, ConfoundRow, chosen, read_rows, run_study
from pipeline.study.confounds import pinned, prompt_sets, study_paths, training_seeds
from pipeline.study.decide import compare, decision
from pipeline.study.inject import (
    OTHER_SYSTEM_PROMPT,
    BaseTemplate,
    Clean,
    JudgedTwice,
    Skipped,
    thinking,
    thinking_disagrees,
    thinking_on_think_variant,
)
from pipeline.study.records import Comparison, SetScore, write_rows
from pipeline.study.table import markdown, said, summary, summary_set

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


def _smollm2_clean(tmp_path: Path, base_ref: str = "smollm2:json") -> Clean:
    """smol-route's clean inputs, its base's template as routegate builds it (no model needed:
    the thinking injections read the template and the reference, not the data or weights)."""
    variant = smollm2_variant(base_ref)
    assert variant is not None
    template = smollm2.chat_template(variant[0], think=variant[1])
    base = BaseTemplate(base_ref, "json_tools", template)
    return Clean(load_experiment("smol-route"), tmp_path / "clean-data", base)


def test_thinking_on_smollm2_trains_its_think_variant_and_judges_it_twice(
    tmp_path: Path,
) -> None:
    clean = _smollm2_clean(tmp_path)
    assert not clean.base.thinks
    twice = thinking_on_think_variant(clean, tmp_path / "data")
    assert isinstance(twice, JudgedTwice)
    agreeing, disagreeing = twice.agreeing, twice.disagreeing
    assert agreeing.models.base == "smollm2:json-think"
    assert agreeing.models.reference == clean.experiment.models.reference
    assert clean.experiment.train.adapter is not None and agreeing.train.adapter is None, (
        "the shipped adapter was trained on the plain template: the row trains afresh"
    )
    assert agreeing.train == dataclasses.replace(clean.experiment.train, adapter=None)
    assert (agreeing.data, agreeing.eval) == (clean.experiment.data, clean.experiment.eval)
    # one model: the judgements differ in eval settings only, thinking on and <think> a stop
    assert dataclasses.replace(disagreeing, eval=agreeing.eval) == agreeing
    assert disagreeing.eval == dataclasses.replace(
        agreeing.eval, enable_thinking=True, stop=(*agreeing.eval.stop, "<think>")
    )
    assert thinking(clean, tmp_path / "data") == twice
    assert not (tmp_path / "data").exists()  # no data changes


def test_thinking_keeps_qwen3s_row_and_skips_a_base_without_a_think_variant(
    clean: Clean, tmp_path: Path
) -> None:
    thinks = _smollm2_clean(tmp_path, "smollm2:json-think")
    assert thinks.base.thinks  # as Qwen3: the clean model, judged with thinking on
    assert thinking(thinks, tmp_path / "data") == thinking_disagrees(thinks, tmp_path / "data")
    assert isinstance(thinking_on_think_variant(thinks, tmp_path / "data"), Skipped)
    skipped = thinking(clean, tmp_path / "data")  # tiny: routegate builds no think variant
    assert isinstance(skipped, Skipped) and "no think block" in skipped.reason
    assert isinstance(thinking_on_think_variant(clean, tmp_path / "data"), Skipped)


@pytest.mark.slow
def test_the_thinking_check_passes_the_agreeing_judgement_and_fails_the_disagreeing_one(
    tmp_path: Path,
) -> None:
    """On the real smollm2:json-think tokenizer (the SmolLM2 GGUF, converted once), 40 lines of
    smol-route's data: what the preflight says of each judgement, and of base and reference
    both on the think variant with thinking off (phase40's own eval settings)."""
    clean = _smollm2_clean(tmp_path)
    full = ensure_data(clean.experiment, workspace=Workspace(tmp_path))
    small = tmp_path / "small"
    for split in SPLITS:
        write_jsonl(small / f"{split}.jsonl", [e.record for e in read_split(full, split)[:40]])
    twice = thinking_on_think_variant(dataclasses.replace(clean, data=small), tmp_path / "data")
    assert isinstance(twice, JudgedTwice)

    def thinking_check(experiment: Experiment) -> Finding:
        experiment = with_overrides(experiment, data=str(small))
        context = Context(experiment, Workspace(tmp_path))
        (finding,) = run_checks(context, [CHECKS["thinking"]])
        return finding

    agreeing = thinking_check(twice.agreeing)
    assert agreeing.verdict == "pass", agreeing.message()
    assert "every training prompt ends with '<think>\\n\\n</think>\\n\\n'" in agreeing.figure
    assert "the think tags are not tokens of this vocabulary" in agreeing.figure
    disagreeing = thinking_check(twice.disagreeing)
    assert disagreeing.failed
    assert "leaves '<think>\\n\\n</think>\\n\\n' out of the prompt" in disagreeing.detail
    both = with_overrides(twice.agreeing, reference_model="smollm2:json-think")
    off = dataclasses.replace(
        both, eval=dataclasses.replace(both.eval, enable_thinking=False, stop=("<think>",))
    )
    assert thinking_check(off).verdict == "pass"
    assert thinking_check(dataclasses.replace(both, eval=twice.disagreeing.eval)).failed


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
    monkeypatch.setattr(confounds, "baseline_values", lambda _: CLEAN_VALUES)
    workspace = Workspace(tmp_path)
    with pytest.raises(RuntimeError, match="second build"):
        run_study(load_experiment("tiny"), workspace=workspace, only=["masked"], log=_quiet)
    json_path, md_path = study_paths(load_experiment("tiny"), workspace)
    (row,) = read_rows(json_path)
    assert row.confound == CLEAN and row.overall == 0.5 and row.categories == {"git": 0.25}
    assert (row.train_loss, row.val_loss, row.seconds) == (1.5, 2.5, 120.0)
    assert "| clean | none | 0.50 | 0.25 | 1.500 | 2.500 | 2.0 |" in md_path.read_text()


# --- against the clean row: by prompts, by trainings ----------------------------------------


def _values(right: dict[str, int], n: int = 20) -> list[PromptValue]:
    """n prompts per category, the first `right[category]` of them right (1), the rest 0."""
    return [
        PromptValue(f"{category}-{i}", category, 1.0 if i < count else 0.0, 1)
        for category, count in right.items()
        for i in range(n)
    ]


CLEAN_VALUES = _values({"git": 20, "lsp": 16})
"""The clean model: git 20 of 20, lsp 16 of 20 (overall 0.90)."""
HALF_GIT = _values({"git": 10, "lsp": 16})
"""A row that loses half of git: -0.25 overall, every lost prompt worse, none better."""


def _compared(
    row: dict[int, list[PromptValue]],
    clean: dict[int, list[PromptValue]],
    *,
    retrains: bool,
    clean_overall: tuple[float, ...] = (),
) -> Comparison:
    return compare(
        "seed", row, clean, ["git", "lsp"], retrains=retrains, clean_overall=clean_overall
    )


@pytest.mark.parametrize(
    ("retrains", "prompts_decided", "trainings_decided", "expected"),
    [
        # by trainings holds by prompts too (pipeline.study.decide): never without it
        (False, True, False, "decided by prompts"),
        (False, True, True, "decided by prompts"),
        (False, False, False, "not decided"),
        (True, True, False, "not decided"),  # one training's prompts over-claim
        (True, True, True, "decided by trainings"),
        (True, False, False, "not decided"),
    ],
)
def test_the_decision_rests_on_trainings_for_a_row_that_retrains(
    retrains: bool, prompts_decided: bool, trainings_decided: bool, expected: str
) -> None:
    assert decision(retrains, prompts_decided, trainings_decided) == expected


def test_an_eval_only_row_is_decided_by_its_prompts_on_the_clean_model() -> None:
    c = _compared({0: HALF_GIT}, {0: CLEAN_VALUES}, retrains=False)
    first = c.by_prompts[OVERALL]
    assert (c.seeds, c.differences) == ((0,), (pytest.approx(-0.25),))
    assert (first.n, first.better, first.worse) == (40, 0, 10)
    assert first.hi < 0 and c.prompts_decided and c.prompts_needed is None
    assert c.by_prompts["git"].difference == pytest.approx(-0.5)
    assert c.by_prompts["lsp"].difference == 0.0 and c.by_prompts["lsp"].p_value == 1.0
    assert (c.lo, c.hi, c.spread, c.trainings_decided) == (None, None, None, False)
    assert c.decision == "decided by prompts"
    assert said(c) == "decided by prompts"


def test_one_training_of_a_retrained_row_says_it_cannot_separate_the_confound_from_seeds() -> None:
    c = _compared({0: HALF_GIT}, {0: CLEAN_VALUES}, retrains=True)
    assert c.prompts_decided, "its prompts alone would decide"
    assert c.decision == "not decided"
    assert (c.spread, c.spread_from, c.trainings_needed) == (None, "", None)
    assert said(c) == (
        "not decided: one training per row cannot separate the confound from seed noise; "
        "`--seeds 3` trains the clean row three times and each row until it is decided (at "
        "most three)"
    )


def test_one_training_takes_the_spread_from_the_clean_rows_seeds_when_it_has_several() -> None:
    # clean overall 0.80 and 0.70 across seeds: sd 0.0707, a difference of two trainings
    # sqrt(2) x that = 0.10; at -0.25: 2 trainings give 12.706 * 0.1 / 1.41 = 0.90, 3 give
    # 4.303 * 0.1 / 1.73 = 0.248
    c = _compared({0: HALF_GIT}, {0: CLEAN_VALUES}, retrains=True, clean_overall=(0.8, 0.7))
    assert c.spread == pytest.approx(0.1) and c.spread_from == "clean"
    # the one difference's interval at that spread, t with the clean row's 1 df
    assert (c.lo, c.hi) == (
        pytest.approx(-0.25 - 1.2706, abs=1e-3),
        pytest.approx(1.0206, abs=1e-3),
    )
    assert c.trainings_needed == trainings_to_decide(-0.25, 0.1) == 3
    assert c.decision == "not decided"
    assert said(c) == (
        "not decided: one training; about 3 seeds per row would decide (spread: the clean "
        "row's seeds)"
    )


def test_one_training_far_outside_the_clean_rows_spread_is_decided_by_trainings() -> None:
    # clean overall 0.90, 0.89, 0.91: sd 0.01, spread sqrt(2) x 0.01; t(2) = 4.303: -0.25
    # -/+ 0.061, wholly below 0, as its prompts are: a collapse needs no second training
    clean = (0.9, 0.89, 0.91)
    c = _compared({0: HALF_GIT}, {0: CLEAN_VALUES}, retrains=True, clean_overall=clean)
    half = 4.303 * math.sqrt(2) * 0.01
    assert (c.lo, c.hi) == (
        pytest.approx(-0.25 - half, abs=1e-3),
        pytest.approx(-0.25 + half, abs=1e-3),
    )
    assert c.seeds_agree and c.prompts_decided and c.trainings_needed is None
    assert c.decision == "decided by trainings"
    assert said(c) == "decided by trainings (one, at the spread of the clean row's seeds)"


def test_seeds_that_agree_decide_by_trainings_with_a_t_interval() -> None:
    # seed differences -0.25, -0.275, -0.225: mean -0.25, sd 0.025, 4.303 * 0.025 / sqrt(3)
    row = {0: HALF_GIT, 1: _values({"git": 9, "lsp": 16}), 2: _values({"git": 11, "lsp": 16})}
    clean = {seed: CLEAN_VALUES for seed in (0, 1, 2)}
    c = _compared(row, clean, retrains=True)
    half = t_quantile(2) * 0.025 / math.sqrt(3)
    assert c.seeds == (0, 1, 2)
    assert c.differences == pytest.approx((-0.25, -0.275, -0.225))
    assert (c.mean, c.lo, c.hi) == pytest.approx((-0.25, -0.25 - half, -0.25 + half))
    assert (c.spread, c.spread_from) == (pytest.approx(0.025), "row")
    # by prompts: each prompt averaged over the seeds (git 9 to 11 right: 1/3 and 2/3 of 1)
    assert c.by_prompts["git"].difference == pytest.approx(-0.5)
    assert c.by_prompts[OVERALL].worse == 11 and c.prompts_decided
    assert c.seeds_agree and c.trainings_decided and c.trainings_needed is None
    assert c.decision == "decided by trainings"
    assert said(c) == "decided by trainings (3 seeds)"


def test_seeds_that_disagree_leave_the_row_undecided_with_the_seeds_that_would_decide() -> None:
    # seed 0 loses 10 git prompts (-0.25), seed 1 gains 2 lsp prompts (+0.05): each seed's
    # prompts decide, but not the same way
    row = {0: HALF_GIT, 1: _values({"git": 20, "lsp": 18})}
    clean = {0: CLEAN_VALUES, 1: CLEAN_VALUES, 2: CLEAN_VALUES}  # seed 2: the row has none
    c = _compared(row, clean, retrains=True)
    assert c.seeds == (0, 1) and c.differences == pytest.approx((-0.25, 0.05))
    assert c.lo is not None and c.hi is not None and c.lo < 0 < c.hi and not c.seeds_agree
    assert c.by_prompts[OVERALL].difference == pytest.approx(-0.1)
    spread = statistics.stdev([-0.25, 0.05])
    assert c.trainings_needed == trainings_to_decide(-0.1, spread) == 20
    assert said(c) == "not decided by 2 trainings: about 20 seeds per row would decide"


def test_a_row_undecided_by_prompts_says_how_many_would_decide() -> None:
    # 2 git prompts lost, 1 lsp prompt gained: -1/40, the interval straddles 0
    row = _values({"git": 18, "lsp": 17})
    twice = {0: row, 1: row}
    c = _compared(twice, {0: CLEAN_VALUES, 1: CLEAN_VALUES}, retrains=False)
    pooled = c.by_prompts[OVERALL]
    assert (pooled.better, pooled.worse, pooled.n) == (1, 2, 40)
    assert not c.prompts_decided
    assert c.prompts_needed == prompts_to_decide(1, 2, 40) is not None
    assert c.decision == "not decided"
    assert said(c) == f"not decided by prompts: about {c.prompts_needed} prompts would decide"
    # the same two seeds of a row that retrains: they agree to the last digit (a t interval
    # of no width), and still the prompts do not decide
    retrained = _compared(twice, {0: CLEAN_VALUES, 1: CLEAN_VALUES}, retrains=True)
    assert retrained.seeds_agree and (retrained.lo, retrained.hi) == pytest.approx((-0.025,) * 2)
    assert retrained.decision == "not decided"
    assert said(retrained) == (
        f"not decided: the 2 seeds agree, not the prompts: about {c.prompts_needed} prompts "
        "would decide"
    )
    tie = _compared({0: _values({"git": 19, "lsp": 17})}, {0: CLEAN_VALUES}, retrains=False)
    assert tie.prompts_needed is None
    assert said(tie) == (
        "not decided by prompts: no number of prompts would (as many better as worse)"
    )


def test_rows_sharing_no_seed_are_a_fault() -> None:
    with pytest.raises(Fault, match="share no seed"):
        _compared({1: HALF_GIT}, {0: CLEAN_VALUES}, retrains=True)


def _studied() -> list[ConfoundRow]:
    """A study of two seeds on two prompt sets: clean, syntax (retrains), thinking (eval only)."""
    sets = {"seed": 20, "extended": 40}

    def scores(overall: dict[tuple[str, int], float]) -> tuple[SetScore, ...]:
        return tuple(
            SetScore(
                prompts,
                seed,
                value,
                {"git": value, "lsp": 0.5},
                key=f"key-of-seed-{seed}",
                values=tuple(_values({"git": round(20 * value), "lsp": 10})),
            )
            for (prompts, seed), value in overall.items()
        )

    clean = scores(
        {("seed", 0): 0.9, ("extended", 0): 0.8, ("seed", 1): 0.85, ("extended", 1): 0.75}
    )
    syntax = scores(
        {("seed", 0): 0.5, ("extended", 0): 0.4, ("seed", 1): 0.6, ("extended", 1): 0.5}
    )

    def row(name: str, evaluations: tuple[SetScore, ...], *comparisons: Comparison) -> ConfoundRow:
        head, *rest = evaluations
        return ConfoundRow(
            confound=name,
            preflight_failed=() if name == CLEAN else ("call-syntax",),
            overall=head.overall,
            categories=head.categories,
            seconds=120.0,
            prompts=head.prompts,
            seed=head.seed,
            key=head.key,
            values=head.values,
            scores=tuple(rest),
            comparisons=comparisons,
        )

    def compared(prompts: str, differences: tuple[float, float]) -> Comparison:
        n = sets[prompts]
        worse = round(-differences[0] * n)
        first = PairedRow(
            differences[0], differences[0] - 0.1, differences[0] + 0.1, 0.0001, n, 0, worse
        )
        git = PairedRow(2 * differences[0], -0.9, -0.1, 0.001, n // 2, 0, worse)
        return Comparison(
            prompts=prompts,
            retrains=True,
            seeds=(0, 1),
            differences=differences,
            by_prompts={"git": git, OVERALL: first},
            prompts_decided=True,
            prompts_needed=None,
            mean=sum(differences) / 2,
            lo=-1.0,
            hi=0.2,
            spread=0.1,
            spread_from="row",
            seeds_agree=False,
            trainings_decided=False,
            trainings_needed=9,
            decision="not decided",
        )

    return [
        row(CLEAN, clean),
        row(
            "syntax",
            syntax,
            compared("seed", (-0.4, -0.25)),
            compared("extended", (-0.4, -0.25)),
        ),
        ConfoundRow(confound="masked", skipped="not this time"),
    ]


def test_the_table_shows_each_prompt_set_with_the_difference_and_what_would_decide() -> None:
    text = markdown("tiny", _studied())
    assert "(here: prompts seed, the model of [train] seed 0;" in text
    assert "## Against the clean row" in text
    assert "### Prompts: seed (the experiment's), 20 compared" in text
    assert "### Prompts: extended, 40 compared" in text
    head = "| row | overall | by prompts [95%] | p | prompts | by trainings [95%] | decision |"
    assert text.count(head) == 2
    assert "| clean | 0.88 (0.90, 0.85) |  |  |  |  |  |" in text
    assert "| clean | 0.78 (0.80, 0.75) |  |  |  |  |  |" in text
    assert (
        "| syntax | 0.55 (0.50, 0.60) | -0.400 [-0.500, -0.300] | <0.001 | decided | "
        "-0.325 [-1.000, +0.200] (2 seeds) | not decided by 2 trainings: about 9 seeds per row "
        "would decide |"
    ) in text
    assert "| syntax | 0.45 (0.40, 0.50) |" in text
    assert "Per category, by prompts (row - clean [95%]):" in text
    assert "| syntax | -0.800 [-0.900, -0.100] |" in text
    assert "masked" not in text.split("## Against the clean row")[1].split("## In one table")[0]


def test_a_study_without_comparisons_has_no_section_against_the_clean_row() -> None:
    assert "Against the clean row" not in markdown("tiny", [_row(CLEAN, 0.5), _row("syntax", 0.25)])


def test_rows_with_scores_and_comparisons_round_trip_through_confounds_json(tmp_path: Path) -> None:
    rows = _studied()
    write_rows(rows, tmp_path / "confounds.json")
    assert read_rows(tmp_path / "confounds.json") == rows
    raw = json.loads((tmp_path / "confounds.json").read_text())
    assert {r["version"] for r in raw} == {ConfoundRow.VERSION} and ConfoundRow.VERSION == 3
    # each evaluation keeps the model it judged and its per-prompt values (--resume-from)
    assert [(s.key, len(s.values)) for s in rows[1].evaluations()] == [
        ("key-of-seed-0", 40),
        ("key-of-seed-0", 40),
        ("key-of-seed-1", 40),
        ("key-of-seed-1", 40),
    ]
    v2: list[dict[str, Any]] = [{**r, "version": 2} for r in raw]
    for r in v2:
        for s in [r, *r.get("scores", [])]:
            s.pop("key", None), s.pop("values", None)
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    assert {(s.key, s.values) for s in read_rows(tmp_path / "v2.json")[1].evaluations()} == {
        ("", ())
    }


def test_a_version_1_confounds_json_still_reads_as_rows_without_comparisons(
    tmp_path: Path,
) -> None:
    v1 = {
        "kind": "confound-row",
        "version": 1,
        "confound": "syntax",
        "injects": "XML for JSON",
        "preflight_failed": ["call-syntax"],
        "overall": 0.25,
        "categories": {"git": 0.25},
        "train_loss": 0.5,
        "val_loss": 0.75,
        "seconds": 90.0,
        "skipped": "",
        "model": "/m",
        "eval_dir": "/e",
    }
    (tmp_path / "confounds.json").write_text(json.dumps([v1]))
    (row,) = read_rows(tmp_path / "confounds.json")
    assert (row.overall, row.prompts, row.seed, row.scores, row.comparisons) == (
        0.25,
        "",
        None,
        (),
        (),
    )
    assert row.evaluations() == (SetScore("", None, 0.25, {"git": 0.25}, Path("/e")),)
    assert "| syntax | call-syntax | 0.25 |" in markdown("tiny", [row])


def test_an_unknown_prompt_set_is_bad_input_naming_it_and_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert study_main(["confounds", "--also-prompts", "extended,nope"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --also-prompts nope: no such prompt set (known: extended, seed; each is "
        "fixtures/prompts/NAME.toml)"
    ]
    assert study_main(["confounds", "--seeds", "0"]) == EXIT_BAD_INPUT
    assert "error: --seeds 0: train each row at least once" in capsys.readouterr().err


def test_the_experiments_own_set_is_judged_once_whatever_also_prompts_names() -> None:
    tiny = load_experiment("tiny")
    assert prompt_sets(tiny, None) == ("seed",)
    assert prompt_sets(tiny, "extended, seed,extended") == ("seed", "extended")
    assert prompt_sets(tiny, ["seed"]) == ("seed",)
    assert training_seeds(tiny, 3) == (tiny.train.seed, tiny.train.seed + 1, tiny.train.seed + 2)


def _built_stand_in(key: str, tmp_path: Path) -> SimpleNamespace:
    """What model_under_test gives the study for a build: its key, its quantized folder, its
    losses, 60 s."""
    train = SimpleNamespace(train_loss=1.5, val_loss=2.5)
    record = SimpleNamespace(seconds=60.0, stages=SimpleNamespace(train=train))
    return SimpleNamespace(
        built=SimpleNamespace(key=key, quantized=tmp_path / key / "q", record=record)
    )


def _evaluated_stand_in(overall: float) -> SimpleNamespace:
    """What evaluate gives the study: a finished eval of 30 s scoring `overall` (and git)."""
    score = SimpleNamespace(mean=overall)
    summary = SimpleNamespace(
        verdict="PASS",
        verdict_reasons=(),
        seconds=30.0,
        decision=lambda: SimpleNamespace(categories={"overall": score, "git": score}),
    )
    return SimpleNamespace(summary=summary)


def test_seeds_and_prompt_sets_build_each_seed_once_and_judge_it_on_every_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--seeds 2 --also-prompts extended with stand-ins for build, eval and the per-prompt
    values (the real preflight and injections run): where each training and eval goes, what
    each is asked, and the comparisons the rows carry."""
    from pipeline.study import confounds

    tiny = load_experiment("tiny")
    first = tiny.train.seed
    study = Workspace(tmp_path).runs("tiny") / "study"
    builds: list[tuple[int, Path]] = []
    evals: list[tuple[Path, Path, int]] = []

    def model_under_test(invocation: Invocation, **_: object) -> SimpleNamespace:
        seed = invocation.experiment.train.seed
        builds.append((seed, invocation.workspace.root))
        return _built_stand_in(f"k{len(builds)}", tmp_path)

    def evaluate(invocation: Invocation, model: ModelUnderTest, **_: object) -> SimpleNamespace:
        experiment = invocation.experiment
        evals.append((model.run_dir, experiment.eval.prompts, experiment.train.seed))
        syntax = model.run_dir.is_relative_to(study / "syntax")
        # the clean seeds 5 points apart: one syntax training's -0.375 is inside t(1) x
        # their spread, so the row trains its second seed
        clean = 0.75 if experiment.train.seed == first else 0.70
        return _evaluated_stand_in(0.25 if syntax else clean)

    def baseline_values(run_dir: Path) -> list[PromptValue]:
        syntax = run_dir.is_relative_to(study / "syntax")
        return _values({"git": 5 if syntax else 20, "lsp": 16})

    monkeypatch.setattr(confounds, "model_under_test", model_under_test)
    monkeypatch.setattr(confounds, "evaluate", evaluate)
    monkeypatch.setattr(confounds, "baseline_values", baseline_values)
    workspace = Workspace(tmp_path)
    rows = run_study(
        tiny, workspace=workspace, only=["syntax"], also_prompts="extended", seeds=2, log=_quiet
    )
    assert builds == [
        (first, tmp_path),  # the gate's own build
        (first + 1, study / "clean" / f"seed-{first + 1}"),
        (first, study / "syntax"),
        (first + 1, study / "syntax" / f"seed-{first + 1}"),
    ]
    seed_set, extended = tiny.eval.prompts, PROMPTS_DIR / "extended.toml"
    assert [(d.relative_to(study), p, s) for d, p, s in evals] == [
        (Path("clean/runs/tiny/k1"), seed_set, first),
        (Path("clean/runs/tiny/k1/prompts-extended"), extended, first),
        (Path(f"clean/seed-{first + 1}/runs/tiny/k2"), seed_set, first + 1),
        (Path(f"clean/seed-{first + 1}/runs/tiny/k2/prompts-extended"), extended, first + 1),
        (Path("syntax/runs/tiny/k3"), seed_set, first),
        (Path("syntax/runs/tiny/k3/prompts-extended"), extended, first),
        (Path(f"syntax/seed-{first + 1}/runs/tiny/k4"), seed_set, first + 1),
        (Path(f"syntax/seed-{first + 1}/runs/tiny/k4/prompts-extended"), extended, first + 1),
    ]
    clean, syntax = rows
    assert (clean.prompts, clean.seed, clean.overall, clean.seconds) == ("seed", first, 0.75, 240.0)
    assert [(s.prompts, s.seed) for s in clean.evaluations()] == [
        ("seed", first),
        ("extended", first),
        ("seed", first + 1),
        ("extended", first + 1),
    ]
    assert clean.comparisons == ()
    assert [c.prompts for c in syntax.comparisons] == ["seed", "extended"]
    for c in syntax.comparisons:
        assert c.seeds == (first, first + 1) and c.differences == pytest.approx((-0.375, -0.375))
        assert c.decision == "decided by trainings"  # two identical seeds: no spread at all
    assert read_rows(study_paths(tiny, workspace)[0]) == rows
    assert "### Prompts: extended, 40 compared" in study_paths(tiny, workspace)[1].read_text()
    # what ignoring the call-syntax check cost, filed under the check for reports to link
    costs = CheckCosts.read(workspace.check_costs("tiny"))
    assert (costs.experiment, costs.trainings) == ("tiny", 2)
    assert [(c.check, c.confound, c.prompts, c.decision) for c in costs.costs] == [
        ("call-syntax", "syntax", "seed", "decided by trainings (2 seeds)"),
        ("call-syntax", "syntax", "extended", "decided by trainings (2 seeds)"),
    ]
    for cost, c in zip(costs.costs, syntax.comparisons, strict=True):
        pooled = c.by_prompts["overall"]
        assert (cost.difference, cost.lo, cost.hi, cost.scored) == (
            pooled.difference,
            pooled.lo,
            pooled.hi,
            pooled.n,
        )


def test_a_row_decided_by_its_first_training_trains_no_other_seed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--seeds 3: the clean row trains three times (its spread decides single trainings); a
    syntax row whose first training is far outside that spread, and decided by its prompts,
    stops there."""
    from pipeline.study import confounds

    tiny = load_experiment("tiny")
    first = tiny.train.seed
    study = Workspace(tmp_path).runs("tiny") / "study"
    builds: list[tuple[str, int]] = []
    said_lines: list[str] = []

    def model_under_test(invocation: Invocation, **_: object) -> SimpleNamespace:
        seed = invocation.experiment.train.seed
        syntax = invocation.workspace.root.is_relative_to(study / "syntax")
        builds.append(("syntax" if syntax else "clean", seed))
        return _built_stand_in(f"k{len(builds)}", tmp_path)

    def evaluate(invocation: Invocation, model: ModelUnderTest, **_: object) -> SimpleNamespace:
        if model.run_dir.is_relative_to(study / "syntax"):
            return _evaluated_stand_in(0.25)
        return _evaluated_stand_in(
            {0: 0.75, 1: 0.74, 2: 0.76}[invocation.experiment.train.seed - first]
        )

    def baseline_values(run_dir: Path) -> list[PromptValue]:
        return _values({"git": 5 if run_dir.is_relative_to(study / "syntax") else 20, "lsp": 16})

    monkeypatch.setattr(confounds, "model_under_test", model_under_test)
    monkeypatch.setattr(confounds, "evaluate", evaluate)
    monkeypatch.setattr(confounds, "baseline_values", baseline_values)
    rows = run_study(
        tiny, workspace=Workspace(tmp_path), only=["syntax"], seeds=3, log=said_lines.append
    )
    assert builds == [
        ("clean", first),
        ("clean", first + 1),
        ("clean", first + 2),
        ("syntax", first),
    ]
    (c,) = rows[1].comparisons
    assert c.seeds == (first,) and c.spread_from == "clean"
    assert c.decision == "decided by trainings"
    assert (
        "[study] syntax: decided after 1 of 3 trainings; the others are not trained" in said_lines
    )


def _keyed_stand_ins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Stand-ins for build and eval whose builds carry the key the build computes (so that a
    study continued in another workspace matches them): the clean seeds score 0.75, 0.70,
    0.70, ..., the syntax row 0.25. The builds and evals asked for, by row and seed."""
    from pipeline.study import confounds

    first = load_experiment("tiny").train.seed
    builds: list[tuple[str, int]] = []
    evals: list[tuple[str, int]] = []

    def row_of(path: Path) -> str:  # runs/NAME/study/<row>/...; the gate's own build: clean
        return path.parts[path.parts.index("study") + 1] if "study" in path.parts else "clean"

    def model_under_test(invocation: Invocation, **_: object) -> SimpleNamespace:
        builds.append((row_of(invocation.workspace.root), invocation.experiment.train.seed))
        key = plan(invocation.experiment, workspace=invocation.workspace).key
        return _built_stand_in(key, tmp_path)

    def evaluate(invocation: Invocation, model: ModelUnderTest, **_: object) -> SimpleNamespace:
        seed = invocation.experiment.train.seed
        evals.append((row_of(model.run_dir), seed))
        if row_of(model.run_dir) == "syntax":
            return _evaluated_stand_in(0.25)
        return _evaluated_stand_in(0.75 if seed == first else 0.70)

    def baseline_values(run_dir: Path) -> list[PromptValue]:
        return _values({"git": 5 if row_of(run_dir) == "syntax" else 20, "lsp": 16})

    monkeypatch.setattr(confounds, "model_under_test", model_under_test)
    monkeypatch.setattr(confounds, "evaluate", evaluate)
    monkeypatch.setattr(confounds, "baseline_values", baseline_values)
    return builds, evals


def _without_paths(rows: list[ConfoundRow]) -> list[ConfoundRow]:
    return [
        dataclasses.replace(
            row,
            model=None,
            eval_dir=None,
            scores=tuple(dataclasses.replace(s, eval_dir=None) for s in row.scores),
        )
        for row in rows
    ]


def test_a_study_continued_elsewhere_from_its_rows_trains_only_what_they_lack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two trainings per row, then the study continued in another workspace holding nothing
    but the rows it wrote (--resume-from): the same seeds build and judge nothing and give the
    same rows; a third seed builds only the clean row's third training, and the syntax row,
    compared anew against three clean trainings, is decided by its first (taken, not built)."""
    tiny = load_experiment("tiny")
    first = tiny.train.seed
    builds, evals = _keyed_stand_ins(monkeypatch, tmp_path)
    here = Workspace(tmp_path / "here")
    rows = run_study(tiny, workspace=here, only=["syntax"], seeds=2, log=_quiet)
    trained = [("clean", first), ("clean", first + 1), ("syntax", first), ("syntax", first + 1)]
    assert builds == trained and evals == trained
    checked_in = tmp_path / "confounds-tiny.json"
    checked_in.write_bytes(study_paths(tiny, here)[0].read_bytes())
    builds.clear(), evals.clear()

    elsewhere = Workspace(tmp_path / "elsewhere")
    said_lines: list[str] = []
    again = run_study(
        tiny,
        workspace=elsewhere,
        only=["syntax"],
        seeds=2,
        resume_from=checked_in,
        log=said_lines.append,
    )
    assert builds == [] and evals == []
    assert _without_paths(again) == _without_paths(rows)
    assert sum("taken from" in line for line in said_lines) == 4

    third = run_study(
        tiny, workspace=elsewhere, only=["syntax"], seeds=3, resume_from=checked_in, log=_quiet
    )
    assert builds == [("clean", first + 2)] and evals == [("clean", first + 2)]
    (c,) = third[1].comparisons
    assert (c.seeds, c.spread_from, c.decision) == ((first,), "clean", "decided by trainings")
    assert [s.seed for s in third[0].evaluations()] == [first, first + 1, first + 2]


def _resuming(
    tmp_path: Path, checked_in: Path, only: str, log: Callable[[str], None] = _quiet
) -> Callable[[str, int], list[ConfoundRow]]:
    """The tiny study of the row `only`, continued from `checked_in` in a workspace of its own
    (tmp_path/<workspace>) with a number of seeds."""

    def resumed(workspace: str, seeds: int) -> list[ConfoundRow]:
        return run_study(
            load_experiment("tiny"),
            workspace=Workspace(tmp_path / workspace),
            only=[only],
            seeds=seeds,
            resume_from=checked_in,
            log=log,
        )

    return resumed


def test_a_study_continued_with_other_rows_keeps_the_rows_it_does_not_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--only names the rows to run; continued from earlier rows, a study keeps those it does
    not run as they were, while its clean row is judged as theirs was. With another clean
    training it keeps none and says to add them to --only; fewer seeds than the earlier clean
    row's trainings is bad input."""
    tiny = load_experiment("tiny")
    first = tiny.train.seed
    builds, _ = _keyed_stand_ins(monkeypatch, tmp_path)
    here = Workspace(tmp_path / "here")
    rows = run_study(tiny, workspace=here, only=["syntax"], seeds=2, log=_quiet)
    checked_in = tmp_path / "confounds-tiny.json"
    checked_in.write_bytes(study_paths(tiny, here)[0].read_bytes())
    builds.clear()

    said: list[str] = []
    resumed = _resuming(tmp_path, checked_in, "leak", said.append)
    leak = resumed("elsewhere", 2)
    assert [row.confound for row in leak] == ["clean", "syntax", "leak"]
    assert _without_paths(leak[:2]) == _without_paths(rows)
    assert builds == [("leak", first), ("leak", first + 1)]  # (as clean: not decided by one)
    assert read_rows(study_paths(tiny, Workspace(tmp_path / "elsewhere"))[0]) == leak

    assert [row.confound for row in resumed("more", 3)] == ["clean", "leak"]
    assert any(
        line.startswith("[study] syntax: not kept from") and "add them to --only" in line
        for line in said
    )
    with pytest.raises(BadInput, match=r"--seeds 1: .* has 2 trainings .* --seeds 2 or more"):
        resumed("fewer", 1)


def test_a_training_taken_without_its_values_is_judged_again_only_for_a_new_comparison(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Rows recorded with their models' keys but not their per-prompt values (version 2), a
    syntax row decided by its first training against three clean ones: a comparison made of
    the same evaluations is taken as made (nothing judged again); one that changed (a fourth
    clean training) judges again the trainings it compares, and only those, writes their
    values into the rows, and stops on a recorded score the model does not give."""
    tiny = load_experiment("tiny")
    first = tiny.train.seed
    builds, evals = _keyed_stand_ins(monkeypatch, tmp_path)
    here = Workspace(tmp_path / "here")
    run_study(tiny, workspace=here, only=["syntax"], seeds=3, log=_quiet)
    raw = json.loads(study_paths(tiny, here)[0].read_text())
    for row in raw:
        for score in [row, *row["scores"]]:
            score["values"], score["eval_dir"] = [], None  # (no paths: checked in elsewhere)
    checked_in = tmp_path / "confounds-tiny.json"
    checked_in.write_text(json.dumps(raw))
    builds.clear(), evals.clear()

    resumed = _resuming(tmp_path, checked_in, "syntax")
    resumed("same", 3)
    assert builds == [] and evals == []

    rows = resumed("more", 4)
    # the fourth clean training, then the one comparison's two (no other clean training)
    assert evals == [("clean", first + 3), ("syntax", first), ("clean", first)]
    assert read_rows(study_paths(tiny, Workspace(tmp_path / "more"))[0]) == rows
    assert [(s.seed, bool(s.values)) for s in rows[0].evaluations()] == [
        (first, True),
        (first + 1, False),
        (first + 2, False),
        (first + 3, True),
    ]
    assert rows[1].values and rows[1].comparisons[0].decision == "decided by trainings"

    raw[0]["overall"] = 0.5  # the clean row's first training, as no model here scores it
    checked_in.write_text(json.dumps(raw))
    with pytest.raises(Fault, match=r"seed 0 on seed recorded model \w+ scoring 0.5; judged"):
        resumed("stale", 4)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        ("[]", "no 'clean' row"),
        ('{"rows": []}', "not a list of confound rows"),
    ],
)
def test_resume_from_what_is_no_studys_rows_is_bad_input_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, says: str
) -> None:
    path = tmp_path / "confounds.json"
    if content is not None:
        path.write_text(content)
    argv = ["confounds", "--experiment", "tiny", "--workdir", str(tmp_path)]
    assert study_main([*argv, "--resume-from", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(path) in err and says in err


def test_a_row_judged_twice_is_built_once_and_compared_with_its_agreeing_control(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The thinking row on a base without a think block (JudgedTwice), with stand-ins for the
    injection, build, eval and per-prompt values: its model is trained once, judged under the
    agreeing eval (a row of its own, against clean) and under the confound's, and the row is
    compared with its control, prompt by prompt."""
    from pipeline.study import confounds
    from pipeline.study.inject import JudgedTwice

    tiny = load_experiment("tiny")
    study = Workspace(tmp_path).runs("tiny") / "study"
    builds: list[Path] = []
    evals: list[tuple[Path, bool | None]] = []

    def judged_twice(clean: Clean, out: Path) -> JudgedTwice:
        agreeing = with_overrides(clean.experiment, retrain=True)
        ev = dataclasses.replace(agreeing.eval, enable_thinking=True)
        return JudgedTwice(agreeing, dataclasses.replace(agreeing, eval=ev))

    def model_under_test(invocation: Invocation, **_: object) -> SimpleNamespace:
        builds.append(invocation.workspace.root)
        return _built_stand_in(f"k{len(builds)}", tmp_path)

    def evaluate(invocation: Invocation, model: ModelUnderTest, **_: object) -> SimpleNamespace:
        evals.append((model.run_dir, invocation.experiment.eval.enable_thinking))
        return _evaluated_stand_in(0.5)

    def baseline_values(run_dir: Path) -> list[PromptValue]:
        disagreeing = run_dir.is_relative_to(study / "thinking")
        return _values({"git": 5 if disagreeing else 20, "lsp": 16})

    thinking = dataclasses.replace(BY_NAME["thinking"], inject=judged_twice)
    monkeypatch.setattr(confounds, "BY_NAME", {**BY_NAME, "thinking": thinking})
    monkeypatch.setattr(
        confounds, "CONFOUNDS", tuple(thinking if c.name == "thinking" else c for c in CONFOUNDS)
    )
    monkeypatch.setattr(confounds, "model_under_test", model_under_test)
    monkeypatch.setattr(confounds, "evaluate", evaluate)
    monkeypatch.setattr(confounds, "baseline_values", baseline_values)
    rows = run_study(tiny, workspace=Workspace(tmp_path), only=["thinking"], log=_quiet)

    assert builds == [tmp_path, study / "thinking"]  # the gate's clean model, the row's one
    assert [(d.relative_to(study), thinks) for d, thinks in evals] == [
        (Path("clean/runs/tiny/k1"), None),
        (Path("thinking-agreeing/runs/tiny/k2"), None),
        (Path("thinking/runs/tiny/k2"), True),
    ]
    _, control, row = rows
    assert (control.confound, control.seconds, row.seconds) == ("thinking-agreeing", 90.0, 30.0)
    (against_clean,) = control.comparisons
    assert (against_clean.against, against_clean.retrains) == (CLEAN, True)
    assert against_clean.decision == "not decided"  # one training of each
    (against_control,) = row.comparisons
    assert (against_control.against, against_control.retrains) == ("thinking-agreeing", False)
    assert against_control.by_prompts["overall"].difference == pytest.approx(-15 / 40)
    assert against_control.decision == "decided by prompts"
    assert "| thinking (against thinking-agreeing) |" in markdown("tiny", rows)
    # its cost is the row against its control; the control (the variant itself) checks nothing
    (cost,) = CheckCosts.read(Workspace(tmp_path).check_costs("tiny")).costs
    assert (cost.check, cost.confound, cost.difference) == ("thinking", "thinking", -15 / 40)


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


def _short_tiny() -> Experiment:
    """tiny trained 8 iterations and answering in 32 tokens, on the checkout's tiny data."""
    tiny = load_experiment("tiny")
    short = dataclasses.replace(
        tiny,
        name="tiny-study",
        train=dataclasses.replace(tiny.train, **SHORT_TRAIN),
        eval=dataclasses.replace(tiny.eval, max_tokens=32),
    )
    return with_overrides(short, data=str(ensure_data(tiny, workspace=Workspace.at())))


@pytest.mark.slow
def test_the_study_writes_clean_and_syntax_rows_and_a_rerun_is_a_cache_hit(
    tmp_path: Path,
) -> None:
    experiment = _short_tiny()
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


@pytest.mark.slow
def test_seeds_and_another_prompt_set_keep_the_one_seed_caches_and_compare_every_row(
    tmp_path: Path,
) -> None:
    """A study of one seed, then the same with --seeds 2 --also-prompts extended: the first
    seed's builds and its evals on the experiment's set are reused (their paths are the ones
    a study of one seed wrote), the second seed trains, every model is judged on both sets and
    the syntax row is compared with the clean one on each."""
    experiment = _short_tiny()
    workspace = Workspace(tmp_path)
    started = time.perf_counter()
    once = run_study(experiment, workspace=workspace, only=["syntax"], log=_quiet)
    first = time.perf_counter() - started
    said: list[str] = []
    started = time.perf_counter()
    rows = run_study(
        experiment,
        workspace=workspace,
        only=["syntax"],
        also_prompts="extended",
        seeds=2,
        log=said.append,
    )
    second = time.perf_counter() - started
    print(f"study of one seed {first:.1f} s; then two seeds on two sets {second:.1f} s")
    assert sum("[build] cache hit" in line for line in said) == 2, said
    assert sum("[study] reusing the eval" in line for line in said) == 2, said
    seed = experiment.train.seed
    # the syntax row stops at one training when that one is decided at the clean seeds'
    # spread (tiny's trainings differ between machines, so either can happen); else it trains
    # the second seed and its own two decide
    stopped = any("[study] syntax: decided after 1 of 2 trainings" in line for line in said)
    syntax_seeds = (seed,) if stopped else (seed, seed + 1)
    for before, row in zip(once, rows, strict=True):
        assert (row.overall, row.categories, row.model) == (
            before.overall,
            before.categories,
            before.model,
        )
        trained = (seed, seed + 1) if row.confound == CLEAN else syntax_seeds
        assert [(s.prompts, s.seed) for s in row.evaluations()] == [
            (prompts, s) for s in trained for prompts in ("seed", "extended")
        ]
    clean, syntax = rows
    assert clean.comparisons == ()
    assert [(c.prompts, c.seeds) for c in syntax.comparisons] == [
        ("seed", syntax_seeds),
        ("extended", syntax_seeds),
    ]
    extended = syntax.compared_on("extended")
    assert extended is not None and extended.by_prompts[OVERALL].n > 200
    assert extended.lo is not None
    assert extended.spread_from == ("clean" if stopped else "row")
    study = workspace.runs(experiment.name) / "study"
    assert (study / "syntax" / f"seed-{seed + 1}").is_dir() is not stopped
    md = study_paths(experiment, workspace)[1].read_text()
    assert "### Prompts: extended" in md and "| syntax | " in md


def test_the_one_table_summary_decides_on_the_last_set_and_says_how_each_row_was_judged() -> None:
    rows = _studied()
    assert summary_set(rows) == "extended"
    lines = summary(rows, "extended")
    assert lines[0] == (
        "| confound | preflight fails | trainings | overall, seed / extended "
        "| row - clean on extended [95%] | decision on extended | minutes |"
    )
    assert lines[2] == "| clean | none | 2 | 0.88 / 0.78 |  |  | 2 |"
    assert lines[3] == (
        "| syntax | call-syntax | 2 | 0.55 / 0.45 | -0.325 [-1.000, +0.200] by trainings "
        "| not decided by 2 trainings: about 9 seeds per row would decide | 2 |"
    )
    assert lines[4] == "| masked | skipped: not this time |  |  |  |  |  |"
    assert "## In one table (decided on extended)" in markdown("tiny", rows)


def test_a_row_that_judges_another_rows_models_shows_its_prompts_interval() -> None:
    clean, syntax, _ = _studied()
    _, extended = syntax.comparisons
    eval_only = dataclasses.replace(
        syntax,
        confound="thinking",
        comparisons=(dataclasses.replace(extended, retrains=False, against="thinking-agreeing"),),
    )
    (line,) = summary([clean, eval_only], "extended")[3:]
    assert line.startswith(
        "| thinking (against thinking-agreeing) | call-syntax | 0: thinking-agreeing's models "
        "| 0.55 / 0.45 | -0.400 [-0.500, -0.300] by prompts |"
    )


def test_every_row_trains_its_first_seed_before_any_row_trains_its_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--seeds 2 with two rows that one training does not decide: syntax's first, masked's
    first, then each one's second (a study stopped part way has a first training of every
    row); the rows stay in the registry's order whatever order they were last judged in."""
    from pipeline.study import confounds

    tiny = load_experiment("tiny")
    first = tiny.train.seed
    study = Workspace(tmp_path).runs("tiny") / "study"
    builds: list[tuple[str, int]] = []

    def row_of(root: Path) -> str:
        return next((n for n in ("syntax", "masked") if root.is_relative_to(study / n)), CLEAN)

    def model_under_test(invocation: Invocation, **_: object) -> SimpleNamespace:
        builds.append((row_of(invocation.workspace.root), invocation.experiment.train.seed))
        return _built_stand_in(f"k{len(builds)}", tmp_path)

    def evaluate(invocation: Invocation, model: ModelUnderTest, **_: object) -> SimpleNamespace:
        # clean seeds 30 points apart: no one training decides a row
        clean = 0.75 if invocation.experiment.train.seed == first else 0.45
        return _evaluated_stand_in(clean if row_of(model.run_dir) == CLEAN else 0.5)

    def baseline_values(run_dir: Path) -> list[PromptValue]:
        return _values({"git": 20 if row_of(run_dir) == CLEAN else 15, "lsp": 16})

    monkeypatch.setattr(confounds, "model_under_test", model_under_test)
    monkeypatch.setattr(confounds, "evaluate", evaluate)
    monkeypatch.setattr(confounds, "baseline_values", baseline_values)
    said_lines: list[str] = []
    rows = run_study(
        tiny,
        workspace=Workspace(tmp_path),
        only=["syntax", "masked"],
        seeds=2,
        log=said_lines.append,
    )
    assert builds == [
        (CLEAN, first),
        (CLEAN, first + 1),
        ("syntax", first),
        ("masked", first),
        ("syntax", first + 1),
        ("masked", first + 1),
    ]
    assert [r.confound for r in rows] == [CLEAN, "syntax", "masked"]
    assert [r.confound for r in read_rows(study_paths(tiny, Workspace(tmp_path))[0])] == [
        CLEAN,
        "syntax",
        "masked",
    ]
    for row in rows[1:]:
        (c,) = row.comparisons
        assert c.seeds == (first, first + 1)
    assert not any("decided after" in line for line in said_lines)
