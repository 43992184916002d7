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
unfinished row. On a machine without that workspace, `--resume-from` continues from the rows
a study wrote (checked in: benchmarks/confound_table.py --take): each row keeps, per training
and prompt set, the build key of the model judged and its per-prompt values, so a training
whose key this study would build again is taken from them (`Earlier`), and only what they
lack is trained (`Training` builds on first need).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.builder import BuildResult, plan
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
from pipeline.study.records import (
    AGREEING,
    CLEAN,
    Comparison,
    ConfoundRow,
    SetScore,
    read_rows,
    write_rows,
)
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
    resume_from: Path | None = None,
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
    provenance) rewritten after each row. `resume_from`: an earlier study's rows (confounds.json,
    from this machine or checked in from another): a training they judged, matched by the
    build key of its model, is taken from them rather than trained and judged again (and a
    comparison made of the very same evaluations, as they made it), and their rows `only`
    leaves out are kept (`Earlier.carried`). Raises BadInput for an unknown confound or
    prompt set, fewer than one seed or than `resume_from`'s clean row has (before anything runs),
    inputs the preflight cannot load or a `resume_from` that is no study's rows, BuildError /
    StageError when a build fails, Fault when an eval leaves requests unanswered or a
    training judged again does not score what `resume_from` recorded for it."""
    confounds = chosen(only)
    sets = prompt_sets(experiment, also_prompts)
    trainings = training_seeds(experiment, seeds)
    earlier = read_earlier(resume_from, experiment) if resume_from is not None else None
    if earlier is not None:
        earlier.check_seeds(trainings)
    categories = tuple(load_catalog().categories)
    json_path, md_path = study_paths(experiment, workspace)
    # the rows by name (a row judged again after its next training replaces its earlier
    # self), shown in the registry's order: clean, then each confound (a judged-twice row
    # after its control)
    made_rows: dict[str, ConfoundRow] = {}
    # all of them: a row `earlier` has and this study does not run
    order = [CLEAN, *(name for c in CONFOUNDS for name in _row_names(c))]
    running = {CLEAN, *(name for c in confounds for name in _row_names(c))}
    # each eval of this study, by folder: a row judged again after its next training takes
    # its earlier seeds' evals from here
    evaluated: dict[Path, EvalSummary] = {}
    # each training's handle, by row and seed: one taken from `earlier` without its per-prompt
    # values is judged again through it when a comparison needs them
    handles: dict[tuple[str, int], Callable[[], tuple[list[SetScore], float]]] = {}
    # those judged again, by row, prompt set and seed: the rows written carry them from then on
    rejudged: dict[tuple[str, str, int | None], SetScore] = {}

    def filled(row: ConfoundRow) -> ConfoundRow:
        if row.overall is None:  # a skipped row
            return row
        return row.with_evaluations(
            [rejudged.get((row.confound, s.prompts, s.seed), s) for s in row.evaluations()]
        )

    def in_order() -> list[ConfoundRow]:
        rows = sorted(made_rows.values(), key=lambda row: order.index(row.confound))
        return [filled(row) for row in rows]

    def values(row: str, score: SetScore) -> list[PromptValue]:
        """A training's per-prompt values; one `earlier` recorded without them (a version 2
        row) is judged again here, and must score what it recorded."""
        if score.values:
            return list(score.values)
        if score.eval_dir is not None and eval_files(score.eval_dir)["summary"].is_file():
            return baseline_values(score.eval_dir)
        assert score.seed is not None  # rows this study wrote, or took by seed and key
        if (row, score.prompts, score.seed) not in rejudged:
            for again in handles[(row, score.seed)]()[0]:
                rejudged[(row, again.prompts, score.seed)] = again
        again = rejudged[(row, score.prompts, score.seed)]
        if (again.key, again.overall) != (score.key, score.overall):
            raise Fault(
                f"{earlier.source if earlier else 'the earlier study'}: the {row} row's seed "
                f"{score.seed} on {score.prompts} recorded model {score.key} scoring "
                f"{score.overall}; judged again here, model {again.key} scores "
                f"{again.overall}: that record is not of this model; run without --resume-from"
            )
        return list(again.values)

    def against(row: ConfoundRow, other: ConfoundRow, *, retrains: bool) -> tuple[Comparison, ...]:
        return compared_with(
            row, other, categories, retrains=retrains, earlier=earlier, values=values
        )

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
    ) -> dict[int, Training]:
        return {seed: Training(seeded(row, seed), found, where(seed), log) for seed in trainings}

    def trained_up_to(
        row: Experiment,
        found: list[Finding],
        where: Callable[[int], Workspace],
        rows_of: Callable[[dict[int, Training]], list[ConfoundRow]],
    ) -> Callable[[int], tuple[list[ConfoundRow], bool]]:
        """For a row that retrains: given N, the rows `rows_of` makes of its first N seeds'
        models (each trained once), and whether the last of them (the confound's) is decided
        on every prompt set."""
        models: dict[int, Training] = {}

        def up_to(count: int) -> tuple[list[ConfoundRow], bool]:
            for seed in trainings[:count]:
                if seed not in models:
                    models[seed] = Training(seeded(row, seed), found, where(seed), log)
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
        earlier=earlier,
        handles=handles,
        log=log,
    )
    done(clean_row)
    if earlier is not None:
        # (a row of a confound no longer in the registry has no place in the rows)
        done(*(row for row in earlier.carried(clean_row, running, log) if row.confound in order))
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
                models: dict[int, Training],
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
                    earlier=earlier,
                    handles=handles,
                    log=log,
                )
                control = dataclasses.replace(
                    control,
                    comparisons=against(control, clean_row, retrains=True),
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
                    earlier=earlier,
                    handles=handles,
                    log=log,
                )
                compared = against(row, control, retrains=False)
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
            models: dict[int, Training],
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
                earlier=earlier,
                handles=handles,
                log=log,
            )
            compared = against(row, clean_row, retrains=confound.retrains)
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


def _row_names(confound: Confound) -> tuple[str, str]:
    """The rows a confound may write, in the order shown: its agreeing control (a row judged
    twice), then its own."""
    return (f"{confound.name}-{AGREEING}", confound.name)


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
    row: ConfoundRow,
    other: ConfoundRow,
    categories: Sequence[str],
    *,
    retrains: bool,
    values: Callable[[str, SetScore], list[PromptValue]],
    earlier: Earlier | None = None,
) -> tuple[Comparison, ...]:
    """The row against `other` (the clean row, or a judged-twice row's control) on each
    prompt set both were judged on, from each evaluation's per-prompt values (`values`, given
    the row's name); `earlier`'s comparison where it was made of the same evaluations."""
    out = []
    for prompts in dict.fromkeys(s.prompts for s in row.evaluations()):
        other_on = other.on(prompts)
        if not other_on:
            continue
        made = earlier.comparison(row, other, prompts) if earlier is not None else None
        seeds = {s.seed for s in row.on(prompts)}  # the other's values on those seeds only
        out.append(
            made
            or compare(
                prompts,
                {s.seed: values(row.confound, s) for s in row.on(prompts) if s.seed is not None},
                {
                    s.seed: values(other.confound, s)
                    for s in other_on
                    if s.seed is not None and s.seed in seeds
                },
                categories,
                retrains=retrains,
                clean_overall=[s.overall for s in other_on],
                against=other.confound,
            )
        )
    return tuple(out)


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


class Training:
    """One training of a row (one seed), built when first needed: a training an earlier
    study judged (`Earlier`) is taken from its rows by its build key instead, and never built."""

    def __init__(
        self, experiment: Experiment, findings: list[Finding], workspace: Workspace, log: Log
    ) -> None:
        self.experiment = experiment
        self.seed = experiment.train.seed
        self._findings = findings
        self._workspace = workspace
        self._log = log
        self._built: BuildResult | None = None
        self._key = ""

    @property
    def key(self) -> str:
        """The build key, computed (as the build computes it) without building."""
        if self._built is not None:
            return self._built.key
        if not self._key:
            self._key = plan(self.experiment, workspace=self._workspace).key
        return self._key

    def built(self) -> BuildResult:
        if self._built is None:
            self._built = _built(self.experiment, self._findings, self._workspace, self._log)
        return self._built


class Earlier:
    """The rows of a study run before, maybe on another machine (`--resume-from`: the file
    benchmarks/confound_table.py --take checks in): each training they judged, by row, seed
    and the build key of its model, so a study continued here trains only what they lack."""

    def __init__(self, rows: Sequence[ConfoundRow], source: Path) -> None:
        self.rows = {row.confound: row for row in rows}
        self.source = source
        self.taken: set[tuple[str, int, str]] = set()
        """(row, seed, key) of each training taken so far (said once)."""

    def scores(
        self, row: str, seed: int, key: str, sets: Sequence[str]
    ) -> tuple[SetScore, ...] | None:
        """The model `key`'s evaluations on every set in `sets`, as `row` recorded them; None
        unless it recorded that model (not merely that seed) on each of them."""
        before = self.rows.get(row)
        if before is None or not key:
            return None
        found = {s.prompts: s for s in before.evaluations() if s.seed == seed and s.key == key}
        if not all(p in found for p in sets):
            return None
        return tuple(found[p] for p in sets)

    def comparison(self, row: ConfoundRow, other: ConfoundRow, prompts: str) -> Comparison | None:
        """The earlier row's comparison on `prompts` when it was made of the very evaluations
        `row` and `other` hold there now (each seed's model and score): a comparison is a
        function of them alone, so it is taken as made, and a training recorded without its
        per-prompt values (a version 2 row) is not judged again only to repeat it."""
        before, before_other = self.rows.get(row.confound), self.rows.get(other.confound)
        if before is None or before_other is None:
            return None
        made = before.compared_on(prompts)
        if made is None or made.against != other.confound:
            return None
        same = all(
            _judged_as(now, prompts) == _judged_as(then, prompts) and _judged_as(now, prompts)
            for now, then in ((row, before), (other, before_other))
        )
        return made if same else None

    def check_seeds(self, trainings: Sequence[int]) -> None:
        """A study continued with fewer trainings than the earlier clean row has would drop
        some of them from the rows it writes: bad input, saying how many to ask for."""
        recorded = sorted({s.seed for s in self.rows[CLEAN].evaluations() if s.seed is not None})
        if len(recorded) > len(trainings):
            raise BadInput(
                f"--seeds {len(trainings)}: the {CLEAN} row of --resume-from {self.source} has "
                f"{len(recorded)} trainings (seeds {', '.join(map(str, recorded))}); pass "
                f"--seeds {len(recorded)} or more, or the rows this study writes would lose "
                "them"
            )

    def carried(self, clean: ConfoundRow, running: Collection[str], log: Log) -> list[ConfoundRow]:
        """The earlier rows this study does not run (`--only` leaves them out), kept as they
        were, so that rows written after a partial study still hold every row: each was
        compared with the clean row then, so they are kept only when this study's clean row
        is judged as that one was (each training's seed, model and score on every prompt
        set it was judged on); otherwise none is kept, and the log names them."""
        left = [row for name, row in self.rows.items() if name not in running]
        if not left:
            return []
        before = self.rows[CLEAN]
        sets = dict.fromkeys(s.prompts for s in before.evaluations())
        names = ", ".join(row.confound for row in left)
        now = {p: _judged_as(clean, p) for p in sets}
        if all(now[p] and now[p] == _judged_as(before, p) for p in sets):
            log(f"[study] {names}: kept as {self.source} has them (not run: --only)")
            return left
        log(
            f"[study] {names}: not kept from {self.source}: its {CLEAN} row was judged on other "
            f"models or prompt sets than this study's; add them to --only to judge them again"
        )
        return []


def _judged_as(row: ConfoundRow, prompts: str) -> list[tuple[int | None, str, float]]:
    """What a row's comparison on `prompts` is made of: each seed's model and score ([] when
    a model has no key: nothing to match it by)."""
    judged = [(s.seed, s.key, s.overall) for s in row.on(prompts)]
    return judged if all(key for _, key, _ in judged) else []


def read_earlier(path: Path, experiment: Experiment) -> Earlier:
    """`--resume-from PATH`: the rows of an earlier study of this experiment; a file that is
    not one is bad input naming it."""
    if not path.is_file():
        raise BadInput(
            f"--resume-from {path}: no such file (a study's confounds.json, e.g. "
            f"benchmarks/results/confounds-{experiment.name}.json)"
        )
    rows = read_rows(path)
    if not any(row.confound == CLEAN for row in rows):
        raise BadInput(f"--resume-from {path}: no {CLEAN!r} row: not a study's confounds.json")
    return Earlier(rows, path)


def _judged(
    name: str,
    injects: str,
    experiment: Experiment,
    findings: Sequence[Finding],
    models: dict[int, Training],
    seed_workspace: Callable[[int], Workspace],
    sets: Sequence[str],
    *,
    trained: bool,
    memo: dict[Path, EvalSummary],
    earlier: Earlier | None,
    handles: dict[tuple[str, int], Callable[[], tuple[list[SetScore], float]]],
    log: Log,
) -> ConfoundRow:
    """The row of its trainings (one per seed, the experiment's own first): each judged on
    each prompt set (evals reused when complete; a training `earlier` judged, taken from it),
    its losses and times. The experiment's own set and seed are the row's headline; the rest
    its `scores`. `handles` gets, per seed, how to judge that training here (a training taken
    without its per-prompt values is judged again when a comparison needs them)."""
    failed = tuple(dict.fromkeys(f.check for f in findings if f.failed))
    scores: list[SetScore] = []
    seconds = 0.0
    taken: set[int] = set()
    for seed, training in models.items():
        judge = functools.partial(
            _judge_training,
            experiment,
            training,
            seed_workspace(seed),
            sets,
            failed,
            trained,
            memo,
            log,
        )
        handles[(name, seed)] = judge
        recorded = earlier.scores(name, seed, training.key, sets) if earlier else None
        if earlier is not None and recorded is not None:
            if (name, seed, training.key) not in earlier.taken:
                earlier.taken.add((name, seed, training.key))
                said = f"seed {seed} (model {training.key}) taken from {earlier.source}"
                log(f"[study] {name}: {said}")
            scores += recorded
            taken.add(seed)
            continue
        judged, took = judge()
        scores += judged
        seconds += took
    before = earlier.rows.get(name) if earlier is not None and taken else None
    seconds += before.seconds if before is not None else 0.0
    first = next(iter(models.values()))
    if first.seed in taken and before is not None:
        train_loss, val_loss, model = before.train_loss, before.val_loss, None
    else:
        train = first.built().record.stages.train
        train_loss = train.train_loss if train is not None else None
        val_loss = train.val_loss if train is not None else None
        model = first.built().quantized
    return ConfoundRow(
        confound=name,
        injects=injects,
        preflight_failed=failed,
        train_loss=train_loss,
        val_loss=val_loss,
        seconds=round(seconds, 1),
        model=model,
    ).with_evaluations(scores)


def _judge_training(
    experiment: Experiment,
    training: Training,
    row_ws: Workspace,
    sets: Sequence[str],
    failed: Sequence[str],
    trained: bool,
    memo: dict[Path, EvalSummary],
    log: Log,
) -> tuple[list[SetScore], float]:
    """One training's model judged on each prompt set, and the seconds that took (with its
    build's when the row `trained` it)."""
    built = training.built()
    trained_with = seeded(experiment, training.seed)
    run_dir = row_ws.runs(experiment.name) / built.key  # keyed by the model: no stale answers
    seconds = (built.record.seconds or 0.0) if trained else 0.0
    scores = []
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
                seed=training.seed,
                overall=round(decision[OVERALL].mean, 4),
                categories={k: round(v.mean, 4) for k, v in decision.items() if k != OVERALL},
                eval_dir=folder,
                key=built.key,
                values=tuple(baseline_values(folder)),
            )
        )
    return scores, seconds


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
        f"; {c.prompts}: {c.mean:+.3f} vs {c.against}, {c.decision}" for c in row.comparisons
    )
    return f"overall {overall}; preflight failed: {failed}{against}; {row.seconds / 60:.1f} min"
