"""Shared test setup: four simulated CPU devices, a compilation cache, PRNG keys, a tiny
teacher task.

`jax_num_cpu_devices` only takes effect before the JAX backend starts, so it is set
here, at import time of the first conftest, before any test module runs JAX code.
Every test then sees four CPU devices; single-device code paths pick `num_devices=1`.

Many tests compile the same program (the same tiny config, the same evaluator; a CLI run
and its resumption) under new Python closures or in new processes, which JAX's in-memory
cache does not recognise. A persistent compilation cache keyed by the program itself turns
those into cache hits. It lives in a fresh directory per test process (pytest-xdist
worker), removed when that process exits, so nothing carries over between runs. It is set
through the environment, so the subprocesses a test starts share it; JAX writes entries
without a lock, and an entry it cannot read (one being written by a concurrent process) is
skipped with a warning and compiled again (`jax._src.compiler._cache_read`).
"""

import atexit
import os
import shutil
import tempfile

_COMPILATION_CACHE = tempfile.mkdtemp(prefix="ebmdual-tests-jax-cache-")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
os.environ.update(JAX_COMPILATION_CACHE_DIR=_COMPILATION_CACHE,
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import jax  # noqa: E402  (reads the cache settings above at import)

jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from experiments.defaults import base_config  # noqa: E402

TINY_DIM = 3
TINY_NUM_DATA = 64
TINY_NUM_PARTICLES = 64
TINY_NUM_NEURONS = 8
TINY_LOG_EVERY = 5
TEACHER_SIGNED_WEIGHT = -10.0  # docs/tasks.md, Teacher: two neurons with c_i w_i = −10


def sample_tiny_teacher(num: int, dim: int = TINY_DIM, seed: int = 0) -> np.ndarray:
    """Exact samples of p* ∝ exp(−f*) on S^{dim−1}, by rejection from the uniform law.

    f*(x) = (1/2) Σ_i (−10) relu(⟨e_i, x⟩) over the first two coordinate axes (the
    orthogonal d = 3 teacher of docs/tasks.md, d = 3, θ1* ⊥ θ2*). It is unimodal:
    its only minimum is min f* = −5√2 at x ∝ e_1 + e_2, so the acceptance
    probability exp(−(f* − min f*)) is ≤ 1. Written in NumPy, independent of
    `ebmdual.data`. Returns (num, dim) float32 with unit rows.
    """
    rng = np.random.default_rng(seed)
    accepted = []
    count = 0
    min_energy = 0.5 * TEACHER_SIGNED_WEIGHT * np.sqrt(2.0)
    while count < num:
        z = rng.standard_normal((4096, dim))
        x = z / np.linalg.norm(z, axis=1, keepdims=True)
        energy = 0.5 * TEACHER_SIGNED_WEIGHT * np.maximum(x[:, :2], 0.0).sum(axis=1)
        keep = rng.uniform(size=len(x)) < np.exp(-(energy - min_energy))
        accepted.append(x[keep])
        count += int(keep.sum())
    return np.concatenate(accepted)[:num].astype(np.float32)


@pytest.fixture
def key():
    """A fixed typed PRNG key."""
    return jax.random.key(0)


@pytest.fixture(scope="session")
def tiny_teacher_data() -> np.ndarray:
    """(64, 3) float32 exact teacher samples on S^2 (fixed seed)."""
    return sample_tiny_teacher(TINY_NUM_DATA)


def tiny_teacher_config_dict():
    """The d = 3 teacher task shrunk to seconds: n = 64, N = 64 antithetic walkers, m = 8.

    WFR steps
    h_θ = 0.04, h_w = 0.02, projected Langevin h_x = 0.02 at T = 1 (docs/tasks.md),
    half the output signs +1 so both signs are exercised; 5 steps per compiled call.
    """
    config = base_config()
    config.data.dim = TINY_DIM
    config.data.num_train = TINY_NUM_DATA
    config.data.num_test = TINY_NUM_DATA
    config.model.num_neurons = TINY_NUM_NEURONS
    config.model.num_positive = TINY_NUM_NEURONS // 2
    config.optim.feature_learning_rate = 0.04
    config.optim.weight_learning_rate = 0.02
    config.sampler.num_particles = TINY_NUM_PARTICLES
    config.train.num_steps = 4 * TINY_LOG_EVERY
    config.train.log_every = TINY_LOG_EVERY
    return config


@pytest.fixture(scope="session")
def make_tiny_teacher_config():
    """The builder of `tiny_teacher_config`, for module-scoped fixtures."""
    return tiny_teacher_config_dict


@pytest.fixture
def tiny_teacher_config():
    """A fresh tiny teacher ConfigDict per test (tests override fields freely)."""
    return tiny_teacher_config_dict()


def build_trainer(config, data, manifold: str = "sphere", num_devices=None, name=None):
    """The harness's trainer for `config` on host `data` (experiments.registry), with the
    resident data placed on its mesh: (trainer, device data)."""
    from ebmdual.data import Dataset
    from experiments.registry import build_trainer as build

    dataset = Dataset(name or config.data.name, data, data, manifold)
    trainer = build(config, dataset, num_devices=num_devices).trainer
    return trainer, trainer.put(data)
