"""The project-trained classifier (ebmdual.classifier) and the Fréchet distance.

MNIST checks use the real test set at ../shared/data/mnist (skipped when absent): the
classifier is trained on items [0, 9000), the project's training split, and scored on
[9000, 10000). The Fréchet distance is checked against scipy.linalg.sqrtm.
"""

import time
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.linalg

from ebmdual import classifier
from ebmdual.data import load_mnist
from ebmdual.evaluation import frechet_distance

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
NUM_TRAIN = 9000
TRAIN_KWARGS = dict(num_steps=800, batch_size=128, learning_rate=2e-3, progress=False)


def reference_frechet(a, b):
    """The usual FID formula with scipy's general sqrtm of Σ_a Σ_b."""
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)


def test_frechet_distance_against_scipy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((600, 16)) @ rng.standard_normal((16, 16))
    b = 1.5 * rng.standard_normal((500, 16)) + 0.3
    assert frechet_distance(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-8)
    # Rank-deficient covariances (k > n) too: eigenvalues at 0 must not break it.
    a, b = rng.standard_normal((20, 32)), rng.standard_normal((25, 32)) + 1.0
    assert frechet_distance(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-6)


def test_frechet_distance_closed_form_and_identity():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 8)) @ rng.standard_normal((8, 8))
    assert frechet_distance(a, a) < 1e-8
    # A shift by δ moves only the means: distance ‖δ‖² exactly.
    shift = rng.standard_normal(8)
    assert frechet_distance(a, a + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)
    with pytest.raises(ValueError, match="expected"):
        frechet_distance(a, a[:, :4])


def test_cache_round_trip(tmp_path):
    """Tiny fake data: the second call loads (no training), with equal parameters; other
    labels or settings give another file; no temporary file is left behind."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 64)
    kwargs = dict(num_steps=5, batch_size=16, progress=False)
    params, info = classifier.load_or_train_classifier(tmp_path, "fake/set", images, labels, 3,
                                                       jax.random.key(0), **kwargs)
    assert not info["loaded"] and Path(info["path"]).name.startswith("classifier-fake_set-8x8x1-")
    again, info_again = classifier.load_or_train_classifier(
        tmp_path, "fake/set", images, labels, 3, jax.random.key(0), **kwargs)
    assert info_again["loaded"] and info_again["path"] == info["path"]
    assert info_again["train_seconds"] == info["train_seconds"]
    jax.tree.map(np.testing.assert_array_equal, params, again)
    assert classifier.classifier_features(again, images).shape == (64, 128)
    other = classifier.load_or_train_classifier(tmp_path, "fake/set", images, (labels + 1) % 3, 3,
                                                jax.random.key(0), **kwargs)[1]
    longer = classifier.load_or_train_classifier(tmp_path, "fake/set", images, labels, 3,
                                                 jax.random.key(0), **{**kwargs, "num_steps": 6})[1]
    assert len({info["path"], other["path"], longer["path"]}) == 3
    assert not other["loaded"] and not longer["loaded"]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".msgpack"] * 3


@pytest.fixture(scope="module")
def mnist():
    if not SHARED_MNIST.exists():
        pytest.skip("the shared MNIST test set is not here")
    images, labels = load_mnist(SHARED_MNIST, as_uint8=True)
    images = (images.reshape(-1, 28, 28, 1) / np.float32(255)).astype(np.float32)
    return images, labels.astype(np.int32)


@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory):
    images, labels = mnist
    cache = tmp_path_factory.mktemp("classifier_cache")
    start = time.perf_counter()
    params, info = classifier.load_or_train_classifier(
        cache, "mnist", images[:NUM_TRAIN], labels[:NUM_TRAIN], 10, jax.random.key(0),
        test_images=images[NUM_TRAIN:], test_labels=labels[NUM_TRAIN:], **TRAIN_KWARGS)
    return params, info, cache, time.perf_counter() - start


def test_mnist_accuracy(trained):
    """800 steps give 97.0–97.5 % held-out (measured, two seeds); 0.95 leaves margin, and a
    broken classifier (chance: 0.1) cannot pass."""
    _, info, _, _ = trained
    assert not info["loaded"]
    assert info["test_accuracy"] > 0.95, info


def test_mnist_cache_loads_without_training(mnist, trained):
    images, labels = mnist
    params, info, cache, first_seconds = trained
    start = time.perf_counter()
    again, info_again = classifier.load_or_train_classifier(
        cache, "mnist", images[:NUM_TRAIN], labels[:NUM_TRAIN], 10, jax.random.key(0),
        test_images=images[NUM_TRAIN:], test_labels=labels[NUM_TRAIN:], **TRAIN_KWARGS)
    seconds = time.perf_counter() - start
    assert info_again["loaded"] and info_again["test_accuracy"] == info["test_accuracy"]
    jax.tree.map(np.testing.assert_array_equal, params, again)
    assert seconds < first_seconds / 3, (seconds, first_seconds)


def test_class_histogram_matches_labels(mnist, trained):
    images, labels = mnist
    params = trained[0]
    histogram = classifier.class_histogram(params, images[NUM_TRAIN:], 10)
    label_histogram = np.bincount(labels[NUM_TRAIN:], minlength=10) / labels[NUM_TRAIN:].size
    assert histogram.shape == (10,) and histogram.sum() == pytest.approx(1.0)
    assert np.max(np.abs(histogram - label_histogram)) < 0.02, (histogram, label_histogram)


def test_frechet_floor_far_below_noise(mnist, trained):
    """Real halves of the held-out images are much closer than real images and uniform
    noise on [0, 1] (or digits of one class only)."""
    images, labels = mnist
    params = trained[0]
    held_out = images[NUM_TRAIN:]
    floor = classifier.frechet_floor(params, held_out, jax.random.key(0))
    noise = np.random.default_rng(0).uniform(size=(500, 28, 28, 1)).astype(np.float32)
    to_noise = classifier.frechet_features_distance(params, held_out[:500], noise)
    ones = images[:NUM_TRAIN][labels[:NUM_TRAIN] == 1][:500]
    to_ones = classifier.frechet_features_distance(params, held_out[:500], ones)
    assert 0 < floor < 0.1 * to_noise, (floor, to_noise)  # measured 37.5 against 1481
    assert floor < 0.2 * to_ones, (floor, to_ones)
