"""Tests of ebmdual.evaluation against closed forms and independent estimators.

Statistical checks use a tolerance of 4 standard errors computed from the
estimator itself (delta method where the estimator is nonlinear); seeds are fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from ebmdual import evaluation
from ebmdual.data import synthetic

NUM_SE = 4.0  # tolerance of every statistical check, in standard errors


def von_mises_fisher(kappa, x):
    """E(x) = −κ x_3 on S²; Z = sinh(κ)/κ w.r.t. the uniform probability measure."""
    return -kappa * x[2]


def squared_norm(scale, x):
    """E(x) = scale·‖x‖²/2: constant on the sphere, N(0, I/scale) in R^d."""
    return 0.5 * scale * jnp.sum(x**2)


@pytest.fixture(scope="module")
def teacher():
    return synthetic.paper_teacher(3)


@pytest.fixture(scope="module")
def half_teacher(teacher):
    return synthetic.Teacher(teacher.theta, 0.5 * teacher.signed_weights)


@pytest.fixture(scope="module")
def teacher_samples(teacher):
    return synthetic.sample_teacher(jax.random.PRNGKey(0), teacher, 20_000)


def assert_within_se(estimate, expected):
    # 4 standard errors of the estimator, from its own samples.
    assert abs(float(estimate.value) - float(expected)) < NUM_SE * float(estimate.stderr), (
        estimate, expected)


def test_sphere_grid_moments():
    grid = evaluation.sphere_grid_s2(100)
    assert grid.points.shape == (10_000, 3) and grid.weights.shape == (10_000,)
    np.testing.assert_allclose(jnp.linalg.norm(grid.points, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(grid.weights.sum(), 1.0, rtol=1e-6)
    # Uniform measure on S²: E[x_i] = 0, E[x_i²] = 1/3, E[x_i⁴] = 1/5.
    for i in range(3):
        np.testing.assert_allclose(grid.weights @ grid.points[:, i], 0.0, atol=1e-6)
        np.testing.assert_allclose(grid.weights @ grid.points[:, i] ** 2, 1 / 3, atol=1e-4)
        np.testing.assert_allclose(grid.weights @ grid.points[:, i] ** 4, 1 / 5, atol=1e-4)


def test_log_partition_s2_von_mises_fisher():
    for kappa in (0.5, 3.0, 10.0):
        np.testing.assert_allclose(evaluation.log_partition_s2(von_mises_fisher, kappa),
                                   np.log(np.sinh(kappa) / kappa), rtol=1e-4)


def test_nll_s2_uniform_is_zero():
    x = synthetic.sample_sphere(jax.random.PRNGKey(1), 50, 3)
    nll = evaluation.nll_s2(squared_norm, 1.0, x)
    np.testing.assert_allclose(nll.value, 0.0, atol=1e-5)


def test_kl_quadrature_basic(teacher, half_teacher):
    kl = evaluation.kl_quadrature_s2
    energy = synthetic.teacher_energy
    np.testing.assert_allclose(kl(energy, teacher, energy, teacher), 0.0, atol=1e-6)
    assert kl(energy, half_teacher, energy, teacher) > 0.1
    assert kl(von_mises_fisher, 2.0, energy, teacher) > 0.1
    assert kl(energy, teacher, von_mises_fisher, -2.0) > 0.1
    # Closed form for two vMFs with the same mean direction:
    # KL(κ1‖κ2) = (κ1 − κ2) A(κ1) + log Z(κ2) − log Z(κ1), A(κ) = coth κ − 1/κ.
    k1, k2 = 4.0, 1.5
    log_z = lambda k: np.log(np.sinh(k) / k)
    expected = (k1 - k2) * (1 / np.tanh(k1) - 1 / k1) + log_z(k2) - log_z(k1)
    np.testing.assert_allclose(kl(von_mises_fisher, k2, von_mises_fisher, k1), expected, rtol=1e-4)


def test_kl_importance_sampling_matches_quadrature(teacher, half_teacher, teacher_samples):
    energy = synthetic.teacher_energy
    quadrature = evaluation.kl_quadrature_s2(energy, half_teacher, energy, teacher)
    estimate = evaluation.kl_importance_sampling(energy, half_teacher, energy, teacher,
                                                 teacher_samples)
    assert_within_se(estimate, quadrature)
    itself = evaluation.kl_importance_sampling(energy, teacher, energy, teacher, teacher_samples)
    np.testing.assert_allclose(itself.value, 0.0, atol=1e-6)


def test_log_partition_estimators(teacher, half_teacher, teacher_samples):
    energy = synthetic.teacher_energy
    target_log_z = evaluation.log_partition_uniform_mc(energy, teacher, jax.random.PRNGKey(5),
                                                       3, 200_000)
    assert_within_se(target_log_z, evaluation.log_partition_s2(energy, teacher))
    model_log_z = evaluation.log_partition_importance(energy, half_teacher, energy, teacher,
                                                      teacher_samples, target_log_z)
    assert_within_se(model_log_z, evaluation.log_partition_s2(energy, half_teacher))
    nll = evaluation.negative_log_likelihood(energy, half_teacher, teacher_samples,
                                             model_log_z.value, model_log_z.stderr)
    assert_within_se(nll, evaluation.nll_s2(energy, half_teacher, teacher_samples).value)


def test_fisher_divergence_sphere(teacher, half_teacher, teacher_samples):
    energy = synthetic.teacher_energy
    fisher = evaluation.fisher_divergence_sphere
    np.testing.assert_allclose(fisher(energy, teacher, energy, teacher, teacher_samples).value,
                               0.0, atol=1e-10)
    assert fisher(energy, half_teacher, energy, teacher, teacher_samples).value > 1.0
    # ‖x‖² is constant on the sphere: no tangential gradient, but a radial one.
    samples = teacher_samples[:1000]
    np.testing.assert_allclose(fisher(squared_norm, 3.0, squared_norm, 1.0, samples).value,
                               0.0, atol=1e-8)
    euclidean = evaluation.fisher_divergence(squared_norm, 3.0, squared_norm, 1.0, samples)
    np.testing.assert_allclose(euclidean.value, 4.0, rtol=1e-5)  # ‖(3 − 1)x‖² = 4


def test_fisher_divergence_gaussians():
    # p* = N(0, I_d), E_θ = ‖x‖²/(2σ²): E‖x − x/σ²‖² = d (1 − 1/σ²)².
    dim, scale = 5, 0.25
    samples = jax.random.normal(jax.random.PRNGKey(2), (20_000, dim))
    estimate = evaluation.fisher_divergence(squared_norm, scale, squared_norm, 1.0, samples)
    assert_within_se(estimate, dim * (1 - scale) ** 2)


def test_grid_density_2d_gaussian():
    grid = evaluation.grid_density_2d(squared_norm, 1.0, box=(-4.0, 4.0), num=200)
    assert grid.xs.shape == (200,) and grid.ys.shape == (200,) and grid.density.shape == (200, 200)
    cell_area = (8.0 / 200) ** 2
    np.testing.assert_allclose(grid.density.sum() * cell_area, 1.0, rtol=1e-5)
    # Z over the box: 2π P(|ξ| < 4)², ξ ~ N(0, 1) (truncation shifts log Z by −1.3e-4).
    box_log_z = np.log(2 * np.pi) + 2 * np.log1p(-2 * norm.cdf(-4.0))
    np.testing.assert_allclose(grid.log_partition, box_log_z, atol=1e-5)
    # Layout density[i, j] = p(xs[j], ys[i]): check with an asymmetric energy.
    shifted = lambda shift, x: squared_norm(1.0, x - shift)
    grid = evaluation.grid_density_2d(shifted, jnp.array([1.0, -2.0]))
    row, col = np.unravel_index(np.argmax(grid.density), grid.density.shape)
    np.testing.assert_allclose([grid.xs[col], grid.ys[row]], [1.0, -2.0], atol=0.03)


def test_nll_2d_gaussian():
    samples = jax.random.normal(jax.random.PRNGKey(3), (20_000, 2))
    result = evaluation.nll_2d(squared_norm, 1.0, samples, box=(-4.0, 4.0), num=200)
    # Closed form: E[‖x‖²/2] + log 2π = 1 + log 2π.
    assert_within_se(result, 1.0 + np.log(2 * np.pi))
    # Edge band |x_i| > 3.6 (5% of the box): 1 − P(|ξ| < 3.6)²/P(|ξ| < 4)² ≈ 5.1e-4.
    edge_mass = 1 - ((1 - 2 * norm.cdf(-3.6)) / (1 - 2 * norm.cdf(-4.0))) ** 2
    np.testing.assert_allclose(result.edge_mass, edge_mass, rtol=1e-3)
    wide = evaluation.nll_2d(squared_norm, 0.1, samples, box=(-4.0, 4.0), num=200)
    assert wide.edge_mass > 0.1  # a density the box truncates is flagged


def test_mode_mass_2d_recovers_weights():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) / 36
    mixture = synthetic.eight_gaussians(weights=weights)
    masses = evaluation.mode_mass_2d(synthetic.mixture_energy, mixture, mixture)
    assert masses.shape == (8,)
    np.testing.assert_allclose(masses, weights, atol=1e-3)
    np.testing.assert_allclose(masses.sum(), 1.0, rtol=1e-5)


def test_mode_weights_from_samples():
    weights = np.array([0.1, 0.6, 0.3])
    mixture = synthetic.make_mixture(np.array([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]]), 0.3,
                                     weights)
    n = 10_000
    fractions = evaluation.mode_weights_from_samples(mixture.sample(jax.random.PRNGKey(4), n),
                                                     mixture)
    np.testing.assert_allclose(fractions.sum(), 1.0, rtol=1e-6)
    stderr = np.sqrt(weights * (1 - weights) / n)  # binomial standard error
    np.testing.assert_array_less(np.abs(fractions - weights), NUM_SE * stderr)
