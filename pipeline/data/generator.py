"""Training data for the catalog's tools, generated from the templates file.

Built from paraphrase templates and pools of paths, symbols and commands
(fixtures/data_templates.toml) with one seeded random.Random, so the same experiment and
templates always write the same bytes. What fills a tool's placeholders, how it joins a chain
and what its tool response says are data there too ([tools.*]): no tool is named in this code.
Four kinds of example, in roughly the seed's proportions:

    single      one request, one call (the call is the trained target)
    chain       one request that needs 2-4 tools, all called in one assistant turn
    multi_turn  request, call, tool response, a short answer (the answer is the target)
    no_tool     a question answered directly, so the model learns when not to call

The eval's prompt texts (and its file paths and argument values) never appear in user text.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import io
from pipeline.core.workspace import Workspace
from pipeline.data.jsonl import SPLITS, DataError, call_message, write_jsonl
from pipeline.data.summary import KINDS
from pipeline.data.templates import CHAIN_SOURCE, Template, Templates, load_templates
from pipeline.data.values import Draw, Slot, Slots, draw_slots
from pipeline.definitions.calls import Call, wrap_code
from pipeline.definitions.catalog import Catalog, load_catalog
from pipeline.definitions.experiment import PROMPTS_DIR, CallMode, CallSyntax, Experiment
from pipeline.definitions.prompts import EvalPrompt, load_prompts, system_prompt

KIND_SHARES = {"single": 0.60, "chain": 0.15, "multi_turn": 0.15, "no_tool": 0.10}
"""The kinds' shares when [data] no_tool_share is left at its default (0.10)."""
QUESTION_SHARE = 0.4
"""Of the no-tool examples, the share drawn from [no_tool.questions] where it has entries."""
LEAD_SHARE = 0.25
"""How often a chain whose first tool allows it opens with a lead ("For FILE: ")."""
STAMP = "generated.json"
"""Written beside generated splits: the inputs they came from, so stale data is regenerated."""


@dataclass
class _Spec:
    """One example before rendering: what the user says and what the assistant does."""

    kind: str
    user: str
    calls: list[Any]
    answer: str = ""
    response: str = ""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _text(template: Template) -> str:
    return template if isinstance(template, str) else template[0]


def held_out_prompts(experiment: Experiment, catalog: Catalog) -> tuple[EvalPrompt, ...]:
    """The prompts training data must not hold: the experiment's eval set and every set the
    project ships (fixtures/prompts/), so that evaluating a built model on another shipped set
    (`--prompts extended`) neither changes its data nor rebuilds it."""
    return tuple(p for path in _held_out_files(experiment) for p in load_prompts(path, catalog))


def _held_out_files(experiment: Experiment) -> list[Path]:
    return sorted({experiment.eval.prompts.resolve(), *PROMPTS_DIR.glob("*.toml")})


