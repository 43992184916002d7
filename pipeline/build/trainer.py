"""The training subprocess: mlx_lm's own training loop, with checkpoints a resume continues exactly.

    python -m pipeline.build.trainer [the flags of `mlx_lm lora --train`]
        [--offset S --total-iters T] [--resume-adapter-file F --resume-state STATE]
        [--ranks N --rank-logs DIR]     (under mlx.launch: data-parallel over N ranks)

It parses `mlx_lm lora`'s flags with mlx_lm's own parser and does what `mlx_lm lora --train`
does with them (mlx_lm/lora.py `run` and `train_model`, 0.32): seed numpy and mlx with --seed,
load the model and data with mlx_lm, freeze the model and unfreeze the trained layers (full) or
add LoRA layers, load --resume-adapter-file, build the optimizer and call
`mlx_lm.tuner.trainer.train`. An uninterrupted run therefore trains the same model, printing
the same lines, as `mlx_lm lora` (tests/unit/build/test_resume.py compares the two). What it adds is
the `iterate_batches` it hands to train(): `DataOrder`, a wrapper around mlx_lm's own, which
writes `NNNNNNN_state.safetensors` beside each `NNNNNNN_adapters.safetensors` mlx_lm saves:
everything besides the weights that decides how training goes on from there.

When: mlx_lm's loop runs iteration `it` as: fetch batch `it`, validate if due, step, evaluate
the model, optimizer and random state (`mx.eval(state, ...)`), report, save the adapters when
`it % save_every == 0`; the next thing it does is fetch batch `it + 1`. So when DataOrder is
asked for batch s + 1 with s a multiple of save_every, step s is complete and its weights are
on disk: that is when it writes the state (the last checkpoint, after which nothing is fetched,
gets its state once train() returns).

What, and why each:
- Adam's moments and step (`optimizer.state`; the learning-rate schedule reads the step).
- numpy's global generator. iterate_batches draws one permutation of the training batches per
  epoch, and one of the validation batches each time train() validates, both from the global
  generator (seeded once with --seed). The training order after the first validation thus
  depends on when validations happened. The state holds the generator as it was when the
  current epoch's permutation was drawn and as it is at the checkpoint; a resumed run draws
  (and discards) this epoch's batches already trained from a fresh iterate_batches started from
  the first, then continues from the second. mlx_lm counts a resumed run's iterations from 1,
  so it validates at other iterations than an uninterrupted run: DataOrder keeps a validation
  an uninterrupted run would not do from consuming randomness, and consumes it (draws one
  validation batch) where an uninterrupted run would have validated and this one does not.
  Validations then see the same batches too, so the losses they report match.
- mlx's random key: LoRA's initialisation consumes it (the loaded weights replace what it drew)
  and so does dropout during training (compiled into mlx_lm's step with the key as state).

A checkpoint taken in the middle of a gradient accumulation has no state file (its partial
gradient lives inside train()); a resume from it restores the weights only. So does a resume
without --resume-state (a checkpoint an older build wrote): Adam starts from zero and the data
order from the beginning, as `mlx_lm lora --resume-adapter-file` does. The state records whether
its run descends from the beginning through exact resumes only (`exact`).

Under mlx.launch (`--ranks N`, pipeline/build/train.py starts it) every rank runs this module:
mlx_lm's train() averages the gradients over `mx.distributed` and its iterate_batches gives each
rank batch_size / N examples of every batch. Each rank announces itself with one line, `rank
R/N started: ...` (and `rank R/N finished` at the end), written in one write() so mlx.launch,
which forwards each rank's output in whatever chunks it reads, cannot cut it up; rank 0's
output is line-buffered for the same reason. Every other rank's output then goes to its own
file (`DIR/train.rankR.log`): the build log is rank 0's, as mlx_lm prints only there anyway.
Only rank 0 writes files (mlx_lm saves the adapters there; this module adapter_config.json and
the state files). The state is the same on every rank: all seed numpy and mlx alike and so
draw the same permutations and keys, and the averaged gradients leave every rank the same
weights and Adam moments. So on resume every rank restores rank 0's state file and the resume
stays exact, provided every rank can read the run folder (one machine, or one shared path).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import os
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from pipeline.build.train import RANK_LOG, STATE_FORMAT, state_file_name

Batch = tuple[mx.array, mx.array]
NumpyState = tuple[str, np.ndarray, int, int, float]

_OPTIMIZERS: dict[str, Callable[..., optim.Optimizer]] = {
    "adam": optim.Adam,
    "adamw": optim.AdamW,
    "muon": optim.Muon,
    "sgd": optim.SGD,
    "adafactor": optim.Adafactor,
}
_OPTIMIZER_PREFIX = "optimizer."


# --- the state file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainState:
    """What a checkpoint's state file holds: where training stood after `step` global steps."""

    step: int
    optimizer: dict[str, Any]
    random_key: mx.array
    numpy_now: NumpyState
    numpy_epoch: NumpyState
    """numpy's generator as it was when the current epoch's permutation was drawn."""
    position: int
    """Batches of the current epoch already trained."""
    exact: bool
    """The run descends from its beginning through exact resumes only."""


