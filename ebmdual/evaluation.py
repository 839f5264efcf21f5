"""Metrics of a model p_θ ∝ exp(−E_θ) against data or a known target p* ∝ exp(−E*).

Energies are `energy_fn(params, x) -> scalar` with x one sample of shape (d,);
targets enter the same way, as `(target_energy_fn, target_params)`, e.g.
`(teacher_energy, teacher)` from `ebmdual.data`. Densities are relative to the
uniform probability measure σ on S^{d−1} (so the uniform law has Z = 1 and NLL
0; add log|S^{d−1}| for the surface-area measure) or to Lebesgue measure on R^d.

Quadrature (deterministic)
--------------------------
A `Quadrature` is nodes x_j (n, d) and weights w_j (n,) with Σ_j w_j g(x_j) ≈ ∫ g.
The model's normalised masses on the nodes are

    q_j = w_j exp(−E_θ(x_j)) / Z_θ,    log Z_θ = logsumexp_j(log w_j − E_θ(x_j)).

* `sphere_grid_s2(num)`: midpoint (ϑ, φ) grid on S², w_j ∝ sin ϑ_j Δϑ Δφ / 4π,
  rescaled to sum to exactly 1 (the uniform probability measure).
* `box_grid_2d(box, num)`: cell centres of a num × num grid on [lo, hi]²,
  w_j = cell area.
* `log_partition_s2`, `nll_s2`, `kl_quadrature_s2` (KL(p*‖p_θ) = Σ_j q*_j log(q*_j/q_j),
  the weights cancelling in the ratio) on S²; `grid_density_2d`, `nll_2d`,
  `mode_mass_2d` in R² (docs/evaluation.md: normalise on a grid and check the mass at
  the box edge is negligible).

Monte Carlo (return `Estimate(value, stderr)`; stderr by the delta method)
-------------------------------------------------------------------------
With Δ = E_θ − E* and x_i ~ p*, i = 1..n:

* `kl_importance_sampling`: KL(p*‖p_θ) = E_{p*}[Δ] + log E_{p*}[exp(−Δ)],
  since Z_θ/Z* = E_{p*}[exp(−Δ)]. Linearising log around the sample mean b̂ of
  exp(−Δ), the estimator ≈ mean_i(Δ_i + exp(−Δ_i)/b̂) + const, whose standard
  error is std_i(Δ_i + exp(−Δ_i)/b̂)/√n.
* `kl_uniform_partition`: KL(p*‖p_θ) = E_{p*}[Δ] + log Z_θ − log Z* on S^{d−1}, with
  both log-partitions from the SAME M uniform points u_j ~ σ (common random numbers):
  log Z_θ − log Z* ≈ log mean_j exp(−E_θ(u_j)) − log mean_j exp(−E*(u_j)) = log Ẑ_θ − log Ẑ*.
  Linearising both logs, the estimator ≈ mean_i Δ_i + mean_j (a_j − b_j) + const with
  a_j = exp(−E_θ(u_j))/Ẑ_θ, b_j = exp(−E*(u_j))/Ẑ*; the two groups are independent, so
  SE² = var_i(Δ_i)/n + var_j(a_j − b_j)/M (the difference a_j − b_j carries the
  correlation of the two log-means). Unlike `kl_importance_sampling` it never weights
  by exp(−Δ) under p*, heavy-tailed when p_θ has mass where p* has little (students
  far from the target: its SE is then the smaller one); it needs exp(−E) not too
  peaked under σ (`log_partition_uniform_mc`). For students near the target the
  importance-sampling SE is smaller (its linear term Δ_i + exp(−Δ_i)/b̂ nearly
  cancels), ~5–10x at n = 10⁴ for d = 15 to 100 with the teachers of ebmdual.data.
* `log_partition_uniform_mc`: log Z_θ = log E_{x~σ}[exp(−E_θ(x))] on S^{d−1}.
* `log_partition_importance`: log Z_θ = log Z* + log E_{p*}[exp(−Δ)], for
  high d where uniform proposals miss the mass of p_θ but samples of p* do not.
* `negative_log_likelihood`: NLL = mean_i E_θ(x_test,i) + log Z_θ.
* `fisher_divergence` (R^d) and `fisher_divergence_sphere`:
  E_{p*}‖∇E_θ − ∇E*‖², on the sphere with the tangential gradients
  ∇_S E = (I − x xᵀ)∇E.
* `mode_weights_from_samples`: fraction of samples assigned to each mode.

Annealed importance sampling (any dimension, samples of any shape)
-----------------------------------------------------------------
* `ais_log_partition`: log Z_θ = log ∫ exp(−E_θ) dx along the geometric path
  π_β ∝ base^{1−β} exp(−E_θ)^β (base N(0, s²I) on R^D, or uniform on a box [low, high]^D
  with the chains moving in logit coordinates), MALA transitions (BlackJAX) with a step
  tuned per temperature by a separate run, R independent repeats of M chains:
  log Ẑ_r = logsumexp_i(log w_ri) − log M, value mean_r log Ẑ_r, stderr
  std_r(log Ẑ_r)/√R. E[Ẑ] = Z, so log Ẑ is biased low (Jensen) and an NLL built on it
  biased low; `ais_schedule` (sigmoid, geometric, linear β schedules);
  `ais_negative_log_likelihood` = mean E_θ(test) + log Ẑ_θ.

Fréchet distance (host, float64)
--------------------------------
* `frechet_distance(features_a, features_b)`: ‖μ_a − μ_b‖² +
  tr(Σ_a + Σ_b − 2(Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}) of Gaussians fitted to (n, k) features,
  by symmetric eigendecompositions. The features come from a classifier trained in the
  project (`ebmdual.classifier`): not comparable to Inception-based FID.

Evaluation at many points is chunked: `batched_energies` and the score differences of
the Fisher divergences vmap over the points directly when n ≤ chunk_size (default
`CHUNK_SIZE`), and otherwise run `jax.lax.map` over chunks of chunk_size points
(dynamic slices of x, not a copy), vmapped within a chunk, so intermediates such as the (n, m)
pre-activations or per-point gradients are held one chunk at a time; the uniform
points of `kl_uniform_partition` are drawn a chunk at a time as well
(benchmarks/evaluation_speed.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc.mala import MALAState

from ebmdual.compiler import jit
from ebmdual.data.synthetic import sample_sphere

EnergyFn = Callable[[Any, jax.Array], jax.Array]

CHUNK_SIZE = 65536  # points per vmapped chunk of the evaluations (keyword chunk_size)


class Estimate(NamedTuple):
    """A Monte Carlo estimate and its standard error (scalars)."""

    value: jax.Array
    stderr: jax.Array


class Quadrature(NamedTuple):
    """Nodes (n, d) and weights (n,): Σ_j weights_j g(points_j) ≈ ∫ g."""

    points: jax.Array
    weights: jax.Array


class GridDensity(NamedTuple):
    """p_θ normalised on a 2-D grid. xs (num,), ys (num,), density (num, num) with
    density[i, j] = p_θ(xs[j], ys[i]) (the layout of contourf(xs, ys, density)),
    log_partition: log Z_θ over the box."""

    xs: jax.Array
    ys: jax.Array
    density: jax.Array
    log_partition: jax.Array


class GridNLL(NamedTuple):
    """NLL with Z_θ from a 2-D grid: value, stderr (of the test mean), and
    edge_mass: the model's mass in the cells near the box edge (should be ≈ 0)."""

    value: jax.Array
    stderr: jax.Array
    edge_mass: jax.Array


