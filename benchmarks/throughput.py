"""Train-loop throughput of ebmdual: steps/s and particle-gradient evaluations/s.

    python -m benchmarks.throughput
    python -m benchmarks.throughput --tasks=teacher --particles=20000,200000 --steps_per_call=50

Tasks:
* teacher: the d = 15 teacher of the paper (experiments/teacher.py): ShallowEnergy
  m = 64 on S^14, n = 10^4 data, projected ULA with antithetic noise, WFR.
* mlp: experiments/mixture2d.py with the dimension and widths set by flags
  (default MLPEnergy 2×128 in d = 16, Adam, ULA with K = 5 steps, batch 500).

Method: as the harness does, `data_key, run_key = split(key(config.seed))`, the data
set `ebmdual.data.get_dataset(config, data_key)`, the trainer
`experiments.registry.build_trainer(config, dataset, steps_per_call=S)`, the
resident data `trainer.put(dataset.train)`, `trainer.init(run_key, data)`, one
warm-up `train_loop` call (compilation), then `--repeats` timed calls, each ended by
`jax.block_until_ready`; the reported time per step is the median over calls
divided by S. Particle-gradient evaluations/s = N × K × steps/s (K sampler steps
per train step).

Then the reference setting of the paper (d = 15, n = 10^4, N = 2·10^4, m = 64,
h_x = 0.02, p = 1/40, h_z = h_w = 0.2, β = 10) is timed both through the library
and through `benchmarks.reference_fused` (a hand-fused program of the same
iteration), with their timed calls interleaved so both see the same machine load.
When torch is importable (`--torch=auto`, `pip install -e '.[bench]'`), the
PyTorch peer `benchmarks.torch_peer` is timed after them in the same run, on the
same data and S: eager with closed-form gradients (as reference_fused), eager
with autograd gradients, then `torch.compile` (closed form); eager first, since
compile's background workers would inflate a following eager timing.
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
from ebmdual import samplers
from ebmdual.data import get_dataset
from ebmdual.energies import as_energy
from experiments import mixture2d, registry, teacher

try:
    from benchmarks import torch_peer
except ImportError:  # torch is an optional, benchmark-only dependency
    torch_peer = None

RECORDED_FUSED_MS = 13.6  # docs/tasks.md, Reference timings: a 60-line JAX script of this setting on the development machine
# (label, torch_iteration_ms keyword arguments), timed in this order: eager before compiled.
TORCH_VARIANTS = (
    ("torch eager (closed-form gradients)", dict(gradients="closed", compile=False)),
    ("torch eager (autograd gradients)", dict(gradients="autograd", compile=False)),
    ("torch.compile (closed-form gradients)", dict(gradients="closed", compile=True)),
)


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
    parser.add_argument("--torch", choices=("auto", "0"), default="auto",
                        help="time the PyTorch peer in the reference comparison: auto (when "
                             "torch is importable) or 0 (never)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- tasks

def teacher_config(num_particles: int):
    """experiments/teacher.py in the fused reference's setting: random per-particle restarts
    and no learning-rate scaling (the reference implements neither the periodic schedule
    nor the scaling; neither changes the arithmetic of a step measurably)."""
    config = teacher.get_config()
    config.sampler.num_particles = num_particles
    config.train.restart_schedule, config.optim.lr_scaling = "random", "off"
    return config


def mlp_config(num_particles: int, args):
    """mixture2d's two-component mixture along the first axis, in d = --mlp_dim (timing
    does not depend on the law of the data)."""
    config = mixture2d.get_config()
    config.data.dim = args.mlp_dim
    config.model.hidden_sizes = tuple(int(h) for h in args.mlp_hidden.split(","))
    config.sampler.num_particles = num_particles
    config.sampler.num_steps = args.mlp_sampler_steps
    return config


def dataset_and_run_key(config):
    """(dataset, run_key) as the harness makes them from config.seed."""
    data_key, run_key = jax.random.split(jax.random.key(config.seed))
    return get_dataset(config, data_key), run_key


def describe(name, config) -> str:
    if name == "teacher":
        return f"ShallowEnergy m={config.model.num_neurons}, sphere, WFR"
    hidden = "x".join(str(h) for h in config.model.hidden_sizes)
    return f"MLP {hidden}, R^d, {config.optim.name}, batch {config.data.batch_size}"


# ----------------------------------------------------------------------------- timing

def build(config, dataset, run_key, steps_per_call, num_devices):
    """(call, state, trainer): call(state) -> state runs one train_loop call (S steps)."""
    components = registry.build_trainer(config, dataset, num_devices=num_devices,
                                        steps_per_call=steps_per_call)
    if components.streamed:
        raise ValueError("the throughput benchmark times resident data sets only")
    trainer = components.trainer
    data = trainer.put(np.asarray(dataset.train))
    state = trainer.init(run_key, data)

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

    Built from the objects the trainer of `config` is composed of (the energy, the
    sampler, the objective and the optimizer of `experiments.registry`), from the same
    (θ, w), data and particles (random points on the sphere). Drift: the particle
    gradients ∇E (`samplers.energy_gradients`) and one sampler step at T = 0, where
    projected ULA is the deterministic move Π(X − h∇E(X)). WFR: the optimizer's update
    on the gradient of the maximum-likelihood objective, as in the train step. The
    drift error is the larger of the two drift comparisons; the WFR error the larger
    of max |Δθ| and max |Δw| / max w.
    """
    manifold = "sphere"
    energy = as_energy(registry.ENERGIES[config.model.name](config))
    energy_fn = energy.energy_fn
    sampler = registry.SAMPLERS[config.sampler.name](config, energy_fn, manifold,
                                                     data.shape[1:])
    objective = registry.OBJECTIVES[config.train.loss](config, energy_fn, manifold)
    optimizer = registry.OPTIMIZERS[config.optim.name](config)

    k_param, k_x, k_step = jax.random.split(key, 3)
    params = energy.init(k_param, data[0])
    x = reference_fused._normalize(jax.random.normal(k_x, (config.sampler.num_particles,
                                                           data.shape[1])))
    # Perturb w away from 1 so the sign and weight conventions are both exercised.
    w = params["params"]["w"] * jnp.linspace(0.5, 1.5, config.model.num_neurons)
    params = {"params": {"theta": params["params"]["theta"], "w": w}}
    theta = params["params"]["theta"]

    drift_ref = reference_fused.langevin_drift(theta, w, x)
    drift_lib = samplers.energy_gradients(energy_fn, params, x)
    h = config.sampler.step_size
    hparams = {"particle_step_size": jnp.float32(h), "temperature": jnp.float32(0.0),
               "restart_prob": jnp.float32(config.train.restart_prob)}
    moved_lib, _, _ = sampler.step(k_step, params, x,
                                   sampler.init(k_step, params, x), hparams)
    moved_ref = reference_fused._normalize(x - h * drift_ref)

    grads = jax.grad(objective)(params, data, x, k_step)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    theta_lib = theta + updates["params"]["theta"]
    w_lib = w + updates["params"]["w"]
    theta_ref, w_ref = reference_fused.wfr_step(theta, w, data, x)
    drift_err = max(float(jnp.max(jnp.abs(drift_lib - drift_ref))),
                    float(jnp.max(jnp.abs(moved_lib - moved_ref))))
    wfr_err = max(float(jnp.max(jnp.abs(theta_lib - theta_ref))),
                  float(jnp.max(jnp.abs(w_lib - w_ref)) / jnp.max(jnp.abs(w_ref))))
    return drift_err, wfr_err


