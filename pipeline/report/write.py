"""The one writer: results.md, results.json and results.png into the workspace's
`reports/<experiment>/` (or a folder given), each file replaced atomically; and `mark_stale`,
for a run that failed before writing them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from html import escape
from pathlib import Path

from pipeline.core import io
from pipeline.core.errors import BadInput, RoutegateError
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import Experiment
from pipeline.eval.verdict import Verdict
from pipeline.report.chart import ChartUnavailable, render_chart
from pipeline.report.collect import collect
from pipeline.report.content import build_report
from pipeline.report.html import render_html
from pipeline.report.markdown import render_markdown, render_step_summary
from pipeline.report.record import ReportRecord, write_results

MARKDOWN, JSON, CHART, HTML = "results.md", "results.json", "results.png", "results.html"
STALE_MARKDOWN = "results.stale.md"
"""Where `mark_stale` moves the last report (and results.stale.json / .png beside it)."""


@dataclass(frozen=True)
class Written:
    markdown: Path
    json: Path
    html: Path
    chart: Path | None
    """None when the chart was skipped (`chart_skipped` says why)."""
    chart_skipped: str
    report: ReportRecord

    @property
    def verdict(self) -> Verdict:
        return self.report.gate_verdict


def report_dir(experiment_name: str, workspace: Workspace) -> Path:
    """Where an experiment's results go: the workspace's reports/<experiment>/."""
    return workspace.reports(experiment_name)


def write_report(report: ReportRecord, out_dir: Path, *, chart: bool = True) -> Written:
    """Write results.md, results.json (`write_results`) and (unless `chart` is off)
    results.png into `out_dir` (the workspace's `reports/<experiment>/` is `report_dir`)."""
    out = Path(out_dir)
    png: bytes | None = None
    skipped = ""
    if chart:
        try:
            png = render_chart(report)
        except ChartUnavailable as err:
            skipped = str(err)
    else:
        skipped = "turned off (--no-chart)"
    full = dataclasses.replace(report, chart={"file": CHART} if png else {"skipped": skipped})
    chart_path = out / CHART
    if png:
        io.write_bytes(chart_path, png)
    elif chart_path.exists():
        chart_path.unlink()  # a chart from an earlier run would contradict this report
    write_results(full, out / JSON)
    io.write_text(out / MARKDOWN, render_markdown(full, out))
    io.write_text(out / HTML, render_html(full, png))
    return Written(
        out / MARKDOWN, out / JSON, out / HTML, chart_path if png else None, skipped, full
    )


def report_run(
    run_dir: Path,
    experiment: Experiment | None,
    workspace: Workspace,
    *,
    out_dir: Path | None = None,
    chart: bool = True,
) -> Written:
    """collect -> build_report -> write_report: the report of one run folder, into `out_dir`
    (default: the workspace's `reports/<experiment>/`). `experiment` None: the one the run's
    summary names."""
    report = build_report(collect(run_dir, experiment, workspace=workspace))
    out = out_dir if out_dir is not None else report_dir(report.experiment, workspace)
    return write_report(report, out, chart=chart)


STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
"""GitHub Actions' job summary file: the verdict and criteria table are appended to it."""


def append_step_summary(written: Written) -> Path | None:
    """Append the verdict and the criteria table to $GITHUB_STEP_SUMMARY when it is set (a CI
    job's summary page); the file it wrote to, else None. A file that cannot be written is
    bad input naming it."""
    target = os.environ.get(STEP_SUMMARY_ENV)
    if not target:
        return None
    path = Path(target)
    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(render_step_summary(written.report) + "\n")
    except OSError as err:
        raise BadInput(f"${STEP_SUMMARY_ENV}={target}: cannot append to it ({err})") from err
    return path


def _stale(name: str) -> str:
    return name.replace("results.", "results.stale.", 1)


def mark_stale(experiment_name: str, why: str, workspace: Workspace) -> Path | None:
    """After a run of the experiment failed before writing its report: move the last report
    to results.stale.{md,json,png} and write a results.md saying the run failed and why, so no
    earlier PASS looks current (and tools reading results.json find none). Returns that
    results.md; None when there was no report to mark or the folder cannot be written (the
    run's own error is the one to show)."""
    out = report_dir(experiment_name, workspace)
    if not ((out / MARKDOWN).is_file() or (out / JSON).is_file()):
        return None
    first, *rest = why.strip().splitlines() or ["(no reason given)"]
    note = [f"# {experiment_name}: ERROR", "", f"The latest run failed before its report: {first}"]
    if rest:
        note += ["", "```", *rest, "```"]
    try:
        if (out / JSON).is_file():  # a report, not the note of a run that failed earlier
            for name in (JSON, CHART, HTML):
                if (out / name).exists():
                    (out / name).replace(out / _stale(name))
            if (out / MARKDOWN).is_file():
                text = (out / MARKDOWN).read_text(encoding="utf-8", errors="replace")
                text = text.replace(f"]({CHART})", f"]({_stale(CHART)})")
                io.write_text(out / STALE_MARKDOWN, text)
        if (out / STALE_MARKDOWN).is_file():
            note += [
                "",
                f"The last report written, [{STALE_MARKDOWN}]({STALE_MARKDOWN}), is an earlier "
                "run's: its verdict is not the latest run's.",
            ]
        page = "".join(f"<p>{escape(line)}</p>" for line in note[1:] if line)
        io.write_text(
            out / HTML,
            f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(note[0])}</title>"
            f'<h1 id="verdict">ERROR</h1>{page}</html>\n',
        )
        return io.write_text(out / MARKDOWN, "\n".join(note) + "\n")
    except (OSError, RoutegateError):
        return None
