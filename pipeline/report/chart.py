"""results.png: per-category score with its 95% interval, threshold and baseline marked.

matplotlib is a default dependency of routegate, imported only here and only when a chart is
drawn; where it is missing the report is written without its chart (`ChartUnavailable`).
"""

from __future__ import annotations

import io

from pipeline.eval.records import temperature_key
from pipeline.report.record import ReportRecord

INSTALL = "pip install matplotlib, or reinstall routegate: it is a default dependency"


class ChartUnavailable(RuntimeError):
    """matplotlib is not installed: the report is written without its chart."""


def render_chart(report: ReportRecord) -> bytes:
    """The chart of a report, as PNG bytes.

    One bar per gated category and overall at each temperature of the sweep (the decision
    temperature solid, the others lighter); error bars are the intervals, a black bar the
    threshold, a diamond the baseline. Raises ChartUnavailable without matplotlib.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError as err:
        raise ChartUnavailable(f"matplotlib is not installed ({INSTALL})") from err

    sweep = report.sweep
    temps = list(sweep["temperatures"])
    decision = temperature_key(report.decision_temperature)
    temps.sort(key=lambda t: t != decision)  # decision first
    cats = list(sweep["categories"])
    thresholds = {c["category"]: c.get("threshold") for c in report.criteria}
    baselines = {c["category"]: c.get("baseline") for c in report.criteria}
    n = len(cats)
    width = 0.8 / len(temps)
    fig = Figure(figsize=(max(8.0, 1.15 * n + 2), 5.2), dpi=110, layout="constrained")
    ax = fig.subplots()
    colours = {True: "#2e7d32", False: "#c62828", None: "#78909c"}
    for j, t in enumerate(temps):
        for i, c in enumerate(cats):
            cell = c["by_temperature"].get(t)
            if not cell:
                continue
            x = i - 0.4 + width * (j + 0.5)
            passed = None if report.thresholds_pending else cell["passed"]
            ax.bar(
                x,
                cell["mean"],
                width * 0.92,
                color=colours[passed],
                alpha=1.0 if j == 0 else 0.45,
                edgecolor="black",
                linewidth=0.6,
                hatch="//" if cell.get("fragile") else None,
            )
            ax.errorbar(
                x,
                cell["mean"],
                yerr=[[max(0.0, cell["mean"] - cell["lo"])], [max(0.0, cell["hi"] - cell["mean"])]],
                fmt="none",
                ecolor="black",
                capsize=3,
                linewidth=1,
            )
    for i, c in enumerate(cats):
        th = thresholds.get(c["category"])
        if th is not None:
            ax.hlines(th, i - 0.45, i + 0.45, colors="black", linewidth=2.5, zorder=5)
        bl = baselines.get(c["category"])
        if bl is not None:
            ax.plot(i + 0.42, bl, marker="D", color="#1565c0", markersize=6, zorder=6)
    labels = []
    for c in cats:
        means = [
            f"{100 * c['by_temperature'][t]['mean']:.0f}%" if t in c["by_temperature"] else "-"
            for t in temps
        ]
        labels.append(f"{c['category']}\n{' / '.join(means)}")
    ax.set_xticks(range(n), labels, fontsize=9)
    if len(temps) > 1:
        ax.set_xlabel(f"category, then mean at T={' / '.join(temps)}", fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0], ["0%", "20%", "40%", "60%", "80%", "100%"])
    ax.set_ylabel(f"score ({report.score}), mean and 95% interval")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if n:
        ax.axvline(n - 1.5, color="grey", linewidth=0.8, linestyle=":")
    base = report.baseline_name or "baseline"
    handles = [
        Patch(facecolor=colours[True], edgecolor="black", label="meets threshold"),
        Patch(facecolor=colours[False], edgecolor="black", label="below threshold"),
        Patch(facecolor=colours[None], edgecolor="black", label="pending / not gated"),
        Patch(facecolor="white", edgecolor="black", hatch="//", label="fragile"),
        Line2D([], [], color="black", linewidth=2.5, label="threshold"),
        Line2D([], [], color="#1565c0", marker="D", linestyle="none", label=f"baseline ({base})"),
    ]
    if len(temps) > 1:
        handles.append(
            Patch(
                facecolor="#9e9e9e",
                alpha=0.45,
                edgecolor="black",
                label=f"lighter: T={', '.join(temps[1:])}",
            )
        )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    o = report.overall or {}
    title = f"{report.experiment}: {report.verdict}"
    if o:
        pending = " (pending)" if report.thresholds_pending else ""
        title += (
            f" - overall {100 * o['mean']:.1f}% vs threshold "
            f"{100 * (o['threshold'] or 0):.0f}%{pending}"
        )
    which = f"T={', '.join(temps)} (T={decision} decides)" if len(temps) > 1 else f"T={decision}"
    ax.set_title(f"{title}\n{which}, {report.samples} sample(s) per prompt, score {report.score}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
