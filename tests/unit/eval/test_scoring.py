"""Scoring: hand-written replies of every shape a server or model produces -> score + reason.

Replies are written the way mlx_lm's server returns them: parsed `tool_calls` carry
`arguments` as a JSON string with `content` null; a call cut off by max_tokens vanishes
(`content` null, no `tool_calls`, finish_reason "length").
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.definitions.calls import Call, render
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import ScoreName, load_experiment
from pipeline.definitions.prompts import EvalPrompt, Expectation, load_prompts
from pipeline.eval.scoring import FAILURES, Extraction, Score, extract, score

CATALOG = load_catalog()
PROMPTS = {p.id: p for p in load_prompts(load_experiment("phase40").eval.prompts, CATALOG)}
GATEWAY = "payments/gateway.py"
MULTI_CODE = (
    'print(read_file(path="api/handlers.py"))\n'
    'print(ruff_check(path="api/handlers.py"))\n'
    'print(typecheck(path="api/handlers.py"))\n'
    'print(pytest_run(path="tests/test_handlers.py"))'
)


# --- reply builders ---------------------------------------------------------------------------


def native(*calls: tuple[str, Any]) -> dict[str, Any]:
    """An assistant message as mlx_lm's server returns parsed calls."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for i, (name, args) in enumerate(calls)
        ],
    }


def text(content: str | None) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def code(source: str) -> dict[str, Any]:
    return native(("execute_code", {"code": source}))


def run(
    message: dict[str, Any],
    prompt_id: str,
    *,
    finish: str | None = "stop",
    primary: ScoreName = "seed",
    code_mode: bool = True,
) -> tuple[Extraction, Score]:
    ex = extract(message, finish, CATALOG)
    return ex, score(ex, PROMPTS[prompt_id], primary=primary, code_mode=code_mode)


# --- extraction: every shape ------------------------------------------------------------------


def test_native_direct_call_as_mlx_lm_returns_it() -> None:
    msg = native(("typecheck", {"path": GATEWAY}))
    ex, s = run(msg, "validation-01", finish="tool_calls", primary="arguments", code_mode=False)
    assert ex == Extraction(calls=[Call("typecheck", {"path": GATEWAY})], source="native")
    assert (s.value, s.routing, s.arguments, s.format) == (1.0, 1.0, 1.0, True)
    assert s.reason == "ok: typecheck(path='payments/gateway.py')"
    assert s.calls == [{"name": "typecheck", "arguments": {"path": GATEWAY}}]


def test_native_arguments_as_a_mapping_are_read_too() -> None:
    msg = native(("typecheck", "{}"))
    msg["tool_calls"][0]["function"]["arguments"] = {"path": GATEWAY}
    ex = extract(msg, "tool_calls", CATALOG)
    assert ex.calls == [Call("typecheck", {"path": GATEWAY})]


def test_code_mode_one_call_via_native_execute_code() -> None:
    ex, s = run(code(f'print(typecheck(path="{GATEWAY}"))'), "validation-01", finish="tool_calls")
    assert ex.wrapped and ex.source == "native" and not ex.errors
    assert ex.calls == [Call("typecheck", {"path": GATEWAY})]
    assert (s.value, s.routing, s.arguments, s.format) == (1.0, 1.0, 1.0, True)


def test_code_mode_several_calls_in_source_order() -> None:
    ex, s = run(code(MULTI_CODE), "multi-01", finish="tool_calls", primary="arguments")
    assert [c.name for c in ex.calls] == ["read_file", "ruff_check", "typecheck", "pytest_run"]
    assert (s.value, s.routing, s.arguments) == (1.0, 1.0, 1.0)
    assert s.reason.startswith("ok: read_file(path='api/handlers.py'), ruff_check(")


def test_raw_json_tool_call_left_in_content() -> None:
    content = "<think>\n\n</think>\n\n" + render(
        Call("ruff_check", {"path": "src/scheduler"}), "json"
    )
    ex, s = run(text(content), "validation-02", primary="arguments", code_mode=False)
    assert ex.source == "raw_json" and not ex.wrapped and ex.text == ""
    assert ex.calls == [Call("ruff_check", {"path": "src/scheduler"})]
    assert s.value == 1.0


