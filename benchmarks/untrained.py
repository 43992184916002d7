"""The untrained base, served as built, judged like the gate: the experiment's [baseline].

    python benchmarks/untrained.py [--experiment smol] [--out FILE]

Resolves the experiment's base model (for smol: the SmolLM2 GGUF as an MLX 4-bit folder),
serves it with mlx_lm.server and asks the experiment's prompts with its own samples,
temperatures and max_tokens, in a temporary run folder. Prints the routing per category at the
decision temperature (the numbers an experiment's [baseline] table takes) and appends one JSON
line to `--out`. No assertions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core import blas
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import load_experiment
from pipeline.eval.run import run_eval
from pipeline.preflight import resolve_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="smol")
    parser.add_argument("--out", default=None, help="append one JSON line here")
    args = parser.parse_args(argv)
    experiment = load_experiment(args.experiment)
    base = resolve_model(experiment.models.base, experiment, workspace=Workspace.at())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="untrained-") as tmp:
        result = run_eval(experiment, Path(tmp) / "eval", model_dir=base, log=lambda _: None)
    decision = result.decision().categories
    row = {
        "experiment": experiment.name,
        "model": "untrained",
        "base": str(base),
        "blas": blas.describe(),
        "seconds": round(time.perf_counter() - started, 1),
        "categories": {c: round(r.mean, 4) for c, r in decision.items()},
    }
    if args.out:
        with open(args.out, "a") as out:
            out.write(json.dumps(row) + "\n")
    print(f"{experiment.name} untrained base ({row['seconds']:.0f} s):")
    for category, mean in row["categories"].items():
        print(f"  {category:<12} {mean:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
