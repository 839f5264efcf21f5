"""MNIST from the official IDX files (gzipped or not), with clear errors for bad files.

Written here rather than through TFDS: TFDS would download and prepare the data
set, which needs network access and TensorFlow; the IDX format is eight bytes of
header and raw uint8 pixels, read with NumPy.

Format: magic (2 zero bytes, dtype code 0x08 = uint8, number of dimensions),
then one big-endian uint32 per dimension, then the data.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

IMAGE_FILES = ("t10k-images-idx3-ubyte", "train-images-idx3-ubyte")
LABEL_FILES = ("t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte")


class DatasetError(RuntimeError):
    """A data file is missing, truncated or not in the expected format."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except FileNotFoundError:
        raise DatasetError(f"data file {path} does not exist") from None
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"data file {path} is not a readable gzip file ({error})") from None


def read_idx(path) -> np.ndarray:
    """The uint8 array stored in an IDX file. Raises DatasetError on a bad file."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DatasetError(f"data file {path} is not an IDX file of uint8 (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"data file {path} is truncated (header of {header} bytes expected)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DatasetError(f"data file {path} has {len(raw)} bytes, expected {expected} for "
                           f"shape {shape}: truncated or corrupt")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stems) -> Path:
    for stem in stems:
        for name in (stem + ".gz", stem):
            if (directory / name).exists():
                return directory / name
    raise DatasetError(f"no MNIST file in {directory}: expected one of "
                       f"{', '.join(s + '[.gz]' for s in stems)}")


def load_mnist(directory, as_uint8: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 784) float32 in [0, 1], labels (n,) int32) from the IDX files in `directory`.

    as_uint8: keep the stored pixels (n, 784) uint8 in [0, 255] (for streaming; the
    device casts them).

    Reads the training files if present, else the test files (the 10,000 official
    test images are what this project's machines hold).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"MNIST directory {directory} does not exist (set config.data.path)")
    images = read_idx(_find(directory, IMAGE_FILES[::-1]))
    labels = read_idx(_find(directory, LABEL_FILES[::-1]))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"MNIST files in {directory} disagree: images {images.shape}, "
                           f"labels {labels.shape}")
    images = images.reshape(len(images), -1)
    return (images if as_uint8 else images.astype(np.float32) / 255.0), labels.astype(np.int32)
