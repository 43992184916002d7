"""Fuse: `python -m mlx_lm fuse`, the trained adapters merged into the base model.

With LoRA/DoRA, mlx_lm folds each adapter's low-rank update into its linear layer (and, with
`--dequantize`, writes plain weights instead of re-quantizing them). With a full fine-tune there
is nothing to merge: mlx_lm saves the trained layers themselves as `adapters.safetensors`, and
`fuse` loads them over the base weights (embeddings and final norm stay the base's, which a
`--fine-tune-type full` run in mlx_lm 0.32 does not train) and saves the result. The stage says
so in its log and in build.json.

mlx_lm 0.32's fuse has no dtype option: the fused weights keep the base model's dtype (the
scales' dtype for a dequantized 4-bit base, bfloat16 for mlx-community's). The stage records
the dtype it got and notes when it differs from the experiment's `fuse.dtype`; the quantize
stage's `convert --dtype` then casts, as the seed's pipeline did.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipeline.builder.files import folder_bytes, safetensors_header
from pipeline.builder.records import FuseRecord
from pipeline.builder.runner import Runner, StageError, mlx_lm_argv
from pipeline.definitions.experiment import Experiment

_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def command(experiment: Experiment, base: Path, adapters: Path, out: Path) -> list[str]:
    """The exact `mlx_lm fuse` command line."""
    args = ["--model", str(base), "--adapter-path", str(adapters), "--save-path", str(out)]
    if experiment.fuse.dequantize:
        args.append("--dequantize")
    return mlx_lm_argv("fuse", *args)


def weights_dtype(folder: Path) -> str | None:
    """The most common floating dtype among a model folder's weights (headers only)."""
    counts: Counter[str] = Counter()
    for path in folder.glob("*.safetensors"):
        for name, info in safetensors_header(path).items():
            dtype = _DTYPES.get(info["dtype"])
            if dtype and not name.endswith((".scales", ".biases")):
                counts[dtype] += 1
    return counts.most_common(1)[0][0] if counts else None


def fuse(
    experiment: Experiment, *, base: Path, adapters: Path, out: Path, runner: Runner
) -> FuseRecord:
    """Fuse `adapters` into `base`, writing the model folder `out` (which must not exist)."""
    log = runner.log
    config = json.loads((adapters / "adapter_config.json").read_text())
    fine_tune_type = config.get("fine_tune_type", "lora")
    nothing_to_merge = fine_tune_type == "full"
    if nothing_to_merge:
        log(
            "[fuse] full fine-tune: nothing to merge; mlx_lm fuse loads the trained weights "
            "over the base model and saves it"
        )
    else:
        log(f"[fuse] merging {fine_tune_type} adapters into {base}")
    run = runner.run("fuse", command(experiment, base, adapters, out))
    if not (out / "config.json").is_file():
        raise StageError(
            f"fuse: mlx_lm fuse wrote no config.json into {out}; log: {runner.log_path}"
        )
    dtype = weights_dtype(out)
    note = None
    if dtype and dtype != experiment.fuse.dtype:
        note = (
            f"fused weights are {dtype}, not fuse.dtype {experiment.fuse.dtype}: mlx_lm fuse "
            f"has no dtype option; quantize casts with --dtype {experiment.quantize.dtype}"
        )
        log(f"[fuse] note: {note}")
    size = folder_bytes(out)
    log(f"[fuse] done in {run.seconds:.1f} s: {size / 1e6:,.1f} MB {dtype or ''}".rstrip())
    return FuseRecord.ran(
        run,
        fine_tune_type=fine_tune_type,
        nothing_to_merge=nothing_to_merge,
        dequantize=experiment.fuse.dequantize,
        dtype=dtype,
        dtype_note=note,
    )


__all__ = ["command", "fuse", "weights_dtype"]
