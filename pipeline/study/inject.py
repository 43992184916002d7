"""The confounds, injected: each a function from the clean experiment and its data to a copy
with exactly one thing wrong.

An injection reads the clean data folder and never writes to it; what it changes goes into
the folder it is given (`out`), and the experiment it returns reads that folder. The same
clean inputs always write the same bytes (no clock, no unseeded randomness), so the build key
of a confounded row is stable and a rerun of the study is a cache hit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import BadInput
from pipeline.data import SPLITS, call_message, convert_path, message_calls, read_split
from pipeline.data import write_jsonl as write_split
from pipeline.data.generator import _Generator
from pipeline.definitions.calls import Call, unwrap, wrap_code
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import CallSyntax, Experiment, with_overrides
from pipeline.definitions.prompts import EvalPrompt, load_prompts
from pipeline.models.refs import think_variant
from pipeline.preflight import Side
from pipeline.preflight.checks_templates import THINK_START

READS_XML = frozenset({"qwen3_coder"})
"""mlx_lm server tool parsers that read Qwen3-Coder's XML calls; json_tools (Qwen3, the tiny
and SmolLM2 `:json` templates) reads JSON. The syntax confound writes the one the base's
parser does not read."""

OTHER_SYSTEM_PROMPT = "You are a helpful assistant."
"""The system prompt the system-prompt confound trains with: the generic one chat models ship
with, short so the examples' lengths barely change and nothing but the prompt differs."""


class StudyError(BadInput):
    """A confound cannot be injected into this experiment's data; the message says why."""


@dataclass(frozen=True)
class BaseTemplate:
    """What the injections need to know about the base model's chat template and server."""

    ref: str
    parser: str | None
    """The tool parser mlx_lm's server picks for the base (None: it parses no calls)."""
    template: str

    @property
    def thinks(self) -> bool:
        """The template has a think block the eval can switch (the thinking check's test)."""
        return "enable_thinking" in self.template

    @classmethod
    def of(cls, side: Side) -> BaseTemplate:
        return cls(side.ref, side.parser, str(side.tokenizer.chat_template))


@dataclass(frozen=True)
class Clean:
    """The clean row's inputs every injection starts from."""

    experiment: Experiment
    data: Path
    """The clean train.jsonl / valid.jsonl folder (read, never written)."""
    base: BaseTemplate


@dataclass(frozen=True)
class Skipped:
    """The confound does not apply to this experiment; the row says why."""

    reason: str


@dataclass(frozen=True)
class JudgedTwice:
    """A confound that needs a model of its own, judged twice: trained once (the two differ in
    eval settings only, which no build key holds) and evaluated under `agreeing`'s eval, which
    agrees with its training (the control), and under `disagreeing`'s (the confound: the row).
    Its cost is then a paired, per-prompt difference on one model, not a difference between
    two trainings."""

    agreeing: Experiment
    disagreeing: Experiment


Injection = Callable[[Clean, Path], Experiment | Skipped | JudgedTwice]
"""(clean inputs, folder for the confounded data) -> the confounded experiment, a skip, or a
model of its own judged twice."""


def _reads(clean: Clean, out: Path, **data: Any) -> Experiment:
    """The clean experiment reading the data folder `out` (with `data` settings replaced),
    trained afresh: a shipped adapter was trained on the clean data, not on this."""
    experiment = with_overrides(clean.experiment, data=str(out), retrain=True)
    return dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, **data))


def _rewrite(clean: Clean, out: Path, change: Callable[[str, list[dict[str, Any]]], None]) -> None:
    """Copy each split's records into `out`, `change(split, records)` editing them in place."""
    for split in SPLITS:
        records = [example.record for example in read_split(clean.data, split)]
        change(split, records)
        write_split(out / f"{split}.jsonl", records)


# --- the injections -----------------------------------------------------------------------------


def wrong_call_syntax(clean: Clean, out: Path) -> Experiment:
    """Every call written in the syntax the base's server parser does not read (Phase 40's XML
    targets for Qwen3-8B's JSON parser), converted from the clean data and nothing else."""
    syntax: CallSyntax = "json" if clean.base.parser in READS_XML else "xml"
    _, problems = convert_path(clean.data, out, syntax)
    if problems:  # a line left unconverted would make a partial confound
        raise StudyError(f"cannot write the clean data's calls as {syntax}: {problems[0]}")
    return _reads(clean, out, syntax=syntax)


