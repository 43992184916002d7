"""How the chat templates shape training and eval: rendering base vs reference, and the
thinking mode the eval's settings put into the prompt."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pipeline.definitions.experiment import Experiment
from pipeline.preflight.findings import Finding, diff
from pipeline.preflight.inputs import Rendered, Side, turns

THINK_START, THINK_END = "<think>", "</think>"


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
        tb, tr = turns(b.text), turns(r.text)
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
                framing_diff = f"first: {b.example.id}\n" + diff(*pair, "reference", "base")
        native += sum(
            1
            for (k, x), (_, y) in zip(tb, tr, strict=False)
            if k in ("assistant", "tool_response") and x != y
        )
        if b.target != r.target:
            target_diffs += 1
            first_target = first_target or (
                f"first target difference: {b.example.id}\n"
                + diff(r.target, b.target, "reference", "base")
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
