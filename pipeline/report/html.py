"""results.html: the report as one self-contained page a person opens (no network, no CDN).

The same report data as results.md and results.json (pipeline.report.content), laid out to be
read: the verdict and its reasons first, the criteria, the chart inline (a data: URI), the
comparison with a baseline run (regressed prompts first, side by side), failure types and
robustness, then every prompt with its request, the raw reply, the parsed and the expected
calls and the full reason, filtered by category, outcome and failure type. The filters live in
the address's fragment (`results.html#outcome=wrong&category=lsp`), so a filtered view can be
shared and a headless browser can check one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from pipeline.definitions.experiment import OVERALL
from pipeline.report.record import ReportRecord
from pipeline.report.show import COST_HEADERS, cost_cells, pct

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 1.5em 3em;
color:#1b1b1b}
h1{margin:.6em 0 .2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 7px;
vertical-align:top;text-align:left}th{background:#f4f4f4}
.verdict{font-size:1.6em;font-weight:700;padding:.3em .6em;display:inline-block;border-radius:4px}
.PASS{background:#d8f5d8}.FAIL{background:#fbd9d9}.ERROR{background:#fde2b8}.PENDING{background:#e4e4f7}
tr.right td.outcome{color:#17692b}tr.wrong td.outcome{color:#a11}tr.error td.outcome{color:#a60}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font-size:12px}
.filters label{margin-right:1.2em}.muted{color:#666}.regressed{background:#fff3f3}
.improved{background:#f2fff2}img{max-width:100%}
"""