def _numpy_now() -> NumpyState:
    state = np.random.get_state(legacy=True)  # the legacy form is the tuple set_state takes
    assert isinstance(state, tuple)
    return state


def _random_key() -> mx.array:
    """mlx's global random key (`mx.random.state` is a one-element sequence: the key)."""
    (key,) = list(mx.random.state)  # ty: ignore[invalid-argument-type]
    return key


def _numpy_meta(state: NumpyState) -> str:
    name, _, pos, has_gauss, cached = state
    return json.dumps([name, int(pos), int(has_gauss), float(cached)])


def _numpy_state(meta: str, keys: mx.array) -> NumpyState:
    name, pos, has_gauss, cached = json.loads(meta)
    return (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)


def write_state(path: Path, state: TrainState) -> None:
    """Write `state` to `path` all at once: a killed write leaves no state file, not a bad one."""
    arrays = {
        _OPTIMIZER_PREFIX + k: v
        for k, v in tree_flatten(state.optimizer)
        if isinstance(v, mx.array)  # every leaf of an optimizer's state is
    }
    arrays["random_key"] = state.random_key
    arrays["numpy_now"] = mx.array(state.numpy_now[1])
    arrays["numpy_epoch"] = mx.array(state.numpy_epoch[1])
    metadata = {
        "format": STATE_FORMAT,
        "step": str(state.step),
        "position": str(state.position),
        "exact": "1" if state.exact else "0",
        "numpy_now": _numpy_meta(state.numpy_now),
        "numpy_epoch": _numpy_meta(state.numpy_epoch),
    }
    partial = path.with_name(path.name.removesuffix(".safetensors") + ".partial.safetensors")
    mx.save_safetensors(str(partial), arrays, metadata=metadata)
    os.replace(partial, path)


def read_state(path: Path) -> TrainState:
    loaded = mx.load(str(path), return_metadata=True)
    assert isinstance(loaded, tuple)  # return_metadata=True: (arrays, metadata)
    arrays, meta = loaded
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, not {STATE_FORMAT!r}")
    optimizer = [
        (k.removeprefix(_OPTIMIZER_PREFIX), v)
        for k, v in arrays.items()
        if k.startswith(_OPTIMIZER_PREFIX)
    ]
    return TrainState(
        step=int(meta["step"]),
        optimizer=tree_unflatten(optimizer),
        random_key=arrays["random_key"],
        numpy_now=_numpy_state(meta["numpy_now"], arrays["numpy_now"]),
        numpy_epoch=_numpy_state(meta["numpy_epoch"], arrays["numpy_epoch"]),
        position=int(meta["position"]),
        exact=meta["exact"] == "1",
    )


def set_random_key(key: mx.array) -> None:
    """Make `key` mlx's global random key.

    mlx 0.32 offers no setter; `mx.random.seed(n)` makes the key [n >> 32, n & 0xffffffff], so
    seeding with the key's two words read as one number restores it (checked, not assumed).
    """
    hi, lo = (int(word) for word in np.array(key, dtype=np.uint32))
    mx.random.seed((hi << 32) | lo)
    if not mx.array_equal(_random_key(), key).item():
        raise RuntimeError(
            f"cannot restore mlx's random key {key.tolist()}: mx.random.seed gave "
            f"{_random_key().tolist()} (has mlx changed how seed makes a key?)"
        )


# --- the batches ------------------------------------------------------------------------------