def _map_points(fn: Callable, x: jax.Array, chunk_size: int) -> jax.Array:
    """[fn(x_i)]_i over the leading axis of x (fn returns an array): one vmap when
    n ≤ chunk_size, otherwise `jax.lax.map` over the chunk indices, each chunk a vmap of
    fn over `dynamic_slice` of chunk_size rows of x, then one vmap over the remaining
    n mod chunk_size rows. Slicing inside the loop does not copy x, which
    `lax.map(fn, x, batch_size=chunk_size)` does (it reshapes x[:n − n mod chunk_size]):
    a copy of the input and ~2x the time at 10^6 points (benchmarks/evaluation_speed.py)."""
    batched = jax.vmap(fn)
    if x.shape[0] <= chunk_size:
        return batched(x)
    num_chunks, remainder = divmod(x.shape[0], chunk_size)
    chunks = jax.lax.map(
        lambda i: batched(jax.lax.dynamic_slice_in_dim(x, i * chunk_size, chunk_size)),
        jnp.arange(num_chunks))
    values = chunks.reshape(num_chunks * chunk_size, *chunks.shape[2:])
    if remainder:
        values = jnp.concatenate([values, batched(x[num_chunks * chunk_size:])])
    return values


@functools.partial(jit, static_argnames=("energy_fn", "chunk_size"))
def batched_energies(energy_fn: EnergyFn, params, x: jax.Array, *,
                     chunk_size: int = CHUNK_SIZE) -> jax.Array:
    """E(x_i) for each row, jitted, chunk_size points at a time. x (n, d) -> (n,)."""
    return _map_points(functools.partial(energy_fn, params), x, chunk_size)


def _mean_estimate(values: jax.Array) -> Estimate:
    n = values.shape[0]
    return Estimate(jnp.mean(values), jnp.std(values, ddof=1) / jnp.sqrt(n))


def _log_mean_exp(log_terms: jax.Array) -> tuple[jax.Array, jax.Array]:
    """value = log mean_i exp(log_terms_i) and the normalised terms exp(log_terms_i − value),
    which have mean 1: the derivative of value is their mean, the delta method's linear term."""
    value = jax.nn.logsumexp(log_terms) - jnp.log(log_terms.shape[0])
    return value, jnp.exp(log_terms - value)


def _log_mean_exp_estimate(log_terms: jax.Array) -> Estimate:
    """log mean_i exp(log_terms_i); stderr = std(exp(log_terms − value))/√n (delta method)."""
    value, normalised = _log_mean_exp(log_terms)
    return Estimate(value, _mean_estimate(normalised).stderr)


# ----------------------------------------------------------------------------
# Quadrature
# ----------------------------------------------------------------------------

@functools.partial(jit, static_argnames="num")
def sphere_grid_s2(num: int = 100) -> Quadrature:
    """Midpoint grid of num × num (ϑ, φ) nodes on S² for the uniform probability measure.

    ϑ_i = (i + ½)π/num, φ_k = 2π k/num; weights sin ϑ_i Δϑ Δφ / 4π, rescaled to
    sum to 1 (they sum to 1 + O(num⁻²) before). points (num², 3), weights (num²,).
    """
    polar = (jnp.arange(num) + 0.5) * jnp.pi / num
    azimuth = jnp.arange(num) * 2 * jnp.pi / num
    polar, azimuth = jnp.meshgrid(polar, azimuth, indexing="ij")
    points = jnp.stack([jnp.sin(polar) * jnp.cos(azimuth), jnp.sin(polar) * jnp.sin(azimuth),
                        jnp.cos(polar)], axis=-1).reshape(-1, 3)
    weights = jnp.sin(polar).reshape(-1)
    return Quadrature(points, weights / jnp.sum(weights))


def _box_axis(box, num: int) -> jax.Array:
    low, high = box
    return low + (jnp.arange(num) + 0.5) * (high - low) / num


def box_grid_2d(box=(-4.0, 4.0), num: int = 200) -> Quadrature:
    """Cell centres of a num × num grid on [low, high]², row-major in (y, x):
    points[i·num + j] = (xs[j], ys[i]). points (num², 2), weights = cell area."""
    return _box_grid_2d(tuple(float(b) for b in box), num)


