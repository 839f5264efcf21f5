"""Checkpoints of the whole train state with orbax-checkpoint.

A checkpoint holds the `TrainState` (parameters, optimizer state with its
learning rates, particles, step, random key, swept hyperparameters; the data
position is the step, since batch keys are fold_in(key, step)) and a JSON
metadata dict (the config and whatever the harness needs to continue).

Orbax writes each step into a temporary directory and renames it when complete,
so a process killed mid-write leaves only a temporary directory, which orbax
ignores. `restore_latest` goes further: if the newest step directory cannot be
read (half-copied, corrupted), it falls back to the one before it, and moves the
unreadable one aside (to `<directory>.damaged/<step>-<time>`, kept for inspection),
so that the run can write that step again when it gets there.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import orbax.checkpoint as ocp


class Restored(NamedTuple):
    """A restored checkpoint: its step, the state and the metadata dict."""

    step: int
    state: Any
    metadata: dict


class Checkpointer:
    """Saves states every call to `save`, keeps the newest `max_to_keep`, restores exactly.

    directory: where step directories live (created). Saving is synchronous: the
    state is small next to the work between saves, and a synchronous save is
    complete when `save` returns, which preemption handling relies on.
    """

    def __init__(self, directory, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, metadata: dict) -> None:
        """Write `state` and `metadata` as step `step` (overwrites nothing: steps are unique)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  metadata=ocp.args.JsonSave(metadata))
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore(self, step: int, abstract_state) -> Restored:
        """The checkpoint of `step`, shaped, typed and sharded like `abstract_state`."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                  metadata=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        return Restored(step, restored.state, dict(restored.metadata))

    def restore_latest(self, abstract_state,
                       report: Callable[[int, Path, Exception], None] | None = None
                       ) -> Restored | None:
        """The newest checkpoint that reads back, or None when there is none.

        Each unreadable step on the way is moved aside (by process 0; see `move_aside`)
        and reported as report(step, where it went, the error), by default a warning.
        """
        for step in reversed(self.steps()):
            try:
                return self.restore(step, abstract_state)
            except Exception as error:  # a damaged step: fall back to the previous one
                aside = self.move_aside(step)
                if report is None:
                    logging.warning("checkpoint at step %d in %s is unreadable (%s); moved it "
                                    "aside to %s", step, self.directory, error, aside)
                else:
                    report(step, aside, error)
        return None

    def move_aside(self, step: int) -> Path:
        """Move the directory of `step` to `<directory>.damaged/<step>-<time>` (outside the
        directory, so that orbax no longer lists it and the step can be written again).
        Under several processes only process 0 moves it. Returns the new place."""
        aside = (self.directory.with_name(self.directory.name + ".damaged")
                 / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        source = self.directory / str(step)
        if jax.process_index() == 0 and source.exists():
            aside.parent.mkdir(parents=True, exist_ok=True)
            while aside.exists():
                aside = aside.with_name(aside.name + "-1")
            shutil.move(str(source), str(aside))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"ebmdual: step {step} moved aside")
        self._manager.reload()
        return aside

    def close(self) -> None:
        self._manager.close()