def _same(a: NumpyState, b: NumpyState) -> bool:
    return a[2] == b[2] and bool(np.array_equal(a[1], b[1]))


def _without_randomness(batches: Iterator[Batch]) -> Iterator[Batch]:
    """`batches`, with numpy's generator put back after the permutation drawn for the first."""
    saved = _numpy_now()
    for i, batch in enumerate(batches):
        if i == 0:
            np.random.set_state(saved)
        yield batch


@dataclass(frozen=True)
class Schedule:
    """This attempt's place in the whole run, and the settings that decide when things happen."""

    offset: int
    """Global steps done before this attempt."""
    total: int
    save_every: int
    accumulation: int
    steps_per_eval: int
    val_batches: int


class DataOrder:
    """The `iterate_batches` this trainer hands to mlx_lm's train(): mlx_lm's own batches, with
    the state of each checkpoint written and, on resume, the data order replayed (module
    docstring)."""

    def __init__(
        self,
        schedule: Schedule,
        *,
        optimizer: optim.Optimizer,
        folder: Path,
        val_dataset: Any,
        exact: bool,
        iterate: Callable[..., Iterator[Batch]],
        rank: int = 0,
    ) -> None:
        self.schedule = schedule
        self.rank = rank
        """Only rank 0 writes state files; every rank draws the same randomness."""
        self.optimizer = optimizer
        self.folder = folder
        self.val_dataset = val_dataset
        self.exact = exact
        self.iterate = iterate
        self.fetched = 0
        """Training batches handed out in this attempt (= mlx_lm's iteration number)."""
        self._train: Iterator[Batch] | None = None
        self._train_dataset: Any = None
        self._epoch: NumpyState | None = None
        self._position = 0
        self._pending: int | None = None
        """The global step whose validation an uninterrupted run would do and has not drawn."""
        self._shape: tuple[int, int] = (0, 0)
        self._group: Any = None

    # mlx_lm calls it as iterate_batches(dataset=, batch_size=, max_seq_length=, loop=True,
    # comm_group=) for training and without loop from evaluate() for each validation
    def __call__(
        self,
        dataset: Any,
        batch_size: int,
        max_seq_length: int,
        loop: bool = False,
        seed: int | None = None,
        comm_group: Any = None,
    ) -> Iterator[Batch]:
        if not loop:
            return self._validation(dataset, batch_size, max_seq_length, comm_group)
        if self._train is None:
            self._train = self.iterate(
                dataset=dataset,
                batch_size=batch_size,
                max_seq_length=max_seq_length,
                loop=True,
                seed=seed,
                comm_group=comm_group,
            )
        elif dataset is not self._train_dataset:
            raise RuntimeError("DataOrder was primed with another training set")
        self._train_dataset = dataset
        self._shape, self._group = (batch_size, max_seq_length), comm_group
        return self._training()

    def resume(
        self, dataset: Any, batch_size: int, max_seq_length: int, comm_group: Any, state: TrainState
    ) -> None:
        """Continue the data order of `state`: replay this epoch's trained batches from the
        generator state its permutation was drawn from, then restore the checkpoint's."""
        np.random.set_state(state.numpy_epoch)
        self._train = self.iterate(
            dataset=dataset,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            loop=True,
            comm_group=comm_group,
        )
        for _ in range(state.position):
            next(self._train)
        self._train_dataset = dataset
        self._epoch, self._position = state.numpy_epoch, state.position
        np.random.set_state(state.numpy_now)

    def finish(self) -> None:
        """After train() returned: the last checkpoint's state (nothing fetched after it)."""
        self._settle()

    def _training(self) -> Iterator[Batch]:
        assert self._train is not None
        while True:
            self._settle()
            before = _numpy_now()
            batch = next(self._train)
            if not _same(before, _numpy_now()):  # it opened an epoch: a permutation was drawn
                self._epoch, self._position = before, 1
            else:
                self._position += 1
            self.fetched += 1
            step = self.schedule.offset + self.fetched
            self._pending = step if self._uninterrupted_validates(step) else None
            yield batch

    def _uninterrupted_validates(self, step: int) -> bool:
        """Would an uninterrupted run draw a validation permutation at global `step`?

        mlx_lm's train(): `if val_dataset and (it == 1 or it % steps_per_eval == 0 or it ==
        iters)`; evaluate() draws nothing when it is to take no batches (val_batches 0).
        """
        s = self.schedule
        due = step == 1 or step % s.steps_per_eval == 0 or step == s.total
        return bool(self.val_dataset) and s.val_batches != 0 and due

    def _validation(
        self, dataset: Any, batch_size: int, max_seq_length: int, comm_group: Any
    ) -> Iterator[Batch]:
        step = self.schedule.offset + self.fetched
        counts = self._pending == step
        self._pending = None
        batches = self.iterate(
            dataset=dataset,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            comm_group=comm_group,
        )
        return batches if counts else _without_randomness(batches)

    def _settle(self) -> None:
        """Before the next training batch: step `fetched` is complete."""
        if self._pending is not None:  # a validation this run skipped: draw as it would have
            batch_size, max_seq_length = self._shape
            next(
                self.iterate(
                    dataset=self.val_dataset,
                    batch_size=batch_size,
                    max_seq_length=max_seq_length,
                    comm_group=self._group,
                ),
                None,
            )
            self._pending = None
        done = self.fetched
        if done == 0 or done % self.schedule.save_every != 0 or self.rank != 0:
            return
        name = state_file_name(done)
        if done % self.schedule.accumulation != 0:
            print(f"  state  none for {done:07d}: mid gradient accumulation", flush=True)
            return
        assert self._epoch is not None
        state = TrainState(
            step=self.schedule.offset + done,
            optimizer=self.optimizer.state,
            random_key=_random_key(),
            numpy_now=_numpy_now(),
            numpy_epoch=self._epoch,
            position=self._position,
            exact=self.exact,
        )
        write_state(self.folder / name, state)
        print(f"  state  {name}", flush=True)


