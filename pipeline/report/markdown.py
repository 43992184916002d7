"""results.md: the report (`build_report`, or results.json read back by `read_results`) as
markdown.

Every number comes from the report; nothing here reads a run folder. Long table cells are cut
(results.json keeps them whole); links are relative to the folder results.md is written to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.definitions.experiment import OVERALL
from pipeline.eval.records import temperature_key
from pipeline.report.record import ReportRecord
from pipeline.report.show import COST_HEADERS, cost_cells, cost_points, pct, shown_target

_CELL = 110
"""Markdown table cells longer than this are cut (results.json keeps everything)."""


def render_markdown(report: ReportRecord, out_dir: Path | None = None) -> str:
    """results.md; `out_dir` (where it will be written) makes its links relative."""
    r = report
    t = temperature_key(r.decision_temperature)
    lines = [f"# {r.experiment}: {r.verdict}", ""]
    if r.description:
        lines += [r.description, ""]
    lines += [
        f"Run `{r.run_dir}`; score `{r.score}` at decision temperature {t}, "
        f"{r.samples} sample(s) per prompt.",
        "",
    ]
    if r.docs:
        link = _link(r.docs["path"], out_dir)
        files = ", ".join(f"[{f}]({link}/{f})" for f in r.docs["files"])
        lines += [
            f"Experiment record: [{r.docs['path']}]({link})" + (f": {files}" if files else ""),
            "",
        ]
    lines += ["## Verdict", "", _verdict_line(r), ""]
    lines += [f"- {reason}" for reason in r.verdict_reasons]
    fragile = [c["category"] for c in r.criteria if c.get("fragile")]
    if fragile:
        lines.append(
            f"- fragile (the 95% interval straddles the threshold, the verdict could flip on a "
            f"rerun): {', '.join(fragile)}"
        )
    lines += [f"- warning: {w}" for w in r.warnings]
    if lines[-1] != "":
        lines.append("")

    lines += _criteria_lines(r)
    lines += _paired_lines(r)
    lines += _non_inferiority_lines(r)
    lines += _after_criteria(r, out_dir)
    return "\n".join(lines).rstrip() + "\n"


def render_step_summary(report: ReportRecord) -> str:
    """The verdict, its reasons and the criteria table, for a CI job's summary page
    ($GITHUB_STEP_SUMMARY)."""
    r = report
    lines = [f"## routegate: {r.experiment}: {r.verdict}", "", _verdict_line(r), ""]
    lines += [f"- {reason}" for reason in r.verdict_reasons]
    lines += ["", *_criteria_lines(r), *_non_inferiority_lines(r), ""]
    return "\n".join(lines)


def _criteria_lines(r: ReportRecord) -> list[str]:
    t = temperature_key(r.decision_temperature)
    lines = [f"## Pre-registered criteria (T={t})", ""]
    base = f"baseline ({r.baseline_name})" if r.baseline_name else "baseline"
    repeats = any(c.get("pass_all") is not None for c in r.criteria)
    rows = []
    for c in r.criteria:
        gated = c.get("threshold") is not None
        name = f"**{c['category']}**" if c["category"] == OVERALL else c["category"]
        rows.append(
            [
                name,
                pct(c.get("baseline")),
                f">= {pct(c['threshold'])}" if gated else "not gated",
                pct(c["mean"]),
                f"{pct(c['lo'])} - {pct(c['hi'])}",
                str(c["n"]),
                _pass_cell(c["passed"], r.thresholds_pending) if gated else "-",
                "fragile" if c.get("fragile") else "",
                ("yes" if c.get("decidable") else "no") if gated else "-",
                _needed(c) if gated else "-",
                *([pct(c.get("pass_all"))] if repeats else []),
            ]
        )
    header = ["category", base, "threshold", "this run", "95% interval", "n", "pass?"]
    every = [f"pass^{r.samples} (all samples right)"] if repeats else []
    lines += _table([*header, "fragile", "decidable", "prompts needed", *every], rows)
    lines += [
        "",
        "n counts prompts (a prompt's samples are one observation). Decidable: the 95% interval "
        "lies wholly on one side of the threshold. Prompts needed: how many prompts of the "
        "category, at the observed rate, would make it so."
        + (
            " A pass that is not decidable fails (require_decidable)."
            if r.require_decidable
            else ""
        ),
    ]
    return lines


def _after_criteria(r: ReportRecord, out_dir: Path | None) -> list[str]:
    t = temperature_key(r.decision_temperature)
    lines = ["", "## Chart", ""]
    chart = r.chart or {}
    if chart.get("file"):
        lines.append(
            f"![per-category score, 95% interval, threshold and baseline]({chart['file']})"
        )
    else:
        lines.append(f"Chart skipped: {chart.get('skipped') or 'not rendered'}.")
    lines += ["", f"## Prompts (T={t})", ""]
    prows = [
        [
            p["id"],
            p["category"],
            p["query"],
            _values(p),
            f"{p['seconds']:.2f}",
            p["reason"],
            p["calls_text"],
        ]
        for p in r.prompts
    ]
    lines += _table(
        [
            "id",
            "category",
            "query",
            "score",
            "time (s)",
            "reason / failure mode",
            "extracted call(s)",
        ],
        prows,
    )
    dist = r.distribution
    lines += ["", f"## Score distribution (T={t})", ""]
    lines += [f"How many answers got each {r.score} score value (every sample counts once)."]
    if r.score == "seed":
        lines[-1] += (
            " The seed's partial credit: 1 the right tool inside execute_code, 0.5 the right "
            "tool called directly, 0.1 a wrapped call to the wrong tool, 0 no call (all_of: the "
            "share of expected tools, plus 0.1 when wrapped)."
        )
    lines.append("")
    drows = [
        [cat, *(str(counts[v]) for v in dist["values"]), str(sum(counts.values()))]
        for cat, counts in dist["categories"].items()
    ]
    lines += _table(["category", *dist["values"], "n"], drows)
    lines += ["", *_failure_lines(r.failures), ""]
    lines += ["", *_robustness_lines(r.robustness), ""]
    lines += ["", *_sweep_lines(r.sweep, r.thresholds_pending), ""]
    lines += _training_lines(r)
    lines += ["", *_integrity_lines(r.integrity), ""]
    lines += ["", *_preflight_lines(r.preflight), ""]
    lines += _servers_lines(r.servers)
    lines += _settings_lines(r)
    lines += ["", "## Files", ""]
    lines += [f"- {k}: `{v}`" for k, v in r.files.items() if v]
    return lines


def _failure_lines(f: Mapping[str, Any] | None) -> list[str]:
    """Answers per failure type and category, what each type means, and against a baseline
    run which types grew and which shrank."""
    if not f:
        return []
    lines = [f"## Failure types (T={f['temperature']})", ""]
    if not f["types"]:
        return [*lines, "Every answer was fully right."]
    lines.append("Each answer that is not fully right, counted once, by its first failure type.")
    lines.append("")
    rows = [
        [cat, *(str(counts.get(k, "")) for k in f["types"]), str(f["answers"][cat])]
        for cat, counts in f["categories"].items()
    ]
    rows.append(["all", *(str(f["total"][k]) for k in f["types"]), str(sum(f["answers"].values()))])
    lines += _table(["category", *f["types"], "answers"], rows)
    lines += ["", *(f"- {k}: {f['meaning'][k]}" for k in f["types"])]
    shift = f.get("shift")
    if shift:
        lines += [
            "",
            f"Against the baseline run, on the {shift['prompts']} prompts both scored:",
            "",
        ]
        lines += _table(
            ["failure type", "baseline", "this run", "change"],
            [
                [row["type"], str(row["baseline"]), str(row["this"]), f"{row['change']:+d}"]
                for row in sorted(shift["rows"], key=lambda row: -abs(row["change"]))
            ],
        )
    return lines


def _robustness_lines(rob: Mapping[str, Any] | None) -> list[str]:
    """Per group of rephrasings, all / some / none right; per phrasing family, the share right."""
    if not rob:
        return []
    c = rob["counts"]
    lines = [
        f"## Robustness to rephrasing (T={rob['temperature']})",
        "",
        f"Prompts that ask for the same call in other words, grouped: {c['all']} groups right in "
        f"every phrasing, {c['some']} in some, {c['none']} in none.",
        "",
    ]
    lines += _table(
        ["group", "category", "right / prompts", "phrasings", "wrong"],
        [
            [g["group"], g["category"], f"{g['right']} / {g['prompts']}", g["status"],
             ", ".join(g["wrong"])]
            for g in sorted(rob["groups"], key=lambda g: (g["right"] / g["prompts"], g["group"]))
        ],
    )  # fmt: skip
    lines += ["", "By how the request is put (phrasing family):", ""]
    lines += _table(
        ["family", "right / prompts", "share"],
        [
            [name, f"{f['right']} / {f['prompts']}", pct(f["share"])]
            for name, f in rob["families"].items()
        ],
    )
    gap = rob.get("gap")
    if gap:
        lines += [
            "",
            f"Largest gap between families of 5 or more prompts: {pct(gap['gap'])} "
            f"({gap['best']} over {gap['worst']}).",
        ]
    return lines


def _needed(c: Mapping[str, Any]) -> str:
    needed = c.get("prompts_needed")
    if needed is None:
        return "none decides" if c.get("mean") == c.get("threshold") else "out of reach"
    return str(needed)


def _paired_lines(r: ReportRecord) -> list[str]:
    """This run against the baseline run, prompt by prompt."""
    rows = r.paired
    if not rows:
        return []
    drop = r.max_drop
    rule = f" Pre-registered: no drop of more than {pct(drop)} (the interval must rule it out)."
    lines = [
        "",
        f"## Against the baseline run `{r.baseline_run}`",
        "",
        "This run minus the baseline run on the prompts both scored; paired bootstrap 95% "
        "interval (prompts resampled, each prompt's samples together) and the exact sign test "
        "(McNemar's for 0/1 outcomes)." + (rule if drop is not None else ""),
        "",
    ]
    table = [
        [
            name,
            f"{100 * row['difference']:+.1f} pts",
            f"{100 * row['lo']:+.1f} to {100 * row['hi']:+.1f}",
            f"{row['p_value']:.3g}",
            str(row["n"]),
            f"{row['better']} / {row['worse']}",
        ]
        for name, row in rows.items()
    ]
    return lines + _table(
        ["category", "difference", "95% interval", "p", "prompts", "better / worse"], table
    )


def _non_inferiority_lines(r: ReportRecord) -> list[str]:
    """Can this run replace the baseline run, category by category, within the margins."""
    rows = r.non_inferiority
    if not rows:
        return []
    rests = (
        "The verdict rests on it (`--decide non-inferiority`)."
        if r.decide == "non-inferiority"
        else "Shown beside the thresholds, which decide (`--decide non-inferiority` would rest "
        "the verdict on this table)."
    )
    lines = [
        "",
        "## Can it replace the baseline run? (non-inferiority)",
        "",
        "This run minus the baseline run on the prompts both scored, against each "
        "pre-registered margin ([decision]): NON-INFERIOR when a drop as large as the margin is "
        "ruled out, INFERIOR when a drop at least that large is shown, UNDECIDED otherwise "
        "(with the prompts that would decide at this rate of differing answers). One-sided "
        "95% bounds from Tango's score test for paired outcomes; p-values Holm-corrected "
        f"across the {len(rows)} categories decided. " + rests,
        "",
    ]
    table = [
        [
            name,
            f"{100 * row['difference']:+.1f} pts",
            f"{100 * row['lower']:+.1f}",
            f"-{100 * row['margin']:.1f}",
            f"{row['p_adjusted']:.3g}",
            str(row["n"]),
            f"{row['better']:g} / {row['worse']:g}",
            row["decision"]
            + (f" ({row['prompts_needed']} prompts would decide)" if row["prompts_needed"] else ""),
        ]
        for name, row in rows.items()
    ]
    return lines + _table(
        [
            "category",
            "difference",
            "95% lower bound",
            "margin",
            "p (Holm)",
            "prompts",
            "better / worse",
            "decision",
        ],
        table,
    )


def _pass_cell(passed: bool | None, pending: bool) -> str:
    text = "PASS" if passed else "FAIL"
    return f"pending ({'met' if passed else 'below'})" if pending else text


def _verdict_line(r: ReportRecord) -> str:
    o = r.overall
    if r.verdict == "ERROR" and r.verdict_reasons:  # the scores are not the model's
        return f"**ERROR**: {r.verdict_reasons[0]}"
    if not o:
        return f"**{r.verdict}**: no overall score."
    base = r.baseline_name or "baseline"
    return (
        f"**{r.verdict}**: overall {pct(o['mean'])} (95% interval {pct(o['lo'])} - "
        f"{pct(o['hi'])}, n={o['n']}) against the threshold {pct(o['threshold'])} "
        f"({base}: {pct(o['baseline'])})."
    )


def _values(p: Mapping[str, Any]) -> str:
    if len(p["values"]) == 1:
        return f"{p['values'][0]:g}"
    return f"{p['mean']:.2f} ({', '.join(f'{v:g}' for v in p['values'])})"


def _sweep_lines(sweep: Mapping[str, Any], pending: bool) -> list[str]:
    temps = sweep["temperatures"]
    out = ["## Temperature sweep", ""]
    if len(temps) < 2:
        out.append(f"One temperature only (T={temps[0]}): no sweep in this run.")
        return out
    rows = []
    for c in sweep["categories"]:
        cells = []
        for t in temps:
            cell = c["by_temperature"].get(t)
            if not cell:
                cells.append("-")
                continue
            mark = "" if cell["passed"] is None else " " + _pass_cell(cell["passed"], pending)
            cells.append(f"{pct(cell['mean'])} [{pct(cell['lo'])} - {pct(cell['hi'])}]{mark}")
        rows.append([c["category"], *cells, "flips" if c["flips"] else ""])
    out += _table(["category", *(f"T={t}" for t in temps), "verdict"], rows)
    out.append("")
    gate = ", ".join(
        f"T={t}: {'PASS' if sweep['passed'][t] else 'FAIL'}"
        f" ({sweep['errors'][t]} errors, {sweep['truncated'][t]} truncated)"
        for t in temps
    )
    out.append(f"All thresholds met per temperature: {gate}.")
    flips = sweep["flips"]
    out.append(
        f"Verdict flips between temperatures: {', '.join(flips)}."
        if flips
        else "No category's verdict flips between temperatures."
    )
    return out


def _training_lines(r: ReportRecord) -> list[str]:
    tr = r.training
    out = ["## Training", ""]
    if not tr:
        size = f" Model folder: {_bytes(r.model_bytes)}." if r.model_bytes else ""
        out.append(
            "Not built by routegate (a `--model` or `--server-url` run): no build.json, no "
            f"training figures.{size}"
        )
        return out
    rows = [
        [
            s["stage"],
            _secs(s["seconds"]),
            _bytes(s["peak_memory_bytes"]),
            _bytes(s["output_bytes"]) + (" (removed)" if s["removed"] else ""),
        ]
        for s in tr["stages"]
    ]
    out += _table(["stage", "time", "peak memory (process RSS)", "output"], rows)
    out.append("")
    loss = f"train loss {_num(tr['train_loss'])}, validation loss {_num(tr['val_loss'])}"
    if tr.get("val_loss_step") is not None:
        loss += f" (at iteration {tr['val_loss_step']})"
    params = f"{tr['trainable_parameters']:,}" if tr.get("trainable_parameters") else "n/a"
    if tr.get("trainable_parameters_reported"):
        params += f" ({tr['trainable_parameters_reported']} as mlx_lm reports it)"
    quant = ""
    if tr.get("bits"):
        quant = f", {tr['bits']} bits / group size {tr['group_size']}"
        if tr.get("bits_per_weight"):
            quant += f" ({_num(tr['bits_per_weight'])} bits per weight)"
    out += [
        f"- build `{tr['key']}`: {_secs(tr['seconds'])} in all"
        + (f", {tr['started']} to {tr['finished']}" if tr.get("finished") else "")
        + ("" if tr["complete"] else " (incomplete)"),
        f"- {tr['fine_tune_type']} training, {tr['iters']} iterations: {loss}"
        + (
            (
                f"; resumed exactly from iteration {tr['resumed_from']}"
                if tr.get("resumed_exactly")
                else f"; resumed from iteration {tr['resumed_from']} (weights only)"
            )
            if tr.get("resumed_from")
            else ""
        ),
        *(
            [
                f"- data-parallel over {tr['ranks']} ranks (mlx.launch), effective batch "
                f"{tr['effective_batch']}"
            ]
            if (tr.get("ranks") or 1) > 1
            else []
        ),
        f"- trainable parameters: {params}",
        f"- model size: {_bytes(tr['model_bytes'])}{quant}",
    ]
    if tr.get("mlx_peak_memory_gb"):
        out.append(f"- mlx peak memory while training: {tr['mlx_peak_memory_gb']} GB")
    return out


def _integrity_lines(record: Mapping[str, Any] | None) -> list[str]:
    out = ["## Build integrity", ""]
    if not record:
        out.append("Not checked for this run (not a build, or built with `--no-integrity`).")
        return out
    out.append(
        "Every prompt asked greedily of each step of the build; a step fails when its routing "
        f"falls more than {record['max_drop']:.0%} below the reference's or fewer than "
        f"{record['min_agreement']:.0%} of its answers make the reference's calls."
    )
    out.append("")
    rows = [
        [
            s["step"],
            f"{s['routing']:.0%}",
            "-" if s["agreement"] is None else f"{s['agreement']:.0%}",
            "FAIL" if s["failure"] else "ok",
        ]
        for s in record["steps"]
    ]
    out += _table(["step", "routing", "agreement", "held"], rows)
    for s in record["steps"]:
        unlike = s.get("unlike_quantized") or []
        if unlike:
            out += [
                "",
                f"The {s['step']} weights (what the eval served) answered otherwise than the "
                f"quantized folder as built on {len(unlike)} prompt(s): {', '.join(unlike)}.",
            ]
        elif s["step"] == "served":
            out += ["", "The served weights answered exactly as the quantized folder as built."]
    return out


def _preflight_lines(pf: Mapping[str, Any] | None) -> list[str]:
    out = ["## Preflight", ""]
    if not pf:
        out.append("No preflight record for this experiment (run `python -m pipeline preflight`).")
        return out
    if "passed" in pf:
        counts = ", ".join(f"{n} {k}" for k, n in pf["counts"].items())
        state = "passed" if pf["passed"] else "FAILED"
        stale = "" if pf["current"] else " (written for another fingerprint: shown, not counted)"
        out.append(f"`{pf['path']}`: {state} ({counts}){stale}.")
    b = pf.get("build")
    if b:
        how = (
            "passed"
            if b["passed"]
            else "FAILED" + (", built anyway (--force)" if b["forced"] else "")
        )
        out.append(f"At build time: {how} ({b['checks']} checks).")
    failed = [f for f in pf.get("findings", []) if f.get("verdict") == "fail"]
    costs = pf.get("costs")
    if failed:
        out += ["", "Failed checks:", ""]
        out += [
            f"- {f['check']} ({f['subject']}): {f['figure']}{_cost_said(costs, f['check'])}"
            for f in failed
        ]
    elif b and b.get("failed"):
        out += ["", "Failed checks at build time:", ""]
        out += [f"- {line.splitlines()[0]}" for line in b["failed"]]
    if costs:
        out += ["", *_costs_lines(costs)]
    if pf.get("findings"):
        out += ["", "<details><summary>All checks</summary>", ""]
        out += _table(
            ["check", "subject", "verdict", "figure"],
            [[f["check"], f["subject"], f["verdict"], f["figure"]] for f in pf["findings"]],
        )
        out += ["", "</details>"]
    return out


def _cost_said(costs: Mapping[str, Any] | None, check: str) -> str:
    """What ignoring a failed check cost, as its line's tail ("" where nothing measured it):
    the study's first prompt set (the experiment's own)."""
    rows = [r for r in costs["rows"] if r["check"] == check] if costs else []
    if not costs or not rows:
        return ""
    r = rows[0]
    return (
        f"; ignoring it cost {cost_points(r)} on {costs['experiment']}'s {r['prompts']} prompts "
        f"({r['decision']}; below)"
    )


def _costs_lines(costs: Mapping[str, Any]) -> list[str]:
    """The confound study's cost of ignoring each check, with this experiment's verdict."""
    out = [
        "### What ignoring each check cost",
        "",
        f"Measured by the confound study of {costs['experiment']} (`{costs['path']}`, "
        f"{costs['written']}; {costs['trainings_said']}): "
        "each row injects one confound that the check fails on, builds past the preflight and "
        "is judged; the cost is its overall score minus the clean row's on the same prompts "
        "(a row judged twice: minus its own model's under an eval that agrees with its "
        "training), in points, with its paired 95% interval. Reproduce: "
        f"`{costs['command'] or 'python -m pipeline study confounds'}`.",
        "",
    ]
    return out + _table(list(COST_HEADERS), [cost_cells(r) for r in costs["rows"]])


def _servers_lines(servers: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which server answered how many requests: only for an eval spread across several."""
    if len(servers) < 2:
        return []
    out = ["## Servers", "", "The requests were spread across these servers of one model."]
    stopped = [s["stopped"] for s in servers if s["stopped"]]
    if stopped:  # each note whole: a table cell would cut it
        out += ["", *(f"- {note}" for note in stopped)]
    out.append("")
    rows = [
        [s["url"], str(s["answered"]), str(s["errors"]), "yes" if s["stopped"] else "no"]
        for s in servers
    ]
    out += _table(["server", "answered", "no usable answer", "stopped mid-run"], rows)
    return [*out, ""]


