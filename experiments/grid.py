"""A grid of runs (a cartesian product of swept values × seeds) as one compiled program.

When every swept key is an array of the compiled step (the seed, and the keys of
`experiments.registry.SWEPT_STATE_VALUES`: restart_prob, step size, temperature,
learning rates, weight cap), the M members of the grid share one trainer built with
`members=M`: the state carries a leading member axis, `init` and the train loop are
vmapped, and all members advance together in one jitted call per chunk. The program
is compiled once.

Per member: its own data set (drawn from its seed), its own metrics lines
(`metrics.jsonl` rows carry "member"), its own evaluation, and its own divergence
check. A member whose chunk holds a non-finite value or an energy gap beyond
`train.max_energy_gap` is frozen inside the compiled step (its state stays that of
the last good chunk, the others go on) and reported. One checkpoint holds the
stacked state with the frozen flags, so a grid resumes exactly after SIGTERM or
SIGKILL.

Keys that change shapes or the program (particle count, network size, data size,
dimension, loss, restart schedule) cannot share a program: `run_grid` then groups the
members by those keys' values and runs one vmapped program per group, one after
another (workdir/programs/NNN, each with its own timing.json), and says so. Both
paths write the same reports: `results.csv` (one row per member and evaluation
step, with every swept value as a column), `table.md` (final metrics,
mean ± standard error over seeds, per grid point), `grid_metrics.png` (each metric
against iteration, per grid point) and `grid_final.png` (the final metric against
each swept key).
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ebmdual.checkpoint import Checkpointer
from ebmdual.compiler import jit
from ebmdual.data import get_dataset, stream
from ebmdual.train import with_hyperparams
from experiments import harness, plots
from experiments.evaluate import held_out_images, make_evaluator, temperature_scaled
from experiments.registry import (SWEPT_STATE_VALUES, build_trainer,
                                  members_share_program, state_values)
from experiments.validation import validate_config

GRID_FILE = "grid.json"


class Member(NamedTuple):
    """One run of the grid: its index, its swept values (with 'seed') and its config."""

    index: int
    values: dict
    config: Any


def set_value(config, dotted: str, value):
    """A copy of `config` with the dotted key set (the key must exist). Field references
    stay linked (deepcopy keeps them), so a config whose sampler.num_particles is
    2 × data.num_train keeps that relation when data.num_train is swept."""
    config = copy.deepcopy(config)
    *path, name = dotted.split(".")
    node = config
    for part in path:
        node = node[part]
    node[name] = value
    return config


def grid_members(config, sweeps: dict, seeds: list[int]) -> list[Member]:
    """The cartesian product of the swept values (in the order given) × seeds."""
    members = []
    keys = list(sweeps)
    for combination in itertools.product(*(sweeps[k] for k in keys)):
        for seed in seeds:
            values = dict(zip(keys, combination))
            member_config = config
            for key, value in values.items():
                member_config = set_value(member_config, key, value)
            member_config = set_value(member_config, "seed", int(seed))
            member_config = member_config.copy_and_resolve_references()
            members.append(Member(len(members), {**values, "seed": int(seed)}, member_config))
    return members


def shape_changing_keys(sweeps: dict) -> list[str]:
    """The swept keys that are not arrays of the compiled step (they force separate runs)."""
    return [k for k in sweeps if k != "seed" and k not in SWEPT_STATE_VALUES]


# ----------------------------------------------------------------------------- one program

def make_grid_step(train_loop, max_energy_gap: float):
    """grid_step(state, data, active) -> (state, metrics (M, S), ok (M,)).

    ok: the member was active and its chunk stayed finite with |energy gap| ≤ the bound.
    Members not ok keep their state from before the chunk (frozen). With a compiled
    `train_loop` (sampler_loop 'scan') the whole is one jitted program; with the host
    loop (its K transitions dispatched from Python) the loop runs as it is, on a copy of
    the state it may donate, and only the freeze is jitted.
    """

    def freeze(new, state, metrics, active):
        ok = active & jnp.all(metrics["finite"] > 0, axis=1)
        if "energy_gap" in metrics:
            ok = ok & jnp.all(jnp.abs(metrics["energy_gap"]) <= max_energy_gap, axis=1)

        def keep(fresh, old):
            return jnp.where(ok.reshape(ok.shape + (1,) * (fresh.ndim - 1)), fresh, old)

        kept = jax.tree.map(keep, new._replace(key=state.key), state._replace(key=state.key))
        return kept, metrics, ok

    if not hasattr(train_loop, "lower"):  # the host loop: a Python function
        jitted_freeze = jit(freeze, donate_argnums=(0, 1))

        def host_grid_step(state, data, active):
            new, metrics = train_loop(jax.tree.map(jnp.copy, state), data)
            return jitted_freeze(new, state, metrics, active)

        return host_grid_step

    def grid_step(state, data, active):
        new, metrics = train_loop(state, data)
        return freeze(new, state, metrics, active)

    return jit(grid_step, donate_argnums=0)


def member_slice(tree, m: int):
    return jax.tree.map(lambda leaf: leaf[m], tree)  # None (no particles) stays None


class GridFeed:
    """Per-member data stacked on the member axis: resident sets, or streamed chunks."""

    def __init__(self, trainer, streamed: bool, datasets, seeds, batch_size: int, chunk: int):
        self.trainer, self.streamed, self.seeds = trainer, streamed, seeds
        self.batch_size, self.chunk = batch_size, chunk
        if streamed:
            self.sources = [stream.as_source(d.train) for d in datasets]
        else:
            self.resident = trainer.put(np.stack([np.asarray(d.train) for d in datasets]))

    def _read(self, first_step: int, num_steps: int):
        chunks = [stream.read_chunk(src, seed, first_step, num_steps, self.batch_size,
                                    jax.process_index(), jax.process_count())
                  for src, seed in zip(self.sources, self.seeds)]
        return jax.tree.map(lambda *leaves: np.stack(leaves), *chunks)

    def init_data(self):
        if not self.streamed:
            return self.resident
        return self.trainer.put_batch(jax.tree.map(lambda leaf: leaf[:, 0], self._read(0, 1)))

    def at(self, step: int):
        return self.trainer.put(self._read(step, self.chunk)) if self.streamed else self.resident


class GridRun(NamedTuple):
    """What a session of a grid returns: the metrics rows (all members), whether it trained
    any step (False for a grid finished before it), its evaluations' wall-clock seconds
    and count (all members of one evaluation are one count), and for image data the final
    particles (`ImagePanels`, process 0 only)."""

    rows: list
    trained: bool
    evaluation_seconds: float
    evaluations: int
    images: "ImagePanels | None" = None


class ImagePanels(NamedTuple):
    """The final particles of an image grid's members, for `plots.plot_image_samples`:
    model(params, x) = E/T, runs (one `plots.ImageRun` per active member, labelled with
    its values), the data shown beside them and the held-out images of the histograms."""

    model: Any
    runs: list
    data: Any
    held_out: Any
    data_range: tuple


def run_vmapped(config, members: list[Member], workdir: Path, progress: bool = True,
                resume_hint: str | None = None) -> GridRun:
    """Train every member in one compiled program (`GridRun`)."""
    train_cfg = config.train
    keys = sorted({k for m in members for k in m.values})
    datasets, run_keys = {}, []
    for member in members:
        seed = member.config.seed
        data_key, run_key = jax.random.split(jax.random.key(seed))
        if seed not in datasets:
            datasets[seed] = get_dataset(member.config, data_key)
        run_keys.append(run_key)
    member_datasets = [datasets[m.config.seed] for m in members]
    components = build_trainer(config, member_datasets[0], members=len(members))
    trainer = components.trainer
    feed = GridFeed(trainer, components.streamed, member_datasets,
                    [m.config.seed for m in members], components.batch_size, train_cfg.log_every)
    evaluators = {seed: make_evaluator(config, ds, trainer.energy_fn)
                  for seed, ds in datasets.items()}
    log = harness.MetricsLog(workdir / "metrics.jsonl", enabled=jax.process_index() == 0)
    checkpoints = Checkpointer(workdir / "checkpoints", train_cfg.keep_checkpoints)
    grid_step = make_grid_step(trainer.train_loop, train_cfg.max_energy_gap)

    def evaluate_members(state, step, active):
        params, particles = harness.host_copy(state.params), harness.host_copy(state.particles)
        weigh = trainer.particle_weights
        sampler_state = harness.host_copy(state.sampler_state) if weigh is not None else None
        temperature = harness.host_copy(state.hparams["temperature"])
        for m in np.flatnonzero(active):
            metrics = evaluators[members[m].config.seed](
                member_slice(params, m), member_slice(particles, m), float(temperature[m]),
                weigh(member_slice(sampler_state, m)) if weigh is not None else None)
            log.write({"kind": "eval", "member": int(m), "step": step, **metrics})

    evaluate = harness.TimedEvaluator(evaluate_members)

    def save(state, step, active):
        checkpoints.save(step, state, {"active": [bool(a) for a in active],
                                       "members": [m.values for m in members]})
        preemption.last_checkpoint = step

    preemption = harness.PreemptionFlag(announce=jax.process_index() == 0)
    restored = checkpoints.restore_latest(trainer.abstract_state)
    if restored is None:
        state = trainer.init(jnp.stack(run_keys), feed.init_data())
        names = [SWEPT_STATE_VALUES[k] for k in keys if k in SWEPT_STATE_VALUES]
        per_member = [state_values(m.config, names) for m in members]
        state = with_hyperparams(state, **{
            name: np.array([v[name] for v in per_member], np.float32) for name in names})
        step, active = 0, np.ones(len(members), bool)
        log.truncate(-1)
        evaluate(state, 0, active)
        save(state, 0, active)
    else:
        if restored.metadata["members"] != [m.values for m in members]:
            raise harness.WorkdirError(f"{workdir} holds a grid with other members; choose "
                                       "another --workdir")
        state, step = restored.state, restored.step
        active = np.array(restored.metadata["active"], bool)
        log.truncate(step)
        print(f"resuming the grid in {workdir} from its checkpoint at step {step}")

    chunk = train_cfg.log_every
    preemption.last_checkpoint = step
    trained = step < train_cfg.num_steps
    with preemption:
        bar = tqdm(total=train_cfg.num_steps, initial=step, desc=f"grid of {len(members)}",
                   unit="step", disable=not progress or jax.process_index() != 0)
        while step < train_cfg.num_steps:
            state, metrics, ok = grid_step(state, feed.at(step), jnp.asarray(active))
            metrics, ok = jax.device_get(metrics), np.asarray(ok)
            for m in np.flatnonzero(active & ~ok):
                member_metrics = {k: v[m] for k, v in metrics.items()}
                found = harness.find_divergence(member_metrics, step + 1, train_cfg.max_energy_gap)
                bad_step, quantity, value = found or (step + chunk, "diverged", float("nan"))
                log.write({"kind": "diverged", "member": int(m), "step": bad_step,
                           "quantity": quantity, "value": value, **members[m].values})
                tqdm.write(f"member {m} {members[m].values} diverged at step {bad_step}: "
                           f"{quantity} (value {value:.4g}); frozen at step {step}, the others "
                           "go on")
            for m in np.flatnonzero(ok):
                log.write({**harness.chunk_means({k: v[m] for k, v in metrics.items()},
                                                 step + chunk), "member": int(m)})
            active = ok
            step += chunk
            if step % train_cfg.eval_every == 0 or step >= train_cfg.num_steps:
                evaluate(state, step, active)
            stopping = harness.any_process(preemption.raised is not None) and step < train_cfg.num_steps
            if step % train_cfg.checkpoint_every == 0 or step >= train_cfg.num_steps or stopping:
                save(state, step, active)
            bar.update(chunk)
            if stopping:
                bar.close()
                checkpoints.close()
                raise harness.Preempted(
                    f"{preemption.raised} received: saved the grid's checkpoint at step {step}. "
                    f"Resume with: {resume_hint or 'the same command'}")
        bar.close()
    checkpoints.close()
    images = None
    if member_datasets[0].manifold == "image" and jax.process_index() == 0:
        images = image_panels(config, members, member_datasets[0], trainer, state, active)
    return GridRun(log.rows, trained, evaluate.seconds, evaluate.calls, images)


# ----------------------------------------------------------------------------- programs

def program_groups(members: list[Member], fixed_keys: list[str]) -> list[list[Member]]:
    """Members grouped by their values of the keys that change the program (in order of
    first appearance): each group shares shapes and static settings, so it is one program."""
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        groups.setdefault(tuple(repr(member.values[k]) for k in fixed_keys), []).append(member)
    return list(groups.values())


def run_programs(members: list[Member], fixed_keys: list[str], workdir: Path,
                 progress: bool = True, resume_hint: str | None = None) -> GridRun:
    """One vmapped program per group of `program_groups`, in workdir/programs/NNN; the
    rows come back with the members' grid indices (`GridRun`, summed over programs)."""
    rows, any_trained, eval_seconds, evals, images = [], False, 0.0, 0, None
    for number, group in enumerate(program_groups(members, fixed_keys)):
        shown = {k: group[0].values[k] for k in fixed_keys}
        print(f"--- program {number}: {shown}, {len(group)} members")
        local = [Member(i, m.values, m.config) for i, m in enumerate(group)]
        program_dir = workdir / "programs" / f"{number:03d}"
        program_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        run = run_vmapped(group[0].config, local, program_dir, progress, resume_hint)
        rows += [{**row, "member": group[row["member"]].index} for row in run.rows]
        if run.trained:  # a program finished before this session only re-reports: no time
            add_wall_time(program_dir / "timing.json", time.perf_counter() - start,
                          values=shown, members=len(group),
                          evaluation_seconds_last_session=run.evaluation_seconds,
                          evaluations_last_session=run.evaluations)
        any_trained |= run.trained
        eval_seconds += run.evaluation_seconds
        evals += run.evaluations
        if run.images is not None:
            images = run.images if images is None else images._replace(
                runs=images.runs + run.images.runs)
    return GridRun(rows, any_trained, eval_seconds, evals, images)


