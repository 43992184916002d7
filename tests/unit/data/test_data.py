"""Training data: the generator, the syntax converter and the `data` command line.

The default datasets are generated once per module (they take a fraction of a second); checks
with the real Qwen3 chat templates render a sample of them (every 10th example).
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli.data import main
from pipeline.core.errors import BadInput
from pipeline.core.workspace import Workspace
from pipeline.data import (
    DEFAULT_TEMPLATES_PATH,
    KINDS,
    STAMP,
    DataError,
    Target,
    convert,
    convert_file,
    convert_path,
    describe,
    ensure_data,
    generate,
    load_templates,
    message_calls,
    message_problem,
    read_split,
)
from pipeline.data.generator import _Generator as Generator
from pipeline.data.generator import _stamp, generate_records
from pipeline.definitions.calls import Call
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import (
    PROMPTS_DIR,
    SHARED,
    CallMode,
    CallSyntax,
    Experiment,
    load_experiment,
)
from pipeline.definitions.prompts import load_prompts, system_prompt

CATALOG = load_catalog()
MODELS = SHARED / "models"
TOKENIZERS = ("qwen3-8b-tokenizer", "qwen3-coder-30b-a3b-tokenizer")


def _records(folder: Path, split: str) -> list[dict[str, Any]]:
    return [ex.record for ex in read_split(folder, split)]


def _sized(experiment: Experiment, train: int, valid: int, **data: Any) -> Experiment:
    return dataclasses.replace(
        experiment,
        data=dataclasses.replace(experiment.data, train_count=train, valid_count=valid, **data),
    )


def _user_text(record: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in record["messages"] if m["role"] == "user")


def _calls_per_line(records: list[Any]) -> list[list[list[Any]]]:
    """Per record, per assistant message: the (name, arguments) of its calls."""
    return [
        [
            [[c.name, c.arguments] for c in message_calls(m, CATALOG)]
            for m in r["messages"]
            if m["role"] == "assistant"
        ]
        for r in records
    ]


@pytest.fixture(scope="module")
def phase40() -> Experiment:
    return load_experiment("phase40")


@pytest.fixture(scope="module")
def phase40_data(phase40: Experiment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default phase40 dataset: structured calls, code mode."""
    out = tmp_path_factory.mktemp("phase40-data")
    assert generate(phase40, out) == {"train": 1159, "valid": 123}
    return out


