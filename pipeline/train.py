"""Train: `python -m mlx_lm lora --train`, resumable from its own checkpoints, with progress.

The stage runs mlx_lm as a subprocess so a build can stream its progress, be killed, and
resume. Its work folder (the build's `adapters.partial/`) survives a killed attempt: mlx_lm
saves `NNNNNNN_adapters.safetensors` every `save_every` iterations, and the next attempt
continues from the newest checkpoint that loads, with `--resume-adapter-file` and only the
remaining iterations.

mlx_lm 0.32 numbers a resumed run's iterations from 1 again, so a second attempt's checkpoint
`0000010_adapters.safetensors` means "10 iterations after where it resumed". Before each
attempt the previous attempt's checkpoints are therefore moved to `checkpoints/` under their
global iteration number, using the offset recorded in `attempts.json`. Resuming restores the
weights only: Adam's moments start from zero and the data order starts from the beginning
again, so a resumed run is close to, not identical with, an uninterrupted one.

This module also holds the subprocess runner the three stages share (`run_mlx_lm`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipeline.blas import child_env
from pipeline.experiment import Experiment

Log = Callable[[str], None]

CHECKPOINT_RE = re.compile(r"^(\d{7})_adapters\.safetensors$")
ADAPTER_FILE = "adapters.safetensors"
ATTEMPTS_FILE = "attempts.json"
LORA_CONFIG = "lora_config.yaml"
CHECKPOINTS = "checkpoints"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# mlx_lm 0.32's TrainUI rows (rich, colours stripped):
#   "    10    1.636 ▼      555      1.0k"   iteration, train loss, tokens/s, trained tokens
#   "    10    val 1.442    0.20s"           iteration, val loss, seconds
#   "  save  0000010_adapters.safetensors"
_TRAIN_ROW = re.compile(
    r"^\s*(\d+)\s+([\d.]+|nan|inf)\s+[▼▲]\s+([\d,.]+)\s+([\d.]+)k\s*$", re.IGNORECASE
)
_VAL_ROW = re.compile(r"^\s*(\d+)\s+val\s+([\d.]+|nan|inf)\s+([\d.]+)s\s*$", re.IGNORECASE)
_SAVE_ROW = re.compile(r"^\s*save\s+(\d{7})_adapters\.safetensors\s*$")
# Older mlx_lm releases print one line per report; parsed too, in case the version moves.
_ITER_TRAIN = re.compile(
    r"Iter (\d+): Train loss ([\d.]+|nan).*?Tokens/sec ([\d.]+).*?(?:Peak mem ([\d.]+) GB)?$"
)
_ITER_VAL = re.compile(r"Iter (\d+): Val loss ([\d.]+|nan)")
_TRAINABLE = re.compile(r"Trainable parameters:\s*([\d.]+)%\s*\(([\d.]+)M/([\d.]+)M\)")
_PEAK = re.compile(r"Peak mem ([\d.]+) GB")


class StageError(RuntimeError):
    """A stage failed; the message says which, why, and where its full log is."""


# --- the shared runner ------------------------------------------------------------------------


@dataclass
class CommandRun:
    """One finished mlx_lm subprocess."""

    argv: list[str]
    returncode: int
    seconds: float
    peak_rss_bytes: int | None
    tail: list[str] = field(default_factory=list)


def mlx_lm_argv(command: str, *args: str) -> list[str]:
    """`python -m mlx_lm COMMAND ...` with this interpreter."""
    return [sys.executable, "-m", "mlx_lm", command, *args]


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the trainer gets SIGTERM when the build that started it dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_mlx_lm(
    argv: Sequence[str],
    *,
    log_file: IO[str],
    on_line: Callable[[str], None] = lambda line: None,
    pass_fds: Sequence[int] = (),
) -> CommandRun:
    """Run a command, streaming each output line (ANSI colours removed) to the log and on_line.

    stderr is merged into stdout so the log keeps the order mlx_lm printed in. Peak memory is
    the child's maximum resident set (wait4's rusage). `pass_fds` keeps the build's lock held
    by the child too, so an orphaned trainer still blocks a second build of the same inputs.
    """
    env = child_env()
    env.update(PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb", COLUMNS="120")
    log_file.write(f"$ {subprocess.list2cmdline(list(argv))}\n")
    log_file.flush()
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        env=env,
        pass_fds=tuple(pass_fds),
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    tail: list[str] = []
    rusage = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = strip_ansi(raw.rstrip("\n"))
            log_file.write(line + "\n")
            log_file.flush()
            tail = [*tail[-39:], line]
            on_line(line)
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:  # interrupted (Ctrl-C, an exception in on_line): stop it
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    seconds = time.perf_counter() - started
    peak = None
    if rusage is not None:
        # ru_maxrss is KiB on Linux, bytes on macOS
        peak = rusage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    log_file.write(f"# exit {proc.returncode} after {seconds:.1f} s\n")
    log_file.flush()
    return CommandRun(list(argv), proc.returncode, seconds, peak, tail)


def check_run(run: CommandRun, stage: str, log_path: Path) -> None:
    """Raise StageError with the output's last lines when the command failed."""
    if run.returncode == 0:
        return
    how = (
        f"was killed by signal {-run.returncode}"
        if run.returncode < 0
        else f"exited with status {run.returncode}"
    )
    lines = [line for line in run.tail if line.strip()][-15:]
    raise StageError(
        f"{stage}: `{subprocess.list2cmdline(run.argv)}` {how}; last output:\n"
        + "\n".join(f"  {line}" for line in lines)
        + f"\nfull log: {log_path}"
    )


