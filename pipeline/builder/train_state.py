"""The trainer's state file: what an exact resume needs beside the adapter weights.

`NNNNNNN_state.safetensors`, written by the trainer (pipeline/builder/trainer.py) at each
checkpoint: Adam's moments and step, numpy's generator at the checkpoint and at the current
epoch's start, mlx's random key, and whether its lineage is exact (metadata `format`
`STATE_FORMAT`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from pipeline.builder.checkpoints import STATE_FORMAT

Batch = tuple[mx.array, mx.array]
NumpyState = tuple[str, np.ndarray, int, int, float]
OPTIMIZER_PREFIX = "optimizer."
"""The keys of Adam's (or another optimizer's) state in the state file."""


@dataclass(frozen=True)
class TrainState:
    """What a checkpoint's state file holds: where training stood after `step` global steps."""

    step: int
    optimizer: dict[str, Any]
    random_key: mx.array
    numpy_now: NumpyState
    numpy_epoch: NumpyState
    """numpy's generator as it was when the current epoch's permutation was drawn."""
    position: int
    """Batches of the current epoch already trained."""
    exact: bool
    """The run descends from its beginning through exact resumes only."""


def numpy_now() -> NumpyState:
    state = np.random.get_state(legacy=True)  # the legacy form is the tuple set_state takes
    assert isinstance(state, tuple)
    return state


def random_key_now() -> mx.array:
    """mlx's global random key (`mx.random.state` is a one-element sequence: the key)."""
    (key,) = list(mx.random.state)  # ty: ignore[invalid-argument-type]
    return key


def _numpy_meta(state: NumpyState) -> str:
    name, _, pos, has_gauss, cached = state
    return json.dumps([name, int(pos), int(has_gauss), float(cached)])


def _numpy_state(meta: str, keys: mx.array) -> NumpyState:
    name, pos, has_gauss, cached = json.loads(meta)
    return (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)


def write_state(path: Path, state: TrainState) -> None:
    """Write `state` to `path` all at once: a killed write leaves no state file, not a bad one."""
    arrays = {
        OPTIMIZER_PREFIX + k: v
        for k, v in tree_flatten(state.optimizer)
        if isinstance(v, mx.array)  # every leaf of an optimizer's state is
    }
    arrays["random_key"] = state.random_key
    arrays["numpy_now"] = mx.array(state.numpy_now[1])
    arrays["numpy_epoch"] = mx.array(state.numpy_epoch[1])
    metadata = {
        "format": STATE_FORMAT,
        "step": str(state.step),
        "position": str(state.position),
        "exact": "1" if state.exact else "0",
        "numpy_now": _numpy_meta(state.numpy_now),
        "numpy_epoch": _numpy_meta(state.numpy_epoch),
    }
    partial = path.with_name(path.name.removesuffix(".safetensors") + ".partial.safetensors")
    mx.save_safetensors(str(partial), arrays, metadata=metadata)
    os.replace(partial, path)


def read_state(path: Path) -> TrainState:
    loaded = mx.load(str(path), return_metadata=True)
    assert isinstance(loaded, tuple)  # return_metadata=True: (arrays, metadata)
    arrays, meta = loaded
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, not {STATE_FORMAT!r}")
    optimizer = [
        (k.removeprefix(OPTIMIZER_PREFIX), v)
        for k, v in arrays.items()
        if k.startswith(OPTIMIZER_PREFIX)
    ]
    return TrainState(
        step=int(meta["step"]),
        optimizer=tree_unflatten(optimizer),
        random_key=arrays["random_key"],
        numpy_now=_numpy_state(meta["numpy_now"], arrays["numpy_now"]),
        numpy_epoch=_numpy_state(meta["numpy_epoch"], arrays["numpy_epoch"]),
        position=int(meta["position"]),
        exact=meta["exact"] == "1",
    )


def set_random_key(key: mx.array) -> None:
    """Make `key` mlx's global random key.

    mlx 0.32 offers no setter; `mx.random.seed(n)` makes the key [n >> 32, n & 0xffffffff], so
    seeding with the key's two words read as one number restores it (checked, not assumed).
    """
    hi, lo = (int(word) for word in np.array(key, dtype=np.uint32))
    mx.random.seed((hi << 32) | lo)
    if not mx.array_equal(random_key_now(), key).item():
        raise RuntimeError(
            f"cannot restore mlx's random key {key.tolist()}: mx.random.seed gave "
            f"{random_key_now().tolist()} (has mlx changed how seed makes a key?)"
        )
