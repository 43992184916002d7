"""Score one model reply against one eval prompt.

Pure functions, in two steps, like BFCL's AST checker:

1. `extract(message, finish_reason, catalog)` reads the calls out of an OpenAI chat-completion
   choice's `message`: the server's parsed `tool_calls`, raw `<tool_call>` blocks left in the
   content (JSON or XML), and the tool calls inside `execute_code`'s Python (parsed with `ast`,
   never with a regex). Prose that names a tool is never a call. A reply cut off by max_tokens
   says so (`truncated`), because mlx_lm's server drops a cut-off tool call without a trace.
2. `score(extraction, prompt, primary=..., code_mode=...)` compares the calls with the prompt's
   expectations and gives every dimension (routing, arguments, format, the seed's scheme) plus
   one line that says what went wrong.

A reply that contradicts itself (`ANOMALIES`: finish_reason "tool_calls" with no calls, a reply
emptied by max_tokens, `<tool_call>` text the server left unparsed) says so in its reason, and a
reply that crashes a parser scores 0 with the error (`unscorable`) instead of stopping the run.

Aggregation over prompts (means, intervals, decidability, paired comparisons) is
pipeline.eval.metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.definitions.calls import (
    CODE_WRAPPER,
    NON_LITERAL,
    Call,
    CallParseError,
    code_calls,
    find_blocks,
    parse_block,
    structured_calls,
)
from pipeline.definitions.catalog import Catalog, load_catalog
from pipeline.definitions.experiment import OVERALL, ScoreName
from pipeline.definitions.prompts import EvalPrompt, Expectation

Source = Literal["native", "raw_json", "raw_xml", "none"]
Anomaly = Literal["no_tool_calls", "emptied", "unparsed", "unscorable"]

ANOMALIES: dict[Anomaly, str] = {
    "no_tool_calls": 'finish_reason "tool_calls" with no tool_calls: the server could not parse '
    "the call (its log says why)",
    "emptied": "truncated at max_tokens with an empty reply "
    "(mlx_lm drops a tool call cut off by max_tokens)",
    "unparsed": "<tool_call> text left in the content: the server did not parse it into tool_calls",
    "unscorable": "the reply could not be scored",
}
"""Replies that contradict themselves or cannot be read, each named by its own reason text:
the scored reply says it, and the eval summary counts each kind per temperature."""

Failure = Literal[
    "wrong_tool",
    "invented_tool",
    "arguments",
    "malformed",
    "truncated",
    "prose",
    "unneeded_call",
    "extra_calls",
    "format",
    "error",
]

FAILURES: dict[Failure, str] = {
    "wrong_tool": "called a catalog tool, not the one(s) expected",
    "invented_tool": "called a tool the catalog does not have",
    "arguments": "the right tool with missing or wrong arguments",
    "malformed": "a call that could not be read: the server could not parse it, or its text "
    "was left in the content",
    "truncated": "cut off by max_tokens before a complete call",
    "prose": "answered in prose (or nothing) where a call was expected",
    "unneeded_call": "called a tool where the request needs none",
    "extra_calls": "the expected calls and others besides",
    "format": "the right calls outside the declared format (direct vs inside execute_code)",
    "error": "no usable answer from the server, or one that could not be scored",
}
"""Why an answer is not fully right: exactly one per such answer (`Score.failure`), the first
of these that applies, in this order of checks: error, unneeded call, truncated, malformed,
prose, invented tool, wrong tool, arguments, extra calls, format. "extra_calls" is the one an
answer with full marks can carry (the expected calls were made, and others besides: the score
does not count them, a user of the calls would). The report counts them per category and
against a baseline run."""

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_BLOCK_TEXT_RE = re.compile(r"<tool_call>.*?(?:</tool_call>|\Z)", re.DOTALL)
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)")
_SNIPPET = 60


# --- extraction -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    """What one reply called, and how it said it."""

    calls: list[Call] = field(default_factory=list)
    """Tool calls in reply order, with each `execute_code` call replaced by the calls its code
    makes to catalog tools (literal arguments; a computed one is `calls.NON_LITERAL`)."""
    wrapped: bool = False
    """Every call went through `execute_code`: at least one `execute_code` whose Python parsed,
    and no tool called directly beside it (its code may still call no catalog tool)."""
    source: Source = "none"
    """How the reply carried its calls: "native" (the server parsed them into `tool_calls`),
    "raw_json" / "raw_xml" (`<tool_call>` text left in the content, the syntax of the first
    block), "none" (no tool call at all). Whether the calls sat inside `execute_code` is
    `wrapped`, not a source, so code mode still tells a parsed call from raw text."""
    truncated: bool = False
    """finish_reason "length" with no complete call, or a `<tool_call>` block without its end."""
    errors: tuple[str, ...] = ()
    """One line per call the reply attempted but that cannot be read: garbage JSON, Python that
    does not parse, a block cut off before `</tool_call>`, a reply emptied by max_tokens."""
    text: str = ""
    """The prose: the content without `<tool_call>` blocks and `<think>` blocks, stripped."""
    anomalies: tuple[Anomaly, ...] = ()
    """The contradictions of `ANOMALIES` this reply shows, in that table's order."""

    @property
    def attempted(self) -> bool:
        """The reply called, or tried to call, a tool (a no-tool prompt fails on this)."""
        return bool(self.calls) or bool(self.errors) or self.wrapped


