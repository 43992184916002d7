"""The build: real training (pipeline.builder.trainer) and `mlx_lm fuse|convert`, cached, resumable.

The tiny experiment is shortened (a few iterations, small batches, validation only at the
ends) and renamed, so its preflight report does not overwrite the real tiny one. Its
max_seq_length is 2048 so the tests do not hinge on the generated data fitting tiny.toml's 512
(when examples outgrow it, mlx_lm truncates the trained turns away and reports a nan loss, and
the preflight's lengths check refuses the build). Runs and preflight reports go to a workspace
under tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pipeline.builder import (
    BuildError,
    BuildRecord,
    BuildRefused,
    CorruptCheckpointError,
    build,
    plan,
    read_record,
    trusted,
)
from pipeline.builder.files import manifest
from pipeline.builder.records import BuildPreflight, QuantizeRecord
from pipeline.builder.runner import Runner, StageError
from pipeline.builder.train_progress import TrainProgress
from pipeline.core.workspace import Workspace
from pipeline.data import ensure_data
from pipeline.definitions.experiment import (
    EXPERIMENTS_DIR,
    ROOT,
    Experiment,
    load_experiment,
    with_overrides,
)

SHORT_TRAIN: dict[str, Any] = {
    "iters": 8,
    "batch_size": 2,
    "save_every": 4,
    "steps_per_report": 2,
    "steps_per_eval": 1000,  # validation only at the first and last iteration
    "val_batches": 2,
    "max_seq_length": 2048,
}


def short_tiny(name: str, **train: Any) -> Experiment:
    """The tiny experiment, renamed and shortened, reading the tiny data folder."""
    tiny = load_experiment("tiny")
    data = ensure_data(tiny, workspace=Workspace.at())
    settings = dataclasses.replace(tiny.train, **{**SHORT_TRAIN, **train})
    return with_overrides(dataclasses.replace(tiny, name=name, train=settings), data=str(data))


@pytest.fixture(scope="module")
def experiment_short() -> Experiment:
    return short_tiny("tiny-buildtest")


@pytest.fixture(scope="module")
def built(experiment_short: Experiment, tmp_path_factory: pytest.TempPathFactory):
    lines: list[str] = []
    started = time.perf_counter()
    workspace = Workspace(tmp_path_factory.mktemp("workdir"))
    result = build(experiment_short, workspace=workspace, log=lines.append)
    print(f"tiny build ({SHORT_TRAIN['iters']} iterations): {time.perf_counter() - started:.1f} s")
    return result, lines


def _workspace(result) -> Workspace:
    """The workspace a build result's run folder lies in (runs/<experiment>/<key>)."""
    return Workspace(result.run_dir.parents[2])


# --- end to end ---------------------------------------------------------------------------------


def generated_text(model_dir: Path, max_tokens: int = 8) -> str:
    """What the model in `model_dir` writes for one eval prompt, with its end-of-sequence
    tokens suppressed (a random model may stop at once): proof the folder loads and runs."""
    from mlx_lm import generate, load

    loaded = load(str(model_dir))
    model, tokenizer = loaded[0], loaded[1]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Show the last 5 commits."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    eos = sorted(tokenizer.eos_token_ids)

    def no_eos(tokens: Any, logits: Any) -> Any:
        logits[:, eos] = -math.inf
        return logits

    return generate(model, tokenizer, prompt, max_tokens=max_tokens, logits_processors=[no_eos])


