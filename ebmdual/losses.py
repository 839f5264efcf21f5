"""Training objectives and discrepancies for energy-based models p_θ(x) ∝ exp(−E_θ(x)).

Pure, jit-able functions of JAX only (no flax, no other ebmdual module), usable
from any JAX project. Every function takes the energy first:

    energy_fn(params, x) -> scalar      x: ONE unbatched sample, shape (d,)

and batches carry a leading sample axis, shape (n, d); the energy is mapped over
them with `jax.vmap(energy_fn, in_axes=(None, 0))`. The model score is
s(x) = ∇ₓ log p(x) = −∇ₓE(x). Python-level options (`energy_fn`, `kernel` given
by name, `num_projections`, `variance_reduction`) are static under `jax.jit`;
`sigma` and `bandwidth` may be traced arrays.

Objectives on R^d (data x_k, k = 1..n)
--------------------------------------
* `maximum_likelihood_loss`:    mean_k E(x_k) − mean_j E(sg(X_j)),  X_j particles
  (or Σ_j w_j E(sg(X_j)) with particle weights w),
  sg = stop_gradient. With X_j ~ p_θ its θ-gradient is the negative log-likelihood
  gradient E_data[∇_θE] − E_{p_θ}[∇_θE].
* `score_matching_loss`:        mean_k ½‖∇E(x_k)‖² − ΔE(x_k)              (Hyvärinen 2005)
  = ½ E‖s − ∇log p_data‖² − const by integration by parts; exact Laplacian.
* `sliced_score_matching_loss`: mean_k mean_v ½(vᵀ∇E)² − vᵀ∇²E v,  v ~ N(0, I)
  (Song et al. 2019), or ½‖∇E‖² − vᵀ∇²E v with `variance_reduction=True`;
  unbiased for `score_matching_loss` because E[vvᵀ] = I.
* `denoising_score_matching_loss`: mean_k ½‖−∇E(x_k + σε_k) + ε_k/σ‖²,  ε_k ~ N(0, I)
  (Vincent 2011), = ½ E_{q_σ}‖s − ∇log q_σ‖² + const with q_σ = p_data ∗ N(0, σ²I).
* `kernel_stein_discrepancy`:   KSD² = 1/(n(n−1)) Σ_{i≠j} u_p(x_i, x_j),
      u_p(x, y) = s(x)ᵀs(y) k(x, y) + s(x)ᵀ∇_y k + s(y)ᵀ∇_x k + tr(∇_x∇_y k)
  (Liu, Lee & Jordan 2016; Chwialkowski, Strathmann & Gretton 2016), from
  `stein_kernel_matrix` [u_p(x_i, x_j)]_{ij}.

Objectives on the unit sphere S^{d−1} ⊂ R^d (energy extended to the ambient space,
x on the sphere, ‖x‖ = 1)
-----------------------------------------------------------------
* `tangential_gradient`:        ∇_S E = (I − xxᵀ)∇E
* `laplace_beltrami`:           Δ_S E = ΔE − xᵀ∇²E x − (d−1)⟨x, ∇E⟩
  (both depend only on the restriction of E to the sphere, not on the extension)
* `sphere_score_matching_loss`: mean_k ½‖∇_S E(x_k)‖² − Δ_S E(x_k); the sphere is a
  compact manifold without boundary, so integration by parts leaves no boundary term.

Second derivatives are forward-over-reverse: the gradient map x ↦ ∇E(x) is
linearised once (`jax.linearize`, which also returns ∇E itself) and
Hessian-vector products H v are pushed through the linear map. The exact
Laplacian needs d of them per sample (vmapped over the basis vectors, O(d²)
memory per sample); for image-sized d use the sliced or denoising objectives.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import jax
import jax.numpy as jnp

__all__ = [
    "maximum_likelihood_loss",
    "score_matching_loss",
    "sliced_score_matching_loss",
    "denoising_score_matching_loss",
    "stein_kernel_matrix",
    "kernel_stein_discrepancy",
    "imq_kernel",
    "rbf_kernel",
    "tangential_gradient",
    "laplace_beltrami",
    "sphere_score_matching_loss",
]

EnergyFn = Callable[[Any, jax.Array], jax.Array]
KernelFn = Callable[[jax.Array, jax.Array], jax.Array]
LinearMap = Callable[[jax.Array], jax.Array]


# ---------------------------------------------------------------------------
# Per-sample derivatives shared by the losses
# ---------------------------------------------------------------------------

def batched_energies(energy_fn: EnergyFn, params: Any, samples: Any) -> jax.Array:
    """[E(params, x_k)]_k for a pytree of samples with a leading axis n. Returns (n,)."""
    return jax.vmap(energy_fn, in_axes=(None, 0))(params, samples)


def _energy_gradient(energy_fn: EnergyFn, params: Any, x: jax.Array) -> jax.Array:
    """∇ₓE(x). x: (d,). Returns (d,)."""
    return jax.grad(energy_fn, argnums=1)(params, x)


def _gradient_and_hvp(energy_fn: EnergyFn, params: Any,
                      x: jax.Array) -> tuple[jax.Array, LinearMap]:
    """(∇E(x), v ↦ ∇²E(x) v): the gradient map linearised once at x.

    The returned linear map costs one forward-mode pass per vector and reuses the
    primal computation, so k Hessian-vector products cost ≈ one gradient + k jvps.
    """
    return jax.linearize(lambda y: _energy_gradient(energy_fn, params, y), x)


def _trace_of_linear_map(linear_map: LinearMap, x: jax.Array) -> jax.Array:
    """tr A = Σ_i e_iᵀ A e_i for a linear map A on R^d (d = x.shape[0]); exact, d products."""
    basis = jnp.eye(x.shape[0], dtype=x.dtype)
    return jnp.trace(jax.vmap(linear_map)(basis))


def _gradient_and_laplacian(energy_fn: EnergyFn, params: Any,
                            x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(∇E(x), ΔE(x) = tr ∇²E(x)). x: (d,). Returns ((d,), scalar)."""
    gradient, hvp = _gradient_and_hvp(energy_fn, params, x)
    return gradient, _trace_of_linear_map(hvp, x)