def test_raw_json_execute_code_in_content_is_unwrapped() -> None:
    call = Call("execute_code", {"code": 'hover("http/parser.py", 120, 9, "parse_header")'})
    ex, s = run(text(render(call, "json")), "lsp-03", primary="arguments")
    assert ex.source == "raw_json" and ex.wrapped
    assert ex.calls == [
        Call(
            "hover",
            {"file_path": "http/parser.py", "line": 120, "column": 9, "symbol": "parse_header"},
        )
    ]
    assert (s.value, s.format) == (1.0, True)


def test_raw_xml_values_are_typed_by_the_catalog_schema() -> None:
    call = Call(
        "goto_definition",
        {"file_path": "cart/totals.py", "line": 42, "column": 15, "symbol": "apply_discount"},
    )
    content = render(call, "xml")
    assert "<parameter=line>\n42\n</parameter>" in content
    ex, s = run(text(content), "lsp-01", primary="arguments", code_mode=False)
    assert ex.source == "raw_xml"
    assert ex.calls == [call]  # line and column came back as ints
    assert s.value == 1.0


def test_raw_xml_execute_code() -> None:
    content = render(Call("execute_code", {"code": "git_log(count=5)"}), "xml")
    ex, s = run(text(content), "git-03")
    assert ex.source == "raw_xml" and ex.wrapped
    assert ex.calls == [Call("git_log", {"count": 5})]
    assert s.value == 1.0 and s.arguments == 1.0  # path is optional


def test_positional_arguments_in_code_take_the_tool_parameter_names() -> None:
    src = 'goto_definition("cart/totals.py", 42, 15, "apply_discount")'
    ex, s = run(code(src), "lsp-01", primary="arguments")
    assert ex.calls[0].arguments == {
        "file_path": "cart/totals.py",
        "line": 42,
        "column": 15,
        "symbol": "apply_discount",
    }
    assert s.value == 1.0


def test_an_extra_positional_argument_fails_arguments() -> None:
    _, s = run(code(f'typecheck("{GATEWAY}", True)'), "validation-01", primary="arguments")
    assert (s.routing, s.arguments) == (1.0, 0.0)
    assert s.reason == "typecheck got an extra positional argument True"


def test_code_that_does_not_parse_is_an_error_and_scores_zero() -> None:
    ex, s = run(code('typecheck(path="payments/gateway.py"'), "validation-01")
    assert ex.calls == [] and not ex.wrapped
    assert len(ex.errors) == 1 and "does not parse" in ex.errors[0]
    assert (s.value, s.routing, s.arguments, s.format) == (0.0, 0.0, 0.0, False)
    assert s.reason.startswith("execute_code's Python does not parse: ")


def test_execute_code_without_a_code_string_is_an_error() -> None:
    ex = extract(native(("execute_code", {"source": "typecheck('x')"})), "tool_calls", CATALOG)
    assert ex.calls == [] and ex.errors == ("execute_code has no string argument 'code'",)


@pytest.mark.parametrize(
    "reply",
    [
        "You should run ruff_check on it, or typecheck(path='payments/gateway.py').",
        "```python\ntypecheck(path='payments/gateway.py')\n```",
    ],
)
def test_prose_naming_a_tool_is_never_a_call(reply: str) -> None:
    ex, s = run(text(reply), "validation-01")
    assert ex.calls == [] and ex.source == "none" and ex.errors == () and not ex.truncated
    assert ex.text == reply
    assert (s.value, s.routing, s.arguments) == (0.0, 0.0, 0.0)
    assert s.reason.startswith("no call (prose): ")


def test_prose_reason_is_a_short_snippet() -> None:
    _, s = run(text("I would run the type checker on the gateway module. " * 5), "validation-01")
    assert (
        s.reason
        == "no call (prose): 'I would run the type checker on the gateway module. I wou...'"
    )


def test_empty_reply() -> None:
    for content in ("", None, "  \n"):
        ex, s = run(text(content), "validation-01")
        assert ex == Extraction()
        assert s.value == 0.0 and s.reason == "no call (empty reply)"


