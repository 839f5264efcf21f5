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

import jax
import jax.numpy as jnp

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


@functools.partial(jax.jit, static_argnames=("energy_fn", "chunk_size"))
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

@functools.partial(jax.jit, static_argnames="num")
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


@functools.partial(jax.jit, static_argnames=("box", "num"))
def _box_grid_2d(box, num):
    axis = _box_axis(box, num)
    x, y = jnp.meshgrid(axis, axis, indexing="xy")
    points = jnp.stack([x.reshape(-1), y.reshape(-1)], axis=-1)
    cell_area = ((box[1] - box[0]) / num) ** 2
    return Quadrature(points, jnp.full((num * num,), cell_area))


@functools.partial(jax.jit, static_argnames="energy_fn")
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

@functools.partial(jax.jit, static_argnames=("energy_fn", "target_energy_fn", "chunk_size"))
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


@functools.partial(jax.jit, static_argnames=("energy_fns", "dim", "num", "chunk_size"))
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


@functools.partial(jax.jit, static_argnames=("energy_fn", "target_energy_fn", "tangential",
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


def mode_weights_from_samples(samples: jax.Array, mixture) -> jax.Array:
    """Fraction of samples (n, d) assigned to each of the K modes by
    `mixture.assign_modes`. Returns (K,)."""
    modes = mixture.assign_modes(samples)
    return jnp.mean(jax.nn.one_hot(modes, mixture.weights.shape[0]), axis=0)