def extract(
    message: Mapping[str, Any], finish_reason: str | None, catalog: Catalog | None = None
) -> Extraction:
    """Read every call out of a chat-completion choice's `message`."""
    catalog = catalog or load_catalog()
    signatures = catalog.signatures()
    schemas = catalog.schemas()
    errors: list[str] = []
    outer: list[Call] = []
    source: Source = "none"
    cut_short = finish_reason == "length"
    found: set[Anomaly] = set()

    native_calls = message.get("tool_calls")
    for i, item in enumerate(native_calls or []):
        source = "native"
        try:
            outer.extend(structured_calls({"tool_calls": [item]}))
        except CallParseError as err:
            errors.append(_native_error(i, item, str(err)))

    content = _content(message.get("content"))
    blocks = find_blocks(content)
    truncated = False
    for block in blocks:
        if source == "none":
            source = "raw_xml" if block.syntax == "xml" else "raw_json"
        if not block.closed:
            truncated = True
            errors.append(
                "truncated at max_tokens before </tool_call>"
                if cut_short
                else f"tool call cut off before </tool_call> (finish_reason {finish_reason!r})"
            )
            continue
        found.add("unparsed")
        try:
            outer.append(parse_block(block, schemas))
        except CallParseError as err:
            errors.append(str(err))
    if finish_reason == "tool_calls" and not native_calls:
        found.add("no_tool_calls")
        if not blocks:  # the call is lost: an attempt that cannot be read
            errors.append(ANOMALIES["no_tool_calls"])

    calls: list[Call] = []
    direct = wrapper_ok = False
    for call in outer:
        if call.name != CODE_WRAPPER:
            direct = True
            calls.append(call)
            continue
        code = call.arguments.get("code")
        if not isinstance(code, str):
            errors.append(f"{CODE_WRAPPER} has no string argument 'code'")
            continue
        try:
            calls.extend(code_calls(code, signatures))
        except CallParseError as err:
            errors.append(str(err))
            continue
        wrapper_ok = True

    text = _prose(content)
    if cut_short and not calls:
        truncated = True
        if not text and not errors:
            found.add("emptied")
            errors.append(ANOMALIES["emptied"])
    return Extraction(
        calls=calls,
        wrapped=wrapper_ok and not direct,
        source=source,
        truncated=truncated,
        errors=tuple(errors),
        text=text,
        anomalies=tuple(k for k in ANOMALIES if k in found),
    )


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p
        )
    return ""


def _prose(content: str) -> str:
    return _THINK_RE.sub("", _BLOCK_TEXT_RE.sub("", content)).strip()


