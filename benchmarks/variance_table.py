"""The variance study's table and the thresholds it allows: one column per measured run.

    python benchmarks/variance_table.py [--experiment smol] [FILE ...]

Reads the JSON lines `benchmarks/variance.py --out FILE` appends (default: every
`benchmarks/results/<experiment>-variance.jsonl`), one run per line, and prints per category
each run's routing score, the minimum, and the highest threshold that leaves every measured
run passing by at least one prompt: (worst run's prompts right - 1) / prompts, rounded down to
two decimals. A category where that is 0 or less is reported, not gated ("-"), and no_tool is
never gated (the untrained base answers in prose and scores 1 there). The rule is the one the
experiments' [thresholds] comments state; this prints it, it does not write the file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NEVER_GATED = ("no_tool",)


def read_runs(paths: list[Path], experiment: str) -> list[dict]:
    """Each JSON line of `paths` for `experiment`, in file order; a bad line names its place."""
    runs = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f"{path}:{number}: not a JSON line ({err.msg})") from err
            if row.get("experiment") == experiment:
                runs.append(row)
    return runs


def run_label(row: dict) -> str:
    """pip0, system3, ...: the BLAS a run had and its seed."""
    blas = str(row.get("blas", ""))
    source = "pip" if "(pip)" in blas else "sys" if "(system)" in blas else "none"
    threads = row.get("openblas_threads")
    return f"{source}{row['seed']}" + (f"t{threads}" if threads else "")


def threshold(worst: float, prompts: int) -> float | None:
    """The highest two-decimal threshold the worst run passes by one prompt; None: ungated."""
    allowed = math.floor((worst * prompts - 1) / prompts * 100 + 1e-9) / 100
    return allowed if allowed > 0 else None


def table(runs: list[dict]) -> str:
    labels = [run_label(r) for r in runs]
    categories = list(runs[0]["categories"])
    head = f"{'category (prompts)':<20}" + "".join(f"{x:>7}" for x in labels) + "    min  threshold"
    lines = [head]
    for cat in categories:
        cells = [r["categories"][cat] for r in runs]
        prompts = cells[0]["prompts"]
        worst = min(c["mean"] for c in cells)
        gate = None if cat in NEVER_GATED else threshold(worst, prompts)
        shown = "(never gated)" if cat in NEVER_GATED else f"{gate:.2f}" if gate else "-"
        lines.append(
            f"{f'{cat} ({prompts})':<20}"
            + "".join(f"{c['mean']:>7.2f}" for c in cells)
            + f"  {worst:5.2f}  {shown}"
        )
    losses = [r.get("val_loss") for r in runs]
    lines.append(f"{'val loss':<20}" + "".join(f"{v:>7.2f}" if v else "      -" for v in losses))
    lines.append(f"{'seconds':<20}" + "".join(f"{r['seconds']:>7.0f}" for r in runs))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="smol")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.files or sorted(RESULTS.glob(f"{args.experiment}-variance*.jsonl"))
    runs = read_runs(paths, args.experiment)
    if not runs:
        print(f"no runs of {args.experiment!r} in {', '.join(map(str, paths)) or RESULTS}")
        return 2
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
