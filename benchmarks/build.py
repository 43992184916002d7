"""Time the tiny build per stage, and the wrapper's overhead over running mlx_lm by hand.

    python benchmarks/build.py [--experiment tiny] [--iters N] [--max-seq-length N] [--no-force]

Builds into a temporary runs folder (so nothing is cached), then runs the exact command lines
build.json recorded, one after another, in another temporary folder with plain
`subprocess.run`, and prints both timings per stage and the difference. Ends with the time of a
second, cached build. No assertions. The build is forced past a failing preflight by default:
this measures time, not the gate.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.builder import OUTPUTS, STAGE_NAMES, BuildRecord, BuildRefused, StageRecord, build
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import load_experiment


def _stage(record: BuildRecord, name: str) -> StageRecord:
    stage = record.stages.get(name)
    assert stage is not None, f"build.json records no {name} stage"
    return stage


def by_hand(record: BuildRecord, run_dir: Path, tmp: Path) -> dict[str, float]:
    """Run each stage's recorded command with run_dir swapped for tmp; seconds per stage."""
    seconds = {}
    for stage in STAGE_NAMES:
        argv = [a.replace(str(run_dir), str(tmp)) for a in _stage(record, stage).command]
        log = tmp / f"{stage}.log"
        start = time.perf_counter()
        with log.open("w") as fh:
            subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=True)
        seconds[stage] = time.perf_counter() - start
        (tmp / f"{OUTPUTS[stage]}.partial").rename(tmp / OUTPUTS[stage])
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="tiny")
    parser.add_argument("--iters", type=int, default=None, help="override train.iters")
    parser.add_argument("--max-seq-length", type=int, default=None, help="override")
    parser.add_argument("--no-force", action="store_true", help="respect a failing preflight")
    args = parser.parse_args(argv)

    experiment = load_experiment(args.experiment)
    changes = {
        k: v
        for k, v in (("iters", args.iters), ("max_seq_length", args.max_seq_length))
        if v is not None
    }
    if changes:
        experiment = dataclasses.replace(
            experiment, train=dataclasses.replace(experiment.train, **changes)
        )
    t = experiment.train
    print(
        f"{experiment.name}: {t.fine_tune_type}, {t.iters} iterations, batch {t.batch_size}, "
        f"max_seq_length {t.max_seq_length}"
    )
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as hand:
        workspace = Workspace(Path(work))
        start = time.perf_counter()
        try:
            result = build(
                experiment, workspace=workspace, force=not args.no_force, log=lambda _: None
            )
        except BuildRefused as err:
            print(err)
            return 1
        total = time.perf_counter() - start
        record = result.record
        if not record.preflight.passed:
            print(f"(preflight failed {len(record.preflight.failed)} checks; forced)")
        manual = by_hand(record, result.run_dir, Path(hand))

        print(f"\n{'stage':<10} {'build s':>9} {'mlx_lm s':>9} {'by hand s':>10} {'overhead':>9}")
        for stage in STAGE_NAMES:
            figures = _stage(record, stage)
            wall, sub, own = figures.wall_seconds, figures.seconds, manual[stage]
            print(f"{stage:<10} {wall:9.2f} {sub:9.2f} {own:10.2f} {_pct(wall, own):>9}")
        stages_wall = sum(_stage(record, s).wall_seconds for s in STAGE_NAMES)
        hand_total = sum(manual.values())
        print(f"{'stages':<10} {stages_wall:9.2f} {'':9} {hand_total:10.2f} "
              f"{_pct(stages_wall, hand_total):>9}")  # fmt: skip
        print(
            f"{'whole':<10} {total:9.2f} {'':9} {hand_total:10.2f} {_pct(total, hand_total):>9}"
            "   (whole = data + key + preflight + stages)"
        )
        train = record.stages.train
        assert train is not None
        peak = f"{train.peak_memory_bytes / 1e6:,.0f} MB" if train.peak_memory_bytes else "n/a"
        print(
            f"\ntrain: loss {train.train_loss}, val {train.val_loss}, "
            f"{train.tokens_per_second} tokens/s, "
            f"{train.trainable_parameters:,} trainable parameters, peak RSS {peak}"
        )
        start = time.perf_counter()
        again = build(experiment, workspace=workspace, force=not args.no_force, log=lambda _: None)
        print(f"cache hit: {time.perf_counter() - start:.2f} s (cached={again.cached})")
    return 0


def _pct(ours: float, theirs: float) -> str:
    return f"{(ours - theirs) / theirs * 100:+.1f}%" if theirs else "n/a"


if __name__ == "__main__":
    sys.exit(main())
