"""Gate reports: results.md, results.json and results.png for one run, and two runs compared.

Four steps, only the first and the last touch the disk:

1. `collect(run_dir)` (collect.py) reads what the run left: the eval's summary and scores,
   build.json when routegate built the model, the experiment's preflight.json and the
   experiment itself.
2. `build_report(run)` (content.py) turns that into a `ReportRecord` (record.py), results.json:
   the verdict (pipeline.eval.verdict.judge), the pre-registered criteria, every prompt, the
   score distribution, the temperature sweep (scores.py), training figures, the preflight, the
   settings and versions that repeat the run.
3. `render_markdown(report)` (markdown.py), `render_html` (html.py), `render_chart(report)`
   (chart.py, matplotlib) and `render_compare(compare(a, b))` (compare.py) turn records into
   text or PNG bytes.
4. `write_report(report, out_dir)` (write.py) is the one writer: the workspace's
   `reports/<experiment>/results.{md,json,html,png}`; `mark_stale` replaces them with a note
   when a run failed before its report. results.json is written by `write_results` and read
   back by `read_results` (record.py), which checks its kind and version.

The command line is pipeline.cli.report (`python -m pipeline report`).
"""

from __future__ import annotations

from pipeline.report.chart import ChartUnavailable, render_chart
from pipeline.report.collect import ReportError, RunData, collect, read_build
from pipeline.report.compare import compare, render_compare
from pipeline.report.content import FORMAT, build_report, verdict_of
from pipeline.report.markdown import render_markdown
from pipeline.report.record import ReportRecord, read_results, write_results
from pipeline.report.scores import calls_text, format_call
from pipeline.report.write import (
    CHART,
    HTML,
    JSON,
    MARKDOWN,
    Written,
    append_step_summary,
    mark_stale,
    report_dir,
    report_run,
    write_report,
)

__all__ = [
    "CHART",
    "FORMAT",
    "HTML",
    "JSON",
    "MARKDOWN",
    "ChartUnavailable",
    "ReportError",
    "ReportRecord",
    "RunData",
    "Written",
    "append_step_summary",
    "build_report",
    "calls_text",
    "collect",
    "compare",
    "format_call",
    "mark_stale",
    "read_build",
    "read_results",
    "render_chart",
    "render_compare",
    "render_markdown",
    "report_dir",
    "report_run",
    "verdict_of",
    "write_report",
    "write_results",
]