# ---------------------------------------------------------------------------
# Maximum likelihood
# ---------------------------------------------------------------------------

def maximum_likelihood_loss(energy_fn: EnergyFn, params: Any, data: Any,
                            particles: Any, weights: jax.Array | None = None) -> jax.Array:
    """Contrastive (maximum-likelihood) loss mean_k E(x_k) − Σ_j w_j E(sg(X_j)).

    Args:
      energy_fn: (params, x) -> scalar on one sample.
      params: any pytree.
      data: samples x_k with a leading axis n, e.g. (n, d); any pytree.
      particles: samples X_j with a leading axis N, e.g. (N, d); any pytree (for
        instance (positions, labels) for a class-conditional energy).
      weights: (N,) particle weights summing to 1 (importance-weighted walkers), or
        None for the plain mean w_j = 1/N. Treated as constants (stop_gradient).
    Returns:
      scalar. Particles are wrapped in `stop_gradient`: its θ-gradient is
      mean_k ∇_θE(x_k) − Σ_j w_j ∇_θE(X_j), the NLL gradient when the weighted X_j
      represent p_θ, and its gradient with respect to the particles is zero.
    """
    particles = jax.lax.stop_gradient(particles)
    particle_energies = batched_energies(energy_fn, params, particles)
    if weights is None:
        particle_term = jnp.mean(particle_energies)
    else:
        particle_term = jnp.sum(jax.lax.stop_gradient(weights) * particle_energies)
    return jnp.mean(batched_energies(energy_fn, params, data)) - particle_term


# ---------------------------------------------------------------------------
# Score matching on R^d
# ---------------------------------------------------------------------------

def _score_matching_term(energy_fn: EnergyFn, params: Any, x: jax.Array) -> jax.Array:
    """½‖∇E(x)‖² − ΔE(x). x: (d,). Returns scalar."""
    gradient, laplacian = _gradient_and_laplacian(energy_fn, params, x)
    return 0.5 * jnp.sum(gradient**2) - laplacian


