"""Image data sets (MNIST, CelebA, ImageNet 32×32) as uint8 sources for the streamed train
loop, and the on-device dequantisation that makes them a continuous density problem.

Sources. An `ImageSource` is what `ebmdual.data.stream` reads batches from: `len(source)`
items, `source[indices] -> (k, H, W, C) uint8` in the order asked (unsorted, repeats
allowed; a slice works too), and `source.labels(indices) -> (k,) int32`, or None for a data
set without class labels. Two formats are read:

* the official MNIST IDX files (`mnist_idx_source`), read whole into memory through
  `ebmdual.data.mnist` (10,000 images are 7.8 MB);
* TFDS data sets prepared as ArrayRecord (`tfds_source`), read by index through
  `tfds.data_source`: random access without TensorFlow, images decoded by PIL. Preparing
  them needs TensorFlow once, in any environment that has it:
  `pip install -e '.[prepare]'` then `python -m experiments.prepare_data`.

Why this way rather than `tfds.load` or grain: `tfds.load` builds a tf.data pipeline, so
TensorFlow would have to be in every training process; and which items form the batch of
step t is already fixed by `ebmdual.data.stream` (a function of seed and t, so that a
resumed run reads exactly what a straight one reads). What is left is random access by
index, which is what `tfds.data_source` gives. Images stay uint8 on the host and in
transfers (a quarter of the float32 bytes); `make_image_preprocess` casts, dequantises
and scales them on the device, inside the jitted train step.

Dequantisation and bits/dim. A pixel u ∈ {0, …, 255} becomes
x = low + (high − low)·(u + U)/256, U uniform in (0, 1) per pixel, so x lies in the u-th of
256 equal bins of the data range [low, high]. A model density p(x) on [low, high]^D is
then a density on pixel units y = u + U ∈ [0, 256)^D with
−log p_y(y) = −log p(x) + D·ln(256/(high − low)) (`log_density_offset`), and
E[−log p_y] bounds the NLL of the discrete 8-bit data from above (Theis, van den Oord and
Bethge 2016). Reported in bits per dimension: (NLL_x + offset)/(D ln 2) (`bits_per_dim`).
MNIST on [0, 1]: D = 784, offset 784·ln 256 nats (8 bits/dim); 1 bit/dim = 543.4 nats.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ebmdual.data.mnist import DatasetError, load_mnist

__all__ = [
    "DATASET_NAMES", "TFDS_SPECS", "MNIST_NUM_TRAIN", "CELEBA_CROP", "DEQUANTIZATION_LEVELS",
    "ImageSource", "mnist_idx_source", "split_items", "train_eval_split", "tfds_source",
    "load_image_dataset", "center_crop", "resize_area", "make_image_preprocess",
    "log_density_offset", "bits_per_dim", "to_unit_float",
]

DATASET_NAMES = ("mnist", "celeb_a", "imagenet32")
MNIST_SHAPE = (28, 28, 1)
MNIST_NUM_TRAIN = 9000   # of the 10,000 official test images: [0, 9000) train, the rest evaluate
CELEBA_CROP = 140        # side of the square centre crop of the 218 × 178 aligned CelebA images
IMAGENET32_TFDS_NAMES = ("imagenet_resized/32x32", "downsampled_imagenet/32x32")
DEQUANTIZATION_LEVELS = 2 ** 15  # dequantisation noise takes this many values per bin
PREPARE_EXTRA = "pip install -e '.[prepare]'"


class TfdsSpec(NamedTuple):
    """What this module knows of a TFDS image data set.

    prepare_name: the --dataset of `experiments.prepare_data` that prepares it.
    stored_shape: (H, W, C) of every stored image (checked on reading).
    label_key: the feature holding the class label, None when there is none.
    num_classes: the number of classes of that label, None when there is none.
    crop: side of the square centre crop applied before any resize, None for none.
    data_files: where the builder's source files come from (for error messages).
    """
    prepare_name: str
    stored_shape: tuple[int, int, int]
    label_key: str | None
    num_classes: int | None
    crop: int | None
    data_files: str


TFDS_SPECS = {
    "mnist": TfdsSpec(
        "mnist", MNIST_SHAPE, "label", 10, None,
        "tfds downloads the four IDX .gz files from storage.googleapis.com/cvdf-datasets/mnist;"
        " offline, put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
        " t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in --manual_dir"),
    "celeb_a": TfdsSpec(
        "celeb_a", (218, 178, 3), None, None, CELEBA_CROP,
        "a manual download: CelebA's Google Drive files img_align_celeba.zip (1.4 GB),"
        " list_eval_partition.txt, list_attr_celeba.txt, list_landmarks_align_celeba.txt and"
        " identity_CelebA.txt (mmlab.ie.cuhk.edu.hk/projects/CelebA.html), in --manual_dir"),
    "imagenet_resized/32x32": TfdsSpec(
        "imagenet32", (32, 32, 3), "label", 1000, None,
        "a manual download: Imagenet32_train_npz.zip and Imagenet32_val_npz.zip from"
        " image-net.org (an ImageNet account), in --manual_dir"),
    "downsampled_imagenet/32x32": TfdsSpec(
        "downsampled_imagenet/32x32", (32, 32, 3), None, None, None,
        "a manual download: train_32x32.tar and valid_32x32.tar of image-net.org/small,"
        " in --manual_dir"),
}


class _NotPrepared(DatasetError):
    """The data set is not prepared (as ArrayRecord) in the data directory."""


# ---------------------------------------------------------------------------------------
# Image transforms (host, NumPy + PIL)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central (size, size, C) square of an (H, W, C) image; when H − size or W − size
    is odd the extra row or column is dropped at the bottom or right."""
    height, width = image.shape[:2]
    if size > min(height, width):
        raise ValueError(f"crop {size} exceeds the image's {height} × {width}")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def resize_area(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 → (size, size, C) uint8 by area averaging: PIL's BOX filter, each
    output pixel the mean of the input pixels its footprint covers (fractional ones
    weighted by the part covered), the usual filter for downsampling. PIL computes it in
    two separable 8-bit passes, so a pixel may differ by 1 from the exactly rounded mean."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    channels = image.shape[2]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = np.asarray(pil.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)
    return out[..., None] if channels == 1 else out


def _transform(crop: int | None, size: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """image (H, W, C) uint8 → centre crop to `crop` (if given), then area resize to
    `size` (if given)."""
    def transform(image):
        if crop is not None:
            image = center_crop(image, crop)
        if size is not None:
            image = resize_area(image, size)
        return image
    return transform


def _output_shape(stored_shape, crop: int | None, size: int | None) -> tuple[int, int, int]:
    """(H, W, C) after `_transform(crop, size)`, refusing upsampling and non-square resizes."""
    height, width, channels = stored_shape
    if crop is not None:
        height = width = crop
    if size is None:
        return (height, width, channels)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"image_size must be a positive integer or None, got {size!r}")
    if height != width or size > height:
        raise ValueError(f"image_size {size} needs a square image of side ≥ {size} to "
                         f"downsample, and the images are {height} × {width}")
    return (int(size), int(size), channels)


# ---------------------------------------------------------------------------------------
# Readers: read(distinct sorted indices, with_labels) -> (images, labels or None)


class _ArrayReader:
    """Images (n, H, W, C) uint8 and labels (n,) int32 (or None) held in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None):
        self.images, self.label_array = images, labels
        self.has_labels = labels is not None

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: np.ndarray, with_labels: bool):
        labels = self.label_array[indices] if with_labels and self.has_labels else None
        return self.images[indices], labels


class _TfdsReader:
    """Items of a TFDS data source: decoded examples → checked, cropped, resized images.

    Large reads are cut into `num_threads` parts read in parallel threads: the ArrayRecord
    reader is thread-safe, and PIL releases the GIL while it decodes and resizes."""

    MIN_ITEMS_PER_THREAD = 16

    def __init__(self, data_source, name: str, spec: TfdsSpec, image_size: int | None,
                 num_threads: int = 1):
        self.data_source, self.name, self.spec = data_source, name, spec
        self.transform = _transform(spec.crop, image_size)
        self.has_labels = spec.label_key is not None
        self.num_threads = max(1, int(num_threads))
        self._pool = None

    def __len__(self) -> int:
        return len(self.data_source)

    def _examples(self, keys: list[int]) -> Sequence[dict]:
        getitems = getattr(self.data_source, "__getitems__", None)
        if getitems is not None:
            return getitems(keys)
        return [self.data_source[key] for key in keys]

    def _image(self, example: dict, index: int) -> np.ndarray:
        image = np.asarray(example["image"])
        if image.shape != self.spec.stored_shape or image.dtype != np.uint8:
            raise DatasetError(
                f"item {index} of {self.name} is a {image.dtype} image of shape "
                f"{image.shape}, expected uint8 {self.spec.stored_shape}: the prepared files "
                f"are not the data set this reader expects (prepare it again with "
                f"experiments.prepare_data)")
        return self.transform(image)

    def _read_part(self, indices: np.ndarray, with_labels: bool):
        keys = [int(i) for i in indices]
        examples = self._examples(keys)
        images = np.stack([self._image(ex, key) for ex, key in zip(examples, keys)])
        labels = None
        if with_labels and self.has_labels:
            labels = np.asarray([ex[self.spec.label_key] for ex in examples], np.int32)
        return images, labels

    def read(self, indices: np.ndarray, with_labels: bool):
        num_parts = min(self.num_threads, len(indices) // self.MIN_ITEMS_PER_THREAD)
        if num_parts <= 1:
            return self._read_part(indices, with_labels)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, "ebmdual-images")
        parts = list(self._pool.map(lambda part: self._read_part(part, with_labels),
                                    np.array_split(indices, num_parts)))
        labels = None
        if parts[0][1] is not None:
            labels = np.concatenate([part[1] for part in parts])
        return np.concatenate([part[0] for part in parts]), labels


# ---------------------------------------------------------------------------------------
# The source


class ImageSource:
    """Images of one data set, read by index: the source `ebmdual.data.stream` batches.

    source[indices]: indices an int array (any order, repeats allowed; negative ones count
      from the end), an int or a slice → uint8 images of shape indices.shape + image_shape,
      exactly as stored after crop and resize.
    source.labels(indices): int32 labels of shape indices.shape, or None when the data set
      has no class labels.
    image_shape (H, W, C); num_classes (int or None); name; shape = (len, H, W, C) and
    dtype = uint8, like an array's.

    A source may be a contiguous range [first, stop) of another's items (`split_items`).
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, name: str, reader, image_shape: tuple[int, int, int],
                 num_classes: int | None = None, first: int = 0, stop: int | None = None):
        self.name = name
        self._reader = reader
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = num_classes if reader.has_labels else None
        stop = len(reader) if stop is None else stop
        if not 0 <= first <= stop <= len(reader):
            raise ValueError(f"items [{first}, {stop}) are not within the {len(reader)} "
                             f"items of {name}")
        self._first, self._stop = int(first), int(stop)

    def __len__(self) -> int:
        return self._stop - self._first

    @property
    def shape(self) -> tuple[int, ...]:
        """(len, H, W, C)."""
        return (len(self), *self.image_shape)

    def __repr__(self) -> str:
        return (f"ImageSource({self.name!r}, items [{self._first}, {self._stop}), "
                f"image_shape={self.image_shape}, num_classes={self.num_classes})")

    def _positions(self, index) -> np.ndarray:
        """`index` as an int64 array of positions in [0, len)."""
        if isinstance(index, slice):
            return np.arange(len(self))[index]
        positions = np.asarray(index)
        if positions.dtype == bool or not np.issubdtype(positions.dtype, np.integer):
            raise TypeError(f"{self.name} is indexed by integers or a slice, got "
                            f"{positions.dtype}")
        positions = positions.astype(np.int64)
        if positions.size and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"index out of range for the {len(self)} items of {self.name}")
        return np.where(positions < 0, positions + len(self), positions)

    def _read(self, index, with_labels: bool):
        positions = self._positions(index)
        if positions.size == 0:
            labels = np.zeros(positions.shape, np.int32) if with_labels else None
            return np.zeros((*positions.shape, *self.image_shape), np.uint8), labels
        # Each distinct item is read and decoded once, in file order.
        unique, inverse = np.unique(positions.reshape(-1), return_inverse=True)
        images, labels = self._reader.read(unique + self._first, with_labels)
        images = images[inverse].reshape(*positions.shape, *self.image_shape)
        if labels is not None:
            labels = labels[inverse].reshape(positions.shape)
        return images, labels

    def __getitem__(self, index) -> np.ndarray:
        return self._read(index, with_labels=False)[0]

    def labels(self, index) -> np.ndarray | None:
        """int32 class labels of the items at `index` (shape of `index`), or None when
        the data set has no class labels."""
        if self.num_classes is None:
            return None
        return self._read(index, with_labels=True)[1]