@functools.partial(jit, static_argnames=("box", "num"))
def _box_grid_2d(box, num):
    axis = _box_axis(box, num)
    x, y = jnp.meshgrid(axis, axis, indexing="xy")
    points = jnp.stack([x.reshape(-1), y.reshape(-1)], axis=-1)
    cell_area = ((box[1] - box[0]) / num) ** 2
    return Quadrature(points, jnp.full((num * num,), cell_area))


@functools.partial(jit, static_argnames="energy_fn")
def quadrature_log_masses(energy_fn: EnergyFn, params, quadrature: Quadrature):
    """Normalised log masses log q_j = log w_j − E(x_j) − log Z, and log Z.

    Returns ((n,), scalar).
    """
    logits = jnp.log(quadrature.weights) - batched_energies(energy_fn, params, quadrature.points)
    log_partition = jax.nn.logsumexp(logits)
    return logits - log_partition, log_partition


def _kl_between_masses(target_log_masses: jax.Array, model_log_masses: jax.Array) -> jax.Array:
    target_masses = jnp.exp(target_log_masses)
    terms = target_masses * (target_log_masses - model_log_masses)
    return jnp.sum(jnp.where(target_masses > 0, terms, 0.0))


def log_partition_s2(energy_fn: EnergyFn, params, num: int = 100) -> jax.Array:
    """log Z_θ = log ∫_{S²} exp(−E_θ) dσ (σ uniform probability measure), by quadrature."""
    return quadrature_log_masses(energy_fn, params, sphere_grid_s2(num))[1]


def kl_quadrature_s2(energy_fn: EnergyFn, params, target_energy_fn: EnergyFn, target_params,
                     num: int = 100) -> jax.Array:
    """KL(p*‖p_θ) on S² by quadrature on the num × num (ϑ, φ) grid. Scalar."""
    grid = sphere_grid_s2(num)
    target_log_masses, _ = quadrature_log_masses(target_energy_fn, target_params, grid)
    model_log_masses, _ = quadrature_log_masses(energy_fn, params, grid)
    return _kl_between_masses(target_log_masses, model_log_masses)


def negative_log_likelihood(energy_fn: EnergyFn, params, test_data: jax.Array,
                            log_partition, log_partition_stderr=0.0) -> Estimate:
    """NLL = mean_i E_θ(x_i) + log Z_θ; stderr combines the test mean's and log Z's.

    test_data (n, d). Pass `log_partition_stderr` for a Monte Carlo log Z.
    """
    mean_energy = _mean_estimate(batched_energies(energy_fn, params, test_data))
    return Estimate(mean_energy.value + log_partition,
                    jnp.sqrt(mean_energy.stderr**2 + jnp.asarray(log_partition_stderr) ** 2))


def nll_s2(energy_fn: EnergyFn, params, test_data: jax.Array, num: int = 100) -> Estimate:
    """Test NLL on S² (w.r.t. the uniform probability measure), log Z by quadrature."""
    return negative_log_likelihood(energy_fn, params, test_data,
                                   log_partition_s2(energy_fn, params, num))


# ----------------------------------------------------------------------------
# Monte Carlo
# ----------------------------------------------------------------------------

@functools.partial(jit, static_argnames=("energy_fn", "target_energy_fn", "chunk_size"))
def energy_differences(energy_fn: EnergyFn, params, target_energy_fn: EnergyFn, target_params,
                       samples: jax.Array, *, chunk_size: int = CHUNK_SIZE) -> jax.Array:
    """Δ_i = E_θ(x_i) − E*(x_i). samples (n, d) -> (n,)."""
    return (batched_energies(energy_fn, params, samples, chunk_size=chunk_size)
            - batched_energies(target_energy_fn, target_params, samples, chunk_size=chunk_size))


def kl_importance_sampling(energy_fn: EnergyFn, params, target_energy_fn: EnergyFn,
                           target_params, target_samples: jax.Array, *,
                           chunk_size: int = CHUNK_SIZE) -> Estimate:
    """KL(p*‖p_θ) = E_{p*}[Δ] + log E_{p*}[exp(−Δ)] from samples x_i ~ p*. (n, d) -> Estimate."""
    diffs = energy_differences(energy_fn, params, target_energy_fn, target_params, target_samples,
                               chunk_size=chunk_size)
    log_ratio, ratios = _log_mean_exp(-diffs)  # log Z_θ/Z*, exp(−Δ_i)/b̂
    # Delta method: d log b̂ = d b̂ / b̂, so the estimator is linear in Δ_i + exp(−Δ_i)/b̂.
    return Estimate(jnp.mean(diffs) + log_ratio, _mean_estimate(diffs + ratios).stderr)


