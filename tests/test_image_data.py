"""Image data sources (ebmdual.data.images): the real MNIST test set, TFDS data sets under
`tfds.testing.mock_data`, the errors that say what to run, the dequantisation and the
bits/dim bookkeeping."""

from __future__ import annotations

import contextlib
import importlib.util
import math
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmdual.data import DatasetError, load_mnist
from ebmdual.data import images as image_data
from ebmdual.data.stream import batch_indices, read_chunk

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not SHARED_MNIST.exists(), reason=f"the shared MNIST test set is not at {SHARED_MNIST}")
PREPARE = "pip install -e '.[prepare]'  then  python -m experiments.prepare_data"
NUM_MOCK = 40


# ---------------------------------------------------------------------------------------
# MNIST from the official IDX files


@pytest.fixture(scope="module")
def mnist():
    """(source, images (n, 28, 28, 1) uint8, labels (n,)) from the shared test set."""
    if not SHARED_MNIST.exists():
        pytest.skip(f"the shared MNIST test set is not at {SHARED_MNIST}")
    images, labels = load_mnist(SHARED_MNIST, as_uint8=True)
    return image_data.mnist_idx_source(SHARED_MNIST), images.reshape(-1, 28, 28, 1), labels


@needs_mnist
def test_mnist_idx_source_reads_what_is_stored(mnist):
    source, images, labels = mnist
    assert len(source) == 10_000 and source.shape == (10_000, 28, 28, 1)
    assert source.dtype == np.uint8 and source.image_shape == (28, 28, 1)
    assert source.num_classes == 10 and source.name == "mnist"
    index = np.array([9999, 3, 3, 0, 5000, 3], np.int64)   # unsorted, with repeats
    batch = source[index]
    assert batch.dtype == np.uint8 and batch.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(batch, images[index])
    got = source.labels(index)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, labels[index])
    assert set(np.unique(source.labels(np.arange(10_000)))) == set(range(10))
    np.testing.assert_array_equal(source[:128], images[:128])
    np.testing.assert_array_equal(source[-1], images[-1])
    assert source[np.arange(6).reshape(2, 3)].shape == (2, 3, 28, 28, 1)
    assert source[np.zeros(0, np.int64)].shape == (0, 28, 28, 1)
    with pytest.raises(IndexError):
        source[np.array([10_000])]
    with pytest.raises(TypeError):
        source[np.array([0.5])]


@needs_mnist
def test_train_eval_split_is_9000_then_1000_in_order(mnist):
    source, images, labels = mnist
    train, evaluation = image_data.train_eval_split(source)
    assert (len(train), len(evaluation)) == (9000, 1000)
    np.testing.assert_array_equal(train[:], images[:9000])
    np.testing.assert_array_equal(evaluation[:], images[9000:])
    np.testing.assert_array_equal(evaluation.labels(np.arange(1000)), labels[9000:])
    # The same rule through load_image_dataset; a split of a split composes its offsets.
    for split, size in (("train", 9000), ("eval", 1000), ("all", 10_000)):
        assert len(image_data.load_image_dataset("mnist", split=split, path=SHARED_MNIST)) == size
    inner = image_data.split_items(evaluation, 10, 20)
    np.testing.assert_array_equal(inner[:], images[9010:9020])
    with pytest.raises(ValueError):
        image_data.train_eval_split(source, num_train=10_000)
    with pytest.raises(ValueError):
        image_data.load_image_dataset("mnist", split="test", path=SHARED_MNIST)


@needs_mnist
def test_stream_reads_chunks_from_an_image_source(mnist):
    source, images, _ = mnist
    train, _ = image_data.train_eval_split(source)
    chunk = read_chunk(train, seed=3, first_step=5, num_steps=3, batch_size=16)
    assert chunk.shape == (3, 16, 28, 28, 1) and chunk.dtype == np.uint8
    np.testing.assert_array_equal(chunk[1], images[batch_indices(3, 6, 9000, 16)])


