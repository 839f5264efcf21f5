"""Synthetic tasks: the paper's teacher on the sphere, Gaussian mixtures, 2-D toys.

Every target density is p ∝ exp(−E) for an `energy_fn(params, x) -> scalar`
(x one unbatched sample of shape (d,)), relative to the uniform probability
measure on S^{d−1} (`manifold="sphere"`) or Lebesgue measure on R^d
(`manifold="euclidean"`), so the evaluation functions of `ebmdual.evaluation`
take `(teacher_energy, teacher)` or `(mixture_energy, mixture)` exactly like a
trained model's `(energy_fn, params)`.

Tasks
-----
* Teacher (docs/tasks.md, Teacher): two ReLU neurons on S^{d−1} with signed weights −10,

      f*(x) = (1/2) Σ_i s_i relu(⟨θ_i, x⟩) = −5 relu(⟨θ_1, x⟩) − 5 relu(⟨θ_2, x⟩),

  sampled exactly by rejection from the uniform distribution, accepting x with
  probability exp(−(f*(x) − f_lo)) where f_lo ≤ min f* (`energy_lower_bound`).
* `GaussianMixture` in R^d with isotropic components:
  p(x) = Σ_k w_k N(x; μ_k, σ_k² I).
* 2-D toys in the box [−4, 4]²: `eight_gaussians` (8 modes on the circle of
  radius 2, std 0.2, equal weights by default), `sample_rings` (3 concentric
  circles of radii 1, 2, 3 with equal mass and radial Gaussian noise of std
  0.1), `sample_checkerboard` (uniform on the 8 black unit squares of a 4×4
  board covering [−2, 2]²).

`get_dataset(config, key)` builds a `Dataset` from `config.data`, see there.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ebmdual.energies import project_to_sphere, shallow_energy

# The d = 15 teacher of the published runs ("old teacher", docs/tasks.md, d = 15), before
# normalisation. Cosine between the normalised rows: 0.2002.
OLD_TEACHER_D15 = np.array([
    [-0.1581, -0.1232, -0.1913, 0.4161, 0.4344, 0.1045, 0.3137, 0.2839,
     0.1072, 0.1849, -0.2719, -0.1624, -0.0897, -0.2070, 0.4179],
    [0.5860, 0.1702, -0.1274, 0.0954, 0.1495, 0.1055, 0.2156, 0.1797,
     -0.1128, 0.0606, -0.1669, 0.0621, -0.4499, 0.4556, 0.1786],
])

TEACHER_SIGNED_WEIGHT = -10.0
TEACHER_COSINE = 0.2  # for dimensions other than 3 and 15
TEACHER_SEED = 0
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


def _random_pair_with_cosine(dim: int, cosine: float, seed: int) -> np.ndarray:
    """Two unit vectors in R^dim with ⟨θ_1, θ_2⟩ = cosine, from a fixed seed. (2, dim)."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, dim))
    u /= np.linalg.norm(u)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    return np.stack([u, cosine * u + np.sqrt(1.0 - cosine**2) * v])


def paper_teacher(dim: int) -> Teacher:
    """The two-neuron teacher f* = −5 relu(⟨θ_1,x⟩) − 5 relu(⟨θ_2,x⟩) on S^{dim−1}.

    d = 3: the orthogonal teacher θ_1 = e_1, θ_2 = e_2, which is unimodal (one
    minimum, at x ∝ e_1 + e_2): the authors' "monomodal" run, not the bimodal
    teacher of the published comparison of restart probabilities (see
    docs/tasks.md, d = 3). d = 15: the published "old teacher" (cosine 0.2002).
    Other d ≥ 2: two unit vectors with cosine 0.2 drawn from the fixed seed
    `TEACHER_SEED`.
    """
    if dim == 3:
        theta = np.eye(3)[:2]
    elif dim == 15:
        theta = _unit_rows(OLD_TEACHER_D15)
    elif dim >= 2:
        theta = _random_pair_with_cosine(dim, TEACHER_COSINE, TEACHER_SEED)
    else:
        raise ValueError(f"paper_teacher: dim={dim} must be >= 2")
    return Teacher(theta=jnp.asarray(theta, jnp.float32),
                   signed_weights=jnp.full((2,), TEACHER_SIGNED_WEIGHT, jnp.float32))