def _native_error(i: int, item: Any, message: str) -> str:
    fn = item.get("function", item) if isinstance(item, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    message = re.sub(r"^tool_calls\[0\]", f"tool_calls[{i}]", message)
    return f"{message} ({name})" if isinstance(name, str) else message


# --- scoring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    value: float
    """The experiment's primary score, 0..1."""
    routing: float
    """Right tool(s), 0..1: any_of 0/1, all_of the share of expected tools called, none 0/1."""
    arguments: float
    """Right tool(s) with allowed arguments, 0..1, counted like routing."""
    format: bool
    """The declared call format held: inside execute_code in code mode, direct calls otherwise
    (a reply without a call to a no-tool prompt holds it trivially)."""
    reason: str
    """One line: "ok: <calls>"; or what to look at first, then further problems after "; ";
    "ok (<primary>); <problems>" when the primary score is full but another dimension is not."""
    calls: list[dict[str, Any]] = field(default_factory=list)
    """The extracted calls as plain `{"name", "arguments"}` dicts, for snapshots."""
    failure: Failure | None = None
    """Why the answer is not fully right (`FAILURES`); None when it is."""


def score(
    extraction: Extraction,
    prompt: EvalPrompt,
    *,
    primary: ScoreName,
    code_mode: bool,
    catalog: Catalog | None = None,
) -> Score:
    """Score one reply; `catalog` (default: the shipped one) tells schema args from made-up ones.

    primary "seed" reproduces the seed's partial credit on parsed calls: 1.0 wrapped and right
    tool, 0.5 right tool unwrapped, 0.1 wrapped but wrong tool, 0 no call; all_of: the share of
    expected tools called, plus 0.1 if wrapped, capped at 1.0. "Wrapped" is `extraction.wrapped`
    in code mode. In a direct-call ("native") experiment there is no wrapper to use, so a parsed
    call counts as wrapped: a right native call scores 1.0 and a wrong one 0.1, the same scale
    the seed gave a well-formed call.
    """
    catalog = catalog or load_catalog()
    ex = extraction
    calls = ex.calls
    plain = [{"name": c.name, "arguments": dict(c.arguments)} for c in calls]

    if prompt.match == "none":
        ok = 0.0 if ex.attempted else 1.0
        if ok:
            reason = "ok: no call" + (f" ({_snippet(ex.text)})" if ex.text else "")
        elif calls:
            reason = f"called {_names(calls)}, expected no call"
        elif ex.errors:
            reason = f"expected no call, but tried one: {ex.errors[0]}"
        else:
            reason = f"expected no call, but called {CODE_WRAPPER}"
        reason = "; ".join([reason, *_notes(ex)])
        fmt = not ex.attempted or (ex.wrapped if code_mode else not ex.wrapped)
        return Score(ok, ok, ok, fmt, reason, plain, None if ok else "unneeded_call")

    called = bool(calls) or ex.wrapped  # an execute_code that calls no catalog tool is a call
    fmt = called and (ex.wrapped if code_mode else not ex.wrapped)
    seed_wrapped = ex.wrapped if code_mode else called
    check = _checker(catalog)
    problems: list[str] = []

    if prompt.match == "any_of":
        routing, arguments = _any_of(calls, prompt.expect, check, problems)
        if not called:
            seed = 0.0
        elif routing:
            seed = 1.0 if seed_wrapped else 0.5
        else:
            seed = 0.1 if seed_wrapped else 0.0
    else:
        routing, arguments = _all_of(calls, prompt.expect, check, problems)
        seed = min(1.0, routing + (0.1 if seed_wrapped else 0.0))

    if called and not fmt:
        problems.insert(
            1 if routing < 1 else 0,
            f"{_names(calls)} called directly, not inside {CODE_WRAPPER}"
            if code_mode
            else f"calls wrapped in {CODE_WRAPPER}, expected direct calls",
        )
    value = {"routing": routing, "arguments": arguments, "seed": seed}[primary]
    head = _no_call_reason(ex) if not calls else None
    if head:
        problems.insert(0, head)
    problems += _notes(ex)
    if calls and ex.errors:
        problems.append("also: " + "; ".join(ex.errors))
    if not problems:
        reason = f"ok: {_summary(calls)}"
    elif value >= 1.0:  # full marks on the primary score; the rest is still worth a look
        reason = f"ok ({primary}); " + "; ".join(problems)
    else:
        reason = "; ".join(problems)
    failure = None
    if value < 1.0:
        failure = failure_of(ex, prompt, routing=routing, arguments=arguments, catalog=catalog)
    elif {c.name for c in calls} - {e.tool for e in prompt.expect}:
        failure = "extra_calls"  # right on the score, and more than was asked
    return Score(value, routing, arguments, fmt, reason, plain, failure)


def failure_of(
    ex: Extraction,
    prompt: EvalPrompt,
    *,
    routing: float,
    arguments: float,
    catalog: Catalog,
) -> Failure:
    """The one failure type (`FAILURES`) of an answer to a tool prompt that is not fully right."""
    if "unscorable" in ex.anomalies:
        return "error"
    if not ex.calls:
        if ex.truncated:
            return "truncated"
        if ex.errors or "unparsed" in ex.anomalies:
            return "malformed"
        if ex.wrapped:  # execute_code that calls no catalog tool
            return "wrong_tool"
        return "prose"
    known = set(catalog.names())
    expected = {e.tool for e in prompt.expect}
    if routing < 1.0:
        invented = [c.name for c in ex.calls if c.name not in known]
        return "invented_tool" if invented else "wrong_tool"
    if arguments < 1.0:
        return "arguments"
    if any(c.name not in expected for c in ex.calls):
        return "extra_calls"
    return "format"  # right calls, right arguments: only the seed's scheme asks more


def unscorable(err: Exception) -> tuple[Extraction, Score]:
    """A reply that crashed a parser (a 6,000-term expression in execute_code, JSON nested
    100,000 deep): 0 on every dimension and the error as its reason, so that one reply, even
    a stored one read again on every rerun, never stops the eval."""
    message = " ".join(str(err).split())
    if len(message) > _SNIPPET * 2:
        message = message[: _SNIPPET * 2 - 3] + "..."
    reason = f"{ANOMALIES['unscorable']} ({type(err).__name__}: {message})"
    extraction = Extraction(errors=(reason,), anomalies=("unscorable",))
    return extraction, Score(0.0, 0.0, 0.0, False, reason, failure="error")


def _notes(ex: Extraction) -> list[str]:
    """The reply's contradictions that its errors do not already name."""
    return [ANOMALIES[k] for k in ex.anomalies if ANOMALIES[k] not in ex.errors]


def _no_call_reason(ex: Extraction) -> str:
    if ex.errors:
        return ex.errors[0] + (f" (+{len(ex.errors) - 1} more)" if len(ex.errors) > 1 else "")
    if ex.wrapped:
        return f"{CODE_WRAPPER} calls no catalog tool"
    if ex.truncated:
        return f"truncated at max_tokens with no call (prose): {_snippet(ex.text)}"
    if ex.text:
        return f"no call (prose): {_snippet(ex.text)}"
    return "no call (empty reply)"


Checker = Callable[[Call, Expectation], list[str]]


def _any_of(
    calls: Sequence[Call], expect: Sequence[Expectation], check: Checker, problems: list[str]
) -> tuple[float, float]:
    named = [(c, e) for c in calls for e in expect if c.name == e.tool]
    if not named:
        if calls:
            wanted = " or ".join(dict.fromkeys(e.tool for e in expect))
            problems.append(f"called {_names(calls)}, expected {wanted}")
        return 0.0, 0.0
    failures = [check(c, e) for c, e in named]
    if any(not f for f in failures):
        return 1.0, 1.0
    problems.append("; ".join(failures[0]))
    return 1.0, 0.0


def _all_of(
    calls: Sequence[Call], expect: Sequence[Expectation], check: Checker, problems: list[str]
) -> tuple[float, float]:
    if not expect:
        return 0.0, 0.0
    by_name = _matching(expect, calls, lambda e, c: c.name == e.tool)
    full = _matching(expect, calls, lambda e, c: c.name == e.tool and not check(c, e))
    n = len(expect)
    missing = [e.tool for i, e in enumerate(expect) if i not in by_name]
    if calls and missing:
        problems.append(
            f"called {len(by_name)} of {n} expected tools, missing {', '.join(missing)}"
            f" (called {_names(calls)})"
        )
    for i, e in enumerate(expect):
        if i in by_name and i not in full:
            problems.append("; ".join(check(calls[by_name[i]], e)))
    return len(by_name) / n, len(full) / n


def _matching(
    expect: Sequence[Expectation], calls: Sequence[Call], fits: Callable[[Expectation, Call], bool]
) -> dict[int, int]:
    """A maximum matching expectation -> call (each call used once), order-insensitive."""
    owner: dict[int, int] = {}  # call index -> expectation index

    def place(i: int, seen: set[int]) -> bool:
        for j, call in enumerate(calls):
            if j in seen or not fits(expect[i], call):
                continue
            seen.add(j)
            if j not in owner or place(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(expect)):
        place(i, set())
    return {i: j for j, i in owner.items()}


def _checker(catalog: Catalog) -> Checker:
    properties = {t.name: t.parameters.get("properties", {}) for t in catalog.tools}

    def check(call: Call, exp: Expectation) -> list[str]:
        """Why the call does not meet the expectation (empty: it does)."""
        out = []
        for arg in (*exp.args, *exp.any_value):
            allowed = exp.args.get(arg)  # None: the prompt leaves the value open (any_value)
            wanted = "any value" if allowed is None else f"allowed {_allowed(allowed)}"
            if arg not in call.arguments:
                if arg not in exp.optional:
                    out.append(f"{call.name} missing {arg} ({wanted})")
                continue
            value = call.arguments[arg]
            if value == NON_LITERAL:
                out.append(f"{call.name} {arg} is computed, not a literal ({wanted})")
            elif allowed is None and _empty(value):
                out.append(f"{call.name} {arg}={value!r} is empty (any non-empty value)")
            elif allowed is not None and not any(_same(value, a) for a in allowed):
                out.append(f"{call.name} {arg}={value!r} not in allowed {_allowed(allowed)}")
        known = properties.get(call.name, {})
        for arg in call.arguments:
            if arg in exp.args or arg in exp.any_value or arg in known:
                continue
            if re.fullmatch(r"_\d+", arg):
                out.append(f"{call.name} got an extra positional argument {call.arguments[arg]!r}")
            else:
                out.append(f"{call.name} got unexpected argument {arg}={call.arguments[arg]!r}")
        return out

    return check


def _empty(value: Any) -> bool:
    """No value at all: None, a blank string, an empty list or table (0 and False are values)."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, (list, tuple, Mapping)) and not value


def _same(value: Any, allowed: Any) -> bool:
    return _norm(value) == _norm(allowed)


def _norm(value: Any) -> Any:
    """Equal for equal meaning: strip strings and a leading "./", "42" == 42, bools exact."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", value)
    if isinstance(value, str):
        text = value.strip().removeprefix("./")
        if _NUMBER_RE.fullmatch(text):
            return ("num", float(text) if "." in text else int(text))
        return ("str", text)
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_norm(v) for v in value))
    if isinstance(value, Mapping):
        return ("dict", tuple(sorted((str(k), _norm(v)) for k, v in value.items())))
    return ("other", repr(value))


def _allowed(values: Sequence[Any]) -> str:
    return repr(list(values))


def _names(calls: Sequence[Call]) -> str:
    return ", ".join(c.name for c in calls)


def _summary(calls: Sequence[Call]) -> str:
    text = ", ".join(
        f"{c.name}({', '.join(f'{k}={v!r}' for k, v in c.arguments.items())})" for c in calls
    )
    return text if len(text) <= 120 else text[:117] + "..."


def _snippet(text: str) -> str:
    line = " ".join(text.split())
    return repr(line if len(line) <= _SNIPPET else line[: _SNIPPET - 3] + "...")


__all__ = [
    "ANOMALIES",
    "FAILURES",
    "OVERALL",
    "Anomaly",
    "Extraction",
    "Failure",
    "Score",
    "extract",
    "failure_of",
    "score",
    "unscorable",
]
