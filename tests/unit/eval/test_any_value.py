"""`any_value` in an expectation: required arguments whose value the prompt leaves open.

"Find the definition of AgentConfig in the codebase." gives goto_definition no file, line or
column; the expectation lists them in `any_value`, so a call is judged on having them at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.prompts import EvalPrompt, PromptError, load_prompts
from pipeline.eval.scoring import Score, extract, score

CATALOG = load_catalog()
AGENT_CONFIG = """
[[prompt]]
id = "lsp-any"
category = "lsp"
text = "Find the definition of AgentConfig in the codebase."
match = "any_of"
[[prompt.expect]]
tool = "goto_definition"
args = { symbol = ["AgentConfig"] }
any_value = ["file_path", "line", "column"]
"""
POSITION = {"file_path": "agents/config.py", "line": 12, "column": 7}


def _load(tmp_path: Path, text: str) -> tuple[EvalPrompt, ...]:
    path = tmp_path / "prompts.toml"
    path.write_text(text, encoding="utf-8")
    return load_prompts(path, CATALOG)


def _message(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One call as mlx_lm's server returns it: parsed, arguments a JSON string."""
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c0", "type": "function", "function": function}],
    }


def _score(
    prompt: EvalPrompt, name: str, arguments: dict[str, Any], *, code_mode: bool = False
) -> Score:
    ex = extract(_message(name, arguments), "stop", CATALOG)
    return score(ex, prompt, primary="arguments", code_mode=code_mode, catalog=CATALOG)


@pytest.fixture
def agent_config(tmp_path: Path) -> EvalPrompt:
    return _load(tmp_path, AGENT_CONFIG)[0]


def test_any_value_is_parsed_beside_the_allowed_values(agent_config: EvalPrompt) -> None:
    (exp,) = agent_config.expect
    assert exp.args == {"symbol": ("AgentConfig",)}
    assert exp.any_value == ("file_path", "line", "column")
    assert exp.optional == ()


def test_a_reply_with_the_open_arguments_passes(agent_config: EvalPrompt) -> None:
    s = _score(agent_config, "goto_definition", {**POSITION, "symbol": "AgentConfig"})
    assert (s.value, s.routing, s.arguments) == (1.0, 1.0, 1.0)
    assert s.reason.startswith("ok: goto_definition(")


def test_any_other_value_of_an_open_argument_passes_too(agent_config: EvalPrompt) -> None:
    other = {"file_path": "src/settings/agent.py", "line": "400", "column": 1}
    s = _score(agent_config, "goto_definition", {**other, "symbol": "AgentConfig"})
    assert s.arguments == 1.0


def test_a_missing_open_argument_fails(agent_config: EvalPrompt) -> None:
    args = {"file_path": "agents/config.py", "column": 7, "symbol": "AgentConfig"}
    s = _score(agent_config, "goto_definition", args)
    assert (s.routing, s.arguments) == (1.0, 0.0)
    assert s.reason == "goto_definition missing line (any value)"


def test_an_empty_open_argument_fails(agent_config: EvalPrompt) -> None:
    args = {**POSITION, "file_path": " ", "symbol": "AgentConfig"}
    s = _score(agent_config, "goto_definition", args)
    assert s.arguments == 0.0
    assert s.reason == "goto_definition file_path=' ' is empty (any non-empty value)"


def test_the_fixed_arguments_still_need_an_allowed_value(agent_config: EvalPrompt) -> None:
    s = _score(agent_config, "goto_definition", {**POSITION, "symbol": "AgentSettings"})
    assert s.arguments == 0.0
    assert s.reason == "goto_definition symbol='AgentSettings' not in allowed ['AgentConfig']"


def test_a_computed_open_argument_fails_as_a_computed_allowed_one(agent_config: EvalPrompt) -> None:
    src = 'n = 3\nprint(goto_definition(file_path="a.py", line=n, column=1, symbol="AgentConfig"))'
    s = _score(agent_config, "execute_code", {"code": src}, code_mode=True)
    assert s.reason == "goto_definition line is computed, not a literal (any value)"


def test_an_open_argument_that_is_also_optional_may_be_left_out(tmp_path: Path) -> None:
    (prompt,) = _load(
        tmp_path,
        AGENT_CONFIG.replace(
            'any_value = ["file_path", "line", "column"]',
            'any_value = ["file_path", "line", "column"]\noptional = ["column"]',
        ),
    )
    args = {"file_path": "agents/config.py", "line": 12, "symbol": "AgentConfig"}
    assert _score(prompt, "goto_definition", args).arguments == 1.0
    s = _score(prompt, "goto_definition", {**args, "column": ""})
    assert s.reason == "goto_definition column='' is empty (any non-empty value)"


def test_zero_and_false_are_values(tmp_path: Path) -> None:
    (prompt,) = _load(
        tmp_path,
        """
[[prompt]]
id = "git-any"
category = "git"
text = "Show a diff, staged or not, your pick."
match = "any_of"
[[prompt.expect]]
tool = "git_diff"
any_value = ["staged"]
""",
    )
    assert _score(prompt, "git_diff", {"staged": False}).arguments == 1.0
    assert _score(prompt, "git_diff", {}).reason == "git_diff missing staged (any value)"


SYMBOL = 'args = { symbol = ["AgentConfig"] }\n'


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        (
            SYMBOL + 'any_value = ["file_path", "line", "colum"]',
            "any_value names 'colum', which is not an argument",
        ),
        (
            'args = { symbol = ["AgentConfig"], line = [3] }\nany_value = ["line", "column"]',
            "'line' is both in args and in any_value",
        ),
        (SYMBOL + 'any_value = "file_path"', "any_value must be a list of argument names"),
        (
            SYMBOL + 'any_value = ["file_path", "line", "column", "line"]',
            "any_value lists 'line' twice",
        ),
        (
            SYMBOL + 'any_value = ["file_path", "line"]',
            "leaves out required 'column' (give its allowed values in args, or list it in "
            "any_value)",
        ),
        (
            SYMBOL + 'any_values = ["file_path", "line", "column"]',
            "goto_definition expectation has unknown key 'any_values'",
        ),
    ],
)
def test_bad_any_value_input_names_the_prompt(tmp_path: Path, expect: str, message: str) -> None:
    text = AGENT_CONFIG.replace(SYMBOL + 'any_value = ["file_path", "line", "column"]', expect)
    assert text != AGENT_CONFIG
    with pytest.raises(PromptError, match="prompt 'lsp-any'") as err:
        _load(tmp_path, text)
    assert message in str(err.value)
