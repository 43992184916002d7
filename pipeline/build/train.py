"""Train: mlx_lm's training loop in our own subprocess, resumable exactly, with progress.

The stage runs `python -m pipeline.build.trainer` (mlx_lm lora's flags; pipeline/build/trainer.py
drives mlx_lm's own loading, LoRA and `tuner.trainer.train`) as a subprocess so a build can
stream its progress, be killed, and resume. Its work folder (the build's `adapters.partial/`)
survives a killed attempt: every `save_every` iterations mlx_lm saves `NNNNNNN_adapters.safetensors`
and the trainer saves `NNNNNNN_state.safetensors` beside it (Adam's moments and step, numpy's
generator at the checkpoint and at the current epoch's start, mlx's random key). The next
attempt continues from the newest checkpoint with a state file that loads, with
`--resume-adapter-file`, `--resume-state` and only the remaining iterations: the trainer
restores the optimizer, replays the data order and restores the random state, so the resumed
run trains the same model an uninterrupted one does (tests/unit/build/test_resume.py: identical
tensors). A checkpoint without a state file (written by a build before the trainer existed,
or taken in the middle of a gradient accumulation) resumes with its weights only, as
`mlx_lm lora --resume-adapter-file` did: Adam's moments start from zero and the data order
from the beginning, close to but not identical with an uninterrupted run. build.json's
`resumed_from.exact` says which resume a build had (exact only if every earlier resume was).

With `[train.launch]` (or --launch-processes / --launch-hostfile) the same trainer runs
data-parallel under `mlx.launch` (`mlx.launch --backend ring -n N --starting-port P -- python
-m pipeline.build.trainer ... --ranks N --rank-logs RUN_DIR`, or `--hostfile PATH` instead of
the backend, -n and port). mlx_lm splits each batch of batch_size across the ranks and averages
their gradients: the effective batch is batch_size, each rank computing batch_size / N of it
(build.json: `ranks`, `effective_batch`, `rank_batch`). Local ranks inherit the launcher's
environment, OpenBLAS preload included (each rank's `rank R/N started` line names the BLAS it
has mapped). Progress is rank 0's output; the other ranks write theirs to
`RUN_DIR/train.rankR.log`. mlx.launch exits 0 even when a rank fails, so the stage succeeds
only when every rank printed `rank R/N finished`. Checkpoints and state files are rank 0's
and every rank resumes from them, exactly as one process does (pipeline/build/trainer.py).

mlx_lm 0.32 numbers a resumed run's iterations from 1 again, so a second attempt's checkpoint
`0000010_adapters.safetensors` means "10 iterations after where it resumed". Before each
attempt the previous attempt's checkpoints (and state files) are therefore moved to
`checkpoints/` under their global iteration number, using the offset recorded in
`attempts.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.build.files import parameter_count
from pipeline.build.records import Attempt, Attempts, Resumed, TrainRecord
from pipeline.build.runner import PEAK_MEMORY_SOURCE, CommandRun, Log, Runner, StageError
from pipeline.core import io
from pipeline.core.progress import Transient, clock
from pipeline.spec.experiment import Experiment, Launch

CHECKPOINT_RE = re.compile(r"^(\d{7})_adapters\.safetensors$")
STATE_RE = re.compile(r"^(\d{7})_state\.safetensors$")
PARTIAL_STATE_RE = re.compile(r"^\d{7}_state\.partial\.safetensors$")
STATE_FORMAT = "routegate-train-state/1"
"""The state file's `format` metadata (pipeline/build/trainer.py writes and reads it)."""
TRAINER = "pipeline.build.trainer"
ADAPTER_FILE = "adapters.safetensors"
ATTEMPTS_FILE = "attempts.json"
LORA_CONFIG = "lora_config.yaml"
CHECKPOINTS = "checkpoints"
RANK_LOG = "train.rank{rank}.log"
"""A rank's output other than rank 0's, in the run folder (pipeline/build/trainer.py)."""
LAUNCHED_PEAK_MEMORY_SOURCE = (
    "rusage maxrss of the largest of mlx.launch and its local ranks (one rank, not their sum; "
    "remote ranks not counted)"
)

