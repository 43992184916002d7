"""The preflight's checks on the real Qwen3 tokenizers, with small datasets written here.

Each confound the seed's team found later is reproduced by a few hand-written examples: the
check must fail on them, and pass once data and settings agree.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline import preflight
from pipeline.core.workspace import Workspace
from pipeline.data import DataError, Example, read_jsonl
from pipeline.definitions.calls import Call, render, wrap_code
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import SHARED, Experiment, load_experiment, with_overrides
from pipeline.definitions.prompts import system_prompt
from pipeline.models.refs import ModelError
from pipeline.preflight.checks_calls import check_call_syntax, check_masking, check_tool_trained
from pipeline.preflight.checks_data import check_disk, check_lengths
from pipeline.preflight.checks_templates import check_rendering, check_thinking
from pipeline.preflight.checks_tokens import (
    check_chatml,
    check_special_positions,
    check_special_token,
)
from pipeline.preflight.inputs import encode, encode_direct

MODELS = SHARED / "models"
needs_shared = pytest.mark.skipif(
    not (MODELS / "qwen3-8b-tokenizer").is_dir(),
    reason=f"real Qwen3 tokenizers not found at {MODELS} (set ROUTEGATE_SHARED)",
)


@pytest.fixture(scope="module")
def phase40() -> Experiment:
    return with_overrides(
        load_experiment("phase40"),
        base_model=str(MODELS / "qwen3-8b-tokenizer"),
        reference_model=str(MODELS / "qwen3-coder-30b-a3b-tokenizer"),
    )


@pytest.fixture(scope="module")
def base(phase40: Experiment) -> preflight.Side:
    return preflight.load_side(phase40, "base", Workspace.at())


@pytest.fixture(scope="module")
def reference(phase40: Experiment) -> preflight.Side:
    return preflight.load_side(phase40, "reference", Workspace.at())


def _examples(records: list[dict[str, Any]]) -> list[Example]:
    return [Example(Path("fixture.jsonl"), i, r) for i, r in enumerate(records, start=1)]


def _conversation(system: str, user: str, assistant: dict[str, Any]) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", **assistant},
        ]
    }


def _code_call(*calls: Call) -> dict[str, Any]:
    return {"content": "", "tool_calls": [wrap_code(list(calls)).openai()]}


# --- check 6: call syntax ------------------------------------------------------------------------


@needs_shared
def test_xml_calls_fail_for_the_8b_base(phase40: Experiment, base: preflight.Side) -> None:
    system = system_prompt(phase40)
    raw = render(Call("execute_code", {"code": "read_file(path='a.py')"}), "xml")
    data = _examples([_conversation(system, "show a.py", {"content": raw})])
    finding = check_call_syntax(
        base, preflight.render_examples(base, data), load_catalog(), mask_prompt=True
    )
    assert finding.failed
    assert "0/1 trained calls parse with json_tools" in finding.figure
    assert "xml 0" not in finding.figure and "code 1" in finding.figure
    assert "fixture.jsonl:1" in finding.detail and "JSONDecodeError" in finding.detail


@needs_shared
def test_structured_calls_pass_for_the_8b_base(phase40: Experiment, base: preflight.Side) -> None:
    system = system_prompt(phase40)
    data = _examples(
        [_conversation(system, "show a.py", _code_call(Call("read_file", {"path": "a.py"})))]
    )
    finding = check_call_syntax(
        base, preflight.render_examples(base, data), load_catalog(), mask_prompt=True
    )
    assert finding.verdict == "pass", finding.message()
    assert finding.figure.startswith("1/1 trained calls parse with json_tools")


@needs_shared
def test_xml_calls_pass_for_the_coder_base(phase40: Experiment, reference: preflight.Side) -> None:
    system = system_prompt(phase40)
    raw = render(Call("execute_code", {"code": "read_file(path='a.py')"}), "xml")
    data = _examples([_conversation(system, "show a.py", {"content": raw})])
    finding = check_call_syntax(
        reference, preflight.render_examples(reference, data), load_catalog(), mask_prompt=True
    )
    assert finding.verdict == "pass", finding.message()


# --- check 8: thinking ---------------------------------------------------------------------------


def _thinking(phase40: Experiment, base: preflight.Side, **eval_settings: Any) -> preflight.Finding:
    experiment = dataclasses.replace(
        phase40, eval=dataclasses.replace(phase40.eval, **eval_settings)
    )
    system = system_prompt(experiment)
    data = _examples(
        [_conversation(system, "lint x.py", _code_call(Call("ruff_check", {"path": "x.py"})))]
    )
    return check_thinking(base, preflight.render_examples(base, data), experiment, system)


@needs_shared
def test_think_stop_sequence_cuts_every_target(phase40: Experiment, base) -> None:
    finding = _thinking(phase40, base, enable_thinking=None, stop=("<think>",))
    assert finding.failed
    assert "1/1 trained targets start with the empty think block" in finding.figure
    assert "stop sequence '<think>' occurs in 1/1 trained targets" in finding.detail
    assert "set eval.enable_thinking = false" in finding.detail


@needs_shared
def test_thinking_disabled_holds_the_block_in_the_prompt(phase40: Experiment, base) -> None:
    finding = _thinking(phase40, base, enable_thinking=False, stop=("<think>",))
    assert finding.verdict == "pass", finding.message()


@needs_shared
def test_prompt_holding_what_targets_lack_fails(phase40: Experiment, reference) -> None:
    # The Coder template has no thinking mode, so the setting is inert there: a pass that says so.
    finding = _thinking(phase40, reference, enable_thinking=False, stop=())
    assert finding.verdict == "pass"
    assert "no thinking mode" in finding.figure


# --- check 9: masking ----------------------------------------------------------------------------


def _masked_only_dataset(system: str) -> list[Example]:
    catalog = load_catalog()
    records = [
        _conversation(system, f"use {t.name}", _code_call(Call(t.name, {})))
        for t in catalog.tools
        if t.name != "hover"
    ]
    hover_call = _code_call(
        Call("hover", {"file_path": "a.py", "line": 1, "column": 1, "symbol": "f"})
    )
    records.append(
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "what is f?"},
                {"role": "assistant", **hover_call},
                {"role": "tool", "content": "def f() -> int"},
                {"role": "assistant", "content": "f returns an int."},
            ]
        }
    )
    return _examples(records)


def test_tool_only_in_masked_turns_fails(phase40: Experiment) -> None:
    data = _masked_only_dataset(system_prompt(phase40))
    finding, per_tool = check_masking(data, load_catalog(), mask_prompt=True)
    assert finding.failed
    assert per_tool["hover"] == {"trained": 0, "masked_only": 1}
    assert "never trained: hover" in finding.detail
    assert "only in masked turns" in finding.detail


def test_tool_in_masked_turns_passes_without_mask(phase40: Experiment) -> None:
    data = _masked_only_dataset(system_prompt(phase40))
    finding, per_tool = check_masking(data, load_catalog(), mask_prompt=False)
    assert finding.verdict == "pass", finding.message()
    assert per_tool["hover"]["trained"] == 1


def test_a_tool_only_in_masked_turns_is_not_trained(phase40: Experiment) -> None:
    data = _masked_only_dataset(system_prompt(phase40))
    _, per_tool = check_masking(data, load_catalog(), mask_prompt=True)
    finding = check_tool_trained("hover", per_tool["hover"], mask_prompt=True)
    assert finding.failed and finding.subject == "hover"
    assert finding.figure == (
        "hover is never a trained call in train.jsonl (1 examples hold it only in masked "
        "turns; mask_prompt=True)"
    )
    read = check_tool_trained("read_file", per_tool["read_file"], mask_prompt=True)
    assert read.verdict == "pass" and read.figure == "trained in 1 examples"


def test_a_tool_in_masked_turns_is_trained_without_mask(phase40: Experiment) -> None:
    data = _masked_only_dataset(system_prompt(phase40))
    _, per_tool = check_masking(data, load_catalog(), mask_prompt=False)
    finding = check_tool_trained("hover", per_tool["hover"], mask_prompt=False)
    assert finding.verdict == "pass", finding.message()


# --- checks 1-4 on the real files ----------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("side_name", preflight.SIDES)
def test_pinned_tokens_on_real_files(phase40: Experiment, side_name: str, request) -> None:
    side = request.getfixturevalue(side_name)
    for token, pinned in phase40.tokens.items():
        finding = check_special_token(side, token, pinned)
        assert finding.verdict == "pass", finding.message()
    assert side.parser == ("json_tools" if side_name == "base" else "qwen3_coder")


@needs_shared
def test_unknown_token_is_named(base: preflight.Side) -> None:
    finding = check_special_token(base, "<tool_cal>", 151657)
    assert finding.failed
    assert "'<tool_cal>' splits into" in finding.figure and "151657" in finding.detail


@needs_shared
def test_chatml_identical_on_real_files(phase40: Experiment, base, reference) -> None:
    finding = check_chatml(base, reference, system_prompt(phase40), "hello")
    assert finding.verdict == "pass", finding.message()


@needs_shared
def test_tools_in_the_prompt_frame_the_models_differently(phase40: Experiment, base, reference):
    catalog = load_catalog()
    record = _conversation(
        "You route.",
        "show a.py",
        {"content": "", "tool_calls": [Call("read_file", {"path": "a"}).openai()]},
    )
    record["tools"] = catalog.openai_tools()
    data = _examples([record])
    finding = check_rendering(
        preflight.render_examples(base, data), preflight.render_examples(reference, data), "train"
    )
    assert finding.failed
    assert "0/1 prompts framed alike" in finding.figure
    assert "fixture.jsonl:1" in finding.detail


# --- bad input -----------------------------------------------------------------------------------


def test_missing_model_folder_is_named(tmp_path: Path) -> None:
    experiment = with_overrides(load_experiment("phase40"), base_model=str(tmp_path / "nope"))
    with pytest.raises(ModelError, match=r"model folder .*nope does not exist"):
        preflight.load_side(experiment, "base", Workspace(tmp_path))


def test_unreachable_hub_id_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    experiment = with_overrides(load_experiment("phase40"), base_model="nobody/no-such-model")
    with pytest.raises(
        ModelError,
        match=r"cannot fetch tokenizer files for hub id "
        r"'nobody/no-such-model'.*--base-model",
    ):
        preflight.load_side(experiment, "base", Workspace(tmp_path))


def test_malformed_jsonl_line_is_named(tmp_path: Path) -> None:
    good = json.dumps(_conversation("s", "u", {"content": "a"}))
    path = tmp_path / "train.jsonl"
    path.write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(DataError, match=r"train\.jsonl:3: not valid JSON"):
        read_jsonl(path)


def test_disk_need_above_free_space_fails(tmp_path: Path) -> None:
    assert check_disk(tmp_path, 1e9).failed
    assert check_disk(tmp_path, 0.0).verdict == "pass"


@needs_shared
def test_piecewise_encoding_equals_direct_encoding(phase40: Experiment, base, reference) -> None:
    from pipeline.data import ensure_data, read_split

    examples = read_split(ensure_data(phase40, workspace=Workspace.at()), "valid")
    texts = [r.text for r in preflight.render_examples(base, examples)]
    for side in (base, reference):
        assert encode(side.tokenizer, texts) == encode_direct(side.tokenizer, texts)


@needs_shared
def test_generated_phase40_data_passes_the_whole_preflight(phase40: Experiment) -> None:
    findings = preflight.run_preflight(phase40, workspace=Workspace.at())
    failed = [f.message() for f in findings if f.failed]
    assert not failed, "\n\n".join(failed)
    checks = {f.check for f in findings}
    assert {
        "load",
        "tool-trained",
        "special-tokens",
        "chatml",
        "special-positions",
        "call-syntax",
        "thinking",
        "rendering",
        "masking",
        "system-prompt",
        "eval-overlap",
        "data",
        "lengths",
        "disk",
    } <= checks


# --- lengths and special-positions: one data set that passes, one that fails -----------------


@pytest.fixture(scope="module")
def rendered_valid(phase40: Experiment, base) -> list[preflight.Rendered]:
    from pipeline.data import ensure_data, read_split

    valid = read_split(ensure_data(phase40, workspace=Workspace.at()), "valid")
    return preflight.render_examples(base, valid)


@needs_shared
def test_lengths_pass_within_the_limit_and_fail_past_it(rendered_valid) -> None:
    longest = max(r.n_tokens for r in rendered_valid)
    passed = check_lengths(rendered_valid, "valid", longest)
    assert passed.verdict == "pass", passed.message()
    failed = check_lengths(rendered_valid, "valid", longest - 1)
    assert failed.verdict == "fail"
    assert "exceed train.max_seq_length" in failed.detail and f"({longest} tokens)" in failed.detail


@needs_shared
def test_lengths_fail_when_the_prompt_is_not_a_prefix_of_the_render(rendered_valid) -> None:
    moved = [dataclasses.replace(rendered_valid[0], aligned=False), *rendered_valid[1:]]
    failed = check_lengths(moved, "valid", 10_000)
    assert failed.verdict == "fail" and "mask-prompt cuts at the wrong place" in failed.detail


@needs_shared
def test_special_positions_pass_for_tokenizers_that_pin_alike(
    phase40: Experiment, base, reference, rendered_valid
) -> None:
    found = check_special_positions(base, reference, rendered_valid, phase40.tokens)
    assert found.verdict == "pass", found.message()


@needs_shared
def test_special_positions_fail_for_a_tokenizer_that_pins_elsewhere(
    phase40: Experiment, base, rendered_valid
) -> None:
    """tiny's tokenizer (learnt from its data) gives ChatML's tokens ids 1 and 2, not Qwen's."""
    tiny_side = preflight.load_side(load_experiment("tiny"), "base", Workspace.at())
    found = check_special_positions(base, tiny_side, rendered_valid, phase40.tokens)
    assert found.verdict == "fail"
    assert found.figure.startswith(f"0/{len(rendered_valid)} examples agree")
    assert "base puts pinned tokens at [(0, 151644)" in found.detail