@pytest.fixture(scope="module")
def tiny_data(tiny: Experiment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny dataset: structured calls, direct mode (tools= in every record)."""
    out = tmp_path_factory.mktemp("tiny-data")
    generate(tiny, out)
    return out


@dataclasses.dataclass(frozen=True)
class Dataset:
    experiment: Experiment
    folder: Path
    splits: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module", params=["phase40", "tiny"])
def dataset(request: pytest.FixtureRequest) -> Dataset:
    """Each default dataset, read once: phase40 (code mode) and tiny (direct mode)."""
    name = request.param
    folder = request.getfixturevalue(f"{name}_data")
    splits = {split: _records(folder, split) for split in ("train", "valid")}
    return Dataset(request.getfixturevalue(name), folder, splits)


# --- generate -------------------------------------------------------------------------------


def test_same_seed_writes_the_same_bytes_and_another_seed_differs(
    tiny: Experiment, tmp_path: Path
) -> None:
    small = _sized(tiny, 150, 30)
    for folder in ("a", "b"):
        generate(small, tmp_path / folder)
    generate(_sized(tiny, 150, 30, seed=tiny.data.seed + 1), tmp_path / "c")
    for split in ("train", "valid"):
        a = (tmp_path / "a" / f"{split}.jsonl").read_bytes()
        assert a == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
        assert a != (tmp_path / "c" / f"{split}.jsonl").read_bytes()


def test_counts_match_the_experiment(dataset: Dataset) -> None:
    assert len(dataset.splits["train"]) == dataset.experiment.data.train_count == 1159
    assert len(dataset.splits["valid"]) == dataset.experiment.data.valid_count == 123


def test_every_example_is_a_valid_chat_example(dataset: Dataset) -> None:
    expected_system = system_prompt(dataset.experiment)
    for records in dataset.splits.values():
        for record in records:
            assert message_problem(record) is None
            assert record["messages"][0] == {"role": "system", "content": expected_system}
            assert record["messages"][-1]["role"] == "assistant"


def test_every_tool_is_a_trained_final_call_in_train_and_valid(dataset: Dataset) -> None:
    for split, minimum in (("train", 20), ("valid", 2)):
        finals = Counter(
            d.tools[0]
            for d in (describe(r, CATALOG) for r in dataset.splits[split])
            if d.kind == "single"
        )
        too_few = {t: finals[t] for t in CATALOG.names() if finals[t] < minimum}
        assert not too_few, f"{split}: tools trained as the final call fewer than {minimum}x"


def test_all_kinds_are_present_in_their_rough_shares(dataset: Dataset) -> None:
    for records in dataset.splits.values():
        kinds = Counter(describe(r, CATALOG).kind for r in records)
        assert set(kinds) == set(KINDS)
        shares = {k: kinds[k] / len(records) for k in KINDS}
        assert 0.55 <= shares["single"] <= 0.65, shares
        for kind in ("chain", "multi_turn"):
            assert 0.12 <= shares[kind] <= 0.18, shares
        assert 0.07 <= shares["no_tool"] <= 0.13, shares


def test_chains_and_multi_turn_examples_have_their_shape(dataset: Dataset) -> None:
    for record in dataset.splits["train"]:
        d = describe(record, CATALOG)
        roles = [m["role"] for m in record["messages"]]
        if d.kind == "chain":
            assert 2 <= len(d.tools) <= 4 and d.category == "multi_tool"
        if d.kind == "multi_turn":
            assert roles == ["system", "user", "assistant", "tool", "assistant"]
            assert "tool_calls" not in record["messages"][-1]
        if d.kind == "no_tool":
            assert roles == ["system", "user", "assistant"]
        if dataset.experiment.data.mode == "code":
            assert "tools" not in record
            for m in record["messages"]:
                assert all(c["function"]["name"] == "execute_code" for c in m.get("tool_calls", []))
        else:
            assert record["tools"] == CATALOG.openai_tools()


def test_structured_calls_carry_arguments_as_a_mapping(phase40_data: Path) -> None:
    for record in _records(phase40_data, "train"):
        for m in record["messages"]:
            for tc in m.get("tool_calls", []):
                assert isinstance(tc["function"]["arguments"], dict)


def test_no_two_examples_share_a_user_text(dataset: Dataset) -> None:
    texts = [_user_text(r) for records in dataset.splits.values() for r in records]
    normalized = Counter(" ".join(t.lower().split()) for t in texts)
    assert [t for t, n in normalized.items() if n > 1] == []


def test_no_eval_prompt_or_eval_path_appears_in_training_data(dataset: Dataset) -> None:
    prompts = load_prompts(dataset.experiment.eval.prompts, CATALOG)
    eval_texts = [" ".join(p.text.lower().split()) for p in prompts]
    eval_paths = {
        v
        for p in prompts
        for e in p.expect
        for key, values in e.args.items()
        if key in ("path", "file_path")
        for v in values
        if v != "."
    }
    for records in dataset.splits.values():
        for record in records:
            user = " ".join(_user_text(record).lower().split())
            assert not [t for t in eval_texts if t in user], user
            for m in record["messages"]:
                for call in message_calls(m, CATALOG) if m["role"] == "assistant" else []:
                    code = str(call.arguments.get("code", ""))
                    assert not [p for p in eval_paths if p in code or p in call.arguments.values()]


@pytest.mark.parametrize("syntax", ["json", "xml"])
@pytest.mark.parametrize("mode", ["direct", "code"])
def test_raw_syntaxes_hold_the_same_calls_as_text(
    tiny: Experiment, tmp_path: Path, syntax: CallSyntax, mode: CallMode
) -> None:
    small = _sized(tiny, 120, 20)
    generate(small, tmp_path / "structured", syntax="structured", mode=mode)
    generate(small, tmp_path / syntax, syntax=syntax, mode=mode)
    structured = _records(tmp_path / "structured", "train")
    raw = _records(tmp_path / syntax, "train")
    start = "<tool_call>\n{" if syntax == "json" else "<tool_call>\n<function="
    for record in raw:
        for m in record["messages"]:
            assert "tool_calls" not in m
            if m["role"] == "assistant" and "<tool_call>" in m["content"]:
                assert m["content"].startswith(start)
        assert ("tools" in record) == (mode == "direct")
    assert _calls_per_line(raw) == _calls_per_line(structured)
    # Converting the raw dataset gives the structured one byte for byte, and back again.
    converted, problems = convert(raw, "structured", CATALOG)
    assert problems == [] and converted == structured
    back, problems = convert(structured, syntax, CATALOG)
    assert problems == [] and back == raw


# --- the templates file ---------------------------------------------------------------------


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_every_placeholder_is_a_slot_and_every_fixed_argument_a_parameter(
    phase40: Experiment,
) -> None:
    templates = load_templates()
    generator = Generator(phase40, CATALOG)
    for tool in CATALOG.names():
        slots = set(generator._slots(tool))
        parameters = set(CATALOG.tool(tool).parameters["properties"])
        first, same = templates.clauses[tool]
        for template in (*templates.requests[tool], *first, *same):
            text, fixed = (template, {}) if isinstance(template, str) else template
            assert _fields(text) <= slots, (tool, text)
            assert set(fixed) <= parameters, (tool, text)
    frames = {
        "f": templates.chain_leads,
        "a": templates.acronym_frames + templates.concept_frames,
        "ab": templates.difference_frames,
    }
    for allowed, texts in frames.items():
        for text in texts:
            assert _fields(text) <= set(allowed), text
    names = set(CATALOG.names())
    assert {tool for recipe in templates.chain_recipes for tool in recipe} <= names
    assert set(templates.domain_files) <= names


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        (
            '    { text = "Show me the staged diff.", args = { staged = true } }',
            '    { txt = "Show me the staged diff.", args = { staged = true } }',
            "requests.git_diff[2]: needs exactly the keys text, args",
        ),
        ('"tests", "tests/unit"', '42, "tests/unit"', "pools.test_dirs[0]: must be a string"),
        ('["git_status", "git_diff"]', '["git_status", "git_dif"]', "chains.recipes[8]: tool"),
        ("[clauses.cst_rename]\n", "[clauses.cst_rename]\nfirs = []\n", "clauses.cst_rename:"),
        ("[requests]\n", "[requests]\nread_file = 3\n", "not valid TOML"),
        # the per-tool tables: slots, chains and responses are data
        (
            'slots.command = { pool = "commands" }',
            'slots.command = { pool = "comands" }',
            "tools.run_command.slots.command.pool: there is no pool 'comands'",
        ),
        (
            'slots.pattern = { pool = "patterns" }',
            'slots.pattern = { pick = "patterns" }',
            "tools.cst_find_pattern.slots.pattern: needs exactly one of",
        ),
        (
            "response.values = { count = { int = [2, 9] } }",
            "response.values = { count = { int = [9, 2] } }",
            "tools.cst_rename.response.values.count.int: 9 is more than 2",
        ),
        (
            '[tools.hover]\nlike = "goto_definition"',
            '[tools.hover]\nlike = "find_references"',
            "tools.hover.like: 'find_references' is not a [tools] entry of its own",
        ),
        (
            'response.tool = "{query}  {where}:{line}"',
            'response.tool = "{query}  {where:{line}"',
            "tools.workspace_symbols.response.tool: not a valid template",
        ),
    ],
)
def test_a_malformed_templates_file_names_the_file_and_the_key(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    text = DEFAULT_TEMPLATES_PATH.read_text(encoding="utf-8")
    assert text.count(old) == 1
    broken = tmp_path / "data_templates.toml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_templates(broken)
    assert str(broken) in str(caught.value) and key in str(caught.value)
    with pytest.raises(DataError, match="does not exist"):
        load_templates(tmp_path / "missing.toml")


def test_editing_the_templates_changes_the_stamp(
    phase40: Experiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _stamp(phase40, "structured", "code")
    edited = dataclasses.replace(load_templates(), sha256="0" * 64)
    monkeypatch.setattr("pipeline.data.generator.load_templates", lambda **_: edited)
    assert _stamp(phase40, "structured", "code")["inputs_sha256"] != before["inputs_sha256"]


# --- real Qwen3 chat templates -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Any]:
    if not MODELS.is_dir():
        pytest.skip(f"the real Qwen3 tokenizers are not here ({MODELS} is absent)")
    transformers = pytest.importorskip("transformers")
    return {
        name: transformers.AutoTokenizer.from_pretrained(str(MODELS / name)) for name in TOKENIZERS
    }


def test_examples_render_with_both_real_templates(
    dataset: Dataset, tokenizers: dict[str, Any]
) -> None:
    sample = dataset.splits["train"][::10] + dataset.splits["valid"][::10]
    kinds = Counter(describe(r, CATALOG).kind for r in sample)
    assert set(kinds) == set(KINDS), kinds
    for name, tok in tokenizers.items():
        for record in sample:
            tools = record.get("tools")
            assert (tools is not None) == (dataset.experiment.data.mode == "direct")
            text = tok.apply_chat_template(record["messages"], tools=tools, tokenize=False)
            assert record["messages"][-1]["content"].strip() in text
            if describe(record, CATALOG).kind in ("single", "chain"):
                marker = '<tool_call>\n{"name": "' if "8b" in name else "<tool_call>\n<function="
                assert marker in text, f"{name} did not render the call:\n{text[-400:]}"


# --- convert ---------------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You route coding requests to tools."}
CALLS = [
    Call("read_file", {"path": "pkg/a.py"}),
    Call("goto_definition", {"file_path": "pkg/a.py", "line": 12, "column": 5, "symbol": "f"}),
    Call("git_diff", {"staged": True}),
    Call("write_file", {"path": "notes.md", "content": "line one\nline two"}),
]
CODE = 'print(read_file(path="pkg/a.py"))\nprint(git_log(count=3))'


def _json_block(call: Call) -> str:
    payload = json.dumps({"name": call.name, "arguments": call.arguments})
    return f"<tool_call>\n{payload}\n</tool_call>"


def _xml_block(name: str, args: dict[str, str]) -> str:
    params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in args.items())
    return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"


def _fixtures() -> dict[str, list[dict[str, Any]]]:
    """The same two exchanges written in each syntax the converter reads."""
    user = {"role": "user", "content": "Read pkg/a.py, find f, show the staged diff, write notes."}
    xml_blocks = "\n".join(
        [
            _xml_block("read_file", {"path": "pkg/a.py"}),
            _xml_block(
                "goto_definition",
                {"file_path": "pkg/a.py", "line": "12", "column": "5", "symbol": "f"},
            ),
            _xml_block("git_diff", {"staged": "true"}),
            _xml_block("write_file", {"path": "notes.md", "content": "line one\nline two"}),
        ]
    )
    json_blocks = "\n".join(_json_block(c) for c in CALLS)
    answer = {"role": "assistant", "content": "Done."}
    return {
        "json": [
            {"messages": [SYSTEM, user, {"role": "assistant", "content": "Sure.\n" + json_blocks}]},
            {
                "messages": [
                    SYSTEM,
                    user,
                    {"role": "assistant", "content": json_blocks},
                    {"role": "tool", "content": "ok"},
                    answer,
                ]
            },
        ],
        "xml": [
            {"messages": [SYSTEM, user, {"role": "assistant", "content": "Sure.\n" + xml_blocks}]},
            {
                "messages": [
                    SYSTEM,
                    user,
                    {"role": "assistant", "content": xml_blocks},
                    {"role": "tool", "content": "ok"},
                    answer,
                ]
            },
        ],
        "seed": [
            {
                "messages": [
                    SYSTEM,
                    {"role": "user", "content": "Read pkg/a.py and show 3 commits."},
                    {"role": "assistant", "content": _xml_block("execute_code", {"code": CODE})},
                ]
            },
            {
                "messages": [
                    SYSTEM,
                    {"role": "user", "content": "Read pkg/a.py and show 3 commits."},
                    {
                        "role": "assistant",
                        "content": "Let me look.\n" + _xml_block("execute_code", {"code": CODE}),
                    },
                    {"role": "user", "content": "<tool_response>\nx = 1\n</tool_response>"},
                    answer,
                ]
            },
        ],
        "structured": [
            {
                "messages": [
                    SYSTEM,
                    user,
                    {
                        "role": "assistant",
                        "content": "Sure.",
                        # OpenAI's form: arguments as a JSON string.
                        "tool_calls": [
                            {
                                "id": f"call_{i}",
                                "type": "function",
                                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                            }
                            for i, c in enumerate(CALLS)
                        ],
                    },
                ]
            },
            {
                "messages": [
                    SYSTEM,
                    user,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [c.openai() for c in CALLS],
                    },
                    {"role": "tool", "content": "ok"},
                    answer,
                ]
            },
        ],
    }


@pytest.mark.parametrize(
    ("source", "back"),
    [("json", "json"), ("xml", "xml"), ("seed", "xml"), ("structured", "structured")],
)
@pytest.mark.parametrize(
    "path", [("structured", "json", "xml"), ("xml", "structured", "json"), ("json", "xml")]
)
def test_round_trips_keep_every_call(source: str, back: Target, path: tuple[Target, ...]) -> None:
    records = _fixtures()[source]
    expected = _calls_per_line(records)
    current: list[Any] = records
    for target in (*path, back):
        current, problems = convert(current, target, CATALOG)
        assert problems == []
        assert _calls_per_line(current) == expected, f"{source} -> {target}"
        for record in current:
            assert message_problem(record) is None


def test_structured_output_keeps_prose_and_makes_tool_messages() -> None:
    seed = _fixtures()["seed"]
    out, problems = convert(seed, "structured", CATALOG)
    assert problems == []
    messages = out[1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[2]["content"] == "Let me look."
    assert messages[2]["tool_calls"][0]["function"] == {
        "name": "execute_code",
        "arguments": {"code": CODE},
    }
    assert messages[3] == {"role": "tool", "content": "x = 1"}
    structured, _ = convert(_fixtures()["xml"], "structured", CATALOG)
    assert structured[0]["messages"][2]["content"] == "Sure."
    # XML values are typed by the catalog's schemas.
    args = [tc["function"]["arguments"] for tc in structured[0]["messages"][2]["tool_calls"]]
    assert args[1]["line"] == 12 and args[2] == {"staged": True}
    again, _ = convert(structured, "json", CATALOG)
    assert again[0]["messages"][2]["content"].startswith("Sure.\n<tool_call>\n{")


def test_a_value_xml_cannot_carry_is_reported_not_changed() -> None:
    record = {
        "messages": [
            SYSTEM,
            {"role": "user", "content": "Show the log."},
            {"role": "assistant", "content": _json_block(Call("git_log", {"count": "5"}))},
        ]
    }
    out, problems = convert([record], "xml", CATALOG)
    assert out == [record]
    assert len(problems) == 1 and problems[0].line == 1 and "change" in problems[0].message


def test_bad_lines_are_reported_by_number_and_copied_unchanged(tmp_path: Path) -> None:
    good = json.dumps(_fixtures()["json"][0])
    cut = json.dumps(
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": "Read a.py"},
                {"role": "assistant", "content": '<tool_call>\n{"name": "read_file", "argu'},
            ]
        }
    )
    bad_json = '{"messages": [{"role": "user", "content": "hi"}'
    lines = [good, bad_json, cut, "", good]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    dst = tmp_path / "out.jsonl"
    converted, problems = convert_file(src, dst, "structured", CATALOG)
    assert converted == 2
    assert [(p.file, p.line) for p in problems] == [(src, 2), (src, 3)]
    assert "not valid JSON" in problems[0].message and "cut off" in problems[1].message
    out = dst.read_text().split("\n")
    assert out[1:4] == [bad_json, cut, ""]
    assert "tool_calls" in json.loads(out[0])["messages"][2]


def test_convert_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(_fixtures()["xml"][0]) + "\n{not json\n")
    assert main(["convert", "--to", "json", str(src), str(tmp_path / "out.jsonl")]) == 1
    err = capsys.readouterr().err
    assert f"{src}:2: not valid JSON" in err
    assert main(["convert", "--to", "json", str(tmp_path / "nope.jsonl"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.jsonl does not exist" in err[0]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text("")
    assert main(["convert", "--to", "xml", str(folder), str(tmp_path / "o")]) == 2
    assert "has no valid.jsonl" in capsys.readouterr().err


def test_convert_a_folder(phase40_data: Path, tmp_path: Path) -> None:
    counts, problems = convert_path(phase40_data, tmp_path / "xml", "xml", CATALOG)
    assert problems == []
    assert counts == {tmp_path / "xml" / "train.jsonl": 1159, tmp_path / "xml" / "valid.jsonl": 123}
    _, problems = convert_path(tmp_path / "xml", tmp_path / "structured", "structured")
    assert problems == []
    for split in ("train", "valid"):
        assert (tmp_path / "structured" / f"{split}.jsonl").read_bytes() == (
            phase40_data / f"{split}.jsonl"
        ).read_bytes()


# --- ensure_data and the generate command ------------------------------------------------------


def test_ensure_data_uses_a_given_folder_and_names_it_when_files_are_missing(
    tiny: Experiment, tiny_data: Path, tmp_path: Path
) -> None:
    given = dataclasses.replace(tiny, data=dataclasses.replace(tiny.data, path=str(tiny_data)))
    assert ensure_data(given, workspace=Workspace(tmp_path)) == tiny_data
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = dataclasses.replace(tiny, data=dataclasses.replace(tiny.data, path=str(empty)))
    with pytest.raises(DataError, match=str(empty)):
        ensure_data(missing, workspace=Workspace(tmp_path))
    assert list(empty.iterdir()) == []


def test_ensure_data_generates_once_and_again_when_settings_change(
    tiny: Experiment, tmp_path: Path
) -> None:
    workspace = Workspace(tmp_path)
    folder = workspace.data(tiny.name)
    small = _sized(tiny, 60, 12)
    assert ensure_data(small, workspace=workspace) == folder
    assert (folder / STAMP).is_file() and len(_records(folder, "train")) == 60
    first = (folder / "train.jsonl").stat().st_mtime_ns
    ensure_data(small, workspace=workspace)
    assert (folder / "train.jsonl").stat().st_mtime_ns == first
    ensure_data(_sized(tiny, 70, 12), workspace=workspace)
    assert len(_records(folder, "train")) == 70


def test_generate_cli_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "--experiment", "tiny", "--out", str(tmp_path), "--syntax", "xml"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train 1159, valid 123" in out and "xml calls" in out
    for word in ("single", "chain", "multi_turn", "no_tool", "multi_tool", "validate_component"):
        assert word in out
    assert main(["generate", "--experiment", "no-such-experiment"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no-such-experiment" in err[0]


def test_generate_cli_never_overwrites_a_named_data_folder(
    tiny: Experiment,
    tiny_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    given = dataclasses.replace(tiny, data=dataclasses.replace(tiny.data, path=str(tiny_data)))
    monkeypatch.setattr("pipeline.cli.data.load_experiment", lambda name: given)
    before = (tiny_data / "train.jsonl").read_bytes()
    assert main(["generate", "--experiment", "tiny"]) == 2
    assert "pass --out" in capsys.readouterr().err
    assert (tiny_data / "train.jsonl").read_bytes() == before


# --- bad input ---------------------------------------------------------------------------------


def test_a_non_utf8_split_is_one_error_naming_file_line_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = json.dumps(_fixtures()["json"][0]).encode()
    bad = b'{"messages": "caf\xe9"}'
    (tmp_path / "train.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    offset = len(good) + 1 + bad.index(b"\xe9")
    with pytest.raises(DataError) as caught:
        read_split(tmp_path, "train")
    message = str(caught.value)
    assert f"{tmp_path / 'train.jsonl'}:2:" in message and f"offset {offset}" in message
    assert "0xe9" in message and "\n" not in message
    assert main(["convert", "--to", "xml", str(tmp_path / "train.jsonl"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"train.jsonl:2: byte 0xe9 at offset {offset}" in err[0]


def test_a_missing_data_folder_is_one_data_error_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        read_split(tmp_path / "nowhere", "train")
    assert str(caught.value) == f"data folder {tmp_path / 'nowhere'} does not exist"
    assert isinstance(caught.value, BadInput) and isinstance(caught.value, ValueError)


# --- the extended set stays held out ------------------------------------------------------------

EVAL_TEMPLATES = Path(__file__).resolve().parents[3] / "fixtures" / "eval_templates.toml"
PHRASINGS = DEFAULT_TEMPLATES_PATH.parent / "phrasings"
"""Files an experiment's [data] phrasings may name; they extend the templates file."""
SHARED_WORDS = 5
"""A run of this many words in a training phrasing and an eval phrasing: the eval phrasing (or
one a word or two away) was seen in training."""


def _eval_phrasings() -> list[str]:
    import tomllib

    raw = tomllib.loads(EVAL_TEMPLATES.read_text(encoding="utf-8"))
    texts = [
        p if isinstance(p, str) else p["text"]
        for tool in raw["tools"].values()
        for p in tool["prompts"]
    ]
    texts += [chain["text"] for chain in raw["chains"]]
    return texts + list(raw["no_tool"]["prompts"])


def _word_runs(text: str) -> set[tuple[str, ...]]:
    """Runs of SHARED_WORDS literal words, never across a {placeholder} or a value in
    backquotes (those hold pools' values, not phrasing)."""
    runs: set[tuple[str, ...]] = set()
    for piece in re.split(r"\{[^}]*\}|`[^`]*`", text.lower()):
        words = re.findall(r"[a-z']+", piece)
        runs |= {tuple(words[i : i + SHARED_WORDS]) for i in range(len(words) - SHARED_WORDS + 1)}
    return runs


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_no_training_phrasing_shares_a_run_of_words_with_an_eval_template() -> None:
    """fixtures/prompts/extended.toml is generated from fixtures/eval_templates.toml; the
    training generator's templates must not hold any of its phrasings, nor a near copy."""
    import tomllib

    training = []
    for path in [DEFAULT_TEMPLATES_PATH, *sorted(PHRASINGS.glob("*.toml"))]:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        training += [s for key, table in raw.items() if key != "pools" for s in _strings(table)]
    eval_runs = {run: text for text in _eval_phrasings() for run in _word_runs(text)}
    shared = sorted(
        (" ".join(run), text, eval_runs[run])
        for text in training
        for run in _word_runs(text)
        if run in eval_runs
    )
    assert shared == [], "\n".join(f"{r!r}: training {t!r} ~ eval {e!r}" for r, t, e in shared)


def test_no_extended_prompt_appears_in_training_data(dataset: Dataset) -> None:
    prompts = load_prompts(PROMPTS_DIR / "extended.toml", CATALOG)
    eval_texts = [" ".join(p.text.lower().split()) for p in prompts]
    for records in dataset.splits.values():
        for record in records:
            user = " ".join(_user_text(record).lower().split())
            assert not [t for t in eval_texts if t in user], user


def test_a_phrasings_file_extends_the_templates_lists(tmp_path: Path) -> None:
    extra = tmp_path / "more.toml"
    extra.write_text('[requests]\nread_file = ["Fetch {path} for me, all of it."]\n')
    base, extended = load_templates(), load_templates(phrasings=[extra])
    assert extended.requests["read_file"] == (
        *base.requests["read_file"],
        "Fetch {path} for me, all of it.",
    )
    assert extended.sha256 != base.sha256  # generated data is stamped with it: regenerated
    assert extended.requests["write_file"] == base.requests["write_file"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[pools]\nsrc_dirs = ["x"]\n', "[pools] cannot be extended by a phrasings file"),
        ('[requests]\nno_such_tool = ["x"]\n', "requests.no_such_tool extends nothing"),
        ('[requests]\nread_file = "x"\n', "requests.read_file must be a list"),
    ],
)
def test_a_phrasings_file_that_cannot_extend_is_named(tmp_path: Path, text: str, said: str) -> None:
    extra = tmp_path / "bad.toml"
    extra.write_text(text)
    with pytest.raises(DataError, match=re.escape(said)) as caught:
        load_templates(phrasings=[extra])
    assert str(extra) in str(caught.value)