def energy_lower_bound(teacher: Teacher, max_enumerated: int = 16) -> float:
    """A lower bound f_lo ≤ min_{x ∈ S^{d−1}} f(x) for f = mean_i s_i relu(⟨θ_i, x⟩).

    Dropping the positive terms, f(x) ≥ −⟨v_A, x⟩ ≥ −‖v_A‖ with A the negative
    neurons active at x and v_A = (1/m) Σ_{i∈A} |s_i| θ_i, so
    f_lo = −max_A ‖v_A‖ over subsets A of the negative neurons. When all weights
    are ≤ 0 this is the exact minimum (the best A is consistent with
    x = v_A/‖v_A‖): for the paper teacher, −5‖θ_1 + θ_2‖ at x ∝ θ_1 + θ_2. With
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


@functools.partial(jax.jit, static_argnames=("n", "dim"))
def sample_sphere(key: jax.Array, n: int, dim: int) -> jax.Array:
    """n points uniform on S^{dim−1} (normalised Gaussians). (n, dim) float32."""
    return project_to_sphere(jax.random.normal(key, (n, dim), jnp.float32))


@functools.partial(jax.jit, static_argnames="batch_size")
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
    acceptance rate is E_unif[exp(−f)] · exp(f_lo): about 8e-2 for d = 3 and
    3e-3 for d = 15 with the paper teacher. Returns (n, d) float32.
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


@jax.jit
def _component_log_probs(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    d = mixture.means.shape[-1]
    sq_dist = jnp.sum((x[..., None, :] - mixture.means) ** 2, axis=-1)
    log_normal = (-0.5 * sq_dist / mixture.stds**2
                  - d * jnp.log(mixture.stds) - 0.5 * d * jnp.log(2 * jnp.pi))
    log_weights = jnp.log(mixture.weights) - jnp.log(jnp.sum(mixture.weights))
    return log_weights + log_normal


@jax.jit
def _log_prob(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(_component_log_probs(mixture, x), axis=-1)


@jax.jit
def _assign_modes(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    return jnp.argmax(_component_log_probs(mixture, x), axis=-1)


@functools.partial(jax.jit, static_argnames="n")
def _sample_mixture(mixture: GaussianMixture, key: jax.Array, n: int) -> jax.Array:
    key_c, key_z = jax.random.split(key)
    components = jax.random.choice(key_c, len(mixture.weights), (n,),
                                   p=mixture.weights / jnp.sum(mixture.weights))
    noise = jax.random.normal(key_z, (n, mixture.means.shape[-1]), jnp.float32)
    return mixture.means[components] + mixture.stds[components, None] * noise


def mixture_energy(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    """energy_fn(params=mixture, x) = −log p(x) (so Z = 1). x (d,) -> scalar."""
    return -mixture.log_prob(x)


def make_mixture(means, std: float, weights=None) -> GaussianMixture:
    """A GaussianMixture with one common std and (default equal) weights."""
    means = jnp.asarray(means, jnp.float32)
    num_modes = means.shape[0]
    weights = jnp.ones(num_modes) if weights is None else jnp.asarray(weights, jnp.float32)
    if weights.shape != (num_modes,):
        raise ValueError(f"mixture weights have shape {weights.shape}, expected ({num_modes},)")
    return GaussianMixture(means=means, stds=jnp.full((num_modes,), std, jnp.float32),
                           weights=weights / jnp.sum(weights))


def line_mixture(dim: int, weights, separation: float, std: float) -> GaussianMixture:
    """K = len(weights) modes on the first axis, μ_k = separation·(k − (K−1)/2)·e_1."""
    num_modes = len(weights)
    offsets = separation * (np.arange(num_modes) - (num_modes - 1) / 2)
    means = np.zeros((num_modes, dim))
    means[:, 0] = offsets
    return make_mixture(means, std, weights)


def mixture_box(mixture: GaussianMixture, num_stds: float = 8.0) -> tuple[float, float]:
    """A square (−h, h)² holding a 2-D mixture's mass: h = max_k ‖μ_k‖_∞ + num_stds·max_k σ_k."""
    half_width = float(jnp.abs(mixture.means).max() + num_stds * mixture.stds.max())
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