def test_wrong_arguments_keep_routing_and_name_the_allowed_values() -> None:
    _, s = run(code('typecheck(path="x.py")'), "validation-01", primary="arguments")
    assert (s.value, s.routing, s.arguments, s.format) == (0.0, 1.0, 0.0, True)
    assert s.reason == (
        "typecheck path='x.py' not in allowed ['payments/gateway.py', './payments/gateway.py']"
    )
    _, seed = run(code('typecheck(path="x.py")'), "validation-01", primary="seed")
    assert seed.value == 1.0  # the seed's scheme scores the tool, not its arguments
    assert seed.reason.startswith("ok (seed); typecheck path='x.py' not in allowed")


def test_wrong_tool_reason() -> None:
    _, s = run(native(("ruff_check", {"path": GATEWAY})), "validation-01", code_mode=False)
    assert (s.routing, s.arguments) == (0.0, 0.0)
    assert s.reason == "called ruff_check, expected typecheck"


# --- truncation and garbage -------------------------------------------------------------------


def test_tool_call_cut_off_by_max_tokens_vanishes_but_is_not_silence() -> None:
    ex, s = run({"role": "assistant", "content": None}, "multi-01", finish="length")
    assert ex.truncated and ex.calls == []
    assert "truncated at max_tokens" in ex.errors[0]
    assert s.value == 0.0 and s.reason.startswith("truncated at max_tokens with an empty reply")


def test_unclosed_tool_call_block_is_truncated() -> None:
    content = '<tool_call>\n{"name": "execute_code", "arguments": {"code": "read_file(path=\\"api/'
    ex, s = run(text(content), "multi-01", finish="length")
    assert ex.truncated and ex.calls == [] and ex.source == "raw_json"
    assert ex.errors == ("truncated at max_tokens before </tool_call>",)
    assert s.value == 0.0 and s.reason == "truncated at max_tokens before </tool_call>"


def test_unclosed_block_without_length_is_still_truncated() -> None:
    ex = extract(text('<tool_call>\n{"name": "git_status"'), "stop", CATALOG)
    assert ex.truncated and ex.errors == (
        "tool call cut off before </tool_call> (finish_reason 'stop')",
    )


def test_prose_cut_by_max_tokens_is_truncated_and_says_prose() -> None:
    ex, s = run(text("Let me think about which tool fits"), "validation-01", finish="length")
    assert ex.truncated and ex.errors == ()
    assert (
        s.reason
        == "truncated at max_tokens with no call (prose): 'Let me think about which tool fits'"
    )


def test_complete_call_then_a_cut_off_one_keeps_the_complete_call() -> None:
    content = render(Call("read_file", {"path": "api/handlers.py"}), "json") + "\n<tool_call>\n{"
    ex, s = run(text(content), "multi-01", finish="length", primary="routing", code_mode=False)
    assert ex.truncated and ex.calls == [Call("read_file", {"path": "api/handlers.py"})]
    assert s.value == 0.25
    assert s.reason.endswith("also: truncated at max_tokens before </tool_call>")


def test_garbage_json_in_native_tool_call_is_an_error_not_a_call() -> None:
    ex, s = run(
        native(("typecheck", "{path: payments/gateway.py")), "validation-01", code_mode=False
    )
    assert ex.calls == [] and ex.source == "native"
    assert ex.errors == ("tool_calls[0] arguments are not valid JSON (typecheck)",)
    assert s.value == 0.0 and s.reason == ex.errors[0]


def test_garbage_json_in_raw_block_is_an_error_not_a_call() -> None:
    ex, s = run(
        text('<tool_call>\n{"name": "typecheck", "arguments": {path}}\n</tool_call>'),
        "validation-01",
    )
    assert ex.calls == [] and ex.source == "raw_json" and not ex.truncated
    assert ex.errors[0].startswith("tool call is not valid JSON")
    assert s.value == 0.0


def test_one_garbage_call_beside_a_good_one() -> None:
    msg = native(("typecheck", {"path": GATEWAY}), ("ruff_check", "{oops"))
    ex, s = run(msg, "validation-01", primary="arguments", code_mode=False)
    assert ex.calls == [Call("typecheck", {"path": GATEWAY})]
    assert ex.errors == ("tool_calls[1] arguments are not valid JSON (ruff_check)",)
    assert s.value == 1.0
    assert (
        s.reason == "ok (arguments); also: tool_calls[1] arguments are not valid JSON (ruff_check)"
    )


