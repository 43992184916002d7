"""Training data-parallel under mlx.launch: `[train.launch]`, `--launch-processes`,
`--launch-hostfile` (pipeline/builder/train.py starts `mlx.launch ... -- python -m
pipeline.builder.trainer`).

The trained tests build the shortened tiny experiment of test_build.py (8 iterations, batches
of 2) with 2 local processes on the ring backend: mlx_lm splits each batch of 2 into one
example per rank. The rest needs no training.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pipeline.builder import BuildResult, build, plan, read_record
from pipeline.builder.checkpoints import ADAPTER_FILE
from pipeline.builder.launch import rank_log
from pipeline.builder.runner import Runner, StageError
from pipeline.builder.train import train
from pipeline.builder.train_progress import TrainProgress
from pipeline.core import blas
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import (
    EXPERIMENTS_DIR,
    ExperimentError,
    Launch,
    Train,
    load_experiment,
    with_overrides,
)
from tests.unit.builder.test_build import generated_text, short_tiny, write_experiment_toml


class Interrupted(Exception):
    """Raised from the log callback: the runner stops mlx.launch, and so its ranks."""


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildResult, list[str]]:
    experiment = short_tiny("tiny-launchtest", launch=Launch(processes=2))
    lines: list[str] = []
    workspace = Workspace(tmp_path_factory.mktemp("workdir"))
    return build(experiment, workspace=workspace, log=lines.append), lines


def _hostfile(path: Path, hosts: int) -> Path:
    """An mlx.launch hostfile (its JSON format) of `hosts` loopback hosts."""
    listed = [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]} for _ in range(hosts)]
    path.write_text(json.dumps({"backend": "ring", "hosts": listed}))
    return path


# --- trained ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_local_processes_train_a_model_that_loads(launched) -> None:
    result, lines = launched
    for rank in (0, 1):
        started = [x for x in lines if x.startswith(f"[train] rank {rank}/2 started: pid ")]
        assert len(started) == 1, lines
        chosen, _ = blas.selected()
        if chosen is not None:  # the preload reached the rank: it has the library mapped
            assert chosen.library.name in started[0]
    log = result.log_path.read_text()
    assert "rank 0/2 finished" in log and "rank 1/2 finished" in log
    assert "-m pipeline.builder.trainer --train" in log
    assert any(x.startswith("[train] step 8/8") for x in lines), "rank 0's progress is parsed"
    assert rank_log(result.run_dir, 1).is_file(), "rank 1's own output has its own file"

    record = read_record(result.record_path)
    assert record is not None and record.stages.train is not None
    trained = record.stages.train
    assert (trained.ranks, trained.effective_batch, trained.rank_batch) == (2, 2, 1)
    assert Path(trained.command[0]).name == "mlx.launch"
    launched_argv = trained.command[trained.command.index("--") + 1 :]
    assert launched_argv[:3] == (sys.executable, "-m", "pipeline.builder.trainer")
    assert trained.command[-4:] == ("--ranks", "2", "--rank-logs", str(result.run_dir))
    assert record.inputs.train["ranks"] == 2
    assert trained.train_loss is not None and trained.tokens_per_second is not None

    assert generated_text(result.quantized), "generation produced no text"


@pytest.mark.slow
def test_an_interrupted_launched_training_resumes_exactly(launched, tmp_path: Path) -> None:
    """Rank 0 writes the state; both ranks restore it, so the result is the uninterrupted
    launched build's, tensor for tensor."""
    import mlx.core as mx

    result, _ = launched
    record = result.record
    assert record.base_folder is not None
    experiment = short_tiny("tiny-launchtest", launch=Launch(processes=2))
    work = tmp_path / "run" / "adapters"
    work.parent.mkdir()

    def run(stop_at: int | None = None):
        def log(message: str) -> None:
            if stop_at and message.startswith(f"[train] checkpoint at step {stop_at}/"):
                raise Interrupted(message)

        log_path = work.parent / "build.log"
        with log_path.open("a", encoding="utf-8") as fh:
            return train(
                experiment,
                base=record.base_folder,
                data=record.data_folder,
                work=work,
                runner=Runner(log, fh, log_path),
            )

    with pytest.raises(Interrupted):
        run(stop_at=4)
    resumed = run()
    assert resumed.resumed_from is not None and resumed.resumed_from.exact
    assert resumed.resumed_from.step == 4 and resumed.ranks == 2
    assert "--resume-state" in resumed.command
    ours, theirs = mx.load(str(work / ADAPTER_FILE)), mx.load(str(result.adapters / ADAPTER_FILE))
    assert isinstance(ours, dict) and isinstance(theirs, dict) and ours.keys() == theirs.keys()
    assert [k for k in ours if not mx.array_equal(ours[k], theirs[k]).item()] == []


def test_a_failed_rank_fails_the_stage_although_mlx_launch_exits_0(tmp_path: Path) -> None:
    """Both ranks stop at loading a folder that holds no model: mlx.launch itself still exits
    0 (mlx 0.32), so only the missing `rank R/2 finished` lines tell."""
    experiment = short_tiny("tiny-launchfail", launch=Launch(processes=2))
    (tmp_path / "no-model").mkdir()
    work = tmp_path / "run" / "adapters"
    lines: list[str] = []
    log_path = tmp_path / "run.log"
    with log_path.open("a", encoding="utf-8") as fh, pytest.raises(StageError) as err:
        train(
            experiment,
            base=tmp_path / "no-model",
            data=Path(experiment.data.path),  # short_tiny reads the tiny data folder
            work=work,
            runner=Runner(lines.append, fh, log_path),
        )
    message = str(err.value)
    assert "ranks 0, 1 of 2 did not finish under mlx.launch" in message
    assert f"rank 1's last output ({rank_log(work.parent, 1)})" in message
    assert message.endswith(f"full log: {log_path}")
    assert err.value.exit_code == 3


