"""A hand-fused baseline of the paper's d = 15 teacher iteration, in plain JAX (docs/tasks.md, Neuron updates (WFR)).

Not part of the library: it exists so that `benchmarks.throughput` can show how
ebmdual's general train loop compares with the shortest program doing the same
work. No flax, optax or autodiff; the gradients are written out. One iteration:

1. restart: each antithetic pair (j, j + N/2) is reset, with probability p, to
   one random data row (both members to the same row);
2. projected Langevin on S^{d-1}, antithetic noise:
   X ← Π(X − h_x ∇f(X) + √(2h_x) [ξ; −ξ]),  ∇f(x) = (1/m) Σ_i c_i w_i 1(⟨θ_i,x⟩>0) θ_i;
3. Wasserstein–Fisher–Rao step on the m neurons with the new particles:
   θ_i ← Π(θ_i − h_z P⊥_{θ_i} c_i [mean_k 1(⟨θ_i,x_k⟩>0) x_k − mean_j 1(⟨θ_i,X_j⟩>0) X_j]),
   w_i ← w_i exp(−h_w c_i [mean_k relu(⟨θ_i,x_k⟩) − mean_j relu(⟨θ_i,X_j⟩)]),
   then w ← β w / mean(w) if mean(w) > β.

`make_run(num_iterations)` returns a jitted function scanning that many
iterations per call, like ebmdual's `train_loop`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The d = 15 "old teacher" of the published runs (docs/tasks.md, d = 15), rows before normalisation.
TEACHER_THETA = np.array([
    [-0.1581, -0.1232, -0.1913, 0.4161, 0.4344, 0.1045, 0.3137, 0.2839,
     0.1072, 0.1849, -0.2719, -0.1624, -0.0897, -0.2070, 0.4179],
    [0.5860, 0.1702, -0.1274, 0.0954, 0.1495, 0.1055, 0.2156, 0.1797,
     -0.1128, 0.0606, -0.1669, 0.0621, -0.4499, 0.4556, 0.1786],
])
TEACHER_DIM = 15

# The reference setting: n data, N = 2n particles, m neurons, step sizes, cap, restart prob.
NUM_DATA = 10_000
NUM_PARTICLES = 20_000
NUM_NEURONS = 64
PARTICLE_STEP = 0.02
FEATURE_STEP = 0.2
WEIGHT_STEP = 0.2
WEIGHT_CAP = 10.0
RESTART_PROB = 1 / 40


def _normalize(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def sample_teacher_data(key, n: int = NUM_DATA, batch: int = 1 << 18) -> jax.Array:
    """n exact samples of p* ∝ exp(−f*) on S^14, f* = −5 relu(⟨θ1*,x⟩) − 5 relu(⟨θ2*,x⟩).

    Rejection from the uniform law, accepting with probability exp(−(f*(x) − min f*)),
    min f* = −5‖θ1* + θ2*‖ (at x ∝ θ1* + θ2*). Returns (n, 15) float32.
    """
    theta = _normalize(jnp.asarray(TEACHER_THETA, jnp.float32))
    f_min = -5.0 * float(jnp.linalg.norm(theta[0] + theta[1]))

    @jax.jit
    def propose(key):
        kx, ku = jax.random.split(key)
        x = _normalize(jax.random.normal(kx, (batch, TEACHER_DIM)))
        f = -5.0 * jnp.sum(jax.nn.relu(x @ theta.T), axis=-1)
        return x, jax.random.uniform(ku, (batch,)) < jnp.exp(-(f - f_min))

    accepted, count = [], 0
    while count < n:
        key, sub = jax.random.split(key)
        x, ok = propose(sub)
        x = np.asarray(x)[np.asarray(ok)]
        accepted.append(x)
        count += len(x)
    return jnp.asarray(np.concatenate(accepted)[:n])


class State(NamedTuple):
    theta: jax.Array       # (m, d) neurons on the sphere
    w: jax.Array           # (m,) nonnegative weights
    particles: jax.Array   # (N, d) on the sphere
    step: jax.Array        # int32
    key: jax.Array


def signs(m: int = NUM_NEURONS) -> jax.Array:
    """c: first half +1, second half −1."""
    return jnp.where(jnp.arange(m) < m // 2, 1.0, -1.0)


def init(key, data, num_particles: int = NUM_PARTICLES, m: int = NUM_NEURONS) -> State:
    """Uniform neurons, w = 1, walkers = copies of the data set (two copies when N = 2n)."""
    k_theta, key = jax.random.split(key)
    theta = _normalize(jax.random.normal(k_theta, (m, data.shape[1])))
    particles = data[jnp.arange(num_particles // 2) % data.shape[0]]
    particles = jnp.concatenate([particles, particles])
    return State(theta, jnp.ones((m,)), particles, jnp.zeros((), jnp.int32), key)


def langevin_drift(theta, w, x) -> jax.Array:
    """∇f at each particle: (N, d), f(x) = (1/m) Σ_i c_i w_i relu(⟨θ_i, x⟩)."""
    m = theta.shape[0]
    return ((x @ theta.T > 0) * (signs(m) * w / m)) @ theta


def wfr_step(theta, w, data, x) -> tuple[jax.Array, jax.Array]:
    """The WFR update of (θ, w) against data (n, d) and particles x (N, d)."""
    c = signs(theta.shape[0])
    pre_data, pre_x = data @ theta.T, x @ theta.T
    velocity = c[:, None] * ((pre_data > 0).T.astype(x.dtype) @ data / data.shape[0]
                             - (pre_x > 0).T.astype(x.dtype) @ x / x.shape[0])
    velocity = velocity - jnp.sum(velocity * theta, -1, keepdims=True) * theta
    new_theta = _normalize(theta - FEATURE_STEP * velocity)
    w = w * jnp.exp(-WEIGHT_STEP * c * (jax.nn.relu(pre_data).mean(0) - jax.nn.relu(pre_x).mean(0)))
    return new_theta, jnp.where(w.mean() > WEIGHT_CAP, w * WEIGHT_CAP / w.mean(), w)


def iteration(state: State, data) -> State:
    """One restart + projected-Langevin + WFR iteration (module docstring)."""
    theta, w, x, step, key = state
    half = x.shape[0] // 2
    k_mask, k_row, k_noise = jax.random.split(jax.random.fold_in(key, step), 3)

    restart = jax.random.uniform(k_mask, (half,)) < RESTART_PROB
    rows = data[jax.random.randint(k_row, (half,), 0, data.shape[0])]
    x = jnp.where(jnp.concatenate([restart, restart])[:, None],
                  jnp.concatenate([rows, rows]), x)

    xi = jax.random.normal(k_noise, (half, x.shape[1]))
    x = _normalize(x - PARTICLE_STEP * langevin_drift(theta, w, x)
                   + jnp.sqrt(2.0 * PARTICLE_STEP) * jnp.concatenate([xi, -xi]))

    theta, w = wfr_step(theta, w, data, x)
    return State(theta, w, x, step + 1, key)


def make_run(num_iterations: int):
    """run(state, data) -> state after `num_iterations` iterations, one jitted lax.scan."""

    def run(state, data):
        state, _ = jax.lax.scan(lambda s, _: (iteration(s, data), None), state, None,
                                length=num_iterations)
        return state

    return jax.jit(run, donate_argnums=0)