def add_wall_time(path: Path, seconds: float, **info) -> float:
    """Write `info` and the grid's wall time to `path`: `seconds` plus the time of the
    sessions already recorded there (a resumed or re-reported grid adds its session to
    the total rather than replacing it). Returns the total."""
    sessions = []
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            sessions = list(stored.get("sessions", [stored["seconds"]]))  # older: one total
        except (ValueError, AttributeError, KeyError):
            sessions = []  # torn by a crash: start the record again
    sessions.append(seconds)
    harness.write_atomic(path, json.dumps({"seconds": sum(sessions), "sessions": sessions,
                                           **info}))
    return sum(sessions)


# ----------------------------------------------------------------------------- reports

def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and std/√n (sample std, ddof = 1); stderr is nan for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def final_evals(rows: list[dict]) -> dict[int, dict]:
    """The last evaluation row of each member that did not diverge."""
    diverged = {r["member"] for r in rows if r["kind"] == "diverged"}
    last = {}
    for row in rows:
        if row["kind"] == "eval" and row["member"] not in diverged:
            last[row["member"]] = row
    return last


def metric_names(rows) -> list[str]:
    return sorted({k for r in rows if r["kind"] == "eval" for k in r
                   if k not in ("kind", "member", "step")})


def write_results_csv(path: Path, members: list[Member], rows: list[dict], keys: list[str]):
    """One row per member and evaluation step, every swept value as a column."""
    metrics = metric_names(rows)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["member", *keys, "step", *metrics])
        for row in rows:
            if row["kind"] == "eval":
                values = members[row["member"]].values
                writer.writerow([row["member"], *(values[k] for k in keys), row["step"],
                                 *(row.get(m, "") for m in metrics)])


