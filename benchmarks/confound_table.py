"""The README's confound table, rendered from a study's rows checked in under benchmarks/results.

    python benchmarks/confound_table.py [--rows FILE] [--take REPORTS] [--write README.md]

The study writes reports/NAME/confounds.json; the routing model's, copied to
benchmarks/results/confounds-smol-route.json, is the README's table. This prints the table
(pipeline.study.table.summary, the same one confounds.md ends with), or with --write rewrites
the block between the README's markers, which name the rows file. A test checks that the
README's block is this rendering of that file, so the table cannot drift from the study.

--take REPORTS checks in the study of the routing model that wrote REPORTS (its
reports/smol-route/ folder) first: its confounds.json becomes the rows file, without the
paths of the machine that ran it (each row carries its comparisons, so the table needs no
eval folder), and its check_costs.json becomes fixtures/check_costs.json, the costs every
report links a failed preflight check to (pipeline.preflight.costs), its command without the
--workdir that only said where the study's files went.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from pipeline.core.errors import EXIT_BAD_INPUT, BadInput  # noqa: E402
from pipeline.preflight.costs import SHIPPED_COSTS, CheckCosts  # noqa: E402
from pipeline.study import read_rows, write_rows  # noqa: E402
from pipeline.study.table import summary, summary_set  # noqa: E402

ROWS = CHECKOUT / "benchmarks" / "results" / "confounds-smol-route.json"
OPEN = "<!-- confound table: {rows} (python benchmarks/confound_table.py --write README.md) -->"
CLOSE = "<!-- end of confound table -->"
"""The README's two marker lines; the opening one names the rows file the table renders."""
BLOCK = re.compile(
    re.escape(OPEN).replace(re.escape("{rows}"), r"(?P<rows>\S+)")
    + r"\n(?P<table>.*?)"
    + re.escape(CLOSE),
    re.DOTALL,
)


def render(rows_file: Path) -> str:
    """The table of the study in `rows_file`, decided on its last compared prompt set."""
    rows = read_rows(rows_file)
    decide_on = summary_set(rows)
    if decide_on is None:
        raise SystemExit(f"{rows_file}: no row is compared with the clean row; rerun the study")
    return "\n".join(summary(rows, decide_on)) + "\n"


def readme_block(text: str) -> tuple[Path, str] | None:
    """The rows file the README's block names (relative to the checkout) and the block's
    table; None when the README has no block."""
    found = BLOCK.search(text)
    return None if found is None else (CHECKOUT / found["rows"], found["table"])


def take(reports: Path, rows_file: Path = ROWS, costs_file: Path = SHIPPED_COSTS) -> None:
    """Check in the study whose reports/NAME/ folder is `reports`: its rows as `rows_file`
    (no machine paths), its costs as `costs_file` (no --workdir in the command)."""
    rows = [
        dataclasses.replace(
            row,
            model=None,
            eval_dir=None,
            scores=tuple(dataclasses.replace(s, eval_dir=None) for s in row.scores),
        )
        for row in read_rows(reports / "confounds.json")
    ]
    costs = CheckCosts.read(reports / "check_costs.json")  # both read before either is written
    write_rows(rows, rows_file)
    dataclasses.replace(costs, command=without_workdir(costs.command)).write(costs_file)
    print(f"{rows_file}\n{costs_file}")


def without_workdir(command: str) -> str:
    """The command without its --workdir option (where the files went, not what was run)."""
    words = shlex.split(command)
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--workdir":
            skip = True
        elif not word.startswith("--workdir="):
            kept.append(word)
    return shlex.join(kept)


def rewrite(readme: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    found = BLOCK.search(text)
    if found is None:
        opening = OPEN.format(rows=ROWS.relative_to(CHECKOUT))
        raise SystemExit(
            f"{readme}: no confound table block; add the two marker lines ({opening} and "
            f"{CLOSE}) where the table goes"
        )
    table = render(CHECKOUT / found["rows"])
    readme.write_text(
        text[: found.start("table")] + table + text[found.end("table") :], encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=Path, default=ROWS, help="the rows file (a study's confounds.json)"
    )
    parser.add_argument("--write", type=Path, metavar="README", help="rewrite its table block")
    parser.add_argument(
        "--take",
        type=Path,
        metavar="REPORTS",
        help="first check in the routing model's study from its reports/smol-route/ folder "
        "(the rows file and fixtures/check_costs.json)",
    )
    args = parser.parse_args(argv)
    try:
        if args.take is not None:
            take(args.take, args.rows)
        if args.write is not None:
            rewrite(args.write)
            return
        print(render(args.rows), end="")
    except BadInput as err:  # a missing or malformed rows file or README: one line, naming it
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


if __name__ == "__main__":
    main()