def split_items(source: ImageSource, first: int, stop: int) -> ImageSource:
    """The items [first, stop) of `source`, in order, as a source of stop − first items."""
    if not 0 <= first <= stop <= len(source):
        raise ValueError(f"items [{first}, {stop}) are not within the {len(source)} items "
                         f"of {source.name}")
    return ImageSource(source.name, source._reader, source.image_shape, source.num_classes,
                       source._first + first, source._first + stop)


def train_eval_split(source: ImageSource, num_train: int = MNIST_NUM_TRAIN
                     ) -> tuple[ImageSource, ImageSource]:
    """(train, eval) = items [0, num_train) and [num_train, len) of `source`, in file order.

    The project's machines hold only the 10,000 official MNIST test images: it trains on
    the first 9000 and evaluates on the last 1000. A fixed contiguous cut, not a shuffle,
    so the two are disjoint and identical on every machine, run and process.
    """
    if not 0 < num_train < len(source):
        raise ValueError(f"num_train = {num_train} must leave both parts of the "
                         f"{len(source)} items of {source.name} non-empty")
    return split_items(source, 0, num_train), split_items(source, num_train, len(source))


# ---------------------------------------------------------------------------------------
# Constructors


def mnist_idx_source(path) -> ImageSource:
    """MNIST from the official IDX files in directory `path` (the training files if there,
    else the test files): images (n, 28, 28, 1) uint8, labels int32 in [0, 10).
    Raises DatasetError for missing or corrupt files."""
    images, labels = load_mnist(path, as_uint8=True)
    return ImageSource("mnist", _ArrayReader(images.reshape(-1, *MNIST_SHAPE), labels),
                       MNIST_SHAPE, num_classes=10)


