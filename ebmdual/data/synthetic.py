"""Synthetic tasks: the paper's teacher on the sphere, Gaussian mixtures, 2-D toys.

Every target density is p ∝ exp(−E) for an `energy_fn(params, x) -> scalar`
(x one unbatched sample of shape (d,)), relative to the uniform probability
measure on S^{d−1} (`manifold="sphere"`) or Lebesgue measure on R^d
(`manifold="euclidean"`), so the evaluation functions of `ebmdual.evaluation`
take `(teacher_energy, teacher)` or `(mixture_energy, mixture)` exactly like a
trained model's `(energy_fn, params)`.

Tasks
-----
* Teacher (docs/tasks.md, Teacher): ReLU neurons on S^{d−1}, by default two with
  signed weights −10,

      f*(x) = (1/2) Σ_i s_i relu(⟨θ_i, x⟩) = −5 relu(⟨θ_1, x⟩) − 5 relu(⟨θ_2, x⟩),

  chosen by `make_teacher(kind, dim, ...)`, kind one of TEACHER_KINDS:
  "published" (`published_teacher`: d = 3, the bimodal teacher `BIMODAL_TEACHER_D3`
  of the published comparison of restart probabilities, cosine −0.83; d = 15, the
  old teacher `OLD_TEACHER_D15`, cosine 0.2002), "orthogonal" (`orthogonal_teacher`:
  θ_1 = e_1, θ_2 = e_2, unimodal; for d = 3 the authors' "monomodal" run), "random"
  (`random_teacher`: two unit rows with a given cosine from a fixed seed), "explicit"
  (`teacher_from_directions`: given rows, normalised). Sampled exactly by rejection
  from the uniform distribution, accepting x with probability exp(−(f*(x) − f_lo))
  where f_lo ≤ min f* (`energy_lower_bound`).
* `GaussianMixture` in R^d with isotropic components,
  p(x) = Σ_k w_k N(x; μ_k, σ_k² I): `make_mixture(means, stds, weights)` (any means,
  a common or per-mode std), `line_mixture` (modes on the first axis).
* 2-D toys in the box [−4, 4]²: `eight_gaussians` (8 modes on the circle of
  radius 2, std 0.2, equal weights by default), `sample_rings` (3 concentric
  circles of radii 1, 2, 3 with equal mass and radial Gaussian noise of std
  0.1), `sample_checkerboard` (uniform on the 8 black unit squares of a 4×4
  board covering [−2, 2]²).

`get_dataset(config, key)` builds a `Dataset` from `config.data`, see there; its
`reference` holds `config.eval.num_samples` exact samples of p* for evaluation.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ebmdual.compiler import jit
from ebmdual.energies import project_to_sphere, shallow_energy

# The d = 15 teacher of the published runs ("old teacher", docs/tasks.md, d = 15), before
# normalisation. Cosine between the normalised rows: 0.2002.
OLD_TEACHER_D15 = np.array([
    [-0.1581, -0.1232, -0.1913, 0.4161, 0.4344, 0.1045, 0.3137, 0.2839,
     0.1072, 0.1849, -0.2719, -0.1624, -0.0897, -0.2070, 0.4179],
    [0.5860, 0.1702, -0.1274, 0.0954, 0.1495, 0.1055, 0.2156, 0.1797,
     -0.1128, 0.0606, -0.1669, 0.0621, -0.4499, 0.4556, 0.1786],
])

# The bimodal d = 3 teacher of the published comparison of restart probabilities
# (docs/tasks.md, d = 3), before normalisation. Cosine between the normalised rows: −0.8314.
BIMODAL_TEACHER_D3 = np.array([[-0.4907, 0.7621, 0.4224], [0.4253, -0.3558, -0.8321]])

PUBLISHED_TEACHERS = {3: BIMODAL_TEACHER_D3, 15: OLD_TEACHER_D15}  # dim -> rows
TEACHER_SIGNED_WEIGHT = -10.0
TEACHER_COSINE = 0.2  # random_teacher's default cosine
TEACHER_SEED = 0      # random_teacher's default seed
TEACHER_KINDS = ("published", "orthogonal", "random", "explicit")
TOY_BOX = (-4.0, 4.0)
SYNTHETIC_DATASETS = ("teacher", "mixture", "eight_gaussians", "rings", "checkerboard")


# ----------------------------------------------------------------------------
# Teacher on the sphere
# ----------------------------------------------------------------------------

class Teacher(NamedTuple):
    """A shallow ReLU energy used as a target; a pytree, usable as `params`.

    theta: (m, d) unit rows. signed_weights: (m,), s_i = c_i w_i.
    """

    theta: jax.Array
    signed_weights: jax.Array


def teacher_energy(teacher: Teacher, x: jax.Array) -> jax.Array:
    """energy_fn(params=teacher, x): f(x) = mean_i s_i relu(⟨θ_i, x⟩). x (d,) -> scalar."""
    return shallow_energy(teacher.theta, teacher.signed_weights, x)


def _unit_rows(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _float_array(value, what: str) -> np.ndarray:
    """np.asarray(value, float64), with a one-line ValueError for ragged or non-numeric input."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a rectangular array of numbers, got {value!r}") from None


