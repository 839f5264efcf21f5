"""Train-loop throughput of ebmdual: steps/s and particle-gradient evaluations/s.

    python -m benchmarks.throughput
    python -m benchmarks.throughput --tasks=teacher --particles=20000,200000 --steps_per_call=50

Tasks:
* teacher: the d = 15 teacher of the paper (experiments/teacher.py): ShallowEnergy
  m = 64 on S^14, n = 10^4 data, projected ULA with antithetic noise, WFR.
* mlp: experiments/mixture2d.py with the dimension and widths set by flags
  (default MLPEnergy 2×128 in d = 16, Adam, ULA with K = 5 steps, batch 500).

Method: `ebmdual.train.make_trainer(config, data_shape, manifold, steps_per_call=S)`,
`trainer.init`, one warm-up `train_loop` call (compilation), then `--repeats`
timed calls, each ended by `jax.block_until_ready`; the reported time per step
is the median over calls divided by S. Particle-gradient evaluations/s =
N × K × steps/s (K sampler steps per train step).

Then the reference setting of the paper (d = 15, n = 10^4, N = 2·10^4, m = 64,
h_x = 0.02, p = 1/40, h_z = h_w = 0.2, β = 10) is timed both through the library
and through `benchmarks.reference_fused` (a hand-fused program of the same
iteration), with their timed calls interleaved so both see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import reference_fused
from ebmdual import losses, samplers
from ebmdual.energies import get_energy, make_energy_fn
from ebmdual.optim import get_optimizer
from ebmdual.train import make_trainer, put_data
from experiments import mixture2d, teacher

DESIGN_FUSED_MS = 13.6  # DESIGN §4: a 60-line JAX script of this setting on this machine


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="teacher,mlp", help="comma list of: teacher, mlp")
    parser.add_argument("--particles", default="2000,20000,100000",
                        help="comma list of particle counts N")
    parser.add_argument("--steps_per_call", type=int, default=5,
                        help="train steps per compiled train_loop call (S)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
    parser.add_argument("--mlp_dim", type=int, default=16, help="data dimension d of the mlp task")
    parser.add_argument("--mlp_hidden", default="128,128", help="hidden widths of the mlp task")
    parser.add_argument("--mlp_sampler_steps", type=int, default=5,
                        help="ULA steps K per train step in the mlp task")
    parser.add_argument("--num_devices", type=int, default=None,
                        help="devices of the mesh (default: all)")
    parser.add_argument("--reference_repeats", type=int, default=20,
                        help="timed calls of each program in the reference comparison")
    parser.add_argument("--skip_reference", action="store_true",
                        help="do not time the paper's reference setting")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- tasks

def teacher_task(num_particles: int, data):
    config = teacher.get_config()
    config.sampler.num_particles = num_particles
    return config, data, "sphere"


def mlp_task(num_particles: int, args, key):
    config = mixture2d.get_config()
    config.data.dim = args.mlp_dim
    config.model.hidden_sizes = tuple(int(h) for h in args.mlp_hidden.split(","))
    config.sampler.num_particles = num_particles
    config.sampler.num_steps = args.mlp_sampler_steps
    # Two-component mixture along the first axis, as in mixture2d (timing does not depend on it).
    n, d = config.data.num_train, config.data.dim
    k_mode, k_noise = jax.random.split(key)
    first = jax.random.uniform(k_mode, (n,)) < config.data.mixture_weights[0]
    centre = jnp.where(first, -0.5, 0.5) * config.data.mixture_separation
    data = config.data.mixture_std * jax.random.normal(k_noise, (n, d))
    return config, data.at[:, 0].add(centre), "euclidean"


def describe(name, config, data) -> str:
    if name == "teacher":
        return f"ShallowEnergy m={config.model.num_neurons}, sphere, WFR"
    hidden = "x".join(str(h) for h in config.model.hidden_sizes)
    return f"MLP {hidden}, R^d, {config.optim.name}, batch {config.data.batch_size}"


# ----------------------------------------------------------------------------- timing

def build(config, data, manifold, steps_per_call, num_devices):
    """(call, state, trainer): call(state) -> state runs one train_loop call (S steps)."""
    trainer = make_trainer(config, data.shape, manifold, num_devices=num_devices,
                           steps_per_call=steps_per_call)
    data = put_data(np.asarray(data), trainer)
    state = trainer.init(jax.random.key(config.seed), data)

    def call(state):
        state, metrics = trainer.train_loop(state, data)
        jax.block_until_ready((state, metrics))
        return state

    return call, state, trainer


def timed(call, state):
    """One call, ended by block_until_ready inside `call`: (state, seconds)."""
    start = time.perf_counter()
    state = call(state)
    return state, time.perf_counter() - start


def time_per_step(call, state, steps_per_call, repeats):
    """(median seconds per step, compile-and-first-call seconds)."""
    state, first = timed(call, state)  # compiles
    times = []
    for _ in range(repeats):
        state, seconds = timed(call, state)
        times.append(seconds / steps_per_call)
    return statistics.median(times), first


# ----------------------------------------------------------------------------- reference

def check_against_fused(config, data, key) -> tuple[float, float]:
    """Max |difference| of the library's and the fused program's Langevin drift and WFR update.

    Same (θ, w), data and particles (random points on the sphere); both updates are
    deterministic given them.
    """
    module = get_energy(config)
    energy_fn = make_energy_fn(module)
    k_param, k_x = jax.random.split(key)
    params = module.init(k_param, data[0])
    x = reference_fused._normalize(jax.random.normal(k_x, (config.sampler.num_particles,
                                                           data.shape[1])))
    # Perturb w away from 1 so the sign and weight conventions are both exercised.
    w = params["params"]["w"] * jnp.linspace(0.5, 1.5, config.model.num_neurons)
    params = {"params": {"theta": params["params"]["theta"], "w": w}}
    theta = params["params"]["theta"]

    drift_lib = samplers.energy_gradients(energy_fn, params, x)
    drift_ref = reference_fused.langevin_drift(theta, w, x)

    optimizer = get_optimizer(config)
    grads = jax.grad(lambda p: losses.maximum_likelihood_loss(energy_fn, p, data, x))(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    theta_lib = theta + updates["params"]["theta"]
    w_lib = w + updates["params"]["w"]
    theta_ref, w_ref = reference_fused.wfr_step(theta, w, data, x)
    drift_err = float(jnp.max(jnp.abs(drift_lib - drift_ref)))
    wfr_err = max(float(jnp.max(jnp.abs(theta_lib - theta_ref))),
                  float(jnp.max(jnp.abs(w_lib - w_ref)) / jnp.max(jnp.abs(w_ref))))
    return drift_err, wfr_err


def reference_comparison(data, steps_per_call, repeats, num_devices):
    """Interleaved timing of the library and the fused program in the reference setting.

    Returns (config, library seconds per step per call, fused seconds per step per call).
    """
    config, _, manifold = teacher_task(reference_fused.NUM_PARTICLES, data)
    assert config.data.num_train == reference_fused.NUM_DATA == data.shape[0]
    assert config.model.num_neurons == reference_fused.NUM_NEURONS
    assert config.sampler.step_size == reference_fused.PARTICLE_STEP
    assert config.train.restart_prob == reference_fused.RESTART_PROB
    assert config.optim.feature_learning_rate == reference_fused.FEATURE_STEP
    assert config.optim.weight_learning_rate == reference_fused.WEIGHT_STEP
    assert config.optim.weight_cap == reference_fused.WEIGHT_CAP
    assert config.sampler.antithetic and config.sampler.num_steps == 1
    assert config.train.restart_schedule == "random" and config.train.restart_to == "data"

    lib_call, lib_state, _ = build(config, data, manifold, steps_per_call, num_devices)
    run = reference_fused.make_run(steps_per_call)
    data_dev = jnp.asarray(data)

    def fused_call(state):
        return jax.block_until_ready(run(state, data_dev))

    fused_state = reference_fused.init(jax.random.key(config.seed), data_dev)
    lib_state, _ = timed(lib_call, lib_state)  # warm-up: compiles
    fused_state, _ = timed(fused_call, fused_state)
    lib_times, fused_times = [], []
    for _ in range(repeats):
        lib_state, seconds = timed(lib_call, lib_state)
        lib_times.append(seconds / steps_per_call)
        fused_state, seconds = timed(fused_call, fused_state)
        fused_times.append(seconds / steps_per_call)
    return config, lib_times, fused_times


# ----------------------------------------------------------------------------- main

def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def main(argv=None):
    args = parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(tasks) - {"teacher", "mlp"}
    if unknown:
        raise SystemExit(f"--tasks: unknown {sorted(unknown)}; expected teacher, mlp")
    particle_counts = [int(p) for p in args.particles.split(",") if p.strip()]
    devices = jax.devices()[:args.num_devices]
    print(f"jax {jax.__version__}; backend {jax.default_backend()}; "
          f"{len(devices)} device(s) used of {jax.device_count()}: "
          f"{devices[0].device_kind} ({devices[0].platform}); host CPUs {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"steps per call S = {args.steps_per_call}, timed calls = {args.repeats} "
          "(after one warm-up call), median per step\n")

    key = jax.random.key(0)
    teacher_data = None
    if "teacher" in tasks or not args.skip_reference:
        teacher_data = reference_fused.sample_teacher_data(jax.random.fold_in(key, 1))

    header = ("task", "model", "d", "n data", "N particles", "K", "ms/step", "steps/s",
              "particle-grads/s", "1st call s (compile)")
    rows = []
    for name in tasks:
        for num_particles in particle_counts:
            if name == "teacher":
                config, data, manifold = teacher_task(num_particles, teacher_data)
            else:
                config, data, manifold = mlp_task(num_particles, args, jax.random.fold_in(key, 2))
            call, state, _ = build(config, data, manifold, args.steps_per_call, args.num_devices)
            per_step, first = time_per_step(call, state, args.steps_per_call, args.repeats)
            k = config.sampler.num_steps
            rows.append((name, describe(name, config, data), data.shape[1], data.shape[0],
                         num_particles, k, f"{1e3 * per_step:.2f}", f"{1 / per_step:.1f}",
                         f"{num_particles * k / per_step:.3g}", f"{first:.1f}"))
            print(f"  done: {name} N={num_particles}", flush=True)
    if rows:
        print()
        print_table(header, rows)

    if args.skip_reference:
        return
    drift_err, wfr_err = check_against_fused(teacher.get_config(), teacher_data,
                                             jax.random.fold_in(key, 3))
    config, lib_times, fused_times = reference_comparison(
        teacher_data, args.steps_per_call, args.reference_repeats, args.num_devices)
    lib, fused = statistics.median(lib_times), statistics.median(fused_times)
    print("\nReference setting of the paper: d = 15 teacher, n = 10^4 data, N = 2·10^4 particles, "
          "m = 64,\n  projected ULA h_x = 0.02 (antithetic), random restarts p = 1/40 at data, "
          "WFR h_z = h_w = 0.2, β = 10")
    print(f"  same update check (library vs fused, one step from a shared state): "
          f"max |Δ drift| = {drift_err:.1e}, max |Δ WFR| = {wfr_err:.1e}")
    ref_rows = [
        ("ebmdual train_loop (make_trainer)", f"{1e3 * lib:.2f}", f"{1e3 * min(lib_times):.2f}",
         f"{1 / lib:.1f}"),
        ("benchmarks/reference_fused.py", f"{1e3 * fused:.2f}", f"{1e3 * min(fused_times):.2f}",
         f"{1 / fused:.1f}"),
        ("DESIGN §4 fused script (recorded)", f"{DESIGN_FUSED_MS:.2f}", "", f"{1e3 / DESIGN_FUSED_MS:.1f}"),
    ]
    print()
    print_table(("program", "ms/iteration (median)", "ms (best call)", "iterations/s"), ref_rows)
    print(f"\n  speed-up of ebmdual over the fused reference (fused ms / ebmdual ms): "
          f"{fused / lib:.2f}x on medians, {min(fused_times) / min(lib_times):.2f}x on best calls\n"
          f"  (timed calls interleaved, S = {args.steps_per_call}, {args.reference_repeats} calls each)")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} host CPUs "
          "(other processes share them; above that count, timings are inflated and noisy)")


if __name__ == "__main__":
    main()