def calls_in_masked_turns(clean: Clean, out: Path) -> Experiment:
    """Every example that ends with a call gets the tool's response and a plain answer after it,
    as the generator's own multi-turn examples do; with mask_prompt the answer is the only turn
    trained, so no call is. mask_prompt is switched on if the clean run had it off (without it
    no turn is masked)."""
    catalog = load_catalog()
    signatures = catalog.signatures()
    # the generator's tool responses and answers (seeded): the masked turns read like its own
    responder = _Generator(clean.experiment, catalog)

    def change(split: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            messages = list(record["messages"])
            last = messages[-1]
            calls = message_calls(last, catalog) if last["role"] == "assistant" else []
            if not calls:
                continue
            answers: list[str] = []
            for call in calls:  # as stored: one execute_code call in code mode
                replies = [responder._response(c) for c in unwrap([call], signatures)]
                messages.append({"role": "tool", "content": "\n".join(r for r, _ in replies)})
                answers += [answer for _, answer in replies]
            messages.append({"role": "assistant", "content": " ".join(answers)})
            record["messages"] = messages

    _rewrite(clean, out, change)
    experiment = _reads(clean, out)
    train = dataclasses.replace(experiment.train, mask_prompt=True)
    return dataclasses.replace(experiment, train=train)


def other_system_prompt(clean: Clean, out: Path) -> Experiment:
    """Every train and valid example trained under another system prompt than the eval's."""

    def change(split: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            messages = list(record["messages"])
            if messages and messages[0]["role"] == "system":
                messages[0] = {**messages[0], "content": OTHER_SYSTEM_PROMPT}
            else:
                messages.insert(0, {"role": "system", "content": OTHER_SYSTEM_PROMPT})
            record["messages"] = messages

    _rewrite(clean, out, change)
    return _reads(clean, out)


def thinking_disagrees(clean: Clean, out: Path) -> Experiment | Skipped:
    """The eval asks with thinking on, so its prompt leaves out the empty think block every
    trained target starts with, and `<think>` stops generation (phase40's stop sequence, added
    where the clean eval lacks it: without it a thinking-on prompt is the training render
    itself, no disagreement). Only eval settings change: the clean model is judged."""
    if not clean.base.thinks:
        return Skipped(
            f"the base's chat template ({clean.base.ref}) has no think block (no "
            "enable_thinking), so targets and eval prompt cannot disagree about one"
        )
    return _thinking_on(clean.experiment)


def thinking_on_think_variant(clean: Clean, out: Path) -> JudgedTwice | Skipped:
    """For a base without a think block that routegate also builds with one (`smollm2:json` ->
    `smollm2:json-think`): the clean recipe trained on the think variant, judged with the clean
    eval settings (agreeing) and with `thinking_disagrees`'s (thinking on, `<think>` a stop).
    Nothing but the base's template changes in training, and the two judgements differ in
    enable_thinking alone (the stop only cuts a model that writes a block).

    What disagrees is not Qwen3's: SmolLM2's vocabulary has no think tokens, so mlx_lm renders
    its training prompts with thinking off (`refs.chat_defaults`): the empty block ends every
    training prompt (masked), not every target, and thinking on leaves it out of the eval's.
    The agreeing eval keeps enable_thinking as the clean one has it (SmolLM2's: unset, which
    mlx_lm's server renders as its trainer did); the preflight's thinking check passes it and
    fails the disagreeing one."""
    variant = think_variant(clean.base.ref)
    if clean.base.thinks or variant is None:
        return Skipped(
            f"the base's chat template ({clean.base.ref}) has a think block already, or "
            "routegate builds no variant of it with one"
        )
    agreeing = with_overrides(clean.experiment, base_model=variant, retrain=True)
    return JudgedTwice(agreeing, _thinking_on(agreeing))


def thinking(clean: Clean, out: Path) -> Experiment | Skipped | JudgedTwice:
    """The thinking row for any base: the clean model judged with thinking on where the base
    thinks (`thinking_disagrees`), else its think variant trained and judged twice where
    routegate builds one (`thinking_on_think_variant`), else skipped."""
    if clean.base.thinks or think_variant(clean.base.ref) is None:
        return thinking_disagrees(clean, out)
    return thinking_on_think_variant(clean, out)


def _thinking_on(experiment: Experiment) -> Experiment:
    """`experiment` evaluated with thinking on and `<think>` among its stop sequences."""
    ev = experiment.eval
    stop = ev.stop if THINK_START in ev.stop else (*ev.stop, THINK_START)
    return dataclasses.replace(
        experiment, eval=dataclasses.replace(ev, enable_thinking=True, stop=stop)
    )


def eval_prompts_leaked(clean: Clean, out: Path) -> Experiment:
    """Each eval prompt whose expected calls are all stated appended to train.jsonl with those
    calls as its target (the first allowed value of each argument), under the clean data's own
    system prompt and tool list. A prompt with an argument of any value is left out: the
    prompt file states no value to train."""
    catalog = load_catalog()
    experiment = clean.experiment
    leaked = [
        (prompt, calls)
        for prompt in load_prompts(experiment.eval.prompts, catalog)
        if (calls := _expected_calls(prompt))
    ]

    def change(split: str, records: list[dict[str, Any]]) -> None:
        if split != "train" or not records:
            return
        first = records[0]
        system = [m for m in first["messages"][:1] if m["role"] == "system"]
        tools = {"tools": first["tools"]} if "tools" in first else {}
        for prompt, calls in leaked:
            made = [wrap_code(calls)] if experiment.data.mode == "code" else calls
            target = call_message(made, experiment.data.syntax)
            user = {"role": "user", "content": prompt.text}
            records.append({"messages": [*system, user, target], **tools})

    _rewrite(clean, out, change)
    return _reads(clean, out)


def _expected_calls(prompt: EvalPrompt) -> list[Call]:
    """The calls that answer `prompt`, or [] when one needs a value the prompt file leaves open."""
    expectations = prompt.expect if prompt.match == "all_of" else prompt.expect[:1]
    calls = []
    for expected in expectations:
        if any(arg not in expected.optional for arg in expected.any_value):
            return []
        calls.append(Call(expected.tool, {arg: v[0] for arg, v in expected.args.items()}))
    return calls
