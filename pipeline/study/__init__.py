"""Studies: train an experiment under controlled changes and compare the models.

    confounds  the confound study: clean, then one row per confound (CONFOUNDS), run_study
    inject     each confound's injection into a copy of the clean data or settings
    records    ConfoundRow, reports/NAME/confounds.json
    table      reports/NAME/confounds.md

The command line (`python -m pipeline study confounds ...`) is pipeline.cli.study.
"""

from pipeline.study.confounds import BY_NAME, CONFOUNDS, Confound, chosen, run_study
from pipeline.study.records import CLEAN, ConfoundRow, read_rows, write_rows

STUDIES = ("confounds",)
"""The studies `python -m pipeline study NAME` runs."""

__all__ = [
    "BY_NAME",
    "CLEAN",
    "CONFOUNDS",
    "STUDIES",
    "Confound",
    "ConfoundRow",
    "chosen",
    "read_rows",
    "run_study",
    "write_rows",
]
