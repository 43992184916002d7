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
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.build.files import parameter_count
from pipeline.build.records import Attempt, Attempts, Resumed, TrainRecord
from pipeline.build.runner import Runner, StageError, mlx_lm_argv
from pipeline.core import io
from pipeline.core.progress import clock
from pipeline.spec.experiment import Experiment

CHECKPOINT_RE = re.compile(r"^(\d{7})_adapters\.safetensors$")
ADAPTER_FILE = "adapters.safetensors"
ATTEMPTS_FILE = "attempts.json"
LORA_CONFIG = "lora_config.yaml"
CHECKPOINTS = "checkpoints"

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
        parts.append(f"elapsed {clock(time.perf_counter() - self.started)}")
        eta = self.eta_seconds()
        if eta is not None and kind == "train":
            parts.append(f"ETA {clock(eta)}")
        return "  ".join(parts)

    def message(self, line: str) -> str | None:
        """Feed one output line; the progress line it calls for, if any (runner's on_line)."""
        kind = self.feed(line)
        if kind in ("train", "val", "save"):
            return self.line(kind)
        if kind == "info":
            return f"[train] trainable parameters: {self.trainable_text}"
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


class CorruptCheckpointError(StageError):
    """A checkpoint file does not load; it has been discarded (named in the message)."""


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
    """Move the last attempt's checkpoints to checkpoints/ under their global step; list all.

    A work folder without attempts.json (written before every attempt starts) is treated as a
    first attempt, offset 0.
    """
    attempts = read_attempts(work)
    offset = attempts[-1].offset if attempts else 0
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
    experiment: Experiment, *, base: Path, data: Path, work: Path, runner: Runner
) -> TrainRecord:
    """Train into `work` (kept across attempts), resuming from its newest loadable checkpoint.

    On success `work` holds adapters.safetensors and adapter_config.json for the whole run
    (fuse reads both).
    """
    total = experiment.train.iters
    log = runner.log
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
        io.write_text(work / LORA_CONFIG, lora_config_text(experiment))

    offset = resume.step if resume else 0
    remaining = total - offset
    if resume:
        log(
            f"[train] resuming from checkpoint {resume.path} (step {resume.step}/{total}): "
            f"training the remaining {remaining} iterations"
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
        argv = tuple(command(experiment, base, data, work, iters=remaining, resume=resume_from))
        attempt = Attempt(
            offset=offset,
            iters=remaining,
            resume_from=resume_from,
            command=argv,
            started=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        _write_attempts(work, (*attempts, attempt))
        log(f"[train] {experiment.train.fine_tune_type} fine-tune, {remaining} iterations")
        run = runner.run("train", argv, on_line=progress.message, status=progress.heartbeat)
        seconds, peak = round(run.seconds, 3), run.peak_rss_bytes
        finished = dataclasses.replace(
            attempt, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=seconds
        )
        _write_attempts(work, (*attempts, finished))

    adapter_file = work / ADAPTER_FILE
    tidy(work)
    if not adapter_file.is_file() or not (work / "adapter_config.json").is_file():
        raise StageError(
            f"train: mlx_lm finished but {work} lacks {ADAPTER_FILE} or adapter_config.json; "
            f"full log: {runner.log_path}"
        )
    trainable = parameter_count(adapter_file)
    log(
        f"[train] done in {seconds:.1f} s: train loss {_fmt(progress.train_loss)}, val loss "
        f"{_fmt(progress.val_loss)}, {trainable:,} trainable parameters"
    )
    return TrainRecord(
        seconds=seconds,
        peak_memory_bytes=peak,
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
        resumed_from=Resumed(checkpoint=resume.path, step=resume.step) if resume else None,
        attempts=read_attempts(work),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


__all__ = [
    "ADAPTER_FILE",
    "Checkpoint",
    "CorruptCheckpointError",
    "TrainProgress",
    "collect_checkpoints",
    "command",
    "lora_config_text",
    "read_attempts",
    "tidy",
    "train",
    "verify_checkpoint",
]
