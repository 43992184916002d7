"""The README's confound table, rendered from a study's rows checked in under benchmarks/results.

    python benchmarks/confound_table.py [--rows FILE] [--write README.md]

The study writes reports/NAME/confounds.json; the routing model's, copied to
benchmarks/results/confounds-smol-route.json, is the README's table. This prints the table
(pipeline.study.table.summary, the same one confounds.md ends with), or with --write rewrites
the block between the README's markers, which name the rows file. A test checks that the
README's block is this rendering of that file, so the table cannot drift from the study.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from pipeline.core.errors import EXIT_BAD_INPUT, BadInput  # noqa: E402
from pipeline.study import read_rows  # noqa: E402
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
    parser.add_argument("--rows", type=Path, default=ROWS, help="a study's confounds.json")
    parser.add_argument("--write", type=Path, metavar="README", help="rewrite its table block")
    args = parser.parse_args(argv)
    try:
        if args.write is not None:
            rewrite(args.write)
            return
        print(render(args.rows), end="")
    except BadInput as err:  # a missing or malformed rows file or README: one line, naming it
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


if __name__ == "__main__":
    main()
