"""pipeline.preflight.costs: which measurement a report links to, and bad files named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.records import RecordError
from pipeline.core.workspace import Workspace
from pipeline.preflight.costs import CheckCost, CheckCosts, measured_costs


def _costs(experiment: str, *checks: str) -> CheckCosts:
    rows = tuple(CheckCost(c, c, "", "seed", 27, -0.5, -0.6, -0.4, "decided") for c in checks)
    return CheckCosts(experiment=experiment, command="", written="", trainings=1, costs=rows)


def test_the_experiments_own_study_comes_before_the_shipped_one(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "work")
    shipped = _costs("smol-route", "masking", "thinking").write(tmp_path / "shipped.json")
    assert measured_costs("tiny", workspace, shipped) == (CheckCosts.read(shipped), shipped)
    own = _costs("tiny", "masking").write(workspace.check_costs("tiny"))
    found = measured_costs("tiny", workspace, shipped)
    assert found is not None and found[1] == own
    assert [c.check for c in found[0].costs] == ["masking"]  # the own study's, not the shipped
    assert measured_costs("tiny", Workspace(tmp_path / "none"), tmp_path / "absent.json") is None


def test_a_file_that_is_not_a_costs_record_is_bad_input_naming_it(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    path = workspace.check_costs("tiny")
    path.parent.mkdir(parents=True)
    path.write_text('{"kind": "preflight", "version": 1}')
    with pytest.raises(RecordError, match=str(path)):
        measured_costs("tiny", workspace, tmp_path / "absent.json")