def grid_points(members: list[Member], keys: list[str]) -> dict[tuple, list[Member]]:
    """Members grouped by their swept values other than the seed."""
    points: dict[tuple, list[Member]] = {}
    for member in members:
        points.setdefault(tuple(member.values[k] for k in keys if k != "seed"), []).append(member)
    return points


def format_table(members, rows, keys, command: str) -> str:
    """Markdown: one row per grid point, final metrics as mean ± SE over its seeds."""
    finals, metrics = final_evals(rows), metric_names(rows)
    point_keys = [k for k in keys if k != "seed"]
    lines = [f"Command: `{command}`", "",
             "| " + " | ".join(point_keys) + " | seeds | " + " | ".join(metrics) + " |",
             "|" + "---|" * (len(point_keys) + 1 + len(metrics))]
    for point, group in grid_points(members, keys).items():
        done = [finals[m.index] for m in group if m.index in finals]
        cells = []
        for metric in metrics:
            values = [r[metric] for r in done if metric in r]
            if not values:
                cells.append("—")
                continue
            mean, err = mean_and_stderr(values)
            cells.append(f"{mean:.4g}" + ("" if math.isnan(err) else f" ± {err:.2g}"))
        lines.append("| " + " | ".join(map(str, point)) + f" | {len(done)}/{len(group)} | "
                     + " | ".join(cells) + " |")
    diverged = [r for r in rows if r["kind"] == "diverged"]
    if diverged:
        lines += ["", "Diverged (frozen, left out of the means): "
                  + "; ".join(f"member {r['member']} at step {r.get('step', '?')}: {r['quantity']}"
                              for r in diverged)]
    return "\n".join(lines) + "\n"


