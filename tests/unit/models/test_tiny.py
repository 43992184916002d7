"""The embedded tiny model: loadable by mlx-lm and transformers, deterministic, cached.

No network and no GPU: builds take well under a second each, so the module builds its own
folders instead of sharing a cache with real runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, cast

import pytest

from pipeline.definitions.experiment import TinyModel
from pipeline.models.tiny import SPECIAL_TOKENS, build_tiny_model, chat_template, tiny_model

TOOL_NAMES = ("read_file", "write_file", "git_status", "git_diff", "grep_search", "list_dir")

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "git_status",
            "description": "Show the working tree status.\nIncludes untracked files.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]

READ_CALL = {"name": "read_file", "arguments": {"path": "src/app.py"}}


def _call(name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "What is in src/app.py?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [_call("read_file", READ_CALL["arguments"])],
    },
]


def _corpus() -> list[str]:
    """Made-up tool-call-ish text in both syntaxes, a few hundred strings, fixed order."""
    corpus = []
    for i in range(120):
        name = TOOL_NAMES[i % len(TOOL_NAMES)]
        path = f"src/pkg{i % 7}/module_{i}.py"
        corpus.append(f"Please use {name} on {path} and tell me what changed since yesterday.")
        corpus.append(
            f'<tool_call>\n{{"name": "{name}", "arguments": {{"path": "{path}"}}}}\n</tool_call>'
        )
        corpus.append(
            f"<tool_call>\n<function={name}>\n<parameter=path>\n{path}\n</parameter>\n"
            "</function>\n</tool_call>"
        )
    return corpus


CORPUS = _corpus()
SETTINGS = TinyModel(seed=0)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="module")
def folders(cache_root: Path) -> dict[str, Path]:
    return {s: tiny_model(SETTINGS, s, CORPUS, cache_root=cache_root) for s in ("json", "xml")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hf_tokenizer(folder: Path) -> Any:
    """AutoTokenizer, typed loosely: its stubs reject chat messages that carry tool calls."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _between_tags(text: str) -> str:
    return text.split("<tool_call>", 1)[1].split("</tool_call>", 1)[0]


def test_special_token_ids_are_fixed() -> None:
    assert list(SPECIAL_TOKENS.values()) == list(range(9))
    assert list(SPECIAL_TOKENS)[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.mark.parametrize("syntax", ["json", "xml"])
def test_mlx_lm_loads_and_generates(folders: dict[str, Path], syntax: str) -> None:
    import mlx_lm

    loaded = mlx_lm.load(str(folders[syntax]))
    model, tokenizer = loaded[0], loaded[1]
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], tools=TOOLS, add_generation_prompt=True)
    text = mlx_lm.generate(model, tokenizer, prompt=prompt, max_tokens=5)
    assert isinstance(text, str)
    assert tokenizer.eos_token_ids == {SPECIAL_TOKENS["<|im_end|>"]}


@pytest.mark.parametrize("syntax", ["json", "xml"])
def test_config_is_float32_qwen3(folders: dict[str, Path], syntax: str) -> None:
    config = json.loads((folders[syntax] / "config.json").read_text())
    info = json.loads((folders[syntax] / "build_info.json").read_text())
    assert config["model_type"] == "qwen3"
    assert config["torch_dtype"] == "float32"
    assert config["tie_word_embeddings"] is True
    assert config["vocab_size"] == SETTINGS.vocab_size >= info["tokenizer_size"]
    assert "quantization" not in config