def _default_data_dir() -> Path:
    """TFDS's own default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def _prepare_hint(tfds_name: str, data_dir: Path) -> str:
    spec = TFDS_SPECS[tfds_name]
    return (f"run  {PREPARE_EXTRA}  then  python -m experiments.prepare_data "
            f"--dataset={spec.prepare_name} --data_dir={data_dir}  (needs {spec.data_files})")


def _unreadable(tfds_name: str, split: str, data_dir: Path, error: Exception) -> DatasetError:
    """The DatasetError for a data source tfds could not open: not prepared, prepared in a
    format without random access, or another problem (a bad split name)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(tfds_name, data_dir=os.fspath(data_dir))
        prepared = builder.is_prepared()
        file_format = builder.info.file_format
    except Exception:  # noqa: BLE001 - any failure to read the metadata means "not prepared"
        prepared, file_format = False, None
    if not prepared:
        return _NotPrepared(f"{tfds_name} is not prepared in {data_dir}: "
                            f"{_prepare_hint(tfds_name, data_dir)}")
    format_name = getattr(file_format, "value", file_format)
    if format_name not in (None, "array_record"):
        return DatasetError(
            f"{tfds_name} in {data_dir} is prepared as {format_name}, which has no random "
            f"access: prepare it as array_record in another directory: "
            f"{_prepare_hint(tfds_name, Path('NEW_DIR'))}")
    first_line = (str(error).strip().splitlines() or [""])[0]
    return DatasetError(f"cannot read split {split!r} of {tfds_name} in {data_dir}: "
                        f"{type(error).__name__}: {first_line}")