def spread_x_axis(ax, values) -> None:
    """A symmetric-log x axis when the swept numbers span more than 1.5 decades (restart
    probabilities 0, 0.001 … 1; step sizes), linear near 0 up to the smallest positive."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    positive = [v for v in numbers if v > 0]
    if len(positive) >= 2 and max(positive) / min(positive) > 10 ** 1.5:
        ax.set_xscale("symlog", linthresh=min(positive))


def image_panels(config, members, dataset, trainer, state, active) -> ImagePanels:
    """`ImagePanels` of the active members of a grid's final state."""
    params, particles = harness.host_copy(state.params), harness.host_copy(state.particles)
    temperature = harness.host_copy(state.hparams["temperature"])
    runs = [plots.ImageRun(", ".join(f"{k}={v}" for k, v in members[m].values.items()),
                           (member_slice(params, m), float(temperature[m])),
                           member_slice(particles, m))
            for m in np.flatnonzero(active)]
    return ImagePanels(temperature_scaled(trainer.energy_fn), runs, dataset.test,
                       held_out_images(config, dataset), tuple(config.data.data_range))


def plot_image_panels(panels: ImagePanels, path: Path, title: str) -> None:
    """grid_samples.png: every member's final particles side by side, beside the data, each
    over the histogram of its particles' E/T against held-out images'."""
    plots.plot_image_samples(panels.model, panels.runs, panels.data, panels.held_out, str(path),
                             data_range=panels.data_range, num=36, title=title)