class _Generator:
    def __init__(
        self, experiment: Experiment, catalog: Catalog, templates: Templates | None = None
    ) -> None:
        self.catalog = catalog
        self.rng = random.Random(experiment.data.seed)
        self.templates = templates = templates or load_templates(
            phrasings=experiment.data.phrasings
        )
        for tool in catalog.names():
            missing = [
                entry
                for entry, table in (
                    ("[requests]", templates.requests),
                    (f"[clauses.{tool}]", templates.clauses),
                    (f"[tools.{tool}]", templates.tools),
                )
                if tool not in table
            ]
            if missing:
                raise DataError(
                    f"the generator has no templates for tool {tool!r} of the catalog (add "
                    f"{' and '.join(missing)} for it to the templates file)"
                )
        prompts = held_out_prompts(experiment, catalog)
        self.eval_texts = [_norm(p.text) for p in prompts]
        avoid: list[str] = []
        for prompt in prompts:
            for expectation in prompt.expect:
                for values in expectation.args.values():
                    for value in values:
                        text = str(value).removeprefix("./")
                        if isinstance(value, str) and len(text) >= 4 and text not in avoid:
                            avoid.append(text)
        self.avoid = avoid
        self.seen: set[str] = set()
        self._draws: dict[str, Draw] = {}
        self._recipe_values: dict[tuple[str, ...], Slots] = {}

    def _draw(self, tool: str = "") -> Draw:
        draw = self._draws.get(tool)
        if draw is None:
            draw = self._draws[tool] = Draw(self.rng, self.templates.material, tool)
        return draw

    def _chain_values(self, recipe: Sequence[str]) -> Slots:
        """[chains.values] for a recipe: the first of its tools to replace an entry wins."""
        key = tuple(recipe)
        if key not in self._recipe_values:
            replaced: dict[str, Slot] = {}
            for tool in recipe:
                for slot in self.templates.tools[tool].chain.values:
                    replaced.setdefault(slot.name, slot)
            self._recipe_values[key] = tuple(
                replaced.get(s.name, s) for s in self.templates.chain_values
            )
        return self._recipe_values[key]

    # -- uniqueness and leakage

    def _ok(self, spec: _Spec) -> bool:
        key = _norm(spec.user)
        if key in self.seen or any(e in key for e in self.eval_texts):
            return False
        if any(a in spec.user for a in self.avoid):
            return False
        for call in spec.calls:
            for value in call.arguments.values():
                if isinstance(value, str) and value.removeprefix("./") in self.avoid:
                    return False
        self.seen.add(key)
        return True

    def _unique(self, make: Callable[[], _Spec], what: str) -> _Spec:
        for _ in range(2000):
            spec = make()
            if self._ok(spec):
                return spec
        raise DataError(f"could not generate another unique {what} example (pools exhausted)")

    # -- slots

    def _slots(self, tool: str) -> dict[str, Any]:
        """Values for every placeholder of the tool's templates ([tools.TOOL.slots])."""
        return draw_slots(self.templates.tools[tool].slots, self._draw(tool))

    def _fill(self, tool: str, template: Template, slots: dict[str, Any]) -> tuple[str, Call]:
        text, fixed = (template, {}) if isinstance(template, str) else template
        schema = self.catalog.tool(tool).parameters
        args: dict[str, Any] = {}
        for param in schema["properties"]:
            if param in fixed:
                args[param] = fixed[param]
            elif "{" + param + "}" in text or param in schema.get("required", ()):
                args[param] = slots[param]
        return text.format(**slots), Call(tool, args)

    def _choose(self, templates: Sequence[Template], slots: dict[str, Any]) -> Template:
        content = slots.get("content")
        multiline = isinstance(content, str) and "\n" in content
        usable = [t for t in templates if not multiline or ":\n{content}" in _text(t)]
        return self.rng.choice(usable or list(templates))

    # -- kinds

    def single(self, tool: str) -> _Spec:
        def make() -> _Spec:
            slots = self._slots(tool)
            text, call = self._fill(tool, self._choose(self.templates.requests[tool], slots), slots)
            return _Spec("single", text, [call])

        return self._unique(make, tool)

    def multi_turn(self, tool: str) -> _Spec:
        spec = self.single(tool)
        response, answer = self._response(spec.calls[0])
        return _Spec("multi_turn", spec.user, spec.calls, answer=answer, response=response)

    def chain(self, recipe: Sequence[str]) -> _Spec:
        return self._unique(lambda: self._chain(recipe), "chain " + "+".join(recipe))

    def _chain(self, recipe: Sequence[str]) -> _Spec:
        rng, tools = self.rng, self.templates.tools
        context = draw_slots(self._chain_values(recipe), self._draw())
        source = context[CHAIN_SOURCE]
        mentioned: list[Any] = []
        clauses: list[str] = []
        calls: list[Call] = []
        lead = ""
        # "For FILE: read it, lint it, ..." only when the first clause needs nothing but the file.
        if rng.random() < LEAD_SHARE and tools[recipe[0]].chain.lead:
            lead = rng.choice(self.templates.chain_leads).format(f=source)
            mentioned.append(source)
        for tool in recipe:
            chain = tools[tool].chain
            slots = self._slots(tool)
            slots.update(draw_slots(chain.set, self._draw(tool), {**slots, **context}))
            for name, slot in chain.export.items():
                context[name] = slots[slot]
            # A clause may say "it" for the file (and "its" for the symbol) once both are named.
            refers = [slots[name] for name in chain.refers]
            named = bool(refers) and all(value in mentioned for value in refers)
            first, same = self.templates.clauses[tool]
            clause, call = self._fill(tool, self._choose(same if named else first, slots), slots)
            mentioned += refers
            clauses.append(clause)
            calls.append(call)
        return _Spec("chain", lead + _join(clauses, rng, bool(lead)), calls)

    def no_tool(self) -> _Spec:
        def make() -> _Spec:
            rng, t = self.rng, self.templates
            # no draw without questions: older experiments' data stays byte for byte
            if t.questions and rng.random() < QUESTION_SHARE:
                text, answer = rng.choice(t.questions)
                return _Spec("no_tool", text, [], answer=answer)
            family = rng.random()
            if family < 0.3:
                acronym, meaning = rng.choice(t.acronyms)
                text = rng.choice(t.acronym_frames).format(a=acronym)
                return _Spec("no_tool", text, [], answer=f"{acronym} stands for {meaning}")
            if family < 0.55:
                a, b, answer = rng.choice(t.differences)
                text = rng.choice(t.difference_frames).format(a=a, b=b)
                return _Spec("no_tool", text, [], answer=answer)
            if family < 0.85:
                concept, answer = rng.choice(t.concepts)
                text = rng.choice(t.concept_frames).format(a=concept)
                return _Spec("no_tool", text, [], answer=answer)
            return _Spec("no_tool", rng.choice(t.thanks), [], answer=rng.choice(t.thanks_replies))

        return self._unique(make, "no-tool")

    # -- tool responses for multi-turn examples

    def _response(self, call: Call) -> tuple[str, str]:
        """The tool's response to `call` and the assistant's answer ([tools.TOOL.response])."""
        rng, t = self.rng, self.templates
        response = t.tools[call.name].response
        ok = rng.random() < t.ok_share
        scope = {**call.arguments, "line": rng.randint(*t.response_lines)}
        draw = self._draw(call.name)
        scope.update(draw_slots(response.values, draw, scope))
        outcome = response.ok if ok else response.failed
        scope.update(draw_slots(outcome.values, draw, scope))
        try:
            return outcome.tool.format(**scope), outcome.answer.format(**scope)
        except (KeyError, IndexError) as err:
            raise DataError(
                f"[tools.{call.name}.response]: {{{err.args[0]}}} is neither an argument of the "
                f"call nor one of its values (known: {', '.join(scope)})"
            ) from err


