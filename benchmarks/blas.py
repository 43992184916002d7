"""BLAS for mlx's CPU backend: matmul time and training speed with none, pip and system OpenBLAS.

    python benchmarks/blas.py [--iters 60] [--repeat 10]

For each choice the gate can make (pipeline/core/blas.py, `ROUTEGATE_BLAS=none|pip|system`)
it starts fresh child processes with that choice's environment and prints:
- the mean time of a 512x2048 @ 2048x512 float32 matmul (after one warm-up);
- training speed of the tiny experiment's model and data (full fine-tune, batch 4, as
  experiments/tiny.toml), `--iters` iterations: seconds per iteration and tokens/s as mlx_lm
  reports them.
A choice that is not available here prints why. No assertions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.builder.runner import strip_ansi
from pipeline.builder.train_progress import TrainProgress
from pipeline.core import blas
from pipeline.core.workspace import Workspace
from pipeline.data import generate
from pipeline.definitions.experiment import load_experiment
from pipeline.preflight import resolve_model

_MATMUL = """
import sys, time
import mlx.core as mx
a = mx.random.normal((512, 2048)); b = mx.random.normal((2048, 512)); mx.eval(a, b)
mx.eval(a @ b)
t = time.perf_counter()
for _ in range({repeat}): mx.eval(a @ b)
print((time.perf_counter() - t) / {repeat} * 1000)
"""


def choice_env(choice: str) -> tuple[dict[str, str] | None, str]:
    """The child environment for one choice, and the line saying what it is."""
    os.environ[blas.CHOICE_ENV] = choice
    blas.selected.cache_clear()
    picked, line = blas.selected()
    if choice != "none" and picked is None:
        return None, line
    return blas.child_env(), line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="blas-bench-") as tmp:
        root = Path(tmp)
        os.environ["ROUTEGATE_CACHE"] = str(root / "cache")
        tiny = load_experiment("tiny")
        generate(tiny, root / "data")
        model = resolve_model("tiny:json", tiny, workspace=Workspace.at())
        t = tiny.train
        print(f"{'choice':<8} {'matmul ms':>10} {'s/iter':>8} {'tok/s':>8}  library")
        for choice in ("none", "pip", "system"):
            env, line = choice_env(choice)
            if env is None:
                print(f"{choice:<8} {'-':>10} {'-':>8} {'-':>8}  {line}")
                continue
            matmul = subprocess.run(
                [sys.executable, "-c", _MATMUL.format(repeat=args.repeat)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            started = time.perf_counter()
            train = subprocess.run(
                [sys.executable, "-m", "mlx_lm", "lora", "--train", "--model", str(model),
                 "--data", str(root / "data"), "--adapter-path", str(root / f"a-{choice}"),
                 "--fine-tune-type", t.fine_tune_type, "--num-layers", str(t.num_layers),
                 "--iters", str(args.iters), "--batch-size", str(t.batch_size),
                 "--learning-rate", str(t.learning_rate), "--mask-prompt",
                 "--steps-per-report", "10", "--steps-per-eval", str(10 * args.iters),
                 "--val-batches", "1", "--max-seq-length", str(t.max_seq_length)],
                env={**env, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "120"},
                capture_output=True, text=True,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            progress = TrainProgress(total=args.iters)
            rates = []
            for row in train.stdout.splitlines():
                if progress.feed(strip_ansi(row)) == "train" and progress.tokens_per_second:
                    rates.append(progress.tokens_per_second)
            rate = f"{sum(rates) / len(rates):.0f}" if rates else "?"
            if train.returncode != 0:
                rate = f"exit {train.returncode}"
            per_iter = seconds / args.iters
            print(f"{choice:<8} {float(matmul):>10.1f} {per_iter:>8.3f} {rate:>8}  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
