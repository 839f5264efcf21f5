"""`train_and_evaluate(config, workdir)`: one run from a config to metrics, plots and a summary.

Data flows one way: config → validation → data set → trainer (energy, sampler,
optimizer, jitted loop) → state (restored from the newest checkpoint of the
workdir, or `init(key)`) → chunks of `train.log_every` steps, each one compiled
`lax.scan` call → metrics.jsonl (one line per chunk with its means; evaluation
lines every `train.eval_every` steps) → checkpoints every
`train.checkpoint_every` steps and at the end → plots → summary.json.

Guarantees:
* Resume is exact: a run interrupted at any checkpoint and started again gives
  the same metrics and final state, bit for bit, as a run never interrupted
  (batch and step keys are fold_in(seed key, step); metrics.jsonl is cut back
  to the checkpoint's step).
* SIGTERM / SIGINT: the current chunk finishes, a checkpoint is written, and
  `Preempted` is raised with the command that resumes.
* Divergence (a non-finite loss, parameter or particle, or |energy gap| >
  `train.max_energy_gap`) raises `Diverged` naming the step, the quantity and
  the last good checkpoint; with `train.on_divergence='rollback'` the run goes
  back to that checkpoint, multiplies the learning rates by
  `train.rollback_lr_factor` and continues, at most `train.max_rollbacks` times.
  A diverged state is never checkpointed: the check precedes the save.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from jax.experimental import multihost_utils

from ebmdual.checkpoint import Checkpointer
from ebmdual.data import get_dataset, stream
from ebmdual.optim import learning_rates
from ebmdual.train import with_hyperparams
from experiments import plots
from experiments.evaluate import make_evaluator, temperature_scaled
from experiments.registry import build_trainer
from experiments.validation import validate_config

PROGRESS_KEYS = ("loss", "energy_gap", "kl", "test_nll")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "blackjax", "chex", "orbax-checkpoint",
            "ml-collections", "tensorflow-datasets", "numpy", "ebmdual")


class WorkdirError(RuntimeError):
    """The workdir holds a run with another config (pass overwrite=True / --overwrite)."""


class Preempted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was written. The message says how to resume."""


class Diverged(RuntimeError):
    """Training diverged (and could not, or was not allowed to, roll back)."""


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


def prepare_workdir(workdir: Path, config, overwrite: bool) -> None:
    """Create `workdir`; refuse one whose stored config differs, unless `overwrite`.

    With overwrite the old run is moved to <workdir>.old-<timestamp>, not deleted.
    Writes config.json and run_info.json.
    """
    stored = workdir / "config.json"
    if stored.exists() and stored.read_text() != config_json(config):
        if not overwrite:
            raise WorkdirError(f"{workdir} holds a run with a different config (see {stored}); "
                               "pass --overwrite to move it aside and start afresh, or choose "
                               "another --workdir")
        aside = workdir.with_name(f"{workdir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(workdir), str(aside))
        print(f"moved the previous run aside to {aside}")
    workdir.mkdir(parents=True, exist_ok=True)
    stored.write_text(config_json(config))
    (workdir / "run_info.json").write_text(json.dumps(run_info(), indent=2))


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
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def rows_of(self, kind: str) -> list[dict]:
        return [r for r in self.rows if r["kind"] == kind]

    def truncate(self, step: int) -> None:
        """Keep the lines up to `step` (and every rollback record), on disk too."""
        if not self.enabled:
            self.rows = [r for r in self.rows if r["step"] <= step or r["kind"] == "rollback"]
            return
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        self.rows = [r for r in map(json.loads, lines) if r["step"] <= step or r["kind"] == "rollback"]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))


def chunk_means(metrics: dict, step: int) -> dict:
    """Stacked (chunk,) metrics -> their means as floats, with the step reached."""
    return {"kind": "train", "step": step,
            **{k: float(np.mean(v)) for k, v in metrics.items()}}


def find_divergence(metrics: dict, first_step: int, max_energy_gap: float):
    """(step, quantity, value) of the first diverged step of a chunk, or None.

    metrics: host arrays of shape (chunk,); first_step: the step of metrics[...][0] (1-based).
    """
    finite = np.asarray(metrics["finite"]) > 0
    # Without a sampler (score-matching objectives) there is no energy gap to bound.
    gap = np.asarray(metrics.get("energy_gap", np.zeros_like(finite, np.float32)))
    bad = ~finite | ~(np.abs(gap) <= max_energy_gap)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    if not finite[i]:
        quantity = "loss" if not np.isfinite(metrics["loss"][i]) else "parameters or particles"
        return first_step + i, f"non-finite {quantity}", float(metrics["loss"][i])
    return first_step + i, f"|energy gap| > train.max_energy_gap={max_energy_gap:g}", float(gap[i])


# ----------------------------------------------------------------------------- signals