def test_evaluating_on_another_shipped_set_leaves_the_data_unchanged(
    tiny: Experiment, tmp_path: Path
) -> None:
    """Every shipped prompt set is held out, whichever the experiment evaluates: `--prompts
    extended` on a built model neither regenerates other data nor rebuilds it."""
    small = _sized(tiny, 150, 30)
    generate(small, tmp_path / "seed")
    other = dataclasses.replace(
        small, eval=dataclasses.replace(small.eval, prompts=PROMPTS_DIR / "extended.toml")
    )
    generate(other, tmp_path / "extended")
    for split in ("train", "valid"):
        seed = (tmp_path / "seed" / f"{split}.jsonl").read_bytes()
        assert seed == (tmp_path / "extended" / f"{split}.jsonl").read_bytes()


def test_no_tool_share_and_questions_shape_the_no_tool_examples(
    tiny: Experiment, tmp_path: Path
) -> None:
    extra = tmp_path / "questions.toml"
    entries = "".join(
        f'[[no_tool.questions.entries]]\ntext = "Question number {i}, no tool?"\n'
        f'answer = "Answer {i}."\n'
        for i in range(40)
    )
    extra.write_text(entries)
    plain = generate_records(_sized(tiny, 200, 20))
    more = generate_records(_sized(tiny, 200, 20, no_tool_share=0.3, phrasings=(extra,)))

    def no_tool(records: list[dict[str, Any]]) -> list[str]:
        return [
            _user_text(r)
            for r in records
            if not any(m.get("tool_calls") for m in r["messages"]) and len(r["messages"]) == 3
        ]

    assert len(no_tool(plain["train"])) == 20  # the default share, 0.10
    asked = no_tool(more["train"])
    assert abs(len(asked) - 60) <= 1  # 30% of 200, give or take the rounding of the others
    questions = [t for t in asked if t.startswith("Question number")]
    assert 0 < len(questions) < len(asked)  # drawn beside the frames' families