@pytest.mark.slow
def test_build_trains_fuses_and_quantizes_a_loadable_5bit_model(built) -> None:

    result, lines = built
    assert not result.cached
    assert result.stages_run == ("train", "fuse", "quantize")
    config = json.loads((result.quantized / "config.json").read_text())
    assert config["quantization"]["bits"] == 5
    assert config["quantization"]["group_size"] == 64
    assert not (result.run_dir / "fused").exists(), "the float intermediate is removed"
    assert result.fused is None

    assert generated_text(result.quantized), "generation produced no text"

    record = read_record(result.record_path)
    assert isinstance(record, BuildRecord) and record == result.record
    assert record.complete and record.key == result.key
    assert record.inputs.versions["mlx-lm"]
    for name in ("train", "fuse", "quantize"):
        stage = record.stages.get(name)
        assert stage is not None and stage.complete, name
        assert stage.seconds > 0 and stage.wall_seconds > 0, name
        assert stage.peak_memory_bytes is not None and stage.peak_memory_bytes > 0, name
        assert stage.output_bytes > 0, name
        # training runs mlx_lm's loop in routegate's trainer (exact resume), the rest mlx_lm
        module = "pipeline.builder.trainer" if name == "train" else "mlx_lm"
        assert stage.command[:3] == (sys.executable, "-m", module), name
    train, fuse, quantize = record.stages.train, record.stages.fuse, record.stages.quantize
    assert train is not None and fuse is not None and quantize is not None
    assert train.command[3] == "--train"
    assert train.train_loss is not None and math.isfinite(train.train_loss)
    assert train.val_loss is not None and math.isfinite(train.val_loss)
    assert train.tokens_per_second is not None and train.tokens_per_second > 0
    assert train.trainable_parameters > 0
    assert train.trainable_parameters_reported is not None
    assert train.trainable_parameters_reported.endswith("M)")
    assert train.resumed_from is None
    assert fuse.nothing_to_merge is True  # tiny trains fully
    assert fuse.removed is True
    assert quantize.bits == 5
    assert record.preflight.passed
    assert Path(str(record.preflight.report)).is_relative_to(result.run_dir.parents[2])
    on_disk = json.loads(result.record_path.read_text())  # the keys the report reads
    assert on_disk["kind"] == "build" and on_disk["stages"]["fuse"]["removed"] is True
    assert on_disk["stages"]["train"]["wall_seconds"] == train.wall_seconds
    assert any(line.startswith("[train] step 8/8") for line in lines)
    assert "-m pipeline.builder.trainer --train" in result.log_path.read_text()
    assert not list(result.adapters.glob("*_adapters.safetensors")), "checkpoints are tidied"
    assert not list(result.adapters.glob("*_state*.safetensors")), "and their state files"


@pytest.mark.slow
def test_second_build_of_the_same_inputs_is_a_cache_hit(built, experiment_short) -> None:
    result, _ = built
    before = result.record_path.read_bytes()
    lines: list[str] = []
    started = time.perf_counter()
    again = build(experiment_short, workspace=_workspace(result), log=lines.append)
    print(f"cache hit: {time.perf_counter() - started:.2f} s")
    assert again.cached
    assert again.stages_run == ()
    assert again.quantized == result.quantized
    assert result.record_path.read_bytes() == before, "a cache hit leaves build.json alone"
    assert any("cache hit" in line for line in lines)


@pytest.mark.slow
def test_a_cache_hit_still_refuses_when_the_preflight_now_fails(built, experiment_short) -> None:
    """train_min is not part of the key, but it is part of the gate."""
    result, _ = built
    stricter = dataclasses.replace(
        experiment_short, data=dataclasses.replace(experiment_short.data, train_min=10**6)
    )
    with pytest.raises(BuildRefused, match=r"minimum 1000000") as err:
        build(stricter, workspace=_workspace(result), log=lambda line: None)
    assert "--force" in str(err.value)
    again = build(stricter, workspace=_workspace(result), force=True, log=print)
    assert again.cached and again.key == result.key


