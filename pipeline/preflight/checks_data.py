"""The data gate: counts and lengths per split, train/eval consistency (system prompt, eval
prompts leaking into training), and the disk the build needs."""

from __future__ import annotations

import difflib
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.data import Example
from pipeline.preflight.findings import Finding, first_line_diff
from pipeline.preflight.inputs import Rendered


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
        f"first: {ex.id}: first differing line:\n{first_line_diff(expected, got)}\n"
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
        f"free {need_gb - free_gb:.1f} GB more, or move runs/ to a larger disk (--workdir DIR)",
    )