@functools.partial(jax.jit, static_argnames="n")
def sample_rings(key: jax.Array, n: int, radii=(1.0, 2.0, 3.0),
                 noise_std: float = 0.1) -> jax.Array:
    """Concentric circles, equal mass per ring, uniform angle, radius r_k + noise_std·ξ. (n, 2)."""
    key_ring, key_angle, key_noise = jax.random.split(key, 3)
    radii = jnp.asarray(radii, jnp.float32)
    ring = jax.random.randint(key_ring, (n,), 0, len(radii))
    angle = jax.random.uniform(key_angle, (n,), maxval=2 * jnp.pi)
    radius = radii[ring] + noise_std * jax.random.normal(key_noise, (n,))
    return radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


@functools.partial(jax.jit, static_argnames="n")
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
    """

    name: str
    train: jax.Array
    test: jax.Array
    manifold: str
    target_energy_fn: Optional[Callable[..., jax.Array]] = None
    target_params: Any = None
    mixture: Optional[GaussianMixture] = None
    box: Optional[tuple[float, float]] = None


def _split_train_test(samples: jax.Array, num_train: int) -> tuple[jax.Array, jax.Array]:
    samples = jnp.asarray(samples, jnp.float32)
    return samples[:num_train], samples[num_train:]


def _require_2d(data) -> None:
    dim = data.get("dim", 2)
    if dim != 2:
        raise ValueError(f"config.data.dim={dim!r}: data set {data.name!r} is 2-D, set dim=2")


def get_dataset(config, key: jax.Array) -> Dataset:
    """The data set named by `config.data.name`, train and test drawn from `key`.

    config.data fields:
      name: one of "teacher", "mixture", "eight_gaussians", "rings", "checkerboard".
      dim: dimension d (teacher: the sphere S^{d−1} ⊂ R^d; mixture: R^d;
        the 2-D toys need dim = 2 or no dim).
      num_train, num_test: numbers of samples.
      mixture_weights: list of K weights ("mixture": required, K modes;
        "eight_gaussians": optional, 8 weights, default equal).
      mixture_separation: distance between neighbouring means ("mixture" only;
        means on the first axis, see `line_mixture`).
      mixture_std: std of every component ("mixture": required;
        "eight_gaussians": optional, default 0.2).
    """
    data = config.data
    name = data.name
    num_train, num = data.num_train, data.num_train + data.num_test
    if name == "teacher":
        teacher = paper_teacher(data.dim)
        train, test = _split_train_test(sample_teacher(key, teacher, num), num_train)
        return Dataset(name, train, test, "sphere", teacher_energy, teacher)
    if name in ("mixture", "eight_gaussians"):
        if name == "mixture":
            mixture = line_mixture(data.dim, list(data.mixture_weights),
                                   data.mixture_separation, data.mixture_std)
            box = mixture_box(mixture) if data.dim == 2 else None
        else:
            _require_2d(data)
            weights = data.get("mixture_weights", None)
            mixture = eight_gaussians(None if weights is None else list(weights),
                                      std=data.get("mixture_std", 0.2))
            box = TOY_BOX
        train, test = _split_train_test(mixture.sample(key, num), num_train)
        return Dataset(name, train, test, "euclidean", mixture_energy, mixture, mixture, box)
    if name in ("rings", "checkerboard"):
        _require_2d(data)
        sampler = sample_rings if name == "rings" else sample_checkerboard
        train, test = _split_train_test(sampler(key, num), num_train)
        return Dataset(name, train, test, "euclidean", box=TOY_BOX)
    raise ValueError(f"config.data.name={name!r}: expected one of {', '.join(SYNTHETIC_DATASETS)}")