# --- the ranks under mlx.launch ---------------------------------------------------------------


def _die_with_launcher() -> None:
    """SIGTERM when mlx.launch goes: it runs each local rank as its child and does not stop
    them when it is killed itself, so a stopped build would leave ranks training into its
    work folder. Linux: PR_SET_PDEATHSIG; elsewhere a thread watching the parent."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent or parent == 1:  # it went before the lines above took effect
        sys.exit(128 + signal.SIGTERM)


def _blas_loaded() -> str:
    """The OpenBLAS this process has mapped (Linux: /proc/self/maps), for the rank's line:
    evidence that core.blas's preload reached the rank, not just that it was asked for."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "the platform's"
    for line in maps.splitlines():
        if "libopenblas" in line:
            return line.split()[-1]
    return "none preloaded (mlx's own)"


def _say(fd: int, line: str) -> None:
    """One line in one write(): whole however mlx.launch interleaves the ranks' output."""
    os.write(fd, (line + "\n").encode())


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks mlx.launch started."""

    rank: int
    size: int
    announce: int
    """The file descriptor for the rank's own `rank R/N ...` lines: the shared output."""

    def finished(self) -> None:
        _say(self.announce, f"rank {self.rank}/{self.size} finished")


def join_ranks(expected: int, logs: Path | None) -> Ranks:
    """Join mlx.launch's group of `expected` ranks; announce this rank; send the output of a
    rank other than 0 to its own file in `logs` (module docstring)."""
    _die_with_launcher()
    # strict: a backend that cannot start must stop the build, not leave each rank training
    # the whole batch alone (mx.distributed.init() would fall back to a group of one)
    world = mx.distributed.init(strict=expected > 1)
    rank, size = world.rank(), world.size()
    if size != expected:
        raise RuntimeError(
            f"mlx.launch was to start {expected} ranks, but mx.distributed sees {size}"
        )
    sys.stdout.flush()
    sys.stderr.flush()
    fd, where = None, "here"
    if rank != 0 and logs is not None:
        path = logs / RANK_LOG.format(rank=rank)
        try:
            logs.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, f"# rank {rank}/{size}, pid {os.getpid()}\n".encode())
            where = f"in {path}"
        except OSError as err:  # another host without the run folder: its output stays here
            where = f"here ({path}: {err.strerror})"
    _say(
        1,
        f"rank {rank}/{size} started: pid {os.getpid()} on {socket.gethostname()}, "
        f"BLAS {_blas_loaded()}, output {where}",
    )
    announce = 1
    if fd is not None:
        announce = os.dup(1)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    # one write per line, so another rank's line never lands inside one of this rank's
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False)
    return Ranks(rank=rank, size=size, announce=announce)


