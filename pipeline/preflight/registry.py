"""Every preflight check, declared once: its name, the inputs it needs, its subjects, and how it
reads its arguments from the context.

The CLI, the build and `pytest tests/preflight` all run this table (pipeline.preflight.runner),
so they judge the same things the same way. A check that judges several subjects (one finding
per special token, per split, per tool) lists them in `subjects`; the list is computed from
the experiment and the catalog alone, without loading anything, so pytest can make one test of
each before any tokenizer loads. Adding a check: write its function in a checks_* module and
declare it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.data import SPLITS
from pipeline.preflight.checks_calls import (
    ToolCounts,
    check_call_syntax,
    check_masking,
    check_tool_trained,
)
from pipeline.preflight.checks_data import (
    check_counts,
    check_disk,
    check_eval_overlap,
    check_lengths,
    check_system_prompt,
)
from pipeline.preflight.checks_templates import check_rendering, check_thinking
from pipeline.preflight.checks_tokens import (
    CALL_TAGS,
    check_chatml,
    check_special_positions,
    check_special_token,
    report_call_tag,
)
from pipeline.preflight.context import NEEDS, Context, Need
from pipeline.preflight.findings import Finding
from pipeline.preflight.inputs import SIDES, SideName

Subjects = Callable[[Context], list[str]]


@dataclass(frozen=True)
class Check:
    name: str
    """The findings' `check` field, and the test's name: test_<name>[subject]."""
    needs: tuple[Need, ...]
    """Inputs that must load for the check to run; when one does not, each subject skips."""
    run: Callable[[Context], list[Finding]]
    """The check on a context: one finding per subject, in the order of `subjects`."""
    subjects: Subjects
    per: str = ""
    """What one subject is ("token", "split", "tool", "input"); "" for a single finding."""


def _one(subject: str) -> Subjects:
    return lambda ctx: [subject]


def _splits(ctx: Context) -> list[str]:
    return list(SPLITS)


def _load(ctx: Context) -> list[Finding]:
    out = []
    for need, what in NEEDS.items():
        error = ctx.load_error(need)
        out.append(
            Finding("load", what, "fail", "cannot load", error)
            if error
            else Finding("load", what, "pass", "loaded")
        )
    return out


def _tokens_checked(ctx: Context) -> list[tuple[SideName, str, int | None]]:
    """(side, token, pinned id) per side: the experiment's pins, then the call tags it does not
    pin (reported, not failed: SmolLM2 has none of them as tokens)."""
    tokens = ctx.experiment.tokens
    unpinned = [t for t in CALL_TAGS if t not in tokens]
    wanted = [*tokens.items(), *((t, None) for t in unpinned)]
    return [(side, token, pinned) for side in SIDES for token, pinned in wanted]


def _special_tokens(ctx: Context) -> list[Finding]:
    return [
        check_special_token(ctx.side(side), token, pinned)
        if pinned is not None
        else report_call_tag(ctx.side(side), token)
        for side, token, pinned in _tokens_checked(ctx)
    ]


def _chatml(ctx: Context) -> list[Finding]:
    user = ctx.prompts[0].text
    return [check_chatml(ctx.side("base"), ctx.side("reference"), ctx.system_prompt, user)]


def _counts(ctx: Context) -> list[Finding]:
    minimum = {"train": ctx.experiment.data.train_min, "valid": ctx.experiment.data.valid_min}
    return [check_counts(ctx.examples(s), s, minimum[s]) for s in SPLITS]


def _lengths(ctx: Context) -> list[Finding]:
    limit = ctx.experiment.train.max_seq_length
    return [check_lengths(ctx.rendered("base", s), s, limit) for s in SPLITS]


def _call_syntax(ctx: Context) -> list[Finding]:
    base, rendered = ctx.side("base"), ctx.rendered("base", "train")
    return [check_call_syntax(base, rendered, ctx.catalog, ctx.mask_prompt)]


def _thinking(ctx: Context) -> list[Finding]:
    base, rendered = ctx.side("base"), ctx.rendered("base", "train")
    return [check_thinking(base, rendered, ctx.experiment, ctx.system_prompt)]


def _special_positions(ctx: Context) -> list[Finding]:
    base, reference = ctx.side("base"), ctx.side("reference")
    rendered = ctx.rendered("base", "train")
    return [check_special_positions(base, reference, rendered, ctx.experiment.tokens)]


def _rendering(ctx: Context) -> list[Finding]:
    return [
        check_rendering(ctx.rendered("base", s), ctx.rendered("reference", s), s) for s in SPLITS
    ]


def _masked(ctx: Context) -> tuple[Finding, ToolCounts]:
    """The masking check's finding and per-tool counts, shared by masking and tool-trained."""
    return ctx.memo(
        "masking", lambda: check_masking(ctx.examples("train"), ctx.catalog, ctx.mask_prompt)
    )


def _tool_trained(ctx: Context) -> list[Finding]:
    per_tool = _masked(ctx)[1]
    return [check_tool_trained(t, per_tool[t], ctx.mask_prompt) for t in ctx.catalog.names()]


def _system_prompt(ctx: Context) -> list[Finding]:
    expected, variants = ctx.system_prompt, ctx.system_prompt_variants
    return [check_system_prompt(ctx.examples(s), expected, variants, s) for s in SPLITS]


def _eval_overlap(ctx: Context) -> list[Finding]:
    examples = ctx.examples("train") + ctx.examples("valid")
    return [check_eval_overlap(examples, [p.text for p in ctx.prompts])]


def _disk(ctx: Context) -> list[Finding]:
    return [check_disk(ctx.workspace.runs_root, ctx.experiment.resources.disk_gb)]


REGISTRY: tuple[Check, ...] = (
    Check("load", (), _load, lambda ctx: list(NEEDS.values()), per="input"),
    Check(
        "special-tokens",
        ("base", "reference"),
        _special_tokens,
        lambda ctx: [f"{side} {token}" for side, token, _ in _tokens_checked(ctx)],
        per="token",
    ),
    Check("chatml", ("base", "reference"), _chatml, _one("system + user")),
    Check("data", ("data",), _counts, _splits, per="split"),
    Check("lengths", ("base", "data"), _lengths, _splits, per="split"),
    Check("call-syntax", ("base", "data"), _call_syntax, _one("train")),
    Check("thinking", ("base", "data"), _thinking, _one("eval settings")),
    Check("special-positions", ("base", "reference", "data"), _special_positions, _one("train")),
    Check("rendering", ("base", "reference", "data"), _rendering, _splits, per="split"),
    Check("masking", ("data",), lambda ctx: [_masked(ctx)[0]], _one("train")),
    Check("tool-trained", ("data",), _tool_trained, lambda ctx: [*ctx.catalog.names()], per="tool"),
    Check("system-prompt", ("data",), _system_prompt, _splits, per="split"),
    Check("eval-overlap", ("data",), _eval_overlap, _one("train+valid")),
    Check("disk", (), _disk, lambda ctx: [str(ctx.workspace.runs_root)]),
)

CHECKS: dict[str, Check] = {c.name: c for c in REGISTRY}
