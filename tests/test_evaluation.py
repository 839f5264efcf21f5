"""Tests of ebmdual.evaluation against closed forms and independent estimators.

Statistical checks use fixed seeds and a tolerance of NUM_SE = 4 standard errors:
the estimator's own standard error (delta method where it is nonlinear), or, where
a test says so, the true standard error derived in closed form. Quadrature checks
state the quadrature error they allow.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chi2, norm

from ebmdual import evaluation
from ebmdual.data import synthetic
from ebmdual.energies import ShallowEnergy, make_energy_fn
from experiments.defaults import base_config
from experiments.evaluate import make_evaluator

NUM_SE = 4.0  # tolerance of every statistical check, in standard errors


def von_mises_fisher(kappa, x):
    """E(x) = −κ x_3 on S²; Z = sinh(κ)/κ w.r.t. the uniform probability measure."""
    return -kappa * x[2]


def squared_norm(scale, x):
    """E(x) = scale·‖x‖²/2: constant on the sphere, N(0, I/scale) in R^d."""
    return 0.5 * scale * jnp.sum(x**2)


@pytest.fixture(scope="module")
def teacher():
    return synthetic.orthogonal_teacher(3)


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
    x = np.random.default_rng(1).standard_normal((50, 3))
    x = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), jnp.float32)
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


def log_z_von_mises_fisher(kappa):
    """log Z(κ) = log E_σ[exp(κ x_3)] = log(sinh κ/κ) on S² (Z(0) = 1)."""
    kappa = np.asarray(kappa, np.float64)
    return np.log(np.sinh(kappa) / kappa) if kappa != 0 else 0.0


def sample_von_mises_fisher_s2(seed, kappa, num):
    """Exact samples of p ∝ exp(κ x_3) on S² (NumPy): x_3 = t by inverting its CDF
    ∝ exp(κt) on [−1, 1], and a uniform azimuth. (num, 3) float32."""
    rng = np.random.default_rng(seed)
    u, azimuth = rng.uniform(size=num), rng.uniform(0.0, 2 * np.pi, num)
    t = 1.0 + np.log(u + (1.0 - u) * np.exp(-2.0 * kappa)) / kappa
    radius = np.sqrt(np.clip(1.0 - t**2, 0.0, None))
    return np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), t], 1).astype(np.float32)


def log_mean_exp_standard_error(log_first_moment, log_second_moment, num):
    """True SE of log mean_i Y_i (delta method): √(Var Y / (E Y)² / n) = √((E Y²/(E Y)² − 1)/n)."""
    return np.sqrt(np.expm1(log_second_moment - 2 * log_first_moment) / num)


def test_log_partition_estimators_von_mises_fisher():
    """log Z estimators against the exact log Z(κ) = log(sinh κ/κ) of the vMF on S².

    Tolerance: NUM_SE true standard errors, derived in closed form (not the estimators'
    own noisy stderr): with Y = exp(−E(x)), the delta-method SE of log mean_i Y_i is
    √((E Y²/(E Y)² − 1)/n), and for vMF energies every moment is a ratio of Z's:
    under x ~ σ, E[exp(kκx_3)] = Z(kκ); under x ~ vMF(κ*), E[exp(k(κ − κ*)x_3)]
    = Z(κ* + k(κ − κ*))/Z(κ*). The O(1/n) bias of log mean (−Var/(2n(E Y)²), ≈ 1e-6
    here) is negligible against these SEs (≈ 1.5e-3). Each estimate is also checked
    to report its standard error correctly, within NUM_SE SEs of the sample standard
    deviation, relative SE √((μ₄/σ⁴ − 1)/(4n)) (delta method on the sample variance).
    """
    target_kappa, model_kappa = 3.0, 2.0
    num_uniform, num_target, num_test = 1_000_000, 100_000, 100_000

    def assert_estimate(estimate, expected, true_stderr, kurtosis_of_y, num):
        assert abs(float(estimate.value) - expected) < NUM_SE * true_stderr, (
            estimate, expected, true_stderr)
        stderr_relative_se = np.sqrt((kurtosis_of_y - 1) / (4 * num))
        assert abs(float(estimate.stderr) / true_stderr - 1) < NUM_SE * stderr_relative_se, (
            estimate, true_stderr)

    def kurtosis(log_moment):
        """μ₄/σ⁴ of Y/E Y from its raw moments m_k = exp(log_moment(k) − k log_moment(1))."""
        m = [np.exp(log_moment(k) - k * log_moment(1)) for k in (1, 2, 3, 4)]
        variance = m[1] - 1
        return (m[3] - 4 * m[2] + 6 * m[1] - 3) / variance**2

    # 1. Uniform proposals: Y = exp(κ* x_3), x ~ σ.
    uniform_moment = lambda k: log_z_von_mises_fisher(k * target_kappa)
    target_log_z = evaluation.log_partition_uniform_mc(
        von_mises_fisher, target_kappa, jax.random.PRNGKey(5), 3, num_uniform)
    uniform_se = log_mean_exp_standard_error(uniform_moment(1), uniform_moment(2), num_uniform)
    assert_estimate(target_log_z, log_z_von_mises_fisher(target_kappa), uniform_se,
                    kurtosis(uniform_moment), num_uniform)

    # 2. Importance sampling from exact target samples: Y = exp((κ − κ*) x_3), x ~ vMF(κ*),
    # given the exact log Z* (stderr 0) so that only this estimator's error is tested.
    target_samples = jnp.asarray(sample_von_mises_fisher_s2(0, target_kappa, num_target))
    step = model_kappa - target_kappa
    ratio_moment = lambda k: (log_z_von_mises_fisher(target_kappa + k * step)
                              - log_z_von_mises_fisher(target_kappa))
    exact_target = evaluation.Estimate(jnp.float32(log_z_von_mises_fisher(target_kappa)), 0.0)
    model_log_z = evaluation.log_partition_importance(
        von_mises_fisher, model_kappa, von_mises_fisher, target_kappa, target_samples, exact_target)
    importance_se = log_mean_exp_standard_error(ratio_moment(1), ratio_moment(2), num_target)
    assert_estimate(model_log_z, log_z_von_mises_fisher(model_kappa), importance_se,
                    kurtosis(ratio_moment), num_target)

    # 3. Chained: log Z* from step 1 (independent uniform points), so the errors add in
    # quadrature, as the estimator's stderr claims.
    chained = evaluation.log_partition_importance(
        von_mises_fisher, model_kappa, von_mises_fisher, target_kappa, target_samples,
        target_log_z)
    chained_se = np.hypot(uniform_se, importance_se)
    assert abs(float(chained.value) - log_z_von_mises_fisher(model_kappa)) < NUM_SE * chained_se
    np.testing.assert_allclose(chained.stderr, np.hypot(target_log_z.stderr, model_log_z.stderr),
                               rtol=1e-5)

    # 4. NLL on independent test samples of p* against the population NLL
    # E_{p*}[−κ x_3] + log Z(κ) = −κ A(κ*) + log Z(κ), A(κ) = coth κ − 1/κ = E_{p*}[x_3].
    # True SE: √(κ² Var_{p*}(x_3)/n_test + SE(log Z)²), E_{p*}[x_3²] = 1 − 2A(κ*)/κ*.
    mean_t = 1 / np.tanh(target_kappa) - 1 / target_kappa
    variance_t = 1 - 2 * mean_t / target_kappa - mean_t**2
    test_samples = jnp.asarray(sample_von_mises_fisher_s2(1, target_kappa, num_test))
    nll = evaluation.negative_log_likelihood(von_mises_fisher, model_kappa, test_samples,
                                             model_log_z.value, model_log_z.stderr)
    nll_se = np.sqrt(model_kappa**2 * variance_t / num_test + importance_se**2)
    expected_nll = -model_kappa * mean_t + log_z_von_mises_fisher(model_kappa)
    assert abs(float(nll.value) - expected_nll) < NUM_SE * nll_se, (nll, expected_nll, nll_se)


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


# ---------------------------------------------------------------------------
# Chunked evaluation: the same numbers as one vmap over all points
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("num", [10_007, 10_000, 999])
def test_chunked_energies_match_direct_vmap(num):
    """n not a multiple of the chunk (10 chunks + 7 rows), a multiple, and n < chunk.

    ShallowEnergy (flax params) against a plain vmap: each point's energy is the same
    arithmetic in a smaller batch, so they agree to float32 rounding (rtol 1e-6)."""
    module = ShallowEnergy(num_neurons=16, num_positive=8)
    energy_fn = make_energy_fn(module)
    params = module.init(jax.random.key(0), jnp.zeros((5,)))
    x = synthetic.sample_sphere(jax.random.key(1), num, 5)
    direct = jax.vmap(energy_fn, in_axes=(None, 0))(params, x)
    chunked = evaluation.batched_energies(energy_fn, params, x, chunk_size=1000)
    assert chunked.shape == (num,)
    np.testing.assert_allclose(chunked, direct, rtol=1e-6, atol=1e-7)


def test_chunked_divergences_match_direct_vmap():
    """Fisher divergences and the importance-sampling KL with chunk_size = 1000 on
    n = 10_007 points against the same formulas written as one vmap here. Per-point
    values agree to float32 rounding; means and stds of 10⁴ of them to rtol 1e-5."""
    num, dim = 10_007, 5
    teacher = synthetic.random_teacher(dim)
    student = nearby_student(teacher, jax.random.key(2), angle=0.5)
    x = synthetic.sample_sphere(jax.random.key(3), num, dim)
    energy = synthetic.teacher_energy
    grad = jax.vmap(jax.grad(energy, argnums=1), in_axes=(None, 0))
    diff = grad(student, x) - grad(teacher, x)
    tangential = diff - jnp.sum(diff * x, axis=1, keepdims=True) * x
    for fisher, diff in ((evaluation.fisher_divergence, diff),
                         (evaluation.fisher_divergence_sphere, tangential)):
        squared = jnp.sum(diff**2, axis=1)
        estimate = fisher(energy, student, energy, teacher, x, chunk_size=1000)
        np.testing.assert_allclose(estimate.value, jnp.mean(squared), rtol=1e-5)
        np.testing.assert_allclose(estimate.stderr, jnp.std(squared, ddof=1) / np.sqrt(num),
                                   rtol=1e-5)
    chunked = evaluation.kl_importance_sampling(energy, student, energy, teacher, x,
                                                chunk_size=1000)
    direct = evaluation.kl_importance_sampling(energy, student, energy, teacher, x,
                                               chunk_size=num)
    np.testing.assert_allclose(chunked, direct, rtol=1e-5)


# ---------------------------------------------------------------------------
# KL with log Z_θ − log Z* from common uniform points, against the other estimators
# ---------------------------------------------------------------------------

def nearby_student(teacher, key, angle, num_extra=6, extra_weight=2.0):
    """A student near `teacher`: its k neurons turned by ≈ `angle` radians (Gaussian
    noise of norm ≈ angle), plus num_extra random unit neurons of weight ±extra_weight;
    teacher weights rescaled by m/k so that each teacher neuron keeps its share of
    E = mean_i s_i relu(⟨θ_i, x⟩) over the m = k + num_extra neurons."""
    k, dim = teacher.theta.shape
    key_turn, key_extra, key_sign = jax.random.split(key, 3)
    turned = teacher.theta + angle * jax.random.normal(key_turn, (k, dim)) / np.sqrt(dim)
    theta = jnp.concatenate([turned, synthetic.sample_sphere(key_extra, num_extra, dim)])
    weights = jnp.concatenate([
        teacher.signed_weights * (k + num_extra) / k,
        extra_weight * jax.random.rademacher(key_sign, (num_extra,), jnp.float32)])
    return synthetic.Teacher(theta / jnp.linalg.norm(theta, axis=1, keepdims=True), weights)


@pytest.fixture(scope="module")
def published_pool():
    """(published_teacher(15), 20 000 exact samples of it): drawn once (rejection
    accepts ~3e-3 in d = 15) and split into disjoint parts by the tests."""
    teacher = synthetic.published_teacher(15)
    return teacher, synthetic.sample_teacher(jax.random.key(15), teacher, 20_000)


def assert_estimators_agree(first, second):
    """Estimates from independent samples: |difference| < NUM_SE combined SEs."""
    combined = np.hypot(float(first.stderr), float(second.stderr))
    assert abs(float(first.value) - float(second.value)) < NUM_SE * combined, (first, second)


def test_kl_estimators_match_quadrature_s2(teacher, teacher_samples):
    """d = 3: a 4-neuron student (random unit directions) against the orthogonal
    teacher (KL ≈ 1.06). Both Monte Carlo estimators must lie within NUM_SE of their
    own standard errors of kl_quadrature_s2 (100 × 100 grid) plus its quadrature
    error, bounded by |KL(100) − KL(400)| (the midpoint rule's O(h²) error of the
    400 grid is 1/16 of the 100 grid's, so the difference is ≈ the 100 grid's error)."""
    energy = synthetic.teacher_energy
    student = synthetic.Teacher(synthetic.sample_sphere(jax.random.key(0), 4, 3),
                                jnp.array([-20.0, -20.0, -10.0, 5.0]))
    quadrature = evaluation.kl_quadrature_s2(energy, student, energy, teacher)
    quadrature_error = abs(float(quadrature)
                           - float(evaluation.kl_quadrature_s2(energy, student, energy, teacher,
                                                               400)))
    estimates = (
        evaluation.kl_importance_sampling(energy, student, energy, teacher, teacher_samples),
        evaluation.kl_uniform_partition(energy, student, energy, teacher, teacher_samples,
                                        jax.random.key(1), 100_000))
    for estimate in estimates:
        assert (abs(float(estimate.value) - float(quadrature))
                < NUM_SE * float(estimate.stderr) + quadrature_error), (estimate, quadrature)
    itself = evaluation.kl_uniform_partition(energy, teacher, energy, teacher, teacher_samples,
                                             jax.random.key(1), 1000)
    assert float(itself.value) == 0.0 and float(itself.stderr) == 0.0


def test_kl_uniform_partition_stderr_is_honest(published_pool):
    """d = 15: 20 independent estimates (disjoint 1000 teacher samples, M = 1000 uniform
    points from fold_in(key, r) each) of a nearby student's KL (≈ 0.06). Their sample
    std must match the mean reported SE. For normal estimates with true SE σ the
    sample std s of 20 satisfies s/σ ~ √(χ²₁₉/19), whose 1e-4 and 1 − 1e-4 quantiles
    are 0.457 and 1.635 (relative SE of s ≈ 1/√38 ≈ 0.16); the mean of 20 reported
    SEs is much less noisy, so the ratio must lie in [0.457, 1.635]. At n = M = 1000
    the uniform term var(a − b)/M is ~90% of SE², and ignoring the correlation of the
    two log-means (var a + var b instead of var(a − b)) would report an SE ~4x too
    large (ratio ~0.26), outside the band."""
    teacher, pool = published_pool
    energy = synthetic.teacher_energy
    student = nearby_student(teacher, jax.random.key(100), angle=0.2)
    num_repeats, num_samples, num_uniform = 20, 1000, 1000
    estimates = [evaluation.kl_uniform_partition(
        energy, student, energy, teacher, pool[r * num_samples:(r + 1) * num_samples],
        jax.random.fold_in(jax.random.key(3), r), num_uniform) for r in range(num_repeats)]
    values = np.array([float(e.value) for e in estimates])
    stderrs = np.array([float(e.stderr) for e in estimates])
    low, high = np.sqrt(chi2.ppf([1e-4, 1 - 1e-4], num_repeats - 1) / (num_repeats - 1))
    ratio = np.std(values, ddof=1) / np.mean(stderrs)
    assert low < ratio < high, (ratio, values, stderrs)


@pytest.mark.parametrize("dim", [15, 50])
def test_kl_estimators_agree_in_high_dimension(dim, published_pool):
    """A nearby student (KL ≈ 0.06 in d = 15, ≈ 0.013 in d = 50) of the published d = 15
    teacher (its 20 000 samples) and of random_teacher(50, 0.2, 0) (4000 samples):
    importance sampling on the first half of the samples, the uniform-partition
    estimator (M = 10⁵) on the second: independent, so they agree within NUM_SE
    combined SEs."""
    if dim == 15:
        teacher, samples = published_pool
    else:
        teacher = synthetic.random_teacher(dim, 0.2, 0)
        samples = synthetic.sample_teacher(jax.random.key(dim), teacher, 4000)
    half = samples.shape[0] // 2
    energy = synthetic.teacher_energy
    student = nearby_student(teacher, jax.random.key(100), angle=0.2)
    assert_estimators_agree(
        evaluation.kl_importance_sampling(energy, student, energy, teacher, samples[:half]),
        evaluation.kl_uniform_partition(energy, student, energy, teacher, samples[half:],
                                        jax.random.key(4), 100_000))


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


# ---------------------------------------------------------------------------
# The experiments' evaluator at a sampler temperature T ≠ 1: metrics of exp(−E/T)
# ---------------------------------------------------------------------------

def numpy_mixture_log_density(x, means, std, weights):
    """log Σ_k w_k N(x; μ_k, std² I) in R², float64 (independent of ebmdual.data)."""
    x = np.asarray(x, np.float64)
    squared = np.sum((x[:, None, :] - means[None]) ** 2, axis=-1)
    log_terms = np.log(weights) - 0.5 * squared / std**2 - np.log(2 * np.pi * std**2)
    top = log_terms.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(log_terms - top).sum(axis=1, keepdims=True)))[:, 0]


def test_evaluator_2d_metrics_use_energy_over_temperature():
    """Model E = 2·(−log p*) for the eight-Gaussians target p*: at T = 2, E/T = −log p*.

    Closed forms, from NumPy, for the density exp(−E/T)/Z normalised on the grid:
      T = 2: the target itself: test NLL = −mean log p*(x), mode masses = w_k.
      T = 1: p*²/∫p*², ∫p*² = Σ_{k,l} w_k w_l N(μ_k; μ_l, 2σ²I) (product of Gaussians):
             NLL = −2 mean log p*(x) + log ∫p*², mode masses w_k²/Σ_l w_l² up to the
             cross terms k ≠ l, relative size ≤ exp(−|μ_k − μ_l|²/(8σ²)) = e⁻²⁹.
    The components of exp(−E/T) have std s = σ√(T/2) ∈ [0.07, 0.1] (σ = 0.1): their
    means lie ≥ 20 s inside the box [−4, 4]² and ≥ 7.6 s from their sector boundaries,
    and the 200 × 200 midpoint grid (h = 0.04) integrates a Gaussian with relative
    error ~2 exp(−2π² s²/h²) ≤ e⁻⁶¹. Truncation, leakage and quadrature are all below
    float32 resolution; the tolerance is float32 rounding of sums over 4·10⁴ cells
    (rtol 1e-5; atol 1e-6 for masses ≤ 1; observed errors ≤ 1e-6 relative).
    """
    weights = np.arange(1.0, 9.0) / 36
    std = 0.1
    config = base_config()
    config.data.dim = 2
    assert config.eval.grid_size == 100
    mixture = synthetic.eight_gaussians(weights, std=std)
    means = np.asarray(mixture.means, np.float64)
    # The identities hold for any test points: NumPy draws from p*, no sampler to compile.
    rng = np.random.default_rng(6)
    test = jnp.asarray(means[rng.choice(8, 4_000, p=weights)]
                       + std * rng.standard_normal((4_000, 2)), jnp.float32)
    dataset = synthetic.Dataset("eight_gaussians", test[:10], test, "euclidean",
                                synthetic.mixture_energy, mixture, mixture, synthetic.TOY_BOX)

    def energy_fn(mixture, x):
        return 2.0 * synthetic.mixture_energy(mixture, x)

    evaluate = make_evaluator(config, dataset, energy_fn)
    log_density = numpy_mixture_log_density(dataset.test, means, std, weights)
    squared_gaps = np.sum((means[:, None] - means[None]) ** 2, axis=-1)
    overlap = np.sum(np.outer(weights, weights) * np.exp(-squared_gaps / (8 * std**2))
                     / (4 * np.pi * std**2))  # ∫p*²
    expected = {2.0: (-log_density.mean(), weights),
                1.0: (-2 * log_density.mean() + np.log(overlap), weights**2 / np.sum(weights**2))}
    for temperature, (nll, masses) in expected.items():
        metrics = evaluate(mixture, None, temperature)
        np.testing.assert_allclose(metrics["test_nll"], nll, rtol=1e-5, err_msg=str(temperature))
        np.testing.assert_allclose([metrics[f"mode_mass_{k}"] for k in range(8)], masses,
                                   rtol=1e-5, atol=1e-6, err_msg=str(temperature))
        assert metrics["edge_mass"] < 1e-6


def midpoint_log_z_error(kappa, num):
    """Leading error of the num × num midpoint grid's log Z for E = −κ x_3 on S².

    For g(ϑ) = f(ϑ) sin ϑ the midpoint rule on [0, π] errs by −(h²/24)(g'(π) − g'(0))
    = (h²/24)(f(0) + f(π)), h = π/num; dividing by the same rule for f = 1 (the weights
    are normalised to sum to 1) gives, for f = exp(κ cos ϑ), a relative error of Z of
    (h²/24)(κ coth κ − 1) + O(h⁴).
    """
    return (np.pi / num) ** 2 / 24 * (kappa / np.tanh(kappa) - 1)


@pytest.mark.parametrize("dim", [3, 5])
def test_evaluator_sphere_metrics_use_energy_over_temperature(dim):
    """Target p* ∝ exp(κ x_3) (vMF), model E = −2κ x_3: p_θ ∝ exp(−E/T) is the vMF of
    κ_T = 2κ/T, equal to p* at T = 2.

    Closed forms (A(κ) = coth κ − 1/κ = E_{p*}[x_3] on S²):
      KL(p*‖p_θ) = (κ − κ_T) A(κ) + log Z(κ_T) − log Z(κ) (0 at T = 2);
      test NLL = −κ_T mean_i x_{i,3} + log Z(κ_T), Z(κ) = sinh κ/κ;
      Fisher divergence on the test points: (κ_T − κ)² mean_i (1 − x_{i,3}²) (exact).
    S² metrics come from the 100 × 100 midpoint grid, whose error is the O(h²) term of
    `midpoint_log_z_error` = δ(κ) for log Z; E_q[x_3] = d log Z/dκ on the grid, so the
    KL errs by δ(κ_T) − δ(κ) − (κ_T − κ) δ'(κ) + O(h⁴). Tolerance: twice the leading
    term (O(h⁴) is ~1e-3 of it) plus 1e-6 for float32 sums over 10⁴ nodes. In d = 5
    the evaluator estimates the KL by importance sampling on the reference points (here
    the test points, uniform, not p* samples): it is checked against the same estimator in
    NumPy, mean Δ + log mean exp(−Δ) with Δ = E/T − E*, which is exactly 0 at T = 2.
    """
    kappa, num = 2.0, 100
    config = base_config()
    config.data.dim = dim
    assert config.eval.grid_size == num
    if dim == 3:
        test = jnp.asarray(sample_von_mises_fisher_s2(2, kappa, 2_000))
    else:  # not p* samples: only the Fisher identity and the T = 2 KL are checked
        test = np.random.default_rng(7).standard_normal((2_000, dim))
        test = jnp.asarray(test / np.linalg.norm(test, axis=1, keepdims=True), jnp.float32)
    dataset = synthetic.Dataset("von_mises_fisher", test[:10], test, "sphere",
                                von_mises_fisher, kappa, reference=test)
    evaluate = make_evaluator(config, dataset, lambda k, x: von_mises_fisher(2 * k, x))
    t = np.asarray(test[:, 2], np.float64)
    mean_t = 1 / np.tanh(kappa) - 1 / kappa
    error = lambda k: midpoint_log_z_error(k, num)
    error_slope = lambda k: (error(k + 1e-4) - error(k - 1e-4)) / 2e-4
    for temperature in (2.0, 1.0, 0.5):
        metrics = evaluate(kappa, None, temperature)
        kappa_t = 2 * kappa / temperature
        fisher = (kappa_t - kappa) ** 2 * np.mean(1 - t**2)
        np.testing.assert_allclose(metrics["fisher_divergence"], fisher, rtol=1e-5, atol=1e-6,
                                   err_msg=str(temperature))
        if dim > 3:  # the importance-sampling estimate on these points, from NumPy
            assert "kl_stderr" in metrics
            differences = -(kappa_t - kappa) * t  # E/T − E* at each test point
            kl = differences.mean() + np.log(np.mean(np.exp(-differences)))
            np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5, atol=1e-6,
                                       err_msg=str(temperature))
            if temperature == 2.0:
                assert metrics["kl"] == 0.0 and metrics["kl_stderr"] == 0.0
            continue
        kl = ((kappa - kappa_t) * mean_t + log_z_von_mises_fisher(kappa_t)
              - log_z_von_mises_fisher(kappa))
        kl_error = error(kappa_t) - error(kappa) - (kappa_t - kappa) * error_slope(kappa)
        assert abs(metrics["kl"] - kl) <= 2 * abs(kl_error) + 1e-6, (temperature, metrics, kl)
        nll = -kappa_t * t.mean() + log_z_von_mises_fisher(kappa_t)
        assert abs(metrics["test_nll"] - nll) <= 2 * error(kappa_t) + 1e-6, (
            temperature, metrics, nll)