class PreemptionFlag:
    """Context manager: SIGTERM and SIGINT set `.raised` instead of killing the process."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.raised = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame
        self.raised = signal.Signals(signum).name

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


# ----------------------------------------------------------------------------- plots

def save_plots(dataset, trainer, params, particles, temperature: float, log: MetricsLog,
               workdir: Path) -> None:
    """metrics.png, and samples.png for 2-D and S^2 tasks. particles: host arrays or None."""
    plots.plot_metrics(log.rows_of("train"), log.rows_of("eval"), str(workdir / "metrics.png"))
    model = temperature_scaled(trainer.energy_fn)
    model_params = (params, temperature)
    dim = dataset.train.shape[-1]
    if dataset.manifold == "sphere" and dim == 3:
        plots.plot_samples_sphere(model, model_params, dataset.target_energy_fn,
                                  dataset.target_params, dataset.train, particles,
                                  str(workdir / "samples.png"))
    elif dataset.manifold == "euclidean" and dim == 2:
        plots.plot_samples_2d(model, model_params, dataset.train, particles,
                              dataset.box, str(workdir / "samples.png"))


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


def evaluate_on_host(evaluate, state) -> dict:
    """Evaluate a TrainState: every process gathers the particles, process 0 evaluates
    (the others return {})."""
    params, particles = host_copy(state.params), host_copy(state.particles)
    temperature = float(host_copy(state.hparams["temperature"]))
    if jax.process_index() != 0:
        return {}
    return evaluate(params, particles, temperature)


# ----------------------------------------------------------------------------- run

class Position(NamedTuple):
    """Where a run stands: the state, its step, the learning-rate scale from rollbacks
    (1 without), and how many rollbacks happened. Checkpoint metadata holds the last two."""

    state: Any
    step: int
    lr_scale: float
    rollbacks: int


def save_checkpoint(checkpoints: Checkpointer, position: Position, config) -> None:
    """The state, with the config and the rollback bookkeeping as metadata."""
    checkpoints.save(position.step, position.state,
                     {"lr_scale": position.lr_scale, "rollbacks": position.rollbacks,
                      "config": json.loads(config_json(config))})


def start_or_resume(checkpoints, trainer, init_state, evaluate, log, workdir, config) -> Position:
    """The newest readable checkpoint, or a fresh state (evaluated and saved as step 0)."""
    restored = checkpoints.restore_latest(trainer.abstract_state)
    if restored is None:
        position = Position(init_state(), 0, 1.0, 0)
        log.truncate(-1)
        log.write({"kind": "eval", "step": 0, **evaluate_on_host(evaluate, position.state)})
        save_checkpoint(checkpoints, position, config)
        return position
    log.truncate(restored.step)
    print(f"resuming {workdir} from the checkpoint at step {restored.step}")
    return Position(restored.state, restored.step, restored.metadata["lr_scale"],
                    restored.metadata["rollbacks"])


def roll_back(divergence, position: Position, checkpoints, trainer, train_cfg, log) -> Position:
    """Restore the last good checkpoint with learning rates lowered by rollback_lr_factor,
    or raise Diverged when rollbacks are off or used up."""
    bad_step, quantity, value = divergence
    last_good = checkpoints.steps()[-1]
    if train_cfg.on_divergence != "rollback" or position.rollbacks >= train_cfg.max_rollbacks:
        why = ("" if train_cfg.on_divergence != "rollback"
               else f" after {position.rollbacks} rollbacks (train.max_rollbacks)")
        raise Diverged(f"training diverged at step {bad_step}: {quantity} (value {value:.4g}){why}. "
                       f"Last good checkpoint: step {last_good} in {checkpoints.directory}. Try a "
                       "smaller learning rate, or --config.train.on_divergence=rollback.")
    restored = checkpoints.restore(last_good, trainer.abstract_state)
    lr_scale = position.lr_scale * train_cfg.rollback_lr_factor
    factor = lr_scale / restored.metadata["lr_scale"]  # the checkpoint may predate earlier rollbacks
    rates = learning_rates(restored.state.opt_state)
    state = with_hyperparams(restored.state, **{k: v * factor for k, v in rates.items()})
    rolled = Position(state, last_good, lr_scale, position.rollbacks + 1)
    log.truncate(last_good)
    log.write({"kind": "rollback", "step": bad_step, "quantity": quantity, "value": value,
               "restored_step": last_good, "lr_scale": lr_scale})
    print(f"step {bad_step}: {quantity} (value {value:.4g}); rolled back to step {last_good} "
          f"with learning rates x{lr_scale:g} (rollback {rolled.rollbacks} of at most "
          f"{train_cfg.max_rollbacks})")
    return rolled


class DataFeed:
    """What `train_loop` reads, chunk after chunk: the resident data set every time, or
    streamed chunks of batches (read by a background thread, one chunk ahead)."""

    def __init__(self, components, dataset, seed: int, chunk: int):
        self.trainer, self.streamed = components.trainer, components.streamed
        self.batch_size, self.seed, self.chunk = components.batch_size, seed, chunk
        self._prefetcher = None
        if self.streamed:
            self.source = stream.ArraySource(dataset.train)
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


def train_and_evaluate(config, workdir, progress: bool = True, overwrite: bool = False,
                       resume_hint: str | None = None) -> dict:
    """Train the configured model in `workdir` (resuming if it holds a checkpoint).

    Returns the summary, also written to summary.json. Raises ConfigError,
    WorkdirError, DatasetError, Preempted or Diverged with a one-paragraph message;
    `resume_hint` is the command that Preempted tells the user to run.

    Under several processes (`jax.distributed.initialize()` before the call) every
    process runs this function on its share of the devices and of each batch; only
    process 0 writes files and prints, and orbax writes the checkpoints of all.
    """
    validate_config(config, num_devices=jax.device_count())
    workdir = Path(workdir)
    primary = jax.process_index() == 0
    if primary:
        prepare_workdir(workdir, config, overwrite)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("ebmdual: workdir ready")
    train_cfg = config.train
    data_key, run_key = jax.random.split(jax.random.key(config.seed))
    dataset = get_dataset(config, data_key)
    components = build_trainer(config, dataset)
    trainer = components.trainer
    feed = DataFeed(components, dataset, config.seed, train_cfg.log_every)
    evaluate = make_evaluator(config, dataset, trainer.energy_fn)
    log = MetricsLog(workdir / "metrics.jsonl", enabled=primary)
    checkpoints = Checkpointer(workdir / "checkpoints", train_cfg.keep_checkpoints)
    position = start_or_resume(checkpoints, trainer, lambda: trainer.init(run_key, feed.init_data()),
                               evaluate, log, workdir, config)

    num_steps, chunk = train_cfg.num_steps, train_cfg.log_every
    first_step, start, latest = position.step, time.perf_counter(), {}
    feed.start(position.step)
    # Signals only set a flag until this function returns: during the loop they stop it
    # at the next chunk boundary with a checkpoint; after it, the finished run completes.
    with PreemptionFlag() as preemption:
        bar = tqdm(total=num_steps, initial=position.step, desc="train", unit="step",
                   disable=not (progress and primary))
        while position.step < num_steps:
            state, metrics = trainer.train_loop(position.state, feed.next())
            metrics = jax.device_get(metrics)
            divergence = find_divergence(metrics, position.step + 1, train_cfg.max_energy_gap)
            if divergence is not None:
                position = roll_back(divergence, position, checkpoints, trainer, train_cfg, log)
                feed.start(position.step)
                bar.reset(total=num_steps)
                bar.update(position.step)
                continue
            step = position.step + chunk
            position = position._replace(state=state, step=step)
            rows = [chunk_means(metrics, step)]
            if step % train_cfg.eval_every == 0 or step >= num_steps:
                rows.append({"kind": "eval", "step": step, **evaluate_on_host(evaluate, state)})
            for row in rows:
                log.write(row)
                latest.update(row)
            # Read the flag once: a signal landing between the save and the stop checks
            # would otherwise stop without the checkpoint it promises. All processes
            # agree on it, so that they save and stop together.
            stopping = any_process(preemption.raised is not None) and step < num_steps
            if step % train_cfg.checkpoint_every == 0 or step >= num_steps or stopping:
                save_checkpoint(checkpoints, position, config)
            bar.update(chunk)
            bar.set_postfix({k: f"{latest[k]:.4g}" for k in PROGRESS_KEYS if k in latest})
            if stopping:
                bar.close()
                feed.close()
                checkpoints.close()
                raise Preempted(f"{preemption.raised or 'a signal to another process'} received: "
                                f"saved a checkpoint at step {step} of {num_steps}. Resume with: "
                                f"{resume_hint or 'the same call on workdir ' + str(workdir)}")
        bar.close()
        feed.close()
        seconds = time.perf_counter() - start
        checkpoints.close()
        summary = summarize(position, log, trainer, seconds, first_step)
        params, particles = host_copy(position.state.params), host_copy(position.state.particles)
        if primary:
            save_plots(dataset, trainer, params, particles, summary["temperature"], log, workdir)
            (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summarize(position: Position, log: MetricsLog, trainer, seconds: float, first_step: int) -> dict:
    """summary.json: steps, speed of this session, T, devices, rollbacks, first and last evaluation."""
    evals = log.rows_of("eval")
    trained = position.step - first_step
    return {
        "steps": position.step, "seconds_this_session": seconds,
        "steps_per_second_this_session": trained / seconds if trained else None,
        "temperature": float(host_copy(position.state.hparams["temperature"])),
        "devices": f"{trainer.mesh.size} x {jax.devices()[0].platform}"
                   + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""),
        "rollbacks": position.rollbacks, "lr_scale": position.lr_scale,
        "initial": evals[0] if evals else {}, "final": evals[-1] if evals else {},
    }