# --- safetensors helpers (no tensor data read) --------------------------------------------------


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file: tensor names, dtypes, shapes, offsets."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    header.pop("__metadata__", None)
    return header


def parameter_count(path: Path) -> int:
    total = 0
    for info in safetensors_header(path).values():
        n = 1
        for dim in info["shape"]:
            n *= int(dim)
        total += n
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- progress -----------------------------------------------------------------------------------


@dataclass
class TrainProgress:
    """Figures parsed from mlx_lm's output, in global iterations (offset + the attempt's own)."""

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
    started: float = field(default_factory=time.perf_counter)
    first_step_at: tuple[int, float] | None = None

    def feed(self, line: str) -> str | None:
        """Update from one output line; the kind of event it was ('train', 'val', 'save')."""
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
        if m := _SAVE_ROW.match(line):
            self.saved.append(self.offset + int(m.group(1)))
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
        else:
            if self.train_loss is not None:
                parts.append(f"loss {self.train_loss:.3f}")
            if self.val_loss is not None:
                parts.append(f"val {self.val_loss:.3f}")
            if self.tokens_per_second is not None:
                parts.append(f"{self.tokens_per_second:,.0f} tok/s")
        parts.append(f"elapsed {_clock(time.perf_counter() - self.started)}")
        eta = self.eta_seconds()
        if eta is not None and kind == "train":
            parts.append(f"ETA {_clock(eta)}")
        return "  ".join(parts)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --- checkpoints and attempts -----------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


class CorruptCheckpointError(StageError):
    """A checkpoint file does not load; it has been discarded (named in the message)."""


def read_attempts(work: Path) -> list[dict[str, Any]]:
    path = work / ATTEMPTS_FILE
    if not path.is_file():
        return []
    try:
        attempts = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return attempts if isinstance(attempts, list) else []


def _write_attempts(work: Path, attempts: list[dict[str, Any]]) -> None:
    tmp = work / (ATTEMPTS_FILE + ".tmp")
    tmp.write_text(json.dumps(attempts, indent=2) + "\n")
    tmp.replace(work / ATTEMPTS_FILE)


def collect_checkpoints(work: Path) -> list[Checkpoint]:
    """Move the last attempt's checkpoints to checkpoints/ under their global step; list all.

    A work folder without attempts.json (written before every attempt starts) is treated as a
    first attempt, offset 0.
    """
    attempts = read_attempts(work)
    offset = int(attempts[-1].get("offset", 0)) if attempts else 0
    store = work / CHECKPOINTS
    for path in sorted(work.iterdir()):
        m = CHECKPOINT_RE.match(path.name)
        if m and path.is_file():
            store.mkdir(exist_ok=True)
            path.replace(store / f"{offset + int(m.group(1)):07d}_adapters.safetensors")
    found = []
    if store.is_dir():
        for path in store.iterdir():
            if m := CHECKPOINT_RE.match(path.name):
                found.append(Checkpoint(int(m.group(1)), path))
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