def reference_config():
    """The teacher config of the reference setting, checked against reference_fused's constants."""
    config = teacher_config(reference_fused.NUM_PARTICLES)
    assert config.data.num_train == reference_fused.NUM_DATA
    assert config.data.dim == reference_fused.TEACHER_DIM
    assert config.model.name == "shallow" and config.optim.name == "wfr"
    assert config.model.num_neurons == reference_fused.NUM_NEURONS
    assert config.model.num_positive == reference_fused.NUM_NEURONS // 2
    assert config.sampler.name == "ula" and config.train.loss == "ml"
    assert config.sampler.step_size == reference_fused.PARTICLE_STEP
    assert config.sampler.temperature == 1.0
    assert config.train.restart_prob == reference_fused.RESTART_PROB
    assert config.optim.feature_learning_rate == reference_fused.FEATURE_STEP
    assert config.optim.weight_learning_rate == reference_fused.WEIGHT_STEP
    assert config.optim.weight_cap == reference_fused.WEIGHT_CAP
    assert config.sampler.antithetic and config.sampler.num_steps == 1
    assert config.train.restart_schedule == "random" and config.train.restart_to == "data"
    assert config.data.batch_size == 0 and not config.data.streamed
    return config


def reference_comparison(config, dataset, run_key, steps_per_call, repeats, num_devices):
    """Interleaved timing of the library and the fused program in the reference setting.

    Returns (library seconds per step per call, fused seconds per step per call).
    """
    assert dataset.train.shape[0] == reference_fused.NUM_DATA
    lib_call, lib_state, _ = build(config, dataset, run_key, steps_per_call, num_devices)
    run = reference_fused.make_run(steps_per_call)
    data_dev = jnp.asarray(dataset.train)

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
    return lib_times, fused_times