def test_missing_idx_directory_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        image_data.load_image_dataset("mnist", split="train", path=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------
# TFDS data sources under tfds.testing.mock_data


@contextlib.contextmanager
def mock_tfds(**kwargs):
    """`tfds.testing.mock_data` for `tfds.data_source`, with its batch read repaired.

    MockPolicy.USE_CODE takes the features from the builder's code (no metadata files;
    the data_dir given is ignored) and generates random examples, deterministic per index.
    In tensorflow-datasets 4.9.10 the mock's `__getitems__` is a functools.partial set as a
    plain attribute of a MagicMock, so it is called without the `self` its function
    expects and raises TypeError; it is replaced here by what the real reader does: the
    examples at the keys, in order.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    def getitems(record_keys, generator, serialized=False):
        assert not serialized
        return [generator[key] for key in record_keys]

    with mock.patch.object(mocking, "_getitems", getitems), tfds.testing.mock_data(
            num_examples=NUM_MOCK, policy=tfds.testing.MockPolicy.USE_CODE, **kwargs):
        yield tfds


@pytest.mark.parametrize("image_size", [32, 64])
def test_celeb_a_is_cropped_and_resized(tmp_path, image_size):
    index = np.array([7, 2, 2, 39], np.int64)
    with mock_tfds():
        source = image_data.load_image_dataset("celeb_a", split="train", data_dir=tmp_path,
                                               image_size=image_size)
        batch = source[index]
    assert len(source) == NUM_MOCK and source.image_shape == (image_size, image_size, 3)
    assert batch.shape == (4, image_size, image_size, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[1], batch[2])
    assert source.num_classes is None and source.labels(index) is None


def test_celeb_a_crop_is_the_central_140_square(tmp_path):
    index = np.array([5, 1, 30, 30], np.int64)
    with mock_tfds() as tfds:
        raw = tfds.data_source("celeb_a", split="train", data_dir=tmp_path)
        expected = np.stack([raw[int(i)]["image"][39:179, 19:159] for i in index])
        one_thread = image_data.tfds_source("celeb_a", "train", tmp_path, num_threads=1)
        got = one_thread[index]
        # 40 items: cut into two parts read in two threads, the same images in order.
        threaded = image_data.tfds_source("celeb_a", "train", tmp_path, image_size=32,
                                          num_threads=2)
        serial = image_data.tfds_source("celeb_a", "train", tmp_path, image_size=32,
                                        num_threads=1)
        order = np.random.default_rng(0).permutation(NUM_MOCK)
        np.testing.assert_array_equal(threaded[order], serial[order])
    assert got.shape == (4, 140, 140, 3)
    np.testing.assert_array_equal(got, expected)


def test_imagenet32_has_1000_classes(tmp_path):
    index = np.arange(NUM_MOCK)[::-1]
    with mock_tfds() as tfds:
        source = image_data.load_image_dataset("imagenet32", split="train", data_dir=tmp_path)
        raw = tfds.data_source("imagenet_resized/32x32", split="train", data_dir=tmp_path)
        images, labels = source[index], source.labels(index)
        expected_images = np.stack([raw[int(i)]["image"] for i in index])
        expected_labels = [raw[int(i)]["label"] for i in index]
    assert source.name == "imagenet_resized/32x32" and source.num_classes == 1000
    assert images.shape == (NUM_MOCK, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected_images)
    assert labels.dtype == np.int32 and labels.shape == (NUM_MOCK,)
    assert ((0 <= labels) & (labels < 1000)).all()
    np.testing.assert_array_equal(labels, expected_labels)


def test_mnist_through_tfds(tmp_path):
    with mock_tfds():
        source = image_data.load_image_dataset("mnist", split="test", data_dir=tmp_path)
        images, labels = source[:8], source.labels(np.arange(8))
    assert images.shape == (8, 28, 28, 1) and images.dtype == np.uint8
    assert source.num_classes == 10 and ((0 <= labels) & (labels < 10)).all()


def examples(shape, num=6):
    """A data source without __getitems__: a list of decoded examples."""
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": np.int64(i % 10)}
            for i in range(num)]


def test_a_source_without_batch_reads_is_read_item_by_item(tmp_path):
    items = examples((28, 28, 1))
    with mock_tfds(as_data_source_fn=lambda builder, split, **kwargs: items):
        source = image_data.tfds_source("mnist", "train", tmp_path)
        np.testing.assert_array_equal(source[np.array([4, 1, 4])],
                                      np.stack([items[i]["image"] for i in (4, 1, 4)]))
        np.testing.assert_array_equal(source.labels(np.array([4, 1])), [4, 1])


def test_wrong_image_shape_is_a_dataset_error(tmp_path):
    with mock_tfds(as_data_source_fn=lambda builder, split, **kwargs: examples((30, 30, 3))):
        source = image_data.tfds_source("mnist", "train", tmp_path)
        with pytest.raises(DatasetError,
                           match=r"shape \(30, 30, 3\), expected uint8 \(28, 28, 1\)"):
            source[np.array([0])]


def test_resizing_rules():
    image = np.arange(218 * 178 * 3, dtype=np.int64).reshape(218, 178, 3).astype(np.uint8)
    np.testing.assert_array_equal(image_data.center_crop(image, 140), image[39:179, 19:159])
    rng = np.random.default_rng(1)
    square = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    block_mean = square.astype(np.float64).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    resized = image_data.resize_area(square, 32)
    assert resized.dtype == np.uint8 and resized.shape == (32, 32, 3)
    error = np.abs(resized - block_mean)   # the 2 × 2 means, up to PIL's two 8-bit passes
    assert error.max() <= 1.0 and error.mean() < 0.5
    gray = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    assert image_data.resize_area(gray, 14).shape == (14, 14, 1)
    with pytest.raises(ValueError):
        image_data.tfds_source("celeb_a", "train", ".", image_size=141)


# ---------------------------------------------------------------------------------------
# Errors that say what to run


def assert_one_clean_message(error: DatasetError, *parts: str):
    message = str(error)
    assert "\n" not in message and error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    for part in parts:
        assert part in message, (part, message)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DatasetError) as caught:
        image_data.load_image_dataset("celeb_a", split="train", data_dir=tmp_path / "nowhere",
                                      image_size=64)
    assert_one_clean_message(caught.value, "does not exist",
                             f"{PREPARE} --dataset=celeb_a --data_dir={tmp_path / 'nowhere'}",
                             "manual download")


def test_unprepared_data_sets(tmp_path):
    with pytest.raises(DatasetError) as caught:
        image_data.load_image_dataset("celeb_a", split="train", data_dir=tmp_path)
    assert_one_clean_message(caught.value, f"celeb_a is not prepared in {tmp_path}",
                             f"{PREPARE} --dataset=celeb_a --data_dir={tmp_path}",
                             "img_align_celeba.zip")
    with pytest.raises(DatasetError) as caught:
        image_data.load_image_dataset("imagenet32", split="train", data_dir=tmp_path)
    assert_one_clean_message(caught.value, "imagenet_resized/32x32", "downsampled_imagenet/32x32",
                             f"{PREPARE} --dataset=imagenet32 --data_dir={tmp_path}",
                             "Imagenet32_train_npz.zip")


def test_bad_arguments():
    with pytest.raises(ValueError, match="path="):
        image_data.load_image_dataset("mnist", split="train")
    with pytest.raises(ValueError, match="unknown"):
        image_data.load_image_dataset("cifar10", split="train", data_dir=".")


def test_prepare_data_without_tensorflow_says_what_to_install(tmp_path, monkeypatch, capsys):
    from experiments import prepare_data

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else find_spec(name, *a))
    assert prepare_data.main(["--dataset=celeb_a", f"--data_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install -e '.[prepare]'" in err
    with pytest.raises(SystemExit) as caught:
        prepare_data.main(["--dataset=cifar10", f"--data_dir={tmp_path}"])
    assert caught.value.code == 2


# ---------------------------------------------------------------------------------------
# Dequantisation and likelihood units


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize("dequantize", [True, False])
def test_preprocess_keeps_each_pixel_in_its_bin(data_range, dequantize):
    low, high = data_range
    pixels = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    pixels[0], pixels[1] = 0, 255   # the edges, where rounding would leave the bin
    preprocess = jax.jit(image_data.make_image_preprocess(data_range, dequantize))
    x = np.asarray(preprocess(jax.random.key(1), pixels))
    assert x.dtype == np.float32 and x.shape == pixels.shape
    assert low < x.min() and x.max() < high
    position = 256.0 * (x.astype(np.float64) - low) / (high - low)   # u + U in pixel units
    np.testing.assert_array_equal(np.floor(position), pixels)
    noise = position - pixels
    if dequantize:
        assert abs(noise.mean() - 0.5) < 0.01 and abs(noise.std() - math.sqrt(1 / 12)) < 0.01
        other = np.asarray(preprocess(jax.random.key(2), pixels))
        assert (other != x).mean() > 0.99
    else:
        np.testing.assert_array_equal(noise, 0.5)


def test_dequantisation_never_reaches_the_next_bin():
    pixels = np.full((512, 784), 255, np.uint8)   # 4e5 draws: the largest noise values occur
    x = image_data.make_image_preprocess((0.0, 1.0))(jax.random.key(0), pixels)
    assert float(jnp.max(x)) < 1.0
    np.testing.assert_array_equal(np.floor(256.0 * np.asarray(x, np.float64)), 255)


def test_preprocess_leaves_labels_alone():
    batch = {"image": np.zeros((4, 2, 2, 1), np.uint8), "label": np.arange(4, dtype=np.int32)}
    out = image_data.make_image_preprocess()(jax.random.key(0), batch)
    assert out["image"].dtype == jnp.float32
    np.testing.assert_array_equal(out["label"], batch["label"])


def test_log_density_offset_and_bits_per_dim():
    dim = 784
    nats_per_bit = dim * math.log(2.0)   # one bit per dimension of an MNIST image, in nats
    assert abs(nats_per_bit - 543.4) < 0.05
    assert math.isclose(image_data.log_density_offset(dim), 8 * nats_per_bit)
    assert math.isclose(image_data.log_density_offset(dim, (-1.0, 1.0)), 7 * nats_per_bit)
    nll = 1234.5
    assert math.isclose(image_data.bits_per_dim(nll + nats_per_bit, dim)
                        - image_data.bits_per_dim(nll, dim), 1.0)
    # The uniform density on the data range spreads mass evenly over the 256 levels: 8 bits
    # per dimension, whatever the range (its NLL in x is D·ln(high − low)).
    for low, high in [(0.0, 1.0), (-1.0, 1.0), (-0.5, 0.25)]:
        nll_uniform = dim * math.log(high - low)
        assert math.isclose(image_data.bits_per_dim(nll_uniform, dim, (low, high)), 8.0)
    np.testing.assert_allclose(image_data.bits_per_dim(jnp.array([0.0, nats_per_bit]), dim),
                               [8.0, 9.0], rtol=1e-6)
    with pytest.raises(ValueError):
        image_data.log_density_offset(dim, (1.0, 1.0))


def test_to_unit_float():
    out = image_data.to_unit_float(np.array([0, 51, 255], np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.2, 1.0])