def _join(clauses: Sequence[str], rng: random.Random, has_lead: bool) -> str:
    """Clauses as one request; after a lead ("For FILE: ") only forms without an opener."""
    if len(clauses) == 2:
        forms = ["{0}, then {1}.", "{0} and then {1}.", "{0}; after that, {1}."]
        forms += (
            []
            if has_lead
            else [
                "First {0}, then {1}.",
                "Please {0} and {1}.",
                "Can you {0} and then {1}?",
                "{0}, and once that's done, {1}.",
            ]
        )
        form = rng.choice(forms)
    else:
        last = rng.choice((", then ", ", and then ", ", and finally ", " and "))
        head = ", ".join(f"{{{i}}}" for i in range(len(clauses) - 1))
        opener = "" if has_lead else rng.choice(("", "First ", "Please ", "Could you "))
        form = opener + head + last + f"{{{len(clauses) - 1}}}"
        form += "?" if opener == "Could you " else "."
    text = form.format(*clauses)
    return text if has_lead else text[0].upper() + text[1:]


def _plan(count: int, no_tool_share: float) -> dict[str, int]:
    # the tool-calling kinds keep their proportions to each other (scale 1.0 at the default)
    scale = (1.0 - no_tool_share) / (1.0 - KIND_SHARES["no_tool"])
    plan = {kind: round(count * KIND_SHARES[kind] * scale) for kind in KINDS if kind != "no_tool"}
    plan["no_tool"] = count - sum(plan.values())
    if plan["no_tool"] < 0:  # pragma: no cover - the shares sum to 1
        raise DataError(f"cannot split {count} examples into kinds")
    return plan


def _cycle(items: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """`count` items, each used equally often (give or take one), in shuffled rounds."""
    out: list[str] = []
    while len(out) < count:
        batch = list(items)
        rng.shuffle(batch)
        out.extend(batch)
    return out[:count]


def _cycle_recipes(
    recipes: Sequence[tuple[str, ...]], count: int, rng: random.Random
) -> list[tuple[str, ...]]:
    order = _cycle([str(i) for i in range(len(recipes))], count, rng)
    return [recipes[int(i)] for i in order]


def _messages(spec: _Spec, system: str, syntax: CallSyntax, mode: CallMode) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": spec.user},
    ]
    if not spec.calls:
        messages.append({"role": "assistant", "content": spec.answer})
        return messages
    calls = [wrap_code(spec.calls)] if mode == "code" else spec.calls
    messages.append(call_message(calls, syntax))
    if spec.kind == "multi_turn":
        messages.append({"role": "tool", "content": spec.response})
        messages.append({"role": "assistant", "content": spec.answer})
    return messages


