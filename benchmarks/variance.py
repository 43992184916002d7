"""Variance study: train one experiment with several seeds and print its routing per category.

    python benchmarks/variance.py [--experiment tiny] [--seeds 0,1,2,3,4] [--out FILE]
        [--workdir DIR] [--use-shipped] [--also-prompts extended]
    python benchmarks/variance.py --table FILE     # the study's table from its JSON lines
    python benchmarks/variance.py --table FILE --thresholds   # and the thresholds it gives

Each seed is a full build of the experiment with only `[train] seed` changed (fresh data and
runs in a temporary folder, so no build is reused; base models come from the model cache, as
they are inputs, not results), evaluated as the gate
evaluates it (the experiment's own samples and temperatures). The BLAS the mlx processes get
is the gate's (pipeline.core.blas; `ROUTEGATE_BLAS=none|pip|system|PATH` and `OPENBLAS_NUM_THREADS`
select other numerics). Prints, per seed and category, prompts right / prompts at the decision
temperature, and appends one JSON line per seed to `--out`. Thresholds are pre-registered from
these tables (experiments/*.toml say which runs); no assertions here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.builder import BuildResult, build
from pipeline.builder.records import Attempt
from pipeline.builder.shipped import read_shipped
from pipeline.core import blas
from pipeline.core.errors import BadInput
from pipeline.core.workspace import RunFolder, Workspace
from pipeline.data import generate
from pipeline.definitions.experiment import load_experiment, with_overrides
from pipeline.eval.run import EvalResult, run_eval
from pipeline.preflight import run_preflight
from pipeline.study.confounds import named_prompt_sets


def _quiet(_: str) -> None:
    pass


def one_seed(
    name: str, seed: int, root: Path, also: tuple[str, ...] = (), use_shipped: bool = False
) -> dict:
    experiment = load_experiment(name)
    shipped = experiment.train.adapter
    # The shipped adapter is one training of this recipe (its record names the seed, and the
    # build refuses it for other data or another base): with --use-shipped it is that seed's
    # row instead of an hour's retraining of the same thing.
    reuse = use_shipped and shipped is not None and read_shipped(shipped).seed == seed
    experiment = dataclasses.replace(
        experiment, train=dataclasses.replace(experiment.train, seed=seed)
    )
    generate(experiment, root / "data")
    # otherwise the recipe is trained afresh: a shipped adapter would be reused for every seed
    experiment = with_overrides(experiment, data=str(root / "data"), retrain=not reuse)
    workspace = Workspace(root)
    findings = run_preflight(experiment, workspace=workspace)
    started = time.perf_counter()
    built = build(experiment, workspace=workspace, log=_quiet, preflight=lambda _: findings)
    result = run_eval(experiment, built.run_dir, model_dir=built.quantized, log=_quiet)
    sets = {"": result}
    for prompts in also:  # the same model on other prompt sets (its data stays the experiment's)
        other = with_overrides(experiment, prompts=prompts)
        run_dir = RunFolder(built.run_dir).prompt_set(prompts).path
        sets[prompts] = run_eval(other, run_dir, model_dir=built.quantized, log=_quiet)
    extra = {name: _categories(r) for name, r in sets.items() if name}
    train_seconds, complete = _train_seconds(built, shipped if reuse else None)
    return {
        "experiment": name,
        "seed": seed,
        "blas": blas.describe(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "machine": platform.node(),
        "seconds": round(time.perf_counter() - started, 1),
        "adapter": f"shipped ({shipped})" if reuse else "trained",
        "train_seconds": train_seconds,
        "train_seconds_complete": complete,
        "val_loss": built.record.stages.train.val_loss if built.record.stages.train else None,
        "categories": _categories(result),
        **({"prompt_sets": extra} if extra else {}),
    }


def _train_seconds(built: BuildResult, shipped: Path | None) -> tuple[float | None, bool]:
    """The training's seconds, and whether they are all of them: the shipped adapter's recorded
    minutes where it was used (the build's own train stage then took none); else the sum over
    the training's attempts, incomplete when one was killed before it could time itself."""
    if shipped is not None:
        return round(read_shipped(shipped).train_minutes * 60, 1), True
    train = built.record.stages.train
    if train is None:
        return None, False
    return attempts_seconds(train.attempts)


def attempts_seconds(attempts: Sequence[Attempt]) -> tuple[float | None, bool]:
    """The timed attempts' seconds, and whether every attempt whose steps the model kept is
    timed: an attempt killed before its first checkpoint (the next one starts at its offset)
    kept no step, so its steps' time is in a later attempt and its own does not count."""
    seconds = [a.seconds for a in attempts]
    known = [s for s in seconds if s is not None]
    lost = {i for i in range(len(attempts) - 1) if attempts[i + 1].offset == attempts[i].offset}
    complete = all(a.seconds is not None for i, a in enumerate(attempts) if i not in lost)
    return (round(sum(known), 1) if known else None), complete


def _categories(result: EvalResult) -> dict[str, dict[str, float | int]]:
    decision = result.decision().categories
    ids = {c: {s.prompt.id for s in result.scored if s.prompt.category == c} for c in decision}
    ids["overall"] = {s.prompt.id for s in result.scored if s.prompt.category != "no_tool"}
    return {c: {"mean": round(row.mean, 4), "prompts": len(ids[c])} for c, row in decision.items()}


def table(rows: list[dict]) -> str:
    """Per prompt set, a category per line and a training per column (its seed), with the
    lowest and the mean across trainings: the table thresholds are pre-registered from."""
    sets = {"": [r["categories"] for r in rows]}
    for name in dict.fromkeys(n for r in rows for n in r.get("prompt_sets", {})):
        sets[name] = [r.get("prompt_sets", {}).get(name) for r in rows]
    heads = [f"s{r['seed']}" for r in rows]
    lines = []
    for name, columns in sets.items():
        lines.append(f"prompts: {name or 'the experiment set'}")
        lines.append(f"  {'category':<16}" + "".join(f"{h:>7}" for h in heads) + "    min   mean")
        categories = dict.fromkeys(c for col in columns if col for c in col)
        for category in categories:
            cells = [col.get(category) if col else None for col in columns]
            means = [c["mean"] for c in cells if c]
            count = next((c["prompts"] for c in cells if c), 0)
            shown = "".join(f"{c['mean']:>7.3f}" if c else f"{'-':>7}" for c in cells)
            summary = f"{min(means):>7.3f}{sum(means) / len(means):>7.3f}" if means else ""
            lines.append(f"  {f'{category} ({count})':<16}{shown}{summary}")
    minutes = [
        f"s{r['seed']} {r['train_seconds'] / 60:.0f}"
        + ("" if r.get("train_seconds_complete", True) else "+ (an attempt untimed)")
        if r.get("train_seconds")
        else f"s{r['seed']} -"
        for r in rows
    ]
    lines.append("training minutes: " + "  ".join(minutes))
    return "\n".join(lines)


PLAN = "phase40"
"""The experiment whose [thresholds] are the seed plan's pre-registered criteria."""
MARGIN = 0.05
"""Below the lowest training: the margin non-inferiority uses (experiments' [decision])."""


def thresholds(rows: list[dict], criteria: dict[str, float], also: tuple[str, ...]) -> str:
    """The rule thresholds are pre-registered by, applied to a variance study's rows, as the
    TOML to paste (with why each criterion is or is not gated):

    - the experiment's own prompt set: each plan criterion (`criteria`) is gated where every
      training scores at or above it, else reported and named;
    - each other prompt set: overall only, at the lowest training's overall minus MARGIN,
      rounded down to the hundredth (categories move up to 30 points between seeds)."""
    seeds = ", ".join(str(r["seed"]) for r in rows)
    lines = [f"# from {len(rows)} trainings (seeds {seeds}) by benchmarks/variance.py --thresholds"]
    lines.append("[thresholds]")
    for category, bar in criteria.items():
        scores = [r["categories"][category]["mean"] for r in rows if category in r["categories"]]
        lowest = min(scores) if scores else None
        if lowest is not None and len(scores) == len(rows) and lowest >= bar:
            lines.append(f"{category} = {bar:.2f}   # every training >= it (lowest {lowest:.3f})")
        else:
            shown = "no score" if lowest is None else f"lowest {lowest:.3f}"
            lines.append(f"# {category} = {bar:.2f} not gated: a training is below it ({shown})")
    for name in also:
        overall = [r["prompt_sets"][name]["overall"]["mean"] for r in rows]
        bar = math.floor(100 * (min(overall) - MARGIN) + 1e-9) / 100
        lines.append(f"[thresholds.sets.{name}]")
        lines.append(
            f"overall = {bar:.2f}   # lowest training {min(overall):.3f} - {MARGIN}, rounded down"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="tiny")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default=None, help="append one JSON line per seed here")
    parser.add_argument(
        "--workdir",
        default=None,
        help="keep each seed's data and build under DIR/seed-N: a rerun reuses a finished "
        "seed's build and resumes an interrupted training [temporary folders]",
    )
    parser.add_argument(
        "--use-shipped",
        action="store_true",
        help="the seed the experiment's shipped adapter was trained with is built from it",
    )
    parser.add_argument(
        "--also-prompts",
        default="",
        help="comma-separated prompt sets to evaluate each seed's model on as well (extended)",
    )
    parser.add_argument(
        "--table",
        default=None,
        metavar="FILE",
        help="print the study's table from FILE (the JSON lines --out wrote) and exit",
    )
    parser.add_argument(
        "--thresholds",
        action="store_true",
        help=f"with --table: also the thresholds the rule gives ({PLAN}'s criteria)",
    )
    args = parser.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line]
        if not rows:
            parser.error(f"--table {args.table}: no rows (write them with --out)")
        print(table(rows))
        if args.thresholds:
            also = tuple(dict.fromkeys(n for r in rows for n in r.get("prompt_sets", {})))
            print(thresholds(rows, load_experiment(PLAN).thresholds.as_dict(), also))
        return 0
    print(blas.describe(), flush=True)
    rows = []
    try:  # the study's reading of the same flag: an unknown set is named before an hour's training
        also = named_prompt_sets(args.also_prompts)
    except BadInput as err:
        parser.error(str(err))
    for seed in (int(s) for s in args.seeds.split(",")):
        if args.workdir:
            root = Path(args.workdir).resolve() / f"seed-{seed}"
            row = one_seed(args.experiment, seed, root, also, args.use_shipped)
        else:
            with tempfile.TemporaryDirectory(prefix="variance-") as tmp:
                row = one_seed(args.experiment, seed, Path(tmp), also, args.use_shipped)
        rows.append(row)
        if args.out:
            with open(args.out, "a") as out:
                out.write(json.dumps(row) + "\n")
        cells = "  ".join(f"{c} {v['mean']:.2f}" for c, v in row["categories"].items())
        print(f"seed {seed} ({row['seconds']:.0f} s): {cells}", flush=True)
        for name, categories in row.get("prompt_sets", {}).items():
            cells = "  ".join(f"{c} {v['mean']:.2f}" for c, v in categories.items())
            print(f"  on {name}: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
