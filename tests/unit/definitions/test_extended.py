"""The extended eval prompt set: generated, loadable, sized per category, and held out.

Held out means: no phrasing of fixtures/eval_templates.toml is in the training generator's
templates, and the preflight's overlap check, run between the set and the tiny experiment's
generated training data, finds no prompt verbatim and none closer than CLOSEST_BOUND.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.data import DEFAULT_TEMPLATES_PATH as DATA_TEMPLATES_PATH
from pipeline.data import Example as TrainingExample
from pipeline.data import generate, message_calls, read_split
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import load_experiment, prompts_path
from pipeline.definitions.extended import (
    DEFAULT_OUT_PATH,
    DEFAULT_TEMPLATES_PATH,
    EvalTemplateError,
    main,
    render,
)
from pipeline.definitions.prompts import NO_TOOL, EvalPrompt, load_prompts
from pipeline.preflight.checks_data import _closest, check_eval_overlap

CATALOG = load_catalog()
PER_TOOL = 8
CHAINS = 16
NO_TOOLS = 16
CLOSEST_BOUND = 0.75
"""Measured: 0.70 against the tiny experiment's training data (and phase40's); the seed's 30
prompts come as close as 0.92 ('Show the last 5 commits.' ~ 'Show me the last 25 commits.')."""


@pytest.fixture(scope="module")
def prompts() -> tuple[EvalPrompt, ...]:
    return load_prompts(DEFAULT_OUT_PATH, CATALOG)


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> list[TrainingExample]:
    folder = tmp_path_factory.mktemp("tiny-data")
    generate(load_experiment("tiny"), folder)
    return [ex for split in ("train", "valid") for ex in read_split(folder, split)]


def test_regenerating_gives_the_committed_bytes() -> None:
    assert render() == DEFAULT_OUT_PATH.read_text(encoding="utf-8"), (
        "fixtures/prompts/extended.toml is stale: run python -m pipeline.definitions.extended"
    )


def test_the_set_is_found_by_name() -> None:
    assert prompts_path("extended") == DEFAULT_OUT_PATH


def test_eight_prompts_per_tool_in_its_category_plus_chains_and_no_tool(
    prompts: tuple[EvalPrompt, ...],
) -> None:
    singles = [p for p in prompts if p.match == "any_of"]
    assert Counter(p.expect[0].tool for p in singles) == dict.fromkeys(CATALOG.names(), PER_TOOL)
    for p in singles:
        assert p.category == CATALOG.tool(p.expect[0].tool).category, p.id
    chains = [p for p in prompts if p.match == "all_of"]
    assert len(chains) == CHAINS
    assert {p.category for p in chains} == {"multi_tool"}
    assert all(2 <= len(p.expect) <= 4 for p in chains)
    assert [p.category for p in prompts if p.match == "none"] == [NO_TOOL] * NO_TOOLS
    assert len(prompts) == PER_TOOL * len(CATALOG.names()) + CHAINS + NO_TOOLS
    by_category = Counter(p.category for p in prompts)
    assert by_category == {
        "text_tools": 24, "validation": 24, "lsp": 40, "git": 24, "cst": 24, "domain": 72,
        "multi_tool": 16, "no_tool": 16,
    }  # fmt: skip


def test_texts_are_unique_and_open_arguments_are_marked(prompts: tuple[EvalPrompt, ...]) -> None:
    texts = [" ".join(p.text.lower().split()) for p in prompts]
    assert len(set(texts)) == len(texts)
    assert all("{" not in p.text for p in prompts)
    issue = next(p for p in prompts if p.id == "goto_definition-04")
    assert issue.text.startswith("Find the definition of ")
    assert issue.expect[0].any_value == ("file_path", "line", "column")
    assert issue.expect[1].tool == "workspace_symbols"
    assert sum(any(e.any_value for e in p.expect) for p in prompts) >= 10


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _eval_phrasings() -> list[str]:
    raw = tomllib.loads(DEFAULT_TEMPLATES_PATH.read_text(encoding="utf-8"))
    out = []
    for table in raw["tools"].values():
        out += [t if isinstance(t, str) else t["text"] for t in table["prompts"]]
    out += [chain["text"] for chain in raw["chains"]]
    out += raw["no_tool"]["prompts"]
    return out


def test_no_eval_phrasing_is_in_the_training_templates() -> None:
    phrasings = _eval_phrasings()
    assert len(phrasings) == PER_TOOL * len(CATALOG.names()) + CHAINS + NO_TOOLS
    text = DATA_TEMPLATES_PATH.read_text(encoding="utf-8")
    training = list(_strings(tomllib.loads(text)))
    assert [p for p in phrasings if p in text] == []
    assert [p for p in phrasings if any(p.lower() in t.lower() for t in training)] == []


def test_no_prompt_is_in_or_close_to_the_training_data(
    prompts: tuple[EvalPrompt, ...], training: list[TrainingExample]
) -> None:
    texts = [p.text for p in prompts]
    finding = check_eval_overlap(training, texts)
    assert finding.verdict == "pass"
    assert finding.figure.startswith(f"0/{len(prompts)} eval prompts in training data")
    users = sorted(
        {
            m["content"]
            for ex in training
            for m in ex.messages
            if m["role"] == "user" and isinstance(m["content"], str)
        }
    )
    closest = max(_closest(texts, users), key=lambda r: r[2])
    assert closest[2] < CLOSEST_BOUND, closest


def test_no_argument_value_of_the_set_is_in_the_training_data(
    prompts: tuple[EvalPrompt, ...], training: list[TrainingExample]
) -> None:
    seen = []
    for ex in training:
        for m in ex.messages:
            if m["role"] == "user":
                seen.append(m["content"])
            elif m["role"] == "assistant":
                seen += [str(v) for c in message_calls(m, CATALOG) for v in c.arguments.values()]
    blob = "\n".join(seen)
    values = {
        v
        for p in prompts
        for e in p.expect
        for allowed in e.args.values()
        for v in allowed
        if isinstance(v, str) and len(v.strip("/")) >= 4
    }
    assert len(values) > 200
    assert sorted(v for v in values if v in blob) == []


# --- the generator's own errors and command line ---------------------------------------------


def _templates(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_TEMPLATES_PATH.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "eval_templates.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "Give {file} a ruff pass",
            "Give {fiel} a ruff pass",
            r"\[tools\.ruff_check\] prompt 1: unknown placeholder \{fiel\}",
        ),
        ("[tools.hover]", "[tools.hovr]", r"\[tools\.hovr\] is not a catalog tool"),
        (
            'args = { symbol = "{cls}" }, any_value',
            'args = { symbol = "{cls}", colour = 3 }, any_value',
            r"\[tools\.goto_definition\] prompt 4: goto_definition has no argument 'colour'",
        ),
        (
            'args = { staged = true }, optional = ["path"]',
            'args = { staged = "{line}" }, optional = ["path"]',
            r"write a boolean argument as a literal",
        ),
        ("seed = 20270301", "seed = 'x'", r"needs an integer `seed`"),
    ],
)
def test_bad_templates_name_the_entry(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(EvalTemplateError, match=message):
        render(_templates(tmp_path, old, new), CATALOG)


def test_a_template_change_changes_the_set_and_check_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = _templates(tmp_path, "seed = 20270301", "seed = 1")
    out = tmp_path / "extended.toml"
    assert main(["--templates", str(templates), "--out", str(out), "--check"]) == 1
    assert main(["--templates", str(templates), "--out", str(out)]) == 0
    assert main(["--templates", str(templates), "--out", str(out), "--check"]) == 0
    assert out.read_text(encoding="utf-8") != DEFAULT_OUT_PATH.read_text(encoding="utf-8")
    assert len(load_prompts(out, CATALOG)) == len(load_prompts(DEFAULT_OUT_PATH, CATALOG))
    assert "is stale" in capsys.readouterr().err