# --- argument matching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "ok"),
    [
        ('typecheck(path="./payments/gateway.py")', True),
        ('typecheck(path="  payments/gateway.py\\n")', True),
        ('typecheck(path="payments/gateway")', False),
    ],
)
def test_strings_are_normalised(src: str, ok: bool) -> None:
    _, s = run(code(src), "validation-01", primary="arguments")
    assert s.value == (1.0 if ok else 0.0)


def test_numeric_strings_equal_ints() -> None:
    src = (
        'goto_definition(file_path="cart/totals.py", line="42", column=15, symbol="apply_discount")'
    )
    _, s = run(code(src), "lsp-01", primary="arguments")
    assert s.value == 1.0
    _, s = run(code(src.replace('"42"', '"43"')), "lsp-01", primary="arguments")
    assert s.reason == "goto_definition line='43' not in allowed [42]"


def test_booleans_compare_exactly() -> None:
    ok = native(("git_diff", {"staged": True}))
    as_string = native(("git_diff", {"staged": "true"}))
    as_int = native(("git_diff", {"staged": 1}))
    assert run(ok, "git-02", primary="arguments", code_mode=False)[1].value == 1.0
    assert run(as_string, "git-02", primary="arguments", code_mode=False)[1].value == 0.0
    _, s = run(as_int, "git-02", primary="arguments", code_mode=False)
    assert s.reason == "git_diff staged=1 not in allowed [True]"


def test_optional_arguments_may_be_left_out_but_must_be_allowed_when_given() -> None:
    assert run(code("git_status()"), "git-01", primary="arguments")[1].value == 1.0
    assert run(code('git_status(path=".")'), "git-01", primary="arguments")[1].value == 1.0
    _, s = run(code('git_status(path="src")'), "git-01", primary="arguments")
    assert s.reason == "git_status path='src' not in allowed ['.']"


def test_a_missing_required_argument_fails() -> None:
    _, s = run(code("git_diff()"), "git-02", primary="arguments")
    assert (s.routing, s.arguments) == (1.0, 0.0)
    assert s.reason == "git_diff missing staged (allowed [True])"


def test_an_argument_outside_the_schema_fails() -> None:
    _, s = run(
        code(f'typecheck(path="{GATEWAY}", strict=True)'), "validation-01", primary="arguments"
    )
    assert s.reason == "typecheck got unexpected argument strict=True"


def test_a_computed_argument_fails_with_a_reason() -> None:
    src = f'p = "{GATEWAY}"\nprint(typecheck(path=p))'
    ex, s = run(code(src), "validation-01", primary="arguments")
    assert ex.calls == [Call("typecheck", {"path": "<non-literal>"})]
    assert s.value == 0.0 and s.reason.startswith("typecheck path is computed, not a literal")


def test_any_of_passes_when_any_call_meets_the_expectation() -> None:
    src = f'typecheck(path="x.py")\nread_file(path="{GATEWAY}")\ntypecheck(path="{GATEWAY}")'
    _, s = run(code(src), "validation-01", primary="arguments")
    assert (s.routing, s.arguments) == (1.0, 1.0)


# --- multi_tool (all_of) ----------------------------------------------------------------------


def test_multi_tool_two_of_four_is_half_credit() -> None:
    src = 'read_file(path="api/handlers.py")\nruff_check(path="api/handlers.py")'
    _, routing = run(code(src), "multi-01", primary="routing")
    assert (routing.value, routing.routing, routing.arguments) == (0.5, 0.5, 0.5)
    assert routing.reason == (
        "called 2 of 4 expected tools, missing typecheck, pytest_run (called read_file, ruff_check)"
    )
    _, seed = run(code(src), "multi-01", primary="seed")
    assert seed.value == pytest.approx(0.6)  # 2/4 + 0.1 for wrapping
    direct = native(
        ("read_file", {"path": "api/handlers.py"}), ("ruff_check", {"path": "api/handlers.py"})
    )
    _, unwrapped = run(direct, "multi-01", primary="seed")
    assert unwrapped.value == 0.5 and not unwrapped.format


