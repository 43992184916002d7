"""The training stage's checkpoints and attempts, in its work folder (`adapters.partial/`).

Every `save_every` iterations mlx_lm saves `NNNNNNN_adapters.safetensors` and the trainer a
`NNNNNNN_state.safetensors` beside it; attempts.json records each attempt's offset, since
mlx_lm numbers a resumed run's iterations from 1 again. Before an attempt the last one's
checkpoints move to `checkpoints/` under their global step (`collect_checkpoints`), and
`choose_resume` picks the one to resume from (pipeline/builder/train.py says how a resume is
exact).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.builder.records import Attempt, Attempts
from pipeline.builder.runner import Log, StageError
from pipeline.core import io

CHECKPOINT_RE = re.compile(r"^(\d{7})_adapters\.safetensors$")
STATE_RE = re.compile(r"^(\d{7})_state\.safetensors$")
PARTIAL_STATE_RE = re.compile(r"^\d{7}_state\.partial\.safetensors$")
STATE_FORMAT = "routegate-train-state/1"
"""The state file's `format` metadata (pipeline/builder/trainer.py writes and reads it)."""
ADAPTER_FILE = "adapters.safetensors"
ATTEMPTS_FILE = "attempts.json"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    state: Path | None = None
    """Its state file (optimizer, data order, random state), when there is one."""


class CorruptCheckpointError(StageError):
    """A checkpoint file does not load; it has been discarded (named in the message)."""


def state_file_name(step: int) -> str:
    """The state file of the checkpoint after `step` iterations (the trainer's numbering)."""
    return f"{step:07d}_state.safetensors"


def read_attempts(work: Path) -> tuple[Attempt, ...]:
    """attempts.json of a work folder; none when it is missing or unreadable."""
    path = work / ATTEMPTS_FILE
    if not path.is_file():
        return ()
    try:
        raw = io.read_json(path)
        if isinstance(raw, list):  # written before records: a bare list of attempts
            raw = {"kind": Attempts.KIND, "version": 1, "attempts": raw}
        return Attempts.from_json(raw, str(path)).attempts
    except (ValueError, TypeError):  # BadInput, RecordError, or a malformed value
        return ()


def write_attempts(work: Path, attempts: tuple[Attempt, ...]) -> None:
    Attempts(attempts=attempts).write(work / ATTEMPTS_FILE)


def collect_checkpoints(work: Path) -> list[Checkpoint]:
    """Move the last attempt's checkpoints and state files to checkpoints/ under their global
    step; list all.

    A work folder without attempts.json (written before every attempt starts) is treated as a
    first attempt, offset 0.
    """
    attempts = read_attempts(work)
    offset = attempts[-1].offset if attempts else 0
    store = work / CHECKPOINTS
    for path in sorted(work.iterdir()):
        if not path.is_file():
            continue
        if m := CHECKPOINT_RE.match(path.name):
            name = f"{offset + int(m.group(1)):07d}_adapters.safetensors"
        elif m := STATE_RE.match(path.name):
            name = state_file_name(offset + int(m.group(1)))
        else:
            continue
        store.mkdir(exist_ok=True)
        path.replace(store / name)
    found = []
    if store.is_dir():
        for path in store.iterdir():
            if m := CHECKPOINT_RE.match(path.name):
                state = path.with_name(state_file_name(int(m.group(1))))
                found.append(Checkpoint(int(m.group(1)), path, state if state.is_file() else None))
    return sorted(found, key=lambda c: c.step)


def verify_checkpoint(path: Path) -> None:
    """Trust a checkpoint only if mlx can load it; otherwise discard it and raise."""
    import mlx.core as mx

    try:
        weights = mx.load(str(path))
        if not isinstance(weights, dict) or not weights:
            raise ValueError("it holds no tensors")
    except Exception as err:  # mlx raises RuntimeError/ValueError for damaged files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        path.unlink(missing_ok=True)
        raise CorruptCheckpointError(
            f"train: checkpoint {path} is corrupt and has been discarded ({reason}). "
            "Nothing from it was used; run the build again to resume from the previous "
            "checkpoint, or from the start if there is none."
        ) from err


def state_exact(checkpoint: Checkpoint) -> bool | None:
    """Whether `checkpoint`'s state file descends from the run's start through exact resumes
    only; None when it has none that loads and belongs to its step (such a file is removed:
    the checkpoint then resumes with its weights only)."""
    import mlx.core as mx

    if checkpoint.state is None:
        return None
    try:
        loaded = mx.load(str(checkpoint.state), return_metadata=True)
        assert isinstance(loaded, tuple)
        meta = loaded[1]
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {STATE_FORMAT!r}")
        if int(meta["step"]) != checkpoint.step:
            raise ValueError(f"the state after step {meta['step']}, not {checkpoint.step}")
        return meta["exact"] == "1"
    except Exception:  # unreadable or foreign: the weights can still be used
        checkpoint.state.unlink(missing_ok=True)
        return None


def tidy(work: Path) -> None:
    """Remove the checkpoints of a finished run: its final adapters are what counts."""
    for path in work.iterdir():
        names = (CHECKPOINT_RE, STATE_RE, PARTIAL_STATE_RE)
        if path.is_file() and any(r.match(path.name) for r in names):
            path.unlink()
    if (work / CHECKPOINTS).is_dir():
        shutil.rmtree(work / CHECKPOINTS)


@dataclass(frozen=True)
class Resume:
    checkpoint: Checkpoint
    exact: bool
    """Its state is used and descends from the start through exact resumes only."""


def choose_resume(checkpoints: list[Checkpoint], total: int, log: Log) -> Resume | None:
    """The checkpoint to resume from: the newest with a state file, else the newest.

    A newer checkpoint without state (the attempt died between the weights and the state) is
    given up for an exact resume a few iterations earlier; checkpoints after the one chosen
    belong to the run that is abandoned now, and are removed.
    """
    usable: list[Checkpoint] = []
    for checkpoint in checkpoints:
        if checkpoint.step > total:  # from a different iteration count: not this run's
            for path in (checkpoint.path, checkpoint.state):
                if path is not None:
                    path.unlink(missing_ok=True)
        else:
            usable.append(checkpoint)
    if not usable:
        return None
    chosen: Checkpoint | None = None
    exact = False
    for checkpoint in reversed(usable):
        lineage = state_exact(checkpoint)
        if lineage is not None:
            chosen, exact = checkpoint, lineage
            break
        if checkpoint.state is not None:
            log(f"[train] discarded {checkpoint.state}: it does not load as this step's state")
    if chosen is None:  # no state anywhere: an older build's checkpoints, weights only
        chosen = dataclasses.replace(usable[-1], state=None)
    else:
        newer = [c for c in usable if c.step > chosen.step]
        if newer:
            log(
                f"[train] checkpoint{'s' if len(newer) > 1 else ''} after step {chosen.step} "
                f"{'have' if len(newer) > 1 else 'has'} no optimizer state: resuming exactly "
                f"from step {chosen.step} instead"
            )
        for checkpoint in newer:
            checkpoint.path.unlink(missing_ok=True)
    verify_checkpoint(chosen.path)  # raises (and discards) if it does not load
    return Resume(chosen, exact)
