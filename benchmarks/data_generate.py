"""Time `pipeline.data.generate` for the default datasets (phase40 and tiny); no assertions.

    python benchmarks/data_generate.py [--repeat N]

Prints the best wall-clock time of N runs per experiment, the lines per split, and the size of
the files written (into a temporary folder that is removed afterwards).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.data import generate
from pipeline.definitions.experiment import load_experiment

EXPERIMENTS = ("phase40", "tiny")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per experiment [3]")
    args = parser.parse_args(argv)
    print(f"{'experiment':<10}  {'mode':<6}  {'best s':>7}  {'train':>6}  {'valid':>6}  {'MB':>6}")
    for name in EXPERIMENTS:
        experiment = load_experiment(name)
        times = []
        counts: dict[str, int] = {}
        size = 0
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(max(1, args.repeat)):
                out = Path(tmp) / str(i)
                start = time.perf_counter()
                counts = generate(experiment, out)
                times.append(time.perf_counter() - start)
                size = sum(f.stat().st_size for f in out.glob("*.jsonl"))
        print(
            f"{name:<10}  {experiment.data.mode:<6}  {min(times):>7.3f}  "
            f"{counts['train']:>6}  {counts['valid']:>6}  {size / 1e6:>6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
