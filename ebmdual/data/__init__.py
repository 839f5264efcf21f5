"""Data sets for ebmdual: `get_dataset(config, key)` for every name in DATASET_NAMES.

Synthetic tasks live in `ebmdual.data.synthetic`, the MNIST IDX reader in
`ebmdual.data.mnist`.
"""

import jax
import numpy as np

from ebmdual.data.mnist import DatasetError, load_mnist

from ebmdual.data import synthetic
from ebmdual.data.synthetic import (
    SYNTHETIC_DATASETS,
    TEACHER_KINDS,
    Dataset,
    GaussianMixture,
    Teacher,
    eight_gaussians,
    energy_lower_bound,
    line_mixture,
    make_mixture,
    make_teacher,
    mixture_box,
    mixture_energy,
    orthogonal_teacher,
    published_teacher,
    random_teacher,
    sample_checkerboard,
    sample_rings,
    sample_sphere,
    sample_teacher,
    teacher_energy,
    teacher_from_directions,
)

__all__ = [
    "DATASET_NAMES", "DatasetError", "Dataset", "load_mnist", "GaussianMixture", "Teacher",
    "TEACHER_KINDS", "eight_gaussians", "energy_lower_bound", "get_dataset", "line_mixture",
    "make_mixture", "make_teacher", "mixture_box", "mixture_energy", "orthogonal_teacher",
    "published_teacher", "random_teacher", "sample_checkerboard", "sample_rings",
    "sample_sphere", "sample_teacher", "teacher_energy", "teacher_from_directions",
]

DATASET_NAMES = SYNTHETIC_DATASETS + ("mnist",)


def get_mnist_dataset(config, key) -> Dataset:
    """MNIST images as stored, (n, 784) uint8, from `config.data.path`, shuffled by `key`,
    split into num_train / num_test (host NumPy arrays; the trainer's preprocessing
    scales them to [0, 1] on the device). Raises DatasetError for missing or corrupt files."""
    images, _ = load_mnist(config.data.path, as_uint8=True)
    wanted = config.data.num_train + config.data.num_test
    if wanted > len(images):
        raise DatasetError(f"config.data.num_train + num_test = {wanted} exceeds the "
                           f"{len(images)} MNIST images in {config.data.path}")
    images = images[np.asarray(jax.random.permutation(key, len(images)))[:wanted]]
    return Dataset("mnist", images[:config.data.num_train], images[config.data.num_train:],
                   "euclidean")


def get_dataset(config, key) -> Dataset:
    """The data set named by `config.data.name` (one of DATASET_NAMES)."""
    if config.data.name == "mnist":
        return get_mnist_dataset(config, key)
    return synthetic.get_dataset(config, key)
