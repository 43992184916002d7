"""reports/NAME/confounds.md: the study's rows as one table, which rows collapsed, and each
row against the clean row per prompt set (the comparisons the rows carry: a renderer only)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pipeline.definitions.experiment import OVERALL
from pipeline.eval.metrics import PROMPTS_NEEDED_CAP, TRAININGS_NEEDED_CAP
from pipeline.study.records import CLEAN, Comparison, ConfoundRow

COLLAPSE = 0.5
"""A row whose overall is at most this share of the clean row's is called out under the table."""


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def collapsed(row: ConfoundRow, clean: ConfoundRow | None) -> bool:
    """The row's overall is at most half the clean row's (never for a clean overall of 0)."""
    if clean is None or row is clean or not clean.overall or row.overall is None:
        return False
    return row.overall <= COLLAPSE * clean.overall


def markdown(experiment: str, rows: Sequence[ConfoundRow]) -> str:
    clean = next((r for r in rows if r.confound == CLEAN), None)
    categories = list(dict.fromkeys(c for r in rows for c in r.categories))
    head = ["confound", "preflight failed", "overall", *categories]
    head += ["train loss", "val loss", "minutes"]
    headline = next((r for r in rows if r.prompts), None)
    lines = [
        f"# Confound study: {experiment}",
        "",
        "Each row trains the experiment with one confound injected (the clean row: none), "
        "builds it whatever the preflight says and scores the eval at the decision "
        "temperature"
        + (
            f" (here: prompts {headline.prompts}, the model of [train] seed {headline.seed}; "
            "minutes: every training and eval of the row)."
            if headline is not None
            else "."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for row in rows:
        if row.skipped:
            cells = [row.confound, f"skipped: {row.skipped}", *("" for _ in head[2:])]
        else:
            overall = _score(row.overall) + (" (collapsed)" if collapsed(row, clean) else "")
            cells = [
                row.confound,
                ", ".join(row.preflight_failed) or "none",
                overall,
                *(_score(row.categories.get(c)) for c in categories),
                _loss(row.train_loss),
                _loss(row.val_loss),
                f"{row.seconds / 60:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"- **{r.confound}**: overall {_score(r.overall)} is at most half the clean row's "
        f"{_score(clean.overall)}."
        for r in rows
        if clean is not None and collapsed(r, clean)
    ]
    injected = [f"- **{r.confound}**: {r.injects}" for r in rows if r.injects]
    if notes:
        lines += ["", *notes]
    lines += against_clean(rows)
    decide_on = summary_set(rows)
    if decide_on is not None:
        lines += ["", f"## In one table (decided on {decide_on})", "", *summary(rows, decide_on)]
    if injected:
        lines += ["", "What each row injects:", "", *injected]
    return "\n".join(lines) + "\n"


# --- the study in one table ---------------------------------------------------------------------

SUMMARY_HEAD = (
    "confound",
    "preflight fails",
    "trainings",
    "overall, {sets}",
    "row - clean on {decide} [95%]",
    "decision on {decide}",
    "minutes",
)


def summary(rows: Sequence[ConfoundRow], decide_on: str) -> list[str]:
    """One line per row: the checks it fails, its trainings, its overall on each prompt set
    (the mean over its seeds), its difference from the clean row on `decide_on` (by trainings
    where the row retrains, else by prompts) and the decision in words: the README's table."""
    sets = list(dict.fromkeys(s.prompts for r in rows for s in r.evaluations()))
    head = [h.format(sets=" / ".join(sets), decide=decide_on) for h in SUMMARY_HEAD]
    lines = [_cells(head), "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        if row.skipped:
            lines.append(_cells([row.confound, f"skipped: {row.skipped}", *("" for _ in head[2:])]))
            continue
        c = row.compared_on(decide_on)
        trainings = str(len({s.seed for s in row.evaluations()}))
        if c is not None and not c.retrains:  # it judges another row's models again
            trainings = f"0: {c.against}'s models"
        cells = [
            row.confound if c is None else _label(row, c),
            ", ".join(row.preflight_failed) or "none",
            trainings,
            " / ".join(_mean(row, prompts) for prompts in sets),
            "" if c is None else _summary_difference(c),
            "" if c is None else said(c),
            f"{row.seconds / 60:.0f}",
        ]
        lines.append(_cells(cells))
    return lines


def summary_set(rows: Sequence[ConfoundRow]) -> str | None:
    """The prompt set the one-table summary decides on: the last one a row is compared on
    (`--also-prompts` sets come after the experiment's own, and are the larger); None when no
    row carries a comparison."""
    compared = [c.prompts for r in rows for c in r.comparisons]
    return compared[-1] if compared else None


def _mean(row: ConfoundRow, prompts: str) -> str:
    """The mean over the row's seeds on the set ("-" where it was not judged on it)."""
    scores = [s.overall for s in row.on(prompts)]
    return _score(statistics.fmean(scores)) if scores else "-"


def _summary_difference(c: Comparison) -> str:
    """By trainings where the row retrains and its interval exists, else by prompts."""
    if c.retrains and c.lo is not None and c.hi is not None:
        return _difference(c.mean, c.lo, c.hi) + " by trainings"
    pooled = c.by_prompts[OVERALL]
    return _difference(pooled.difference, pooled.lo, pooled.hi) + " by prompts"


# --- against the clean row ----------------------------------------------------------------------

AGAINST_CLEAN = (
    "Row - clean on each prompt set. By prompts: each prompt's value averaged over the seeds' "
    "models, the mean difference over the prompts both scored, its paired bootstrap 95% "
    "interval and sign-test p. By trainings: the mean over seeds of each seed's difference, "
    "with its 95% t interval. Two trainings of one recipe differ by themselves, so a row that "
    "retrains is decided by trainings only: its seeds' interval and its prompts' both exclude "
    "0, the same way; a row that only changes eval settings judges the clean models, so its "
    "prompts decide it. A row judged twice (thinking, on a base without a think block) trains "
    "its own model and is compared with that model under an eval that agrees with its "
    "training (its `-agreeing` row), so its prompts decide it too."
)


def against_clean(rows: Sequence[ConfoundRow]) -> list[str]:
    """Per prompt set: each row's overall (the mean over its seeds), its difference from the
    clean row by prompts and by trainings, and its decision with what would decide; no lines
    when no row carries a comparison."""
    clean = next((r for r in rows if r.confound == CLEAN), None)
    compared = [r for r in rows if r.comparisons]
    if clean is None or not compared:
        return []
    lines = ["", "## Against the clean row", "", AGAINST_CLEAN]
    sets = dict.fromkeys(s.prompts for r in (clean, *compared) for s in r.evaluations())
    for prompts in sets:
        against = [(r, c) for r in compared if (c := r.compared_on(prompts)) is not None]
        if not against:
            continue
        n = against[0][1].by_prompts[OVERALL].n
        own = " (the experiment's)" if prompts == clean.prompts else ""
        head = ["row", "overall", "by prompts [95%]", "p", "prompts", "by trainings [95%]"]
        head.append("decision")
        lines += ["", f"### Prompts: {prompts}{own}, {n} compared", ""]
        lines += [_cells(head), "|" + "|".join("---" for _ in head) + "|"]
        lines.append(_cells([CLEAN, _overall(clean, prompts), *("" for _ in head[2:])]))
        for row, c in against:
            pooled = c.by_prompts[OVERALL]
            lines.append(
                _cells(
                    [
                        _label(row, c),
                        _overall(row, prompts),
                        _difference(pooled.difference, pooled.lo, pooled.hi),
                        _p(pooled.p_value),
                        "decided" if c.prompts_decided else _prompts_would(c),
                        _by_trainings(c),
                        said(c),
                    ]
                )
            )
        categories = list(
            dict.fromkeys(k for _, c in against for k in c.by_prompts if k != OVERALL)
        )
        lines += ["", "Per category, by prompts (row - clean [95%]):", ""]
        lines += [
            _cells(["row", *categories]),
            "|" + "|".join("---" for _ in range(len(categories) + 1)) + "|",
        ]
        for row, c in against:
            cells = [c.by_prompts.get(k) for k in categories]
            shown = ["-" if p is None else _difference(p.difference, p.lo, p.hi) for p in cells]
            lines.append(_cells([_label(row, c), *shown]))
    return lines


def _label(row: ConfoundRow, c: Comparison) -> str:
    """The row's name, and what it was compared with when that is not the clean row."""
    return row.confound if c.against == CLEAN else f"{row.confound} (against {c.against})"


def said(c: Comparison) -> str:
    """The decision in words, with what would decide a row that is not decided."""
    if c.decision == "decided by prompts":
        return "decided by prompts"
    if c.decision == "decided by trainings" and c.spread_from == "clean":
        return "decided by trainings (one, at the spread of the clean row's seeds)"
    if c.decision == "decided by trainings":
        return f"decided by trainings ({len(c.seeds)} seeds)"
    if not c.retrains:
        return f"not decided by prompts: {_prompts_would(c)}"
    if c.seeds_agree and c.prompts_decided:
        return f"not decided: {_trainings(c)} and the prompts point apart"
    if c.seeds_agree:
        agree = "agrees" if len(c.seeds) == 1 else "agree"
        return f"not decided: {_trainings(c)} {agree}, not the prompts: {_prompts_would(c)}"
    if len(c.seeds) > 1:
        return f"not decided by {len(c.seeds)} trainings: {_trainings_would(c)}"
    if c.spread is not None:
        return f"not decided: one training; {_trainings_would(c)} (spread: the clean row's seeds)"
    return (
        "not decided: one training per row cannot separate the confound from seed noise; "
        "`--seeds 3` trains the clean row three times and each row until it is decided (at "
        "most three)"
    )


def _trainings(c: Comparison) -> str:
    """Whose interval it is: the row's seeds', or one training's at the clean row's spread."""
    return "the one training" if len(c.seeds) == 1 else f"the {len(c.seeds)} seeds"


def _prompts_would(c: Comparison) -> str:
    pooled = c.by_prompts[OVERALL]
    if c.prompts_needed is not None:
        return f"about {c.prompts_needed} prompts would decide"
    if pooled.better == pooled.worse:
        return "no number of prompts would (as many better as worse)"
    return f"more than {PROMPTS_NEEDED_CAP} prompts would decide"


def _trainings_would(c: Comparison) -> str:
    if c.trainings_needed is not None:
        return f"about {c.trainings_needed} seeds per row would decide"
    if c.spread is None:
        return "no estimate of the spread between trainings"
    if math.isclose(c.mean, 0.0, abs_tol=1e-12):
        return "no number of seeds would (mean difference 0)"
    return f"more than {TRAININGS_NEEDED_CAP} seeds would decide"


def _by_trainings(c: Comparison) -> str:
    if c.lo is None or c.hi is None:
        return "one training"
    if len(c.seeds) == 1:
        return _difference(c.mean, c.lo, c.hi) + " (one training, the clean row's spread)"
    return _difference(c.mean, c.lo, c.hi) + f" ({len(c.seeds)} seeds)"


def _overall(row: ConfoundRow, prompts: str) -> str:
    """The mean over the row's seeds on the set; each seed's after it when there are several."""
    scores = [s.overall for s in row.on(prompts)]
    mean = _mean(row, prompts)
    return mean if len(scores) <= 1 else f"{mean} ({', '.join(_score(s) for s in scores)})"


def _difference(value: float, lo: float, hi: float) -> str:
    return f"{value:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _cells(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
