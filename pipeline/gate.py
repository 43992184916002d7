"""The gate's line, composed once: preflight -> build -> integrity -> eval -> verdict -> report.

Every door is a thin call onto this module: the pytest fixtures (conftest.py and
tests/eval/conftest.py), `python -m pipeline eval`, the confound study (a row is an
invocation of its own workspace, forced past its preflight) and the benchmarks. What one run
was asked is an `Invocation`, read once from the options (the one table in
pipeline.core.options); each step takes it and the previous step's record:

    Invocation.from_options(get)          the experiment with its overrides, the workspace, ...
    model_under_test(invocation, ...)     a given folder, a given server, or the build (the
                                          preflight's findings handed in, not recomputed)
                                          followed by its integrity check
    evaluate(invocation, model, ...)      every prompt asked and scored (EvalResult), judged
    write_report(invocation, result)      reports/<experiment>/results.{md,json,html,png}
    run(invocation, ...)                  all of it, for a door that is not pytest (and the
                                          verdict appended to $GITHUB_STEP_SUMMARY)

The verdict is `pipeline.eval.verdict.judge`'s; this module only wires the steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.builder import BuildResult, build
from pipeline.builder.run import Preflight
from pipeline.core.errors import BadInput, RoutegateError
from pipeline.core.workspace import RunFolder, Workspace
from pipeline.definitions.experiment import Experiment, from_options
from pipeline.eval.integrity import after_build
from pipeline.eval.run import EvalResult, eval_run_dir, run_eval
from pipeline.eval.serve import check_model_folder
from pipeline.eval.verdict import PreflightOutcome, recorded_preflight
from pipeline.report import Written, append_step_summary, mark_stale, report_run
from pipeline.report.sweep import sweep_table, write_sweep

Log = Callable[[str], None]
Option = Callable[[str], Any]
"""An option's value by its dest (`args.<dest>` or pytest's `config.getoption`)."""


@dataclass(frozen=True)
class Invocation:
    """What one run of the gate was asked: read once from the options, handed to each step."""

    experiment: Experiment
    """The experiment with every override the options make (pipeline.definitions.experiment)."""
    workspace: Workspace
    model: Path | None = None
    """`--model DIR`: a model folder to judge; no build."""
    server_urls: tuple[str, ...] = ()
    """`--server-url URL` (repeatable): servers of one model to judge; no build, no serving."""
    samples: int | None = None
    temperatures: str | None = None
    concurrency: int | None = None
    force: bool = False
    """Build even when the preflight fails (the verdict still says so)."""
    integrity: bool = True
    """Check the build's fuse and quantize steps after building (`--no-integrity`: False)."""
    system_prompts: tuple[Path, ...] = ()
    """`--system-prompt PATH` (repeatable): other system prompts to run the eval under."""

    @classmethod
    def from_options(cls, option: Option) -> Invocation:
        """The invocation the options select. Raises ExperimentError / BadInput for an
        experiment or option that cannot be used, naming it."""
        model = option("model")
        return cls(
            experiment=from_options(option),
            workspace=Workspace.at(option("workdir")),
            model=Path(model).expanduser().resolve() if model else None,
            server_urls=tuple(option("server_url") or ()),
            samples=option("samples"),
            temperatures=option("temperature"),
            concurrency=option("concurrency"),
            force=bool(option("force")),
            integrity=not option("no_integrity"),
            system_prompts=tuple(_system_prompt(p) for p in option("system_prompt") or ()),
        )


@dataclass(frozen=True)
class ModelUnderTest:
    """The model a run judges, and where its answers go."""

    run_dir: Path
    """The build's run folder, or one keyed by the given folder's content or the server."""
    folder: Path | None = None
    """The quantized model folder to serve; None when a given server is asked."""
    built: BuildResult | None = None
    """The build's result when routegate built it."""


