"""Streamed batches: the host reads chunks of S batches while the device trains on the last.

The batch of step t is a pure function of (seed, t): items are visited in epochs,
epoch e in the order of a permutation drawn from `numpy.random.default_rng([seed,
e])`, and step t takes the B items at positions t·B, …, t·B + B − 1 of that
sequence. A resumed run therefore reads exactly the batches of a straight one,
and a chunk can start at any step.

Under several processes each process reads only its share of each batch: the
rows [i·B/P, (i+1)·B/P) for process i of P, which
`ebmdual.train.Trainer.put` assembles into one global array
(`jax.make_array_from_process_local_data`).

A source is anything with `len(source)` and `source[indices] -> pytree of arrays
with leading axis len(indices)` (NumPy arrays, `ArraySource`, a TFDS
`data_source` behind a small adapter). Items keep their stored dtype (uint8
images): the cast happens on the device, in the trainer's `preprocess`.

Written here rather than taken from grain: the index rule above is five lines,
and it must agree bit for bit with what a resumed run reads; grain's samplers
would add a dependency without removing any of it.
"""

from __future__ import annotations

import functools
import queue
import threading
from typing import Any, Iterator

import jax
import numpy as np

__all__ = ["ArraySource", "as_source", "batch_indices", "read_chunk", "chunks", "Prefetcher"]


class ArraySource:
    """A pytree of host arrays with a shared leading axis, indexable by an index array."""

    def __init__(self, arrays: Any):
        self.arrays = arrays
        sizes = {np.shape(leaf)[0] for leaf in jax.tree.leaves(arrays)}
        if len(sizes) != 1:
            raise ValueError(f"the leaves of a source must share their leading axis, got {sizes}")
        self._size = sizes.pop()

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, indices):
        return jax.tree.map(lambda leaf: np.asarray(leaf)[indices], self.arrays)


def as_source(data):
    """A source for `data`: itself when it already is one (an object with len and indexing,
    such as `ebmdual.data.images.ImageSource`), else an `ArraySource` of the arrays."""
    if isinstance(data, (np.ndarray, jax.Array, dict, list, tuple)):
        return ArraySource(data)
    return data


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, num_items: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_items)


def batch_indices(seed: int, step: int, num_items: int, batch_size: int) -> np.ndarray:
    """Indices (batch_size,) of the items of step `step`: positions step·B .. step·B + B − 1
    of the epoch-by-epoch permuted sequence."""
    positions = step * batch_size + np.arange(batch_size)
    epochs, offsets = np.divmod(positions, num_items)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        here = epochs == epoch
        out[here] = _epoch_order(seed, int(epoch), num_items)[offsets[here]]
    return out


def read_chunk(source, seed: int, first_step: int, num_steps: int, batch_size: int,
               process_index: int = 0, process_count: int = 1):
    """This process's share of the batches of steps first_step .. first_step + S − 1:
    a pytree of arrays (S, B/P, ...)."""
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} must be divisible by the process count "
                         f"{process_count}")
    share = batch_size // process_count
    rows = slice(process_index * share, (process_index + 1) * share)
    index = np.stack([batch_indices(seed, step, len(source), batch_size)[rows]
                      for step in range(first_step, first_step + num_steps)])
    items = source[index.reshape(-1)]
    return jax.tree.map(lambda leaf: leaf.reshape(num_steps, share, *leaf.shape[1:]), items)


def chunks(source, seed: int, first_step: int, num_steps: int, batch_size: int,
           process_index: int = 0, process_count: int = 1) -> Iterator:
    """Chunks of `num_steps` batches from step `first_step` on, without end."""
    step = first_step
    while True:
        yield read_chunk(source, seed, step, num_steps, batch_size, process_index, process_count)
        step += num_steps


class Prefetcher:
    """Iterates `iterator` in a background thread, keeping at most `depth` items ready.

    The host prepares chunk k+1 while the device runs chunk k. `close()` stops the thread.
    Errors raised by the iterator are raised again by `next`.
    """

    _DONE = object()

    def __init__(self, iterator: Iterator, depth: int = 1):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iterator,), daemon=True)
        self._thread.start()

    def _fill(self, iterator):
        try:
            for item in iterator:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as error:  # handed to the consumer
            self._queue.put(error)
            return
        self._queue.put(self._DONE)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
