"""The training stage's progress: figures parsed from the trainer's output lines.

mlx_lm's rows (train loss, tokens/s, validation loss, checkpoints), the trainer's own state
rows (pipeline/builder/trainer.py) and, under mlx.launch, each rank's started / finished line and
mlx.launch's warnings; `TrainProgress.message` turns a line into the progress line the build
prints (a training step's figures as a `Transient`: the next step supersedes them).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from pipeline.core.progress import Transient, clock

# mlx_lm 0.32's TrainUI rows (rich, colours stripped):
#   "    10    1.636 ▼      555      1.0k"   iteration, train loss, tokens/s, trained tokens
#   "    10    val 1.442    0.20s"           iteration, val loss, seconds
#   "  save  0000010_adapters.safetensors"
_TRAIN_ROW = re.compile(
    r"^\s*(\d+)\s+([\d.]+|nan|inf)\s+[▼▲]\s+([\d,.]+)\s+([\d.]+)k\s*$", re.IGNORECASE
)
_VAL_ROW = re.compile(r"^\s*(\d+)\s+val\s+([\d.]+|nan|inf)\s+([\d.]+)s\s*$", re.IGNORECASE)
_SAVE_ROW = re.compile(r"^\s*save\s+(\d{7})_adapters\.safetensors\s*$")
# pipeline.builder.trainer's rows once a checkpoint is complete (its state written, or not)
#   "  state  0000010_state.safetensors"
#   "  state  none for 0000010: mid gradient accumulation"
_STATE_ROW = re.compile(r"^\s*state\s+(\d{7})_state\.safetensors\s*$")
_NO_STATE_ROW = re.compile(r"^\s*state\s+none for (\d{7})")
# Older mlx_lm releases print one line per report; parsed too, in case the version moves.
_ITER_TRAIN = re.compile(
    r"Iter (\d+): Train loss ([\d.]+|nan).*?Tokens/sec ([\d.]+).*?(?:Peak mem ([\d.]+) GB)?$"
)
_ITER_VAL = re.compile(r"Iter (\d+): Val loss ([\d.]+|nan)")
# pipeline.builder.trainer's line per rank under mlx.launch, and mlx.launch's own warnings
#   "rank 1/2 started: pid 123 on host, BLAS /path/libopenblas.so.0, output in /run/train.rank1.log"
#   "rank 1/2 finished"
#   "[WARN] Node with rank 1 exited with code 1"
_RANK_ROW = re.compile(r"^rank (\d+)/(\d+) (started|finished)\b:?\s*(.*)$")
_LAUNCH_WARNING = re.compile(r"^\[WARN\] (Node with rank \d+ .*?)\s*$")
_TRAINABLE = re.compile(r"Trainable parameters:\s*([\d.]+)%\s*\(([\d.]+)M/([\d.]+)M\)")
_PEAK = re.compile(r"Peak mem ([\d.]+) GB")


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