# --- kill and resume ----------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_experiment_toml(path: Path, raw: dict[str, Any]) -> Path:
    """A minimal TOML writer for experiment files (scalars, lists, one level of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for table, values in raw.items():
        if isinstance(values, dict):
            lines.append(f"\n[{table}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _absolute(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(("../", "./")):
        return str((EXPERIMENTS_DIR / value).resolve())
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return value


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    raw = tomllib.loads((EXPERIMENTS_DIR / "tiny.toml").read_text())
    raw = {k: {kk: _absolute(vv) for kk, vv in v.items()} if isinstance(v, dict) else v
           for k, v in raw.items()}  # fmt: skip
    raw["name"] = "tiny-buildtest-resume"
    raw["train"].update(SHORT_TRAIN, iters=12, save_every=4)
    raw["data"]["path"] = str(ensure_data(load_experiment("tiny"), workspace=Workspace.at()))
    toml = write_experiment_toml(tmp_path / "resume.toml", raw)
    workspace = Workspace(tmp_path / "workdir")
    runs = workspace.runs_root

    out = (tmp_path / "first.out").open("w")
    first = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "build", "--experiment", str(toml),
         "--workdir", str(workspace.root)],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    saved = None
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and first.poll() is None:
            logs = list(runs.glob("tiny-buildtest-resume/*/build.log"))
            if logs and "[train] checkpoint at step 4/12" in logs[0].read_text():
                saved = logs[0]
                break
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the build and the trainer it started
        first.wait()
        out.close()
    assert saved is not None, (tmp_path / "first.out").read_text()[-3000:]
    run_dir = saved.parent
    assert not (run_dir / "quantized").exists()
    checkpoints = list((run_dir / "adapters.partial").glob("*_adapters.safetensors"))
    assert checkpoints, "the killed attempt left its checkpoint"

    lines: list[str] = []
    result = build(load_experiment(toml), workspace=workspace, log=lines.append, keep_fused=True)
    assert not result.cached
    assert result.resumed_from is not None
    step = int(Path(result.resumed_from).name.split("_")[0])
    assert 4 <= step < 12
    log = result.log_path.read_text()
    assert f"[train] resuming from checkpoint {result.resumed_from} (step {step}/12)" in log
    record = read_record(result.record_path)
    assert record is not None and record.stages.train is not None
    train = record.stages.train
    assert train.resumed_from is not None and train.resumed_from.step == step
    # the progress line comes once the checkpoint's state is written: the resume is exact
    assert train.resumed_from.exact and train.resumed_from.state is not None
    assert len(train.attempts) == 2
    assert train.attempts[1].iters == 12 - step
    assert "--resume-state" in train.command
    assert train.command[-2:] == ("--resume-adapter-file", result.resumed_from)
    assert record.complete and (result.quantized / "config.json").is_file()
    assert result.fused is not None and (result.fused / "config.json").is_file()
    assert record.stages.fuse is not None and record.stages.fuse.removed is False


# --- bad input, keys and trust ---------------------------------------------------------------


def test_key_changes_when_data_or_settings_change(
    experiment_short: Experiment, tmp_path: Path
) -> None:
    workspace = Workspace(tmp_path)
    first = plan(experiment_short, workspace=workspace)
    assert plan(experiment_short, workspace=Workspace(tmp_path / "elsewhere")).key == first.key
    assert first.run_dir == workspace.runs(experiment_short.name) / first.key
    for changed in (
        dataclasses.replace(
            experiment_short, train=dataclasses.replace(experiment_short.train, iters=9)
        ),
        dataclasses.replace(
            experiment_short, quantize=dataclasses.replace(experiment_short.quantize, bits=4)
        ),
        dataclasses.replace(
            experiment_short, fuse=dataclasses.replace(experiment_short.fuse, dequantize=True)
        ),
    ):
        assert plan(changed, workspace=workspace).key != first.key

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid"):
        text = (first.data / f"{split}.jsonl").read_text()
        if split == "train":
            text = "".join(text.splitlines(keepends=True)[:-1])  # one example fewer
        (data / f"{split}.jsonl").write_text(text)
    other = plan(with_overrides(experiment_short, data=str(data)), workspace=workspace)
    assert other.inputs.data_sha256 != first.inputs.data_sha256
    assert other.key != first.key


def test_full_disk_stops_with_a_clear_error_and_writes_no_run(
    experiment_short: Experiment, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match=r"not enough disk space.*needs 0\.2 GB"):
        build(experiment_short, workspace=Workspace(tmp_path), free_bytes=lambda path: 10_000_000)
    assert not Workspace(tmp_path).runs(experiment_short.name).exists()


def test_missing_base_model_folder_is_one_clear_error(
    experiment_short: Experiment, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    experiment = with_overrides(experiment_short, base_model=str(missing))
    with pytest.raises(BuildError, match="does not exist") as err:
        build(experiment, workspace=Workspace(tmp_path / "workdir"))
    assert str(missing) in str(err.value)
    assert not (tmp_path / "workdir").exists()


def test_corrupt_checkpoint_is_named_discarded_and_not_trusted(
    experiment_short: Experiment, tmp_path: Path
) -> None:
    where = plan(experiment_short, workspace=Workspace(tmp_path))
    partial = where.run_dir / "adapters.partial"
    partial.mkdir(parents=True)
    (partial / "0000004_adapters.safetensors").write_bytes(b"\x10\x00\x00\x00not a tensor")
    with pytest.raises(CorruptCheckpointError, match=r"0000004_adapters\.safetensors") as err:
        build(experiment_short, workspace=Workspace(tmp_path))
    assert "corrupt and has been discarded" in str(err.value)
    assert not list(partial.rglob("*_adapters.safetensors")), "the bad file is gone"
    record = read_record(where.record_path)
    assert record is not None, "the build recorded its inputs before training"
    assert not any(s.complete for s in record.stages.done())
    assert not (where.run_dir / "adapters").exists()


def test_a_stage_folder_is_trusted_only_as_recorded(
    experiment_short: Experiment, tmp_path: Path
) -> None:
    where = plan(experiment_short, workspace=Workspace(tmp_path))
    folder = where.output("quantize")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    assert not trusted(where, None, "quantize"), "no record: a half-written folder"
    verdict = BuildPreflight(
        fingerprint="f", passed=True, forced=False, failed=(), checks=0, report=None
    )
    record = BuildRecord(
        format=1,
        experiment=experiment_short.name,
        experiment_file=Path(experiment_short.source),
        fingerprint="f",
        key=where.key,
        inputs=where.inputs,
        base_model=experiment_short.models.base,
        base_folder=where.base,
        data_folder=where.data,
        preflight=verdict,
        started="2026-01-01T00:00:00",
    )
    quantized = QuantizeRecord(
        seconds=1.0, peak_memory_bytes=1, command=(), bits=5, group_size=64, dtype="float32",
        bits_per_weight=None,
    )  # fmt: skip
    assert not trusted(where, record.with_stage("quantize", quantized), "quantize"), (
        "recorded, but not as complete"
    )
    record = record.with_stage("quantize", quantized.completed(folder, 1.0))
    assert record.stages.quantize is not None
    assert record.stages.quantize.manifest == manifest(folder)
    assert trusted(where, record, "quantize")
    assert not trusted(where, dataclasses.replace(record, key="other"), "quantize")
    assert BuildRecord.read(record.write(where.record_path)) == record, "round trip"
    (folder / "model.safetensors").write_bytes(b"x" * 50)  # truncated since
    assert not trusted(where, record, "quantize")


# --- progress and the runner --------------------------------------------------------------------


def test_a_quiet_command_reports_a_heartbeat_and_every_parsed_line(tmp_path: Path) -> None:
    lines: list[str] = []
    log_path = tmp_path / "build.log"
    script = "import time; print('hello', flush=True); time.sleep(1.0); print('bye')"
    with log_path.open("a", encoding="utf-8") as log_file:
        runner = Runner(lines.append, log_file, log_path, every=0.2)
        run = runner.run(
            "fuse",
            [sys.executable, "-c", script],
            on_line=lambda line: f"[fuse] said {line}" if line == "hello" else None,
        )
    assert run.returncode == 0 and run.seconds >= 1.0
    assert run.peak_rss_bytes is not None and run.peak_rss_bytes > 0
    assert lines.count("[fuse] said hello") == 1
    beats = [line for line in lines if line.startswith("[fuse] running 0:0")]
    assert len(beats) >= 3, lines
    assert len(beats) == len(lines) - 1, "nothing but parsed lines and heartbeats"
    text = log_path.read_text()
    assert "hello\nbye\n" in text and "# exit 0 after" in text
    assert "[fuse] said" not in text, "progress lines go to log; the runner writes output"


def test_a_failed_command_is_a_stage_error_with_its_last_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "build.log"
    script = "import sys; print('loading'); print('boom: out of memory'); sys.exit(3)"
    with log_path.open("a", encoding="utf-8") as log_file, pytest.raises(StageError) as err:
        runner = Runner(lambda line: None, log_file, log_path)
        runner.run("quantize", [sys.executable, "-c", script])
    message = str(err.value)
    assert message.startswith("quantize: `") and "exited with status 3" in message
    assert "  boom: out of memory" in message and message.endswith(f"full log: {log_path}")
    assert err.value.exit_code == 3


def test_training_progress_says_step_loss_speed_and_eta() -> None:
    progress = TrainProgress(total=10)
    assert progress.heartbeat(12).startswith("[train] step 0/10  loading")
    assert "elapsed 0:12" in progress.heartbeat(12)
    row = progress.message("     2    1.636 \u25bc      555      1.0k")
    assert row is not None and row.startswith("[train] step 2/10  loss 1.636")
    beat = progress.heartbeat(30)
    assert beat.startswith("[train] step 2/10  loss 1.636  555 tok/s  elapsed ")
    assert "ETA " in beat
    val = progress.message("     3    val 1.442    0.20s")
    assert val is not None and val.startswith("[train] val loss 1.442 after step 2/10")
    assert progress.message("some other line") is None


def test_build_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli.build import main

    missing = tmp_path / "no-such.toml"
    assert main(["--experiment", str(missing), "--workdir", str(tmp_path / "w")]) == 2
    assert "error: " in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_generated_data_goes_to_the_workspace(tmp_path: Path) -> None:
    tiny = load_experiment("tiny")
    assert not tiny.data.path, "tiny's data is generated"
    renamed = dataclasses.replace(tiny, name="tiny-buildtest-data")
    workspace = Workspace(tmp_path)
    where = plan(renamed, workspace=workspace)
    assert where.data == workspace.data(renamed.name)
    assert (where.data / "train.jsonl").is_file() and (where.data / "valid.jsonl").is_file()
    assert where.run_dir.is_relative_to(workspace.root)
