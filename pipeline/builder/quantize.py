"""Quantize: `python -m mlx_lm convert -q`, the fused model to `quantize.bits` bits.

`--dtype` is passed every time: convert otherwise takes the dtype from config.json's
`torch_dtype`, which a float32 convert leaves at bfloat16 (shared notes), and bfloat16 is slow
on mlx's CPU backend. mlx_lm convert refuses an output folder that already exists, so the
caller passes a path that does not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.builder.files import folder_bytes
from pipeline.builder.records import QuantizeRecord
from pipeline.builder.runner import Runner, StageError, mlx_lm_argv
from pipeline.definitions.experiment import Experiment

_BPW = re.compile(r"Quantized model with ([\d.]+) bits per weight")


def command(experiment: Experiment, fused: Path, out: Path) -> list[str]:
    """The exact `mlx_lm convert` command line."""
    q = experiment.quantize
    return mlx_lm_argv(
        "convert",
        "--hf-path", str(fused),
        "--mlx-path", str(out),
        "-q",
        "--q-bits", str(q.bits),
        "--q-group-size", str(q.group_size),
        "--dtype", q.dtype,
    )  # fmt: skip


def quantization(folder: Path) -> dict[str, Any] | None:
    """config.json's `quantization` table, or None."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = config.get("quantization")
    return value if isinstance(value, dict) else None


def quantize(experiment: Experiment, *, fused: Path, out: Path, runner: Runner) -> QuantizeRecord:
    """Quantize `fused` into `out` (which must not exist) and check the result's config."""
    q = experiment.quantize
    runner.log(f"[quantize] {q.bits}-bit, group size {q.group_size}, {q.dtype}")
    bpw: list[float] = []

    def on_line(line: str) -> str | None:
        if m := _BPW.search(line):
            bpw.append(float(m.group(1)))
            return f"[quantize] {m.group(1)} bits per weight"
        return None

    run = runner.run("quantize", command(experiment, fused, out), on_line=on_line)
    got = quantization(out)
    if not got or got.get("bits") != q.bits or got.get("group_size") != q.group_size:
        raise StageError(
            f"quantize: {out}/config.json records quantization {got}, expected "
            f"{q.bits} bits with group size {q.group_size}; log: {runner.log_path}"
        )
    size = folder_bytes(out)
    runner.log(f"[quantize] done in {run.seconds:.1f} s: {size / 1e6:,.1f} MB")
    return QuantizeRecord.ran(
        run,
        bits=q.bits,
        group_size=q.group_size,
        dtype=q.dtype,
        bits_per_weight=bpw[-1] if bpw else None,
    )


__all__ = ["command", "quantization", "quantize"]
