"""Preflight: tokenizers, templates, data and settings -> findings, before any training.

The seed's own check (special tokens, ChatML) passed and its experiment still failed: the
training targets were written in a syntax the base model's server parser cannot read, its
template put an empty `<think>` block into every target, and mask-prompt hid many calls from
the loss. Each check here renders the data exactly as `mlx_lm`'s ChatDataset does and judges
what the model would actually be trained on. Findings are values, so pytest and the CLI show
the same verdicts and `reports/<experiment>/preflight.json` records them.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import json
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.calls import (
    CODE_WRAPPER,
    TOOL_CALL_START,
    Call,
    CallParseError,
    find_blocks,
    message_calls,
    unwrap,
)
from pipeline.catalog import Catalog, load_catalog
from pipeline.data import SPLITS, DataError, Example, read_split
from pipeline.experiment import ROOT, Experiment, ExperimentError, data_dir, from_options
from pipeline.models import ModelError, load_tokenizer, resolve, tool_parser_name
from pipeline.prompts import fill_system_prompt, load_prompts, system_prompt

Verdict = Literal["pass", "fail", "info", "skip"]
SideName = Literal["base", "reference"]
SIDES: tuple[SideName, ...] = ("base", "reference")
THINK_START, THINK_END = "<think>", "</think>"
IM_START = "<|im_start|>"


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    verdict: Verdict
    figure: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def message(self) -> str:
        text = f"[{self.check}] {self.subject}: {self.figure}"
        return f"{text}\n{self.detail}" if self.detail else text


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


# --- loading ----------------------------------------------------------------------------------


def load_side(experiment: Experiment, name: SideName) -> Side:
    ref = experiment.models.base if name == "base" else experiment.models.reference
    revision = (
        experiment.models.base_revision if name == "base" else experiment.models.reference_revision
    )
    folder = resolve(ref, experiment, revision=revision, tokenizer_only=True)
    tokenizer = load_tokenizer(folder)
    if not isinstance(getattr(tokenizer, "chat_template", None), str):
        raise ModelError(f"{name} tokenizer at {folder} has no chat template")
    return Side(name, ref, folder, tokenizer, tool_parser_name(tokenizer))


def load_splits(experiment: Experiment) -> dict[str, list[Example]]:
    from pipeline.data import ensure_data

    folder = ensure_data(experiment) if not experiment.data.path else data_dir(experiment)
    return {split: read_split(folder, split) for split in SPLITS}


def render_examples(side: Side, examples: Sequence[Example]) -> list[Rendered]:
    """Render every example; token counts come from one batched encode (fast tokenizers)."""
    tok = side.tokenizer
    texts: list[tuple[Example, str, str] | Rendered] = []
    for ex in examples:
        try:
            text = tok.apply_chat_template(ex.messages, tools=ex.tools, tokenize=False)
            prompt = tok.apply_chat_template(
                ex.messages[:-1],
                tools=ex.tools,
                tokenize=False,
                add_generation_prompt=ex.messages[-1]["role"] == "assistant",
            )
        except Exception as err:  # jinja raises TypeError, UndefinedError, TemplateError...
            texts.append(Rendered(ex, error=f"{type(err).__name__}: {err}"))
            continue
        texts.append((ex, text, prompt))
    ok = [t for t in texts if isinstance(t, tuple)]
    full_ids = _encode(tok, [t[1] for t in ok])
    prompt_ids = _encode(tok, [t[2] for t in ok])
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


def trained_text(rendered: Rendered, mask_prompt: bool) -> str:
    """The text the loss sees: the last assistant turn with mask-prompt, else every one."""
    if mask_prompt:
        return rendered.target
    return "".join(t for k, t in _turns(rendered.text) if k == "assistant")


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts that share long pieces (the system prompt, above all).

    A tokenizer cuts text at its added tokens before it runs BPE, so the pieces between them
    encode independently: each distinct piece is encoded once. The result is compared with a
    direct encoding of a few texts, and a tokenizer where that differs is encoded directly.
    """
    if not texts:
        return []
    added: dict[str, int] = dict(tokenizer.get_added_vocab())
    if not added:
        return _encode_direct(tokenizer, texts)
    longest_first = sorted(added, key=len, reverse=True)
    splitter = re.compile("(" + "|".join(re.escape(t) for t in longest_first) + ")")
    split = [[p for p in splitter.split(t) if p] for t in texts]
    plain = sorted({p for pieces in split for p in pieces if p not in added})
    ids = dict(zip(plain, _encode_direct(tokenizer, plain), strict=True))
    ids.update({tok: [i] for tok, i in added.items()})
    out = [[i for p in pieces for i in ids[p]] for pieces in split]
    sample = list(range(0, len(texts), max(1, len(texts) // 3)))[:3]
    if _encode_direct(tokenizer, [texts[i] for i in sample]) != [out[i] for i in sample]:
        return _encode_direct(tokenizer, texts)
    return out


def _encode_direct(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


# --- checks 1-5: the seed's ---------------------------------------------------------------------


def check_special_token(side: Side, token: str, pinned: int) -> Finding:
    ids = side.tokenizer.encode(token, add_special_tokens=False)
    subject = f"{side.name} {token}"
    if ids == [pinned]:
        return Finding("special-tokens", subject, "pass", f"single token, id {pinned}")
    how = "is one token with another id" if len(ids) == 1 else f"splits into {len(ids)} tokens"
    return Finding(
        "special-tokens",
        subject,
        "fail",
        f"{token!r} {how}: {ids} (pinned: {pinned})",
        f"{side.name} tokenizer {side.folder}: {token!r} must encode to [{pinned}]. "
        "Use a model of the same tokenizer family, or correct the pinned id in the "
        "experiment's [tokens] table if the pin is wrong.",
    )


def check_chatml(base: Side, reference: Side, system: str, user: str) -> Finding:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    texts = [
        s.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for s in (base, reference)
    ]
    if texts[0] == texts[1]:
        return Finding("chatml", "system + user", "pass", f"identical ({len(texts[0])} chars)")
    return Finding(
        "chatml",
        "system + user",
        "fail",
        "base and reference render a system + user conversation differently",
        _diff(texts[1], texts[0], "reference", "base"),
    )


def check_special_positions(
    base: Side, reference: Side, rendered: Sequence[Rendered], tokens: dict[str, int]
) -> Finding:
    """The same text encoded by both tokenizers puts the pinned tokens at the same places."""
    ok = [r for r in rendered if not r.error]
    if not ok:
        return Finding("special-positions", "train", "skip", "no rendered examples")
    texts = [r.text for r in ok]
    pinned = set(tokens.values())
    mismatched = []
    for r, a, b in zip(
        ok, _encode(base.tokenizer, texts), _encode(reference.tokenizer, texts), strict=True
    ):
        pa = [(i, t) for i, t in enumerate(a) if t in pinned]
        pb = [(i, t) for i, t in enumerate(b) if t in pinned]
        if pa != pb:
            mismatched.append((r, pa, pb))
    figure = f"{len(ok) - len(mismatched)}/{len(ok)} examples agree"
    if not mismatched:
        return Finding("special-positions", "train", "pass", figure)
    r, pa, pb = mismatched[0]
    return Finding(
        "special-positions",
        "train",
        "fail",
        figure,
        f"first: {r.example.id}: base puts pinned tokens at {pa[:8]}, reference at {pb[:8]}",
    )


# --- check 6: the trained calls parse with the base model's server parser -------------------------


def stored_syntax(message: dict[str, Any]) -> str | None:
    """How a data file writes an assistant turn's calls: structured, json, xml, or code."""
    if message.get("tool_calls"):
        names = {(tc.get("function") or tc).get("name") for tc in message["tool_calls"]}
        return "code" if names == {CODE_WRAPPER} else "structured"
    content = message.get("content") or ""
    if TOOL_CALL_START not in content:
        return None
    syntaxes = {b.syntax for b in find_blocks(content)}
    if f"<function={CODE_WRAPPER}>" in content or f'"name": "{CODE_WRAPPER}"' in content:
        return "code"
    return next(iter(sorted(s for s in syntaxes if s))) if syntaxes - {None} else "unknown"


def trained_messages(example: Example, mask_prompt: bool) -> list[dict[str, Any]]:
    assistants = [m for m in example.messages if m["role"] == "assistant"]
    return assistants[-1:] if mask_prompt else assistants


def check_call_syntax(
    base: Side, rendered: Sequence[Rendered], catalog: Catalog, mask_prompt: bool
) -> Finding:
    syntaxes: Counter[str] = Counter()
    for r in rendered:
        for m in trained_messages(r.example, mask_prompt):
            if (syntax := stored_syntax(m)) is not None:
                syntaxes[syntax] += 1
    counts = ", ".join(f"{k} {v}" for k, v in sorted(syntaxes.items())) or "no calls"
    known = {*catalog.names(), CODE_WRAPPER}
    parse = _server_parser(base.parser)
    tools = [*catalog.openai_tools(), catalog.wrapper.openai()]
    calls = failures = 0
    first = ""
    for r in rendered:
        if r.error:
            continue
        for block in find_blocks(trained_text(r, mask_prompt)):
            calls += 1
            problem = _parse_problem(block.inner, block.closed, parse, tools, known, base.parser)
            if problem:
                failures += 1
                first = (
                    first or f"first: {r.example.id}: {problem}\n  call text: {_clip(block.inner)}"
                )
    figure = f"{calls - failures}/{calls} trained calls parse with {base.parser} ({counts})"
    if calls == 0:
        return Finding(
            "call-syntax",
            "train",
            "fail",
            figure,
            "no trained target contains a tool call: the model would never learn to "
            "call (check the data and the mask setting)",
        )
    if failures:
        return Finding(
            "call-syntax",
            "train",
            "fail",
            figure,
            f"{first}\nmlx_lm's server for {base.ref} uses the {base.parser!r} parser: write "
            "the calls structurally (tool_calls) so the template renders its own syntax, or "
            "convert them: python -m pipeline data convert --to structured IN OUT",
        )
    return Finding("call-syntax", "train", "pass", figure)


def _server_parser(name: str | None) -> Callable[..., Any] | None:
    if name is None:
        return None
    return importlib.import_module(f"mlx_lm.tool_parsers.{name}").parse_tool_call


def _parse_problem(
    inner: str,
    closed: bool,
    parse: Callable[..., Any] | None,
    tools: list[dict[str, Any]],
    known: set[str],
    parser: str | None,
) -> str:
    if parse is None:
        return "the base template gives mlx_lm no tool parser: its server returns no tool_calls"
    if not closed:
        return "the call is cut off before </tool_call>"
    try:
        parsed = parse(inner, tools)
    except Exception as err:  # parsers raise ValueError, JSONDecodeError, KeyError...
        return f"{parser} cannot parse it ({type(err).__name__}: {err})"
    for call in parsed if isinstance(parsed, list) else [parsed]:
        name = call.get("name") if isinstance(call, dict) else None
        if name not in known:
            return f"{parser} reads a call to {name!r}, which is not in the catalog"
    return ""


# --- check 7: rendering, base vs reference ------------------------------------------------------


def _turns(text: str) -> list[tuple[str, str]]:
    """(kind, text) per ChatML turn: system, user and tool_response, or assistant."""
    out = []
    for chunk in text.split(IM_START)[1:]:
        role, _, body = chunk.partition("\n")
        kind = role
        if role == "user" and body.lstrip().startswith("<tool_response>"):
            kind = "tool_response"
        out.append((kind, IM_START + chunk))
    return out


def check_rendering(base: Sequence[Rendered], reference: Sequence[Rendered], split: str) -> Finding:
    framing_diff = ""
    framing = native = target_diffs = errors = 0
    first_target = ""
    for b, r in zip(base, reference, strict=True):
        if b.error or r.error:
            errors += 1
            framing_diff = framing_diff or (
                f"{b.example.id} does not render: base: {b.error or 'ok'}; "
                f"reference: {r.error or 'ok'}"
            )
            continue
        tb, tr = _turns(b.text), _turns(r.text)
        kinds_b, kinds_r = [k for k, _ in tb], [k for k, _ in tr]
        bad = kinds_b != kinds_r or any(
            x != y for (k, x), (_, y) in zip(tb, tr, strict=False) if k in ("system", "user")
        )
        if bad:
            framing += 1
            if not framing_diff:
                pair = next(
                    (
                        (x, y)
                        for (k, x), (_, y) in zip(tr, tb, strict=False)
                        if k in ("system", "user") and x != y
                    ),
                    (r.text, b.text),
                )
                framing_diff = f"first: {b.example.id}\n" + _diff(*pair, "reference", "base")
        native += sum(
            1
            for (k, x), (_, y) in zip(tb, tr, strict=False)
            if k in ("assistant", "tool_response") and x != y
        )
        if b.target != r.target:
            target_diffs += 1
            first_target = first_target or (
                f"first target difference: {b.example.id}\n"
                + _diff(r.target, b.target, "reference", "base")
            )
    n = len(base)
    figure = (
        f"{n - framing - errors}/{n} prompts framed alike; {target_diffs}/{n} targets differ "
        f"(native call syntax); {native} assistant/tool turns differ"
    )
    if framing or errors:
        return Finding(
            "rendering",
            split,
            "fail",
            figure,
            f"{framing_diff}\nThe base model would be trained on prompts the reference never "
            "saw (system/user framing or tool-schema placement). Put the tools in the system "
            "prompt as text (code mode) or use a base whose template frames them alike.",
        )
    return Finding("rendering", split, "pass" if not target_diffs else "info", figure, first_target)


# --- check 8: thinking mode -----------------------------------------------------------------------


def check_thinking(
    base: Side, rendered: Sequence[Rendered], experiment: Experiment, system: str
) -> Finding:
    ev = experiment.eval
    template = base.tokenizer.chat_template
    targets = [r.target for r in rendered if not r.error and r.target]
    if "enable_thinking" not in template:
        figure = "base template has no thinking mode"
        if ev.enable_thinking is not None:
            figure += f"; eval.enable_thinking={ev.enable_thinking} has no effect"
        return Finding("thinking", "eval settings", "pass", figure)
    if not targets:
        return Finding("thinking", "eval settings", "skip", "no trained targets")
    empty_think = f"{THINK_START}\n\n{THINK_END}\n\n"
    starts = sum(t.startswith(empty_think) for t in targets)
    held = _generation_prompt_extra(base.tokenizer, system, ev.enable_thinking)
    unseen = cut = twice = 0
    stops: Counter[str] = Counter()
    for t in targets:
        rest = t
        if held:
            if not t.startswith(held):
                unseen += 1
            else:
                rest = t[len(held) :]
                twice += rest.startswith(held)
        end = rest.find("</tool_call>")
        head = rest if end < 0 else rest[:end]
        hit = next((s for s in ev.stop if s and s in head), None)
        if hit:
            cut += 1
            stops[hit] += 1
    n = len(targets)
    figure = (
        f"{starts}/{n} trained targets start with the empty think block; eval prompt holds "
        f"{held!r}; stop={list(ev.stop)}"
    )
    problems = []
    if cut:
        stop = stops.most_common(1)[0][0]
        fix = (
            "set eval.enable_thinking = false so the prompt holds the empty think block"
            if starts and not held
            else f"remove {stop!r} from eval.stop"
        )
        problems.append(
            f"stop sequence {stop!r} occurs in {cut}/{n} trained targets before their call "
            f"ends: generation would stop before the call. Fix: {fix}."
        )
    if unseen:
        problems.append(
            f"eval.enable_thinking={ev.enable_thinking} puts {held!r} into the prompt, but "
            f"{unseen}/{n} trained targets do not start with it: the model would see a prompt "
            "it was never trained on. Fix: leave eval.enable_thinking unset."
        )
    if twice:
        problems.append(
            f"{twice}/{n} trained targets hold {held!r} after the prompt already holds it: the "
            "model would generate the block twice. Fix: leave eval.enable_thinking unset, or "
            "strip think blocks from the data."
        )
    if problems:
        return Finding("thinking", "eval settings", "fail", figure, "\n".join(problems))
    return Finding("thinking", "eval settings", "pass", figure)


def _generation_prompt_extra(tokenizer: Any, system: str, enable_thinking: bool | None) -> str:
    """What the eval's chat-template settings add to the prompt beyond the training render."""
    if enable_thinking is None:
        return ""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "x"}]
    trained = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    evaluated = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return evaluated[len(trained) :] if evaluated.startswith(trained) else evaluated


# --- check 9: masking ---------------------------------------------------------------------------


def check_masking(
    examples: Sequence[Example], catalog: Catalog, mask_prompt: bool
) -> tuple[Finding, dict[str, dict[str, int]]]:
    """Per tool: examples that train its call, and calls that sit only in masked turns."""
    signatures = catalog.signatures()
    schemas = catalog.schemas()
    per_tool = {name: {"trained": 0, "masked_only": 0} for name in catalog.names()}
    training_examples = masked_only_calls = 0
    for ex in examples:
        trained_msgs = trained_messages(ex, mask_prompt)
        trained = _tool_names(trained_msgs, signatures, schemas)
        masked = _tool_names(
            [m for m in ex.messages if m["role"] == "assistant" and m not in trained_msgs],
            signatures,
            schemas,
        )
        training_examples += bool(trained)
        for name in trained & per_tool.keys():
            per_tool[name]["trained"] += 1
        for name in (masked - trained) & per_tool.keys():
            per_tool[name]["masked_only"] += 1
            masked_only_calls += 1
    never = [n for n, c in per_tool.items() if c["trained"] == 0]
    figure = (
        f"{len(per_tool) - len(never)}/{len(per_tool)} tools trained; {training_examples}/"
        f"{len(examples)} examples train a call; {masked_only_calls} calls only in masked turns"
    )
    if never:
        hidden = [n for n in never if per_tool[n]["masked_only"]]
        detail = f"never trained: {', '.join(never)}"
        if hidden:
            detail += (
                f"\nonly in masked turns (mask_prompt={mask_prompt} trains the last assistant "
                f"message alone): {', '.join(hidden)}. End examples with the call, or split "
                "multi-turn examples so each call is a last assistant message."
            )
        return Finding("masking", "train", "fail", figure, detail), per_tool
    return Finding("masking", "train", "pass", figure), per_tool


def _tool_names(
    messages: Iterable[dict[str, Any]],
    signatures: dict[str, list[str]],
    schemas: dict[str, dict[str, Any]],
) -> set[str]:
    names: set[str] = set()
    for m in messages:
        try:
            calls: list[Call] = unwrap(message_calls(m, schemas), signatures)
        except CallParseError:
            continue
        names.update(c.name for c in calls)
    return names


# --- check 10: train/eval consistency -----------------------------------------------------------


def check_system_prompt(
    examples: Sequence[Example], expected: str, variants: Sequence[str], split: str
) -> Finding:
    allowed = {expected, *variants}
    mismatched = [
        ex
        for ex in examples
        if ex.messages[0]["role"] != "system" or ex.messages[0]["content"].strip() not in allowed
    ]
    figure = f"{len(examples) - len(mismatched)}/{len(examples)} use the eval's system prompt"
    if not mismatched:
        return Finding("system-prompt", split, "pass", figure)
    ex = mismatched[0]
    got = ex.messages[0]["content"] if ex.messages[0]["role"] == "system" else "(no system message)"
    return Finding(
        "system-prompt",
        split,
        "fail",
        figure,
        f"first: {ex.id}: first differing line:\n{_first_line_diff(expected, got)}\n"
        "Train with the eval's system prompt (eval.system_prompt), or declare this one in "
        "eval.system_prompt_variants.",
    )


def check_eval_overlap(examples: Sequence[Example], prompts: Sequence[str]) -> Finding:
    users = sorted(
        {
            m["content"]
            for ex in examples
            for m in ex.messages
            if m["role"] == "user" and isinstance(m["content"], str)
        }
    )
    leaked = [p for p in prompts if any(p in u for u in users)]
    best, best_ratio = "", 0.0
    for p, match, ratio in _closest(prompts, users):
        if ratio > best_ratio:
            best, best_ratio = f"{p!r} ~ {match!r}", ratio
    figure = f"{len(leaked)}/{len(prompts)} eval prompts in training data; closest overlap " + (
        f"{best_ratio:.2f}: {best}" if best else "none"
    )
    if leaked:
        return Finding(
            "eval-overlap",
            "train+valid",
            "fail",
            figure,
            f"eval prompt found verbatim in training data: {leaked[0]!r}",
        )
    return Finding("eval-overlap", "train+valid", "pass", figure)


def _closest(
    prompts: Sequence[str], texts: Sequence[str], shortlist: int = 8
) -> Iterable[tuple[str, str, float]]:
    """Per prompt, the most similar text: a word-overlap shortlist, then difflib's ratio."""
    words = [set(t.lower().split()) for t in texts]
    for p in prompts:
        pw = set(p.lower().split())
        scored = sorted(
            range(len(texts)),
            key=lambda i: len(pw & words[i]) / (len(pw | words[i]) or 1),
            reverse=True,
        )[:shortlist]
        if scored:
            match = max(scored, key=lambda i: difflib.SequenceMatcher(None, p, texts[i]).ratio())
            yield p, texts[match], difflib.SequenceMatcher(None, p, texts[match]).ratio()


# --- checks 11-12: data gate and disk -------------------------------------------------------------


def check_counts(examples: Sequence[Example], split: str, minimum: int) -> Finding:
    figure = f"{len(examples)} examples (minimum {minimum})"
    if len(examples) >= minimum:
        return Finding("data", split, "pass", figure)
    return Finding(
        "data",
        split,
        "fail",
        figure,
        f"{split}.jsonl has {len(examples)} examples; the experiment needs {minimum}",
    )


def check_lengths(rendered: Sequence[Rendered], split: str, max_seq_length: int) -> Finding:
    broken = [r for r in rendered if r.error]
    if broken:
        return Finding(
            "lengths",
            split,
            "fail",
            f"{len(broken)} examples do not render",
            f"first: {broken[0].example.id}: {broken[0].error}",
        )
    lengths = sorted(r.n_tokens for r in rendered)
    if not lengths:
        return Finding("lengths", split, "skip", "no examples")
    p99 = lengths[min(len(lengths) - 1, int(0.99 * len(lengths)))]
    over = [r for r in rendered if r.n_tokens > max_seq_length]
    misaligned = [r for r in rendered if not r.aligned]
    figure = f"max {lengths[-1]}, p99 {p99} tokens (limit {max_seq_length})"
    if over:
        r = max(over, key=lambda r: r.n_tokens)
        return Finding(
            "lengths",
            split,
            "fail",
            figure,
            f"{len(over)} examples exceed train.max_seq_length and would be cut "
            f"silently; longest: {r.example.id} ({r.n_tokens} tokens)",
        )
    if misaligned:
        return Finding(
            "lengths",
            split,
            "fail",
            figure,
            f"{len(misaligned)} examples: the prompt's tokens are not a prefix of the "
            f"full render, so mask-prompt cuts at the wrong place; first: "
            f"{misaligned[0].example.id}",
        )
    return Finding("lengths", split, "pass", figure)


def check_disk(path: Path, need_gb: float) -> Finding:
    existing = next(p for p in (path, *path.parents) if p.exists())
    free_gb = shutil.disk_usage(existing).free / 1e9
    figure = f"{free_gb:.1f} GB free at {existing} (need {need_gb:g} GB)"
    if free_gb >= need_gb:
        return Finding("disk", str(path), "pass", figure)
    return Finding(
        "disk",
        str(path),
        "fail",
        figure,
        f"free {need_gb - free_gb:.1f} GB more, or move runs/ to a larger disk",
    )


# --- the whole preflight ------------------------------------------------------------------------


def run_preflight(experiment: Experiment) -> list[Finding]:
    """Every check, in order; a loader that fails becomes one failing finding, not a crash."""
    catalog = load_catalog()
    findings: list[Finding] = []
    sides: dict[str, Side] = {}
    for name in SIDES:
        try:
            sides[name] = load_side(experiment, name)
        except ModelError as err:
            findings.append(Finding("load", f"{name} tokenizer", "fail", "cannot load", str(err)))
    try:
        splits = load_splits(experiment)
    except DataError as err:
        findings.append(Finding("load", "data", "fail", "cannot load", str(err)))
        splits = {}
    system = system_prompt(experiment, catalog)
    for side in sides.values():
        findings += [check_special_token(side, t, i) for t, i in experiment.tokens.items()]
    if len(sides) == 2:
        first_prompt = load_prompts(experiment.eval.prompts, catalog)[0].text
        findings.append(check_chatml(sides["base"], sides["reference"], system, first_prompt))
    mask = experiment.train.mask_prompt
    rendered = {
        (side, split): render_examples(sides[side], examples)
        for side in sides
        for split, examples in splits.items()
    }
    if splits:
        findings += [
            check_counts(splits["train"], "train", experiment.data.train_min),
            check_counts(splits["valid"], "valid", experiment.data.valid_min),
        ]
    if "base" in sides and splits:
        base = sides["base"]
        findings += [
            check_lengths(rendered["base", s], s, experiment.train.max_seq_length) for s in SPLITS
        ]
        findings.append(check_call_syntax(base, rendered["base", "train"], catalog, mask))
        findings.append(check_thinking(base, rendered["base", "train"], experiment, system))
        if "reference" in sides:
            findings.append(
                check_special_positions(
                    base, sides["reference"], rendered["base", "train"], experiment.tokens
                )
            )
            findings += [
                check_rendering(rendered["base", s], rendered["reference", s], s) for s in SPLITS
            ]
    if splits:
        findings.append(check_masking(splits["train"], catalog, mask)[0])
        variants = [fill_system_prompt(p, catalog) for p in experiment.eval.system_prompt_variants]
        findings += [check_system_prompt(splits[s], system, variants, s) for s in SPLITS]
        prompts = [p.text for p in load_prompts(experiment.eval.prompts, catalog)]
        findings.append(check_eval_overlap(splits["train"] + splits["valid"], prompts))
    findings.append(check_disk(ROOT / "runs", experiment.resources.disk_gb))
    return findings


def summary(findings: Sequence[Finding]) -> str:
    """The one-screen table: check, subject, verdict, key figure."""
    rows = [(f.check, f.subject, f.verdict.upper(), f.figure) for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    lines = [
        f"{c:<{widths[0]}}  {s:<{widths[1]}}  {v:<{widths[2]}}  {fig}" for c, s, v, fig in rows
    ]
    failed = sum(f.failed for f in findings)
    lines.append(f"preflight: {'FAIL' if failed else 'PASS'} ({failed} of {len(findings)} failed)")
    return "\n".join(lines)


def explain(findings: Sequence[Finding]) -> str:
    """The summary table, then what to fix for each failed check."""
    details = [f"\n{f.message()}" for f in findings if f.failed and f.detail]
    return "\n".join([summary(findings), *details])


def report_path(experiment_name: str) -> Path:
    return ROOT / "reports" / experiment_name / "preflight.json"


def write_report(experiment: Experiment, findings: Sequence[Finding]) -> Path:
    path = report_path(experiment.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "experiment": experiment.name,
        "fingerprint": experiment.fingerprint(),
        "base": experiment.models.base,
        "reference": experiment.models.reference,
        "passed": not any(f.failed for f in findings),
        "findings": [dataclasses.asdict(f) for f in findings],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return path


# --- text helpers -------------------------------------------------------------------------------


def _diff(a: str, b: str, a_name: str, b_name: str, limit: int = 24) -> str:
    lines = list(
        difflib.unified_diff(a.splitlines(), b.splitlines(), a_name, b_name, lineterm="", n=1)
    )
    more = f"\n... ({len(lines) - limit} more diff lines)" if len(lines) > limit else ""
    return "\n".join(_clip(line, 160) for line in lines[:limit]) + more


def _first_line_diff(expected: str, got: str) -> str:
    for i, (a, b) in enumerate(zip(expected.splitlines(), got.splitlines(), strict=False), 1):
        if a != b:
            return f"  line {i}: expected {_clip(a)!r}\n  line {i}: got      {_clip(b)!r}"
    return f"  expected {len(expected.splitlines())} lines, got {len(got.splitlines())}"


def _clip(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def add_experiment_options(parser: argparse.ArgumentParser) -> None:
    """The options every step shares with pytest's (conftest.py): same names, same meaning."""
    parser.add_argument("--experiment", default="tiny", help="name or TOML path [tiny]")
    parser.add_argument("--base-model", default=None, help="hub id or folder for models.base")
    parser.add_argument(
        "--reference-model", default=None, help="hub id or folder for models.reference"
    )
    parser.add_argument("--data", default=None, help="folder with train.jsonl and valid.jsonl")


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    return from_options(lambda name: getattr(args, name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline preflight",
        description="Check tokenizers, templates, data and settings before training.",
    )
    add_experiment_options(parser)
    args = parser.parse_args(argv)
    try:
        experiment = experiment_from_args(args)
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    findings = run_preflight(experiment)
    print(explain(findings))
    print(f"report: {write_report(experiment, findings)}")
    return 1 if any(f.failed for f in findings) else 0
