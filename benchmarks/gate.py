"""Time one experiment's gate per stage, from scratch, and compare its model with the base.

    python benchmarks/gate.py [--experiment tiny] [--samples N] [--temperature T[,T2]]
    python benchmarks/smol_gate.py     (the same for --experiment smol)

Everything goes to a temporary folder (model cache, data, runs), so nothing is reused: the
base models (tiny: tokenizer + random weights; smol: the SmolLM2 GGUF converted, its float32
expansion; both call syntaxes), the data, the preflight, then the build's stages (train, fuse,
quantize, from build.json) and the eval. The SmolLM2 GGUF is taken from the user's model cache
when it is there (no download; `$ROUTEGATE_SMOLLM2` otherwise applies). Then the untrained base
answers the same prompts, and the routing scores of both print per category with their 95%
intervals. Wall time and peak memory (the stage process's maximum resident set) per stage;
no assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.builder import STAGE_NAMES
from pipeline.core.workspace import Workspace
from pipeline.data import generate
from pipeline.definitions.experiment import load_experiment, with_overrides
from pipeline.eval.records import CategoryRow
from pipeline.gate import Invocation, ModelUnderTest, evaluate, model_under_test
from pipeline.models.smollm2 import GGUF_NAME, SOURCE_ENV, gguf_cache_folder
from pipeline.preflight import resolve_model, run_preflight


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

    with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
        root = Path(tmp)
        workspace = Workspace(root)
        cached_gguf = gguf_cache_folder() / GGUF_NAME
        if cached_gguf.is_file() and not os.environ.get(SOURCE_ENV):
            os.environ[SOURCE_ENV] = str(cached_gguf)  # converted afresh, not downloaded again
        os.environ["ROUTEGATE_CACHE"] = str(root / "cache")  # build the base models afresh
        experiment = load_experiment(args.experiment)
        seconds: dict[str, float] = {}
        peaks: dict[str, float] = {}  # GB
        started = time.perf_counter()

        t0 = time.perf_counter()
        generate(experiment, root / "data")
        experiment = with_overrides(experiment, data=str(root / "data"))
        seconds["data"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        base = resolve_model(experiment.models.base, experiment, workspace=workspace)
        reference = experiment.models.reference
        resolve_model(reference, experiment, workspace=workspace, tokenizer_only=True)
        seconds["base models"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        findings = run_preflight(experiment, workspace=workspace)
        seconds["preflight"] = time.perf_counter() - t0
        failed = [f.message() for f in findings if f.failed]

        # The gate's own line (pipeline.gate), its integrity check left out of the timings.
        invocation = Invocation(
            experiment,
            workspace,
            samples=args.samples,
            temperatures=args.temperature,
            force=bool(failed),
            integrity=False,
        )
        model = model_under_test(invocation, log=_quiet, preflight=lambda _: findings)
        built = model.built
        assert built is not None
        for name in STAGE_NAMES:
            stage = built.record.stages.get(name)
            seconds[name] = stage.wall_seconds if stage is not None else float("nan")
            if stage is not None and stage.peak_memory_bytes:
                peaks[name] = stage.peak_memory_bytes / 1e9
        seconds["build (all)"] = built.seconds

        t0 = time.perf_counter()
        trained = evaluate(invocation, model, log=_quiet)
        seconds["eval"] = time.perf_counter() - t0
        seconds["total"] = time.perf_counter() - started

        t0 = time.perf_counter()
        untrained = evaluate(invocation, ModelUnderTest(root / "untrained", base), log=_quiet)
        untrained_seconds = time.perf_counter() - t0

    t = experiment.train
    print(
        f"{experiment.name}: {t.fine_tune_type} fine-tune, {t.iters} iterations, batch "
        f"{t.batch_size}, learning rate {t.learning_rate:g}; "
        f"{trained.summary.requests} eval requests"
    )
    if failed:
        print(f"(preflight failed {len(failed)} checks; built anyway)")
    print(f"\n{'stage':<14} {'seconds':>8} {'peak GB':>8}")
    for stage, value in seconds.items():
        peak = f"{peaks[stage]:>8.2f}" if stage in peaks else ""
        print(f"{stage:<14} {value:>8.1f} {peak}")
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
