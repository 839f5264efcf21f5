"""A PyTorch peer of one iteration of the paper's d = 15 teacher setting (benchmark only).

What it measures: wall-clock milliseconds per training iteration of exactly the
algorithm of `benchmarks.reference_fused` (docs/tasks.md, Neuron updates (WFR)),
written the way a competent PyTorch user would write it: float32 tensors on the
CPU, ordinary batched torch ops, the iteration a Python function called in a
Python loop. One iteration, with data x (n, d) = (10^4, 15) on S^14, particles
X (N, d) = (2·10^4, 15) in antithetic pairs (j, j + N/2) and m = 64 neurons,
c_i = +1 for the first 32 and −1 after:

1. restart: each pair, with probability p = 1/40, is reset to one uniformly random
   data row (both members to the same row);
2. projected Langevin, antithetic noise, h = 0.02, T = 1:
   X ← Π(X − h ∇E(X) + √(2hT) [ξ; −ξ]),  E(x) = (1/m) Σ_i c_i w_i relu(⟨θ_i, x⟩),  Π = x/‖x‖;
3. Wasserstein–Fisher–Rao step of (θ, w) with the new particles (h_z = h_w = 0.2,
   cap β = 10), with the data and particle statistics of `reference_fused.wfr_step`.

Gradients: by default in closed form, as in reference_fused.py,
∇E(x) = (1/m) Σ_i c_i w_i 1(⟨θ_i,x⟩ > 0) θ_i and the WFR velocity / weight rate
written out (`gradients="closed"`, run under `torch.no_grad()`). `gradients="autograd"`
instead takes ∇E(X) with `torch.autograd.grad` of Σ_j E(X_j) and the WFR
first variation from `torch.autograd.grad` of the maximum-likelihood loss
L = mean_k E(x_k) − mean_j E(X_j) (g_θ = (m/w) ∂L/∂θ, g_w = m ∂L/∂w, as in
`ebmdual.optim.wfr`): the same update, the way a user relying on autodiff writes it.

How: `torch_iteration_ms` builds the state (w = 1, uniform θ, walkers = two copies of
the data, as `reference_fused.init`), makes one warm-up call (with `compile=True`
this is where `torch.compile` compiles), then `repeats` timed calls of `steps`
iterations each (a Python loop); torch on the CPU is synchronous, so
`time.perf_counter` around the loop is the wall time. The figures are the median
and best call divided by `steps`. Threads: torch's default (`torch.get_num_threads()`,
reported) unless `threads` is given.

Correctness: `torch_step` is a pure function of the state and of the random numbers
(the uniforms of the restart test, the restart rows, the Gaussian ξ), so
`check_against_jax` can feed it the very numbers `reference_fused.iteration` draws
from its key and compare one iteration (new particles, θ, w) with the JAX program.
`iteration` is the thin wrapper that draws those numbers with torch's RNG.

Dependency: torch is an optional, benchmark-only dependency, not needed by ebmdual:

    pip install -e '.[bench]'        (torch==2.13.0; the CPU wheel)

This module imports torch at import time, so import it only under a guard;
`benchmarks/throughput.py` does

    try:
        from benchmarks import torch_peer
    except ImportError:
        torch_peer = None

and, when it is available, adds `torch_peer.torch_iteration_ms(...)` (eager, and
compiled) to its reference-setting table. Standalone:

    python -m benchmarks.torch_peer --particles=20000 --steps=100 --repeats=5 --compile=both
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch

# The reference setting (the same numbers as benchmarks/reference_fused.py).
NUM_DATA = 10_000
NUM_PARTICLES = 20_000
NUM_NEURONS = 64
DIM = 15
PARTICLE_STEP = 0.02
TEMPERATURE = 1.0
FEATURE_STEP = 0.2
WEIGHT_STEP = 0.2
WEIGHT_CAP = 10.0
RESTART_PROB = 1 / 40
GRADIENTS = ("closed", "autograd")


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def signs(m: int = NUM_NEURONS, dtype=torch.float32) -> torch.Tensor:
    """c: first half +1, second half −1."""
    c = torch.ones(m, dtype=dtype)
    c[m // 2:] = -1.0
    return c


# ----------------------------------------------------------------------------- the iteration

def energy(theta, w, c, x) -> torch.Tensor:
    """E at each row of x: (N,), E(x) = (1/m) Σ_i c_i w_i relu(⟨θ_i, x⟩)."""
    return torch.relu(x @ theta.T) @ (c * w) / theta.shape[0]


def drift_closed(theta, w, c, x) -> torch.Tensor:
    """∇E at each particle: (N, d) = (1(Xθᵀ > 0) · c w / m) θ."""
    return ((x @ theta.T > 0).to(x.dtype) * (c * w / theta.shape[0])) @ theta


def drift_autograd(theta, w, c, x) -> torch.Tensor:
    """∇E at each particle by autodiff of Σ_j E(X_j) (relu'(0) = 0, as the closed form)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(energy(theta, w, c, x).sum(), x)[0]


def wfr_rates_closed(theta, w, c, data, x):
    """(velocity (m, d) before the tangent projection, weight rate g_w (m,)), written out."""
    pre_data, pre_x = data @ theta.T, x @ theta.T
    velocity = c[:, None] * ((pre_data > 0).T.to(x.dtype) @ data / data.shape[0]
                             - (pre_x > 0).T.to(x.dtype) @ x / x.shape[0])
    g_w = c * (torch.relu(pre_data).mean(0) - torch.relu(pre_x).mean(0))
    return velocity, g_w


def wfr_rates_autograd(theta, w, c, data, x):
    """The same rates from autodiff of L = mean_k E(x_k) − mean_j E(X_j) (ebmdual.optim.wfr)."""
    m = theta.shape[0]
    with torch.enable_grad():
        theta_, w_ = theta.detach().requires_grad_(True), w.detach().requires_grad_(True)
        loss = energy(theta_, w_, c, data).mean() - energy(theta_, w_, c, x).mean()
        g_theta, g_w = torch.autograd.grad(loss, (theta_, w_))
    velocity = m * g_theta / torch.where(w > 0, w, torch.ones_like(w))[:, None]
    return velocity, m * g_w


def torch_step(theta, w, x, data, uniforms, rows, xi, gradients: str = "closed"):
    """One restart + projected-Langevin + WFR iteration, given its random numbers.

    theta (m, d), w (m,), x (N, d), data (n, d) float32; uniforms (N/2,) in [0, 1),
    rows (N/2,) int64 data indices, xi (N/2, d) standard normal. Returns
    (theta, w, x), new tensors. Pure: the same inputs give the same outputs.
    """
    drift, rates = ((drift_closed, wfr_rates_closed) if gradients == "closed"
                    else (drift_autograd, wfr_rates_autograd))
    c = signs(theta.shape[0], theta.dtype)

    # 1. restart pairs (j, j + N/2) to the same random data row
    restart = (uniforms < RESTART_PROB).repeat(2)[:, None]
    x = torch.where(restart, data[rows].repeat(2, 1), x)

    # 2. projected Langevin with antithetic noise
    noise = torch.cat([xi, -xi])
    x = normalize(x - PARTICLE_STEP * drift(theta, w, c, x)
                  + math.sqrt(2.0 * PARTICLE_STEP * TEMPERATURE) * noise)

    # 3. WFR step of the neurons against the data and the new particles
    velocity, g_w = rates(theta, w, c, data, x)
    velocity = velocity - (velocity * theta).sum(-1, keepdim=True) * theta
    theta = normalize(theta - FEATURE_STEP * velocity)
    w = w * torch.exp(-WEIGHT_STEP * g_w)
    mean_w = w.mean()
    w = torch.where(mean_w > WEIGHT_CAP, w * (WEIGHT_CAP / mean_w), w)
    return theta, w, x


def draw_randoms(num_pairs: int, num_data: int, dim: int, generator=None):
    """(uniforms (P,), rows (P,) int64, xi (P, d)) from torch's RNG."""
    uniforms = torch.rand(num_pairs, generator=generator)
    rows = torch.randint(0, num_data, (num_pairs,), generator=generator)
    xi = torch.randn(num_pairs, dim, generator=generator)
    return uniforms, rows, xi


def iteration(theta, w, x, data, gradients: str = "closed"):
    """`torch_step` with its random numbers drawn from torch's global RNG: (theta, w, x)."""
    uniforms, rows, xi = draw_randoms(x.shape[0] // 2, data.shape[0], x.shape[1])
    return torch_step(theta, w, x, data, uniforms, rows, xi, gradients)


def _iteration_no_grad(theta, w, x, data):
    with torch.no_grad():
        return iteration(theta, w, x, data, "closed")


def _iteration_autograd(theta, w, x, data):
    return iteration(theta, w, x, data, "autograd")


# ----------------------------------------------------------------------------- setup

def sphere_data(num_data: int, dim: int = DIM, seed: int = 0) -> torch.Tensor:
    """num_data uniform points on S^{dim-1}, float32 (stand-in data: timing does not
    depend on their law; `data=` takes the teacher samples)."""
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(num_data, dim, generator=g))


def init_state(data: torch.Tensor, num_particles: int = NUM_PARTICLES,
               m: int = NUM_NEURONS, seed: int = 0):
    """(theta, w, x) as reference_fused.init: uniform θ, w = 1, walkers = copies of the data."""
    g = torch.Generator().manual_seed(seed + 1)
    theta = normalize(torch.randn(m, data.shape[1], generator=g))
    w = torch.ones(m)
    half = data[torch.arange(num_particles // 2) % data.shape[0]]
    return theta, w, torch.cat([half, half]).contiguous()


# ----------------------------------------------------------------------------- timing

def torch_iteration_ms(num_data: int = NUM_DATA, num_particles: int = NUM_PARTICLES,
                       steps: int = 100, repeats: int = 5, compile: bool = False,
                       threads: int | None = None, seed: int = 0,
                       gradients: str = "closed", data=None) -> dict:
    """Milliseconds per iteration of the torch peer (eager, or `torch.compile`d).

    One warm-up call, then `repeats` timed calls of `steps` iterations (a Python loop).
    `data`: optional (n, d) array (e.g. the teacher samples); default uniform on S^14.
    Returns {'median_ms', 'best_ms', 'compile_s' (warm-up call seconds with compile=True,
    0.0 eager), 'warmup_s', 'threads', 'compile', 'gradients', 'num_particles',
    'num_data', 'steps', 'repeats', 'torch'}; with compile=True and a failing
    torch.compile, {'error': one-line reason, ...} instead of the timings.
    """
    if gradients not in GRADIENTS:
        raise ValueError(f"gradients={gradients!r}: expected one of {GRADIENTS}")
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if data is None:
        data = sphere_data(num_data, seed=seed)
    else:
        data = torch.as_tensor(np.array(data, np.float32))
        num_data = data.shape[0]
    theta, w, x = init_state(data, num_particles, seed=seed)
    info = {"threads": torch.get_num_threads(), "compile": bool(compile),
            "gradients": gradients, "num_particles": num_particles, "num_data": num_data,
            "steps": steps, "repeats": repeats, "torch": torch.__version__}

    fn = _iteration_no_grad if gradients == "closed" else _iteration_autograd
    if compile:
        try:
            from torch import _dynamo  # reset, so that repeated calls compile afresh
            _dynamo.reset()
            fn = torch.compile(fn)
        except Exception as e:  # noqa: BLE001
            return {**info, "error": _one_line(e)}

    def call(state):
        theta, w, x = state
        for _ in range(steps):
            theta, w, x = fn(theta, w, x, data)
        return theta, w, x

    state = (theta, w, x)
    start = time.perf_counter()
    try:
        state = call(state)
    except Exception as e:  # noqa: BLE001 (compile errors surface at the first call)
        if not compile:
            raise
        return {**info, "error": _one_line(e)}
    warmup = time.perf_counter() - start

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = call(state)
        times.append((time.perf_counter() - start) / steps)
    if not bool(torch.isfinite(state[2]).all()):
        raise FloatingPointError("torch peer: non-finite particles")
    return {**info, "median_ms": 1e3 * statistics.median(times), "best_ms": 1e3 * min(times),
            "compile_s": warmup if compile else 0.0, "warmup_s": warmup}


def _one_line(e: BaseException) -> str:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


# ----------------------------------------------------------------------------- check

def reference_randoms(step, key, num_pairs: int, num_data: int, dim: int):
    """The random numbers `reference_fused.iteration` draws at (step, key), as numpy:
    (uniforms (P,), rows (P,), xi (P, d)). Mirrors its key handling line by line."""
    import jax

    k_mask, k_row, k_noise = jax.random.split(jax.random.fold_in(key, step), 3)
    uniforms = jax.random.uniform(k_mask, (num_pairs,))
    rows = jax.random.randint(k_row, (num_pairs,), 0, num_data)
    xi = jax.random.normal(k_noise, (num_pairs, dim))
    return np.asarray(uniforms), np.asarray(rows), np.asarray(xi)


def check_against_jax(theta=None, w=None, particles=None, data=None, *, uniforms=None,
                      rows=None, xi=None, num_data: int = NUM_DATA,
                      num_particles: int = NUM_PARTICLES, seed: int = 0,
                      gradients=GRADIENTS, compile: bool = False) -> dict:
    """Max |difference| of one torch iteration and one `reference_fused.iteration`.

    The shared state is numpy arrays (theta (m, d), w (m,), particles (N, d), data (n, d));
    any left out is made here (teacher data, random θ, w spread over [0.5, 1.5],
    particles uniform on the sphere). The random numbers are those
    `reference_fused.iteration` draws from `jax.random.key(seed)` at step 0
    (`reference_randoms`), passed explicitly to `torch_step`; if uniforms / rows / xi
    are given instead, the JAX side takes them too (through a copy of the iteration
    with injected randoms), so both sides always see the same numbers.
    Returns {gradients: {'particles', 'theta', 'w_rel', 'restarted'}} per variant.
    """
    import jax
    import jax.numpy as jnp

    from benchmarks import reference_fused as ref

    key = jax.random.key(seed)
    k_data, k_theta, k_x = jax.random.split(jax.random.fold_in(key, 7), 3)
    if data is None:
        data = np.asarray(ref.sample_teacher_data(k_data, num_data))
    if theta is None:
        theta = np.asarray(ref._normalize(jax.random.normal(k_theta, (NUM_NEURONS, data.shape[1]))))
    if w is None:
        w = np.linspace(0.5, 1.5, theta.shape[0], dtype=np.float32)
    if particles is None:
        particles = np.asarray(ref._normalize(jax.random.normal(k_x, (num_particles, data.shape[1]))))
    data, theta, w, particles = (np.asarray(a, np.float32) for a in (data, theta, w, particles))
    half = particles.shape[0] // 2

    state = ref.State(jnp.asarray(theta), jnp.asarray(w), jnp.asarray(particles),
                      jnp.zeros((), jnp.int32), key)
    if uniforms is None and rows is None and xi is None:
        uniforms, rows, xi = reference_randoms(state.step, key, half, data.shape[0], data.shape[1])
        out = ref.iteration(state, jnp.asarray(data))
        ref_theta, ref_w, ref_x = (np.asarray(a) for a in out[:3])
    else:
        ref_theta, ref_w, ref_x = _reference_step_injected(theta, w, particles, data,
                                                           uniforms, rows, xi)

    result = {}
    to_t = lambda a, dt=torch.float32: torch.as_tensor(np.array(a), dtype=dt)
    variants = [(g, False) for g in ([gradients] if isinstance(gradients, str) else gradients)]
    if compile:
        from torch import _dynamo
        _dynamo.reset()
        variants += [(g, True) for g, _ in variants]
    for g, compiled in variants:
        step = torch.compile(torch_step) if compiled else torch_step
        with torch.no_grad() if g == "closed" else torch.enable_grad():
            t_theta, t_w, t_x = step(to_t(theta), to_t(w), to_t(particles), to_t(data),
                                           to_t(uniforms), to_t(rows, torch.int64), to_t(xi),
                                           gradients=g)
        result[g + ("+compile" if compiled else "")] = {
            "particles": float(np.max(np.abs(t_x.detach().numpy() - ref_x))),
            "theta": float(np.max(np.abs(t_theta.detach().numpy() - ref_theta))),
            "w_rel": float(np.max(np.abs(t_w.detach().numpy() - ref_w)) / np.max(np.abs(ref_w))),
            "restarted": int((np.asarray(uniforms) < RESTART_PROB).sum()),
        }
    return result


def _reference_step_injected(theta, w, particles, data, uniforms, rows, xi):
    """reference_fused.iteration's body with given random numbers (JAX), as numpy."""
    import jax.numpy as jnp

    from benchmarks import reference_fused as ref

    x, data = jnp.asarray(particles), jnp.asarray(data)
    restart = jnp.asarray(uniforms) < ref.RESTART_PROB
    picked = data[jnp.asarray(rows)]
    x = jnp.where(jnp.concatenate([restart, restart])[:, None],
                  jnp.concatenate([picked, picked]), x)
    xi = jnp.asarray(xi)
    x = ref._normalize(x - ref.PARTICLE_STEP * ref.langevin_drift(jnp.asarray(theta), jnp.asarray(w), x)
                       + jnp.sqrt(2.0 * ref.PARTICLE_STEP) * jnp.concatenate([xi, -xi]))
    new_theta, new_w = ref.wfr_step(jnp.asarray(theta), jnp.asarray(w), data, x)
    return np.asarray(new_theta), np.asarray(new_w), np.asarray(x)


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=NUM_PARTICLES, help="N (even)")
    parser.add_argument("--data", type=int, default=NUM_DATA, help="n data rows")
    parser.add_argument("--steps", type=int, default=100, help="iterations per timed call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
    parser.add_argument("--compile", choices=("0", "1", "both"), default="0",
                        help="time eager (0), torch.compile (1) or both")
    parser.add_argument("--gradients", default="closed",
                        help="comma list of: closed, autograd")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_check", action="store_true",
                        help="do not run check_against_jax")
    parser.add_argument("--uniform_data", action="store_true",
                        help="time on uniform sphere data instead of the teacher samples")
    return parser.parse_args(argv)


def main(argv=None):
    from benchmarks.throughput import print_table  # imported here: throughput imports this module

    args = parse_args(argv)
    grads = [g.strip() for g in args.gradients.split(",") if g.strip()]
    if set(grads) - set(GRADIENTS):
        raise SystemExit(f"--gradients: expected a comma list of {GRADIENTS}")
    compiles = {"0": [False], "1": [True], "both": [False, True]}[args.compile]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; threads {torch.get_num_threads()} "
          f"(interop {torch.get_num_interop_threads()}); host CPUs {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.2f}")

    data = None
    if not args.uniform_data:
        import jax

        from benchmarks import reference_fused
        data = np.asarray(reference_fused.sample_teacher_data(
            jax.random.fold_in(jax.random.key(0), 1), args.data))

    if not args.skip_check:
        try:
            res = check_against_jax(data=data, num_data=args.data, seed=args.seed,
                                    gradients=grads, compile=True in compiles)
        except Exception as e:  # noqa: BLE001 (a failing torch.compile)
            if True not in compiles:
                raise
            print(f"check with torch.compile failed ({_one_line(e)}); eager only:")
            res = check_against_jax(data=data, num_data=args.data, seed=args.seed,
                                    gradients=grads)
        for g, r in res.items():
            print(f"check vs reference_fused.iteration ({g}, N = {NUM_PARTICLES}, "
                  f"{r['restarted']} pairs restarted): max |Δ particles| = {r['particles']:.1e}, "
                  f"max |Δ θ| = {r['theta']:.1e}, max |Δ w| / max w = {r['w_rel']:.1e}")

    print(f"\nd = {DIM}, n = {args.data}, N = {args.particles}, m = {NUM_NEURONS}; "
          f"{args.steps} iterations per timed call, {args.repeats} calls after one warm-up\n")
    rows = []
    for g in grads:
        for c in compiles:
            r = torch_iteration_ms(args.data, args.particles, args.steps, args.repeats,
                                   compile=c, seed=args.seed, gradients=g, data=data)
            name = f"torch {'compile' if c else 'eager'} ({g})"
            load = f"{os.getloadavg()[0]:.2f}"
            if "error" in r:
                rows.append((name, "error", "", "", "", load))
                print(f"  {name}: {r['error']}")
            else:
                rows.append((name, f"{r['median_ms']:.2f}", f"{r['best_ms']:.2f}",
                             f"{1e3 / r['median_ms']:.1f}", f"{r['warmup_s']:.1f}", load))
            print(f"  done: {name}", flush=True)
    print()
    print_table(("program", "ms/iteration (median)", "ms (best call)", "iterations/s",
                  "warm-up call s", "load avg"), rows)


if __name__ == "__main__":
    main()
