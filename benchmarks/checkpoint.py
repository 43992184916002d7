"""Score one adapter checkpoint of a build on a prompt set: the recipe search's measuring stick.

    python benchmarks/checkpoint.py --experiment smol-route \
        --adapter CKPT/0000300_adapters.safetensors
        [--prompts extended] [--baseline-run RUN_DIR] [--out DIR]

A LoRA build with `save_every` writes a checkpoint every so many iterations into its
`adapters.partial/` (beside `adapter_config.json`); the build removes them when it finishes,
so copy them (with adapter_config.json) while it trains. Scoring them gives routing against
training minutes from one training. The checkpoint is served on the float32
expansion of the experiment's base with the adapter applied (no fuse, no 5-bit: the gate's own
build measures those), every prompt asked as the gate asks, and the report written to
`--out/report/` (failure types and robustness included). With `--baseline-run` and a
`[decision]` margin in the experiment, the non-inferiority rows print too. Prints numbers; no
assertions.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import load_experiment, with_overrides
from pipeline.eval.run import run_eval
from pipeline.models.expanded import float32_expansion
from pipeline.preflight import resolve_model
from pipeline.report import report_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--adapter", required=True, type=Path, help="NNNNNNN_adapters.safetensors")
    parser.add_argument("--prompts", default="extended")
    parser.add_argument("--baseline-run", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="[beside the checkpoint]")
    args = parser.parse_args(argv)
    experiment = with_overrides(load_experiment(args.experiment), prompts=args.prompts)
    out = args.out or args.adapter.with_suffix(f".{args.prompts}")
    adapters = out / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.adapter, adapters / "adapters.safetensors")
    shutil.copyfile(args.adapter.parent / "adapter_config.json", adapters / "adapter_config.json")
    workspace = Workspace.at()  # the checkout's (or $ROUTEGATE_WORKDIR's) data and preflight
    base = float32_expansion(resolve_model(experiment.models.base, experiment, workspace=workspace))
    result = run_eval(
        experiment, out, model_dir=base, adapters=adapters, as_built=True,
        concurrency=args.concurrency, baseline_run=args.baseline_run, log=lambda _: None,
    )  # fmt: skip
    for name, cat in result.decision().categories.items():
        print(f"{name:<12} {cat.mean:.3f} [{cat.lo:.3f}, {cat.hi:.3f}] n={cat.n}")
    for name, row in result.summary.non_inferiority.items():
        print(
            f"non-inferiority {name}: {row.difference:+.3f} (one-sided 95% bounds "
            f"{row.lower:+.3f} / {row.upper:+.3f}, margin -{row.margin}) {row.decision}"
        )
    written = report_run(out, experiment, workspace, out_dir=out / "report")
    print(f"{result.summary.seconds:.0f} s; report {written.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
