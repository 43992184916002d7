"""The study's rows: frozen, versioned records, and reports/NAME/confounds.json (a list of them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pipeline.core import io
from pipeline.core.records import Record, RecordError

CLEAN = "clean"
"""The row of the experiment as it is: every other row is compared with it."""


@dataclass(frozen=True, kw_only=True)
class ConfoundRow(Record):
    """One row of the study: what was injected, what the preflight said, what the model did."""

    KIND: ClassVar[str] = "confound-row"
    VERSION: ClassVar[int] = 1

    confound: str
    """`clean`, or a confound's name (pipeline.study.confounds.CONFOUNDS)."""
    injects: str = ""
    preflight_failed: tuple[str, ...] = ()
    """The preflight checks that failed on the row's experiment and data, in registry order."""
    overall: float | None = None
    """The decision temperature's overall score; None for a skipped row."""
    categories: dict[str, float] = field(default_factory=dict)
    """Each category's score at the decision temperature (overall apart)."""
    train_loss: float | None = None
    """The training loss mlx_lm reported last."""
    val_loss: float | None = None
    """The validation loss at the end of training."""
    seconds: float = 0.0
    """Wall time of the row as recorded: its build (when it trained a model) plus its eval."""
    skipped: str = ""
    """Why the row did not run ("" when it did)."""
    model: Path | None = None
    """The quantized model judged."""
    eval_dir: Path | None = None
    """The run folder whose eval/ holds the row's answers and summary."""


def write_rows(rows: Sequence[ConfoundRow], path: Path) -> Path:
    return io.write_json(path, [row.to_json() for row in rows])


def read_rows(path: Path) -> list[ConfoundRow]:
    """confounds.json; a file that is not a list of rows is bad input naming it."""
    raw = io.read_json(path)
    if not isinstance(raw, list):
        raise RecordError(f"{path}: not a list of confound rows")
    return [ConfoundRow.from_json(item, f"{path}[{i}]") for i, item in enumerate(raw)]