def _settings_lines(r: ReportRecord) -> list[str]:
    s = r.settings
    out = ["## Settings and versions", ""]
    keys = [
        ("fingerprint", "experiment fingerprint (the run's)"),
        ("fingerprint_now", "experiment fingerprint (the file now)"),
        ("experiment_file", "experiment file"),
        ("model", "model folder"),
        ("served", "weights served"),
        ("server_url", "server URL"),
        ("model_id", "model id (server)"),
        ("base_model", "base model"),
        ("base_revision", "base revision"),
        ("reference_model", "reference model"),
        ("build_key", "build key"),
        ("score", "primary score"),
        ("temperatures", "temperatures (first decides)"),
        ("samples", "samples per prompt"),
        ("eval_seed", "eval seed"),
        ("sampled_seeds", "sampling seeds"),
        ("max_tokens", "max_tokens"),
        ("enable_thinking", "enable_thinking"),
        ("stop", "stop sequences"),
        ("mode", "call mode"),
        ("syntax", "call syntax"),
        ("system_prompt", "system prompt"),
        ("prompts", "prompts"),
        ("data_seed", "data seed"),
        ("train_seed", "train seed"),
        ("num_layers", "trained layers (-1: all)"),
        ("iters", "iterations"),
        ("quantize", "quantization"),
        ("requests", "requests"),
        ("restarts", "server restarts"),
        ("concurrency", "requests in flight (and batched by routegate's server)"),
        ("eval_seconds", "eval time (s)"),
    ]
    rows = [
        [label, _setting(s[k])]
        for k, label in keys
        if s.get(k) not in (None, "", [])
        and not (k == "fingerprint_now" and s[k] == s.get("fingerprint"))
    ]
    if "enable_thinking" in s and s["enable_thinking"] is None:
        rows.append(["enable_thinking", "template default"])
    for name, version in (s.get("versions") or {}).items():
        rows.append([f"{name} (eval)", version])
    built = (r.training or {}).get("versions") or {}
    for name, version in built.items():
        rows.append([f"{name} (build)", version])
    out += _table(["setting", "value"], rows)
    out += ["", "Repeat the eval:", "", "```sh", r.repeat, "```"]
    return out


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(repr(v) if isinstance(v, str) else f"{v:g}" for v in value)
    return str(value)


def _link(path: str, out_dir: Path | None) -> str:
    target = shown_target(path)
    if out_dir is None:
        return str(target)
    return os.path.relpath(target, Path(out_dir).resolve())


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(text: str) -> str:
        text = " ".join(str(text).split()).replace("|", "\\|")
        return text if len(text) <= _CELL else text[: _CELL - 3] + "..."

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _bytes(value: int | None) -> str:
    if not value:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"
