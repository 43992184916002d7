"""A 27th tool needs data only: fixtures/tools.json plus fixtures/data_templates.toml.

A copy of both files gains `count_lines` (category text_tools); the generator trains it like
every other tool, the summary counts it as a trained call, and scoring routes a reply to it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.data import (
    DEFAULT_TEMPLATES_PATH,
    DataError,
    Templates,
    describe,
    generate,
    load_templates,
    message_problem,
    read_split,
    summarize,
)
from pipeline.definitions.calls import render
from pipeline.definitions.catalog import DEFAULT_CATALOG_PATH, Catalog, load_catalog
from pipeline.definitions.experiment import CallMode, Experiment, load_experiment
from pipeline.definitions.prompts import EvalPrompt, Expectation
from pipeline.eval.scoring import extract, score

TOOL = "count_lines"
CATEGORY = "text_tools"
SCHEMA = {
    "name": TOOL,
    "category": CATEGORY,
    "description": "Count the lines of a text file.",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string", "description": "Path of the file to count"}},
        "required": ["path"],
    },
}
REQUESTS = """count_lines = [
    "How many lines does {path} have?",
    "Count the lines in {path}.",
    "What is the line count of {path}?",
    "wc -l {path}, please.",
    "Tell me how long {path} is, in lines.",
]
"""
TABLES = """
[clauses.count_lines]
first = ["count the lines of {path}", "tell me how many lines {path} has"]
same = ["count its lines"]

[tools.count_lines]
slots.path = { chance = 0.7, then = { value = "file" }, else = { pool = "other_files" } }
chain = { refers = ["path"], lead = true, set = { path = { ref = "source" } } }
response.values = { count = { int = [10, 900] } }
response.tool = "{count} {path}"
response.answer = "{path} has {count} lines."
"""


def _with_tool(tmp_path: Path) -> tuple[Catalog, Templates]:
    """Copies of the shipped catalog and templates with one more tool, loaded from tmp_path."""
    catalog = json.loads(DEFAULT_CATALOG_PATH.read_text(encoding="utf-8"))
    catalog["tools"].append(SCHEMA)
    (tmp_path / "tools.json").write_text(json.dumps(catalog, indent=2), encoding="utf-8")
    text = DEFAULT_TEMPLATES_PATH.read_text(encoding="utf-8")
    for anchor, added in (
        ("[requests]\n", REQUESTS),
        ("recipes = [\n", '    ["count_lines", "ruff_check"],\n'),
    ):
        assert text.count(anchor) == 1
        text = text.replace(anchor, anchor + added)
    (tmp_path / "data_templates.toml").write_text(text + TABLES, encoding="utf-8")
    return load_catalog(tmp_path / "tools.json"), load_templates(tmp_path / "data_templates.toml")


def _sized(experiment: Experiment, train: int, valid: int) -> Experiment:
    data = dataclasses.replace(experiment.data, train_count=train, valid_count=valid)
    return dataclasses.replace(experiment, data=data)


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, Templates]:
    return _with_tool(tmp_path_factory.mktemp("fixtures"))


@pytest.mark.parametrize("mode", ["direct", "code"])
def test_a_new_tool_is_trained_from_data_alone(
    extended: tuple[Catalog, Templates], tmp_path: Path, mode: CallMode
) -> None:
    catalog, templates = extended
    assert len(catalog.tools) == 27 and catalog.tool(TOOL).category == CATEGORY
    # tiny calls tools directly; phase40's system prompt lists them as Python stubs.
    experiment = _sized(load_experiment("tiny" if mode == "direct" else "phase40"), 400, 80)
    generate(experiment, tmp_path, mode=mode, catalog=catalog, templates=templates)
    splits = {s: [e.record for e in read_split(tmp_path, s)] for s in ("train", "valid")}
    for records in splits.values():
        assert all(message_problem(r) is None for r in records)
    summary = summarize(splits, catalog)
    assert summary["train"]["tool"][TOOL] >= 5 and summary["valid"]["tool"][TOOL] >= 1
    assert "unknown" not in summary["train"]["category"]
    described = [describe(r, catalog) for r in splits["train"]]
    kinds = {d.kind for d in described if TOOL in d.tools}
    assert kinds == {"single", "chain", "multi_turn"}
    for d in described:
        if d.kind == "single" and d.tools == (TOOL,):
            assert d.category == CATEGORY
    responses = [
        m["content"]
        for r in splits["train"]
        if describe(r, catalog).tools == (TOOL,) and describe(r, catalog).kind == "multi_turn"
        for m in r["messages"]
        if m["role"] == "tool"
    ]
    assert responses and all(m.split(" ")[0].isdigit() for m in responses)
    system = splits["train"][0]["messages"][0]["content"]
    if mode == "code":
        assert f"def {TOOL}(path: str) -> str:" in system
    else:
        assert [t["function"]["name"] for t in splits["train"][0]["tools"]][-1] == TOOL


def _reply(calls: list[tuple[str, dict[str, Any]]], code: bool) -> dict[str, Any]:
    if code:
        source = "\n".join(
            f"print({name}({', '.join(f'{k}={json.dumps(v)}' for k, v in args.items())}))"
            for name, args in calls
        )
        calls = [("execute_code", {"code": source})]
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for name, args in calls
        ],
    }


@pytest.mark.parametrize("code", [False, True])
def test_a_reply_calling_the_new_tool_is_scored_with_its_catalog(
    extended: tuple[Catalog, Templates], code: bool
) -> None:
    catalog, _ = extended
    prompt = EvalPrompt(
        id="count_lines_1",
        category=CATEGORY,
        text="How many lines are in services/billing/invoice.py?",
        match="any_of",
        expect=(Expectation(TOOL, {"path": ("services/billing/invoice.py",)}),),
    )
    right = _reply([(TOOL, {"path": "services/billing/invoice.py"})], code)
    got = score(
        extract(right, "tool_calls", catalog),
        prompt,
        primary="routing",
        code_mode=code,
        catalog=catalog,
    )
    assert (got.value, got.routing, got.arguments, got.format) == (1.0, 1.0, 1.0, True), got
    wrong = _reply([("read_file", {"path": "services/billing/invoice.py"})], code)
    got = score(
        extract(wrong, "tool_calls", catalog),
        prompt,
        primary="routing",
        code_mode=code,
        catalog=catalog,
    )
    assert got.routing == 0.0 and "read_file" in got.reason
    # Its XML form is typed by the new catalog's schema, as the converter reads it.
    (call,) = extract(right, "stop", catalog).calls
    assert render(call, "xml").startswith(f"<tool_call>\n<function={TOOL}>")


def test_a_catalog_tool_without_templates_names_what_to_add(tmp_path: Path) -> None:
    catalog, _ = _with_tool(tmp_path)
    experiment = _sized(load_experiment("tiny"), 40, 10)
    with pytest.raises(DataError, match=r"'count_lines'.*\[tools\.count_lines\]"):
        generate(experiment, tmp_path / "out", catalog=catalog, templates=load_templates())