def _open_data_source(tfds_name: str, split: str, data_dir: Path):
    """`tfds.data_source(tfds_name, split=split)` from data_dir without downloading, or a
    DatasetError saying what to run."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(tfds_name, split=split, data_dir=os.fspath(data_dir),
                                download=False)
    except Exception as error:  # noqa: BLE001 - translated into one DatasetError below
        problem = _unreadable(tfds_name, split, data_dir, error)
    raise problem


def tfds_source(name: str, split: str, data_dir=None, image_size: int | None = None,
                num_threads: int | None = None) -> ImageSource:
    """A TFDS image data set prepared as ArrayRecord in `data_dir`, read without TensorFlow.

    name: "mnist" (28 × 28 × 1, 10 classes), "celeb_a" (218 × 178 × 3 aligned faces,
      centre-cropped to 140 × 140, the usual crop, then area-resized to image_size; no class
      labels), "imagenet_resized/32x32" (32 × 32 × 3, 1000 classes),
      "downsampled_imagenet/32x32" (32 × 32 × 3, no labels), or "imagenet32": the first of
      those two that is prepared in data_dir.
    split: a TFDS split ("train", "test", "validation", "train[:90%]", …).
    data_dir: the TFDS data directory (default $TFDS_DATA_DIR, else ~/tensorflow_datasets).
    image_size: side of the square output images (area downsampling), None for the stored
      (cropped) size.
    num_threads: threads decoding a large read (default min(8, CPU count)).

    Raises DatasetError, with the command that prepares the data, when data_dir does not
    exist, the data set is not prepared there (as ArrayRecord), or a stored image does not
    have the expected shape (when read).
    """
    candidates = IMAGENET32_TFDS_NAMES if name == "imagenet32" else (name,)
    if candidates[0] not in TFDS_SPECS:
        raise ValueError(f"unknown TFDS image data set {name!r}: expected imagenet32 or one "
                         f"of {', '.join(TFDS_SPECS)}")
    data_dir = _default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DatasetError(f"TFDS data directory {data_dir} does not exist: "
                           f"{_prepare_hint(candidates[0], data_dir)}")
    not_prepared = None
    for tfds_name in candidates:
        spec = TFDS_SPECS[tfds_name]
        image_shape = _output_shape(spec.stored_shape, spec.crop, image_size)
        try:
            data_source = _open_data_source(tfds_name, split, data_dir)
        except _NotPrepared as error:
            not_prepared = not_prepared or error
            continue
        if num_threads is None:
            num_threads = min(8, os.cpu_count() or 1)
        reader = _TfdsReader(data_source, tfds_name, spec, image_size, num_threads)
        return ImageSource(tfds_name, reader, image_shape, spec.num_classes)
    if len(candidates) > 1:
        raise DatasetError(
            f"ImageNet 32×32 is not prepared in {data_dir} (neither {' nor '.join(candidates)}"
            f" is): {_prepare_hint(candidates[0], data_dir)}")
    raise DatasetError(str(not_prepared))


def load_image_dataset(name: str, *, split: str, data_dir=None, path=None,
                       image_size: int | None = None, num_threads: int | None = None
                       ) -> ImageSource:
    """The image source named `name` (one of DATASET_NAMES).

    "mnist" with `path`: the IDX files in directory `path` (`mnist_idx_source`), where
      split "train" is items [0, 9000), "eval" items [9000, n) (`train_eval_split`) and
      "all" every item;
    "mnist" with `data_dir`, "celeb_a", "imagenet32": `tfds_source(name, split, data_dir,
      image_size, num_threads)`, split a TFDS split.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown image data set {name!r}: expected one of "
                         f"{', '.join(DATASET_NAMES)}")
    if path is not None:
        if name != "mnist" or data_dir is not None:
            raise ValueError("path= (IDX files) is for mnist alone, without data_dir=")
        if image_size not in (None, MNIST_SHAPE[0]):
            raise ValueError(f"the IDX reader keeps MNIST at 28 × 28, got image_size "
                             f"{image_size}")
        source = mnist_idx_source(path)
        parts = {"all": source}
        if split != "all":
            parts["train"], parts["eval"] = train_eval_split(source)
        if split not in parts:
            raise ValueError(f"split of the MNIST IDX files: train, eval or all, got {split!r}")
        return parts[split]
    if name == "mnist" and data_dir is None:
        raise ValueError("mnist needs path= (a directory of IDX files) or data_dir= (TFDS)")
    return tfds_source(name, split, data_dir, image_size, num_threads)