# mlx_lm 0.32's TrainUI rows (rich, colours stripped):
#   "    10    1.636 ▼      555      1.0k"   iteration, train loss, tokens/s, trained tokens
#   "    10    val 1.442    0.20s"           iteration, val loss, seconds
#   "  save  0000010_adapters.safetensors"
_TRAIN_ROW = re.compile(
    r"^\s*(\d+)\s+([\d.]+|nan|inf)\s+[▼▲]\s+([\d,.]+)\s+([\d.]+)k\s*$", re.IGNORECASE
)
_VAL_ROW = re.compile(r"^\s*(\d+)\s+val\s+([\d.]+|nan|inf)\s+([\d.]+)s\s*$", re.IGNORECASE)
_SAVE_ROW = re.compile(r"^\s*save\s+(\d{7})_adapters\.safetensors\s*$")
# pipeline.build.trainer's rows once a checkpoint is complete (its state written, or not)
#   "  state  0000010_state.safetensors"
#   "  state  none for 0000010: mid gradient accumulation"
_STATE_ROW = re.compile(r"^\s*state\s+(\d{7})_state\.safetensors\s*$")
_NO_STATE_ROW = re.compile(r"^\s*state\s+none for (\d{7})")
# Older mlx_lm releases print one line per report; parsed too, in case the version moves.
_ITER_TRAIN = re.compile(
    r"Iter (\d+): Train loss ([\d.]+|nan).*?Tokens/sec ([\d.]+).*?(?:Peak mem ([\d.]+) GB)?$"
)
_ITER_VAL = re.compile(r"Iter (\d+): Val loss ([\d.]+|nan)")
# pipeline.build.trainer's line per rank under mlx.launch, and mlx.launch's own warnings
#   "rank 1/2 started: pid 123 on host, BLAS /path/libopenblas.so.0, output in /run/train.rank1.log"
#   "rank 1/2 finished"
#   "[WARN] Node with rank 1 exited with code 1"
_RANK_ROW = re.compile(r"^rank (\d+)/(\d+) (started|finished)\b:?\s*(.*)$")
_LAUNCH_WARNING = re.compile(r"^\[WARN\] (Node with rank \d+ .*?)\s*$")
_TRAINABLE = re.compile(r"Trainable parameters:\s*([\d.]+)%\s*\(([\d.]+)M/([\d.]+)M\)")
_PEAK = re.compile(r"Peak mem ([\d.]+) GB")


# --- progress -----------------------------------------------------------------------------------


