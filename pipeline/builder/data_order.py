"""The data order: mlx_lm's own batches, the state of each checkpoint written, and on resume
the data order replayed, so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.optimizers as optim
import numpy as np

from pipeline.builder.checkpoints import state_file_name
from pipeline.builder.train_state import (
    Batch,
    NumpyState,
    TrainState,
    numpy_now,
    random_key_now,
    write_state,
)


def _same(a: NumpyState, b: NumpyState) -> bool:
    return a[2] == b[2] and bool(np.array_equal(a[1], b[1]))


def _without_randomness(batches: Iterator[Batch]) -> Iterator[Batch]:
    """`batches`, with numpy's generator put back after the permutation drawn for the first."""
    saved = numpy_now()
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
            before = numpy_now()
            batch = next(self._train)
            if not _same(before, numpy_now()):  # it opened an epoch: a permutation was drawn
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
            random_key=random_key_now(),
            numpy_now=numpy_now(),
            numpy_epoch=self._epoch,
            position=self._position,
            exact=self.exact,
        )
        write_state(self.folder / name, state)
        print(f"  state  {name}", flush=True)
