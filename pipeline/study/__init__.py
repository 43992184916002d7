"""Studies: train an experiment under controlled changes and compare the models.

    confounds  the confound study: clean, then one row per confound (CONFOUNDS), run_study
    inject     each confound's injection into a copy of the clean data or settings
    decide     a row against the clean row on one prompt set: by prompts, by trainings
    records    ConfoundRow (SetScore, Comparison), reports/NAME/confounds.json
    table      reports/NAME/confounds.md

The command line (`python -m pipeline study confounds ...`) is pipeline.cli.study.
"""

from pipeline.study.confounds import (
    BY_NAME,
    CONFOUNDS,
    Confound,
    check_seeds,
    chosen,
    named_prompt_sets,
    run_study,
)
from pipeline.study.records import CLEAN, Comparison, ConfoundRow, SetScore, read_rows, write_rows

STUDIES = ("confounds",)
"""The studies `python -m pipeline study NAME` runs."""

__all__ = [
    "BY_NAME",
    "CLEAN",
    "CONFOUNDS",
    "STUDIES",
    "Comparison",
    "Confound",
    "ConfoundRow",
    "SetScore",
    "check_seeds",
    "chosen",
    "named_prompt_sets",
    "read_rows",
    "run_study",
    "write_rows",
]