@dataclass
class TrainProgress:
    """Figures parsed from the trainer's output (mlx_lm's rows and its own), in global
    iterations (offset + the attempt's own)."""

    total: int
    offset: int = 0
    step: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    val_step: int | None = None
    tokens_per_second: float | None = None
    peak_memory_gb: float | None = None
    trainable_text: str = ""
    trainable_millions: float | None = None
    total_millions: float | None = None
    saved: list[int] = field(default_factory=list)
    """Complete checkpoints (weights, and the state unless mid gradient accumulation)."""
    saved_exact: bool = True
    """The newest checkpoint has its state: a resume from it is exact."""
    started: float = field(default_factory=time.perf_counter)
    first_step_at: tuple[int, float] | None = None
    ranks_started: dict[int, str] = field(default_factory=dict)
    """Under mlx.launch: each rank that announced itself, with what it said."""
    ranks_finished: set[int] = field(default_factory=set)
    launch_warnings: list[str] = field(default_factory=list)
    """mlx.launch's own lines about ranks that exited or were killed."""

    def feed(self, line: str) -> str | None:
        """Update from one output line; the kind of event it was ('train', 'val', 'save',
        'rank' ...)."""
        if m := _RANK_ROW.match(line.strip()):
            rank = int(m.group(1))
            if m.group(3) == "started":
                self.ranks_started[rank] = line.strip()
                return "rank started"
            self.ranks_finished.add(rank)
            return "rank finished"
        if m := _LAUNCH_WARNING.match(line.strip()):
            self.launch_warnings.append(m.group(1))
            return "launch"
        if m := _TRAINABLE.search(line):
            self.trainable_text = line.split(":", 1)[1].strip()
            self.trainable_millions = float(m.group(2))
            self.total_millions = float(m.group(3))
            return "info"
        if m := _PEAK.search(line):
            self.peak_memory_gb = max(self.peak_memory_gb or 0.0, float(m.group(1)))
        if m := _TRAIN_ROW.match(line):
            self._step(int(m.group(1)))
            self.train_loss = float(m.group(2))
            self.tokens_per_second = float(m.group(3).replace(",", ""))
            return "train"
        if m := _ITER_TRAIN.search(line):
            self._step(int(m.group(1)))
            self.train_loss = float(m.group(2))
            self.tokens_per_second = float(m.group(3))
            return "train"
        if m := _VAL_ROW.match(line) or _ITER_VAL.search(line):
            # mlx_lm validates at iteration `it` before training it: after it - 1 steps
            self.val_loss = float(m.group(2))
            self.val_step = self.offset + int(m.group(1)) - 1
            return "val"
        if _SAVE_ROW.match(line):
            # the weights alone: the checkpoint is complete with the trainer's state row next
            return "weights"
        if m := _STATE_ROW.match(line) or _NO_STATE_ROW.match(line):
            self.saved.append(self.offset + int(m.group(1)))
            self.saved_exact = m.re is _STATE_ROW
            return "save"
        return None

    def _step(self, local: int) -> None:
        self.step = self.offset + local
        if self.first_step_at is None:
            self.first_step_at = (self.step, time.perf_counter())

    def eta_seconds(self) -> float | None:
        if self.first_step_at is None:
            return None
        step0, t0 = self.first_step_at
        done = self.step - step0
        if done <= 0:
            # only one report so far: rate since the attempt started (includes model loading)
            done, t0 = self.step - self.offset, self.started
        if done <= 0:
            return None
        rate = (time.perf_counter() - t0) / done
        return rate * max(self.total - self.step, 0)

    def line(self, kind: str) -> str:
        parts = [f"[train] step {self.step}/{self.total}"]
        if kind == "val":
            parts = [
                f"[train] val loss {self.val_loss:.3f} after step {self.val_step}/{self.total}"
            ]
        elif kind == "save":
            parts = [f"[train] checkpoint at step {self.saved[-1]}/{self.total}"]
            if not self.saved_exact:
                parts.append("weights only (mid gradient accumulation)")
        else:
            if self.train_loss is not None:
                parts.append(f"loss {self.train_loss:.3f}")
            if self.val_loss is not None:
                parts.append(f"val {self.val_loss:.3f}")
            if self.tokens_per_second is not None:
                parts.append(f"{self.tokens_per_second:,.0f} tok/s")
        parts.append(f"elapsed {clock(time.perf_counter() - self.started)}")
        eta = self.eta_seconds()
        if eta is not None and kind == "train":
            parts.append(f"ETA {clock(eta)}")
        return "  ".join(parts)

    def message(self, line: str) -> str | None:
        """Feed one output line; the progress line it calls for, if any (runner's on_line)."""
        kind = self.feed(line)
        if kind == "train":  # the next step's figures supersede these
            return Transient(self.line(kind))
        if kind in ("val", "save"):
            return self.line(kind)
        if kind == "info":
            return f"[train] trainable parameters: {self.trainable_text}"
        if kind == "rank started":
            return f"[train] {line.strip()}"
        if kind == "launch":
            return f"[train] mlx.launch: {self.launch_warnings[-1]}"
        return None

    def heartbeat(self, seconds: float) -> str:
        """The line for a quiet spell (runner's status): where training stands."""
        if self.step > self.offset:
            return self.line("train")
        # mlx_lm prints nothing between its first validation and the first report
        doing = "loading the model and data" if self.val_loss is None else "first steps"
        return f"[train] step {self.step}/{self.total}  {doing}  elapsed {clock(seconds)}"


# --- checkpoints and attempts -----------------------------------------------------------------


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


def _write_attempts(work: Path, attempts: tuple[Attempt, ...]) -> None:
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
class _Resume:
    checkpoint: Checkpoint
    exact: bool
    """Its state is used and descends from the start through exact resumes only."""


def _choose(checkpoints: list[Checkpoint], total: int, log: Log) -> _Resume | None:
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
    return _Resume(chosen, exact)


# --- the stage --------------------------------------------------------------------------------


