"""Train: mlx_lm's training loop in our own subprocess, resumable exactly, with progress.

The stage runs `python -m pipeline.builder.trainer` (mlx_lm lora's flags;
pipeline/builder/trainer.py drives mlx_lm's own loading, LoRA and `tuner.trainer.train`) as a
subprocess so a build can stream its progress, be killed, and resume. Its work folder (the
build's `adapters.partial/`) survives a killed attempt: every `save_every` iterations mlx_lm
saves `NNNNNNN_adapters.safetensors` and the trainer saves `NNNNNNN_state.safetensors` beside it
(Adam's moments and step, numpy's generator at the checkpoint and at the current epoch's start,
mlx's random key). The next attempt continues from the newest checkpoint with a state file that
loads, with `--resume-adapter-file`, `--resume-state` and only the remaining iterations: the
trainer restores the optimizer, replays the data order and restores the random state, so the
resumed run trains the same model an uninterrupted one does (tests/unit/builder/test_resume.py:
identical tensors). A checkpoint without a state file (written by a build before the trainer
existed, or taken in the middle of a gradient accumulation) resumes with its weights only, as
`mlx_lm lora --resume-adapter-file` did: Adam's moments start from zero and the data order from
the beginning, close to but not identical with an uninterrupted run. build.json's
`resumed_from.exact` says which resume a build had (exact only if every earlier resume was).

With `[train.launch]` (or --launch-processes / --launch-hostfile) the same trainer runs
data-parallel under `mlx.launch` (`mlx.launch --backend ring -n N --starting-port P -- python
-m pipeline.builder.trainer ... --ranks N --rank-logs RUN_DIR`, or `--hostfile PATH` instead of
the backend, -n and port). mlx_lm splits each batch of batch_size across the ranks and averages
their gradients: the effective batch is batch_size, each rank computing batch_size / N of it
(build.json: `ranks`, `effective_batch`, `rank_batch`). Local ranks inherit the launcher's
environment, OpenBLAS preload included (each rank's `rank R/N started` line names the BLAS it
has mapped). Progress is rank 0's output; the other ranks write theirs to
`RUN_DIR/train.rankR.log`. mlx.launch exits 0 even when a rank fails, so the stage succeeds
only when every rank printed `rank R/N finished`. Checkpoints and state files are rank 0's
and every rank resumes from them, exactly as one process does (pipeline/builder/trainer.py).

mlx_lm 0.32 numbers a resumed run's iterations from 1 again, so a second attempt's checkpoint
`0000010_adapters.safetensors` means "10 iterations after where it resumed". Before each
attempt the previous attempt's checkpoints (and state files) are therefore moved to
`checkpoints/` under their global iteration number, using the offset recorded in
`attempts.json`.

Modules: this one (the stage: the command line and one attempt), `checkpoints` (the work
folder's checkpoints and attempts, and which to resume from), `train_progress` (the output's
figures), `launch` (mlx.launch and its ranks' fate); in the trainer subprocess, `trainer` (the
run), `train_state` (the state file), `data_order` (the batches, replayed on resume), `ranks`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from pipeline.builder.checkpoints import (
    ADAPTER_FILE,
    choose_resume,
    collect_checkpoints,
    read_attempts,
    tidy,
    write_attempts,
)
from pipeline.builder.files import parameter_count
from pipeline.builder.launch import (
    LAUNCHED_PEAK_MEMORY_SOURCE,
    check_ranks,
    launcher,
    layout,
    ranks_said,
    wait_for_local_ranks,
)
from pipeline.builder.records import Attempt, Resumed, TrainRecord
from pipeline.builder.runner import PEAK_MEMORY_SOURCE, Runner, StageError
from pipeline.builder.train_progress import TrainProgress
from pipeline.core import io
from pipeline.definitions.experiment import Experiment

TRAINER = "pipeline.builder.trainer"
LORA_CONFIG = "lora_config.yaml"


# --- the stage --------------------------------------------------------------------------------


def _needs_config(experiment: Experiment) -> bool:
    """LoRA's parameters or a learning-rate schedule: what only `-c` can give mlx_lm."""
    t = experiment.train
    return t.fine_tune_type != "full" or t.lr_schedule != "constant"


def lora_config_text(experiment: Experiment) -> str:
    """LoRA rank/scale/dropout and the learning-rate schedule have no mlx_lm flags: they go
    through `-c` (JSON is YAML)."""
    t = experiment.train
    params = {"rank": t.lora_rank, "scale": t.lora_scale, "dropout": t.lora_dropout}
    config: dict[str, object] = {"lora_parameters": params}
    if t.lr_schedule == "cosine":
        # mlx_lm's build_schedule: `warmup` linear steps from warmup_init, then
        # cosine_decay(init, decay_steps, end) over the steps left
        config["lr_schedule"] = {
            "name": "cosine_decay",
            "warmup": t.warmup,
            "warmup_init": 0.0,
            "arguments": [t.learning_rate, t.iters - t.warmup, 0.0],
        }
    return json.dumps(config, indent=2) + "\n"


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
    if _needs_config(experiment):
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
    chosen = choose_resume(collect_checkpoints(work), total, log)
    resume = chosen.checkpoint if chosen else None
    attempts = read_attempts(work)
    if _needs_config(experiment):
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
        write_attempts(work, (*attempts, attempt))
        log(
            f"[train] {experiment.train.fine_tune_type} fine-tune, {remaining} iterations"
            + layout(experiment)
        )
        try:
            run = runner.run("train", argv, on_line=progress.message, status=progress.heartbeat)
        except StageError as err:
            if not launch.launched:
                raise
            wait_for_local_ranks(progress)
            raise StageError(f"{err}{ranks_said(work, launch.ranks())}") from err
        except BaseException:  # stopped (Ctrl-C, the build's callback): the ranks go too
            if launch.launched:
                wait_for_local_ranks(progress)
            raise
        if launch.launched:
            check_ranks(progress, work, launch.ranks(), run, runner)
        seconds, peak = round(run.seconds, 3), run.peak_rss_bytes
        finished = dataclasses.replace(
            attempt, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=seconds
        )
        write_attempts(work, (*attempts, finished))

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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


__all__ = ["LORA_CONFIG", "TRAINER", "command", "lora_config_text", "train"]
