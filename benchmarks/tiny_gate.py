"""Time the tiny gate per stage, from scratch, and compare the trained tiny model with its base.

    python benchmarks/tiny_gate.py [--experiment tiny] [--samples N] [--temperature T[,T2]]

Everything goes to a temporary folder (tiny model cache, data, runs), so nothing is reused:
the tiny models (tokenizer + random weights, both call syntaxes), the data, the preflight, then
the build's stages (train, fuse, quantize, from build.json) and the eval. Then the untrained
base (the folder `tiny:json` resolves to) answers the same prompts, and the routing scores of
both print per category with their 95% intervals. No assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.build import STAGE_NAMES, build
from pipeline.core.workspace import Workspace
from pipeline.data import generate
from pipeline.eval.records import CategoryRow
from pipeline.eval.run import run_eval
from pipeline.models.refs import resolve
from pipeline.preflight import run_preflight
from pipeline.spec.experiment import load_experiment, with_overrides


def _quiet(_: str) -> None:
    pass


def _row(cat: CategoryRow) -> str:
    return f"{cat.mean:.2f} [{cat.lo:.2f}, {cat.hi:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="tiny")
    parser.add_argument("--samples", type=int, default=None, help="[the experiment's]")
    parser.add_argument("--temperature", default=None, help="T or T1,T2 [the experiment's]")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tiny-gate-") as tmp:
        root = Path(tmp)
        os.environ["ROUTEGATE_CACHE"] = str(root / "cache")  # build the tiny models afresh
        experiment = load_experiment(args.experiment)
        seconds: dict[str, float] = {}
        started = time.perf_counter()

        t0 = time.perf_counter()
        generate(experiment, root / "data")
        experiment = with_overrides(experiment, data=str(root / "data"))
        seconds["data"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        base = resolve(experiment.models.base, experiment)
        resolve(experiment.models.reference, experiment, tokenizer_only=True)
        seconds["tiny models"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        findings = run_preflight(experiment)
        seconds["preflight"] = time.perf_counter() - t0
        failed = [f.message() for f in findings if f.failed]

        built = build(
            experiment,
            force=bool(failed),
            workspace=Workspace(root),
            log=_quiet,
            preflight=lambda _: findings,
        )
        for name in STAGE_NAMES:
            stage = built.record.stages.get(name)
            seconds[name] = stage.wall_seconds if stage is not None else float("nan")
        seconds["build (all)"] = built.seconds

        t0 = time.perf_counter()
        trained = run_eval(
            experiment,
            built.run_dir,
            model_dir=built.quantized,
            samples=args.samples,
            temperatures=args.temperature,
            log=_quiet,
        )
        seconds["eval"] = time.perf_counter() - t0
        seconds["total"] = time.perf_counter() - started

        t0 = time.perf_counter()
        untrained = run_eval(
            experiment,
            root / "untrained",
            model_dir=base,
            samples=args.samples,
            temperatures=args.temperature,
            log=_quiet,
        )
        untrained_seconds = time.perf_counter() - t0

    t = experiment.train
    print(
        f"{experiment.name}: {t.fine_tune_type} fine-tune, {t.iters} iterations, batch "
        f"{t.batch_size}, learning rate {t.learning_rate:g}; "
        f"{trained.summary.requests} eval requests"
    )
    if failed:
        print(f"(preflight failed {len(failed)} checks; built anyway)")
    print(f"\n{'stage':<14} {'seconds':>8}")
    for stage, value in seconds.items():
        print(f"{stage:<14} {value:>8.1f}")
    print(f"{'(untrained eval':<14} {untrained_seconds:>8.1f})")

    train = built.record.stages.train
    assert train is not None
    print(f"\ntrain loss {train.train_loss}, validation loss {train.val_loss}")
    for key, row in trained.summary.temperatures.items():
        base_row = untrained.summary.temperatures[key]
        print(f"\nrouting at temperature {key} ({trained.summary.samples} samples per prompt)")
        print(f"{'category':<12} {'n':>4}  {'trained':<20} {'untrained':<20} threshold")
        for name, cat in row.categories.items():
            shown = "" if cat.threshold is None else f"{cat.threshold:.2f}"
            print(
                f"{name:<12} {cat.n:>4}  {_row(cat):<20} "
                f"{_row(base_row.categories[name]):<20} {shown}"
            )
    verdicts = trained.summary.verdict, untrained.summary.verdict
    print(f"\nverdict: trained {verdicts[0]}, untrained {verdicts[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
