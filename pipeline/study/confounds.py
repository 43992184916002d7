"""The confound study: train the experiment clean and once per confound, and judge each model.

Each confound is declared once in `CONFOUNDS` (its name, the preflight check meant to catch
it, what it injects, the injection in pipeline.study.inject). `run_study` runs the clean row,
then each chosen confound: inject it into a copy of the data or settings, run the whole
preflight (its failed checks are the row's `preflight_failed`), build anyway (as `--force`
does), evaluate as the gate does and read the decision temperature's scores, as
benchmarks/variance.py does. With `--seeds N` the clean row is trained N times ([train] seed:
the experiment's, then the next ones) and each row that retrains one seed after another (every
row's first training before any row's second) until
it is decided (at most N: a collapse far outside the clean seeds' spread stops at one), and a
row that only changes eval settings judges each clean model; with `--also-prompts` every
model is judged on those prompt sets as well. Each row is then compared with the clean row on
each prompt set, by prompts and by trainings (pipeline.study.decide).

Where a row lives, under the workspace:

    runs/NAME/<key>/                      the clean build (the gate's own: a shared cache)
    runs/NAME/study/<row>/data/           the confounded data (a row that changes data)
    runs/NAME/study/<row>/runs/NAME/KEY/  its build (a row that retrains), and eval/ (KEY:
                                          the build key of the model judged)
              .../runs/NAME/KEY/prompts-<set>/eval/   the same model on another prompt set
    runs/NAME/study/<row>/seed-<seed>/    the same for a training with another seed than the
                                          experiment's (the clean row's build too)
    runs/NAME/study/<row>/reports/NAME/preflight.json   its preflight findings
    reports/NAME/confounds.json, .md      the rows, rewritten after each row
    reports/NAME/check_costs.json         per preflight check, what its confound cost
                                          (pipeline.preflight.costs: what reports link to)

Each row has a workspace of its own so that a confounded preflight never overwrites the
experiment's reports/NAME/preflight.json, and deleting runs/NAME/study/<row>/ redoes that row.

A row's build is cached by key like any build (the key does not depend on the eval prompts,
so every prompt set judges one build), and its eval is reused when a complete one of the same
experiment and model is on disk, so a rerun after a crash or Ctrl-C redoes only the
unfinished row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.builder import BuildResult
from pipeline.core import io
from pipeline.core.errors import BadInput, Fault
from pipeline.core.workspace import RunFolder, Workspace
from pipeline.data import ensure_data
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import (
    Experiment,
    available_prompt_sets,
    prompts_path,
    with_overrides,
)
from pipeline.eval.metrics import PromptValue
from pipeline.eval.records import EvalSummary, eval_files
from pipeline.eval.run import OVERALL, baseline_values, settings_for
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
from pipeline.preflight.costs import CheckCost, CheckCosts
from pipeline.study.decide import compare
from pipeline.study.inject import (
    OTHER_SYSTEM_PROMPT,
    BaseTemplate,
    Clean,
    Injection,
    JudgedTwice,
    Skipped,
    calls_in_masked_turns,
    eval_prompts_leaked,
    other_system_prompt,
    thinking,
    wrong_call_syntax,
)
from pipeline.study.records import AGREEING, CLEAN, Comparison, ConfoundRow, SetScore, write_rows
from pipeline.study.table import markdown, said

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
        "eval with thinking on and <think> as a stop, so eval and training disagree about the "
        "empty think block (a base that thinks: the clean model judged again; SmolLM2: its "
        "think variant trained once, judged with an agreeing eval too, prompt by prompt)",
        thinking,
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


def row_workspace(
    experiment: Experiment, workspace: Workspace, row: str, seed: int | None = None
) -> Workspace:
    """A row's own workspace (runs/NAME/study/<row>/): its data, build, eval, preflight.json;
    a training with another seed than the experiment's in runs/NAME/study/<row>/seed-<seed>/
    (the experiment's own keeps the folder a study of one seed always used)."""
    other = None if seed is None or seed == experiment.train.seed else seed
    return workspace.study_row(experiment.name, row, other)


def named_prompt_sets(also_prompts: str | Sequence[str] | None) -> tuple[str, ...]:
    """The prompt sets `--also-prompts` names (comma-separated, as benchmarks/variance.py's),
    in order, each once; a name that is no shipped set is bad input naming it and the known
    ones."""
    items = [also_prompts] if isinstance(also_prompts, str) else list(also_prompts or ())
    names = tuple(dict.fromkeys(n.strip() for item in items for n in item.split(",") if n.strip()))
    known = available_prompt_sets()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(
            f"--also-prompts {unknown[0]}: no such prompt set (known: {', '.join(known)}; "
            "each is fixtures/prompts/NAME.toml)"
        )
    return names


def prompt_sets(
    experiment: Experiment, also_prompts: str | Sequence[str] | None
) -> tuple[str, ...]:
    """The sets every row is judged on: the experiment's own (named by its file), then those
    `--also-prompts` names but the experiment's own."""
    own = experiment.eval.prompts
    also = named_prompt_sets(also_prompts)
    return (own.stem, *(n for n in also if prompts_path(n) != own.resolve()))


def check_seeds(seeds: int) -> int:
    """`--seeds N` as given; fewer than one training per row is bad input."""
    if seeds < 1:
        raise BadInput(f"--seeds {seeds}: train each row at least once (1 or more)")
    return seeds


def training_seeds(experiment: Experiment, seeds: int) -> tuple[int, ...]:
    """The [train] seeds of `--seeds N`: the experiment's own, then the next N - 1."""
    return tuple(experiment.train.seed + i for i in range(check_seeds(seeds)))


def seeded(experiment: Experiment, seed: int) -> Experiment:
    """The experiment trained with `[train] seed = seed`: itself for its own seed; another
    seed is trained afresh (a shipped adapter is the training the experiment builds from)."""
    if seed == experiment.train.seed:
        return experiment
    retrained = with_overrides(experiment, retrain=True)
    return dataclasses.replace(retrained, train=dataclasses.replace(retrained.train, seed=seed))


# --- the study ----------------------------------------------------------------------------------


def run_study(
    experiment: Experiment,
    *,
    workspace: Workspace,
    only: Sequence[str] | None = None,
    also_prompts: str | Sequence[str] | None = None,
    seeds: int = 1,
    command: str = "",
    log: Log = print,
) -> list[ConfoundRow]:
    """The clean row, trained once per seed (`seeds` trainings: the experiment's [train] seed
    and the next ones), then one row per chosen confound, trained seed after seed (every row's
    first before any row's second) until it is
    decided (at most `seeds`; a row that does not retrain judges each clean model), judged
    on the experiment's prompt set and each `also_prompts` set and compared with the clean
    row (pipeline.study.decide); confounds.json and .md (pipeline.study.table renders the
    markdown) and check_costs.json (`command`: how the study was run, the costs'
    provenance) rewritten after each row. Raises BadInput
    for an unknown confound or prompt set or fewer than one seed (before anything runs) or
    inputs the preflight cannot load, BuildError / StageError when a build fails, Fault when
    an eval leaves requests unanswered."""
    confounds = chosen(only)
    sets = prompt_sets(experiment, also_prompts)
    trainings = training_seeds(experiment, seeds)
    categories = tuple(load_catalog().categories)
    json_path, md_path = study_paths(experiment, workspace)
    # the rows by name (a row judged again after its next training replaces its earlier
    # self), shown in the registry's order: clean, then each confound (a judged-twice row
    # after its control)
    made_rows: dict[str, ConfoundRow] = {}
    order = [CLEAN]
    for confound in confounds:
        order += [f"{confound.name}-{AGREEING}", confound.name]
    # each eval of this study, by folder: a row judged again after its next training takes
    # its earlier seeds' evals from here
    evaluated: dict[Path, EvalSummary] = {}

    def in_order() -> list[ConfoundRow]:
        return sorted(made_rows.values(), key=lambda row: order.index(row.confound))

    def done(*made: ConfoundRow) -> None:
        for row in made:
            made_rows[row.confound] = row
        rows = in_order()
        write_rows(rows, json_path)
        io.write_text(md_path, markdown(experiment.name, rows))
        check_costs(experiment.name, rows, command=command, trainings=len(trainings)).write(
            workspace.check_costs(experiment.name)
        )
        for row in made:
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
    log(
        f"[study] {experiment.name}: clean, then {', '.join(c.name for c in confounds)}; "
        f"seeds {', '.join(map(str, trainings))}; prompts {', '.join(sets)}"
    )

    def row_ws(row: str) -> Callable[[int], Workspace]:
        return lambda seed: row_workspace(experiment, workspace, row, seed)

    def built(
        row: Experiment, found: list[Finding], where: Callable[[int], Workspace]
    ) -> dict[int, BuildResult]:
        return {seed: _built(seeded(row, seed), found, where(seed), log) for seed in trainings}

    def trained_up_to(
        row: Experiment,
        found: list[Finding],
        where: Callable[[int], Workspace],
        rows_of: Callable[[dict[int, BuildResult]], list[ConfoundRow]],
    ) -> Callable[[int], tuple[list[ConfoundRow], bool]]:
        """For a row that retrains: given N, the rows `rows_of` makes of its first N seeds'
        models (each trained once), and whether the last of them (the confound's) is decided
        on every prompt set."""
        models: dict[int, BuildResult] = {}

        def up_to(count: int) -> tuple[list[ConfoundRow], bool]:
            for seed in trainings[:count]:
                if seed not in models:
                    models[seed] = _built(seeded(row, seed), found, where(seed), log)
            made = rows_of(dict(models))
            return made, all(c.decision != "not decided" for c in made[-1].comparisons)

        return up_to

    # the experiment's own seed builds the gate's model (same key: a shared cache); another
    # seed's build, and every eval, is the row's
    clean_models = built(
        clean_experiment,
        findings,
        lambda seed: workspace if seed == experiment.train.seed else row_ws(CLEAN)(seed),
    )
    write_report(clean_experiment, findings, row_workspace(experiment, workspace, CLEAN))
    clean_row = _judged(
        CLEAN,
        "",
        clean_experiment,
        findings,
        clean_models,
        row_ws(CLEAN),
        sets,
        trained=True,
        memo=evaluated,
        log=log,
    )
    done(clean_row)
    retrained: list[tuple[str, Callable[[int], tuple[list[ConfoundRow], bool]]]] = []
    for confound in confounds:
        where = row_ws(confound.name)
        own_ws = row_workspace(experiment, workspace, confound.name)
        injected = confound.inject(clean, own_ws.root / "data")
        if isinstance(injected, Skipped):
            skipped = injected.reason
            done(ConfoundRow(confound=confound.name, injects=confound.injects, skipped=skipped))
            continue
        if isinstance(injected, JudgedTwice):
            # One model (trained per seed on the row's own inputs), judged under an eval that
            # agrees with its training (the control, a row of its own: what the variant
            # itself costs against clean) and under the confound's: only the eval differs
            # between the two, so the row is compared with its control prompt by prompt.
            control_name = f"{confound.name}-{AGREEING}"
            control_ws = row_workspace(experiment, workspace, control_name)
            control_found = run_preflight(injected.agreeing, workspace=control_ws)
            write_report(injected.agreeing, control_found, control_ws)
            found = run_preflight(injected.disagreeing, workspace=own_ws)
            write_report(injected.disagreeing, found, own_ws)

            def judged_twice(
                models: dict[int, BuildResult],
                confound: Confound = confound,
                injected: JudgedTwice = injected,
                control_name: str = control_name,
                control_found: list[Finding] = control_found,
                found: list[Finding] = found,
            ) -> list[ConfoundRow]:
                control = _judged(
                    control_name,
                    f"the {confound.name} row's model, judged with an eval that agrees with "
                    "its training",
                    injected.agreeing,
                    control_found,
                    models,
                    row_ws(control_name),
                    sets,
                    trained=True,
                    memo=evaluated,
                    log=log,
                )
                control = dataclasses.replace(
                    control,
                    comparisons=compared_with(control, clean_row, categories, retrains=True),
                )
                row = _judged(
                    confound.name,
                    confound.injects,
                    injected.disagreeing,
                    found,
                    models,
                    row_ws(confound.name),
                    sets,
                    trained=False,
                    memo=evaluated,
                    log=log,
                )
                compared = compared_with(row, control, categories, retrains=False)
                return [control, dataclasses.replace(row, comparisons=compared)]

            retrained.append(
                (
                    confound.name,
                    trained_up_to(injected.agreeing, control_found, where, judged_twice),
                )
            )
            continue
        found = run_preflight(injected, workspace=own_ws)
        write_report(injected, found, own_ws)

        def judged(
            models: dict[int, BuildResult],
            confound: Confound = confound,
            injected: Experiment = injected,
            found: list[Finding] = found,
        ) -> list[ConfoundRow]:
            row = _judged(
                confound.name,
                confound.injects,
                injected,
                found,
                models,
                row_ws(confound.name),
                sets,
                trained=confound.retrains,
                memo=evaluated,
                log=log,
            )
            compared = compared_with(row, clean_row, categories, retrains=confound.retrains)
            return [dataclasses.replace(row, comparisons=compared)]

        if confound.retrains:
            retrained.append((confound.name, trained_up_to(injected, found, where, judged)))
        else:
            done(*judged(clean_models))
    # Every row's first training before any row's second, then the undecided rows' second,
    # and so on: a study stopped part way has each row's difference with an interval (at the
    # clean row's spread), rather than every seed of the first rows and nothing of the last.
    # A row stops at the first number of trainings that decides it on every prompt set, so
    # a collapse costs one training and a subtle row gets them all.
    undecided = retrained
    for count in range(1, len(trainings) + 1):
        still: list[tuple[str, Callable[[int], tuple[list[ConfoundRow], bool]]]] = []
        for name, up_to in undecided:
            made, decided = up_to(count)
            done(*made)
            if not decided:
                still.append((name, up_to))
            elif count < len(trainings):
                log(
                    f"[study] {name}: decided after {count} of {len(trainings)} trainings; "
                    "the others are not trained"
                )
        undecided = still
    log(f"[study] {json_path}\n[study] {md_path}")
    return in_order()


def check_costs(
    name: str, rows: Sequence[ConfoundRow], *, command: str, trainings: int
) -> CheckCosts:
    """What each confound's row cost against the clean row (or its control), overall, per
    prompt set, filed under the preflight check the confound fails."""
    costs = tuple(
        CheckCost(
            check=BY_NAME[row.confound].catches,
            confound=row.confound,
            injects=row.injects,
            prompts=c.prompts,
            scored=pooled.n,
            difference=pooled.difference,
            lo=pooled.lo,
            hi=pooled.hi,
            decision=said(c),
        )
        for row in rows
        if row.confound in BY_NAME
        for c in row.comparisons
        for pooled in (c.by_prompts[OVERALL],)
    )
    written = datetime.now(UTC).isoformat(timespec="seconds")
    return CheckCosts(
        experiment=name, command=command, written=written, trainings=trainings, costs=costs
    )


def compared_with(
    row: ConfoundRow, other: ConfoundRow, categories: Sequence[str], *, retrains: bool
) -> tuple[Comparison, ...]:
    """The row against `other` (the clean row, or a judged-twice row's control) on each
    prompt set both were judged on, from each eval's per-prompt values (its scores at the
    decision temperature, read from its run folder as a baseline run is:
    pipeline.eval.run.baseline_values)."""
    out = []
    for prompts in dict.fromkeys(s.prompts for s in row.evaluations()):
        other_on = other.on(prompts)
        if not other_on:
            continue
        out.append(
            compare(
                prompts,
                _values(row.on(prompts)),
                _values(other_on),
                categories,
                retrains=retrains,
                clean_overall=[s.overall for s in other_on],
                against=other.confound,
            )
        )
    return tuple(out)


def _values(scores: Sequence[SetScore]) -> dict[int, list[PromptValue]]:
    """Per seed, the per-prompt values of each evaluation's run folder."""
    out = {}
    for score in scores:
        assert score.seed is not None and score.eval_dir is not None  # rows this study wrote
        out[score.seed] = baseline_values(score.eval_dir)
    return out


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
    models: dict[int, BuildResult],
    seed_workspace: Callable[[int], Workspace],
    sets: Sequence[str],
    *,
    trained: bool,
    memo: dict[Path, EvalSummary],
    log: Log,
) -> ConfoundRow:
    """The row of its built models (one per seed, the experiment's own first): each judged on
    each prompt set (evals reused when complete), its losses and times. The experiment's own
    set and seed are the row's headline; the rest its `scores`."""
    failed = tuple(dict.fromkeys(f.check for f in findings if f.failed))
    scores: list[SetScore] = []
    seconds = 0.0
    for seed, built in models.items():
        trained_with = seeded(experiment, seed)
        row_ws = seed_workspace(seed)
        run_dir = row_ws.runs(experiment.name) / built.key  # keyed by the model: no stale answers
        seconds += (built.record.seconds or 0.0) if trained else 0.0
        for prompts in sets:
            own = prompts == sets[0]
            judged_on = trained_with if own else with_overrides(trained_with, prompts=prompts)
            folder = run_dir if own else RunFolder(run_dir).prompt_set(prompts).path
            summary = memo.get(folder) or _evaluated(
                judged_on, row_ws, built.quantized, folder, failed, log
            )
            memo[folder] = summary
            seconds += summary.seconds
            decision = summary.decision().categories
            scores.append(
                SetScore(
                    prompts=prompts,
                    seed=seed,
                    overall=round(decision[OVERALL].mean, 4),
                    categories={k: round(v.mean, 4) for k, v in decision.items() if k != OVERALL},
                    eval_dir=folder,
                )
            )
    first = next(iter(models.values()))
    train = first.record.stages.train
    head, *rest = scores
    return ConfoundRow(
        confound=name,
        injects=injects,
        preflight_failed=failed,
        overall=head.overall,
        categories=head.categories,
        train_loss=train.train_loss if train is not None else None,
        val_loss=train.val_loss if train is not None else None,
        seconds=round(seconds, 1),
        model=first.quantized,
        eval_dir=head.eval_dir,
        prompts=head.prompts,
        seed=head.seed,
        scores=tuple(rest),
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
    against = "".join(
        f"; {c.prompts}: {c.mean:+.3f} vs clean, {c.decision}" for c in row.comparisons
    )
    return f"overall {overall}; preflight failed: {failed}{against}; {row.seconds / 60:.1f} min"
