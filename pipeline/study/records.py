"""The study's rows: frozen, versioned records, and reports/NAME/confounds.json (a list of them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from pipeline.core import io
from pipeline.core.records import Record, RecordError
from pipeline.eval.metrics import PairedRow, PromptValue

CLEAN = "clean"
"""The row of the experiment as it is: every other row is compared with it (but a judged-twice
row, compared with its control)."""
AGREEING = "agreeing"
"""The suffix of a judged-twice row's control (`thinking-agreeing`): the row's own model under
an eval that agrees with its training."""

Decision = Literal["decided by prompts", "decided by trainings", "not decided"]
"""A row's word against the clean row on one prompt set (pipeline.study.decide says when)."""


@dataclass(frozen=True)
class SetScore:
    """One model of a row judged on one prompt set, at the decision temperature."""

    prompts: str
    """The prompt set's name (fixtures/prompts/NAME.toml; "" in a version 1 row)."""
    seed: int | None
    """The [train] seed of the model judged (None in a version 1 row)."""
    overall: float
    categories: dict[str, float] = field(default_factory=dict)
    eval_dir: Path | None = None
    key: str = ""
    """The build key of the model judged ("" before version 3)."""
    values: tuple[PromptValue, ...] = ()
    """Each prompt's value at the decision temperature (pipeline.eval.run.baseline_values):
    what compares it with another row, kept so that a study continued on another machine
    (--resume-from) compares without judging it again; () before version 3."""


@dataclass(frozen=True)
class Comparison:
    """A row against the clean row on one prompt set (row - clean), by prompts and by
    trainings; pipeline.study.decide.compare makes it."""

    prompts: str
    """The prompt set's name."""
    retrains: bool
    """The row trains its own model(s); False: it judges the clean row's models again."""
    seeds: tuple[int, ...]
    """The trainings compared, each with the clean row's training of the same seed."""
    differences: tuple[float, ...]
    """Overall row - clean, one per seed (on the prompts both scored)."""
    by_prompts: dict[str, PairedRow]
    """Per category and overall, each prompt's value averaged over the seeds' models, row
    against clean: the mean difference, its paired bootstrap 95% interval, the sign test."""
    prompts_decided: bool
    """by_prompts' overall interval excludes 0."""
    prompts_needed: int | None
    """Not decided by prompts: the prompts that would decide at the observed shares of better
    and worse prompts (None: no number would, or decided)."""
    mean: float
    """The mean of `differences`."""
    lo: float | None
    """The 95% t interval of the mean over seeds; with one training, of its difference at the
    clean row's spread (`spread_from` "clean"); None without a spread."""
    hi: float | None
    spread: float | None
    """The standard deviation of one training's difference: of `differences` with two or more
    seeds, else sqrt(2) x the clean row's across its seeds (a difference of two trainings);
    None: no estimate (one training each)."""
    spread_from: Literal["row", "clean", ""]
    seeds_agree: bool
    """The trainings' t interval (`lo`, `hi`) excludes 0."""
    trainings_decided: bool
    """The seeds agree and the prompts decide, the same way (pipeline.study.decide)."""
    trainings_needed: int | None
    """The seeds do not agree: the trainings per row that would make their interval exclude 0
    at `mean` and `spread` (None: no estimate of the spread, no number would, or they agree)."""
    decision: Decision
    against: str = CLEAN
    """The row compared with: the clean row, or a judged-twice row's control (same model)."""


@dataclass(frozen=True, kw_only=True)
class ConfoundRow(Record):
    """One row of the study: what was injected, what the preflight said, what the model did."""

    KIND: ClassVar[str] = "confound-row"
    VERSION: ClassVar[int] = 3
    """2: prompts, seed, scores and comparisons (a version 1 row reads with none of them);
    3: each evaluation's build key and per-prompt values (a version 2 row reads without)."""

    confound: str
    """`clean`, or a confound's name (pipeline.study.confounds.CONFOUNDS)."""
    injects: str = ""
    preflight_failed: tuple[str, ...] = ()
    """The preflight checks that failed on the row's experiment and data, in registry order."""
    overall: float | None = None
    """The decision temperature's overall score on the experiment's prompt set, of the first
    seed's model; None for a skipped row."""
    categories: dict[str, float] = field(default_factory=dict)
    """Each category's score at the decision temperature (overall apart), as `overall`."""
    train_loss: float | None = None
    """The training loss mlx_lm reported last (the first seed's training)."""
    val_loss: float | None = None
    """The validation loss at the end of training (the first seed's)."""
    seconds: float = 0.0
    """Wall time of the row as recorded: its builds (when it trained) plus its evals (and,
    continued from an earlier study's rows, that row's seconds)."""
    skipped: str = ""
    """Why the row did not run ("" when it did)."""
    model: Path | None = None
    """The quantized model judged (the first seed's)."""
    eval_dir: Path | None = None
    """The run folder whose eval/ holds the answers and summary `overall` scores."""
    prompts: str = ""
    """The experiment's prompt set: the one `overall` scores."""
    seed: int | None = None
    """The [train] seed of the model `overall` scores."""
    key: str = ""
    """The build key of the model `overall` scores (SetScore.key)."""
    values: tuple[PromptValue, ...] = ()
    """Per prompt, what `overall` averages (SetScore.values)."""
    scores: tuple[SetScore, ...] = ()
    """The row's other evaluations: the other prompt sets (--also-prompts) and the other
    seeds' models (--seeds)."""
    comparisons: tuple[Comparison, ...] = ()
    """Against the clean row, one per prompt set (none for the clean row or a skipped one)."""

    def evaluations(self) -> tuple[SetScore, ...]:
        """Every evaluation of the row: the one `overall` scores first, then `scores`."""
        if self.overall is None:
            return self.scores
        first = SetScore(
            self.prompts,
            self.seed,
            self.overall,
            self.categories,
            self.eval_dir,
            self.key,
            self.values,
        )
        return (first, *self.scores)

    def with_evaluations(self, evaluations: Sequence[SetScore]) -> ConfoundRow:
        """The row judged as `evaluations` say (the first its headline, as `evaluations()`
        gives them back)."""
        head, *rest = evaluations
        return dataclasses.replace(
            self,
            overall=head.overall,
            categories=head.categories,
            eval_dir=head.eval_dir,
            prompts=head.prompts,
            seed=head.seed,
            key=head.key,
            values=head.values,
            scores=tuple(rest),
        )

    def on(self, prompts: str) -> tuple[SetScore, ...]:
        """The row's evaluations on one prompt set, one per seed."""
        return tuple(s for s in self.evaluations() if s.prompts == prompts)

    def compared_on(self, prompts: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.prompts == prompts), None)


def write_rows(rows: Sequence[ConfoundRow], path: Path) -> Path:
    return io.write_json(path, [row.to_json() for row in rows])


def read_rows(path: Path) -> list[ConfoundRow]:
    """confounds.json; a file that is not a list of rows is bad input naming it."""
    raw = io.read_json(path)
    if not isinstance(raw, list):
        raise RecordError(f"{path}: not a list of confound rows")
    return [ConfoundRow.from_json(item, f"{path}[{i}]") for i, item in enumerate(raw)]