def generate_records(
    experiment: Experiment,
    *,
    syntax: CallSyntax | None = None,
    mode: CallMode | None = None,
    catalog: Catalog | None = None,
    templates: Templates | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The train and valid records generate() writes, in memory."""
    catalog = catalog or load_catalog()
    syntax = syntax or experiment.data.syntax
    mode = mode or experiment.data.mode
    gen = _Generator(experiment, catalog, templates)
    rng = gen.rng
    system = system_prompt(experiment, catalog)
    tools = catalog.openai_tools() if mode == "direct" else None
    splits: dict[str, list[dict[str, Any]]] = {}
    sizes = {"train": experiment.data.train_count, "valid": experiment.data.valid_count}
    for split, count in sizes.items():
        plan = _plan(count, experiment.data.no_tool_share)
        specs = [gen.single(t) for t in _cycle(catalog.names(), plan["single"], rng)]
        specs += [
            gen.chain(r) for r in _cycle_recipes(gen.templates.chain_recipes, plan["chain"], rng)
        ]
        specs += [gen.multi_turn(t) for t in _cycle(catalog.names(), plan["multi_turn"], rng)]
        specs += [gen.no_tool() for _ in range(plan["no_tool"])]
        rng.shuffle(specs)
        records = []
        for spec in specs:
            record: dict[str, Any] = {"messages": _messages(spec, system, syntax, mode)}
            if tools is not None:
                record["tools"] = tools
            records.append(record)
        splits[split] = records
    return splits


def _stamp(
    experiment: Experiment,
    syntax: CallSyntax,
    mode: CallMode,
    *,
    catalog: Catalog | None = None,
    templates: Templates | None = None,
) -> dict[str, Any]:
    """What a generated dataset depends on; a different stamp means regenerate."""
    catalog = catalog or load_catalog()
    digest = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):  # the generator's own code
        digest.update(module.read_bytes())
    digest.update(
        (templates or load_templates(phrasings=experiment.data.phrasings)).sha256.encode()
    )
    digest.update(system_prompt(experiment, catalog).encode())
    digest.update(json.dumps(catalog.openai_tools(), sort_keys=True).encode())
    for path in _held_out_files(experiment):
        digest.update(path.read_bytes())
    return {
        "seed": experiment.data.seed,
        "train_count": experiment.data.train_count,
        "valid_count": experiment.data.valid_count,
        "syntax": syntax,
        "mode": mode,
        "inputs_sha256": digest.hexdigest(),
    }


def generate(
    experiment: Experiment,
    out: Path,
    *,
    syntax: CallSyntax | None = None,
    mode: CallMode | None = None,
    catalog: Catalog | None = None,
    templates: Templates | None = None,
) -> dict[str, int]:
    """Write out/train.jsonl and out/valid.jsonl for the experiment; returns lines per split.

    Deterministic: the same experiment (seed, counts, system prompt, catalog, eval prompts)
    and templates write the same bytes. `syntax` and `mode` default to the experiment's data
    settings, `catalog` and `templates` to the shipped fixtures.
    """
    syntax = syntax or experiment.data.syntax
    mode = mode or experiment.data.mode
    splits = generate_records(
        experiment, syntax=syntax, mode=mode, catalog=catalog, templates=templates
    )
    out = Path(out)
    for split, records in splits.items():
        write_jsonl(out / f"{split}.jsonl", records)
    stamp = _stamp(experiment, syntax, mode, catalog=catalog, templates=templates)
    io.write_text(out / STAMP, json.dumps(stamp, indent=2) + "\n")
    return {split: len(records) for split, records in splits.items()}


def data_dir(experiment: Experiment, workspace: Workspace) -> Path:
    """Where the experiment's train.jsonl / valid.jsonl live: data.path, else the workspace's
    data folder for the experiment (generated there)."""
    if experiment.data.path:
        return Path(experiment.data.path)
    return workspace.data(experiment.name)


def ensure_data(experiment: Experiment, *, workspace: Workspace) -> Path:
    """The experiment's data folder, generated first when it is the default one and not current.

    A folder the user named (data.path) is never written to: missing files there raise.
    """
    folder = data_dir(experiment, workspace)
    files = [folder / f"{split}.jsonl" for split in SPLITS]
    if experiment.data.path:
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(
                f"data folder {folder} (data.path of {experiment.source}) has no "
                f"{' or '.join(missing)}"
            )
        return folder
    stamp = folder / STAMP
    if all(f.is_file() for f in files):
        if not stamp.is_file():
            return folder  # placed there by hand: leave it alone
        try:
            current = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            current = None
        if current == _stamp(experiment, experiment.data.syntax, experiment.data.mode):
            return folder
    generate(experiment, folder)
    return folder
