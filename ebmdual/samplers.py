"""Particle samplers: Markov kernels targeting p_θ(x) ∝ exp(−E_θ(x)/T), vmapped over particles.

The sampler protocol
--------------------
A sampler is a `Sampler(init, step)` pair of pure functions:

    init(key, params, particles) -> sampler_state
    step(key, params, particles, sampler_state, hparams) -> (particles, sampler_state, SamplerInfo)

* `particles` is a pytree whose leaves share a leading particle axis N: an
  (N, d) array, (N, 28, 28, 1) images, or {'x': (N, 32, 32, 3), 'y': (N,)}.
  Samplers move the floating-point leaves and carry the others (labels)
  unchanged. `energy_fn(params, x)` receives one particle (the pytree without
  its leading axis).
* `hparams` is the dict of swept scalars of the train state; samplers read
  `particle_step_size` (h) and `temperature` (T). They are traced, so sweeping
  them never recompiles.
* `sampler_state` is any pytree: empty `()` for ULA and HMC, the adapted step
  size for MALA, a trained flow and its optimizer for flow-MCMC. It is a field
  of `TrainState`, so it is checkpointed and sharded with it. Leaves named by
  `Sampler.particle_axes(state)` (a pytree of bools) carry a leading particle
  axis and are sharded like the particles; the others are replicated.
* `Sampler.transition`, when given, is ONE transition with the signature of `step`, and
  `step` (K = `Sampler.num_steps` transitions) equals K calls of it with the keys
  `jax.random.split(key, K)`. The trainer's host loop (`ebmdual.train`,
  `sampler_loop='host'`) dispatches those K jitted calls from Python instead of one
  scanned `step`, for comparison: since `energies.valid_conv` the scan is the faster
  path on XLA CPU too (docs/performance.md). ULA, MALA and HMC have one.
* `Sampler.restart(state, mask)`, when given, is called by the train step with the
  (N,) bool mask of the particles it has just restarted, so that per-particle state
  (Jarzynski log-weights) follows the restart.
* `SamplerInfo.weights`, when not None, are per-particle weights (N,) summing to
  one (importance weights of Jarzynski or flow-MCMC walkers): the objective
  then takes a weighted average over particles. Unweighted samplers hand None.

`h` has one meaning for every kernel: the drift x ← x − h∇E of the Langevin
dynamics dX = −∇E dt + √(2T) dW.

Kernels
-------
* `ula`: x ← x − h∇E(x) + √(2hT) ξ. Stationary law exp(−E/T) as h → 0.
  Optional antithetic noise: particle j and particle j + N/2 receive ξ and −ξ
  (the authors' scheme; with a shared start it cancels the odd moments of the
  noise). Options for images, both recorded in the run's config: `grad_clamp` c
  replaces ∇E by clip(∇E, −c, c) per coordinate (the per-pixel clamp of IGEBM/JEM
  codes; the chain then no longer targets exp(−E/T) where it binds), and `clip` =
  (low, high) clips the particles to the data range after each step (as `project`). Written here, not taken from BlackJAX: BlackJAX has no ULA kernel,
  and its SGLD diffusion draws its own noise, so neither antithetic pairs nor a
  projection can be expressed through it.
* `projected_langevin`: ULA followed by x ← x/‖x‖: Langevin on S^{d−1}, whose
  O(h) radial correction is exactly the Itô drift −(d−1)T x of Brownian motion
  on the sphere.
* `mala` (`blackjax.mala`): the same proposal with a Metropolis–Hastings
  correction. BlackJAX's step ε multiplies ∇log p = −∇E/T, so ε = hT. With
  `target_acceptance` set, the step is h·exp(s) with s in the sampler state,
  adapted after every transition by the Robbins–Monro rule
  s ← s + rate · (mean acceptance − target): constant gain, so the step keeps
  tracking the target while θ (hence p_θ) moves.
* `hmc` (`blackjax.hmc`): leapfrog step ε = √(2hT) on log p = −E/T with unit
  mass; with one integration step it is MALA with the same h.

MALA/HMC kernel states cache log p and its gradient, which go stale when θ
changes: only positions are kept between train steps, and the kernel state is
rebuilt at the start of each call (one extra gradient evaluation).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ebmdual.energies import project_to_sphere

__all__ = [
    "Sampler", "SamplerInfo", "ula", "projected_langevin", "mala", "hmc",
    "langevin_step", "gaussian_noise", "energy_gradients", "energies_and_gradients",
    "leading_size", "box_restricted", "select_particles",
    "floating_part", "merge_floating",
]


class SamplerInfo(NamedTuple):
    """What a sampler step reports.

    acceptance_rate: scalar, mean Metropolis acceptance over particles and steps (1 for ULA).
    weights: (N,) per-particle weights summing to 1 for the objective, or None (uniform).
    extra: dict of further scalar metrics (e.g. the adapted step size), or None.
    """

    acceptance_rate: jax.Array
    weights: Any = None
    extra: Any = None


class Sampler(NamedTuple):
    """init(key, params, particles) -> state; step(key, params, particles, state, hparams)
    -> (particles, state, SamplerInfo). particle_axes(state) -> pytree of bools marking the
    state leaves with a leading particle axis (sharded like the particles); None: none.
    restart(state, mask) -> state, with mask (N,) bool the particles the train step has
    just restarted (before `step`): for per-particle state that a restart invalidates
    (Jarzynski log-weights); None: the state does not depend on where particles are.
    transition: one transition, same signature as `step`, with `step` = `num_steps`
    calls of it on the keys split(key, num_steps) (see the module docstring); None:
    the sampler only runs as a whole `step`. weights(state) -> (N,) the particles'
    normalised weights after the last step (what its SamplerInfo.weights gave the
    objective), for evaluation; None: the particles are unweighted."""

    init: Callable
    step: Callable
    particle_axes: Callable | None = None
    restart: Callable | None = None
    transition: Callable | None = None
    num_steps: int = 1
    weights: Callable | None = None


# ----------------------------------------------------------------------------- pytree particles

def _is_floating(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def floating_part(tree):
    """`tree` with its non-floating leaves (labels) replaced by None: the part samplers move."""
    return jax.tree.map(lambda leaf: leaf if _is_floating(leaf) else None, tree)


def merge_floating(floating, tree):
    """`tree` with its floating leaves taken from `floating` (the inverse of `floating_part`)."""
    return jax.tree.map(lambda f, leaf: leaf if f is None else f, floating, tree,
                        is_leaf=lambda x: x is None)


def leading_size(tree) -> int:
    """N, the leading (particle or example) axis shared by every leaf of `tree`."""
    return jax.tree.leaves(tree)[0].shape[0]


def leaf_keys(key, tree):
    """One key per leaf of `tree`, as a tree; a single leaf gets `key` itself."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = [key] if len(leaves) == 1 else list(jax.random.split(key, len(leaves)))
    return jax.tree.unflatten(treedef, keys)


