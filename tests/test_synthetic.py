"""Tests of ebmdual.data.synthetic: teacher geometry, exact sampling, mixtures, toys, configs.

Statistical checks use a tolerance of 4 standard errors computed from the
estimator itself (fixed seeds, so they are deterministic).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from ebmdual import evaluation
from ebmdual.data import synthetic

NUM_SE = 4.0  # tolerance of every statistical check, in standard errors


@pytest.fixture
def key():
    return jax.random.key(0)  # typed key, as the rest of ebmdual uses


def _cosine(theta):
    theta = np.asarray(theta, np.float64)
    return float(theta[0] @ theta[1])


def test_teacher_geometry():
    teachers = {"orthogonal 3": synthetic.orthogonal_teacher(3),
                "published 3": synthetic.published_teacher(3),
                "random 7": synthetic.random_teacher(7, 0.2, 0),
                "published 15": synthetic.published_teacher(15)}
    for name, teacher in teachers.items():
        dim = int(name.split()[1])
        assert teacher.theta.shape == (2, dim), name
        np.testing.assert_allclose(np.linalg.norm(teacher.theta, axis=1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(teacher.signed_weights, [-10.0, -10.0])
    np.testing.assert_array_equal(teachers["orthogonal 3"].theta, np.eye(3)[:2])
    assert abs(_cosine(teachers["orthogonal 3"].theta)) < 1e-7
    # docs/tasks.md, d = 3: the bimodal teacher's normalised rows have cosine −0.8314.
    assert round(_cosine(teachers["published 3"].theta), 4) == -0.8314
    assert round(_cosine(teachers["published 15"].theta), 4) == 0.2002
    for cosine in (0.2, -0.7):
        assert abs(_cosine(synthetic.random_teacher(7, cosine, seed=3).theta) - cosine) < 1e-6
    np.testing.assert_array_equal(synthetic.random_teacher(7, 0.2, 0).theta,
                                  synthetic.make_teacher("random", 7).theta)


def test_explicit_teacher():
    teacher = synthetic.teacher_from_directions([[2.0, 0.0, 0.0], [0.0, 3.0, 4.0],
                                                 [0.0, 0.0, -0.5]])
    np.testing.assert_allclose(teacher.theta, [[1, 0, 0], [0, 0.6, 0.8], [0, 0, -1]],
                               atol=1e-7)
    np.testing.assert_array_equal(teacher.signed_weights, [-10.0, -10.0, -10.0])
    weighted = synthetic.make_teacher("explicit", 3, theta=[[0.0, 0.0, 2.0]],
                                      signed_weights=[4.0])
    np.testing.assert_array_equal(weighted.theta, [[0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(weighted.signed_weights, [4.0])


@pytest.mark.parametrize("build, match", [
    (lambda: synthetic.teacher_from_directions([1.0, 0.0, 0.0]), r"shape \(3,\)"),
    (lambda: synthetic.teacher_from_directions([[1.0, 0.0], [0.0, 0.0]]), "non-zero"),
    (lambda: synthetic.teacher_from_directions(np.eye(3)[:2], [-10.0]), "signed_weights"),
    (lambda: synthetic.random_teacher(5, 1.5, 0), r"\[-1, 1\]"),
    (lambda: synthetic.published_teacher(7), "d = 3 and 15 only.*'random'"),
    (lambda: synthetic.make_teacher("explicit", 4, theta=np.eye(3)[:2]), r"\(k, 4\)"),
    (lambda: synthetic.make_teacher("explicit", 3), "give theta"),
    (lambda: synthetic.make_teacher("student", 3), "'student'.*explicit"),
])
def test_teacher_errors(build, match):
    with pytest.raises(ValueError, match=match) as error:
        build()
    assert "\n" not in str(error.value)


def test_teacher_energy_formula():
    teacher = synthetic.published_teacher(15)
    x = synthetic.sample_sphere(jax.random.PRNGKey(1), 5, 15)
    expected = -5 * jax.nn.relu(x @ teacher.theta[0]) - 5 * jax.nn.relu(x @ teacher.theta[1])
    got = jax.vmap(synthetic.teacher_energy, in_axes=(None, 0))(teacher, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_energy_lower_bound():
    teacher = synthetic.published_teacher(15)
    minimiser = teacher.theta.sum(0) / jnp.linalg.norm(teacher.theta.sum(0))
    bound = synthetic.energy_lower_bound(teacher)
    np.testing.assert_allclose(bound, synthetic.teacher_energy(teacher, minimiser), rtol=1e-5)
    np.testing.assert_allclose(bound, -5 * np.linalg.norm(np.asarray(teacher.theta).sum(0)),
                               rtol=1e-6)
    # Random teachers: the bound holds on many points; exact for all-negative weights.
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    theta = synthetic.sample_sphere(keys[0], 5, 4)
    x = synthetic.sample_sphere(keys[1], 200_000, 4)
    for weights in ([-3.0, -1.0, -2.0, -4.0, -0.5], [-3.0, 2.0, -2.0, 5.0, -0.5]):
        teacher = synthetic.Teacher(theta, jnp.asarray(weights))
        energies = jax.vmap(synthetic.teacher_energy, in_axes=(None, 0))(teacher, x)
        bound = synthetic.energy_lower_bound(teacher)
        assert bound <= float(energies.min()) + 1e-6
        if max(weights) < 0:
            assert float(energies.min()) - bound < 1e-2
        crude = synthetic.energy_lower_bound(teacher, max_enumerated=0)
        np.testing.assert_allclose(crude, np.minimum(weights, 0).sum() / 5, rtol=1e-6)
        assert crude <= bound


def test_teacher_samples_on_sphere(key):
    samples = synthetic.sample_teacher(key, synthetic.published_teacher(15), 300,
                                       batch_size=2**14)
    assert samples.shape == (300, 15) and samples.dtype == jnp.float32
    np.testing.assert_allclose(jnp.linalg.norm(samples, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["orthogonal", "published"])  # unimodal, bimodal
def test_teacher_samples_match_quadrature_d3(key, kind):
    teacher = synthetic.make_teacher(kind, 3)
    samples = synthetic.sample_teacher(key, teacher, 20_000)
    grid = evaluation.sphere_grid_s2(200)
    log_masses, _ = evaluation.quadrature_log_masses(synthetic.teacher_energy, teacher, grid)
    energy = jax.vmap(synthetic.teacher_energy, in_axes=(None, 0))
    for statistic in (lambda x: x @ teacher.theta[0], lambda x: energy(teacher, x)):
        values = statistic(samples)
        expected = jnp.sum(jnp.exp(log_masses) * statistic(grid.points))
        stderr = jnp.std(values) / np.sqrt(len(values))
        # 4 standard errors of the sample mean.
        assert abs(jnp.mean(values) - expected) < NUM_SE * stderr, (jnp.mean(values), expected)


def test_mixture_sample_fractions(key):
    weights = np.array([0.2, 0.3, 0.5])
    mixture = synthetic.line_mixture(5, weights, separation=12.0, std=1.0)
    n = 20_000
    samples = mixture.sample(key, n)
    assert samples.shape == (n, 5)
    fractions = evaluation.mode_weights_from_samples(samples, mixture)
    stderr = np.sqrt(weights * (1 - weights) / n)  # binomial standard error
    np.testing.assert_array_less(np.abs(fractions - weights), NUM_SE * stderr)
    np.testing.assert_allclose(mixture.means[:, 0], [-12.0, 0.0, 12.0])


def test_mixture_log_prob_against_scipy():
    mixture = synthetic.make_mixture(np.array([[0.0, 1.0, 2.0], [1.0, -1.0, 0.5]]), 0.7,
                                     [0.25, 0.75])
    x = np.random.default_rng(0).normal(size=(10, 3))
    expected = np.log(sum(w * stats.multivariate_normal(m, 0.49 * np.eye(3)).pdf(x)
                          for w, m in zip([0.25, 0.75], np.asarray(mixture.means))))
    np.testing.assert_allclose(mixture.log_prob(jnp.asarray(x)), expected, rtol=1e-5)
    np.testing.assert_allclose(synthetic.mixture_energy(mixture, jnp.asarray(x[0])),
                               -expected[0], rtol=1e-5)


def test_mixture_log_prob_integrates_to_one():
    mixture = synthetic.eight_gaussians(weights=np.arange(1.0, 9.0))
    num, low, high = 400, -4.0, 4.0
    axis = low + (np.arange(num) + 0.5) * (high - low) / num
    points = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    mass = jnp.sum(jnp.exp(mixture.log_prob(jnp.asarray(points)))) * ((high - low) / num) ** 2
    np.testing.assert_allclose(mass, 1.0, atol=1e-4)


def test_eight_gaussians_geometry():
    mixture = synthetic.eight_gaussians()
    np.testing.assert_allclose(jnp.linalg.norm(mixture.means, axis=1), 2.0, rtol=1e-6)
    np.testing.assert_allclose(mixture.weights, 1 / 8, rtol=1e-6)
    np.testing.assert_array_equal(mixture.assign_modes(mixture.means), np.arange(8))


def test_rings_and_checkerboard(key):
    rings = synthetic.sample_rings(key, 6000, radii=(1.0, 2.0, 3.0), noise_std=0.05)
    radius = jnp.linalg.norm(rings, axis=1)
    distance = jnp.min(jnp.abs(radius[:, None] - jnp.array([1.0, 2.0, 3.0])), axis=1)
    assert float(distance.max()) < 0.3
    board = synthetic.sample_checkerboard(key, 6000)
    assert board.shape == (6000, 2)
    assert float(jnp.abs(board).max()) <= 2.0
    cell = jnp.floor(board + 2.0).astype(int)
    assert bool(jnp.all((cell.sum(axis=1) % 2) == 0))
    # All 8 black squares are used.
    assert len({tuple(c) for c in np.asarray(cell)}) == 8


# The config.data keys get_dataset reads for every teacher / mixture, at their defaults
# (experiments/defaults.py).
DATA_DEFAULTS = dict(teacher="published", teacher_theta=None, teacher_cosine=0.2,
                     teacher_seed=0, mixture_means=None, mixture_stds=None)


def _config(name, dim, num_reference=50, **extra):
    """A small config: 100 train, 40 test and `num_reference` reference samples."""
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(
        dict(DATA_DEFAULTS, name=name, dim=dim, num_train=100, num_test=40, **extra))
    config.eval = ml_collections.ConfigDict(dict(num_samples=num_reference))
    return config


@pytest.mark.parametrize("name, dim, manifold, extra", [
    ("teacher", 3, "sphere", {}),
    ("mixture", 4, "euclidean",
     dict(mixture_weights=[0.2, 0.8], mixture_separation=4.0, mixture_std=0.5)),
    ("eight_gaussians", 2, "euclidean", {}),
    ("rings", 2, "euclidean", {}),
    ("checkerboard", 2, "euclidean", {}),
])
def test_get_dataset(key, name, dim, manifold, extra):
    dataset = synthetic.get_dataset(_config(name, dim, **extra), key)
    assert dataset.name == name and dataset.manifold == manifold
    assert dataset.train.shape == (100, dim) and dataset.test.shape == (40, dim)
    assert dataset.train.dtype == jnp.float32
    if dataset.target_energy_fn is not None:
        energy = dataset.target_energy_fn(dataset.target_params, dataset.test[0])
        assert energy.shape == () and bool(jnp.isfinite(energy))
    if name in ("mixture", "eight_gaussians"):
        assert dataset.mixture is not None
    if name in ("eight_gaussians", "rings", "checkerboard"):
        assert dataset.box == (-4.0, 4.0)
    if name in ("rings", "checkerboard"):
        assert dataset.reference is None
    else:  # exact samples of p*, none of them a test point
        assert dataset.reference.shape == (50, dim)
        reference, test = np.asarray(dataset.reference), np.asarray(dataset.test)
        assert not np.any(np.all(reference[:, None, :] == test[None, :, :], axis=-1))


def test_reference_leaves_train_and_test_unchanged(key):
    """Train and test come from `key` as without reference samples; the reference from
    fold_in(key, 1), independent of them."""
    dataset = synthetic.get_dataset(_config("teacher", 15), key)
    expected = synthetic.sample_teacher(key, synthetic.published_teacher(15), 140)
    np.testing.assert_array_equal(dataset.train, expected[:100])
    np.testing.assert_array_equal(dataset.test, expected[100:])
    np.testing.assert_array_equal(
        dataset.reference,
        synthetic.sample_teacher(jax.random.fold_in(key, 1), dataset.target_params, 50))


def test_get_dataset_explicit_teacher(key):
    rows = [[1.0, 1.0, 0.0], [0.0, 0.0, -2.0], [0.5, -0.5, 0.0]]
    config = _config("teacher", 3, teacher="explicit", teacher_theta=rows)
    dataset = synthetic.get_dataset(config, key)
    teacher = dataset.target_params
    np.testing.assert_allclose(teacher.theta, synthetic.teacher_from_directions(rows).theta)
    np.testing.assert_allclose(np.linalg.norm(teacher.theta, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(teacher.theta[1], [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(teacher.signed_weights, [-10.0] * 3)
    # The data are exact samples of this teacher: the same draw as sampling it directly.
    np.testing.assert_array_equal(dataset.train,
                                  synthetic.sample_teacher(key, teacher, 140)[:100])


def test_general_mixture_from_config(key):
    """Four modes at (±2.5, ±2.5) with their own stds and weights, from config keys.

    Neighbouring means are 5 apart, so every decision boundary of `assign_modes` is
    about 2.5 from a mean, ≥ 6 stds of the widest mode (0.4): the chance that a sample
    is assigned to another mode than its own is below 1e-8, negligible for n = 20000,
    as is the truncation this causes in the per-mode std.
    """
    means = [[-2.5, -2.5], [-2.5, 2.5], [2.5, -2.5], [2.5, 2.5]]
    stds, weights = np.array([0.3, 0.2, 0.4, 0.3]), np.array([0.1, 0.2, 0.3, 0.4])
    n = 20_000
    config = _config("mixture", 2, num_reference=n, mixture_means=means,
                     mixture_stds=list(stds), mixture_weights=list(weights))
    dataset = synthetic.get_dataset(config, key)
    mixture = dataset.mixture
    np.testing.assert_allclose(mixture.stds, stds, rtol=1e-6)
    np.testing.assert_allclose(mixture.weights, weights, rtol=1e-6)
    np.testing.assert_allclose(dataset.box, (-5.7, 5.7), rtol=1e-6)  # 2.5 + 8 · 0.4
    samples = np.asarray(dataset.reference, np.float64)
    assert samples.shape == (n, 2)
    modes = np.asarray(mixture.assign_modes(dataset.reference))
    fractions = np.bincount(modes, minlength=4) / n
    stderr = np.sqrt(weights * (1 - weights) / n)  # binomial standard error
    np.testing.assert_array_less(np.abs(fractions - weights), NUM_SE * stderr)
    for k in range(4):
        # Std from the d · n_k residual coordinates about the known mean: a sample std of
        # N values has standard error ≈ σ/√(2N).
        residuals = samples[modes == k] - np.asarray(means[k])
        std = np.sqrt(np.mean(residuals**2))
        assert abs(std - stds[k]) < NUM_SE * stds[k] / np.sqrt(2 * residuals.size), (k, std)


def test_make_mixture_stds_and_errors():
    mixture = synthetic.make_mixture([[0.0, 0.0], [3.0, 0.0]], [1.0, 0.1], [3.0, 1.0])
    np.testing.assert_allclose(mixture.weights, [0.75, 0.25])
    # Each mode's own std counts: max(0 + 8 · 1, 3 + 8 · 0.1) = 8.
    assert synthetic.mixture_box(mixture) == (-8.0, 8.0)
    np.testing.assert_array_equal(synthetic.make_mixture(np.zeros((3, 2)), 0.5).stds,
                                  [0.5] * 3)
    for args, match in [(([0.0, 1.0], 1.0), r"shape \(2,\)"),
                        ((np.zeros((2, 2)), [1.0, 1.0, 1.0]), "stds have shape"),
                        ((np.zeros((2, 2)), [1.0, 0.0]), "> 0"),
                        ((np.zeros((2, 2)), 1.0, [1.0, -1.0]), ">= 0"),
                        ((np.zeros((2, 2)), 1.0, [0.0, 0.0]), "positive sum")]:
        with pytest.raises(ValueError, match=match):
            synthetic.make_mixture(*args)


def test_mixture_box_2d(key):
    config = _config("mixture", 2, mixture_weights=[0.8, 0.2], mixture_separation=4.0,
                     mixture_std=0.5)
    dataset = synthetic.get_dataset(config, key)
    assert dataset.box == (-6.0, 6.0)  # max |μ| = 2, plus 8 std


def test_get_dataset_errors(key):
    with pytest.raises(ValueError, match="'moons'") as error:
        synthetic.get_dataset(_config("moons", 2), key)
    assert "config.data.name" in str(error.value) and "checkerboard" in str(error.value)
    with pytest.raises(ValueError, match="config.data.dim=3"):
        synthetic.get_dataset(_config("rings", 3), key)


@pytest.mark.parametrize("dim", [5, 15])
def test_langevin_bias_marginal_matches_exact_teacher_samples(dim):
    """experiments.langevin_bias reads the KL off the (a, b) marginal of p* in the teacher's
    plane, ∝ exp(−f*) (1 − a² − b²)^{(d−4)/2}. On exact teacher samples its binned KL is
    pure histogram noise: 2n·KL ≈ χ²_{K−1} over the K bins with mass, so it must stay below
    the χ² quantile at 1 − 1e-6 (fixed seed). The exponent (d−2)/2 or (d−6)/2 of a wrong
    marginal must exceed it: the test can tell the formula apart."""
    from experiments import langevin_bias

    teacher = synthetic.random_teacher(dim, cosine=0.3, seed=1)
    basis = langevin_bias.plane_basis(teacher.theta)
    bins, num = 12, 40_000
    samples = np.asarray(synthetic.sample_teacher(jax.random.key(3), teacher, num))
    masses = langevin_bias.teacher_marginal_masses(teacher, basis, bins)
    bound = stats.chi2.ppf(1 - 1e-6, np.count_nonzero(masses > 1e-5) - 1) / (2 * num)
    assert langevin_bias.binned_kl(masses, samples, basis) < bound
    centres = -1.0 + (np.arange(bins) + 0.5) * 2.0 / bins
    one_minus_r2 = np.clip(1.0 - centres[:, None]**2 - centres[None, :]**2, 0.05, None)
    for power in (1, -1):  # exponent (d−2)/2, (d−6)/2, at bin centres
        wrong = masses * one_minus_r2**power
        assert langevin_bias.binned_kl(wrong / wrong.sum(), samples, basis) > bound