def lora_config_text(experiment: Experiment) -> str:
    """LoRA rank/scale/dropout have no mlx_lm flags: they go through `-c` (JSON is YAML)."""
    t = experiment.train
    params = {"rank": t.lora_rank, "scale": t.lora_scale, "dropout": t.lora_dropout}
    return json.dumps({"lora_parameters": params}, indent=2) + "\n"


def command(
    experiment: Experiment,
    base: Path,
    data: Path,
    out: Path,
    *,
    offset: int = 0,
    resume: Path | None = None,
    state: Path | None = None,
) -> list[str]:
    """The exact trainer command line (mlx_lm lora's flags, then ours) for these settings:
    the iterations after `offset`, resuming from the checkpoint `resume` (and its `state`)."""
    t = experiment.train
    args = [
        "--train",
        "--model", str(base),
        "--data", str(data),
        "--adapter-path", str(out),
        "--fine-tune-type", t.fine_tune_type,
        "--num-layers", str(t.num_layers),
        "--iters", str(t.iters - offset),
        "--batch-size", str(t.batch_size),
        "--learning-rate", repr(t.learning_rate),
        "--grad-accumulation-steps", str(t.grad_accumulation_steps),
    ]  # fmt: skip
    if t.mask_prompt:
        args.append("--mask-prompt")
    args += [
        "--save-every", str(t.save_every),
        "--steps-per-report", str(t.steps_per_report),
        "--steps-per-eval", str(t.steps_per_eval),
        "--val-batches", str(t.val_batches),
        "--max-seq-length", str(t.max_seq_length),
        "--seed", str(t.seed),
    ]  # fmt: skip
    if t.fine_tune_type != "full":
        args += ["-c", str(out / LORA_CONFIG)]
    args += ["--offset", str(offset), "--total-iters", str(t.iters)]
    if state is not None:
        args += ["--resume-state", str(state)]
    if resume is not None:
        args += ["--resume-adapter-file", str(resume)]
    argv = [sys.executable, "-m", TRAINER, *args]
    if not t.launch.launched:
        return argv
    # the other ranks' output goes beside the build log (the run folder holds `out`)
    ranks = ["--ranks", str(t.launch.ranks()), "--rank-logs", str(out.parent)]
    return [*launcher(t.launch), "--", *argv, *ranks]