def _random_pair_with_cosine(dim: int, cosine: float, seed: int) -> np.ndarray:
    """Two unit vectors in R^dim with ⟨θ_1, θ_2⟩ = cosine, from a fixed seed. (2, dim)."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, dim))
    u /= np.linalg.norm(u)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    return np.stack([u, cosine * u + np.sqrt(1.0 - cosine**2) * v])


def teacher_from_directions(theta, signed_weights=None) -> Teacher:
    """A Teacher with the rows of `theta` (k, d) normalised to unit norm.

    signed_weights: (k,) values s_i = c_i w_i; default all TEACHER_SIGNED_WEIGHT (−10).
    Raises ValueError unless theta is (k, d) with k ≥ 1, d ≥ 2, finite, without zero
    rows, and signed_weights has length k.
    """
    theta = _float_array(theta, "teacher theta")
    if theta.ndim != 2 or theta.shape[0] < 1 or theta.shape[1] < 2:
        raise ValueError(f"teacher theta has shape {theta.shape}, expected (k, d) with k >= 1 "
                         "neurons and dimension d >= 2")
    norms = np.linalg.norm(theta, axis=1)
    if not (np.all(np.isfinite(norms)) and np.all(norms > 0)):
        raise ValueError(f"teacher theta rows must be finite and non-zero, got norms {norms}")
    num_neurons = theta.shape[0]
    if signed_weights is None:
        signed_weights = np.full((num_neurons,), TEACHER_SIGNED_WEIGHT)
    signed_weights = _float_array(signed_weights, "teacher signed_weights")
    if signed_weights.shape != (num_neurons,):
        raise ValueError(f"teacher signed_weights have shape {signed_weights.shape}, "
                         f"expected ({num_neurons},), one per row of theta")
    return Teacher(theta=jnp.asarray(_unit_rows(theta), jnp.float32),
                   signed_weights=jnp.asarray(signed_weights, jnp.float32))


def published_teacher(dim: int) -> Teacher:
    """The teacher of the authors' published runs: d = 3, the bimodal teacher
    `BIMODAL_TEACHER_D3` (cosine −0.8314); d = 15, the old teacher `OLD_TEACHER_D15`
    (cosine 0.2002). Weights −10. Other dimensions raise ValueError."""
    if dim not in PUBLISHED_TEACHERS:
        raise ValueError(f"published teachers exist for d = 3 and 15 only, not dim={dim}; "
                         "use data.teacher='random' (or 'orthogonal', 'explicit')")
    return teacher_from_directions(PUBLISHED_TEACHERS[dim])


def orthogonal_teacher(dim: int) -> Teacher:
    """θ_1 = e_1, θ_2 = e_2, weights −10: unimodal, with its minimum at x ∝ e_1 + e_2
    (for dim = 3 the authors' "monomodal" run)."""
    if dim < 2:
        raise ValueError(f"orthogonal teacher: dim={dim} must be >= 2")
    return teacher_from_directions(np.eye(dim)[:2])


def random_teacher(dim: int, cosine: float = TEACHER_COSINE, seed: int = TEACHER_SEED) -> Teacher:
    """Two unit vectors with ⟨θ_1, θ_2⟩ = cosine drawn from `seed`, weights −10.

    The same (dim, cosine, seed) always gives the same teacher (`np.random.default_rng`).
    """
    if dim < 2:
        raise ValueError(f"random teacher: dim={dim} must be >= 2")
    if not abs(cosine) <= 1:
        raise ValueError(f"random teacher: cosine={cosine} must lie in [-1, 1]")
    return teacher_from_directions(_random_pair_with_cosine(dim, cosine, seed))


def make_teacher(kind: str, dim: int, theta=None, cosine: float = TEACHER_COSINE,
                 seed: int = TEACHER_SEED, signed_weights=None) -> Teacher:
    """The teacher named by `kind` (one of TEACHER_KINDS) on S^{dim−1}.

    "published": `published_teacher(dim)` (d = 3 or 15); "orthogonal":
    `orthogonal_teacher(dim)`; "random": `random_teacher(dim, cosine, seed)`;
    "explicit": `teacher_from_directions(theta, signed_weights)`, theta (k, dim).
    signed_weights (k,) replaces the default −10 weights for every kind.
    """
    if kind == "explicit":
        if theta is None:
            raise ValueError(f"explicit teacher: give theta, a (k, {dim}) list of rows")
        teacher = teacher_from_directions(theta, signed_weights)
        if teacher.theta.shape[1] != dim:
            raise ValueError(f"explicit teacher: theta has shape {teacher.theta.shape}, "
                             f"expected (k, {dim}) for dim={dim}")
        return teacher
    builders = {"published": published_teacher, "orthogonal": orthogonal_teacher,
                "random": functools.partial(random_teacher, cosine=cosine, seed=seed)}
    if kind not in builders:
        raise ValueError(f"teacher kind {kind!r}: expected one of {', '.join(TEACHER_KINDS)}")
    teacher = builders[kind](dim)
    if signed_weights is None:
        return teacher
    return teacher_from_directions(teacher.theta, signed_weights)


def energy_lower_bound(teacher: Teacher, max_enumerated: int = 16) -> float:
    """A lower bound f_lo ≤ min_{x ∈ S^{d−1}} f(x) for f = mean_i s_i relu(⟨θ_i, x⟩).

    Dropping the positive terms, f(x) ≥ −⟨v_A, x⟩ ≥ −‖v_A‖ with A the negative
    neurons active at x and v_A = (1/m) Σ_{i∈A} |s_i| θ_i, so
    f_lo = −max_A ‖v_A‖ over subsets A of the negative neurons. When all weights
    are ≤ 0 this is the exact minimum (the best A is consistent with
    x = v_A/‖v_A‖): for two neurons of weight −10 with cosine c, −5‖θ_1 + θ_2‖ at
    x ∝ θ_1 + θ_2 when c ≥ −1/2, else −5 at θ_1 and θ_2. With
    more than `max_enumerated` negative neurons the subsets are not enumerated and
    the cruder valid bound Σ_i min(s_i, 0)/m (using ‖θ_i‖ = 1) is returned.
    """
    theta = np.asarray(teacher.theta, np.float64)
    weights = np.asarray(teacher.signed_weights, np.float64)
    m = len(weights)
    negative = np.flatnonzero(weights < 0)
    if len(negative) > max_enumerated:
        return float(np.minimum(weights, 0.0).sum() / m)
    scaled = -weights[negative, None] * theta[negative] / m  # |s_i| θ_i / m
    best = 0.0
    for size in range(1, len(negative) + 1):
        for subset in itertools.combinations(range(len(negative)), size):
            best = max(best, float(np.linalg.norm(scaled[list(subset)].sum(0))))
    return -best


@functools.partial(jit, static_argnames=("n", "dim"))
def sample_sphere(key: jax.Array, n: int, dim: int) -> jax.Array:
    """n points uniform on S^{dim−1} (normalised Gaussians). (n, dim) float32."""
    return project_to_sphere(jax.random.normal(key, (n, dim), jnp.float32))


@functools.partial(jit, static_argnames="batch_size")
def _rejection_batch(key, teacher, lower_bound, batch_size):
    """Uniform proposals and their accept mask, P(accept | x) = exp(−(f(x) − f_lo))."""
    key_x, key_u = jax.random.split(key)
    x = sample_sphere(key_x, batch_size, teacher.theta.shape[1])
    energies = jax.vmap(teacher_energy, in_axes=(None, 0))(teacher, x)
    accept = jax.random.uniform(key_u, (batch_size,)) < jnp.exp(-(energies - lower_bound))
    return x, accept


def sample_teacher(key: jax.Array, teacher: Teacher, n: int, batch_size: int = 2**16,
                   max_batches: int = 100_000) -> jax.Array:
    """n exact samples of p ∝ exp(−f) on S^{d−1} by rejection from the uniform law.

    A host loop over jitted batches of `batch_size` proposals (batch i uses
    fold_in(key, i)) collects accepted points until there are n. The expected
    acceptance rate is E_unif[exp(−f)] · exp(f_lo): about 8e-2 for the d = 3
    orthogonal teacher, 0.2 for the d = 3 bimodal one and 3e-3 for the d = 15 old
    teacher. Returns (n, d) float32.
    """
    lower_bound = jnp.float32(energy_lower_bound(teacher))
    accepted, count = [], 0
    for i in range(max_batches):
        if count >= n:
            break
        x, accept = _rejection_batch(jax.random.fold_in(key, i), teacher, lower_bound, batch_size)
        kept = np.asarray(x)[np.asarray(accept)]
        accepted.append(kept)
        count += len(kept)
    else:
        raise RuntimeError(f"sample_teacher: only {count}/{n} samples after {max_batches} batches")
    return jnp.asarray(np.concatenate(accepted)[:n])


# ----------------------------------------------------------------------------
# Gaussian mixtures in R^d
# ----------------------------------------------------------------------------

class GaussianMixture(NamedTuple):
    """p(x) = Σ_k w_k N(x; μ_k, σ_k² I) on R^d; a pytree, usable as `params`.

    means: (K, d). stds: (K,). weights: (K,) ≥ 0, normalised internally.
    Methods accept x of shape (..., d).
    """

    means: jax.Array
    stds: jax.Array
    weights: jax.Array

    def component_log_probs(self, x: jax.Array) -> jax.Array:
        """log w_k + log N(x; μ_k, σ_k² I). (..., d) -> (..., K)."""
        return _component_log_probs(self, x)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Exact log p(x). (..., d) -> (...)."""
        return _log_prob(self, x)

    def assign_modes(self, x: jax.Array) -> jax.Array:
        """Most likely component, argmax_k w_k N(x; μ_k, σ_k² I). (..., d) -> (...) int."""
        return _assign_modes(self, x)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n i.i.d. samples. (n, d) float32."""
        return _sample_mixture(self, key, n)


@jit
def _component_log_probs(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    d = mixture.means.shape[-1]
    sq_dist = jnp.sum((x[..., None, :] - mixture.means) ** 2, axis=-1)
    log_normal = (-0.5 * sq_dist / mixture.stds**2
                  - d * jnp.log(mixture.stds) - 0.5 * d * jnp.log(2 * jnp.pi))
    log_weights = jnp.log(mixture.weights) - jnp.log(jnp.sum(mixture.weights))
    return log_weights + log_normal


@jit
def _log_prob(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(_component_log_probs(mixture, x), axis=-1)


@jit
def _assign_modes(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    return jnp.argmax(_component_log_probs(mixture, x), axis=-1)


@functools.partial(jit, static_argnames="n")
def _sample_mixture(mixture: GaussianMixture, key: jax.Array, n: int) -> jax.Array:
    key_c, key_z = jax.random.split(key)
    components = jax.random.choice(key_c, len(mixture.weights), (n,),
                                   p=mixture.weights / jnp.sum(mixture.weights))
    noise = jax.random.normal(key_z, (n, mixture.means.shape[-1]), jnp.float32)
    return mixture.means[components] + mixture.stds[components, None] * noise


def mixture_energy(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    """energy_fn(params=mixture, x) = −log p(x) (so Z = 1). x (d,) -> scalar."""
    return -mixture.log_prob(x)


def make_mixture(means, stds, weights=None) -> GaussianMixture:
    """A GaussianMixture with K = len(means) isotropic components.

    means: (K, d). stds: one common std (a scalar) or K per-mode stds, all > 0.
    weights: K values ≥ 0 with a positive sum (default equal), normalised here.
    Raises ValueError (one line) on bad shapes or values.
    """
    means = _float_array(means, "mixture means")
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise ValueError(f"mixture means have shape {means.shape}, expected (K, d) with K >= 1")
    if not np.all(np.isfinite(means)):
        raise ValueError("mixture means must be finite")
    num_modes = means.shape[0]
    stds = _float_array(stds, "mixture stds")
    if stds.ndim == 0:
        stds = np.full((num_modes,), float(stds))
    if stds.shape != (num_modes,):
        raise ValueError(f"mixture stds have shape {stds.shape}, expected a scalar or "
                         f"({num_modes},), one per mode")
    if not np.all(np.isfinite(stds) & (stds > 0)):
        raise ValueError(f"mixture stds must be finite and > 0, got {stds.tolist()}")
    weights = np.ones(num_modes) if weights is None else _float_array(weights, "mixture weights")
    if weights.shape != (num_modes,):
        raise ValueError(f"mixture weights have shape {weights.shape}, expected ({num_modes},)")
    if not (np.all(np.isfinite(weights) & (weights >= 0)) and weights.sum() > 0):
        raise ValueError(f"mixture weights must be finite, >= 0, with a positive sum, "
                         f"got {weights.tolist()}")
    weights = jnp.asarray(weights, jnp.float32)
    return GaussianMixture(means=jnp.asarray(means, jnp.float32),
                           stds=jnp.asarray(stds, jnp.float32), weights=weights / jnp.sum(weights))


def line_mixture(dim: int, weights, separation: float, std) -> GaussianMixture:
    """K = len(weights) modes on the first axis, μ_k = separation·(k − (K−1)/2)·e_1.

    std: a common std or K per-mode stds (see `make_mixture`).
    """
    num_modes = len(weights)
    offsets = separation * (np.arange(num_modes) - (num_modes - 1) / 2)
    means = np.zeros((num_modes, dim))
    means[:, 0] = offsets
    return make_mixture(means, std, weights)


def mixture_box(mixture: GaussianMixture, num_stds: float = 8.0) -> tuple[float, float]:
    """A square (−h, h)² holding a 2-D mixture's mass: h = max_k (‖μ_k‖_∞ + num_stds·σ_k),
    so each mode's own std counts (with a common std, h = max_k ‖μ_k‖_∞ + num_stds·σ)."""
    reach = jnp.abs(mixture.means).max(axis=1) + num_stds * mixture.stds
    half_width = float(reach.max())
    return (-half_width, half_width)


def eight_gaussians(weights=None, radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """8 modes at radius·(cos 2πk/8, sin 2πk/8), k = 0..7, common std.

    Neighbouring means are 2·radius·sin(π/8) ≈ 1.53 apart (7.7 std at the
    defaults), so the modes are well separated and all mass lies inside [−4, 4]².
    """
    angles = 2 * np.pi * np.arange(8) / 8
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return make_mixture(means, std, weights)


# ----------------------------------------------------------------------------
# Other 2-D toys
# ----------------------------------------------------------------------------

@functools.partial(jit, static_argnames="n")
def sample_rings(key: jax.Array, n: int, radii=(1.0, 2.0, 3.0),
                 noise_std: float = 0.1) -> jax.Array:
    """Concentric circles, equal mass per ring, uniform angle, radius r_k + noise_std·ξ. (n, 2)."""
    key_ring, key_angle, key_noise = jax.random.split(key, 3)
    radii = jnp.asarray(radii, jnp.float32)
    ring = jax.random.randint(key_ring, (n,), 0, len(radii))
    angle = jax.random.uniform(key_angle, (n,), maxval=2 * jnp.pi)
    radius = radii[ring] + noise_std * jax.random.normal(key_noise, (n,))
    return radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


@functools.partial(jit, static_argnames="n")
def sample_checkerboard(key: jax.Array, n: int) -> jax.Array:
    """Uniform on the black squares of a 4×4 board of unit squares covering [−2, 2]².

    Square (i, j) = [i−2, i−1] × [j−2, j−1] is black when i + j is even (8 squares).
    Returns (n, 2).
    """
    key_square, key_offset = jax.random.split(key)
    black = jnp.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0],
                      jnp.float32)
    square = jax.random.randint(key_square, (n,), 0, len(black))
    return black[square] - 2.0 + jax.random.uniform(key_offset, (n, 2))


# ----------------------------------------------------------------------------
# Datasets from a config
# ----------------------------------------------------------------------------

class Dataset(NamedTuple):
    """A synthetic data set and what its evaluation needs.

    name: config.data.name. train: (num_train, d) float32. test: (num_test, d).
    manifold: "sphere" (S^{d−1}, uniform base measure) or "euclidean".
    target_energy_fn, target_params: the true energy as energy_fn(params, x),
      None when it has no closed form (rings, checkerboard).
    mixture: the GaussianMixture for mixture tasks (per-mode metrics), else None.
    box: (low, high): the square [low, high]² holding a 2-D task's mass, for grid
      metrics ((−4, 4) for the toys, `mixture_box` for a 2-D "mixture"), else None.
    reference: (eval.num_samples, d) exact samples of the target p*, drawn
      independently of train and test, for evaluation (teacher and mixtures); None
      where none are drawn (rings, checkerboard, MNIST).
    For images (`ebmdual.data.get_dataset`, manifold "image"): train is an
    `ebmdual.data.images.ImageSource` of uint8 (n, H, W, C) read by index, test the
    held-out images (num_test, H, W, C) uint8, test_labels their int32 classes and
    num_classes the number of classes (both None for unlabelled data, CelebA).
    """

    name: str
    train: jax.Array
    test: jax.Array
    manifold: str
    target_energy_fn: Optional[Callable[..., jax.Array]] = None
    target_params: Any = None
    mixture: Optional[GaussianMixture] = None
    box: Optional[tuple[float, float]] = None
    reference: Optional[jax.Array] = None
    test_labels: Optional[np.ndarray] = None
    num_classes: Optional[int] = None


def _split_train_test(samples: jax.Array, num_train: int) -> tuple[jax.Array, jax.Array]:
    samples = jnp.asarray(samples, jnp.float32)
    return samples[:num_train], samples[num_train:]


def _require_2d(data) -> None:
    dim = data.get("dim", 2)
    if dim != 2:
        raise ValueError(f"config.data.dim={dim!r}: data set {data.name!r} is 2-D, set dim=2")


def _config_teacher(data) -> Teacher:
    """`make_teacher` from the config.data teacher keys."""
    return make_teacher(data.teacher, data.dim, theta=data.teacher_theta,
                        cosine=data.teacher_cosine, seed=data.teacher_seed)


def _config_mixture(data) -> GaussianMixture:
    """The "mixture" task's GaussianMixture from the config.data mixture keys."""
    weights = list(data.mixture_weights)
    stds = data.mixture_std if data.mixture_stds is None else list(data.mixture_stds)
    if data.mixture_means is None:
        return line_mixture(data.dim, weights, data.mixture_separation, stds)
    means = _float_array(data.mixture_means, "config.data.mixture_means")
    if means.ndim != 2 or means.shape[1] != data.dim:
        raise ValueError(f"config.data.mixture_means has shape {means.shape}, expected "
                         f"(K, {data.dim}) for data.dim={data.dim}")
    return make_mixture(means, stds, weights)


def get_dataset(config, key: jax.Array) -> Dataset:
    """The data set named by `config.data.name`, train and test drawn from `key`.

    config.data fields:
      name: one of "teacher", "mixture", "eight_gaussians", "rings", "checkerboard".
      dim: dimension d (teacher: the sphere S^{d−1} ⊂ R^d; mixture: R^d;
        the 2-D toys need dim = 2 or no dim).
      num_train, num_test: numbers of samples.
      teacher, teacher_theta, teacher_cosine, teacher_seed ("teacher" only): the
        arguments kind, theta, cosine, seed of `make_teacher`.
      mixture_weights: list of K weights ("mixture": required, K modes;
        "eight_gaussians": optional, 8 weights, default equal).
      mixture_means ("mixture" only): a K × d list of means, or None for K modes on the
        first axis, `mixture_separation` apart (see `line_mixture`).
      mixture_stds ("mixture" only): K per-mode stds, or None for `mixture_std` for all.
      mixture_std: std of every component ("mixture": used when mixture_stds is None;
        "eight_gaussians": optional, default 0.2).
    config.eval.num_samples: the number of `Dataset.reference` samples (teacher and
      mixtures), drawn from fold_in(key, 1), so train and test do not depend on it.
    """
    data = config.data
    name = data.name
    num_train, num = data.num_train, data.num_train + data.num_test
    reference_key, num_reference = jax.random.fold_in(key, 1), config.eval.num_samples
    if name == "teacher":
        teacher = _config_teacher(data)
        train, test = _split_train_test(sample_teacher(key, teacher, num), num_train)
        reference = sample_teacher(reference_key, teacher, num_reference)
        return Dataset(name, train, test, "sphere", teacher_energy, teacher, reference=reference)
    if name in ("mixture", "eight_gaussians"):
        if name == "mixture":
            mixture = _config_mixture(data)
            box = mixture_box(mixture) if data.dim == 2 else None
        else:
            _require_2d(data)
            weights = data.get("mixture_weights", None)
            mixture = eight_gaussians(None if weights is None else list(weights),
                                      std=data.get("mixture_std", 0.2))
            box = TOY_BOX
        train, test = _split_train_test(mixture.sample(key, num), num_train)
        return Dataset(name, train, test, "euclidean", mixture_energy, mixture, mixture, box,
                       reference=mixture.sample(reference_key, num_reference))
    if name in ("rings", "checkerboard"):
        _require_2d(data)
        sampler = sample_rings if name == "rings" else sample_checkerboard
        train, test = _split_train_test(sampler(key, num), num_train)
        return Dataset(name, train, test, "euclidean", box=TOY_BOX)
    raise ValueError(f"config.data.name={name!r}: expected one of {', '.join(SYNTHETIC_DATASETS)}")
