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
    for dim in (3, 7, 15):
        teacher = synthetic.paper_teacher(dim)
        assert teacher.theta.shape == (2, dim)
        np.testing.assert_allclose(np.linalg.norm(teacher.theta, axis=1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(teacher.signed_weights, [-10.0, -10.0])
    assert abs(_cosine(synthetic.paper_teacher(3).theta)) < 1e-7
    assert round(_cosine(synthetic.paper_teacher(15).theta), 4) == 0.2002
    assert abs(_cosine(synthetic.paper_teacher(7).theta) - 0.2) < 1e-6


def test_teacher_energy_formula():
    teacher = synthetic.paper_teacher(15)
    x = synthetic.sample_sphere(jax.random.PRNGKey(1), 5, 15)
    expected = -5 * jax.nn.relu(x @ teacher.theta[0]) - 5 * jax.nn.relu(x @ teacher.theta[1])
    got = jax.vmap(synthetic.teacher_energy, in_axes=(None, 0))(teacher, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_energy_lower_bound():
    teacher = synthetic.paper_teacher(15)
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
    samples = synthetic.sample_teacher(key, synthetic.paper_teacher(15), 300, batch_size=2**14)
    assert samples.shape == (300, 15) and samples.dtype == jnp.float32
    np.testing.assert_allclose(jnp.linalg.norm(samples, axis=1), 1.0, atol=1e-5)


def test_teacher_samples_match_quadrature_d3(key):
    teacher = synthetic.paper_teacher(3)
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


def _config(name, dim, **extra):
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(
        dict(name=name, dim=dim, num_train=100, num_test=40, **extra))
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