def test_multi_tool_wrapped_cap_and_each_call_counts_once() -> None:
    _, s = run(code(MULTI_CODE), "multi-01", primary="seed")
    assert s.value == 1.0  # 1.0 + 0.1 capped
    twice = 'read_file(path="api/handlers.py")\nread_file(path="api/handlers.py")'
    _, s = run(code(twice), "multi-01", primary="routing")
    assert s.value == 0.25


def test_multi_tool_is_order_insensitive_and_args_count_separately() -> None:
    src = (
        'pytest_run(path="tests/test_handlers.py")\ntypecheck(path="api/handlers.py")\n'
        'ruff_check(path="api/other.py")\nread_file(path="api/handlers.py")'
    )
    _, s = run(code(src), "multi-01", primary="arguments")
    assert (s.routing, s.arguments) == (1.0, 0.75)
    assert s.reason == "ruff_check path='api/other.py' not in allowed ['api/handlers.py']"


def test_all_of_matching_finds_the_best_assignment() -> None:
    # The first typecheck call fits either expectation; a greedy match would waste it.
    prompt = EvalPrompt(
        "t",
        "multi_tool",
        "t",
        "all_of",
        (
            Expectation("typecheck", {"path": ("a.py", "b.py")}),
            Expectation("typecheck", {"path": ("a.py",)}),
        ),
    )
    ex = extract(code('typecheck(path="a.py")\ntypecheck(path="b.py")'), "tool_calls", CATALOG)
    s = score(ex, prompt, primary="arguments", code_mode=True, catalog=CATALOG)
    assert s.value == 1.0


# --- no-tool prompts --------------------------------------------------------------------------


def test_no_tool_prompt_without_a_call() -> None:
    _, s = run(text("LSP stands for Language Server Protocol."), "notool-01")
    assert (s.value, s.routing, s.arguments, s.format) == (1.0, 1.0, 1.0, True)
    assert s.reason == "ok: no call ('LSP stands for Language Server Protocol.')"


def test_no_tool_prompt_with_a_call() -> None:
    _, s = run(code('read_file(path="README.md")'), "notool-01")
    assert s.value == 0.0 and s.reason == "called read_file, expected no call"


def test_no_tool_prompt_with_an_attempted_call() -> None:
    _, s = run({"role": "assistant", "content": None}, "notool-02", finish="length")
    assert s.value == 0.0 and s.reason.startswith("expected no call, but tried one: truncated")
    _, s = run(code("print('you are welcome')"), "notool-02")
    assert s.value == 0.0 and s.reason == "expected no call, but called execute_code"


def test_no_tool_prompt_long_prose_cut_by_max_tokens_is_no_call() -> None:
    _, s = run(text("A list is mutable and a tuple is not, which"), "notool-03", finish="length")
    assert s.value == 1.0


# --- the seed's partial-credit scheme ---------------------------------------------------------


RIGHT = f'typecheck(path="{GATEWAY}")'
WRONG = f'ruff_check(path="{GATEWAY}")'


@pytest.mark.parametrize(
    ("message", "code_mode", "expected"),
    [
        (code(RIGHT), True, 1.0),  # wrapped, right tool
        (native(("typecheck", {"path": GATEWAY})), True, 0.5),  # right tool, unwrapped
        (code(WRONG), True, 0.1),  # wrapped, wrong tool
        (code("print('hi')"), True, 0.1),  # wrapped, no catalog tool
        (native(("ruff_check", {"path": GATEWAY})), True, 0.0),  # unwrapped, wrong tool
        (text("I would run typecheck."), True, 0.0),  # no call
        (native(("typecheck", {"path": GATEWAY})), False, 1.0),  # native: a parsed call
        (native(("ruff_check", {"path": GATEWAY})), False, 0.1),
        (text("I would run typecheck."), False, 0.0),
    ],
)
def test_seed_scheme_table(message: dict[str, Any], code_mode: bool, expected: float) -> None:
    _, s = run(message, "validation-01", primary="seed", code_mode=code_mode)
    assert s.value == expected


