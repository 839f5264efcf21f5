"""Training objectives in the form the train step takes: `objective(params, batch, particles, key)`.

Each constructor closes an `ebmdual.losses` function over the energy and its
options and returns

    objective(params, batch, particles, key) -> scalar loss

whose θ-gradient the optimizer follows. `batch` is the preprocessed batch (leading
axis B), `particles` the sampler's particles (leading axis N) or None when the
trainer has no sampler, `key` a fresh key per step. Any function of this form is an
objective; one that also takes `weights=` receives the sampler's per-particle
weights when the sampler hands any (flow-MCMC, Jarzynski walkers).

* `maximum_likelihood`: mean_k E(x_k) − Σ_j w_j E(sg(X_j)) (needs a sampler).
* `score_matching` (R^d or the sphere), `sliced_score_matching`,
  `denoising_score_matching`, `kernel_stein_discrepancy`: use no particles, so
  build the trainer with sampler=None; the restart and the sampler are skipped.
"""

from __future__ import annotations

from typing import Callable

from ebmdual import losses

__all__ = ["maximum_likelihood", "score_matching", "sliced_score_matching",
           "denoising_score_matching", "kernel_stein_discrepancy"]


def maximum_likelihood(energy_fn) -> Callable:
    """mean_k E(x_k) − Σ_j w_j E(sg(X_j)), w_j = 1/N unless the sampler hands weights."""

    def objective(params, batch, particles, key, weights=None):
        del key
        if particles is None:
            raise ValueError("the maximum-likelihood objective needs particles: build the "
                             "trainer with a sampler")
        return losses.maximum_likelihood_loss(energy_fn, params, batch, particles, weights)

    return objective


def score_matching(energy_fn, manifold: str = "euclidean") -> Callable:
    """Exact score matching mean_k ½‖∇E‖² − ΔE on R^d, or its Laplace–Beltrami form on the
    sphere (manifold='sphere')."""
    if manifold not in ("euclidean", "sphere"):
        raise ValueError(f"manifold={manifold!r}: expected 'euclidean' or 'sphere'")
    loss = (losses.sphere_score_matching_loss if manifold == "sphere"
            else losses.score_matching_loss)

    def objective(params, batch, particles, key):
        del particles, key
        return loss(energy_fn, params, batch)

    return objective


def sliced_score_matching(energy_fn, num_projections: int = 1) -> Callable:
    """Sliced score matching with `num_projections` Gaussian directions per sample."""

    def objective(params, batch, particles, key):
        del particles
        return losses.sliced_score_matching_loss(energy_fn, params, batch, key, num_projections)

    return objective


def denoising_score_matching(energy_fn, sigma: float) -> Callable:
    """Denoising score matching at noise level σ."""

    def objective(params, batch, particles, key):
        del particles
        return losses.denoising_score_matching_loss(energy_fn, params, batch, key, sigma)

    return objective


def kernel_stein_discrepancy(energy_fn, kernel="imq", bandwidth: float = 1.0) -> Callable:
    """Squared kernel Stein discrepancy (U-statistic) with an 'imq', 'rbf' or callable kernel."""

    def objective(params, batch, particles, key):
        del particles, key
        return losses.kernel_stein_discrepancy(energy_fn, params, batch, kernel=kernel,
                                               bandwidth=bandwidth)

    return objective
