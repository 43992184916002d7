"""The training subprocess: mlx_lm's own training loop, with checkpoints a resume continues exactly.

    python -m pipeline.builder.trainer [the flags of `mlx_lm lora --train`]
        [--offset S --total-iters T] [--resume-adapter-file F --resume-state STATE]
        [--ranks N --rank-logs DIR]     (under mlx.launch: data-parallel over N ranks)

It parses `mlx_lm lora`'s flags with mlx_lm's own parser and does what `mlx_lm lora --train`
does with them (mlx_lm/lora.py `run` and `train_model`, 0.32): seed numpy and mlx with --seed,
load the model and data with mlx_lm, freeze the model and unfreeze the trained layers (full) or
add LoRA layers, load --resume-adapter-file, build the optimizer and call
`mlx_lm.tuner.trainer.train`. An uninterrupted run therefore trains the same model, printing
the same lines, as `mlx_lm lora` (tests/unit/builder/test_resume.py compares the two). What it
adds is the `iterate_batches` it hands to train(): `DataOrder`, a wrapper around mlx_lm's own, which
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

Under mlx.launch (`--ranks N`, pipeline/builder/train.py starts it) every rank runs this module:
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
import os
import signal
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from pipeline.builder.data_order import DataOrder, Schedule
from pipeline.builder.ranks import join_ranks, require_shared
from pipeline.builder.train_state import read_state, set_random_key

_OPTIMIZERS: dict[str, Callable[..., optim.Optimizer]] = {
    "adam": optim.Adam,
    "adamw": optim.AdamW,
    "muon": optim.Muon,
    "sgd": optim.SGD,
    "adafactor": optim.Adafactor,
}


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
        raise ValueError("pipeline.builder.trainer only trains: pass --train")
    ranks = join_ranks(mine.ranks, mine.rank_logs) if mine.ranks is not None else None
    rank = ranks.rank if ranks is not None else 0
    require_shared(mine.resume_state, ranks, "the state file")
    require_shared(
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
