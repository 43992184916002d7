"""Reading a run folder: everything a report is made from, as it is on disk.

`collect(run_dir)` reads what the run left: `eval/summary.json` (an `EvalSummary`) and
`eval/scores.jsonl` (the eval), `build.json` (a `BuildRecord`) when routegate built the model
(absent for a `--model` or `--server-url` run), the experiment's preflight.json (the workspace's
`reports/<name>/preflight.json`, else the one the build recorded), what ignoring each check
cost (pipeline.preflight.costs) and the experiment itself (settings, docs folder). Nothing
after this step touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.builder import BuildRecord, read_record
from pipeline.core.errors import BadInput
from pipeline.core.workspace import RunFolder, Workspace
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Experiment, ExperimentError, load_experiment
from pipeline.eval.integrity import IntegrityRecord, read_integrity
from pipeline.eval.records import EvalSummary, read_scores, read_summary
from pipeline.preflight import PreflightReport, read_report
from pipeline.preflight.costs import CheckCosts, measured_costs


class ReportError(BadInput):
    """The run folder cannot be reported on; the message says what is missing."""


@dataclass(frozen=True)
class RunData:
    """Everything a report is made from, as read from disk."""

    run_dir: Path
    summary: EvalSummary
    scores: tuple[dict[str, Any], ...]
    """The lines of eval/scores.jsonl, one per answer."""
    categories: tuple[str, ...] = ()
    """The catalog's categories, in its order."""
    build: BuildRecord | None = None
    """build.json; None when routegate did not build the model (--model, --server-url)."""
    preflight: PreflightReport | None = None
    preflight_path: Path | None = None
    experiment: Experiment | None = None
    """The experiment file as it is now (its fingerprint may differ from the run's)."""
    docs: tuple[str, ...] = ()
    """The files of the experiment's docs folder, sorted."""
    model_bytes: int | None = None
    """Size of the evaluated model folder, when it is on this machine."""
    integrity: IntegrityRecord | None = None
    """The build-integrity check's record, when it ran on this build."""
    baseline_scores: tuple[dict[str, Any], ...] | None = None
    """The scored answers of the baseline run the eval was compared with, when it is on disk."""
    baseline_temperature: float | None = None
    """That run's decision temperature."""
    check_costs: CheckCosts | None = None
    """What ignoring each preflight check cost, as the confound study measured it: the
    experiment's own study in the workspace, else the project's shipped one."""
    check_costs_path: Path | None = None


def collect(
    run_dir: Path,
    experiment: Experiment | None = None,
    *,
    preflight_path: Path | None = None,
    workspace: Workspace,
) -> RunData:
    """Read a run folder (`runs/<experiment>/<key>/`, the folder that holds `eval/`); the
    preflight report is `preflight_path`, else the workspace's (else the one the build
    recorded)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    scores = read_scores(run_dir)
    if experiment is None:
        try:
            experiment = load_experiment(summary.experiment)
        except ExperimentError:
            experiment = None  # a renamed or deleted experiment: reported from the run alone
    build = read_build(RunFolder(run_dir).build_record)
    if preflight_path is None:
        preflight_path = _preflight_path(summary.experiment, build, workspace)
    preflight = read_report(preflight_path)
    docs: tuple[str, ...] = ()
    if experiment is not None and experiment.docs is not None and experiment.docs.is_dir():
        docs = tuple(sorted(p.name for p in experiment.docs.iterdir() if p.is_file()))
    model_bytes = None
    if build is None and summary.model and Path(summary.model).is_dir():
        folder = Path(summary.model)
        model_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    costs = measured_costs(summary.experiment, workspace)
    return RunData(
        run_dir=run_dir,
        summary=summary,
        scores=scores,
        categories=tuple(load_catalog().categories),
        build=build,
        preflight=preflight,
        preflight_path=preflight_path if preflight is not None else None,
        experiment=experiment,
        docs=docs,
        model_bytes=model_bytes,
        integrity=read_integrity(run_dir) if build is not None else None,
        check_costs=costs[0] if costs else None,
        check_costs_path=costs[1] if costs else None,
        **_baseline(summary),
    )


def _baseline(summary: EvalSummary) -> dict[str, Any]:
    """The baseline run's scores and decision temperature, where the summary names one that
    is still on disk (the summary's paired rows stand either way)."""
    folder = Path(summary.baseline_run) if summary.baseline_run else None
    if folder is None or not RunFolder(folder).eval_scores.is_file():
        return {}
    return {
        "baseline_scores": read_scores(folder),
        "baseline_temperature": read_summary(folder).decision_temperature,
    }


def read_build(path: Path) -> BuildRecord | None:
    """build.json, or None where routegate did not build the model; one that cannot be read
    is a `ReportError` (the report would otherwise claim the model was not built)."""
    if not path.is_file():
        return None
    why: list[str] = []
    record = read_record(path, why.append)
    if record is None:
        detail = f": {why[0].removeprefix('[build] ')}" if why else ""
        raise ReportError(f"{path} is not a build record the report can read{detail}")
    return record


def _preflight_path(name: str, build: BuildRecord | None, workspace: Workspace) -> Path:
    """The workspace's preflight.json of the experiment, else the one the build recorded."""
    path = workspace.preflight_report(name)
    recorded = build.preflight.report if build is not None else None
    if not path.is_file() and recorded is not None and recorded.is_file():
        return recorded
    return path
