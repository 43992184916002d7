"""How the chat templates shape training and eval: rendering base vs reference, and the
thinking mode the eval's settings put into the prompt."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.definitions.experiment import Experiment
from pipeline.models.refs import chat_defaults
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
    prompts = _Prompts.of(base.tokenizer, system, ev.enable_thinking)
    held, missing = prompts.held(), prompts.missing()
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
        f"{held!r}; stop={list(ev.stop)}{prompts.mlx_default()}{_tags_as_text(base.tokenizer)}"
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
    if missing:
        problems.append(
            f"eval.enable_thinking={ev.enable_thinking} leaves {missing!r} out of the prompt, "
            "but every training prompt ends with it: the model would be asked without what "
            "came before every reply it learned. Fix: leave eval.enable_thinking unset."
        )
    if problems:
        return Finding("thinking", "eval settings", "fail", figure, "\n".join(problems))
    return Finding("thinking", "eval settings", "pass", figure)


def _tags_as_text(tokenizer: Any) -> str:
    """A note for a vocabulary without the think tags (SmolLM2): the block is learned as text,
    as the preflight reports the tool tags there; "" where both are tokens (Qwen3)."""
    ids = {tag: tokenizer.encode(tag, add_special_tokens=False) for tag in (THINK_START, THINK_END)}
    if all(len(i) == 1 for i in ids.values()):
        return ""
    encoded = ", ".join(f"{tag} {i}" for tag, i in ids.items())
    return f"; the think tags are not tokens of this vocabulary ({encoded}): learned as text"


@dataclass(frozen=True)
class _Prompts:
    """A system + user prompt rendered three ways: by the template's own defaults (`own`), as
    mlx_lm's trainer renders it (`trained`: with `chat_defaults`) and as its server renders it
    for the eval (`evaluated`: the eval's enable_thinking where set, else the same defaults)."""

    defaults: dict[str, Any]
    own: str
    trained: str
    evaluated: str

    @classmethod
    def of(cls, tokenizer: Any, system: str, enable_thinking: bool | None) -> _Prompts:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "x"}]
        defaults = chat_defaults(tokenizer)
        asked = defaults if enable_thinking is None else dict.fromkeys(defaults, enable_thinking)

        def render(**options: Any) -> str:
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **options
            )

        return cls(defaults, render(), render(**defaults), render(**asked))

    def held(self) -> str:
        """What the eval's settings add to the prompt beyond the training render."""
        if self.evaluated.startswith(self.trained):
            return self.evaluated[len(self.trained) :]
        return "" if self.trained.startswith(self.evaluated) else self.evaluated

    def missing(self) -> str:
        """What the eval's settings leave out of the training render's prompt."""
        if self.trained.startswith(self.evaluated):
            return self.trained[len(self.evaluated) :]
        return ""

    def mlx_default(self) -> str:
        """A note where mlx_lm's defaults change the template's own prompt (a think template
        over a vocabulary without think tokens: thinking off, the block in every prompt)."""
        if self.trained == self.own or not self.trained.startswith(self.own):
            return ""
        settings = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return (
            f"; mlx_lm renders with {settings} (set by the think tokens in the vocabulary), so "
            f"every training prompt ends with {self.trained[len(self.own) :]!r}"
        )
