"""What ignoring a preflight check cost: the confound study's measurement, per check.

A failed check says what is wrong with an experiment; the confound study (pipeline.study)
says what that did to a model trained and judged anyway. It injects each confound alone into
the clean experiment, trains and judges the row, and compares it with the clean row prompt by
prompt. Each confound is meant to fail one check, so the study's comparisons are, per check,
the measured cost of building past it. The study writes them to
`reports/<experiment>/check_costs.json`; the project ships its own study of its routing model
as `fixtures/check_costs.json`. A report shows the experiment's own measurement where its
workspace has one, else the shipped one, and names which experiment measured it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.records import Record
from pipeline.core.workspace import Workspace
from pipeline.definitions.tables import ROOT

SHIPPED_COSTS = ROOT / "fixtures" / "check_costs.json"
"""The confound study of the project's routing model, as the study wrote it."""


@dataclass(frozen=True)
class CheckCost:
    """One confound row against the clean row on one prompt set (row - clean, overall; a row
    judged twice, as the thinking row on SmolLM2, against its own model under an eval that
    agrees with its training: pipeline.study)."""

    check: str
    """The preflight check the confound fails (the registry's name)."""
    confound: str
    injects: str
    """What the row changed, in a line."""
    prompts: str
    """The prompt set both rows were judged on."""
    scored: int
    """Prompts both rows scored."""
    difference: float
    """Overall score, row - clean (or its agreeing control), in 0..1."""
    lo: float
    hi: float
    """The paired bootstrap 95% interval of `difference`."""
    decision: str
    """The study's word: decided (and how), or not, with what would decide."""


@dataclass(frozen=True, kw_only=True)
class CheckCosts(Record):
    """check_costs.json: the study's costs of one experiment, with the command that made them."""

    KIND = "check-costs"
    VERSION = 1

    experiment: str
    command: str
    """The command that measured them (the study's, as run)."""
    written: str
    """When the study wrote them (ISO 8601, UTC)."""
    trainings: int
    """Training seeds per row."""
    costs: tuple[CheckCost, ...] = ()


def measured_costs(
    experiment: str, workspace: Workspace, shipped: Path | None = None
) -> tuple[CheckCosts, Path] | None:
    """The experiment's own study costs in the workspace, else the shipped study's
    (`shipped`, SHIPPED_COSTS by default), with the file read (None: neither exists). A file
    that is not such a record is bad input naming it."""
    for path in (workspace.check_costs(experiment), shipped or SHIPPED_COSTS):
        if path.is_file():
            return CheckCosts.read(path), path
    return None