def score_matching_loss(energy_fn: EnergyFn, params: Any, data: jax.Array) -> jax.Array:
    """Hyvärinen (implicit) score matching: mean_k ½‖∇E(x_k)‖² − ΔE(x_k).

    Equals ½ E_data‖∇log p_θ − ∇log p_data‖² minus a θ-independent constant.
    The Laplacian is exact: tr ∇²E from d Hessian-vector products through the
    gradient linearised once (forward-over-reverse), vmapped over the basis
    vectors. The linearisation hands back ∇E too, which the loss needs, so
    nothing is computed twice; this measured faster than `jax.hessian` plus a
    separate gradient, for the loss and for its parameter gradient. Cost ≈ one
    gradient + d jvps per sample, memory O(d²) per sample: for large d use
    `sliced_score_matching_loss` or `denoising_score_matching_loss`.

    Args:
      data: (n, d). Returns: scalar.
    """
    return jnp.mean(jax.vmap(_score_matching_term, in_axes=(None, None, 0))(
        energy_fn, params, data))


def _sliced_score_matching_term(energy_fn: EnergyFn, params: Any, x: jax.Array,
                                projections: jax.Array,
                                variance_reduction: bool) -> jax.Array:
    """mean_v [½(vᵀ∇E)² or ½‖∇E‖²] − vᵀ∇²E v. x: (d,), projections: (M, d). Returns scalar."""
    gradient, hvp = _gradient_and_hvp(energy_fn, params, x)
    curvature = jnp.mean(jax.vmap(lambda v: v @ hvp(v))(projections))
    if variance_reduction:
        squared_score = 0.5 * jnp.sum(gradient**2)
    else:
        squared_score = 0.5 * jnp.mean((projections @ gradient) ** 2)
    return squared_score - curvature


def sliced_score_matching_loss(energy_fn: EnergyFn, params: Any, data: jax.Array,
                               key: jax.Array, num_projections: int = 1,
                               variance_reduction: bool = False) -> jax.Array:
    """Sliced score matching (Song, Garg, Shi & Ermon 2019).

        L = mean_k mean_{m ≤ M} ½(v_kmᵀ∇E(x_k))² − v_kmᵀ∇²E(x_k) v_km,   v_km ~ N(0, I_d)

    iid per sample and projection. `variance_reduction=True` replaces ½(vᵀ∇E)² by
    its expectation over v, ½‖∇E‖² (the "SSM-VR" variant). Both are unbiased for
    `score_matching_loss` since E[vvᵀ] = I, at the cost of M Hessian-vector
    products per sample instead of d.

    Args:
      data: (n, d). key: PRNG key. num_projections: M (static).
      variance_reduction: static bool.
    Returns: scalar.
    """
    n, d = data.shape
    projections = jax.random.normal(key, (n, num_projections, d), dtype=data.dtype)
    terms = jax.vmap(_sliced_score_matching_term, in_axes=(None, None, 0, 0, None))(
        energy_fn, params, data, projections, variance_reduction)
    return jnp.mean(terms)


def denoising_score_matching_loss(energy_fn: EnergyFn, params: Any, data: jax.Array,
                                  key: jax.Array, sigma: float | jax.Array) -> jax.Array:
    """Denoising score matching (Vincent 2011).

        L = mean_k ½‖−∇E(x̃_k) + ε_k/σ‖²,   x̃_k = x_k + σ ε_k,  ε_k ~ N(0, I_d)

    i.e. ½‖s(x̃) − (−ε/σ)‖² with model score s = −∇E and target score
    ∇_x̃ log N(x̃; x, σ²I) = −ε/σ. Its expectation is the Fisher divergence
    ½ E_{q_σ}‖s − ∇log q_σ‖² to the σ-smoothed data q_σ = p_data ∗ N(0, σ²I),
    up to a θ-independent constant: it fits the smoothed data, not p_data itself.
    No weighting by σ² is applied.

    Args:
      data: (n, d). key: PRNG key. sigma: noise scale (may be a traced scalar).
    Returns: scalar.
    """
    noise = jax.random.normal(key, data.shape, dtype=data.dtype)
    noisy = data + sigma * noise
    gradients = jax.vmap(_energy_gradient, in_axes=(None, None, 0))(energy_fn, params, noisy)
    return jnp.mean(0.5 * jnp.sum((noise / sigma - gradients) ** 2, axis=-1))


