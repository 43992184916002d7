"""A tiny, randomly initialised Qwen3-architecture model, built locally from a seed.

The pipeline's plumbing (data, LoRA/full fine-tune, fuse, convert, serve, eval) has to be
exercised on machines with two CPU cores and no access to a model hub. A real Qwen3 checkpoint
is too big for that and needs the network, so this module writes a model folder of the same
architecture and file layout that `mlx_lm.load` and `transformers.AutoTokenizer` accept, small
enough that the full fine-tune that teaches it to route the catalog's tools (experiments/
tiny.toml) takes about two minutes.

Three choices carry most of the weight:

- The vocabulary is small (about 2k tokens, trained here as a byte-level BPE on the caller's
  corpus), because the output layer over Qwen's 151,936 tokens dominates a tiny model's cost.
- Everything is float32: bfloat16 and quantized matmuls are slow on this CPU.
- The Qwen3 special tokens are single tokens at fixed ids 0..8 (`SPECIAL_TOKENS`), so an
  experiment can pin them and mlx-lm finds the same tool-call and thinking markers it finds in
  a real Qwen3 tokenizer.

The chat template comes in two variants that differ only in how an assistant writes a tool call
(Qwen3's JSON or Qwen3-Coder's XML); everything before the assistant's reply renders
byte-identically, so a comparison between the two measures the call syntax and nothing else.
Neither renders the tool list (`chat_template` says why): the model learns its tools in training.

Builds are deterministic (same inputs, byte-identical tokenizer and weights) and cached by a
hash of every input, so tests and runs share one folder per configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.definitions.experiment import TinyModel
from pipeline.models import chatml
from pipeline.models.cache import cached_build, default_cache_root, library_versions

Syntax = chatml.Syntax

SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 0,
    "<|im_start|>": 1,
    "<|im_end|>": 2,
    "<tool_call>": 3,
    "</tool_call>": 4,
    "<tool_response>": 5,
    "</tool_response>": 6,
    "<think>": 7,
    "</think>": 8,
}
"""Qwen3's special tokens at the low ids the BPE trainer reserves for them.

