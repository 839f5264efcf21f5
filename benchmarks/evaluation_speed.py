"""Evaluation speed at many points: energies, KL and Fisher divergence of ShallowEnergy.

    python -m benchmarks.evaluation_speed
    python -m benchmarks.evaluation_speed --sizes=100000,1000000 --repeats=5 --old_max_n=200000

Measures, for n points x uniform on S^{d−1} (d = 15) and ShallowEnergy with m = 64
neurons (half positive, random θ, w = 1), the seconds of one call after a warm-up call
(compilation), median over `--repeats` calls, each ended by `jax.block_until_ready`:

* old θ @ x, vmap: a direct vmap over points of E(x) = mean(s · relu(θ @ x)), the
  formulation before ShallowEnergy computed x @ θᵀ (reimplemented here).
* old θ @ x, chunked: the same function through `evaluation.batched_energies`.
* vmap: a direct vmap over points of today's ShallowEnergy (x @ θᵀ).
* batched_energies: `evaluation.batched_energies` with its default chunk size
  (`evaluation.CHUNK_SIZE`; a direct vmap when n ≤ chunk size): `lax.map` over chunk
  indices, each chunk a vmap over a dynamic slice of x.
* lax.map batch_size: `jax.lax.map(E, x, batch_size=CHUNK_SIZE)`, the alternative
  chunking, which reshapes (copies) x.
* floor: one matrix multiply relu(X @ θᵀ) @ s / m, the cost of the arithmetic.
* KL (importance sampling), KL (uniform partition), Fisher (sphere): the metrics
  through `ebmdual.evaluation` against the published d = 15 teacher, on the n points
  (uniform points, not teacher samples: the cost does not depend on where they lie;
  the uniform-partition KL draws n further uniform points). Fisher (sphere), vmap:
  the same metric with chunk_size = n, i.e. one vmap holding every per-point gradient.

A row whose timed call exceeds `--slow_s` seconds is timed once (column calls). The
column "XLA temp MiB" is the scratch memory XLA allots the row's computation compiled
as one program (`compiled.memory_analysis().temp_size_in_bytes`), beside the inputs
(n × d floats) and outputs: it grows with n for a direct vmap and stays bounded when
chunked.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp

from ebmdual import evaluation
from ebmdual.data import synthetic
from ebmdual.energies import ShallowEnergy, make_energy_fn


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,200000,400000,1000000",
                        help="comma list of point counts n")
    parser.add_argument("--dim", type=int, default=15, help="dimension d (the teacher needs 15)")
    parser.add_argument("--neurons", type=int, default=64, help="neurons m of ShallowEnergy")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    parser.add_argument("--slow_s", type=float, default=5.0,
                        help="a row whose call takes longer is timed once")
    parser.add_argument("--old_max_n", type=int, default=1_000_000,
                        help="largest n of the old direct vmap (80+ s a call at 10^6)")
    return parser.parse_args(argv)


def old_energy(params, x):
    """ShallowEnergy as formulated before: mean_i s_i relu(⟨θ_i, x⟩) with θ @ x."""
    theta, signed_weights = params
    return jnp.mean(signed_weights * jax.nn.relu(theta @ x))


def floor(params, x):
    """All energies as one matrix multiply: relu(X @ θᵀ) @ s / m. (n,)."""
    theta, signed_weights = params
    return jax.nn.relu(x @ theta.T) @ signed_weights / theta.shape[0]


def vmap_energies(energy_fn):
    return jax.jit(jax.vmap(energy_fn, in_axes=(None, 0)))


def temp_mib(fn, *args) -> str:
    """XLA scratch memory of fn(*args) compiled as one program, MiB ('?' if unknown)."""
    try:
        stats = jax.jit(fn).lower(*args).compile().memory_analysis()
        return f"{stats.temp_size_in_bytes / 2**20:.1f}"
    except Exception:  # memory_analysis is backend-dependent
        return "?"


def time_call(fn, args, repeats, slow_s) -> tuple[float, int]:
    """(median seconds of a call after one warm-up call, number of timed calls)."""
    jax.block_until_ready(fn(*args))  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
        if times[-1] > slow_s:
            break
    return statistics.median(times), len(times)


def rows_for(n, args, model, model_params, old_params, teacher):
    """[(label, fn, fn's arguments)] of the benchmark at n points."""
    x = synthetic.sample_sphere(jax.random.key(1), n, args.dim)
    uniform_key = jax.random.key(2)
    target = synthetic.teacher_energy
    rows = []
    if n <= args.old_max_n:
        rows.append(("old θ @ x, vmap", vmap_energies(old_energy), (old_params, x)))
    rows += [
        ("old θ @ x, chunked", lambda p, x: evaluation.batched_energies(old_energy, p, x),
         (old_params, x)),
        ("vmap", vmap_energies(model), (model_params, x)),
        ("batched_energies", lambda p, x: evaluation.batched_energies(model, p, x),
         (model_params, x)),
        ("lax.map batch_size", jax.jit(lambda p, x: jax.lax.map(
            functools.partial(model, p), x, batch_size=evaluation.CHUNK_SIZE)),
         (model_params, x)),
        ("floor: relu(X θᵀ) s / m", jax.jit(floor), (old_params, x)),
        ("KL (importance sampling)",
         lambda p, x: evaluation.kl_importance_sampling(model, p, target, teacher, x),
         (model_params, x)),
        ("KL (uniform partition)",
         lambda p, x: evaluation.kl_uniform_partition(model, p, target, teacher, x,
                                                      uniform_key, n),
         (model_params, x)),
        ("Fisher (sphere)",
         lambda p, x: evaluation.fisher_divergence_sphere(model, p, target, teacher, x),
         (model_params, x)),
        ("Fisher (sphere), vmap",
         lambda p, x: evaluation.fisher_divergence_sphere(model, p, target, teacher, x,
                                                          chunk_size=n),
         (model_params, x)),
    ]
    return rows


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    print(line(header))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print(line(row))


def main(argv=None):
    args = parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    device = jax.devices()[0]
    print(f"jax {jax.__version__}; backend {jax.default_backend()}: {device.device_kind}; "
          f"host CPUs {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    print(f"d = {args.dim}, m = {args.neurons}, chunk size {evaluation.CHUNK_SIZE}; "
          f"median of up to {args.repeats} calls after a warm-up call\n")

    module = ShallowEnergy(num_neurons=args.neurons, num_positive=args.neurons // 2)
    model = make_energy_fn(module)
    model_params = module.init(jax.random.key(0), jnp.zeros((args.dim,)))
    theta = model_params["params"]["theta"]
    signs = jnp.where(jnp.arange(args.neurons) < args.neurons // 2, 1.0, -1.0)
    old_params = (theta, signs * model_params["params"]["w"])
    teacher = synthetic.published_teacher(args.dim)

    header = ("n", "computation", "seconds", "calls", "points/s", "XLA temp MiB")
    table, largest = [], []
    for n in sizes:
        for label, fn, fn_args in rows_for(n, args, model, model_params, old_params, teacher):
            seconds, calls = time_call(fn, fn_args, args.repeats, args.slow_s)
            row = (f"{n:.0e}", label, f"{seconds:.4f}", calls, f"{n / seconds:.3g}",
                   temp_mib(fn, *fn_args))
            table.append(row)
            if n == max(sizes):
                largest.append(row)
            print(f"  done: n={n} {label}: {seconds:.4f} s", flush=True)
    print()
    print_table(header, table)
    print(f"\nn = {max(sizes):.0e} (the largest n):\n")
    print_table(header, largest)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} host CPUs "
          "(other processes share them; timings above that count are inflated)")


if __name__ == "__main__":
    main()
