"""`train_and_evaluate(config, workdir)`: one run from a config to metrics, plots and a summary.

Data flows one way: config → validation → workdir (locked, checked against the
config) → data set → trainer (energy, sampler, optimizer, jitted loop) →
config.json and run_info.json → state (restored from the newest readable
checkpoint of the workdir, or `init(key)`) → chunks of `train.log_every` steps,
each one compiled `lax.scan` call → metrics.jsonl (one line per chunk with its
means; evaluation lines every `train.eval_every` steps) → checkpoints every
`train.checkpoint_every` steps and at the end → plots → summary.json.

Guarantees:
* One run per workdir: process 0 holds an advisory lock (flock) on workdir/.lock,
  which holds its pid, for the whole call; a second run on the workdir is refused
  naming that pid. The kernel drops the lock when the process ends, however it
  ends, so a killed run leaves no stale lock.
* A failed start leaves nothing behind: config.json and run_info.json are written
  only once the data set is loaded and the trainer built, and every file of the
  workdir but metrics.jsonl (appended line by line) is written atomically (a
  temporary file, fsync, rename). Configs are compared key by key: a key that the
  code added since, at its default value, is the same config.
* Resume is exact: a run interrupted at any point (SIGKILL included) and started
  again gives the same metrics and final state, bit for bit, as a run never
  interrupted (batch and step keys are fold_in(seed key, step); metrics.jsonl is
  cut back to the checkpoint's step, dropping a torn last line and the rollbacks
  that the checkpoint does not know of). An unreadable newest checkpoint is moved
  aside (`checkpoints.damaged/`) and the run resumes from the one before.
* A finished run is left untouched: started again, it says so and returns its summary.
* SIGTERM / SIGINT: acknowledged at once; the current chunk finishes, a checkpoint
  is written, and `Preempted` is raised with the command that resumes. A second
  signal exits at once (status 128 + signal) without saving; the last complete
  checkpoint stays valid.
* Divergence (a non-finite loss, parameter or particle, |energy gap| >
  `train.max_energy_gap`, or a stalled chunk: no parameter changed, or a loss
  identically 0) raises `Diverged` naming the step, the quantity and the last
  good checkpoint; with `train.on_divergence='rollback'` the run goes back to that
  checkpoint, multiplies the learning rates by `train.rollback_lr_factor` and
  continues, at most `train.max_rollbacks` times. A diverged state is never
  checkpointed: the check precedes the save.
* Files that cannot be written (a full disk, a read-only workdir) raise
  `WorkdirError` with one line, naming the checkpoint that is intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging as py_logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from jax.experimental import multihost_utils

from ebmdual.checkpoint import Checkpointer
from ebmdual.data import get_dataset, stream
from ebmdual.optim import learning_rates
from ebmdual.train import with_hyperparams
from experiments import plots
from experiments.evaluate import held_out_images, make_evaluator, temperature_scaled
from experiments.registry import build_trainer
from experiments.validation import validate_config

PROGRESS_KEYS = ("loss", "energy_gap", "kl", "test_nll")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "blackjax", "chex", "orbax-checkpoint",
            "ml-collections", "tensorflow-datasets", "numpy", "ebmdual")
LOCK_FILE = ".lock"


class WorkdirError(RuntimeError):
    """The workdir cannot be used (another config, in use, not a writable directory,
    unreadable files) or a file could not be written (a full disk). One line."""


class Preempted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was written. The message says how to resume."""


class Diverged(RuntimeError):
    """Training diverged (and could not, or was not allowed to, roll back)."""


