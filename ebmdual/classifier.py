"""A small CNN classifier trained in the project, for Fréchet distances and class histograms.

    NOT FID. Distances computed from this classifier's features are NOT comparable to the
    Inception-based FID of the literature (Heusel et al., 2017), nor across classifiers
    (another seed, architecture, training run or data set gives other numbers). Compare
    them only between models scored with the same cached classifier, and always beside
    the real-vs-real floor (`frechet_floor`).

Why a classifier of our own: the machines this project runs on reach no network beyond
package registries, so no pretrained Inception weights can be downloaded
(docs/evaluation.md), and for 28 × 28 grey digits Inception features would fit poorly
anyway. A small CNN trained on the project's own training images gives
* `classifier_features`: its penultimate layer (k = 128 by default), the features of
  `frechet_features_distance` = `ebmdual.evaluation.frechet_distance` of two image sets;
* `class_histogram`: the fractions of images it assigns to each class, which shows
  mode dropping or reweighting in model samples (compare with the labels' histogram).

The network, on images (n, H, W, C) already scaled to the model's data range (e.g. MNIST in
[0, 1]): conv 3×3 stride 2 (32 channels) → swish → conv 3×3 stride 2 (64) → swish →
flatten → dense (k) → swish = features → dense (num_classes) = logits. No batch norm, so
an image's features do not depend on the rest of its batch. Trained by Adam on the softmax
cross-entropy over minibatches drawn with replacement.

`load_or_train_classifier` caches the parameters on disk keyed by the data set's name, the
image shape and a SHA-256 of the training images, labels, class count, training settings
and key, written atomically (temporary file + os.replace), so every evaluation of a study
uses the same classifier and only the first call trains it.

Evaluation functions run on the host in chunks of `batch_size` images (the last chunk
padded, so one compiled shape) and return NumPy arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ebmdual.compiler import jit
from ebmdual.evaluation import frechet_distance

__all__ = [
    "ConvClassifier", "train_classifier", "classifier_logits", "classifier_features",
    "classifier_accuracy", "load_or_train_classifier", "class_histogram",
    "frechet_features_distance", "frechet_floor",
]

CACHE_FORMAT = 1  # part of the cache key: bump when the network or the training changes
EVAL_BATCH_SIZE = 1000


class ConvClassifier(nn.Module):
    """images (n, H, W, C) -> (logits (n, num_classes), features (n, num_features))."""

    num_classes: int
    num_features: int = 128
    channels: tuple[int, int] = (32, 64)

    @nn.compact
    def __call__(self, images):
        x = images
        for i, width in enumerate(self.channels):
            x = nn.swish(nn.Conv(width, (3, 3), strides=(2, 2), name=f"conv{i}")(x))
        features = nn.swish(nn.Dense(self.num_features, name="hidden")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="head")(features), features


def _module_for(params) -> ConvClassifier:
    """The ConvClassifier whose parameters `params` are (widths read from their shapes)."""
    p = params["params"]
    channels = tuple(int(p[f"conv{i}"]["kernel"].shape[-1]) for i in range(len(p) - 2))
    return ConvClassifier(num_classes=int(p["head"]["kernel"].shape[-1]),
                          num_features=int(p["hidden"]["kernel"].shape[-1]), channels=channels)


def train_classifier(images, labels, num_classes: int, key: jax.Array, *, num_steps: int = 1000,
                     batch_size: int = 128, learning_rate: float = 2e-3,
                     num_features: int = 128, progress: bool = True):
    """Train a `ConvClassifier` on images (n, H, W, C) float and labels (n,) int in
    [0, num_classes): num_steps Adam steps on the mean softmax cross-entropy of
    batch_size images drawn uniformly with replacement (batch t from fold_in(key, t)).
    Returns the flax variables {'params': ...}. Shows a tqdm bar unless progress=False.

    MNIST (train on the project's first 9,000 test-set images, score the last 1,000):
    800 steps reach 97.0–97.5 % held-out accuracy in ~16 s on 2 busy CPU cores
    (tests/test_classifier.py)."""
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"images {images.shape}, labels {labels.shape}: expected (n, H, W, C) "
                         "and (n,)")
    module = ConvClassifier(num_classes=num_classes, num_features=num_features)
    init_key, key = jax.random.split(key)
    params = module.init(init_key, images[:1])
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)

    @jit
    def step(params, opt_state, step_index):
        batch = jax.random.randint(jax.random.fold_in(key, step_index), (batch_size,), 0,
                                   images.shape[0])

        def loss_fn(params):
            logits, _ = module.apply(params, images[batch])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels[batch]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    bar = tqdm(range(num_steps), desc="classifier", disable=not progress, leave=False)
    for t in bar:
        params, opt_state, loss = step(params, opt_state, t)
        if progress and (t % 50 == 0 or t == num_steps - 1):
            bar.set_postfix(loss=f"{float(loss):.3f}")
    return params


@jit
def _forward(params, images):
    return _module_for(params).apply(params, images)


def _forward_in_chunks(params, images, batch_size: int):
    """(logits (n, num_classes), features (n, k)) as NumPy, batch_size images at a time."""
    images = np.asarray(images, np.float32)
    logits, features = [], []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size]
        size = chunk.shape[0]
        if size < batch_size and images.shape[0] > batch_size:  # pad: one compiled shape
            chunk = np.concatenate([chunk, np.zeros((batch_size - size, *chunk.shape[1:]),
                                                    chunk.dtype)])
        chunk_logits, chunk_features = _forward(params, jnp.asarray(chunk))
        logits.append(np.asarray(chunk_logits)[:size])
        features.append(np.asarray(chunk_features)[:size])
    return np.concatenate(logits), np.concatenate(features)


def classifier_logits(params, images, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Logits (n, num_classes) of images (n, H, W, C)."""
    return _forward_in_chunks(params, images, batch_size)[0]


def classifier_features(params, images, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Penultimate features (n, k) of images (n, H, W, C): the swish of the hidden dense
    layer, the inputs of the logits."""
    return _forward_in_chunks(params, images, batch_size)[1]


def classifier_accuracy(params, images, labels) -> float:
    """Fraction of images (n, H, W, C) whose arg-max class is their label (n,)."""
    return float(np.mean(np.argmax(classifier_logits(params, images), axis=1)
                         == np.asarray(labels)))


def class_histogram(params, images, num_classes: int) -> np.ndarray:
    """Fractions (num_classes,) of images (n, H, W, C) assigned to each class (arg-max of
    the logits); they sum to 1."""
    predictions = np.argmax(classifier_logits(params, images), axis=1)
    return np.bincount(predictions, minlength=num_classes)[:num_classes] / predictions.shape[0]


def frechet_features_distance(params, images_a, images_b) -> float:
    """`ebmdual.evaluation.frechet_distance` between the classifier features of two image
    sets (n_a, H, W, C) and (n_b, H, W, C). NOT comparable to Inception-based FID (module
    docstring); biased upward by O(k/n), so compare distances at equal set sizes."""
    return frechet_distance(classifier_features(params, images_a),
                            classifier_features(params, images_b))


def frechet_floor(params, real_images, key: jax.Array) -> float:
    """The Fréchet distance between two random halves (n//2 images each) of real images
    (n, H, W, C): what a perfect model would score, from finite samples alone. Report it
    beside a model's distance computed between n//2 samples and n//2 real images (the
    same set sizes, as the estimator's upward bias depends on them)."""
    real_images = np.asarray(real_images)
    order = np.asarray(jax.random.permutation(key, real_images.shape[0]))
    half = real_images.shape[0] // 2
    return frechet_features_distance(params, real_images[order[:half]],
                                     real_images[order[half:2 * half]])


def _cache_digest(dataset_name, images, labels, num_classes, key, train_kwargs) -> str:
    digest = hashlib.sha256()
    settings = {"format": CACHE_FORMAT, "dataset": dataset_name, "num_classes": num_classes,
                "shape": list(images.shape), "dtype": str(images.dtype),
                "train": {k: v for k, v in sorted(train_kwargs.items()) if k != "progress"}}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).astype(np.int64).tobytes())
    digest.update(np.asarray(jax.random.key_data(key)).tobytes())
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write data to path via a temporary file in the same directory and os.replace, so
    a reader never sees a partial file and an interrupted write leaves none."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_or_train_classifier(cache_dir, dataset_name: str, images, labels, num_classes: int,
                             key: jax.Array, *, test_images=None, test_labels=None,
                             **train_kwargs):
    """The classifier of `train_classifier(images, labels, num_classes, key, **train_kwargs)`,
    loaded from cache_dir if it was trained before, else trained and saved there.

    The file `classifier-<name>-<H>x<W>x<C>-<hash>.msgpack` is keyed by dataset_name, the
    image shape and a SHA-256 of the training images and labels, num_classes, the training
    settings (all train_kwargs but `progress`) and the key. Returns (params, info) with info
    a dict: path, loaded (True when read from the cache), train_seconds (of the original
    training), num_train, and test_accuracy (float, when test_images and test_labels are
    given; computed on every call).
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images {images.shape}: expected (n, H, W, C)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = _cache_digest(dataset_name, images, labels, num_classes, key, train_kwargs)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset_name)
    shape = "x".join(str(s) for s in images.shape[1:])
    path = cache_dir / f"classifier-{safe_name}-{shape}-{digest[:16]}.msgpack"
    if path.exists():
        stored = flax.serialization.msgpack_restore(path.read_bytes())
        params = jax.tree.map(jnp.asarray, stored["params"])
        info = {"path": str(path), "loaded": True, **stored["info"]}
    else:
        start = time.perf_counter()
        params = train_classifier(images, labels, num_classes, key, **train_kwargs)
        params = jax.block_until_ready(params)
        stored_info = {"train_seconds": time.perf_counter() - start,
                       "num_train": int(images.shape[0]), "dataset": dataset_name}
        _atomic_write(path, flax.serialization.msgpack_serialize(
            {"params": jax.tree.map(np.asarray, params), "info": stored_info}))
        info = {"path": str(path), "loaded": False, **stored_info}
    if test_images is not None and test_labels is not None:
        info["test_accuracy"] = classifier_accuracy(params, test_images, test_labels)
    return params, info