@pytest.mark.parametrize("syntax", ["json", "xml"])
def test_autotokenizer_special_tokens(folders: dict[str, Path], syntax: str) -> None:
    tokenizer = _hf_tokenizer(folders[syntax])
    for token, token_id in SPECIAL_TOKENS.items():
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id], token
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    # Like Qwen3: call markers survive skip_special_tokens, ChatML framing does not.
    ids = tokenizer.encode("<|im_start|><tool_call>x</tool_call><|im_end|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<tool_call>x</tool_call>"


def test_each_variant_renders_its_own_call_syntax(folders: dict[str, Path]) -> None:
    json_tok = _hf_tokenizer(folders["json"])
    xml_tok = _hf_tokenizer(folders["xml"])
    json_text = json_tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False)
    xml_text = xml_tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False)
    assert '<tool_call>\n{"name": "read_file"' in json_text
    assert "<function=read_file>" not in json_text
    assert "<tool_call>\n<function=read_file>\n<parameter=path>\nsrc/app.py\n</parameter>" in (
        xml_text
    )
    assert json_text.endswith("</tool_call><|im_end|>\n")
    assert xml_text.endswith("</tool_call><|im_end|>\n")

    def prompt(tok: Any) -> str:
        return tok.apply_chat_template(
            MESSAGES[:-1], tools=TOOLS, tokenize=False, add_generation_prompt=True
        )

    assert prompt(json_tok) == prompt(xml_tok)
    assert prompt(json_tok) == (
        "<|im_start|>system\nYou are a coding agent.<|im_end|>\n"
        "<|im_start|>user\nWhat is in src/app.py?<|im_end|>\n<|im_start|>assistant\n"
    )
    # The training prompt must be a prefix of the full conversation (mask_prompt relies on it).
    assert json_text.startswith(prompt(json_tok))
    assert xml_text.startswith(prompt(xml_tok))


def test_template_framing(folders: dict[str, Path]) -> None:
    tok = _hf_tokenizer(folders["json"])
    user = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    # The tool list is not rendered: it would make the tiny model's prompts 4.5x as long.
    without = tok.apply_chat_template(user, tokenize=False)
    assert tok.apply_chat_template(user, tools=TOOLS, tokenize=False) == without
    conversation = [
        *user,
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [_call("git_status", {}), _call("read_file", READ_CALL["arguments"])],
        },
        {"role": "tool", "content": "clean"},
        {"role": "tool", "content": "print(1)"},
        {"role": "assistant", "content": "All clean."},
    ]
    text = tok.apply_chat_template(conversation, tokenize=False)
    assert text == (
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nChecking.\n"
        '<tool_call>\n{"name": "git_status", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "read_file", "arguments": {"path": "src/app.py"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nclean\n</tool_response>\n"
        "<tool_response>\nprint(1)\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nAll clean.<|im_end|>\n"
    )


def test_json_accepts_string_arguments_xml_does_not(folders: dict[str, Path]) -> None:
    as_string = [
        *MESSAGES[:-1],
        {**MESSAGES[-1], "tool_calls": [_call("read_file", json.dumps(READ_CALL["arguments"]))]},
    ]
    json_tok = _hf_tokenizer(folders["json"])
    assert json_tok.apply_chat_template(as_string, tokenize=False) == (
        json_tok.apply_chat_template(MESSAGES, tokenize=False)
    )
    xml_tok = _hf_tokenizer(folders["xml"])
    with pytest.raises(Exception, match="mapping"):
        xml_tok.apply_chat_template(as_string, tokenize=False)


def test_xml_values_other_than_strings_use_json(folders: dict[str, Path]) -> None:
    tok = _hf_tokenizer(folders["xml"])
    arguments = {"path": "a.py", "limit": 10, "follow": True, "lines": [1, 2]}
    messages = [{"role": "assistant", "content": "", "tool_calls": [_call("read_file", arguments)]}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert "<parameter=limit>\n10\n</parameter>" in text
    assert "<parameter=follow>\ntrue\n</parameter>" in text
    assert "<parameter=lines>\n[1, 2]\n</parameter>" in text


@pytest.mark.parametrize(("syntax", "parser"), [("json", "json_tools"), ("xml", "qwen3_coder")])
def test_mlx_lm_infers_and_applies_tool_parser(
    folders: dict[str, Path], syntax: str, parser: str
) -> None:
    from mlx_lm.tokenizer_utils import _infer_tool_parser, load

    wrapper = load(Path(folders[syntax]))
    assert _infer_tool_parser(wrapper._tokenizer) == parser
    assert wrapper.tool_call_start == "<tool_call>"
    assert wrapper.tool_call_end == "</tool_call>"
    rendered = wrapper.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False)
    assert wrapper.tool_parser(_between_tags(rendered), TOOLS) == READ_CALL