def plot_grid(members, rows, keys, workdir: Path, title: str) -> None:
    """grid_metrics.png (metric vs iteration, mean ± SE band per grid point) and
    grid_final.png (final metric vs each swept key, error bars = SE over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metric_names(rows) if not m.endswith("_stderr")]
    points, point_keys = grid_points(members, keys), [k for k in keys if k != "seed"]
    if not metrics:
        return
    evals: dict[int, list[dict]] = {}
    for row in rows:
        if row["kind"] == "eval":
            evals.setdefault(row["member"], []).append(row)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for point, group in points.items():
            curves = [[(r["step"], r[metric]) for r in evals.get(m.index, []) if metric in r]
                      for m in group]
            steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves if c))
                           if any(curves) else [])
            if not steps:
                continue
            table = np.array([[dict(c)[s] for s in steps] for c in curves if c])
            mean = table.mean(0)
            err = table.std(0, ddof=1) / np.sqrt(len(table)) if len(table) > 1 else 0 * mean
            label = ", ".join(f"{k}={v}" for k, v in zip(point_keys, point)) or "all"
            ax.plot(steps, mean, label=label)
            ax.fill_between(steps, mean - err, mean + err, alpha=0.25)
        ax.set_xlabel("iteration")
        ax.set_ylabel(metric)
        values = [r[metric] for r in rows if r["kind"] == "eval" and metric in r]
        if values and min(values) > 0 and max(values) / min(values) > 30:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: mean ± SE over seeds")
    fig.tight_layout()
    fig.savefig(workdir / "grid_metrics.png", dpi=110)
    plt.close(fig)

    finals = final_evals(rows)
    fig, axes = plt.subplots(len(metrics), max(1, len(point_keys)),
                             figsize=(4.5 * max(1, len(point_keys)), 3.2 * len(metrics)),
                             squeeze=False)
    for i, metric in enumerate(metrics):
        for j, key in enumerate(point_keys or ["seed"]):
            ax = axes[i][j]
            others = [k for k in point_keys if k != key]
            series: dict[tuple, dict] = {}
            for member in members:
                if member.index not in finals or metric not in finals[member.index]:
                    continue
                rest = tuple(member.values[k] for k in others)
                series.setdefault(rest, {}).setdefault(member.values[key], []).append(
                    finals[member.index][metric])
            for rest, by_value in series.items():
                xs = sorted(by_value)
                stats = [mean_and_stderr(by_value[x]) for x in xs]
                ax.errorbar(xs, [s[0] for s in stats],
                            yerr=[0 if math.isnan(s[1]) else s[1] for s in stats], marker="o",
                            capsize=3, label=", ".join(f"{k}={v}" for k, v in zip(others, rest)))
            ax.set_xlabel(key)
            ax.set_ylabel(f"final {metric}")
            spread_x_axis(ax, [m.values[key] for m in members])
            if others:
                ax.legend(fontsize=7)
    fig.suptitle(f"{title}: final metrics (error bars: SE over seeds)")
    fig.tight_layout()
    fig.savefig(workdir / "grid_final.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- entry point

PROGRAMS = ("auto", "one", "per_member")


def run_grid(config, sweeps: dict, seeds: list[int], workdir, command: str = "",
             progress: bool = True, title: str = "grid", programs: str = "auto") -> str:
    """Run the grid and write its reports; returns table.md.

    programs: 'one' runs the members as one vmapped program (shape-changing keys still
    split it), 'per_member' one program per member, one after another, and 'auto' picks
    per_member where `registry.members_share_program` says vmapping is slower (conv
    energies on CPU), one otherwise."""
    if programs not in PROGRAMS:
        raise ValueError(f"programs={programs!r}: expected one of {', '.join(PROGRAMS)}")
    workdir = Path(workdir)
    members = grid_members(config, sweeps, seeds)
    for member in members:
        validate_config(member.config, num_devices=jax.device_count())
    keys = [*sweeps, "seed"]
    workdir.mkdir(parents=True, exist_ok=True)
    description = {"command": command, "keys": keys, "members": [m.values for m in members]}
    grid_file = workdir / GRID_FILE
    lock = harness.WorkdirLock(workdir)
    lock.acquire()  # one grid per workdir: a second sweep on it is refused with the pid
    try:
        separate = programs == "per_member" or (programs == "auto"
                                                 and not members_share_program(config))
        return _run_locked(config, sweeps, members, keys, workdir, grid_file, description,
                           command, progress, title, separate)
    finally:
        lock.release()


def _run_locked(config, sweeps, members, keys, workdir, grid_file, description, command,
                progress, title, separate: bool) -> str:
    if grid_file.exists():
        try:
            stored = json.loads(grid_file.read_text())["members"]
        except (ValueError, KeyError):
            stored = None  # torn by a crash before anything ran: written again below
        if stored is not None and stored != description["members"]:
            raise harness.WorkdirError(f"{workdir} holds another grid (see {grid_file}); "
                                       "choose another --workdir")
    harness.write_atomic(grid_file, json.dumps(description, indent=2))
    start = time.perf_counter()
    fixed, resume_hint = shape_changing_keys(sweeps), command or None
    if len(members) > 1 and separate:
        fixed = keys  # every member its own program
        groups = len(members)
        print(f"{len(members)} members as {groups} compiled programs, one after another "
              "(--programs=per_member, the default for convolutional energies on CPU, which "
              "run about 2.3× slower vmapped over members: docs/performance.md)")
        run = run_programs(members, fixed, workdir, progress, resume_hint)
    elif fixed:
        groups = len(program_groups(members, fixed))
        print(f"{', '.join(fixed)} change array shapes or the program: {len(members)} members "
              f"as {groups} compiled programs, one after another")
        run = run_programs(members, fixed, workdir, progress, resume_hint)
    else:
        print(f"{len(members)} members as one compiled program")
        run = run_vmapped(config, members, workdir, progress, resume_hint)
    rows, trained = run.rows, run.trained
    seconds = time.perf_counter() - start
    write_results_csv(workdir / "results.csv", members, rows, keys)
    table = format_table(members, rows, keys, command)
    harness.write_atomic(workdir / "table.md", table)
    mode = f"{groups} programs" if fixed else "one program"
    if trained or not (workdir / "timing.json").exists():
        total = add_wall_time(workdir / "timing.json", seconds, mode=mode,
                              members=len(members),
                              evaluation_seconds_last_session=run.evaluation_seconds,
                              evaluations_last_session=run.evaluations)
        print(f"{len(members)} members, {mode}: {seconds:.1f} s this session, "
              f"{total:.1f} s in all")
    else:
        print(f"{len(members)} members, {mode}: finished before this session; reports "
              f"rewritten, wall time in timing.json unchanged")
    plot_grid(members, rows, keys, workdir, title)
    if run.images is not None:
        plot_image_panels(run.images, workdir / "grid_samples.png", f"{title}: final particles")
    return table