def gaussian_noise(key: jax.Array, particles, antithetic: bool):
    """Standard normal noise shaped like the floating leaves of `particles` (N, ...).

    antithetic: rows N/2.. are minus rows ..N/2 (N even).
    """
    def draw(leaf_key, leaf):
        if not antithetic:
            return jax.random.normal(leaf_key, leaf.shape, leaf.dtype)
        half = jax.random.normal(leaf_key, (leaf.shape[0] // 2, *leaf.shape[1:]), leaf.dtype)
        return jnp.concatenate([half, -half], axis=0)

    moving = floating_part(particles)
    return jax.tree.map(draw, leaf_keys(key, moving), moving)


def _per_particle(transform, energy_fn, params, particles):
    """`transform` (jax.grad or jax.value_and_grad) of x ↦ E_θ(x) in the floating leaves,
    vmapped over particles."""

    def one(moving, whole):
        return transform(lambda m: energy_fn(params, merge_floating(m, whole)))(moving)

    return jax.vmap(one)(floating_part(particles), particles)


def energy_gradients(energy_fn, params, particles):
    """∇ₓE_θ at each particle, for the floating leaves: a pytree like `floating_part(particles)`."""
    return _per_particle(jax.grad, energy_fn, params, particles)


def select_particles(mask: jax.Array, new, old):
    """Per particle, `new` where mask (N,) is True, else `old`: pytrees with the particle
    axis first on every leaf; `new` is cast to `old`'s dtypes."""

    def select(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (b.ndim - 1)), a.astype(b.dtype), b)

    return jax.tree.map(select, new, old)


def energies_and_gradients(energy_fn, params, particles):
    """(E_θ (N,), ∇ₓE_θ like `floating_part(particles)`) at each particle, in one pass."""
    return _per_particle(jax.value_and_grad, energy_fn, params, particles)


def box_restricted(energy_fn, low: float, high: float):
    """E on [low, high]^D, +inf outside (one sample x): exp(−E) restricted to the box.
    Its gradient inside is ∇E; a Metropolis proposal outside has log-density −inf and is
    refused. For samplers with an accept step (flow-MCMC, MALA-kernel Jarzynski)."""

    def restricted(params, x):
        inside = jnp.all(jnp.stack([jnp.all((leaf >= low) & (leaf <= high))
                                    for leaf in jax.tree.leaves(floating_part(x))]))
        return jnp.where(inside, energy_fn(params, x), jnp.inf)

    return restricted


# ----------------------------------------------------------------------------- ULA

def langevin_step(key, energy_fn, params, particles, step_size, temperature, *,
                  antithetic: bool = False, project: Callable | None = None,
                  grad_clamp: float | None = None, noise=None,
                  materialize_noise: bool = False):
    """One ULA step x ← x − h·g(x) + √(2hT) ξ, then x ← project(x) if given. Pytree -> pytree.

    g = ∇E, or clip(∇E, −grad_clamp, grad_clamp) per coordinate when grad_clamp is set.
    ξ = gaussian_noise(key, particles, antithetic), or `noise` (like
    `floating_part(particles)`) when given, drawn ahead (key then unused).
    materialize_noise: ξ is written out before the update (an optimization barrier), as
    it is when drawn ahead, so that XLA fuses the same arithmetic in both forms and they
    give the same floats (`ula(noise_ahead=True)`).
    """
    if noise is None:
        noise = gaussian_noise(key, particles, antithetic)
    if materialize_noise:
        noise = jax.lax.optimization_barrier(noise)
    drift = energy_gradients(energy_fn, params, particles)
    if grad_clamp is not None:
        drift = jax.tree.map(lambda g: jnp.clip(g, -grad_clamp, grad_clamp), drift)
    scale = jnp.sqrt(2.0 * step_size * temperature)
    moved = jax.tree.map(lambda x, g, xi: x - step_size * g + scale * xi,
                         floating_part(particles), drift, noise)
    if project is not None:
        moved = jax.tree.map(project, moved)
    return merge_floating(moved, particles)


def repeat_transition(transition: Callable, num_steps: int) -> Callable:
    """step(key, params, particles, state, hparams): `num_steps` transitions scanned on the
    keys split(key, num_steps); info.acceptance_rate is their mean, info.extra the last's."""

    def step(key, params, particles, state, hparams):
        def body(carry, step_key):
            particles, state = carry
            particles, state, info = transition(step_key, params, particles, state, hparams)
            return (particles, state), info

        (particles, state), infos = jax.lax.scan(body, (particles, state),
                                                 jax.random.split(key, num_steps))
        last = jax.tree.map(lambda leaf: leaf[-1], infos.extra)
        return particles, state, SamplerInfo(jnp.mean(infos.acceptance_rate), extra=last)

    return step


def _no_state(key, params, particles):
    del key, params, particles
    return ()


def ula(energy_fn, num_steps: int = 1, antithetic: bool = False,
        project: Callable | None = None, grad_clamp: float | None = None,
        clip: tuple[float, float] | None = None, noise_ahead: bool = False) -> Sampler:
    """K = `num_steps` unadjusted Langevin steps on every particle (projected if `project`).

    grad_clamp: per-coordinate clamp of ∇E. clip: (low, high), particles clipped to this
    range after each step (a `project`; not with `project` too).
    noise_ahead: `step` draws the normals of `noise_chunk` steps at a time ahead of the
    loop that uses them, instead of one draw inside each step. The same normals; faster
    for convolutional energies on images (XLA CPU, see `noise_chunk`), and 1–4 % slower
    for a small MLP on R^16 (N = 2·10⁴, K = 5, paired rounds), so it is a choice, made by
    the image configs. Its update reads the normals from memory, which changes float
    rounding against the default form (persistent chains then drift apart over thousands
    of steps: docs/performance.md).
    """
    if clip is not None:
        if project is not None:
            raise ValueError("ula: give `clip` or `project`, not both")
        low, high = clip
        project = lambda x: jnp.clip(x, low, high)  # noqa: E731

    def move(key, params, particles, hparams, noise=None):
        return langevin_step(key, energy_fn, params, particles, hparams["particle_step_size"],
                             hparams["temperature"], antithetic=antithetic, project=project,
                             grad_clamp=grad_clamp, noise=noise, materialize_noise=noise_ahead)

    def transition(key, params, particles, state, hparams):
        return move(key, params, particles, hparams), state, _ula_info()

    def step_ahead(key, params, particles, state, hparams):
        chunk = noise_chunk(num_steps, particles)

        def run_chunk(particles, chunk_keys):
            noises = jax.vmap(lambda k: gaussian_noise(k, particles, antithetic))(chunk_keys)
            return jax.lax.scan(lambda x, xi: (move(None, params, x, hparams, xi), None),
                                particles, noises)

        keys = jax.random.split(key, num_steps).reshape(num_steps // chunk, chunk)
        particles, _ = jax.lax.scan(run_chunk, particles, keys)
        return particles, state, _ula_info()

    step = step_ahead if noise_ahead else repeat_transition(transition, num_steps)
    return Sampler(init=_no_state, step=step, transition=transition, num_steps=num_steps)


def _ula_info() -> SamplerInfo:
    return SamplerInfo(acceptance_rate=jnp.ones((), jnp.float32))


NOISE_CHUNK_BYTES = 64 * 2 ** 20


def noise_chunk(num_steps: int, particles) -> int:
    """How many steps' noise `ula(noise_ahead=True)` draws at once: the largest divisor c
    of `num_steps` with c copies of the particles' floating leaves within
    NOISE_CHUNK_BYTES (at least 1).

    Why ahead: c·N normals drawn by one vmapped draw before a scan over c steps cost less
    than one draw per step inside the loop body, where XLA CPU runs threefry's rounds as
    a small loop of their own (MNIST ConvEnergy, B = 128, K = 60: 0.7–2.2 ms of a 22–26 ms
    Langevin step on 2 CPU cores, `python -m benchmarks.image_step`, row 2b;
    docs/performance.md). The normals are the same floats (threefry is a function of the
    key and the position, so vmap over keys draws what each key draws alone), and the
    update sees them materialised in both forms, so `step` equals `num_steps` calls of
    `transition` exactly (tests/test_samplers.py)."""
    per_step = sum(leaf.size * leaf.dtype.itemsize
                   for leaf in jax.tree.leaves(floating_part(particles)))
    fits = max(1, NOISE_CHUNK_BYTES // max(per_step, 1))
    return max(c for c in range(1, num_steps + 1) if num_steps % c == 0 and c <= fits)


def projected_langevin(energy_fn, num_steps: int = 1, antithetic: bool = False) -> Sampler:
    """ULA on the sphere S^{d−1}: each step is followed by x ← x/‖x‖ (particles (N, d))."""
    return ula(energy_fn, num_steps, antithetic, project=project_to_sphere)


# ----------------------------------------------------------------------------- BlackJAX kernels

def _blackjax_chain(keys, energy_fn, params, particles, temperature, init_one,
                    step_one, control, update_control):
    """K transitions of a BlackJAX kernel, one per key of `keys` (K,), vmapped over
    particles, one key per particle (split from the transition's key).

    The kernel moves each particle's floating part on log p = −E/T.
    init_one(position, logdensity_fn) -> kernel state; step_one(key, kernel_state,
    logdensity_fn, control) -> (kernel_state, info). `control` is a scalar carried across
    transitions (the log step scale of adaptive MALA), updated after each one by
    update_control(control, mean acceptance). Returns (particles, control, acceptance (K,)).
    """
    moving, n = floating_part(particles), leading_size(particles)

    def logdensity_of(whole):
        return lambda m: -energy_fn(params, merge_floating(m, whole)) / temperature

    states = jax.vmap(lambda m, whole: init_one(m, logdensity_of(whole)))(moving, particles)

    def body(carry, step_key):
        states, control = carry
        keys = jax.random.split(step_key, n)
        states, info = jax.vmap(lambda k, s, whole: step_one(k, s, logdensity_of(whole), control))(
            keys, states, particles)
        acceptance = jnp.mean(info.acceptance_rate)
        return (states, update_control(control, acceptance)), acceptance

    (states, control), acceptance = jax.lax.scan(body, (states, control), keys)
    return merge_floating(states.position, particles), control, acceptance


def mala(energy_fn, num_steps: int = 1, target_acceptance: float | None = None,
         adaptation_rate: float = 0.05) -> Sampler:
    """K MALA transitions (BlackJAX) with ε = h·exp(s)·T.

    Without `target_acceptance`, s = 0 and the state is empty. With it, the state is
    {'log_step_scale': s}, updated after each transition by s ← s + rate·(ā − target),
    ā the mean acceptance over particles; info.extra reports the adapted step h·exp(s).
    """
    adapt = target_acceptance is not None
    if adapt and not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"target_acceptance={target_acceptance}: expected a value in (0, 1)")
    kernel = blackjax.mala.build_kernel()

    def init(key, params, particles):
        del key, params, particles
        return {"log_step_scale": jnp.zeros((), jnp.float32)} if adapt else ()

    def update_control(log_scale, acceptance):
        return log_scale + adaptation_rate * (acceptance - target_acceptance) if adapt else log_scale

    def run(keys, params, particles, state, hparams):
        h, temperature = hparams["particle_step_size"], hparams["temperature"]
        log_scale = state["log_step_scale"] if adapt else jnp.zeros((), jnp.float32)
        particles, log_scale, acceptance = _blackjax_chain(
            keys, energy_fn, params, particles, temperature, blackjax.mala.init,
            lambda k, s, logdensity, c: kernel(k, s, logdensity, h * jnp.exp(c) * temperature),
            log_scale, update_control)
        if not adapt:
            return particles, state, SamplerInfo(jnp.mean(acceptance))
        extra = {"adapted_step_size": h * jnp.exp(log_scale)}
        return particles, {"log_step_scale": log_scale}, SamplerInfo(jnp.mean(acceptance),
                                                                     extra=extra)

    return _chain_sampler(init, run, num_steps)


def _chain_sampler(init, run, num_steps: int) -> Sampler:
    """A Sampler around run(keys (K,), params, particles, state, hparams): `step` runs
    `num_steps` transitions on split(key, K) in one chain (the kernel state cached
    between them), `transition` one on key[None] (the kernel state rebuilt: one
    extra gradient evaluation per transition, the same numbers)."""

    def step(key, params, particles, state, hparams):
        return run(jax.random.split(key, num_steps), params, particles, state, hparams)

    def transition(key, params, particles, state, hparams):
        return run(key[None], params, particles, state, hparams)

    return Sampler(init=init, step=step, transition=transition, num_steps=num_steps)


def hmc(energy_fn, num_steps: int = 1, num_integration_steps: int = 1) -> Sampler:
    """K HMC transitions (BlackJAX), leapfrog step ε = √(2hT), unit mass."""
    kernel = blackjax.hmc.build_kernel()

    def run(keys, params, particles, state, hparams):
        epsilon = jnp.sqrt(2.0 * hparams["particle_step_size"] * hparams["temperature"])

        def step_one(k, kernel_state, logdensity, control):
            del control
            inverse_mass = jnp.ones(ravel_pytree(kernel_state.position)[0].shape, jnp.float32)
            return kernel(k, kernel_state, logdensity, epsilon, inverse_mass,
                          num_integration_steps)

        particles, _, acceptance = _blackjax_chain(
            keys, energy_fn, params, particles, hparams["temperature"], blackjax.hmc.init,
            step_one, jnp.zeros(()), lambda c, a: c)
        return particles, state, SamplerInfo(acceptance_rate=jnp.mean(acceptance))

    return _chain_sampler(_no_state, run, num_steps)