def _shared(path: Path | None, ranks: Ranks | None, what: str) -> None:
    """A resume file every rank must read: on another host than rank 0 it may be missing."""
    if path is not None and ranks is not None and not path.is_file():
        raise FileNotFoundError(
            f"rank {ranks.rank}/{ranks.size} on {socket.gethostname()}: {what} {path} is not "
            "here; a resumed training under a hostfile needs the run folder on a path every "
            "host shares"
        )


# --- the run ----------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> tuple[types.SimpleNamespace, argparse.Namespace]:
    """mlx_lm lora's arguments, completed as its main() does (flags, then -c, then defaults),
    and ours apart, so adapter_config.json records what `mlx_lm lora` would."""
    from mlx_lm.lora import CONFIG_DEFAULTS, build_parser, yaml_loader

    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--offset", type=int, default=0, help="global steps done before")
    ours.add_argument("--total-iters", type=int, default=None, help="the whole run's iterations")
    ours.add_argument("--resume-state", type=Path, default=None, help="a checkpoint's state file")
    ours.add_argument("--ranks", type=int, default=None, help="under mlx.launch: its ranks")
    ours.add_argument("--rank-logs", type=Path, default=None, help="other ranks' output folder")
    mine, rest = ours.parse_known_args(argv)
    args = vars(build_parser().parse_args(rest))
    if args["config"]:
        import yaml

        with open(args["config"]) as fh:
            config = yaml.load(fh, yaml_loader)
        for k, v in config.items():
            if args.get(k) is None:
                args[k] = v
    for k, v in CONFIG_DEFAULTS.items():
        if args.get(k) is None:
            args[k] = v
    if mine.total_iters is None:
        mine.total_iters = mine.offset + args["iters"]
    return types.SimpleNamespace(**args), mine


