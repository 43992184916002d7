"""What the checks judge: each model's tokenizer, the data splits, and every example rendered
exactly as `mlx_lm`'s ChatDataset renders it (what the model would actually be trained on).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.core.workspace import Workspace
from pipeline.data import SPLITS, Example, ensure_data, read_split
from pipeline.data.corpus import tiny_corpus
from pipeline.definitions.experiment import Experiment
from pipeline.models.refs import (
    ModelError,
    chat_defaults,
    load_tokenizer,
    resolve,
    tool_parser_name,
)

SideName = Literal["base", "reference"]
SIDES: tuple[SideName, ...] = ("base", "reference")
IM_START = "<|im_start|>"


@dataclass(frozen=True)
class Side:
    """One model's tokenizer as the gate sees it."""

    name: SideName
    ref: str
    folder: Path
    tokenizer: Any
    parser: str | None


@dataclass(frozen=True)
class Rendered:
    """One example rendered by one template the way mlx_lm's ChatDataset renders it."""

    example: Example
    text: str = ""
    prompt: str = ""
    """Everything before the last assistant message: what mask-prompt leaves out of the loss."""
    n_tokens: int = 0
    offset: int = 0
    aligned: bool = True
    """Whether the prompt's tokens are a prefix of the whole text's (the mask sits right)."""
    error: str = ""

    @property
    def target(self) -> str:
        return self.text[len(self.prompt) :]


def resolve_model(
    ref: str,
    experiment: Experiment,
    *,
    workspace: Workspace,
    revision: str = "",
    tokenizer_only: bool = False,
) -> Path:
    """`pipeline.models.refs.resolve`, handing a `tiny:*` model the corpus its tokenizer learns
    from: the experiment's texts and its data in `workspace` (generated there when not
    current; only a tiny reference asks for it)."""
    return resolve(
        ref,
        experiment,
        revision=revision,
        tokenizer_only=tokenizer_only,
        corpus=lambda: tiny_corpus(experiment, workspace=workspace),
    )


def load_side(experiment: Experiment, name: SideName, workspace: Workspace) -> Side:
    ref = experiment.models.base if name == "base" else experiment.models.reference
    revision = (
        experiment.models.base_revision if name == "base" else experiment.models.reference_revision
    )
    folder = resolve_model(
        ref, experiment, workspace=workspace, revision=revision, tokenizer_only=True
    )
    tokenizer = load_tokenizer(folder)
    if not isinstance(getattr(tokenizer, "chat_template", None), str):
        raise ModelError(f"{name} tokenizer at {folder} has no chat template")
    return Side(name, ref, folder, tokenizer, tool_parser_name(tokenizer))


def load_splits(experiment: Experiment, workspace: Workspace) -> dict[str, list[Example]]:
    """The experiment's splits: data.path's, else the workspace's (generated when not current)."""
    folder = ensure_data(experiment, workspace=workspace)
    return {split: read_split(folder, split) for split in SPLITS}


def render_examples(side: Side, examples: Sequence[Example]) -> list[Rendered]:
    """Render every example; token counts come from one batched encode (fast tokenizers). The
    template gets the arguments mlx_lm's ChatDataset passes it (`chat_defaults`)."""
    tok = side.tokenizer
    defaults = chat_defaults(tok)
    texts: list[tuple[Example, str, str] | Rendered] = []
    for ex in examples:
        try:
            text = tok.apply_chat_template(ex.messages, tools=ex.tools, tokenize=False, **defaults)
            prompt = tok.apply_chat_template(
                ex.messages[:-1],
                tools=ex.tools,
                tokenize=False,
                add_generation_prompt=ex.messages[-1]["role"] == "assistant",
                **defaults,
            )
        except Exception as err:  # jinja raises TypeError, UndefinedError, TemplateError...
            texts.append(Rendered(ex, error=f"{type(err).__name__}: {err}"))
            continue
        texts.append((ex, text, prompt))
    ok = [t for t in texts if isinstance(t, tuple)]
    full_ids = encode(tok, [t[1] for t in ok])
    prompt_ids = encode(tok, [t[2] for t in ok])
    out: list[Rendered] = []
    ok_iter = iter(zip(ok, full_ids, prompt_ids, strict=True))
    for item in texts:
        if isinstance(item, Rendered):
            out.append(item)
            continue
        (ex, text, prompt), ids, pids = next(ok_iter)
        aligned = ids[: len(pids)] == pids and text.startswith(prompt)
        out.append(Rendered(ex, text, prompt, len(ids), len(pids), aligned))
    return out


def encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts that share long pieces (the system prompt, above all).

    A tokenizer cuts text at its added tokens before it runs BPE, so the pieces between them
    encode independently: each distinct piece is encoded once. The result is compared with a
    direct encoding of a few texts, and a tokenizer where that differs is encoded directly.
    """
    if not texts:
        return []
    added: dict[str, int] = dict(tokenizer.get_added_vocab())
    if not added:
        return encode_direct(tokenizer, texts)
    longest_first = sorted(added, key=len, reverse=True)
    splitter = re.compile("(" + "|".join(re.escape(t) for t in longest_first) + ")")
    split = [[p for p in splitter.split(t) if p] for t in texts]
    plain = sorted({p for pieces in split for p in pieces if p not in added})
    ids = dict(zip(plain, encode_direct(tokenizer, plain), strict=True))
    ids.update({tok: [i] for tok, i in added.items()})
    out = [[i for p in pieces for i in ids[p]] for pieces in split]
    sample = list(range(0, len(texts), max(1, len(texts) // 3)))[:3]
    if encode_direct(tokenizer, [texts[i] for i in sample]) != [out[i] for i in sample]:
        return encode_direct(tokenizer, texts)
    return out


def encode_direct(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def trained_messages(example: Example, mask_prompt: bool) -> list[dict[str, Any]]:
    """The assistant messages the loss sees: the last one with mask-prompt, else every one."""
    assistants = [m for m in example.messages if m["role"] == "assistant"]
    return assistants[-1:] if mask_prompt else assistants


def trained_text(rendered: Rendered, mask_prompt: bool) -> str:
    """The text the loss sees: the last assistant turn with mask-prompt, else every one."""
    if mask_prompt:
        return rendered.target
    return "".join(t for k, t in turns(rendered.text) if k == "assistant")


def turns(text: str) -> list[tuple[str, str]]:
    """(kind, text) per ChatML turn: system, user and tool_response, or assistant."""
    out = []
    for chunk in text.split(IM_START)[1:]:
        role, _, body = chunk.partition("\n")
        kind = role
        if role == "user" and body.lstrip().startswith("<tool_response>"):
            kind = "tool_response"
        out.append((kind, IM_START + chunk))
    return out
