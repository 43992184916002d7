"""A quantized model's float32 expansion, for LoRA training and serving on mlx's CPU backend.

LoRA on a 4-bit base (QLoRA, as mlx_lm trains `Qwen3-8B-4bit`) keeps the base weights packed
and multiplies through mlx's quantized matmul. On Linux CPUs that kernel is single-threaded
and unblocked: one LoRA step of SmolLM2-135M (batch 4 x 300 tokens, 16 adapted layers) took
169 s on the 4-bit weights and 11-13 s on their float32 expansion with OpenBLAS (7 vs ~100
tokens/s, 2 cores; benchmarks/blas.py measures the matmuls). The expansion holds the same
weights: an affine 4-bit weight is `scale * q + bias`, computed here once in float32 (the
scales' dtype), so training on it trains on the 4-bit model's own function up to the order of
float32 sums. Experiments ask for it with `[train] dequantize_base = true`; train and fuse then
both use it, and the quantize stage writes the 5-bit model from the fused float32 weights.

The expansion is a model-cache entry (`cache.cached_build`: atomic, shared by builds and
seeds), keyed by the base folder's file names, sizes and modification times and by the library
versions, written by `mlx_lm.convert(dequantize=True)`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import ModelError
from pipeline.models.cache import MARKER, cached_build, default_cache_root, library_versions


def is_quantized(folder: Path) -> bool:
    """Whether the model folder's config.json declares quantized weights."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        message = f"{folder}/config.json cannot be read ({err}): not a model folder"
        raise ModelError(message) from err
    return bool(config.get("quantization") or config.get("quantization_config"))


def _key(base: Path) -> str:
    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in base.iterdir() if p.is_file()
    )
    inputs = {"base": str(base.resolve()), "files": files, "versions": library_versions()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def float32_expansion(base: Path, *, cache_root: Path | None = None) -> Path:
    """The cached float32 copy of the quantized model folder `base` (`base` itself when it is
    not quantized)."""
    base = Path(base)
    if not is_quantized(base):
        return base
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    final = root / f"{base.name}-float32-{_key(base)[:16]}"
    if (final / MARKER).is_file():
        return final

    def expand(staging: Path) -> None:
        from mlx_lm.convert import convert

        started = time.perf_counter()
        shutil.rmtree(staging)  # mlx_lm.convert refuses an existing folder; the name stays ours
        convert(hf_path=str(base), mlx_path=str(staging), dequantize=True, dtype="float32")
        info = {
            "expanded_from": str(base.resolve()),
            "dtype": "float32",
            "seconds": round(time.perf_counter() - started, 3),
            "versions": library_versions(),
        }
        (staging / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    return cached_build(final, expand)


SERVED_AS_BUILT = "as built"
SERVED_EXPANDED = "float32 expansion"


@dataclass(frozen=True)
class ServedWeights:
    """Which weights the eval's server loads for a model folder, and why."""

    folder: Path
    weights: str
    """SERVED_AS_BUILT or SERVED_EXPANDED."""
    why: str


def cpu_backend() -> bool:
    """Whether mlx computes on the CPU here (Linux's `mlx[cpu]`), not on Metal or CUDA."""
    import mlx.core as mx

    return mx.default_device().type == mx.DeviceType.cpu


def served_weights(model_dir: Path, *, cache_root: Path, as_built: bool = False) -> ServedWeights:
    """The folder to serve for `model_dir`. On mlx's CPU backend a quantized model is served
    through its float32 expansion (cached under `cache_root`, beside the build; the quantized
    folder stays what users deploy): the same function, `scale * q + bias` in float32 either
    way, but mlx's CPU quantized matmul is single-threaded and gains nothing from batching,
    while float32 matmuls run through OpenBLAS and batch (30 seed requests of a 5-bit
    SmolLM2-135M: 239 s as built, 45 s expanded with 8 in flight; benchmarks/eval.py).
    `as_built`, or Metal and CUDA, serve the folder itself."""
    model_dir = Path(model_dir)
    if as_built:
        return ServedWeights(model_dir, SERVED_AS_BUILT, "asked for as built")
    if not is_quantized(model_dir):
        return ServedWeights(model_dir, SERVED_AS_BUILT, "not quantized")
    if not cpu_backend():
        return ServedWeights(model_dir, SERVED_AS_BUILT, "mlx computes on a GPU here")
    folder = float32_expansion(model_dir, cache_root=cache_root)
    why = (
        "mlx's CPU backend: its quantized matmul is single-threaded and does not batch; the "
        "float32 expansion computes the same weights through BLAS, in batches"
    )
    return ServedWeights(folder, SERVED_EXPANDED, why)