def exit_status(error: BaseException, usage_errors: tuple = ()) -> int | None:
    """How `experiments.run` and `experiments.sweep` end on `error`: the message printed on
    one line, and the exit status returned. 2: a bad config, data set, workdir or flag
    (`usage_errors`, the caller's own kinds), or a write that failed (a full disk);
    1: training diverged; 0: preempted (a checkpoint was written; the message says how to
    resume). None for any other error, which the caller re-raises with its traceback."""
    from ebmdual.data import DatasetError
    from experiments.validation import ConfigError

    if isinstance(error, (ConfigError, WorkdirError, DatasetError, *usage_errors)):
        print(f"error: {error}", file=sys.stderr)
        return 2
    if isinstance(error, OSError):  # a write the harness did not expect to fail
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    if isinstance(error, Diverged):
        print(f"error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, Preempted):
        print(f"\n{error}")
        return 0
    return None


class StoredSummary(dict):
    """The summary.json of a run that had finished before: nothing was done this time."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace runs collapsed), at most `limit` chars."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def say(message: str) -> None:
    """Print a line (process 0 only) above the progress bar, not on its line."""
    if jax.process_index() == 0:
        tqdm.write(message)
        sys.stdout.flush()


# ----------------------------------------------------------------------------- workdir

def config_json(config) -> str:
    return config.to_json_best_effort(indent=2, sort_keys=True)


def run_info() -> dict:
    """Package versions, Python, devices and the git commit of the code that runs."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except OSError:
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"packages": versions, "python": sys.version.split()[0],
            "devices": [str(d) for d in jax.devices()],
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": None if status is None else bool(status)}


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` at once: a temporary file in the same directory, fsynced,
    renamed over it. A crash leaves the old file or the new one, never a part of one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise WorkdirError(f"could not write {path}: {error.strerror or one_line(error)}") from error


class WorkdirLock:
    """An advisory lock (fcntl.flock) on workdir/.lock, which holds the holder's pid.

    The kernel releases it when the process ends, however it ends, so a killed run
    leaves no stale lock (the file stays; only the lock on it matters)."""

    def __init__(self, workdir: Path):
        self.workdir, self.path, self._file = Path(workdir), Path(workdir) / LOCK_FILE, None

    def acquire(self) -> None:
        try:
            handle = open(self.path, "a+")
        except OSError as error:
            raise WorkdirError(f"cannot write into the workdir {self.workdir}: "
                               f"{error.strerror or one_line(error)}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirError(f"cannot lock {self.path}: {error.strerror}") from None
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise WorkdirError(f"{self.workdir} is in use by {who} (it holds {self.path}); "
                               "wait for it to finish or stop it, or choose another "
                               "--workdir") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except OSError as error:
            handle.close()
            raise WorkdirError(f"cannot write into the workdir {self.workdir}: "
                               f"{error.strerror or one_line(error)}") from None
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None


_ABSENT = object()


def config_differences(stored: dict, new: dict, defaults: dict, prefix: str = "") -> list[str]:
    """'key: X there, Y here' for every key whose values differ. A key absent from the
    stored config is no difference when its new value is the code's default (`defaults`,
    the same nesting): the code added it after the stored run."""
    def show(value):
        text = "a section" if isinstance(value, dict) else repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    differences = []
    for key in sorted(set(stored) | set(new)):
        name = prefix + key
        old, value = stored.get(key, _ABSENT), new.get(key, _ABSENT)
        default = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
        if isinstance(value, dict) and (isinstance(old, dict) or old is _ABSENT):
            differences += config_differences({} if old is _ABSENT else old, value,
                                              default if isinstance(default, dict) else {},
                                              name + ".")
        elif old is _ABSENT:
            if not (default is not _ABSENT and default == value):
                differences.append(f"{name}: absent there, {show(value)} here")
        elif value is _ABSENT:
            differences.append(f"{name}: {show(old)} there, absent here")
        elif old != value:
            differences.append(f"{name}: {show(old)} there, {show(value)} here")
    return differences


def holds_checkpoints(workdir: Path) -> bool:
    directory = workdir / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def finished_summary(workdir: Path, num_steps: int) -> dict | None:
    """The summary.json of a run that reached `num_steps`, or None."""
    try:
        summary = json.loads((workdir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(summary, dict) and isinstance(summary.get("steps"), int) \
            and summary["steps"] >= num_steps:
        return summary
    return None


def inspect_workdir(workdir: Path, config, overwrite: bool) -> str:
    """What `workdir` holds for `config`: 'empty' (start afresh), 'same' (this run: resume
    it, or start it), 'finished' (this run, finished), or 'replace' (another run, or a
    finished one, and `overwrite`: move it aside). Otherwise raises WorkdirError."""
    from experiments.defaults import base_config

    stored_path = workdir / "config.json"
    refusal = None
    try:
        text = stored_path.read_text()
        stored = json.loads(text)
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        stored, refusal = None, f"{workdir} holds checkpoints but no config.json"
    except (OSError, ValueError) as error:
        reason = "empty" if stored_path.exists() and stored_path.stat().st_size == 0 \
            else one_line(error, 120)
        stored, refusal = None, f"{stored_path} is unreadable ({reason}), but the workdir holds checkpoints"
    if stored is None:
        if not holds_checkpoints(workdir):
            return "empty"  # a start that never got going: nothing to keep
        if overwrite:
            return "replace"
        raise WorkdirError(f"{refusal}: pass --overwrite to move the run aside and start "
                           "afresh, or choose another --workdir")
    differences = config_differences(stored, json.loads(config_json(config)),
                                     json.loads(config_json(base_config())))
    if differences:
        if overwrite:
            return "replace"
        shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
        raise WorkdirError(f"{workdir} holds a run with a different config ({shown}; see "
                           f"{stored_path}); pass --overwrite to move it aside and start "
                           "afresh, or choose another --workdir")
    if finished_summary(workdir, config.train.num_steps) is not None:
        return "replace" if overwrite else "finished"
    return "same"


def open_workdir(workdir: Path, config, overwrite: bool) -> tuple[WorkdirLock, str]:
    """Create and lock `workdir`, and say what it holds (`inspect_workdir`)."""
    if overwrite:
        here, target = Path.cwd().resolve(), workdir.resolve()
        if here == target or target in here.parents:
            raise WorkdirError(f"--overwrite would move aside the workdir {workdir}, which holds "
                               "the current directory; choose a subdirectory as --workdir")
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"the workdir {workdir} is a file, not a directory; choose another "
                           "--workdir")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"cannot create the workdir {workdir}: "
                           f"{error.strerror or one_line(error)}") from None
    lock = WorkdirLock(workdir)
    lock.acquire()
    try:
        return lock, inspect_workdir(workdir, config, overwrite)
    except BaseException:
        lock.release()
        raise


def move_run_aside(workdir: Path, lock: WorkdirLock) -> WorkdirLock:
    """Rename the workdir to <workdir>.old-<time> (kept, not deleted), create it anew and
    lock the new one; returns the new lock."""
    aside = workdir.with_name(f"{workdir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    while aside.exists():
        aside = aside.with_name(aside.name + "-1")
    try:
        os.rename(workdir, aside)
        workdir.mkdir()
    except OSError as error:
        raise WorkdirError(f"cannot move {workdir} aside to {aside}: "
                           f"{error.strerror or one_line(error)}") from None
    new_lock = WorkdirLock(workdir)
    new_lock.acquire()
    lock.release()
    say(f"moved the previous run aside to {aside}")
    return new_lock


VERDICTS = ("refused", "empty", "same", "finished", "replace")


def from_process_0(verdict: str) -> str:
    """Process 0's verdict on the workdir, in every process (all must call this together)."""
    if jax.process_count() == 1:
        return verdict
    index = multihost_utils.broadcast_one_to_all(np.int32(VERDICTS.index(verdict)))
    return VERDICTS[int(index)]


# ----------------------------------------------------------------------------- metrics

class MetricsLog:
    """JSON lines in `path`, flushed on every write, also kept in memory for plots.

    enabled=False (processes other than 0) keeps the rows in memory and touches no file.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self.rows: list[dict] = []

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
        except OSError as error:
            raise WorkdirError(f"could not write {self.path}: "
                               f"{error.strerror or one_line(error)}") from error

    def rows_of(self, kind: str) -> list[dict]:
        return [r for r in self.rows if r["kind"] == kind]

    def read(self) -> list[dict]:
        """The rows on disk. A torn last line (a crash mid-write) is dropped; any other
        line that is not a JSON row raises WorkdirError naming it."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().decode("utf-8", errors="replace").split("\n")
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        rows = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not (isinstance(row, dict) and "kind" in row and "step" in row):
                    raise ValueError("not a metrics row")
            except ValueError as error:
                if i == last:
                    continue  # torn by a crash while it was written
                raise WorkdirError(f"{self.path}, line {i + 1}, is not a metrics row "
                                   f"({one_line(error, 80)}): repair or delete that line, or "
                                   "pass --overwrite to start afresh") from None
            rows.append(row)
        return rows

    def truncate(self, step: int, keep_rollbacks: bool = False) -> None:
        """Keep the rows up to `step`, on disk too.

        Rollback rows are kept when the checkpoint of `step` knows of them (they restored
        an earlier step; a rollback to `step` itself came after that checkpoint and will
        happen again), or all of them with keep_rollbacks (a rollback within the run)."""

        def keep(row):
            if row["kind"] == "rollback":
                return keep_rollbacks or row.get("restored_step", row["step"]) < step
            return row["step"] <= step

        if step < 0:  # a fresh start: whatever is there goes, readable or not
            self.rows = []
        else:
            self.rows = [r for r in (self.read() if self.enabled else self.rows) if keep(r)]
        if self.enabled:
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))


def chunk_means(metrics: dict, step: int) -> dict:
    """Stacked (chunk,) metrics -> their means as floats, with the step reached."""
    return {"kind": "train", "step": step,
            **{k: float(np.mean(v)) for k, v in metrics.items()}}


class Divergence(NamedTuple):
    """The first diverged step of a chunk, what diverged (a phrase that names the quantity
    and its value where it has one), and that value (nan where there is none)."""

    step: int
    quantity: str
    value: float


def all_finite(tree) -> bool:
    """True when every floating leaf of a pytree of host arrays is finite."""
    return all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def find_divergence(metrics: dict, first_step: int, max_energy_gap: float,
                    host_state: Callable[[], tuple] | None = None) -> Divergence | None:
    """The Divergence of the first diverged step of a chunk, or None.

    metrics: host arrays of shape (chunk,); first_step: the step of metrics[...][0] (1-based).
    host_state: () -> (params, particles) as host arrays at the chunk's end (particles
    may be None), called only to tell which of them is non-finite.
    """
    finite = np.asarray(metrics["finite"]) > 0
    # Without a sampler (score-matching objectives) there is no energy gap to bound.
    gap = np.asarray(metrics.get("energy_gap", np.zeros_like(finite, np.float32)))
    bad = ~finite | ~(np.abs(gap) <= max_energy_gap)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    step, loss = first_step + i, float(metrics["loss"][i])
    if not finite[i]:
        if not np.isfinite(loss):
            return Divergence(step, f"non-finite loss ({loss})", loss)
        culprits = []
        if host_state is not None:
            params, particles = host_state()
            culprits = [name for name, tree in (("parameters", params), ("particles", particles))
                        if tree is not None and not all_finite(tree)]
        return Divergence(step, "non-finite " + (" and ".join(culprits) or "parameters or particles"),
                          float("nan"))
    return Divergence(step, f"|energy gap| = {abs(float(gap[i])):.4g} > train.max_energy_gap = "
                            f"{max_energy_gap:g}", float(gap[i]))


def find_stall(metrics: dict, params_before, params_after, first_step: int) -> Divergence | None:
    """A Divergence when the chunk stalled: its loss identically 0, or no parameter changed
    (params_*: host copies at the chunk's start and end); else None."""
    last = first_step + len(np.asarray(metrics["loss"])) - 1
    span = f"steps {first_step}-{last}"
    if np.all(np.asarray(metrics["loss"]) == 0):
        return Divergence(last, f"stalled: loss identically 0 over {span}", 0.0)
    before, after = jax.tree.leaves(params_before), jax.tree.leaves(params_after)
    if len(before) == len(after) and all(np.array_equal(a, b) for a, b in zip(before, after)):
        return Divergence(last, f"stalled: no parameter changed over {span}", 0.0)
    return None


# ----------------------------------------------------------------------------- signals

class PreemptionFlag:
    """Context manager: SIGTERM and SIGINT set `.raised` instead of killing the process.

    The first signal is acknowledged at once (by a thread woken through
    signal.set_wakeup_fd, even while the main thread waits on a compiled call); a
    second one exits at once, status 128 + signal, without saving: the last complete
    checkpoint (`.last_checkpoint`, kept up to date by the caller) stays valid.
    announce=False (processes other than 0) prints nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    ACKNOWLEDGE = ("stopping after this chunk: saving a checkpoint; press Ctrl-C again to stop "
                   "without saving")

    def __init__(self, announce: bool = True):
        self.raised = None
        self.last_checkpoint = None
        self.announce = announce
        self._previous = {}
        self._received = 0
        self._watching = False
        self._pipe = None
        self._thread = None
        self._old_wakeup = -1

    def _handle(self, signum, frame):
        del frame
        if self.raised is None:
            self.raised = signal.Signals(signum).name
        if not self._watching:  # no wake-up thread: count here
            self._received_signal(signum)

    def _received_signal(self, signum: int) -> None:
        self._received += 1
        name = signal.Signals(signum).name
        if self.raised is None:
            self.raised = name
        label = "Ctrl-C" if signum == signal.SIGINT else name
        if self._received == 1:
            self._print(self.ACKNOWLEDGE if signum == signal.SIGINT else
                        f"{name} received: " + self.ACKNOWLEDGE.replace(
                            "press Ctrl-C again", "a second signal stops it"))
            return
        where = "" if self.last_checkpoint is None else f" (step {self.last_checkpoint})"
        self._print(f"second {label}: stopped without saving; the last complete "
                    f"checkpoint{where} stays valid")
        for stream_ in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream_.flush()
        os._exit(128 + signum)

    def _print(self, message: str) -> None:
        if self.announce:
            with contextlib.suppress(Exception):
                tqdm.write(message)
                sys.stdout.flush()

    def _watch(self, fd: int) -> None:
        wanted = {int(s) for s in self.SIGNALS}
        while True:
            try:
                data = os.read(fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in wanted:
                    self._received_signal(signum)

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            read_end, write_end = os.pipe()
            os.set_blocking(write_end, False)
            self._old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except (OSError, ValueError):
            return self
        self._pipe = (read_end, write_end)
        self._thread = threading.Thread(target=self._watch, args=(read_end,), daemon=True,
                                        name="ebmdual-signals")
        self._watching = True
        self._thread.start()
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            self._watching = False
            os.close(self._pipe[1])  # the thread reads the end of the pipe and returns
            self._thread.join(timeout=5)
            os.close(self._pipe[0])
            self._pipe = None
        return False


# ----------------------------------------------------------------------------- plots

def save_plots(dataset, trainer, params, particles, temperature: float, log: MetricsLog,
               workdir: Path, config=None) -> None:
    """metrics.png, and samples.png for 2-D, S^2 and image tasks (titled with the run's
    name and swept values; for images: particles beside data, and the histogram of their
    energies against held-out images'). particles: host arrays or None."""
    title = (plots.run_title(config, str(workdir), sample_shape=dataset.train.shape[1:])
             if config is not None else None)
    plots.plot_metrics(log.rows_of("train"), log.rows_of("eval"), str(workdir / "metrics.png"),
                       title=title)
    model = temperature_scaled(trainer.energy_fn)
    model_params = (params, temperature)
    dim = dataset.train.shape[-1]
    samples = str(workdir / "samples.png")
    if dataset.manifold == "image":
        plots.plot_image_samples(model, [plots.ImageRun("particles", model_params, particles)],
                                 dataset.test, held_out_images(config, dataset), samples,
                                 data_range=tuple(config.data.data_range), title=title)
    elif dataset.manifold == "sphere" and dim == 3:
        plots.plot_samples_sphere(model, model_params, dataset.target_energy_fn,
                                  dataset.target_params, dataset.train, particles, samples,
                                  title=title)
    elif dataset.manifold == "euclidean" and dim == 2:
        plots.plot_samples_2d(model, model_params, dataset.train, particles, dataset.box,
                              samples, title=title)


# ----------------------------------------------------------------------------- processes

def host_copy(tree):
    """NumPy copies of a pytree of (possibly multi-process) arrays, gathered whole.

    Every process must call it (gathering sharded leaves is a collective)."""

    def fetch(leaf):
        if leaf is None or not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return None if leaf is None else np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(fetch, tree)


def evaluate_on_host(evaluate, state, particle_weights=None) -> dict:
    """Evaluate a TrainState: every process gathers the particles (and, for
    `particle_weights` = `Trainer.particle_weights` not None, the sampler state), process 0
    evaluates (the others return {})."""
    params, particles = host_copy(state.params), host_copy(state.particles)
    sampler_state = host_copy(state.sampler_state) if particle_weights is not None else None
    temperature = float(host_copy(state.hparams["temperature"]))
    if jax.process_index() != 0:
        return {}
    weights = particle_weights(sampler_state) if particle_weights is not None else None
    return evaluate(params, particles, temperature, weights)


# ----------------------------------------------------------------------------- run

class Position(NamedTuple):
    """Where a run stands: the state, its step, the learning-rate scale from rollbacks
    (1 without), and how many rollbacks happened. Checkpoint metadata holds the last two."""

    state: Any
    step: int
    lr_scale: float
    rollbacks: int


@contextlib.contextmanager
def _errors_unlogged():
    """Keep the errors that orbax's threads log (absl) off the console while a save runs;
    a failed save is reported by the caller in one line."""
    logger = py_logging.getLogger("absl")
    level = logger.level
    logger.setLevel(py_logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def save_checkpoint(checkpoints: Checkpointer, position: Position, config) -> None:
    """The state, with the config and the rollback bookkeeping as metadata. A failed save
    (a full disk) removes its partial directory and raises WorkdirError in one line."""
    try:
        with _errors_unlogged():
            checkpoints.save(position.step, position.state,
                             {"lr_scale": position.lr_scale, "rollbacks": position.rollbacks,
                              "config": json.loads(config_json(config))})
    except Exception as error:
        for partial in checkpoints.directory.glob(f"{position.step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(partial, ignore_errors=True)
        try:
            intact = [s for s in checkpoints.steps() if s < position.step]
        except Exception:  # noqa: BLE001 - the listing is only for the message
            intact = []
        where = (f"the checkpoint of step {intact[-1]} is intact" if intact
                 else "no checkpoint was complete")
        raise WorkdirError(f"could not write the checkpoint of step {position.step} in "
                           f"{checkpoints.directory}: {one_line(error)}; {where}: free space (or "
                           "fix the workdir) and run the same command to resume") from error


def report_damaged(step: int, aside: Path, error: Exception) -> None:
    say(f"the checkpoint of step {step} is unreadable ({one_line(error, 160)}); "
        f"moved aside to {aside}")


class TimedEvaluator:
    """An `evaluate` that adds up its wall-clock seconds and calls, for summary.json's
    seconds per evaluation and per train step. Timings stay out of metrics.jsonl, whose
    lines are identical between a resumed and a straight run."""

    def __init__(self, evaluate):
        self.evaluate, self.seconds, self.calls = evaluate, 0.0, 0
        self.seconds_at_start = 0.0

    def start_clock(self) -> None:
        """Called when the train loop starts its clock: seconds_since_start counts from here."""
        self.seconds_at_start = self.seconds

    @property
    def seconds_since_start(self) -> float:
        return self.seconds - self.seconds_at_start

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.evaluate(*args)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def start_or_resume(checkpoints, trainer, init_state, evaluate, log, workdir, config) -> Position:
    """The newest readable checkpoint, or a fresh state (evaluated and saved as step 0)."""
    restored = checkpoints.restore_latest(trainer.abstract_state, report=report_damaged)
    if restored is None:
        position = Position(init_state(), 0, 1.0, 0)
        log.truncate(-1)
        log.write({"kind": "eval", "step": 0, **evaluate_on_host(evaluate, position.state,
                                                                 trainer.particle_weights)})
        save_checkpoint(checkpoints, position, config)
        return position
    log.truncate(restored.step)
    say(f"resuming {workdir} from the checkpoint at step {restored.step}")
    return Position(restored.state, restored.step, restored.metadata["lr_scale"],
                    restored.metadata["rollbacks"])


def roll_back(divergence, position: Position, checkpoints, trainer, train_cfg, log) -> Position:
    """Restore the last good checkpoint with learning rates lowered by rollback_lr_factor,
    or raise Diverged when rollbacks are off or used up."""
    bad_step, quantity, value = divergence
    rollback = train_cfg.on_divergence == "rollback"
    if not rollback or position.rollbacks >= train_cfg.max_rollbacks:
        steps = checkpoints.steps()
        last_good = (f"step {steps[-1]} in {checkpoints.directory}" if steps
                     else f"none in {checkpoints.directory}")
        if rollback:
            why = (f", after {position.rollbacks} rollback{'s' * (position.rollbacks != 1)} "
                   f"(train.max_rollbacks={train_cfg.max_rollbacks})")
            advice = ("Try smaller learning rates, a smaller train.rollback_lr_factor or a "
                      "larger train.max_rollbacks.")
        else:
            why, advice = "", "Try a smaller learning rate, or --config.train.on_divergence=rollback."
        raise Diverged(f"training diverged at step {bad_step}: {quantity}{why}. Last good "
                       f"checkpoint: {last_good}. {advice}")
    restored = checkpoints.restore_latest(trainer.abstract_state, report=report_damaged)
    if restored is None:
        raise Diverged(f"training diverged at step {bad_step}: {quantity}, and no checkpoint in "
                       f"{checkpoints.directory} reads back to roll back to.")
    last_good = restored.step
    lr_scale = position.lr_scale * train_cfg.rollback_lr_factor
    factor = lr_scale / restored.metadata["lr_scale"]  # the checkpoint may predate earlier rollbacks
    rates = learning_rates(restored.state.opt_state)
    state = with_hyperparams(restored.state, **{k: v * factor for k, v in rates.items()})
    rolled = Position(state, last_good, lr_scale, position.rollbacks + 1)
    log.truncate(last_good, keep_rollbacks=True)
    log.write({"kind": "rollback", "step": bad_step, "quantity": quantity, "value": value,
               "restored_step": last_good, "lr_scale": lr_scale})
    say(f"step {bad_step}: {quantity}; rolled back to step {last_good} with learning rates "
        f"x{lr_scale:g} (rollback {rolled.rollbacks} of at most {train_cfg.max_rollbacks})")
    return rolled


class DataFeed:
    """What `train_loop` reads, chunk after chunk: the resident data set every time, or
    streamed chunks of batches (read by a background thread, one chunk ahead)."""

    def __init__(self, components, dataset, seed: int, chunk: int):
        self.trainer, self.streamed = components.trainer, components.streamed
        self.batch_size, self.seed, self.chunk = components.batch_size, seed, chunk
        self._prefetcher = None
        if self.streamed:
            self.source = stream.as_source(dataset.train)
        else:
            self.resident = self.trainer.put(dataset.train)

    def init_data(self):
        """What `trainer.init` takes: the resident set, or the batch of step 0."""
        if not self.streamed:
            return self.resident
        batch = stream.read_chunk(self.source, self.seed, 0, 1, self.batch_size,
                                  jax.process_index(), jax.process_count())
        return self.trainer.put_batch(jax.tree.map(lambda leaf: leaf[0], batch))

    def start(self, step: int) -> None:
        """Stream from `step` on (after a start, a resume or a rollback)."""
        self.close()
        if self.streamed:
            self._prefetcher = stream.Prefetcher(stream.chunks(
                self.source, self.seed, step, self.chunk, self.batch_size,
                jax.process_index(), jax.process_count()))

    def next(self):
        return self.trainer.put(next(self._prefetcher)) if self.streamed else self.resident

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None


def any_process(flag: bool) -> bool:
    """True when `flag` is set in any process (all processes must call this together)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def host_params(state):
    """A host copy of the parameters (owned, so that donating the state cannot touch it)."""
    return jax.tree.map(lambda leaf: np.array(leaf, copy=True), host_copy(state.params))


def train_and_evaluate(config, workdir, progress: bool = True, overwrite: bool = False,
                       resume_hint: str | None = None) -> dict:
    """Train the configured model in `workdir` (resuming if it holds a checkpoint).

    Returns the summary, also written to summary.json; for a run that had finished
    before, its stored summary as a `StoredSummary`, with nothing done. Raises
    ConfigError, WorkdirError, DatasetError, Preempted or Diverged with a one-paragraph
    message; `resume_hint` is the command that Preempted tells the user to run.
    overwrite: start afresh where the workdir holds another config's run or a finished
    run (moved aside to <workdir>.old-<time>); an unfinished run of this config resumes.

    Under several processes (`jax.distributed.initialize()` before the call) every
    process runs this function on its share of the devices and of each batch; only
    process 0 locks the workdir, writes files and prints, and orbax writes the
    checkpoints of all.
    """
    validate_config(config, num_devices=jax.device_count())
    workdir = Path(workdir)
    primary = jax.process_index() == 0
    lock, verdict, refusal = None, "empty", None
    if primary:
        try:
            lock, verdict = open_workdir(workdir, config, overwrite)
        except WorkdirError as error:
            verdict, refusal = "refused", error
    try:
        verdict = from_process_0(verdict)
        if verdict == "refused":
            raise refusal or WorkdirError(f"process 0 refused the workdir {workdir}")
        if verdict == "finished":
            if not primary:
                return StoredSummary()
            summary = finished_summary(workdir, config.train.num_steps)
            say(f"{workdir} holds a finished run of {summary['steps']} steps; nothing to do "
                "(pass --overwrite to start again)")
            return StoredSummary(summary)
        return _train(config, workdir, progress, resume_hint, verdict, lock)
    finally:
        if lock is not None:
            lock.release()


def _train(config, workdir: Path, progress: bool, resume_hint, verdict: str, lock) -> dict:
    """train_and_evaluate once the workdir is locked and known to be this run's (or new)."""
    primary = jax.process_index() == 0
    train_cfg = config.train
    data_key, run_key = jax.random.split(jax.random.key(config.seed))
    dataset = get_dataset(config, data_key)
    components = build_trainer(config, dataset)
    trainer = components.trainer
    feed = DataFeed(components, dataset, config.seed, train_cfg.log_every)
    evaluate = make_evaluator(config, dataset, trainer.energy_fn)
    try:
        # The run can start: only now is the workdir touched.
        if primary:
            if verdict == "replace":
                lock = move_run_aside(workdir, lock)
            write_atomic(workdir / "config.json", config_json(config))
            write_atomic(workdir / "run_info.json", json.dumps(run_info(), indent=2))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ebmdual: workdir ready")
        return _loop(config, workdir, progress, resume_hint, dataset, trainer, feed, evaluate,
                     run_key)
    finally:
        feed.close()
        if lock is not None:
            lock.release()


def _loop(config, workdir, progress, resume_hint, dataset, trainer, feed, evaluate, run_key):
    primary = jax.process_index() == 0
    train_cfg = config.train
    log = MetricsLog(workdir / "metrics.jsonl", enabled=primary)
    checkpoints = Checkpointer(workdir / "checkpoints", train_cfg.keep_checkpoints)
    evaluate = TimedEvaluator(evaluate)
    try:
        position = start_or_resume(checkpoints, trainer,
                                   lambda: trainer.init(run_key, feed.init_data()),
                                   evaluate, log, workdir, config)
        num_steps, chunk = train_cfg.num_steps, train_cfg.log_every
        first_step, start, latest = position.step, time.perf_counter(), {}
        evaluate.start_clock()
        feed.start(position.step)
        # Signals only set a flag until this function returns: during the loop they stop it
        # at the next chunk boundary with a checkpoint; after it, the finished run completes.
        with PreemptionFlag(announce=primary) as preemption:
            preemption.last_checkpoint = position.step
            bar = tqdm(total=num_steps, initial=position.step, desc="train", unit="step",
                       disable=not (progress and primary))
            try:
                before = host_params(position.state)
                while position.step < num_steps:
                    state, metrics = trainer.train_loop(position.state, feed.next())
                    metrics = jax.device_get(metrics)
                    after = host_params(state)
                    divergence = (
                        find_divergence(metrics, position.step + 1, train_cfg.max_energy_gap,
                                        lambda: (after, host_copy(state.particles)))
                        or find_stall(metrics, before, after, position.step + 1))
                    if divergence is not None:
                        position = roll_back(divergence, position, checkpoints, trainer,
                                             train_cfg, log)
                        before = host_params(position.state)
                        feed.start(position.step)
                        bar.reset(total=num_steps)
                        bar.update(position.step)
                        continue
                    before = after
                    step = position.step + chunk
                    position = position._replace(state=state, step=step)
                    rows = [chunk_means(metrics, step)]
                    if step % train_cfg.eval_every == 0 or step >= num_steps:
                        rows.append({"kind": "eval", "step": step,
                                     **evaluate_on_host(evaluate, state,
                                                        trainer.particle_weights)})
                    for row in rows:
                        log.write(row)
                        latest.update(row)
                    # Read the flag once: a signal landing between the save and the stop
                    # checks would otherwise stop without the checkpoint it promises. All
                    # processes agree on it, so that they save and stop together.
                    stopping = any_process(preemption.raised is not None) and step < num_steps
                    if step % train_cfg.checkpoint_every == 0 or step >= num_steps or stopping:
                        save_checkpoint(checkpoints, position, config)
                        preemption.last_checkpoint = step
                    bar.update(chunk)
                    bar.set_postfix({k: f"{latest[k]:.4g}" for k in PROGRESS_KEYS if k in latest})
                    if stopping:
                        raise Preempted(
                            f"{preemption.raised or 'a signal to another process'} received: "
                            f"saved a checkpoint at step {step} of {num_steps}. Resume with: "
                            f"{resume_hint or 'the same call on workdir ' + str(workdir)}")
            finally:
                bar.close()  # before any message: not on the bar's line
            seconds = time.perf_counter() - start
            summary = summarize(position, log, trainer, seconds, first_step, evaluate)
            params, particles = host_copy(position.state.params), host_copy(position.state.particles)
            if primary:
                save_plots(dataset, trainer, params, particles, summary["temperature"], log,
                           workdir, config)
                write_atomic(workdir / "summary.json", json.dumps(summary, indent=2))
        return summary
    finally:
        with contextlib.suppress(Exception):
            checkpoints.close()


def summarize(position: Position, log: MetricsLog, trainer, seconds: float, first_step: int,
              evaluate: TimedEvaluator) -> dict:
    """summary.json: steps, speed of this session, T, devices, rollbacks, first and last
    evaluation. seconds_this_session runs from the first train step on (a fresh run's
    step-0 evaluation is before it); seconds_per_train_step_this_session leaves out the
    evaluations (and includes the first call's compilation); seconds_per_evaluation_this_
    session is the mean over this session's evaluations, step 0's included."""
    evals = log.rows_of("eval")
    trained = position.step - first_step
    train_seconds = seconds - evaluate.seconds_since_start
    return {
        "steps": position.step, "seconds_this_session": seconds,
        "steps_per_second_this_session": trained / seconds if trained else None,
        "seconds_per_train_step_this_session": train_seconds / trained if trained else None,
        "evaluations_this_session": evaluate.calls,
        "seconds_per_evaluation_this_session": (evaluate.seconds / evaluate.calls
                                                if evaluate.calls else None),
        "temperature": float(host_copy(position.state.hparams["temperature"])),
        "devices": f"{trainer.mesh.size} x {jax.devices()[0].platform}"
                   + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""),
        "rollbacks": position.rollbacks, "lr_scale": position.lr_scale,
        "initial": evals[0] if evals else {}, "final": evals[-1] if evals else {},
    }