def prepare_model(args: types.SimpleNamespace, model: nn.Module) -> None:
    """Freeze, unfreeze or add LoRA layers, and load resumed weights: mlx_lm lora's
    train_model up to its optimizer, in its order (the LoRA layers draw from mlx's key)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    mx.random.seed(args.seed)
    model.freeze()
    layers = model.layers
    if args.num_layers > len(layers):
        raise ValueError(
            f"Requested to train {args.num_layers} layers "
            f"but the model only has {len(layers)} layers."
        )
    if args.fine_tune_type == "full":
        for layer in layers[-max(args.num_layers, 0) :]:
            layer.unfreeze()
        args.lora_parameters = None
    elif args.fine_tune_type in ("lora", "dora"):
        linear_to_lora_layers(
            model,
            args.num_layers,
            args.lora_parameters,
            use_dora=args.fine_tune_type == "dora",
        )
    else:
        raise ValueError(f"Received unknown fine-tune-type {args.fine_tune_type}")
    if args.resume_adapter_file is not None:
        print(f"Loading fine-tuned weights from {args.resume_adapter_file}", flush=True)
        model.load_weights(args.resume_adapter_file, strict=False)


def make_optimizer(args: types.SimpleNamespace) -> optim.Optimizer:
    from mlx_lm.tuner.utils import build_schedule

    lr = build_schedule(args.lr_schedule) if args.lr_schedule else args.learning_rate
    name = args.optimizer.lower()
    if name not in _OPTIMIZERS:
        raise ValueError(f"Unsupported optimizer: {name}")
    return _OPTIMIZERS[name](learning_rate=lr, **args.optimizer_config.get(name, {}))


def _check_optimizer_state(state: dict[str, Any], model: nn.Module, path: Path) -> None:
    """The saved moments are for exactly the parameters this run trains."""
    trained = {k for k, _ in tree_flatten(model.trainable_parameters())}
    saved = {k.rpartition(".")[0] for k, _ in tree_flatten(state) if "." in k}
    if saved != trained:
        missing, extra = sorted(trained - saved)[:3], sorted(saved - trained)[:3]
        raise ValueError(
            f"{path}: its optimizer state does not match the trained parameters "
            f"(missing {missing}, unexpected {extra})"
        )


def run(argv: list[str] | None = None) -> None:
    from mlx_lm.cli_ui import make_console, print_lora_run_header, rprint
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.trainer import TrainingArgs, iterate_batches, train
    from mlx_lm.tuner.utils import print_trainable_parameters
    from mlx_lm.utils import load, save_config

    args, mine = parse(argv)
    if not args.train:
        raise ValueError("pipeline.build.trainer only trains: pass --train")
    ranks = join_ranks(mine.ranks, mine.rank_logs) if mine.ranks is not None else None
    rank = ranks.rank if ranks is not None else 0
    _shared(mine.resume_state, ranks, "the state file")
    _shared(
        Path(args.resume_adapter_file) if args.resume_adapter_file else None, ranks, "checkpoint"
    )
    np.random.seed(args.seed)
    rprint("Loading pretrained model")
    loaded = load(
        args.model,
        tokenizer_config={"trust_remote_code": args.trust_remote_code},
        trust_remote_code=args.trust_remote_code,
    )
    # (model, tokenizer); mlx_lm annotates load_dataset's tokenizer as transformers' own
    model, tokenizer = loaded[0], cast(Any, loaded[1])
    rprint("Loading datasets")
    train_set, valid_set, _ = load_dataset(args, tokenizer)
    rprint("Training")
    prepare_model(args, model)
    if mx.distributed.init().rank() == 0:
        print_lora_run_header(make_console(), args)
    print_trainable_parameters(model)

    adapter_path = Path(args.adapter_path)
    adapter_path.mkdir(parents=True, exist_ok=True)
    if rank == 0:  # the other ranks' copies would race it for the same file
        save_config(vars(args), adapter_path / "adapter_config.json")
    training_args = TrainingArgs(
        batch_size=args.batch_size,
        iters=args.iters,
        val_batches=args.val_batches,
        steps_per_report=args.steps_per_report,
        steps_per_eval=args.steps_per_eval,
        steps_per_save=args.save_every,
        adapter_file=str(adapter_path / "adapters.safetensors"),
        max_seq_length=args.max_seq_length,
        grad_checkpoint=args.grad_checkpoint,
        grad_accumulation_steps=args.grad_accumulation_steps,
    )
    optimizer = make_optimizer(args)
    train_dataset, val_dataset = CacheDataset(train_set), CacheDataset(valid_set)

    state = read_state(mine.resume_state) if mine.resume_state is not None else None
    schedule = Schedule(
        offset=mine.offset,
        total=mine.total_iters,
        save_every=args.save_every,
        accumulation=args.grad_accumulation_steps,
        steps_per_eval=args.steps_per_eval,
        val_batches=args.val_batches,
    )
    resumed = args.resume_adapter_file is not None
    order = DataOrder(
        schedule,
        optimizer=optimizer,
        folder=adapter_path,
        val_dataset=val_dataset,
        # a weights-only resume, or one from a state that descends from one, is not exact
        exact=(state.exact if state is not None else not resumed),
        iterate=iterate_batches,
        rank=rank,
    )
    if state is not None:
        if state.step != mine.offset:
            raise ValueError(
                f"{mine.resume_state} is the state after step {state.step}, not {mine.offset}"
            )
        _check_optimizer_state(state.optimizer, model, mine.resume_state)
        optimizer.state = state.optimizer
        order.resume(
            train_dataset,
            args.batch_size,
            args.max_seq_length,
            mx.distributed.init(),
            state,
        )
        set_random_key(state.random_key)
        print(
            f"Resuming {'exactly ' if state.exact else ''}after step {state.step}: optimizer "
            f"state, data order ({state.position} batches into the epoch) and random state from "
            f"{mine.resume_state}"
            + ("" if state.exact else " (it descends from an earlier weights-only resume)"),
            flush=True,
        )
    elif resumed:
        print("Resuming with the weights only: no optimizer or data-order state", flush=True)

    train(
        model=model,
        optimizer=optimizer,
        train_dataset=train_dataset,
        val_dataset=val_dataset,
        args=training_args,
        iterate_batches=order,
    )
    order.finish()
    if ranks is not None:
        ranks.finished()


def _exit_on_term(signum: int, frame: object) -> None:
    # Python runs this between bytecodes, not inside a C call: a SIGTERM (the runner stopping
    # the build, or the build dying) cannot cut a safetensors write in half
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # as mlx_lm lora's main()
    signal.signal(signal.SIGTERM, _exit_on_term)
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