def mlx_launch() -> str:
    """mlx's launcher script beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mlx.launch")
    found = str(beside) if beside.is_file() else shutil.which("mlx.launch")
    if found is None:
        raise StageError(
            f"train: [train.launch] needs mlx's `mlx.launch`, which is neither beside "
            f"{sys.executable} nor on PATH; install mlx into this environment"
        )
    return found


def launcher(launch: Launch) -> list[str]:
    """`mlx.launch` and its options for the layout (the command to launch follows `--`).

    mlx.launch (mlx 0.32) waits for its ranks' output in a select() that also watches their
    stdin pipes, which are always writable, so it never waits: it keeps about one core busy
    while they train (measured here: 4.1 s of CPU while two ranks slept 5 s). On a machine
    with few cores that is part of what two ranks cost.
    """
    if launch.hostfile is not None:
        # remote ranks get only the environment mlx.launch passes on (local ones inherit
        # it): unbuffered, uncoloured output, as the runner gives its own child
        env = ["PYTHONUNBUFFERED=1", "NO_COLOR=1", "TERM=dumb"]
        return [mlx_launch(), "--hostfile", str(launch.hostfile), *_flags("--env", env)]
    # mlx.launch's ring listens on 32323 + rank unless told otherwise: a free range instead,
    # so two launched builds (pytest workers, two experiments) do not meet on one port
    port = free_ports(launch.processes)
    return [mlx_launch(), "--backend", "ring", "-n", str(launch.processes), "-p", str(port)]


def _flags(flag: str, values: list[str]) -> list[str]:
    return [arg for value in values for arg in (flag, value)]


def free_ports(count: int, *, tries: int = 50) -> int:
    """The first of `count` consecutive loopback ports nothing listens on just now."""
    for _ in range(tries):
        start = random.randint(20000, 60000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(start, start + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise StageError(f"train: found no {count} free consecutive loopback ports for mlx.launch")


def train(
    experiment: Experiment, *, base: Path, data: Path, work: Path, runner: Runner
) -> TrainRecord:
    """Train into `work` (kept across attempts), resuming from its best checkpoint (see
    the module docstring).

    On success `work` holds adapters.safetensors and adapter_config.json for the whole run
    (fuse reads both).
    """
    total = experiment.train.iters
    launch = experiment.train.launch
    log = runner.log
    work.mkdir(parents=True, exist_ok=True)
    chosen = _choose(collect_checkpoints(work), total, log)
    resume = chosen.checkpoint if chosen else None
    attempts = read_attempts(work)
    if experiment.train.fine_tune_type != "full":
        io.write_text(work / LORA_CONFIG, lora_config_text(experiment))

    offset = resume.step if resume else 0
    remaining = total - offset
    # the state records its lineage: exact only if every earlier resume was exact too
    exact = chosen is not None and chosen.exact
    if resume:
        if resume.state is None:
            how = (
                "with the weights only (the checkpoint has no optimizer state: Adam restarts "
                "from zero and the data order from the beginning)"
            )
        elif exact:
            how = "exactly (weights, optimizer state, data order, random state)"
        else:
            how = (
                "with its weights, optimizer state, data order and random state, which "
                "descend from an earlier weights-only resume (not an uninterrupted run's)"
            )
        log(
            f"[train] resuming from checkpoint {resume.path} (step {resume.step}/{total}): "
            f"training the remaining {remaining} iterations {how}"
        )
    elif attempts:
        log("[train] an earlier attempt left no checkpoint: starting from the beginning")

    progress = TrainProgress(total=total, offset=offset)
    argv: tuple[str, ...] = ()
    seconds, peak = 0.0, None
    if remaining <= 0 and resume is not None:
        # the last checkpoint is the final one: its weights are the result
        (work / ADAPTER_FILE).write_bytes(resume.path.read_bytes())
        log("[train] the newest checkpoint is the final iteration: nothing left to train")
    else:
        resume_from = resume.path if resume else None
        state = resume.state if resume else None
        argv = tuple(
            command(experiment, base, data, work, offset=offset, resume=resume_from, state=state)
        )
        attempt = Attempt(
            offset=offset,
            iters=remaining,
            resume_from=resume_from,
            command=argv,
            started=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        _write_attempts(work, (*attempts, attempt))
        log(
            f"[train] {experiment.train.fine_tune_type} fine-tune, {remaining} iterations"
            + _layout(experiment)
        )
        try:
            run = runner.run("train", argv, on_line=progress.message, status=progress.heartbeat)
        except StageError as err:
            if not launch.launched:
                raise
            _wait_for_local_ranks(progress)
            raise StageError(f"{err}{_ranks_said(work, launch.ranks())}") from err
        except BaseException:  # stopped (Ctrl-C, the build's callback): the ranks go too
            if launch.launched:
                _wait_for_local_ranks(progress)
            raise
        if launch.launched:
            _check_ranks(progress, work, launch.ranks(), run, runner)
        seconds, peak = round(run.seconds, 3), run.peak_rss_bytes
        finished = dataclasses.replace(
            attempt, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=seconds
        )
        _write_attempts(work, (*attempts, finished))

    adapter_file = work / ADAPTER_FILE
    tidy(work)
    if not adapter_file.is_file() or not (work / "adapter_config.json").is_file():
        raise StageError(
            f"train: the trainer finished but {work} lacks {ADAPTER_FILE} or "
            f"adapter_config.json; full log: {runner.log_path}"
        )
    trainable = parameter_count(adapter_file)
    log(
        f"[train] done in {seconds:.1f} s: train loss {_fmt(progress.train_loss)}, val loss "
        f"{_fmt(progress.val_loss)}, {trainable:,} trainable parameters"
    )
    resumed = None
    if resume is not None:
        resumed = Resumed(checkpoint=resume.path, step=resume.step, exact=exact, state=resume.state)
    ranks = launch.ranks()
    return TrainRecord(
        seconds=seconds,
        peak_memory_bytes=peak,
        peak_memory_source=(LAUNCHED_PEAK_MEMORY_SOURCE if launch.launched else PEAK_MEMORY_SOURCE),
        command=argv,
        mlx_peak_memory_gb=progress.peak_memory_gb,
        train_loss=progress.train_loss,
        val_loss=progress.val_loss,
        val_loss_step=progress.val_step,
        tokens_per_second=progress.tokens_per_second,
        trainable_parameters=trainable,
        trainable_parameters_reported=progress.trainable_text or None,
        total_parameters_millions=progress.total_millions,
        fine_tune_type=experiment.train.fine_tune_type,
        iters=total,
        resumed_from=resumed,
        attempts=read_attempts(work),
        ranks=ranks,
        effective_batch=experiment.train.batch_size,
        rank_batch=experiment.train.batch_size // ranks,
    )


def _layout(experiment: Experiment) -> str:
    """How the iterations are spread, for the stage's first line ("" for one process)."""
    t = experiment.train
    if not t.launch.launched:
        return ""
    ranks = t.launch.ranks()
    where = f"hostfile {t.launch.hostfile}" if t.launch.hostfile else "local processes"
    return (
        f", data-parallel on {ranks} rank{'s' if ranks != 1 else ''} under mlx.launch ({where}):"
        f" each batch of {t.batch_size} split {t.batch_size // ranks} per rank"
    )


