"""Training under mlx.launch: the launcher's command line, and each rank's fate.

mlx.launch exits 0 even when a rank fails, so the stage checks that every rank printed
`rank R/N finished` (`check_ranks`); ranks other than 0 write their output to
`RUN_DIR/train.rankR.log` (`rank_log`), quoted when a launched training fails.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import sys
import time
from pathlib import Path

from pipeline.builder.runner import CommandRun, Runner, StageError
from pipeline.builder.train_progress import TrainProgress
from pipeline.definitions.experiment import Experiment, Launch

RANK_LOG = "train.rank{rank}.log"
"""A rank's output other than rank 0's, in the run folder (pipeline/builder/trainer.py)."""
LAUNCHED_PEAK_MEMORY_SOURCE = (
    "rusage maxrss of the largest of mlx.launch and its local ranks (one rank, not their sum; "
    "remote ranks not counted)"
)


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


def layout(experiment: Experiment) -> str:
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


def ranks_said(work: Path, ranks: int) -> str:
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


def wait_for_local_ranks(progress: TrainProgress, timeout: float = 20.0) -> None:
    """Wait (a while) for this host's ranks of a stopped launch to exit.

    The runner waits for mlx.launch only; its ranks, told to stop when it dies
    (pipeline/builder/trainer.py), may still be finishing a step, and a next attempt must not
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


def check_ranks(
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
        + ranks_said(work, ranks)
        + f"\nfull log: {runner.log_path}"
    )
