"""Same key, same model: a training interrupted after a checkpoint and resumed ends with the
tensors an uninterrupted one ends with.

The trained tests run the train stage itself (no preflight, fuse or quantize) on the tiny model
with a tiny data set: 10 training examples in batches of 2 are 5 batches per epoch, so 12
iterations cross two epoch boundaries, and validating every 3 iterations while checkpointing
every 4 puts the resumed attempt's validations (mlx_lm counts its iterations from 1 again)
elsewhere than an uninterrupted run's. Both are what would make numpy's data order diverge
(validation draws from the same generator as the epochs' shuffles) if the trainer did not
replay it. A run is interrupted the way the runner stops a build: the log callback raises when
the checkpoint line arrives, and the runner terminates the trainer.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.builder.checkpoints import ADAPTER_FILE, Checkpoint, choose_resume, state_file_name
from pipeline.builder.records import TrainRecord
from pipeline.builder.runner import Runner, mlx_lm_argv
from pipeline.builder.train import TRAINER, command, train
from pipeline.builder.train_progress import TrainProgress
from pipeline.core.workspace import Workspace
from pipeline.data import ensure_data
from pipeline.definitions.experiment import Experiment, load_experiment
from pipeline.preflight import resolve_model

SETTINGS: dict[str, Any] = {
    "iters": 12,
    "batch_size": 2,
    "save_every": 4,
    "steps_per_report": 2,
    "steps_per_eval": 3,
    "val_batches": 2,  # of 3: which two is numpy's choice, so the val loss checks it too
    "max_seq_length": 2048,
}


class Interrupted(Exception):
    """Raised from the log callback: the runner stops the trainer, as on Ctrl-C."""


@dataclasses.dataclass(frozen=True)
class Inputs:
    experiment: Experiment
    base: Path
    data: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    tiny = load_experiment("tiny")
    checkout = Workspace.at()
    full = ensure_data(tiny, workspace=checkout)
    data = tmp_path_factory.mktemp("data")
    for split, count in (("train", 10), ("valid", 6)):
        lines = (full / f"{split}.jsonl").read_text().splitlines(keepends=True)
        (data / f"{split}.jsonl").write_text("".join(lines[:count]))
    settings = dataclasses.replace(tiny.train, **SETTINGS)
    experiment = dataclasses.replace(tiny, name="tiny-resumetest", train=settings)
    return Inputs(experiment, resolve_model(tiny.models.base, tiny, workspace=checkout), data)


def run_train(inputs: Inputs, work: Path, *, stop_at: int | None = None) -> TrainRecord:
    """The train stage into `work`; with `stop_at`, interrupted once that checkpoint is
    complete (raises Interrupted)."""
    lines: list[str] = []

    def log(message: str) -> None:
        lines.append(message)
        if stop_at is not None and message.startswith(f"[train] checkpoint at step {stop_at}/"):
            raise Interrupted(message)

    log_path = work.parent / f"{work.name}.log"
    with log_path.open("a", encoding="utf-8") as fh:
        runner = Runner(log, fh, log_path)
        return train(
            inputs.experiment, base=inputs.base, data=inputs.data, work=work, runner=runner
        )


def interrupt(inputs: Inputs, work: Path, at: int) -> None:
    with pytest.raises(Interrupted):
        run_train(inputs, work, stop_at=at)


def keep_weights_only(work: Path) -> None:
    """What a build before the trainer left: mlx_lm's first checkpoint, no state file (later
    checkpoints, should the trainer have got that far before it was stopped, go too)."""
    first = min(work.glob("*_adapters.safetensors"))
    for path in work.glob("*.safetensors"):
        if path != first and path.name != ADAPTER_FILE:
            path.unlink()


def tensors(work: Path) -> dict[str, Any]:
    import mlx.core as mx

    loaded = mx.load(str(work / ADAPTER_FILE))
    assert isinstance(loaded, dict)
    return loaded


def differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    import mlx.core as mx

    assert a.keys() == b.keys()
    return [k for k in a if not mx.array_equal(a[k], b[k]).item()]


@pytest.fixture(scope="module")
def uninterrupted(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("uninterrupted") / "adapters"
    return run_train(inputs, work), work


# --- trained ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_interrupted_and_resumed_training_ends_with_identical_tensors(
    inputs: Inputs, uninterrupted, tmp_path: Path
) -> None:
    whole, whole_work = uninterrupted
    work = tmp_path / "adapters"
    interrupt(inputs, work, at=4)
    record = run_train(inputs, work)

    resumed = record.resumed_from
    assert resumed is not None and resumed.exact
    # the runner stops the trainer at once; on a slow machine it may have reached 8 first
    assert resumed.step in (4, 8)
    assert resumed.state is not None and resumed.state.name == state_file_name(resumed.step)
    assert "--resume-state" in record.command and record.command[1:3] == ("-m", TRAINER)
    assert len(record.attempts) == 2 and record.attempts[1].offset == resumed.step

    # exact equality, not a tolerance: same machine, same operations on the same values
    assert differing(tensors(whole_work), tensors(work)) == []
    assert record.val_loss == whole.val_loss and record.val_loss is not None
    assert record.train_loss == whole.train_loss  # its last report: the same 2 iterations


@pytest.mark.slow
def test_a_cosine_schedule_trains_other_weights_and_resumes_exactly(
    inputs: Inputs, uninterrupted, tmp_path: Path
) -> None:
    # the schedule is the optimizer's, from its step: a resume that lost the step would
    # restart the warmup and end elsewhere
    _, constant_work = uninterrupted
    train = dataclasses.replace(inputs.experiment.train, lr_schedule="cosine", warmup=2)
    cosine = dataclasses.replace(
        inputs, experiment=dataclasses.replace(inputs.experiment, train=train)
    )
    whole = tmp_path / "whole"
    run_train(cosine, whole)
    work = tmp_path / "resumed"
    interrupt(cosine, work, at=4)
    record = run_train(cosine, work)

    assert record.resumed_from is not None and record.resumed_from.exact
    assert differing(tensors(whole), tensors(work)) == []
    assert differing(tensors(constant_work), tensors(whole)) != []
    config = json.loads((work / "adapter_config.json").read_text())
    assert config["lr_schedule"]["name"] == "cosine_decay"
    assert config["lr_schedule"]["arguments"] == [train.learning_rate, train.iters - 2, 0.0]


@pytest.mark.slow
def test_a_checkpoint_without_state_resumes_weights_only_and_is_recorded_so(
    inputs: Inputs, uninterrupted, tmp_path: Path
) -> None:
    _, whole_work = uninterrupted
    work = tmp_path / "adapters"
    interrupt(inputs, work, at=4)
    keep_weights_only(work)
    record = run_train(inputs, work)

    resumed = record.resumed_from
    assert resumed is not None and resumed.step == 4
    assert not resumed.exact and resumed.state is None
    assert "--resume-state" not in record.command
    assert record.command[-2:] == ("--resume-adapter-file", str(resumed.checkpoint))
    log = (work.parent / "adapters.log").read_text()
    assert "Resuming with the weights only" in log
    # Adam from zero and the data order from the beginning: another model
    assert differing(tensors(whole_work), tensors(work))


@pytest.mark.slow
def test_an_exact_resume_after_a_weights_only_one_is_not_exact(
    inputs: Inputs, tmp_path: Path
) -> None:
    work = tmp_path / "adapters"
    interrupt(inputs, work, at=4)
    keep_weights_only(work)
    interrupt(inputs, work, at=8)  # resumed weights only, then checkpointed with state
    record = run_train(inputs, work)
    resumed = record.resumed_from
    assert resumed is not None and resumed.step == 8 and resumed.state is not None
    assert not resumed.exact, "its state descends from a weights-only resume"


@pytest.mark.slow
def test_an_uninterrupted_run_trains_what_mlx_lm_lora_trains(
    inputs: Inputs, uninterrupted, tmp_path: Path
) -> None:
    whole, whole_work = uninterrupted
    work = tmp_path / "adapters"
    ours = command(inputs.experiment, inputs.base, inputs.data, work)
    flags = ours[3 : ours.index("--offset")]  # mlx_lm lora's flags, without ours
    log_path = tmp_path / "lora.log"
    with log_path.open("w", encoding="utf-8") as fh:
        progress = TrainProgress(total=SETTINGS["iters"])
        Runner(lambda _: None, fh, log_path).run(
            "train", mlx_lm_argv("lora", *flags), on_line=progress.message
        )
    assert differing(tensors(whole_work), tensors(work)) == []
    assert progress.val_loss == whole.val_loss


# --- without training ---------------------------------------------------------------------------


def test_progress_counts_a_checkpoint_when_its_state_is_written() -> None:
    progress = TrainProgress(total=12, offset=4)
    assert progress.message("  save  0000004_adapters.safetensors") is None
    assert progress.saved == []
    line = progress.message("  state  0000004_state.safetensors")
    assert line is not None and line.startswith("[train] checkpoint at step 8/12  elapsed")
    line = progress.message("  state  none for 0000008: mid gradient accumulation")
    assert line is not None
    assert line.startswith("[train] checkpoint at step 12/12  weights only")
    assert progress.saved == [8, 12]


def _checkpoint(folder: Path, step: int, *, state: bool, exact: bool = True) -> Checkpoint:
    import mlx.core as mx
    import numpy as np

    from pipeline.builder.train_state import TrainState, write_state

    path = folder / f"{step:07d}_adapters.safetensors"
    mx.save_safetensors(str(path), {"w": mx.ones((2,))})
    if not state:
        return Checkpoint(step, path)
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)
    saved = TrainState(
        step=step,
        optimizer={"step": mx.array(step, mx.uint64), "w": {"m": mx.zeros((2,))}},
        random_key=mx.random.key(1),
        numpy_now=numpy_state,
        numpy_epoch=numpy_state,
        position=step % 5,
        exact=exact,
    )
    write_state(folder / state_file_name(step), saved)
    return Checkpoint(step, path, folder / state_file_name(step))


def test_the_newest_checkpoint_with_state_wins_over_a_newer_one_without(tmp_path: Path) -> None:
    said: list[str] = []
    four = _checkpoint(tmp_path, 4, state=True)
    eight = _checkpoint(tmp_path, 8, state=False)  # the attempt died before its state
    chosen = choose_resume([four, eight], 12, said.append)
    assert chosen is not None and chosen.checkpoint == four and chosen.exact
    assert not eight.path.exists(), "the abandoned run's checkpoint is removed"
    assert said == ["[train] checkpoint after step 4 has no optimizer state: resuming exactly "
                    "from step 4 instead"]  # fmt: skip


def test_without_any_state_the_newest_checkpoint_resumes_weights_only(tmp_path: Path) -> None:
    four, eight = _checkpoint(tmp_path, 4, state=False), _checkpoint(tmp_path, 8, state=False)
    chosen = choose_resume([four, eight], 12, print)
    assert chosen is not None and chosen.checkpoint == eight and not chosen.exact


def test_a_damaged_state_file_is_dropped_and_its_weights_still_count(tmp_path: Path) -> None:
    eight = _checkpoint(tmp_path, 8, state=True, exact=False)
    assert eight.state is not None
    eight.state.write_bytes(b"\x10\x00\x00\x00not a tensor")
    chosen = choose_resume([eight], 12, print)
    assert chosen is not None and chosen.checkpoint.step == 8 and chosen.checkpoint.state is None
    assert not chosen.exact and not eight.state.exists()


def test_a_state_round_trips_and_restores_mlx_random_key(tmp_path: Path) -> None:
    import mlx.core as mx

    from pipeline.builder.train_state import read_state, set_random_key

    checkpoint = _checkpoint(tmp_path, 4, state=True)
    assert checkpoint.state is not None
    state = read_state(checkpoint.state)
    assert state.step == 4 and state.position == 4 and state.exact
    assert state.optimizer["step"].dtype == mx.uint64 and state.optimizer["w"]["m"].shape == (2,)
    mx.random.seed(123)
    set_random_key(state.random_key)
    assert mx.array_equal(mx.random.state[0], mx.random.key(1)).item()  # ty: ignore[not-subscriptable]