def test_chat_template_strings_pick_parsers() -> None:
    assert "<tool_call>" in chat_template("json")
    assert "tool_call.name" in chat_template("json")
    assert "<tool_call>\\n<function=" in chat_template("xml")
    assert "<think>" not in chat_template("json") + chat_template("xml")
    with pytest.raises(ValueError, match="syntax"):
        chat_template(cast(Any, "yaml"))


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", SETTINGS, "json", CORPUS)
    second = build_tiny_model(tmp_path / "b", SETTINGS, "json", CORPUS)
    for name in ("tokenizer.json", "model.safetensors", "config.json", "tokenizer_config.json"):
        assert _sha256(first / name) == _sha256(second / name), name
    other_seed = build_tiny_model(tmp_path / "c", TinyModel(seed=1), "json", CORPUS)
    assert _sha256(other_seed / "model.safetensors") != _sha256(first / "model.safetensors")
    assert _sha256(other_seed / "tokenizer.json") == _sha256(first / "tokenizer.json")


def test_cache_reuses_finished_folder(folders: dict[str, Path], cache_root: Path) -> None:
    folder = folders["json"]
    info = folder / "build_info.json"
    before = (info.stat().st_mtime_ns, info.read_bytes(), folder.stat().st_mtime_ns)
    again = tiny_model(SETTINGS, "json", CORPUS, cache_root=cache_root)
    assert again == folder
    assert (info.stat().st_mtime_ns, info.read_bytes(), folder.stat().st_mtime_ns) == before
    assert folder.name.startswith("tiny-json-")
    assert folders["xml"] != folder
    # No staging folders are left behind.
    assert sorted(p.name for p in cache_root.iterdir()) == sorted(p.name for p in folders.values())


def test_cache_key_covers_corpus_and_settings(tmp_path: Path) -> None:
    base = tiny_model(SETTINGS, "json", CORPUS[:30], cache_root=tmp_path)
    assert tiny_model(SETTINGS, "json", CORPUS[:31], cache_root=tmp_path) != base
    assert tiny_model(TinyModel(seed=2), "json", CORPUS[:30], cache_root=tmp_path) != base


def test_cache_rebuilds_unfinished_folder(tmp_path: Path) -> None:
    folder = tiny_model(SETTINGS, "xml", CORPUS[:30], cache_root=tmp_path)
    (folder / "build_info.json").unlink()  # as if a build had died before finishing
    rebuilt = tiny_model(SETTINGS, "xml", CORPUS[:30], cache_root=tmp_path)
    assert rebuilt == folder
    assert (folder / "build_info.json").is_file()
    assert (folder / "model.safetensors").is_file()


def test_default_cache_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROUTEGATE_CACHE", str(tmp_path / "cache"))
    folder = tiny_model(SETTINGS, "json", CORPUS[:10])
    assert folder.parent == tmp_path / "cache"


def test_the_tiny_reference_reads_its_data_in_the_given_workspace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--workdir moves every output, also the data the tiny tokenizer learns from: generated
    there, never in the checkout's runs/ (or $ROUTEGATE_WORKDIR's)."""
    from pipeline.core.workspace import WORKDIR_ENV, Workspace
    from pipeline.data import data_dir
    from pipeline.definitions.experiment import load_experiment
    from pipeline.preflight import resolve_model

    monkeypatch.setenv("ROUTEGATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(WORKDIR_ENV, str(tmp_path / "elsewhere"))
    tiny = load_experiment("tiny")
    workspace = Workspace(tmp_path / "work")
    folder = resolve_model(tiny.models.base, tiny, workspace=workspace, tokenizer_only=True)
    assert (folder / "tokenizer.json").is_file()
    assert (data_dir(tiny, workspace) / "train.jsonl").is_file()
    assert not (tmp_path / "elsewhere").exists()


def test_the_tiny_reference_needs_its_corpus_handed_in() -> None:
    """Resolving a model never generates data: the caller hands the tiny tokenizer its corpus
    (pipeline.preflight.resolve_model draws it from the experiment's data)."""
    from pipeline.definitions.experiment import load_experiment
    from pipeline.models.refs import resolve

    with pytest.raises(ValueError, match=r"resolve\('tiny:json'\) needs `corpus`"):
        resolve("tiny:json", load_experiment("tiny"))