# ---------------------------------------------------------------------------
# Kernel Stein discrepancy
# ---------------------------------------------------------------------------

def imq_kernel(x: jax.Array, y: jax.Array, bandwidth: float | jax.Array = 1.0) -> jax.Array:
    """Inverse multiquadric k(x, y) = (1 + ‖x − y‖²/h²)^(−1/2). x, y: (d,). Returns scalar."""
    return jax.lax.rsqrt(1.0 + jnp.sum((x - y) ** 2) / bandwidth**2)


def rbf_kernel(x: jax.Array, y: jax.Array, bandwidth: float | jax.Array = 1.0) -> jax.Array:
    """Gaussian k(x, y) = exp(−‖x − y‖²/(2h²)). x, y: (d,). Returns scalar."""
    return jnp.exp(-0.5 * jnp.sum((x - y) ** 2) / bandwidth**2)


_NAMED_KERNELS = {"imq": imq_kernel, "rbf": rbf_kernel}


def _resolve_kernel(kernel: Union[str, KernelFn], bandwidth: float | jax.Array) -> KernelFn:
    """A callable k(x, y): a named kernel at `bandwidth`, or `kernel` itself if callable."""
    if callable(kernel):
        return kernel
    if kernel not in _NAMED_KERNELS:
        raise ValueError(f"kernel={kernel!r}: expected one of {sorted(_NAMED_KERNELS)} "
                         "or a callable kernel(x, y) -> scalar")
    named = _NAMED_KERNELS[kernel]
    return lambda x, y: named(x, y, bandwidth)


def _stein_kernel(kernel_fn: KernelFn, x: jax.Array, y: jax.Array, score_x: jax.Array,
                  score_y: jax.Array) -> jax.Array:
    """u_p(x, y) = s(x)ᵀs(y) k + s(x)ᵀ∇_y k + s(y)ᵀ∇_x k + tr(∇_x∇_y k), derivatives by autodiff.

    x, y, score_x, score_y: (d,). Returns scalar.
    """
    k, (grad_x_k, grad_y_k) = jax.value_and_grad(kernel_fn, argnums=(0, 1))(x, y)
    # tr(∇_x∇_y k): Jacobian in x of the map x ↦ ∇_y k(x, y), traced exactly.
    _, cross_derivative = jax.linearize(lambda x_: jax.grad(kernel_fn, argnums=1)(x_, y), x)
    trace_term = _trace_of_linear_map(cross_derivative, x)
    return (score_x @ score_y) * k + score_x @ grad_y_k + score_y @ grad_x_k + trace_term


def stein_kernel_matrix(energy_fn: EnergyFn, params: Any, data: jax.Array,
                        kernel: Union[str, KernelFn] = "imq",
                        bandwidth: float | jax.Array = 1.0) -> jax.Array:
    """U_ij = u_p(x_i, x_j), the Stein kernel of p ∝ exp(−E) with score s = −∇E.

    Rows are computed one at a time (`lax.map`), columns vectorised, so memory is
    O(n²) for the matrix plus O(n d²) workspace; time O(n² d) kernel derivatives.

    Args:
      data: (n, d). kernel: "imq", "rbf" (both at `bandwidth` h) or a callable
        kernel(x, y) -> scalar on (d,) samples (then `bandwidth` is ignored).
    Returns: (n, n).
    """
    kernel_fn = _resolve_kernel(kernel, bandwidth)
    scores = -jax.vmap(_energy_gradient, in_axes=(None, None, 0))(energy_fn, params, data)

    def row(point_and_score):
        x, score_x = point_and_score
        return jax.vmap(_stein_kernel, in_axes=(None, None, 0, None, 0))(
            kernel_fn, x, data, score_x, scores)

    return jax.lax.map(row, (data, scores))