def tidy(work: Path) -> None:
    """Remove the checkpoints of a finished run: its final adapters are what counts."""
    for path in work.iterdir():
        if CHECKPOINT_RE.match(path.name) and path.is_file():
            path.unlink()
    if (work / CHECKPOINTS).is_dir():
        shutil.rmtree(work / CHECKPOINTS)


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
    iters: int | None = None,
    resume: Path | None = None,
) -> list[str]:
    """The exact `mlx_lm lora --train` command line for these settings."""
    t = experiment.train
    args = [
        "--train",
        "--model", str(base),
        "--data", str(data),
        "--adapter-path", str(out),
        "--fine-tune-type", t.fine_tune_type,
        "--num-layers", str(t.num_layers),
        "--iters", str(t.iters if iters is None else iters),
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
    if resume is not None:
        args += ["--resume-adapter-file", str(resume)]
    return mlx_lm_argv("lora", *args)


def train(
    experiment: Experiment,
    *,
    base: Path,
    data: Path,
    work: Path,
    log: Log = print,
    log_file: IO[str],
    log_path: Path,
    pass_fds: Sequence[int] = (),
) -> dict[str, Any]:
    """Train into `work` (kept across attempts), resuming from its newest loadable checkpoint.

    Returns the stage's figures for build.json. On success `work` holds adapters.safetensors
    and adapter_config.json for the whole run (fuse reads both).
    """
    total = experiment.train.iters
    work.mkdir(parents=True, exist_ok=True)
    checkpoints = collect_checkpoints(work)
    resume: Checkpoint | None = None
    for checkpoint in reversed(checkpoints):
        if checkpoint.step > total:  # from a different iteration count: not this run's
            checkpoint.path.unlink()
            continue
        verify_checkpoint(checkpoint.path)  # raises (and discards) if it does not load
        resume = checkpoint
        break
    attempts = read_attempts(work)
    if experiment.train.fine_tune_type != "full":
        (work / LORA_CONFIG).write_text(lora_config_text(experiment))

    offset = resume.step if resume else 0
    remaining = total - offset
    if resume:
        log(
            f"[train] resuming from checkpoint {resume.path} (step {resume.step}/{total}): "
            f"training the remaining {remaining} iterations"
        )
        log_file.write(f"# resumed from {resume.path} at step {resume.step}\n")
    elif attempts:
        log("[train] an earlier attempt left no checkpoint: starting from the beginning")

    runs: list[CommandRun] = []
    progress = TrainProgress(total=total, offset=offset)
    if remaining <= 0 and resume is not None:
        # the last checkpoint is the final one: its weights are the result
        (work / ADAPTER_FILE).write_bytes(resume.path.read_bytes())
        log("[train] the newest checkpoint is the final iteration: nothing left to train")
        argv: list[str] = []
    else:
        argv = command(
            experiment, base, data, work, iters=remaining, resume=resume.path if resume else None
        )
        attempts.append(
            {
                "offset": offset,
                "iters": remaining,
                "resume_from": str(resume.path) if resume else None,
                "command": argv,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        _write_attempts(work, attempts)
        log(f"[train] {experiment.train.fine_tune_type} fine-tune, {remaining} iterations")

        def on_line(line: str) -> None:
            kind = progress.feed(line)
            if kind in ("train", "val", "save"):
                log(progress.line(kind))
            elif kind == "info":
                log(f"[train] trainable parameters: {progress.trainable_text}")

        run = run_mlx_lm(argv, log_file=log_file, on_line=on_line, pass_fds=pass_fds)
        runs.append(run)
        check_run(run, "train", log_path)
        attempts[-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        attempts[-1]["seconds"] = round(run.seconds, 3)
        _write_attempts(work, attempts)

    adapter_file = work / ADAPTER_FILE
    tidy(work)
    if not adapter_file.is_file() or not (work / "adapter_config.json").is_file():
        raise StageError(
            f"train: mlx_lm finished but {work} lacks {ADAPTER_FILE} or adapter_config.json; "
            f"full log: {log_path}"
        )
    return {
        "seconds": round(sum(r.seconds for r in runs), 3),
        "peak_memory_bytes": max((r.peak_rss_bytes or 0 for r in runs), default=0) or None,
        "peak_memory_source": "rusage maxrss of the mlx_lm process",
        "mlx_peak_memory_gb": progress.peak_memory_gb,
        "train_loss": progress.train_loss,
        "val_loss": progress.val_loss,
        "val_loss_step": progress.val_step,
        "trainable_parameters": parameter_count(adapter_file),
        "trainable_parameters_reported": progress.trainable_text or None,
        "total_parameters_millions": progress.total_millions,
        "fine_tune_type": experiment.train.fine_tune_type,
        "iters": total,
        "command": argv,
        "resumed_from": ({"checkpoint": str(resume.path), "step": resume.step} if resume else None),
        "attempts": read_attempts(work),
    }


__all__ = [
    "ADAPTER_FILE",
    "Checkpoint",
    "CommandRun",
    "CorruptCheckpointError",
    "StageError",
    "TrainProgress",
    "check_run",
    "collect_checkpoints",
    "command",
    "folder_bytes",
    "lora_config_text",
    "mlx_lm_argv",
    "parameter_count",
    "run_mlx_lm",
    "safetensors_header",
    "tidy",
    "train",
    "verify_checkpoint",
]