Only the first three are `special` in the tokenizers sense, as in Qwen3: decoding with
`skip_special_tokens=True` must keep `<tool_call>` and friends, or a parser downstream would
never see the call.
"""

EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

_SKIPPED_ON_DECODE = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen2/Qwen3's pre-tokenizer split: keeps digits single, glues a leading space to words.
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


_ROPE_THETA = 1_000_000.0
_ZERO_INIT = ("o_proj.weight", "down_proj.weight")
"""Residual-branch outputs that start at zero (see `_init_weights`)."""
_RMS_NORM_EPS = 1e-6

# ---------------------------------------------------------------------------------------------
# Chat templates: a tiny-specific head (the system message as given) before the ChatML message
# loop the SmolLM2 templates share (pipeline/models/chatml.py).

_TEMPLATE_HEAD = r"""{#- routegate tiny model: ChatML without a tool list (see chat_template). -#}
{%- set ns = namespace(first=0) %}
{%- if messages and messages[0].role == 'system' %}
    {%- set ns.first = 1 %}
    {{- '<|im_start|>system\n' }}
    {{- messages[0].content if messages[0].content is string else '' }}
    {{- '<|im_end|>\n' }}
{%- endif %}
"""


def chat_template(syntax: Syntax) -> str:
    """The Jinja chat template for one tool-call syntax.

    The template takes `tools` but does not render them: the tiny model learns its catalog from
    the training data, and a list of the 26 tools' signatures would have made every prompt
    4.5 times as long (273 tokens instead of 61 with the direct system prompt), which cost
    more training time on two CPU cores than any other choice (the tiny experiment's file
    records the measurements). The system message is rendered as given. The message loop and
    the call blocks (and why mlx-lm picks `json_tools` or `qwen3_coder`) are in `chatml`.
    """
    return chatml.template(_TEMPLATE_HEAD, syntax)


# ---------------------------------------------------------------------------------------------
# Building


def _corpus_digest(corpus: Sequence[str]) -> str:
    """Hash with length prefixes, so ["ab", "c"] and ["a", "bc"] differ (order matters too)."""
    digest = hashlib.sha256()
    for i, text in enumerate(corpus):
        if not isinstance(text, str):
            raise TypeError(f"corpus[{i}] is {type(text).__name__}, not str")
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _inputs_key(settings: TinyModel, syntax: Syntax, corpus: Sequence[str]) -> str:
    """One hash over everything that determines the folder's contents.

    This file's own bytes are included so that any change to the build code invalidates old
    cache entries instead of silently serving a model the current code would not build.
    """
    inputs = {
        "settings": dataclasses.asdict(settings),
        "syntax": syntax,
        "corpus": _corpus_digest(corpus),
        "template": hashlib.sha256(chat_template(syntax).encode()).hexdigest(),
        "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "versions": library_versions(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _train_tokenizer(corpus: Sequence[str], vocab_size: int) -> Any:
    """Train a byte-level BPE laid out like Qwen3's tokenizer.json, on the caller's corpus.

    Qwen's normalizer, split regex, byte-level pre-tokenizer and decoder are copied so that
    mlx-lm chooses its BPE streaming detokenizer and text splits the way it would for the real
    model. The trainer reserves ids 0..8 for the special tokens in `SPECIAL_TOKENS` order.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    tokenizer.decoder = decoders.ByteLevel()  # what mlx-lm looks for to pick its BPE detokenizer
    ordered = sorted(SPECIAL_TOKENS, key=SPECIAL_TOKENS.__getitem__)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[AddedToken(t, normalized=False, special=True) for t in ordered],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)

    # The trainer marks every reserved token special; Qwen3 keeps the tool and think markers
    # non-special so they survive `decode(skip_special_tokens=True)`.
    data = json.loads(tokenizer.to_str())
    for added in data["added_tokens"]:
        added["special"] = added["content"] in _SKIPPED_ON_DECODE
    tokenizer = Tokenizer.from_str(json.dumps(data))

    for token, token_id in SPECIAL_TOKENS.items():
        if tokenizer.token_to_id(token) != token_id:
            raise RuntimeError(f"{token} got id {tokenizer.token_to_id(token)}, not {token_id}")
    return tokenizer