def rank_log(folder: Path, rank: int) -> Path:
    """Where rank `rank` (not 0) writes its output: `folder` is the run folder."""
    return folder / RANK_LOG.format(rank=rank)


def _ranks_said(work: Path, ranks: int) -> str:
    """What the ranks other than 0 said, for a failed launched training (rank 0's output and
    mlx.launch's are the log's tail, in the message already)."""
    lines: list[str] = []
    for rank in range(1, ranks):
        path = rank_log(work.parent, rank)
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        # this attempt's part: the file gathers every attempt's output
        starts = [i for i, line in enumerate(text) if line.startswith(f"# rank {rank}/")]
        tail = [line for line in text[starts[-1] if starts else 0 :] if line.strip()][-8:]
        lines.append(f"\nrank {rank}'s last output ({path}):")
        lines += [f"\n  {line}" for line in tail]
    return "".join(lines)


_STARTED_PID = re.compile(r" started: pid (\d+) on (\S+?),")


def _wait_for_local_ranks(progress: TrainProgress, timeout: float = 20.0) -> None:
    """Wait (a while) for this host's ranks of a stopped launch to exit.

    The runner waits for mlx.launch only; its ranks, told to stop when it dies
    (pipeline/build/trainer.py), may still be finishing a step, and a next attempt must not
    start while one could still write into the work folder.
    """
    here = socket.gethostname()
    pids = []
    for line in progress.ranks_started.values():
        if (m := _STARTED_PID.search(line)) and m.group(2) == here:
            pids.append(int(m.group(1)))
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _running(pid)]
        if pids:
            time.sleep(0.1)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphaned rank waits for init to reap it)."""
    if not Path("/proc/self/stat").is_file():  # macOS: no /proc, and zombies are reaped fast
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _check_ranks(
    progress: TrainProgress, work: Path, ranks: int, run: CommandRun, runner: Runner
) -> None:
    """mlx.launch exits 0 whether or not its ranks did (mlx 0.32): the training succeeded only
    if every rank said it finished."""
    missing = [r for r in range(ranks) if r not in progress.ranks_finished]
    if not missing:
        return
    names = ", ".join(str(r) for r in missing)
    tail = [line for line in run.tail if line.strip()][-15:]
    raise StageError(
        f"train: rank{'s' if len(missing) > 1 else ''} {names} of {ranks} did not finish "
        f"under mlx.launch (which exits 0 all the same); last output (rank 0's):\n"
        + "\n".join(f"  {line}" for line in tail)
        + _ranks_said(work, ranks)
        + f"\nfull log: {runner.log_path}"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


__all__ = [
    "ADAPTER_FILE",
    "STATE_FORMAT",
    "TRAINER",
    "Checkpoint",
    "CorruptCheckpointError",
    "TrainProgress",
    "collect_checkpoints",
    "command",
    "free_ports",
    "launcher",
    "lora_config_text",
    "mlx_launch",
    "rank_log",
    "read_attempts",
    "state_exact",
    "state_file_name",
    "tidy",
    "train",
    "verify_checkpoint",
]
