"""Data sets for ebmdual: `get_dataset(config, key)` for every name in DATASET_NAMES.

Synthetic tasks live in `ebmdual.data.synthetic`, the MNIST IDX reader in
`ebmdual.data.mnist`.
"""

import numpy as np

from ebmdual.data import images as image_data
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

DATASET_NAMES = SYNTHETIC_DATASETS + image_data.DATASET_NAMES
EVAL_SPLITS = {"mnist": "test", "celeb_a": "test", "imagenet32": "validation"}  # TFDS splits


def get_image_dataset(data) -> Dataset:
    """An image data set from the `data` config section (manifold "image").

    MNIST from IDX files (data.path set): the official files' items [0, num_train) train
    and the next num_test evaluate (in file order: the 10,000 test images of this
    project's machines give 9000 / 1000). TFDS (data.path '' or None for mnist; celeb_a,
    imagenet32 from data.data_dir): the first num_train items of the train split, the
    first num_test of the evaluation split. Raises DatasetError (one line saying what
    to run) when the data are missing or not prepared.
    """
    name = data.name
    if name == "mnist" and data.path:
        source = image_data.mnist_idx_source(data.path)
        if data.num_train + data.num_test > len(source):
            raise DatasetError(f"config.data.num_train + num_test = "
                               f"{data.num_train + data.num_test} exceeds the {len(source)} "
                               f"MNIST images in {data.path}")
        train = image_data.split_items(source, 0, data.num_train)
        test = image_data.split_items(source, data.num_train, data.num_train + data.num_test)
    else:
        kwargs = dict(data_dir=data.data_dir,
                      image_size=data.image_size if name == "celeb_a" else None)
        train = image_data.load_image_dataset(name, split="train", **kwargs)
        test = image_data.load_image_dataset(name, split=EVAL_SPLITS[name], **kwargs)
        train = image_data.split_items(train, 0, min(data.num_train, len(train)))
        test = image_data.split_items(test, 0, min(data.num_test, len(test)))
    everything = np.arange(len(test))
    return Dataset(name, train, test[everything], "image", test_labels=test.labels(everything),
                   num_classes=test.num_classes)


def get_dataset(config, key) -> Dataset:
    """The data set named by `config.data.name` (one of DATASET_NAMES)."""
    if config.data.name in image_data.DATASET_NAMES:
        return get_image_dataset(config.data)
    return synthetic.get_dataset(config, key)