def _model_config(settings: TinyModel) -> dict[str, Any]:
    """A Qwen3 config.json; `torch_dtype` float32 so a later `mlx_lm convert` keeps float32."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": settings.vocab_size,
        "hidden_size": settings.hidden_size,
        "num_hidden_layers": settings.num_layers,
        "num_attention_heads": settings.num_heads,
        "num_key_value_heads": settings.num_kv_heads,
        "head_dim": settings.head_dim,
        "intermediate_size": settings.intermediate_size,
        "max_position_embeddings": settings.max_position_embeddings,
        "max_window_layers": settings.num_layers,
        "hidden_act": "silu",
        "rms_norm_eps": _RMS_NORM_EPS,
        "rope_theta": _ROPE_THETA,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": None,
        "bos_token_id": SPECIAL_TOKENS[PAD_TOKEN],
        "eos_token_id": SPECIAL_TOKENS[EOS_TOKEN],
        "pad_token_id": SPECIAL_TOKENS[PAD_TOKEN],
        "torch_dtype": "float32",
    }


def _tokenizer_config(settings: TinyModel, syntax: Syntax) -> dict[str, Any]:
    """tokenizer_config.json for transformers 4.51+ and 5.x alike.

    `PreTrainedTokenizerFast` loads tokenizer.json as written (transformers 5 maps it to its
    `TokenizersBackend`); a `Qwen2Tokenizer` class would also work but may rebuild parts of
    the pipeline from its own defaults. The template lives here, as in the real Qwen3 folders.
    """
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": settings.max_position_embeddings,
        "chat_template": chat_template(syntax),
    }


def _init_weights(model: Any, seed: int) -> int:
    """Overwrite every parameter from one seed, independent of mlx's module init order.

    The scales are mlx's own defaults (embedding N(0, 1/hidden), linear U(+-1/sqrt(fan_in)),
    norm scales 1), not Qwen3's N(0, 0.02): `mlx_lm lora --fine-tune-type full` trains only the
    transformer layers and leaves the tied embedding frozen, and a 0.02 embedding caps the
    logits near +-2.6, so the loss cannot fall far below ~5.4 on a 2k vocabulary. The two
    projections that write into the residual stream (`o_proj`, `down_proj`) start at zero, so
    every layer starts as the identity and the frozen embedding reaches the output unblurred
    by random layer noise (as in ReZero/Fixup; the routing the tiny experiment measures was
    learned sooner this way). Keys are split in sorted parameter-name order, so the weights
    depend on the seed and shapes only. Returns the parameter count.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    params = sorted(tree_flatten(model.parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    new: list[tuple[str, mx.array]] = []
    for i, (name, value) in enumerate(params):
        assert isinstance(value, mx.array), name
        if name.endswith("embed_tokens.weight"):
            scale = value.shape[1] ** -0.5
            weight = scale * mx.random.normal(value.shape, dtype=mx.float32, key=keys[i])
        elif name.endswith(_ZERO_INIT):
            weight = mx.zeros(value.shape, dtype=mx.float32)
        elif value.ndim >= 2:
            bound = value.shape[-1] ** -0.5
            weight = mx.random.uniform(-bound, bound, value.shape, dtype=mx.float32, key=keys[i])
        else:
            weight = mx.ones(value.shape, dtype=mx.float32)
        new.append((name, weight))
    model.update(tree_unflatten(new))
    mx.eval(model.parameters())
    return sum(int(v.size) for _, v in new)


def build_tiny_model(
    out_dir: Path, settings: TinyModel, syntax: Syntax, corpus: Sequence[str]
) -> Path:
    """Write a loadable tiny Qwen3 model folder into `out_dir` and return it.

    Uncached and not atomic: `tiny_model` wraps this for normal use. Kept separate so a test
    can build twice and compare bytes. The model's vocab_size is `settings.vocab_size`; the
    trained tokenizer has at most that many tokens (fewer on a small corpus), and the unused
    embedding rows are harmless, as in Qwen3 whose config pads 151,669 tokens to 151,936.
    """
    from mlx_lm.models.qwen3 import Model, ModelArgs
    from mlx_lm.utils import save_config, save_model

    chat_template(syntax)  # validate before spending time
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_tokenizer(corpus, settings.vocab_size)
    tokenizer_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if tokenizer_size > settings.vocab_size:
        raise RuntimeError(f"tokenizer has {tokenizer_size} tokens > {settings.vocab_size}")
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(_tokenizer_config(settings, syntax), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )

    config = _model_config(settings)
    model = Model(ModelArgs.from_dict(config))
    parameters = _init_weights(model, settings.seed)
    save_model(out_dir, model)
    save_config(dict(config), out_dir / "config.json")

    seconds = time.perf_counter() - started
    files = {
        p.name: p.stat().st_size
        for p in sorted(out_dir.iterdir())
        if p.is_file() and p.name != "build_info.json"
    }
    build_info = {
        "inputs_key": _inputs_key(settings, syntax, corpus),
        "syntax": syntax,
        "settings": dataclasses.asdict(settings),
        "corpus_strings": len(corpus),
        "corpus_sha256": _corpus_digest(corpus),
        "tokenizer_size": tokenizer_size,
        "model_vocab_size": settings.vocab_size,
        "parameters": parameters,
        "file_bytes": files,
        "total_bytes": sum(files.values()),
        "seconds": round(seconds, 3),
        "versions": library_versions(),
    }
    (out_dir / "build_info.json").write_text(json.dumps(build_info, indent=2) + "\n")
    return out_dir


def tiny_model(
    settings: TinyModel,
    syntax: Syntax,
    corpus: Sequence[str],
    cache_root: Path | None = None,
) -> Path:
    """The cached folder for these inputs, building it first (atomically: `cached_build`) if no
    finished copy exists."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    final = root / f"tiny-{syntax}-{_inputs_key(settings, syntax, corpus)[:16]}"
    return cached_build(final, lambda staging: build_tiny_model(staging, settings, syntax, corpus))