def test_progress_follows_the_ranks_and_mlx_launch() -> None:
    progress = TrainProgress(total=8)
    said = progress.message("rank 1/2 started: pid 7 on mac2, BLAS x, output in /r/train.rank1.log")
    assert said == "[train] rank 1/2 started: pid 7 on mac2, BLAS x, output in /r/train.rank1.log"
    assert progress.message("rank 1/2 finished") is None
    assert progress.ranks_finished == {1} and set(progress.ranks_started) == {1}
    said = progress.message("[WARN] Node with rank 0 exited with code 1 ")
    assert said == "[train] mlx.launch: Node with rank 0 exited with code 1"
    assert progress.message("     2    1.636 \u25bc      555      1.0k") is not None
    assert progress.step == 2, "rank 0's rows still parse"


# --- the key ----------------------------------------------------------------------------------


def test_one_process_keeps_todays_key_and_two_processes_get_another(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    one = short_tiny("tiny-launchkey")
    today = plan(one, workspace=workspace)
    # today's key hashes the train settings as they were before [train.launch] (and a shipped
    # [train] adapter, hashed instead of the settings when given) existed
    fields = {f.name for f in dataclasses.fields(Train)}
    assert set(today.inputs.train) == fields - {"launch", "adapter"}
    assert plan(with_overrides(one, launch_processes=1), workspace=workspace).key == today.key
    assert with_overrides(one, launch_processes=1).fingerprint() == one.fingerprint()

    two = with_overrides(one, launch_processes=2)
    other = plan(two, workspace=workspace)
    assert other.key != today.key
    assert other.inputs.train == {**today.inputs.train, "ranks": 2}
    assert two.fingerprint() != one.fingerprint()
    # what counts is the number of ranks, not where they run
    hosts = with_overrides(one, launch_hostfile=str(_hostfile(tmp_path / "hosts.json", 2)))
    assert plan(hosts, workspace=workspace).key == other.key
    single = with_overrides(one, launch_hostfile=str(_hostfile(tmp_path / "one.json", 1)))
    assert plan(single, workspace=workspace).key == today.key


def test_the_launch_table_loads_from_the_experiment_file(tmp_path: Path) -> None:
    hosts = _hostfile(tmp_path / "hosts.json", 2)
    exp = load_experiment(_experiment_file(tmp_path, "[train.launch]\nhostfile = 'hosts.json'\n"))
    assert exp.train.launch == Launch(hostfile=hosts.resolve()) and exp.train.launch.ranks() == 2
    exp = load_experiment(_experiment_file(tmp_path, "[train.launch]\nprocesses = 2\n"))
    assert exp.train.launch == Launch(processes=2)
    assert with_overrides(exp, launch_processes=1).train.launch == Launch(), "1: no launch"
    assert not load_experiment("tiny").train.launch.launched, "the default: no launch"


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--launch-processes", "0"], "--launch-processes 0: processes must be at least 1"),
        (["--launch-processes", "3"], "3 ranks cannot split batch_size 4"),
        (["--launch-hostfile", "{tmp}/no-such-hosts.json"], "{tmp}/no-such-hosts.json does not"),
        (["--launch-hostfile", "{tmp}/bad.json"], "{tmp}/bad.json is not an mlx.launch hostfile"),
    ],
)
def test_a_bad_launch_option_is_one_clear_error_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    from pipeline.cli.build import main

    (tmp_path / "bad.json").write_text('{"hosts": [{"ips": ["10.0.0.1"]}]}')
    argv = ["--workdir", str(tmp_path / "w"), *[f.format(tmp=tmp_path) for f in flags]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named.format(tmp=tmp_path) in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists(), "nothing was built or written"


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("processes = 0", "[train.launch]: processes must be at least 1, got 0"),
        ("hostfile = 'missing.json'", "missing.json does not exist"),
        ("processes = 2\nhostfile = 'hosts.json'", "give processes or hostfile, not both"),
        ("process = 2", "unknown key 'train.launch.process'"),
    ],
)
def test_a_bad_launch_table_names_the_file_and_the_setting(
    tmp_path: Path, table: str, named: str
) -> None:
    _hostfile(tmp_path / "hosts.json", 2)
    path = _experiment_file(tmp_path, f"[train.launch]\n{table}\n")
    with pytest.raises(ExperimentError) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and named in str(err.value)


def _experiment_file(folder: Path, extra: str) -> Path:
    """tiny.toml with its relative paths made absolute, written to `folder` with `extra`."""
    raw: dict[str, Any] = tomllib.loads((EXPERIMENTS_DIR / "tiny.toml").read_text())
    for table in raw.values():
        if isinstance(table, dict):
            for key, value in table.items():
                if isinstance(value, str) and value.startswith(("../", "./")):
                    table[key] = str((EXPERIMENTS_DIR / value).resolve())
                elif isinstance(value, list):
                    table[key] = [
                        str((EXPERIMENTS_DIR / v).resolve())
                        if isinstance(v, str) and v.startswith(("../", "./"))
                        else v
                        for v in value
                    ]
    path = write_experiment_toml(folder / "launch.toml", raw)
    path.write_text(path.read_text() + "\n" + extra)
    return path