def model_under_test(
    invocation: Invocation, *, log: Log = print, preflight: Preflight | None = None
) -> ModelUnderTest:
    """A given folder (checked before its digest keys the run folder), a given server, or the
    experiment's build followed by its integrity check (unless `integrity` is off).

    `preflight` returns the findings of a preflight the caller already ran on the same
    experiment (a pytest session's shared context), so the build does not run it again.
    Raises BuildRefused when the preflight fails and not `force`, IntegrityFailed when a
    step lost the trained behaviour, BadInput for a folder that is not a model."""
    inv = invocation
    if inv.server_urls:
        urls = list(inv.server_urls)
        return ModelUnderTest(eval_run_dir(inv.experiment, inv.workspace, server_url=urls))
    if inv.model is not None:
        check_model_folder(inv.model)
        return ModelUnderTest(
            eval_run_dir(inv.experiment, inv.workspace, model_dir=inv.model), inv.model
        )
    built = build(
        inv.experiment, force=inv.force, workspace=inv.workspace, log=log, preflight=preflight
    )
    after_build(inv.experiment, built.run_dir, skip=not inv.integrity, log=log)
    return ModelUnderTest(built.run_dir, built.quantized, built)


def evaluate(
    invocation: Invocation,
    model: ModelUnderTest,
    *,
    log: Log = print,
    preflight: PreflightOutcome | None = None,
) -> EvalResult:
    """Ask every prompt of the experiment's set (served here, or on the given servers), score
    and judge, with the preflight's word on this experiment and build as it is on disk, or
    as `preflight` says (a caller that ran it on data of its own, as the confound study)."""
    inv = invocation
    if preflight is None:
        preflight = recorded_preflight(inv.workspace, inv.experiment, model.run_dir)
    servers: Sequence[str] | None = list(inv.server_urls) or None
    return run_eval(
        inv.experiment,
        model.run_dir,
        model_dir=None if servers else model.folder,
        server_url=servers,
        samples=inv.samples,
        temperatures=inv.temperatures,
        concurrency=inv.concurrency,
        preflight=preflight,
        log=log,
    )


def sweep_system_prompts(
    invocation: Invocation, model: ModelUnderTest, *, log: Log = print
) -> Path | None:
    """The eval under each `--system-prompt` besides the experiment's own (whose answers the
    main eval left on disk), each in its own run folder; the table of every category's score
    under each, and its spread, in reports/<experiment>/system_prompts.{json,md} (its path).
    None when no other system prompt was given."""
    inv = invocation
    if not inv.system_prompts:
        return None
    own = inv.experiment.eval.system_prompt
    rows = []
    for path in (own, *inv.system_prompts):
        experiment = dataclasses.replace(
            inv.experiment, eval=dataclasses.replace(inv.experiment.eval, system_prompt=path)
        )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        folder = (
            model.run_dir
            if path == own
            else RunFolder(model.run_dir).system_prompt_variant(f"{path.stem}-{digest}").path
        )
        log(f"[sweep] system prompt {path}")
        variant = dataclasses.replace(inv, experiment=experiment)
        result = evaluate(variant, dataclasses.replace(model, run_dir=folder), log=log)
        rows.append((path, result.summary))
    json_path, md_path = inv.workspace.study_report(inv.experiment.name, "system_prompts")
    return write_sweep(sweep_table(rows), inv.experiment.name, json_path, md_path)


def _system_prompt(path: str | Path) -> Path:
    found = Path(path).expanduser().resolve()
    if not found.is_file():
        raise BadInput(f"--system-prompt {path}: no such file; pass a text file")
    return found


def write_report(invocation: Invocation, result: EvalResult) -> Written:
    """results.{md,json,html,png} of the run under reports/<experiment>/, with the verdict."""
    return report_run(result.run_dir, invocation.experiment, workspace=invocation.workspace)


def run(
    invocation: Invocation,
    *,
    log: Log = print,
    on_result: Callable[[EvalResult], None] | None = None,
) -> Written:
    """The whole line for a door that is not pytest: model, eval, report, then the
    system-prompt sweep if one was asked for. `on_result` sees the eval's result before the
    report is written. Whatever stops it before the report (an error, Ctrl-C) marks the
    experiment's last report stale, so no earlier report stands as this run's, and is raised;
    a sweep that fails afterwards leaves this run's report standing."""
    try:
        model = model_under_test(invocation, log=log)
        result = evaluate(invocation, model, log=log)
        if on_result is not None:
            on_result(result)
        written = write_report(invocation, result)
    except BaseException as err:
        mark_stale(invocation.experiment.name, stopped_because(err), invocation.workspace)
        raise
    append_step_summary(written)
    sweep_system_prompts(invocation, model, log=log)
    return written


def stopped_because(err: BaseException) -> str:
    """Why a run stopped, for the note that marks the last report stale."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return str(err) if isinstance(err, RoutegateError) else f"{type(err).__name__}: {err}"