def kernel_stein_discrepancy(energy_fn: EnergyFn, params: Any, data: jax.Array,
                             kernel: Union[str, KernelFn] = "imq",
                             bandwidth: float | jax.Array = 1.0) -> jax.Array:
    """Squared KSD, the unbiased U-statistic 1/(n(n−1)) Σ_{i≠j} u_p(x_i, x_j).

    u_p is the Stein kernel of `stein_kernel_matrix`. Its expectation is zero iff
    the data follow p (for a characteristic kernel such as IMQ or RBF and mild
    tail conditions); being a U-statistic it can be slightly negative.
    Memory is O(n²) (the full n × n Stein kernel matrix): subsample large n.

    Args:
      data: (n, d), n ≥ 2. kernel: "imq" (k = (1 + ‖x−y‖²/h²)^(−1/2)), "rbf"
        (k = exp(−‖x−y‖²/(2h²))) or a callable kernel(x, y) -> scalar.
      bandwidth: h for the named kernels.
    Returns: scalar.
    """
    stein_matrix = stein_kernel_matrix(energy_fn, params, data, kernel, bandwidth)
    n = data.shape[0]
    off_diagonal_sum = jnp.sum(stein_matrix) - jnp.trace(stein_matrix)
    return off_diagonal_sum / (n * (n - 1))


# ---------------------------------------------------------------------------
# The unit sphere S^{d−1}
# ---------------------------------------------------------------------------

def _project_to_tangent_space(x: jax.Array, v: jax.Array) -> jax.Array:
    """(I − xxᵀ) v: the component of v orthogonal to the unit vector x. x, v: (d,)."""
    return v - (x @ v) * x


def _sphere_gradient_and_laplace_beltrami(energy_fn: EnergyFn, params: Any,
                                          x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(∇_S E(x), Δ_S E(x)) at x on the unit sphere. x: (d,). Returns ((d,), scalar)."""
    gradient, hvp = _gradient_and_hvp(energy_fn, params, x)
    laplacian = _trace_of_linear_map(hvp, x)
    radial_derivative = x @ gradient
    laplace_beltrami_value = laplacian - x @ hvp(x) - (x.shape[0] - 1) * radial_derivative
    return _project_to_tangent_space(x, gradient), laplace_beltrami_value


def tangential_gradient(energy_fn: EnergyFn, params: Any, x: jax.Array) -> jax.Array:
    """Riemannian gradient on S^{d−1}: ∇_S E(x) = (I − xxᵀ)∇E(x).

    Args: x: (d,) with ‖x‖ = 1. Returns: (d,), orthogonal to x.
    """
    return _project_to_tangent_space(x, _energy_gradient(energy_fn, params, x))


def laplace_beltrami(energy_fn: EnergyFn, params: Any, x: jax.Array) -> jax.Array:
    """Laplace–Beltrami operator on S^{d−1}: Δ_S E = ΔE − xᵀ∇²E x − (d−1)⟨x, ∇E⟩.

    Valid at ‖x‖ = 1 for any smooth extension of E to R^d (the result does not
    depend on the extension). Spherical harmonics of degree ℓ are eigenfunctions
    with eigenvalue −ℓ(ℓ + d − 2).

    Args: x: (d,) with ‖x‖ = 1. Returns: scalar.
    """
    return _sphere_gradient_and_laplace_beltrami(energy_fn, params, x)[1]


def _sphere_score_matching_term(energy_fn: EnergyFn, params: Any, x: jax.Array) -> jax.Array:
    """½‖∇_S E(x)‖² − Δ_S E(x). x: (d,) on the sphere. Returns scalar."""
    tangential, laplace_beltrami_value = _sphere_gradient_and_laplace_beltrami(
        energy_fn, params, x)
    return 0.5 * jnp.sum(tangential**2) - laplace_beltrami_value


def sphere_score_matching_loss(energy_fn: EnergyFn, params: Any, data: jax.Array) -> jax.Array:
    """Score matching on S^{d−1}: mean_k ½‖∇_S E(x_k)‖² − Δ_S E(x_k).

    Equals ½ E_data‖∇_S log p_θ − ∇_S log p_data‖² minus a θ-independent constant
    (integration by parts on a compact manifold without boundary).

    Args: data: (n, d), rows on the unit sphere. Returns: scalar.
    """
    return jnp.mean(jax.vmap(_sphere_score_matching_term, in_axes=(None, None, 0))(
        energy_fn, params, data))