def torch_comparison(data, steps_per_call, repeats):
    """The PyTorch peer in the reference setting, on `data`: [(label, result dict)] in
    TORCH_VARIANTS order (eager before compiled)."""
    results = []
    for label, kwargs in TORCH_VARIANTS:
        result = torch_peer.torch_iteration_ms(
            num_particles=reference_fused.NUM_PARTICLES, steps=steps_per_call, repeats=repeats,
            data=data, **kwargs)
        results.append((label, result))
        print(f"  done: {label}", flush=True)
    return results


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

    header = ("task", "model", "d", "n data", "N particles", "K", "ms/step", "steps/s",
              "particle-grads/s", "1st call s (compile)")
    rows = []
    datasets = {}  # the data set depends on the task only, not on N
    for name in tasks:
        for num_particles in particle_counts:
            config = (teacher_config(num_particles) if name == "teacher"
                      else mlp_config(num_particles, args))
            if name not in datasets:
                datasets[name] = dataset_and_run_key(config)
            dataset, run_key = datasets[name]
            call, state, _ = build(config, dataset, run_key, args.steps_per_call,
                                   args.num_devices)
            per_step, first = time_per_step(call, state, args.steps_per_call, args.repeats)
            k = config.sampler.num_steps
            n, d = dataset.train.shape
            rows.append((name, describe(name, config), d, n, num_particles, k,
                         f"{1e3 * per_step:.2f}", f"{1 / per_step:.1f}",
                         f"{num_particles * k / per_step:.3g}", f"{first:.1f}"))
            print(f"  done: {name} N={num_particles}", flush=True)
    if rows:
        print()
        print_table(header, rows)

    if args.skip_reference:
        return
    config = reference_config()
    dataset, run_key = dataset_and_run_key(config)
    drift_err, wfr_err = check_against_fused(config, dataset.train,
                                             jax.random.fold_in(jax.random.key(0), 3))
    lib_times, fused_times = reference_comparison(
        config, dataset, run_key, args.steps_per_call, args.reference_repeats, args.num_devices)
    lib, fused = statistics.median(lib_times), statistics.median(fused_times)
    load_after_jax = os.getloadavg()[0]
    peer = torch_peer if args.torch == "auto" else None
    torch_results, torch_checks = [], {}
    if peer is not None:
        host_data = np.asarray(dataset.train)
        torch_checks = peer.check_against_jax(data=host_data, gradients=peer.GRADIENTS)
        torch_results = torch_comparison(host_data, args.steps_per_call, args.reference_repeats)

    print("\nReference setting of the paper: d = 15 teacher, n = 10^4 data, N = 2·10^4 particles, "
          "m = 64,\n  projected ULA h_x = 0.02 (antithetic), random restarts p = 1/40 at data, "
          "WFR h_z = h_w = 0.2, β = 10")
    print(f"  same update check (library vs fused, one step from a shared state): "
          f"max |Δ drift| = {drift_err:.1e}, max |Δ WFR| = {wfr_err:.1e}")
    for gradients, r in torch_checks.items():
        print(f"  same iteration check (torch {gradients} vs fused, one iteration from a shared "
              f"state and random numbers, {r['restarted']} pairs restarted): max |Δ particles| = "
              f"{r['particles']:.1e}, max |Δ θ| = {r['theta']:.1e}, max |Δ w| / max w = "
              f"{r['w_rel']:.1e}")
    ref_rows = [
        ("ebmdual train_loop (build_trainer)", f"{1e3 * lib:.2f}", f"{1e3 * min(lib_times):.2f}",
         f"{1 / lib:.1f}"),
        ("benchmarks/reference_fused.py", f"{1e3 * fused:.2f}", f"{1e3 * min(fused_times):.2f}",
         f"{1 / fused:.1f}"),
    ]
    for label, r in torch_results:
        if "error" in r:
            ref_rows.append((label, "error", "", ""))
        else:
            ref_rows.append((label, f"{r['median_ms']:.2f}", f"{r['best_ms']:.2f}",
                             f"{1e3 / r['median_ms']:.1f}"))
    ref_rows.append(("60-line fused script (recorded, docs/tasks.md)", f"{RECORDED_FUSED_MS:.2f}",
                     "", f"{1e3 / RECORDED_FUSED_MS:.1f}"))
    print()
    print_table(("program", "ms/iteration (median)", "ms (best call)", "iterations/s"), ref_rows)
    print(f"\n  speed-up of ebmdual over the fused reference (fused ms / ebmdual ms): "
          f"{fused / lib:.2f}x on medians, {min(fused_times) / min(lib_times):.2f}x on best calls\n"
          f"  (timed calls interleaved, S = {args.steps_per_call}, {args.reference_repeats} calls each)")
    for label, r in torch_results:
        if "error" in r:
            print(f"  {label}: failed: {r['error']}")
            continue
        print(f"  speed-up of ebmdual over {label} (torch ms / ebmdual ms): "
              f"{r['median_ms'] / (1e3 * lib):.2f}x on medians, "
              f"{r['best_ms'] / (1e3 * min(lib_times)):.2f}x on best calls")
    if torch_results:
        r = torch_results[0][1]
        compiled = [res for _, res in torch_results if res.get("compile") and "error" not in res]
        compile_note = (f"; torch.compile warm-up call {compiled[0]['compile_s']:.1f} s"
                        if compiled else "")
        print(f"  (torch {r['torch']}, {r['threads']} threads, timed after the JAX programs, "
              f"S = {args.steps_per_call} iterations per call in a Python loop, "
              f"{args.reference_repeats} calls each after one warm-up{compile_note}; "
              f"load average {load_after_jax:.2f} before torch)")
    elif args.torch == "auto":
        print("  PyTorch peer not timed: torch is not installed (pip install -e '.[bench]')")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} host CPUs "
          "(other processes share them; above that count, timings are inflated and noisy)")


if __name__ == "__main__":
    main()
