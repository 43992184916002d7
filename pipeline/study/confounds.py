"""The confound study: train the experiment clean and once per confound, and judge each model.

Each confound is declared once in `CONFOUNDS` (its name, the preflight check meant to catch
it, what it injects, the injection in pipeline.study.inject). `run_study` runs the clean row,
then each chosen confound: inject it into a copy of the data or settings, run the whole
preflight (its failed checks are the row's `preflight_failed`), build anyway (as `--force`
does), evaluate as the gate does and read the decision temperature's scores, as
benchmarks/variance.py does.

Where a row lives, under the workspace:

    runs/NAME/<key>/                      the clean build (the gate's own: a shared cache)
    runs/NAME/study/<row>/data/           the confounded data (a row that changes data)
    runs/NAME/study/<row>/runs/NAME/KEY/  its build (a row that retrains), and eval/ (KEY:
                                          the build key of the model judged)
    runs/NAME/study/<row>/reports/NAME/preflight.json   its preflight findings
    reports/NAME/confounds.json, .md      the rows, rewritten after each row

Each row has a workspace of its own so that a confounded preflight never overwrites the
experiment's reports/NAME/preflight.json, and deleting runs/NAME/study/<row>/ redoes that row.

A row's build is cached by key like any build, and its eval is reused when a complete one of
the same experiment and model is on disk, so a rerun after a crash or Ctrl-C redoes only the
unfinished row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.builder import BuildResult
from pipeline.core import io
from pipeline.core.errors import BadInput, Fault
from pipeline.core.workspace import Workspace
from pipeline.data import ensure_data
from pipeline.definitions.experiment import Experiment
from pipeline.eval.records import EvalSummary, eval_files
from pipeline.eval.run import OVERALL, settings_for
from pipeline.eval.verdict import PreflightOutcome
from pipeline.gate import Invocation, ModelUnderTest, evaluate, model_under_test
from pipeline.models.refs import tiny_syntax
from pipeline.preflight import (
    Context,
    Finding,
    resolve_model,
    run_checks,
    run_preflight,
    unloaded_input,
    write_report,
)
from pipeline.study.inject import (
    OTHER_SYSTEM_PROMPT,
    BaseTemplate,
    Clean,
    Injection,
    Skipped,
    calls_in_masked_turns,
    eval_prompts_leaked,
    other_system_prompt,
    thinking_disagrees,
    wrong_call_syntax,
)
from pipeline.study.records import CLEAN, ConfoundRow, write_rows
from pipeline.study.table import markdown

Log = Callable[[str], None]


@dataclass(frozen=True)
class Confound:
    name: str
    catches: str
    """The preflight check meant to fail on it (the check's registry name)."""
    injects: str
    """What the row changes, in a line (the report's and --help's words)."""
    inject: Injection
    retrains: bool = True
    """False: only eval settings change, and the clean row's model is judged again."""


CONFOUNDS: tuple[Confound, ...] = (
    Confound(
        "syntax",
        "call-syntax",
        "targets' calls in the syntax the base's server parser does not read (XML for JSON)",
        wrong_call_syntax,
    ),
    Confound(
        "masked",
        "masking",
        "every call only in masked turns (a tool response and an answer after it)",
        calls_in_masked_turns,
    ),
    Confound(
        "system-prompt",
        "system-prompt",
        f"trained with another system prompt than the eval's ({OTHER_SYSTEM_PROMPT!r})",
        other_system_prompt,
    ),
    Confound(
        "thinking",
        "thinking",
        "eval with thinking on and <think> as a stop: the prompt lacks the think block the "
        "targets start with (the clean model, judged again)",
        thinking_disagrees,
        retrains=False,
    ),
    Confound(
        "leak",
        "eval-overlap",
        "the eval prompts, with their expected calls, added to train.jsonl",
        eval_prompts_leaked,
    ),
)
BY_NAME: dict[str, Confound] = {c.name: c for c in CONFOUNDS}


def chosen(only: Sequence[str] | None) -> tuple[Confound, ...]:
    """The confounds `only` names, in the registry's order (all for None or empty); a name
    that is none of them is bad input naming it and the known ones."""
    names = [n for item in only or () for n in item.split(",") if n]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise BadInput(
            f"--only {unknown[0]}: no such confound (known: {', '.join(BY_NAME)}; "
            f"the {CLEAN!r} row always runs)"
        )
    return tuple(c for c in CONFOUNDS if not names or c.name in names)


def study_paths(experiment: Experiment, workspace: Workspace) -> tuple[Path, Path]:
    """(confounds.json, confounds.md) of the experiment in the workspace."""
    return workspace.study_report(experiment.name, "confounds")


def row_workspace(experiment: Experiment, workspace: Workspace, row: str) -> Workspace:
    """A row's own workspace (runs/NAME/study/<row>/): its data, build, eval, preflight.json."""
    return workspace.study_row(experiment.name, row)


# --- the study ----------------------------------------------------------------------------------


def run_study(
    experiment: Experiment,
    *,
    workspace: Workspace,
    only: Sequence[str] | None = None,
    log: Log = print,
) -> list[ConfoundRow]:
    """The clean row, then one row per chosen confound; confounds.json and .md rewritten after
    each row (pipeline.study.table renders the markdown). Raises BadInput for an unknown
    confound (before anything runs) or inputs the preflight cannot load, BuildError /
    StageError when a build fails, Fault when an eval leaves requests unanswered."""
    confounds = chosen(only)
    json_path, md_path = study_paths(experiment, workspace)
    rows: list[ConfoundRow] = []

    def done(row: ConfoundRow) -> None:
        rows.append(row)
        write_rows(rows, json_path)
        io.write_text(md_path, markdown(experiment.name, rows))
        log(f"[study] {row.confound}: {_said(row)}")

    clean_experiment = pinned(experiment, workspace)
    context = Context(clean_experiment, workspace)
    findings = run_checks(context)
    unloaded = unloaded_input(findings)
    if unloaded is not None:
        raise unloaded
    clean = Clean(
        clean_experiment,
        ensure_data(clean_experiment, workspace=workspace),
        # named as the experiment names it (the pinned folder is a cache path)
        dataclasses.replace(BaseTemplate.of(context.side("base")), ref=experiment.models.base),
    )
    log(f"[study] {experiment.name}: clean, then {', '.join(c.name for c in confounds)}")
    # the clean model is the gate's own build (same key: a shared cache); its eval is the row's
    clean_built = _built(clean_experiment, findings, workspace, log)
    clean_ws = row_workspace(experiment, workspace, CLEAN)
    write_report(clean_experiment, findings, clean_ws)
    row = _judged(
        CLEAN, "", clean_experiment, findings, clean_built, clean_ws, trained=True, log=log
    )
    done(row)
    for confound in confounds:
        row_ws = row_workspace(experiment, workspace, confound.name)
        injected = confound.inject(clean, row_ws.root / "data")
        if isinstance(injected, Skipped):
            skipped = injected.reason
            done(ConfoundRow(confound=confound.name, injects=confound.injects, skipped=skipped))
            continue
        found = run_preflight(injected, workspace=row_ws)
        write_report(injected, found, row_ws)
        built = _built(injected, found, row_ws, log) if confound.retrains else clean_built
        row = _judged(
            confound.name,
            confound.injects,
            injected,
            found,
            built,
            row_ws,
            trained=confound.retrains,
            log=log,
        )
        done(row)
    log(f"[study] {json_path}\n[study] {md_path}")
    return rows


def pinned(experiment: Experiment, workspace: Workspace) -> Experiment:
    """The experiment with a base or reference that routegate builds from the experiment's own
    data (the tiny model: its tokenizer learns from the data) replaced by the clean build's
    folder, so every row trains and is judged on the same base, not one retokenized per
    confound. A hub id or folder is left as it is (its build key is the same either way)."""
    models = experiment.models
    replaced: dict[str, Any] = {}
    for side in ("base", "reference"):
        ref = getattr(models, side)
        if tiny_syntax(ref) is not None:
            replaced[side] = str(resolve_model(ref, experiment, workspace=workspace))
    if not replaced:
        return experiment
    return dataclasses.replace(experiment, models=dataclasses.replace(models, **replaced))


def _built(
    experiment: Experiment, findings: list[Finding], workspace: Workspace, log: Log
) -> BuildResult:
    """Build (or reuse) the row's model whatever the preflight said, with its findings."""
    row = Invocation(experiment, workspace, force=True, integrity=False)
    built = model_under_test(row, log=log, preflight=lambda _: findings).built
    assert built is not None  # an invocation without --model or a server builds
    return built


def _judged(
    name: str,
    injects: str,
    experiment: Experiment,
    findings: Sequence[Finding],
    built: BuildResult,
    row_ws: Workspace,
    *,
    trained: bool,
    log: Log,
) -> ConfoundRow:
    """The row of a built model: its eval (reused when complete), losses and times."""
    failed = tuple(dict.fromkeys(f.check for f in findings if f.failed))
    run_dir = row_ws.runs(experiment.name) / built.key  # keyed by the model: no stale answers
    summary = _evaluated(experiment, row_ws, built.quantized, run_dir, failed, log)
    decision = summary.decision().categories
    train = built.record.stages.train
    build_seconds = (built.record.seconds or 0.0) if trained else 0.0
    return ConfoundRow(
        confound=name,
        injects=injects,
        preflight_failed=failed,
        overall=round(decision[OVERALL].mean, 4),
        categories={k: round(v.mean, 4) for k, v in decision.items() if k != OVERALL},
        train_loss=train.train_loss if train is not None else None,
        val_loss=train.val_loss if train is not None else None,
        seconds=round(build_seconds + summary.seconds, 1),
        model=built.quantized,
        eval_dir=run_dir,
    )


def _evaluated(
    experiment: Experiment,
    row_ws: Workspace,
    model: Path,
    run_dir: Path,
    failed: Sequence[str],
    log: Log,
) -> EvalSummary:
    """The eval of `model` in `run_dir`: the summary on disk when it is complete for this
    experiment and model, else a run (run_eval reuses the answers already on disk)."""
    path = eval_files(run_dir)["summary"]
    if path.is_file():
        try:
            summary: EvalSummary | None = EvalSummary.read(path)
        except (BadInput, TypeError, ValueError):
            summary = None  # unreadable: evaluate again
        if summary is not None and _complete(summary, experiment, model):
            log(f"[study] reusing the eval in {run_dir}")
            return summary
    outcome = PreflightOutcome(
        failed=bool(failed),
        line=f"preflight failed ({', '.join(failed)}); built anyway by the confound study"
        if failed
        else "preflight passed",
    )
    row = Invocation(experiment, row_ws)
    summary = evaluate(row, ModelUnderTest(run_dir, model), preflight=outcome, log=log).summary
    if summary.verdict == "ERROR":
        reason = summary.verdict_reasons[0] if summary.verdict_reasons else "requests unanswered"
        raise Fault(f"the eval in {run_dir} did not complete: {reason}; run again to resume")
    return summary


def _complete(summary: EvalSummary, experiment: Experiment, model: Path) -> bool:
    settings = settings_for(experiment)
    return (
        summary.verdict != "ERROR"
        and summary.fingerprint == experiment.fingerprint()
        and summary.model == str(model)
        and summary.samples == settings.samples
        and tuple(t.temperature for t in summary.temperatures.values()) == settings.temperatures
    )


def _said(row: ConfoundRow) -> str:
    if row.skipped:
        return f"skipped: {row.skipped}"
    failed = ", ".join(row.preflight_failed) or "none"
    overall = "-" if row.overall is None else f"{row.overall:.2f}"
    return f"overall {overall}; preflight failed: {failed}; {row.seconds / 60:.1f} min"