# ---------------------------------------------------------------------------------------
# Device preprocessing and likelihood units (jax)


def _check_range(data_range) -> tuple[float, float]:
    low, high = (float(v) for v in data_range)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range must be finite (low, high) with high > low, "
                         f"got {data_range}")
    return low, high


def make_image_preprocess(data_range=(0.0, 1.0), dequantize: bool = True) -> Callable:
    """`preprocess(key, batch) -> batch`, for the jitted train step: every uint8 leaf of
    the pytree `batch` (e.g. images (B, H, W, C)) becomes float32

        x = low + (high − low)·(u + U)/256,

    U uniform in (0, 1), independent per pixel, when `dequantize`; U = 1/2 (the bin centre)
    otherwise. Either way x lies strictly inside the u-th of 256 equal bins of [low, high],
    so floor(256·(x − low)/(high − low)) = u. Other leaves (labels) pass unchanged.

    U takes the DEQUANTIZATION_LEVELS = 2^15 values (j + 1/2)/2^15: u + U then needs 24
    significant bits, so it is exact in float32 and never rounds onto the next bin (a
    float32 uniform in [0, 1) added to u ≥ 128 would, once in 2^17 draws); x is exact when
    (high − low)/256 is a power of two, as for (0, 1) and (−1, 1).
    """
    low, high = _check_range(data_range)
    bin_width = (high - low) / 256.0

    def scale(key, pixels):
        if dequantize:
            grid = jax.random.bits(key, pixels.shape, jnp.uint16) >> 1  # j in [0, 2^15)
            noise = (grid.astype(jnp.float32) + 0.5) / DEQUANTIZATION_LEVELS
        else:
            noise = 0.5
        return low + bin_width * (pixels.astype(jnp.float32) + noise)

    def preprocess(key, batch):
        leaves, treedef = jax.tree.flatten(batch)
        keys = jax.random.split(key, len(leaves))
        return jax.tree.unflatten(treedef, [
            scale(k, leaf) if leaf.dtype == jnp.uint8 else leaf
            for k, leaf in zip(keys, leaves)])

    return preprocess


def log_density_offset(dim: int, data_range=(0.0, 1.0)) -> float:
    """D·ln(256/(high − low)): nats to add to an NLL of x ∈ [low, high]^D to get the NLL of
    the dequantised data in pixel units y = 256·(x − low)/(high − low) ∈ [0, 256)^D
    (the change of variables x → y has Jacobian (256/(high − low))^D)."""
    low, high = _check_range(data_range)
    return dim * math.log(256.0 / (high - low))


def bits_per_dim(nll_nats_x, dim: int, data_range=(0.0, 1.0)):
    """(NLL_x + log_density_offset(D))/(D ln 2): bits per dimension of the dequantised
    8-bit data, from a negative log-likelihood in nats of x on `data_range` (a float or
    an array of them)."""
    return (nll_nats_x + log_density_offset(dim, data_range)) / (dim * math.log(2.0))


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 images → float32 in [0, 1] (u/255), on the host, for plotting."""
    return np.asarray(images, np.float32) / np.float32(255.0)