def test_format_reasons() -> None:
    _, s = run(native(("typecheck", {"path": GATEWAY})), "validation-01", code_mode=True)
    assert not s.format and s.reason == "typecheck called directly, not inside execute_code"
    _, s = run(code(RIGHT), "validation-01", code_mode=False)
    assert s.value == 1.0  # the seed's scheme counts a parsed call as wrapped in native mode
    assert (
        not s.format
        and s.reason == "ok (seed); calls wrapped in execute_code, expected direct calls"
    )
    _, s = run(code("print('hi')"), "validation-01")
    assert s.reason == "execute_code calls no catalog tool"


def test_wrong_tool_comes_before_format_in_the_reason() -> None:
    _, s = run(native(("ruff_check", {"path": GATEWAY})), "validation-01", code_mode=True)
    assert s.reason == (
        "called ruff_check, expected typecheck; ruff_check called directly, not inside execute_code"
    )


# --- failure types: one reply of each kind, through extract -> score ---------------------------

_FAILURE_CASES: dict[str, tuple[dict[str, Any], str, str | None, ScoreName, bool]] = {
    # type: (reply, prompt, finish_reason, primary score, code mode)
    "wrong_tool": (native(("ruff_check", {"path": GATEWAY})), "validation-01", "tool_calls",
                   "routing", False),
    "invented_tool": (native(("ruff_typecheck", {"path": GATEWAY})), "validation-01",
                      "tool_calls", "routing", False),
    "arguments": (native(("typecheck", {"path": "elsewhere.py"})), "validation-01",
                  "tool_calls", "arguments", False),
    "malformed": ({"role": "assistant", "content": None, "tool_calls": []}, "validation-01",
                  "tool_calls", "routing", False),
    "truncated": ({"role": "assistant", "content": None}, "validation-01", "length", "routing",
                  False),
    "prose": (text("I would run typecheck on it."), "validation-01", "stop", "routing", False),
    "unneeded_call": (native(("read_file", {"path": "README.md"})), "notool-01", "tool_calls",
                      "routing", False),
    "extra_calls": (native(("typecheck", {"path": GATEWAY}), ("read_file", {"path": GATEWAY})),
                    "validation-01", "tool_calls", "routing", False),
    "format": (native(("typecheck", {"path": GATEWAY})), "validation-01", "tool_calls", "seed",
               True),
}  # fmt: skip


def test_every_failure_type_has_a_case() -> None:
    assert set(_FAILURE_CASES) | {"error"} == set(FAILURES)


@pytest.mark.parametrize("kind", list(_FAILURE_CASES))
def test_each_failure_type_is_produced_by_its_reply(kind: str) -> None:
    reply, prompt_id, finish, primary, code_mode = _FAILURE_CASES[kind]
    _, s = run(reply, prompt_id, finish=finish, primary=primary, code_mode=code_mode)
    assert s.failure == kind, s.reason


def test_a_right_answer_has_no_failure_type() -> None:
    _, s = run(native(("typecheck", {"path": GATEWAY})), "validation-01", primary="arguments",
               code_mode=False)  # fmt: skip
    assert (s.value, s.failure) == (1.0, None)
    _, s = run(text("LSP stands for Language Server Protocol."), "notool-01")
    assert (s.value, s.failure) == (1.0, None)


def test_raw_call_text_the_server_left_unparsed_is_malformed_when_it_cannot_be_read() -> None:
    _, s = run(text('<tool_call>\n{"name": "typecheck", "arguments": {"path": '), "validation-01",
               finish="stop", primary="routing", code_mode=False)  # fmt: skip
    assert s.failure == "truncated"  # cut off before </tool_call>
    _, s = run(text("<tool_call>\n{not json}\n</tool_call>"), "validation-01", finish="stop",
               primary="routing", code_mode=False)  # fmt: skip
    assert s.failure == "malformed"


def test_a_request_without_an_answer_is_an_error_not_the_models_failure() -> None:
    from pipeline.eval.client import Record
    from pipeline.eval.run import score_record

    experiment = load_experiment("tiny")
    for prompt_id in ("validation-01", "notool-01"):
        record = Record("k", prompt_id, 0, 0.0, None, error="ConnectError: refused")
        scored = score_record(record, PROMPTS[prompt_id], experiment, CATALOG)
        assert scored.score.failure == "error"
