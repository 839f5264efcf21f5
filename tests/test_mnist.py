"""The MNIST IDX reader: real files when present, files written here, and clear errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ebmdual.data import DatasetError, load_mnist
from ebmdual.data.mnist import read_idx

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def fake_mnist(directory: Path, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", images)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", labels)
    return images, labels


def test_reads_files_it_wrote(tmp_path):
    images, labels = fake_mnist(tmp_path)
    x, y = load_mnist(tmp_path)
    assert x.shape == (300, 784) and x.dtype == np.float32
    np.testing.assert_array_equal(x, images.reshape(300, -1) / np.float32(255))
    np.testing.assert_array_equal(y, labels)


def test_uncompressed_idx(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="the shared MNIST test set is not here")
def test_real_mnist_test_set():
    x, y = load_mnist(SHARED_MNIST)
    assert x.shape == (10_000, 784) and y.shape == (10_000,)
    assert 0.0 <= x.min() and x.max() == 1.0 and set(np.unique(y)) == set(range(10))


def test_missing_directory_and_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no MNIST file"):
        load_mnist(tmp_path)


def test_corrupt_files(tmp_path):
    fake_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # cut mid-stream
    with pytest.raises(DatasetError, match="not a readable gzip file"):
        load_mnist(tmp_path)
    path.write_bytes(gzip.compress(b"\x01\x02\x03\x04 not an idx file"))
    with pytest.raises(DatasetError, match="bad magic number"):
        load_mnist(tmp_path)
    raw = gzip.decompress(good)
    path.write_bytes(gzip.compress(raw[:-100]))  # valid gzip, truncated payload
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_mnist(tmp_path)