_SCRIPT = """
(function(){
  const keys=["category","outcome","failure"];
  const rows=Array.from(document.querySelectorAll("#prompts tbody tr"));
  const pick={};
  keys.forEach(k=>pick[k]=document.getElementById("f-"+k));
  function state(){const s={};new URLSearchParams(location.hash.slice(1)).forEach((v,k)=>s[k]=v);
    return s;}
  function apply(){
    let shown=0;
    rows.forEach(r=>{
      const ok=keys.every(k=>!pick[k].value||r.dataset[k]===pick[k].value);
      r.hidden=!ok; if(ok) shown++;
    });
    document.getElementById("shown").textContent=shown+" of "+rows.length+" prompts shown";
  }
  function fromHash(){const s=state();keys.forEach(k=>pick[k].value=s[k]||"");apply();}
  keys.forEach(k=>pick[k].addEventListener("change",()=>{
    const p=new URLSearchParams();keys.forEach(j=>{if(pick[j].value)p.set(j,pick[j].value);});
    history.replaceState(null,"","#"+p.toString());apply();
  }));
  window.addEventListener("hashchange",fromHash);
  fromHash();
})();
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table whose cells are already HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _calls(calls: Sequence[Mapping[str, Any]] | None) -> str:
    if not calls:
        return '<span class="muted">(none)</span>'
    return "<br>".join(
        _e(f"{c.get('tool') or c.get('name')}(")
        + _e(
            ", ".join(f"{k}={v!r}" for k, v in (c.get("args") or c.get("arguments") or {}).items())
        )
        + _e(")")
        + (_e(f" any value: {', '.join(c['any_value'])}") if c.get("any_value") else "")
        for c in calls
    )


def _reply(reply: Any, finish: Any) -> str:
    if reply is None:
        return '<span class="muted">(no reply)</span>'
    text = json.dumps(reply, ensure_ascii=False, indent=1)
    short = _e(text[:80].replace("\n", " ")) + ("..." if len(text) > 80 else "")
    return (
        f"<details><summary>{short}</summary><pre>{_e(text)}</pre>"
        f'<span class="muted">finish_reason: {_e(finish)}</span></details>'
    )


def _verdict(r: ReportRecord) -> str:
    reasons = "".join(f"<li>{_e(x)}</li>" for x in r.verdict_reasons)
    warnings = "".join(f"<li>warning: {_e(w)}</li>" for w in r.warnings)
    overall = r.overall
    line = ""
    if overall and r.verdict != "ERROR":
        line = (
            f" overall {pct(overall['mean'])} (95% interval {pct(overall['lo'])} - "
            f"{pct(overall['hi'])}, {overall['n']} prompts)"
        )
    return (
        f'<p><span id="verdict" class="verdict {_e(r.verdict)}">{_e(r.verdict)}</span>'
        f"{_e(line)}</p><ul>{reasons}{warnings}</ul>"
    )


def _criteria(r: ReportRecord) -> str:
    rows = []
    for c in r.criteria:
        gated = c.get("threshold") is not None
        name = f"<b>{_e(c['category'])}</b>" if c["category"] == OVERALL else _e(c["category"])
        rows.append(
            [
                name,
                _e(pct(c["mean"])),
                _e(f"{pct(c['lo'])} - {pct(c['hi'])}"),
                _e(c["n"]),
                _e(f">= {pct(c['threshold'])}" if gated else "not gated"),
                _e(("PASS" if c["passed"] else "FAIL") if gated else "-"),
                _e(("yes" if c.get("decidable") else "no") if gated else "-"),
                _e(c.get("prompts_needed") if gated and not c.get("decidable") else ""),
            ]
        )
    headers = ["category", "score", "95% interval", "prompts", "threshold", "pass?"]
    return _table([*headers, "decidable", "prompts needed"], rows)


def _non_inferiority(r: ReportRecord) -> str:
    rows = r.non_inferiority or {}
    if not rows:
        return ""
    body = [
        [
            _e(name),
            _e(f"{100 * x['difference']:+.1f} pts"),
            _e(f"{100 * x['lower']:+.1f}"),
            _e(f"-{100 * x['margin']:.1f}"),
            _e(f"{x['p_adjusted']:.3g}"),
            _e(x["n"]),
            _e(x["decision"] + (f" ({x['prompts_needed']} prompts would decide)"
                                if x.get("prompts_needed") else "")),
        ]
        for name, x in rows.items()
    ]  # fmt: skip
    headers = ["category", "difference", "95% lower bound", "margin", "p (Holm)", "prompts"]
    return "<h2>Can it replace the baseline run?</h2>" + _table([*headers, "decision"], body)


def _changes(r: ReportRecord) -> str:
    changes = r.changes
    if changes is None:
        return ""
    if not changes:
        return "<h2>Against the baseline run</h2><p>No prompt's score changed.</p>"

    def side(score: float, calls: str, reason: str) -> str:
        return f'{score:.2f}<br>{_e(calls)}<br><span class="muted">{_e(reason)}</span>'

    body = "".join(
        f'<tr class="{_e(c["direction"])}"><td>{_e(c["direction"])}</td><td>{_e(c["id"])}</td>'
        f"<td>{_e(c['query'])}</td>"
        f"<td>{side(c['baseline'], c['baseline_calls'], c['baseline_reason'])}</td>"
        f"<td>{side(c['this'], c['this_calls'], c['this_reason'])}</td></tr>"
        for c in changes
    )
    head = "".join(
        f"<th>{h}</th>" for h in ("change", "prompt", "request", "baseline run", "this run")
    )
    table = f'<table id="changes"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    regressed = sum(c["direction"] == "regressed" for c in changes)
    return (
        f"<h2>Against the baseline run</h2><p>{regressed} prompts regressed and "
        f"{len(changes) - regressed} improved (regressed first).</p>{table}"
    )


def _failures(r: ReportRecord) -> str:
    f = r.failures
    if not f or not f["types"]:
        return ""
    rows = [
        [_e(cat), *(_e(counts.get(k, "")) for k in f["types"]), _e(f["answers"][cat])]
        for cat, counts in f["categories"].items()
    ]
    meaning = "".join(f"<li><b>{_e(k)}</b>: {_e(f['meaning'][k])}</li>" for k in f["types"])
    return (
        "<h2>Failure types</h2>"
        + _table(["category", *f["types"], "answers"], rows)
        + f"<ul>{meaning}</ul>"
    )


def _robustness(r: ReportRecord) -> str:
    rob = r.robustness
    if not rob:
        return ""
    c = rob["counts"]
    fam = [
        [_e(name), _e(f"{x['right']} / {x['prompts']}"), _e(pct(x["share"]))]
        for name, x in rob["families"].items()
    ]
    gap = rob.get("gap")
    gap_text = (
        f"<p>Largest gap between phrasing families: {_e(pct(gap['gap']))} "
        f"({_e(gap['best'])} over {_e(gap['worst'])}).</p>"
        if gap
        else ""
    )
    return (
        f"<h2>Robustness to rephrasing</h2><p>Groups of prompts asking for the same call: "
        f"{c['all']} right in every phrasing, {c['some']} in some, {c['none']} in none.</p>"
        + _table(["phrasing family", "right / prompts", "share"], fam)
        + gap_text
    )


def _options(name: str, values: Sequence[str]) -> str:
    opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
    return (
        f'<label>{_e(name)} <select id="f-{_e(name)}"><option value="">all</option>'
        f"{opts}</select></label>"
    )


def _prompts(r: ReportRecord) -> str:
    prompts = r.prompts
    cats = list(dict.fromkeys(p["category"] for p in prompts))
    failures = [f for f in dict.fromkeys(p.get("failure") or "" for p in prompts) if f]
    filters = (
        '<p class="filters">'
        + _options("category", cats)
        + _options("outcome", ["right", "wrong", "error"])
        + _options("failure", failures)
        + '<span id="shown" class="muted"></span></p>'
    )
    body = []
    for p in prompts:
        outcome = p.get("outcome") or ("right" if p["mean"] >= 1.0 else "wrong")
        cells = [
            _e(p["id"]),
            _e(p["category"]),
            f'<span class="outcome">{_e(outcome)}</span>',
            _e(p.get("failure") or ""),
            _e(" / ".join(f"{v:g}" for v in p["values"])),
            _e(p["query"]),
            _reply(p.get("reply"), p.get("finish_reason")),
            _e(p["calls_text"]),
            _calls(p.get("expected")) + (f" <span class=muted>({_e(p['match'])})</span>"
                                         if p.get("match") else ""),
            _e(p["reason"]),
        ]  # fmt: skip
        attrs = (
            f' class="{_e(outcome)}" data-category="{_e(p["category"])}" '
            f'data-outcome="{_e(outcome)}" data-failure="{_e(p.get("failure") or "")}"'
        )
        body.append(f"<tr{attrs}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    headers = ["id", "category", "outcome", "failure type", "score", "request", "reply",
               "parsed calls", "expected calls", "reason"]  # fmt: skip
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (
        f"<h2>Prompts (T={_e(r.decision_temperature)})</h2>{filters}"
        f'<table id="prompts"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _preflight(r: ReportRecord) -> str:
    """The failed checks, each linked to what ignoring it cost (the confound study's
    measurement, its table below them); nothing when the preflight failed nothing and no
    cost was measured."""
    pf = r.preflight or {}
    failed = [f for f in pf.get("findings", []) if f.get("verdict") == "fail"]
    costs = pf.get("costs") or {}
    measured = {row["check"] for row in costs.get("rows", [])}
    if not failed and not measured:
        return ""
    items = "".join(
        f"<li>{_e(f['check'])} ({_e(f['subject'])}): {_e(f['figure'])}"
        + (
            f' <a href="#cost-{_e(f["check"])}">what ignoring it cost</a>'
            if f["check"] in measured
            else ""
        )
        + "</li>"
        for f in failed
    )
    out = "<h2>Preflight</h2>" + (f"<p>Failed checks:</p><ul>{items}</ul>" if failed else "")
    if measured:
        rows = [
            [f'<span id="cost-{_e(c["check"])}">{_e(c["check"])}</span>']
            + [_e(cell) for cell in cost_cells(c)[1:]]
            for c in costs["rows"]
        ]
        out += (
            f"<p>What ignoring each check cost, measured by the confound study of "
            f"{_e(costs['experiment'])} ({_e(costs['trainings_said'])}; "
            f"<code>{_e(costs['command'])}</code>): a row's overall score minus the clean "
            "row's (a row judged twice: minus its own model's under an eval that agrees with "
            "its training), in points, with its paired 95% interval.</p>"
        )
        out += _table(COST_HEADERS, rows).replace("<table>", '<table id="costs">', 1)
    return out


def render_html(report: ReportRecord, chart_png: bytes | None = None) -> str:
    """The whole page; `chart_png` is embedded inline when given."""
    r = report
    chart = (
        f'<img alt="per-category score, 95% interval, threshold and baseline" '
        f'src="data:image/png;base64,{base64.b64encode(chart_png).decode()}">'
        if chart_png
        else f'<p class="muted">Chart skipped: {_e((r.chart or {}).get("skipped"))}</p>'
    )
    repeat = f"<p>Repeat: <code>{_e(r.repeat)}</code></p>" if r.repeat else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(r.experiment)}: {_e(r.verdict)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{_e(r.experiment)}</h1><p class=muted>{_e(r.description)}</p>"
        + _verdict(r)
        + f"<h2>Pre-registered criteria (T={_e(r.decision_temperature)})</h2>"
        + _criteria(r)
        + chart
        + _non_inferiority(r)
        + _changes(r)
        + _failures(r)
        + _robustness(r)
        + _preflight(r)
        + _prompts(r)
        + repeat
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )
