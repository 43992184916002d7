"""The seed's checks: pinned special tokens, ChatML framing, and where the pinned tokens sit,
base vs reference."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.preflight.findings import Finding, diff
from pipeline.preflight.inputs import Rendered, Side, encode


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


CALL_TAGS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
"""The tags a call block is framed by; Qwen3's vocabulary has each as one token."""


def report_call_tag(side: Side, tag: str) -> Finding:
    """How an unpinned call tag encodes: a model whose vocabulary lacks it learns it as text."""
    ids = side.tokenizer.encode(tag, add_special_tokens=False)
    subject = f"{side.name} {tag}"
    if len(ids) == 1:
        return Finding("special-tokens", subject, "info", f"one token, id {ids[0]} (not pinned)")
    return Finding(
        "special-tokens",
        subject,
        "info",
        f"not a token of this vocabulary: {len(ids)} tokens {ids}; calls are learned as text",
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
        diff(texts[1], texts[0], "reference", "base"),
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
        ok, encode(base.tokenizer, texts), encode(reference.tokenizer, texts), strict=True
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
