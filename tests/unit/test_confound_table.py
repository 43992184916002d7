"""The README's confound table is the rendering of the study rows it names (benchmarks/
confound_table.py), so it cannot drift from the study."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.core.errors import EXIT_BAD_INPUT
from pipeline.core.workspace import CHECKOUT
from pipeline.eval.metrics import PromptValue
from pipeline.preflight.costs import CheckCost, CheckCosts
from pipeline.study import CLEAN, ConfoundRow, SetScore, read_rows, write_rows
from pipeline.study.decide import compare

_spec = importlib.util.spec_from_file_location(
    "confound_table", CHECKOUT / "benchmarks" / "confound_table.py"
)
assert _spec is not None and _spec.loader is not None
confound_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(confound_table)


def test_the_readmes_confound_table_is_the_rendering_of_the_rows_it_names() -> None:
    found = confound_table.readme_block((CHECKOUT / "README.md").read_text(encoding="utf-8"))
    if found is None:
        # No block yet: then no study of the routing model is checked in either, and the
        # README must not show a table of it by hand.
        assert not confound_table.ROWS.exists(), (
            f"{confound_table.ROWS} is checked in but the README has no confound table block"
        )
        return
    rows_file, table = found
    assert rows_file.is_file(), f"the README's confound table names {rows_file}, which is missing"
    assert table == confound_table.render(rows_file), (
        "README's confound table differs from its rows: python benchmarks/confound_table.py "
        "--write README.md"
    )


def test_write_puts_the_rendering_between_the_markers_and_keeps_the_rest(tmp_path: Path) -> None:
    def values(right: int) -> list[PromptValue]:
        return [PromptValue(f"p{i}", "git", 1.0 if i < right else 0.0, 1) for i in range(20)]

    compared = compare("extended", {0: values(2)}, {0: values(18)}, ["git"], retrains=True)
    rows = [
        ConfoundRow(confound=CLEAN, overall=0.9, prompts="extended", seed=0, seconds=600.0),
        ConfoundRow(
            confound="syntax",
            preflight_failed=("call-syntax",),
            overall=0.1,
            prompts="extended",
            seed=0,
            seconds=60.0,
            scores=(SetScore("seed", 0, 0.2),),
            comparisons=(compared,),
        ),
    ]
    rows_file = write_rows(rows, tmp_path / "rows.json")
    readme = tmp_path / "README.md"
    opening = (
        f"<!-- confound table: {rows_file} (python benchmarks/confound_table.py --write "
        "README.md) -->\n"
    )
    readme.write_text(f"# Title\n\n{opening}stale\n<!-- end of confound table -->\n\nAfter.\n")
    confound_table.rewrite(readme)
    text = readme.read_text()
    assert text.startswith(f"# Title\n\n{opening}| confound | preflight fails |")
    assert text.endswith("<!-- end of confound table -->\n\nAfter.\n")
    assert "stale" not in text
    assert "| syntax | call-syntax | 1 | 0.10 / 0.20 | -0.800 [" in text
    assert confound_table.readme_block(text) == (rows_file, confound_table.render(rows_file))


def test_a_missing_or_malformed_rows_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "rows.json"
    bad.write_text('{"not": "a list"}')
    for rows, said in ((tmp_path / "missing.json", "does not exist"), (bad, "not a list")):
        with pytest.raises(SystemExit) as exited:
            confound_table.main(["--rows", str(rows)])
        assert exited.value.code == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.startswith(f"error: {rows}") and said in err and err.count("\n") == 1, err


VALUES = (PromptValue("git-02", "git", 0.5, 2), PromptValue("lsp-01", "lsp", 0.0, 1))


def test_take_checks_in_a_study_without_the_paths_of_the_machine_that_ran_it(
    tmp_path: Path,
) -> None:
    reports = tmp_path / "wd" / "reports" / "smol-route"
    ran = tmp_path / "wd" / "runs"
    row = ConfoundRow(
        confound=CLEAN,
        overall=0.9,
        prompts="seed",
        seed=0,
        model=ran / "quantized",
        eval_dir=ran / "clean",
        key="k0",
        values=(PromptValue("git-01", "git", 1.0, 1),),
        scores=(
            SetScore("extended", 0, 0.8, {"git": 0.7}, ran / "clean" / "extended", "k0", VALUES),
        ),
    )
    write_rows([row], reports / "confounds.json")
    cost = CheckCost("call-syntax", "syntax", "XML calls", "extended", 224, -0.8, -0.9, -0.7, "x")
    CheckCosts(
        experiment="smol-route",
        command="python -m pipeline study confounds --workdir /tmp/wd --seeds 3 --workdir=/x",
        written="2026-12-05T00:00:00+00:00",
        trainings=3,
        costs=(cost,),
    ).write(reports / "check_costs.json")

    confound_table.take(reports, tmp_path / "rows.json", tmp_path / "costs.json")

    (taken,) = read_rows(tmp_path / "rows.json")
    assert taken == ConfoundRow(  # with what --resume-from matches and compares by
        confound=CLEAN,
        overall=0.9,
        prompts="seed",
        seed=0,
        key="k0",
        values=(PromptValue("git-01", "git", 1.0, 1),),
        scores=(SetScore("extended", 0, 0.8, {"git": 0.7}, None, "k0", VALUES),),
    )
    assert str(tmp_path) not in (tmp_path / "rows.json").read_text()
    costs = CheckCosts.read(tmp_path / "costs.json")
    assert costs.command == "python -m pipeline study confounds --seeds 3"
    assert costs.costs == (cost,)


def test_take_without_the_costs_names_them_and_checks_in_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports"
    write_rows([ConfoundRow(confound=CLEAN, overall=0.9)], reports / "confounds.json")
    rows_file = tmp_path / "rows.json"
    with pytest.raises(SystemExit) as exited:
        confound_table.main(["--take", str(reports), "--rows", str(rows_file)])
    assert exited.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {reports / 'check_costs.json'}") and err.count("\n") == 1
    assert not rows_file.exists()