@functools.partial(jit, static_argnames=("energy_fns", "dim", "num", "chunk_size"))
def _uniform_energies(energy_fns: tuple, params: tuple, key: jax.Array, dim: int, num: int,
                      chunk_size: int) -> tuple:
    """The energies of each (energy_fns[k], params[k]) at the same num points uniform on
    S^{dim−1}, one (num,) array each. The points are drawn in blocks of
    b = min(num, chunk_size), block i from fold_in(key, i) (the last block's surplus
    dropped), and each block is evaluated as it is drawn: one block of points is held
    at a time."""
    block = min(num, chunk_size)

    def block_energies(i):
        points = sample_sphere(jax.random.fold_in(key, i), block, dim)
        return tuple(jax.vmap(functools.partial(fn, p))(points)
                     for fn, p in zip(energy_fns, params))

    blocks = jax.lax.map(block_energies, jnp.arange(-(-num // block)))
    return tuple(energies.reshape(-1)[:num] for energies in blocks)


def kl_uniform_partition(energy_fn: EnergyFn, params, target_energy_fn: EnergyFn,
                         target_params, target_samples: jax.Array, key: jax.Array,
                         num_uniform: int, *, chunk_size: int = CHUNK_SIZE) -> Estimate:
    """KL(p*‖p_θ) = E_{p*}[Δ] + log Z_θ − log Z* on S^{d−1}, Δ = E_θ − E*, from samples
    x_i ~ p* (n, d) and M = num_uniform points u_j uniform on the sphere drawn from `key`.

    Both log-partitions come from the same points (common random numbers):

        KL ≈ mean_i Δ(x_i) + log mean_j exp(−E_θ(u_j)) − log mean_j exp(−E*(u_j)).

    Standard error (delta method): with Ẑ_θ, Ẑ* the two means and
    a_j = exp(−E_θ(u_j))/Ẑ_θ, b_j = exp(−E*(u_j))/Ẑ*, the estimator is
    ≈ mean_i Δ_i + mean_j (a_j − b_j) + const, whose two groups are independent:
    SE² = var_i(Δ_i)/n + var_j(a_j − b_j)/M. The uniform points are drawn and
    evaluated chunk_size at a time (`_uniform_energies`), so they depend on chunk_size.
    """
    diffs = energy_differences(energy_fn, params, target_energy_fn, target_params, target_samples,
                               chunk_size=chunk_size)
    model_energies, target_energies = _uniform_energies(
        (energy_fn, target_energy_fn), (params, target_params), key, target_samples.shape[-1],
        num_uniform, chunk_size)
    log_partition, model_terms = _log_mean_exp(-model_energies)
    target_log_partition, target_terms = _log_mean_exp(-target_energies)
    mean_diff = _mean_estimate(diffs)
    partition_stderr = _mean_estimate(model_terms - target_terms).stderr
    return Estimate(mean_diff.value + log_partition - target_log_partition,
                    jnp.hypot(mean_diff.stderr, partition_stderr))


def log_partition_uniform_mc(energy_fn: EnergyFn, params, key: jax.Array, dim: int,
                             num_samples: int) -> Estimate:
    """log Z_θ = log E_{x~σ}[exp(−E_θ(x))] on S^{dim−1} with num_samples uniform points.

    Reliable when exp(−E_θ) is not too peaked (e.g. for the teacher, whose
    exp(−f*) is bounded by exp(−min f*)).
    """
    x = sample_sphere(key, num_samples, dim)
    return _log_mean_exp_estimate(-batched_energies(energy_fn, params, x))


def log_partition_importance(energy_fn: EnergyFn, params, target_energy_fn: EnergyFn,
                             target_params, target_samples: jax.Array,
                             target_log_partition: Estimate) -> Estimate:
    """log Z_θ = log Z* + log E_{p*}[exp(−(E_θ − E*))], from samples of p* (n, d).

    The two errors are independent when log Z* comes from other samples
    (e.g. `log_partition_uniform_mc` of the target), so they add in quadrature.
    """
    diffs = energy_differences(energy_fn, params, target_energy_fn, target_params, target_samples)
    log_ratio = _log_mean_exp_estimate(-diffs)
    return Estimate(target_log_partition.value + log_ratio.value,
                    jnp.sqrt(target_log_partition.stderr**2 + log_ratio.stderr**2))


@functools.partial(jit, static_argnames=("energy_fn", "target_energy_fn", "tangential",
                                         "chunk_size"))
def _squared_score_differences(energy_fn, params, target_energy_fn, target_params, samples,
                               tangential, chunk_size):
    """‖∇E_θ(x_i) − ∇E*(x_i)‖², the difference projected on the tangent space of the
    sphere if asked; chunk_size points at a time. (n, d) -> (n,)."""

    def squared_difference(x):
        diff = (jax.grad(energy_fn, argnums=1)(params, x)
                - jax.grad(target_energy_fn, argnums=1)(target_params, x))
        if tangential:  # (I − x xᵀ) v = v − ⟨x, v⟩ x
            diff = diff - jnp.sum(diff * x) * x
        return jnp.sum(diff**2)

    return _map_points(squared_difference, samples, chunk_size)


def fisher_divergence(energy_fn: EnergyFn, params, target_energy_fn: EnergyFn, target_params,
                      target_samples: jax.Array, *, chunk_size: int = CHUNK_SIZE) -> Estimate:
    """E_{p*}‖∇E_θ − ∇E*‖² in R^d from samples x_i ~ p* (n, d)."""
    return _mean_estimate(_squared_score_differences(
        energy_fn, params, target_energy_fn, target_params, target_samples, False, chunk_size))


def fisher_divergence_sphere(energy_fn: EnergyFn, params, target_energy_fn: EnergyFn,
                             target_params, target_samples: jax.Array, *,
                             chunk_size: int = CHUNK_SIZE) -> Estimate:
    """E_{p*}‖∇_S E_θ − ∇_S E*‖² on S^{d−1}, ∇_S = (I − x xᵀ)∇, from x_i ~ p* (n, d)."""
    return _mean_estimate(_squared_score_differences(
        energy_fn, params, target_energy_fn, target_params, target_samples, True, chunk_size))


# ----------------------------------------------------------------------------
# 2-D grids and modes
# ----------------------------------------------------------------------------

def grid_density_2d(energy_fn: EnergyFn, params, box=(-4.0, 4.0), num: int = 200) -> GridDensity:
    """p_θ = exp(−E_θ)/Z_θ normalised over [low, high]² on num × num cells."""
    grid = box_grid_2d(box, num)
    log_masses, log_partition = quadrature_log_masses(energy_fn, params, grid)
    density = jnp.exp(log_masses).reshape(num, num) / grid.weights[0]
    axis = _box_axis(box, num)
    return GridDensity(axis, axis, density, log_partition)


def nll_2d(energy_fn: EnergyFn, params, test_data: jax.Array, box=(-4.0, 4.0), num: int = 200,
           edge_fraction: float = 0.05) -> GridNLL:
    """Test NLL with Z_θ by grid quadrature over the box (exact up to quadrature and
    truncation), and the model's mass within edge_fraction·(high − low) of the box
    edge: if that is not ≈ 0 the box truncates p_θ and the NLL is too low."""
    grid = box_grid_2d(box, num)
    log_masses, log_partition = quadrature_log_masses(energy_fn, params, grid)
    margin = edge_fraction * (box[1] - box[0])
    distance_to_edge = jnp.minimum(grid.points - box[0], box[1] - grid.points).min(axis=-1)
    edge_mass = jnp.sum(jnp.where(distance_to_edge < margin, jnp.exp(log_masses), 0.0))
    nll = negative_log_likelihood(energy_fn, params, test_data, log_partition)
    return GridNLL(nll.value, nll.stderr, edge_mass)


def mode_mass_2d(energy_fn: EnergyFn, params, mixture, box=(-4.0, 4.0),
                 num: int = 200) -> jax.Array:
    """Mass of p_θ (normalised over the box) in each mode's region, the cells where
    `mixture.assign_modes` picks that mode. Returns (K,), summing to 1."""
    grid = box_grid_2d(box, num)
    log_masses, _ = quadrature_log_masses(energy_fn, params, grid)
    modes = mixture.assign_modes(grid.points)
    return jax.ops.segment_sum(jnp.exp(log_masses), modes, num_segments=mixture.weights.shape[0])


def mode_weights_from_samples(samples: jax.Array, mixture, weights: jax.Array | None = None
                               ) -> jax.Array:
    """Fraction of samples (n, d) assigned to each of the K modes by `mixture.assign_modes`,
    Σ_i w_i 1[mode(x_i) = k] with normalised sample weights w (n,) (None: w_i = 1/n).
    Returns (K,)."""
    one_hot = jax.nn.one_hot(mixture.assign_modes(samples), mixture.weights.shape[0])
    if weights is None:
        return jnp.mean(one_hot, axis=0)
    return jnp.asarray(weights, one_hot.dtype) @ one_hot


# ----------------------------------------------------------------------------
# Annealed importance sampling
# ----------------------------------------------------------------------------

class AISResult(NamedTuple):
    """log Z_θ by annealed importance sampling, R independent repeats of M chains, K steps.

    log_partition: scalar, mean_r log Ẑ_r with log Ẑ_r = logsumexp_i(log w_ri) − log M.
    stderr: scalar, std_r(log Ẑ_r, ddof=1)/√R, the spread of the independent repeats.
    repeat_log_partitions: (R,) the log Ẑ_r.
    pooled_log_partition: scalar, logsumexp over all R·M weights − log(R·M): the same
        unbiased Ẑ with R times the chains, so its log is less biased low; it exceeds
        log_partition by Jensen, and a gap large beside stderr flags weights too uneven
        for the estimate to be trusted.
    log_weights: (R, M) the AIS log-weights log w_ri.
    ess_fraction: (R,) effective sample size of each repeat's weights over M,
        (Σ_i w_ri)² / (M Σ_i w_ri²) ∈ [1/M, 1].
    acceptance_rate: (K,) mean MALA acceptance over all chains at each temperature.
    step_sizes: (K,) the MALA step ε used at each temperature.
    schedule: (K+1,) the inverse temperatures β_0 = 0 < … < β_K = 1.
    """

    log_partition: jax.Array
    stderr: jax.Array
    repeat_log_partitions: jax.Array
    pooled_log_partition: jax.Array
    log_weights: jax.Array
    ess_fraction: jax.Array
    acceptance_rate: jax.Array
    step_sizes: jax.Array
    schedule: jax.Array


def ais_schedule(num_temperatures: int, kind: str = "sigmoid", *, sharpness: float = 4.0,
                 min_beta: float = 1e-4) -> jax.Array:
    """Inverse temperatures β_0 = 0 < β_1 < … < β_K = 1, K = num_temperatures. (K+1,).

    * "sigmoid" (Grosse et al., 2016): β̃_k = σ(δ(2k/K − 1)), δ = sharpness, rescaled
      as β_k = (β̃_k − β̃_0)/(β̃_K − β̃_0): dense at both ends, where the log-weight
      increments (β_k − β_{k−1})·(−E − log base) vary most when the base and the model
      differ in scale.
    * "geometric" (Neal, 2001): β_0 = 0, β_k = min_beta^{(K−k)/(K−1)} for k = 1..K: dense
      near 0.
    * "linear": β_k = k/K.
    """
    if num_temperatures < 1:
        raise ValueError(f"num_temperatures={num_temperatures}: expected at least 1")
    steps = jnp.arange(num_temperatures + 1, dtype=jnp.float32)
    if kind == "sigmoid":
        raw = jax.nn.sigmoid(sharpness * (2.0 * steps / num_temperatures - 1.0))
        return (raw - raw[0]) / (raw[-1] - raw[0])
    if kind == "geometric":
        if num_temperatures == 1:
            return jnp.array([0.0, 1.0])
        exponents = (num_temperatures - steps[1:]) / (num_temperatures - 1)
        return jnp.concatenate([jnp.zeros(1), min_beta**exponents])
    if kind == "linear":
        return steps / num_temperatures
    raise ValueError(f"schedule kind {kind!r}: expected 'sigmoid', 'geometric' or 'linear'")


def _base_log_density(z: jax.Array, box, base_std) -> tuple[jax.Array, jax.Array]:
    """log b(z) and ∇ log b(z) for one chain position z (any shape), b the normalised base
    in the coordinates the chains move in: with a box the standard logistic law,
    Σ_i log σ(z_i) + log σ(−z_i) (the law of logit(u) for u uniform on (0, 1)), gradient
    1 − 2σ(z); otherwise N(0, s² I): −‖z‖²/(2s²) − (D/2) log(2π s²), gradient −z/s²."""
    if box is not None:
        value = jnp.sum(jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z))
        return value, 1.0 - 2.0 * jax.nn.sigmoid(z)
    value = -0.5 * jnp.sum(z**2) / base_std**2 - 0.5 * z.size * jnp.log(2 * jnp.pi * base_std**2)
    return value, -z / base_std**2


def _to_data(z: jax.Array, box) -> jax.Array:
    """x(z): low + (high − low)·σ(z) with a box, z itself otherwise."""
    return z if box is None else box[0] + (box[1] - box[0]) * jax.nn.sigmoid(z)


def _log_ratio(energy_fn, params, z, shape, box, base_std) -> jax.Array:
    """u(z) = log f_1 − log f_0 = −E_θ(x) − log base_x(x) at x = x(z) for a flat z (D,),
    reshaped to the sample `shape` for energy_fn: the Jacobian of z ↦ x multiplies both
    f_1 and f_0 and cancels. Box: −E_θ(x) + D log(high − low)."""
    if box is not None:
        return (-energy_fn(params, _to_data(z, box).reshape(shape))
                + z.size * jnp.log(box[1] - box[0]))
    return -energy_fn(params, z.reshape(shape)) - _base_log_density(z, box, base_std)[0]


def _sample_base(key, num: int, example: jax.Array, box, base_std) -> jax.Array:
    """num exact draws (num, D) of the base in chain coordinates, flattened (XLA on CPU
    runs the chains' elementwise arithmetic ~5x slower on (num, 10, 10) than (num, 100))."""
    shape, dtype = (num, example.size), example.dtype
    if box is not None:
        return jax.random.logistic(key, shape, dtype)
    return base_std * jax.random.normal(key, shape, dtype)


def _mala_transitions(key, kernel, states, log_density, log_step_size, num_transitions,
                      adaptation):
    """num_transitions MALA transitions of every chain (states batched on axis 0), step
    ε = exp(log_step_size); with adaptation = (target, rate), log ε ← log ε + rate·(ā −
    target) after each, ā the mean acceptance over chains. Returns (states, log ε, mean
    acceptance over the transitions)."""
    num_chains = states.position.shape[0]

    def transition(carry, transition_key):
        states, log_eps = carry
        keys = jax.random.split(transition_key, num_chains)
        states, info = jax.vmap(lambda k, s: kernel(k, s, log_density, jnp.exp(log_eps)))(
            keys, states)
        acceptance = jnp.mean(info.acceptance_rate)
        if adaptation is not None:
            target, rate = adaptation
            log_eps = log_eps + rate * (acceptance - target)
        return (states, log_eps), acceptance

    (states, log_eps), acceptance = jax.lax.scan(
        transition, (states, log_step_size), jax.random.split(key, num_transitions))
    return states, log_eps, jnp.mean(acceptance)


def _ais_chains(key, energy_fn, params, z0, schedule, log_step_sizes, *, shape, mala_steps,
                box, base_std, adaptation):
    """AIS of the flat chains z0 (M, D) ~ base along π_β(z) ∝ b(z) exp(β u(z)), energy_fn
    taking samples of `shape`.

    Each chain carries u(z) (`_log_ratio`) and ∇u, so that the tempered log-density
    log π_β = log b + β u and its gradient, the state BlackJAX's MALA caches, are rebuilt
    at each new β without evaluating E again (one energy gradient per MALA step, none
    per temperature); they are read back from the kernel's state as
    u = (log π_β − log b)/β (β > 0 after the first step).

    Step k = 1..K: log w += (β_k − β_{k−1}) u(z), then `mala_steps` MALA transitions
    leaving π_{β_k} invariant. adaptation = (target, rate) adapts ε after every
    transition starting from log_step_sizes[0] (tuning runs only: the weights of
    adapted chains are biased); None uses ε_k = exp(log_step_sizes[k−1]).
    Returns (log_w (M,), log ε at the end of each temperature (K,), mean acceptance (K,)).
    """
    kernel = blackjax.mala.build_kernel()
    bases = jax.vmap(lambda z: _base_log_density(z, box, base_std))

    def tempered(beta):
        return lambda z: (_base_log_density(z, box, base_std)[0]
                          + beta * _log_ratio(energy_fn, params, z, shape, box, base_std))

    def temperature(carry, inputs):
        z, u, grad_u, log_w, log_eps = carry
        beta_prev, beta, log_eps_fixed, step_key = inputs
        log_w = log_w + (beta - beta_prev) * u
        if adaptation is None:
            log_eps = log_eps_fixed
        base, grad_base = bases(z)
        states = MALAState(z, base + beta * u, grad_base + beta * grad_u)
        states, log_eps, acceptance = _mala_transitions(
            step_key, kernel, states, tempered(beta), log_eps, mala_steps, adaptation)
        base, grad_base = bases(states.position)
        u = (states.logdensity - base) / beta
        grad_u = (states.logdensity_grad - grad_base) / beta
        return (states.position, u, grad_u, log_w, log_eps), (log_eps, acceptance)

    u0, grad_u0 = jax.vmap(jax.value_and_grad(
        lambda z: _log_ratio(energy_fn, params, z, shape, box, base_std)))(z0)
    inputs = (schedule[:-1], schedule[1:], log_step_sizes,
              jax.random.split(key, schedule.shape[0] - 1))
    carry = (z0, u0, grad_u0, jnp.zeros(z0.shape[0], u0.dtype), log_step_sizes[0])
    (_, _, _, log_w, _), (log_eps, acceptance) = jax.lax.scan(temperature, carry, inputs)
    return log_w, log_eps, acceptance


def ais_log_partition(energy_fn: EnergyFn, params, key: jax.Array, *, example: jax.Array,
                      num_chains: int, num_temperatures: int | None = None,
                      schedule: jax.Array | None = None, num_repeats: int = 8,
                      mala_steps: int = 1, step_size: float = 0.01, box=None,
                      base_std: float = 1.0, tune_step_size: bool = True,
                      target_acceptance: float = 0.6, adaptation_rate: float = 0.1,
                      num_warmup: int = 100, num_tuning_chains: int | None = None) -> AISResult:
    """log Z_θ = log ∫ exp(−E_θ(x)) dx by annealed importance sampling (Neal, 2001).

    `example` is one sample (any shape, e.g. (28, 28, 1) or (d,); D = its size): only its
    shape and dtype are used. The path is geometric,

        π_β(x) ∝ f_β(x) = base(x)^{1−β} exp(−E_θ(x))^β,    β_0 = 0 < β_1 < … < β_K = 1,

    with base normalised, so Z_{β=0} = 1 and Z_{β=1} = Z_θ:
    * box = (low, high): the model is exp(−E_θ) restricted to [low, high]^D (the image
      models live on their data range), base uniform on the box, log base = −D log(high − low);
    * box = None: base = N(0, base_std² I) on R^D.

    Each chain starts at x_0 ~ base; at step k = 1..K it adds to its log-weight

        log w += log f_{β_k}(x) − log f_{β_{k−1}}(x) = (β_k − β_{k−1})·(−E_θ(x) − log base(x)),

    then moves by `mala_steps` MALA transitions leaving π_{β_k} invariant
    (`blackjax.mala.build_kernel()`: z' = z + ε∇log π_β + √(2ε)ξ, Metropolis-corrected).
    E[w] = Z_θ, so Ẑ = mean_i w_i is unbiased; log Ẑ = logsumexp_i(log w_i) − log M.

    Box coordinates. With a box the chains move in z = logit((x − low)/(high − low)) ∈ R^D,
    where the uniform base is the standard logistic law and π_β(z) = π_β(x(z))·|dx/dz|.
    The Jacobian multiplies f_β for every β and cancels in the weights, so the path, the
    weights and Z are those in x; only the MALA moves change, which are unconstrained in
    z. (Rejecting proposals that leave the box instead fails: in D = 100 the adapted
    step falls to ε ≈ 2e-5, the chains barely move, and log Ẑ came out 4 nats low with
    an ESS of 1 % on E = 2Σx_i at K = 500.)

    The schedule is `schedule` ((K+1,) increasing strictly from 0 to 1) if given, else
    `ais_schedule(num_temperatures)` (sigmoid spacing). Cost: one energy gradient per
    chain per MALA step, (R·M + M_tune)·K·mala_steps in all.

    Step size. With `tune_step_size` (default) ε is chosen per temperature by a separate
    tuning run: `num_warmup` MALA transitions on the base (β = 0, no energy evaluated),
    then one AIS run of `num_tuning_chains` (default M) chains in which log ε follows the
    Robbins–Monro rule log ε ← log ε + adaptation_rate·(mean acceptance − target) after
    every transition; ε_k is its value at the end of temperature k. The R·M chains of the
    estimate then run with these ε_k held fixed, so each of their transitions leaves π_β
    invariant exactly (adapting within the estimating chains would make every kernel
    depend on all chains' pasts and bias E[w]); the tuning run's weights are discarded.
    `step_size` is the tuning run's starting ε, or with tune_step_size=False the ε of
    every transition.

    Errors. The R repeats are independent, so stderr = std_r(log Ẑ_r)/√R is a valid
    standard error of log_partition = mean_r log Ẑ_r around E[log Ẑ_r]. But
    E[Ẑ_r] = Z_θ and log is concave, so by Jensen E[log Ẑ_r] ≤ log Z_θ: log Ẑ is biased
    LOW (a stochastic lower bound), by about Var(w/Z_θ)/(2M) when the weights are not too
    uneven, and stderr does not include this bias. Hence an NLL mean E_θ(test) + log Ẑ
    is biased low (optimistic; the test log-likelihood is biased high). Too few
    temperatures or poorly mixing chains make the bias large while the spread over
    repeats can stay small: watch ess_fraction, the gap to pooled_log_partition, and
    whether log Ẑ still rises as K grows.

    Pure and jit-compatible (energy_fn, shapes, counts, box and the adaptation settings
    are static). For a model at temperature T pass x ↦ E_θ(x)/T.
    """
    if num_repeats < 2:
        raise ValueError(f"num_repeats={num_repeats}: at least 2 repeats give a standard error")
    if num_chains < 1 or mala_steps < 1:
        raise ValueError(f"num_chains={num_chains}, mala_steps={mala_steps}: expected ≥ 1")
    if (schedule is None) == (num_temperatures is None):
        raise ValueError("pass exactly one of num_temperatures and schedule")
    dtype = jnp.result_type(example)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"example of dtype {dtype}: expected a floating-point sample")
    if schedule is None:
        schedule = ais_schedule(num_temperatures).astype(dtype)
    else:
        schedule = jnp.asarray(schedule, dtype)
        if not isinstance(schedule, jax.core.Tracer):
            values = np.asarray(schedule)
            if (values.ndim != 1 or values.shape[0] < 2 or values[0] != 0 or values[-1] != 1
                    or np.any(np.diff(values) <= 0)):
                raise ValueError("schedule: expected a 1-D array increasing strictly from 0 to 1")
    if box is not None:
        box = (float(box[0]), float(box[1]))
        if not box[0] < box[1]:
            raise ValueError(f"box={box}: expected low < high")
    return _ais_log_partition(
        energy_fn, params, key, jnp.zeros(jnp.shape(example), dtype), schedule,
        jnp.asarray(step_size, dtype), jnp.asarray(base_std, dtype),
        num_chains=num_chains, num_repeats=num_repeats, mala_steps=mala_steps, box=box,
        adaptation=(float(target_acceptance), float(adaptation_rate)) if tune_step_size else None,
        num_warmup=num_warmup, num_tuning_chains=num_tuning_chains or num_chains)


@functools.partial(jit, static_argnames=(
    "energy_fn", "num_chains", "num_repeats", "mala_steps", "box", "adaptation", "num_warmup",
    "num_tuning_chains"))
def _ais_log_partition(energy_fn, params, key, example, schedule, step_size, base_std, *,
                       num_chains, num_repeats, mala_steps, box, adaptation, num_warmup,
                       num_tuning_chains) -> AISResult:
    num_temperatures = schedule.shape[0] - 1
    warmup_key, warmup_base_key, tuning_key, tuning_base_key, key, base_key = (
        jax.random.split(key, 6))
    chains = functools.partial(_ais_chains, energy_fn=energy_fn, params=params,
                               schedule=schedule, shape=example.shape, mala_steps=mala_steps,
                               box=box, base_std=base_std)
    log_step_sizes = jnp.full(num_temperatures, jnp.log(step_size))
    if adaptation is not None:
        # Warm-up on the base (exact samples, no energy): only ε moves.
        z = _sample_base(warmup_base_key, num_tuning_chains, example, box, base_std)
        base_density = lambda z: _base_log_density(z, box, base_std)[0]  # noqa: E731
        states = jax.vmap(lambda z: blackjax.mala.init(z, base_density))(z)
        _, log_step, _ = _mala_transitions(warmup_key, blackjax.mala.build_kernel(), states,
                                           base_density, jnp.log(step_size), num_warmup,
                                           adaptation)
        z0 = _sample_base(tuning_base_key, num_tuning_chains, example, box, base_std)
        _, log_step_sizes, _ = chains(tuning_key, z0=z0,
                                      log_step_sizes=jnp.full(num_temperatures, log_step),
                                      adaptation=adaptation)
    z0 = _sample_base(base_key, num_repeats * num_chains, example, box, base_std)
    log_w, _, acceptance = chains(key, z0=z0, log_step_sizes=log_step_sizes, adaptation=None)
    log_w = log_w.reshape(num_repeats, num_chains)
    repeats = jax.nn.logsumexp(log_w, axis=1) - jnp.log(num_chains)
    ess = jnp.exp(2 * jax.nn.logsumexp(log_w, axis=1) - jax.nn.logsumexp(2 * log_w, axis=1))
    return AISResult(
        log_partition=jnp.mean(repeats),
        stderr=jnp.std(repeats, ddof=1) / jnp.sqrt(num_repeats),
        repeat_log_partitions=repeats,
        pooled_log_partition=jax.nn.logsumexp(log_w) - jnp.log(log_w.size),
        log_weights=log_w,
        ess_fraction=ess / num_chains,
        acceptance_rate=acceptance,
        step_sizes=jnp.exp(log_step_sizes),
        schedule=schedule)


def ais_negative_log_likelihood(energy_fn: EnergyFn, params, test_data: jax.Array,
                                key: jax.Array, **ais_kwargs) -> Estimate:
    """Test NLL = mean_i E_θ(x_i) + log Ẑ_θ, with log Ẑ_θ from `ais_log_partition`.

    test_data (n, ...) samples of the shape `ais_log_partition` anneals over (its
    `example` is test_data[0]); ais_kwargs go to `ais_log_partition` (num_chains and
    num_temperatures or schedule are required). stderr = √(SE(mean E)² + SE(log Ẑ)²),
    the two being independent. Biased LOW by the bias of log Ẑ (see
    `ais_log_partition`), which stderr does not include. With box = (low, high) the NLL
    is w.r.t. Lebesgue measure on the box, and +∞ if a test point lies outside it. Nats
    per example; bits/dim = NLL/(D ln 2) (docs/evaluation.md for 8-bit data).
    For the AIS diagnostics call `ais_log_partition` and then `negative_log_likelihood`.
    """
    result = ais_log_partition(energy_fn, params, key, example=test_data[0], **ais_kwargs)
    nll = negative_log_likelihood(energy_fn, params, test_data, result.log_partition,
                                  result.stderr)
    box = ais_kwargs.get("box")
    if box is None:
        return nll
    inside = jnp.all((test_data >= box[0]) & (test_data <= box[1]))
    return Estimate(jnp.where(inside, nll.value, jnp.inf), nll.stderr)


# ----------------------------------------------------------------------------
# Fréchet distance
# ----------------------------------------------------------------------------

def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """S^{1/2} of a symmetric PSD matrix by its eigendecomposition, eigenvalues below 0
    (rounding) set to 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(features_a, features_b) -> float:
    """Fréchet (2-Wasserstein²) distance between Gaussians fitted to two feature sets.

    features (n_a, k) and (n_b, k), n ≥ 2; μ, Σ are the sample means and covariances
    (ddof = 1). Returns, in float64 on the host,

        ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}),

    both square roots by symmetric eigendecompositions (eigenvalues clipped at 0): the
    inner matrix is symmetric PSD, so no general sqrtm of the non-symmetric Σ_a Σ_b (whose
    square root has the same trace) and no complex parts. Clipped at 0, which rounding
    can cross for identical sets. The estimate is biased upward by O(k/n): compare
    distances computed with equal set sizes.
    """
    features_a = np.asarray(features_a, np.float64)
    features_b = np.asarray(features_b, np.float64)
    if (features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]
            or min(features_a.shape[0], features_b.shape[0]) < 2):
        raise ValueError(f"features of shapes {features_a.shape} and {features_b.shape}: "
                         "expected (n_a, k) and (n_b, k) with n ≥ 2")
    mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(features_b, rowvar=False))
    sqrt_a = _psd_sqrt(cov_a)
    inner = sqrt_a @ cov_b @ sqrt_a
    inner_eigenvalues = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    trace_sqrt = np.sum(np.sqrt(np.clip(inner_eigenvalues, 0.0, None)))
    distance = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                - 2.0 * trace_sqrt)
    return float(max(distance, 0.0))
