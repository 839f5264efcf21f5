"""Particle samplers: K Markov steps targeting p_θ(x) ∝ exp(−E_θ(x)/T), vmapped over particles.

Every sampler has one signature,

    sample(key, params, particles, step_size, temperature) -> (particles, SamplerInfo)

with particles of shape (N, d) and `step_size` (h) and `temperature` (T) traced
scalars, so sweeping them never recompiles. `h` has one meaning for all kernels:
the drift x ← x − h∇E of the Langevin dynamics dX = −∇E dt + √(2T) dW.

* ULA (unadjusted Langevin): x ← x − h∇E(x) + √(2hT) ξ. Stationary law
  exp(−E/T) as h → 0. Optional antithetic noise: particle j and particle j + N/2
  receive ξ and −ξ (the authors' scheme; with a shared start it cancels the odd
  moments of the noise). With `manifold="sphere"` the step is followed by the
  projection x ← x/‖x‖: projected Langevin on S^{d−1}, whose O(h) radial
  correction is exactly the Itô drift −(d−1)T x of Brownian motion on the sphere.
  Written here, not taken from BlackJAX: BlackJAX has no ULA kernel, and its
  SGLD diffusion draws its own noise, so neither antithetic pairs nor the
  projection can be expressed through it.
* MALA (`blackjax.mala`): the same proposal with a Metropolis–Hastings
  correction. BlackJAX's step ε multiplies ∇log p = −∇E/T, so ε = hT.
* HMC (`blackjax.hmc`): leapfrog step ε = √(2hT) on log p = −E/T with unit mass;
  with one integration step it is MALA with the same h.

MALA/HMC kernel states cache log p and its gradient, which go stale when θ
changes: only positions are kept between train steps, and the kernel state is
rebuilt at the start of each call (one extra gradient evaluation).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp

from ebmdual.energies import project_to_sphere

SAMPLERS = ("ula", "mala", "hmc")
MANIFOLDS = ("euclidean", "sphere")


class SamplerInfo(NamedTuple):
    """acceptance_rate: mean Metropolis acceptance over particles and steps (1 for ULA)."""

    acceptance_rate: jax.Array


Sampler = Callable[..., tuple[jax.Array, SamplerInfo]]


def gaussian_noise(key: jax.Array, shape, antithetic: bool) -> jax.Array:
    """Standard normal noise of `shape` (N, d); antithetic: rows N/2.. are minus rows ..N/2."""
    if not antithetic:
        return jax.random.normal(key, shape)
    half = jax.random.normal(key, (shape[0] // 2, *shape[1:]))
    return jnp.concatenate([half, -half], axis=0)


def energy_gradients(energy_fn, params, particles: jax.Array) -> jax.Array:
    """∇ₓE_θ at each particle: (N, d) -> (N, d)."""
    return jax.vmap(jax.grad(energy_fn, argnums=1), in_axes=(None, 0))(params, particles)


def langevin_step(key, energy_fn, params, particles, step_size, temperature, *,
                  antithetic: bool = False, manifold: str = "euclidean") -> jax.Array:
    """One ULA step x ← x − h∇E(x) + √(2hT) ξ (then x/‖x‖ on the sphere). (N, d) -> (N, d)."""
    noise = gaussian_noise(key, particles.shape, antithetic)
    drift = energy_gradients(energy_fn, params, particles)
    moved = particles - step_size * drift + jnp.sqrt(2.0 * step_size * temperature) * noise
    return project_to_sphere(moved) if manifold == "sphere" else moved


def make_ula(energy_fn, num_steps: int = 1, antithetic: bool = False,
             manifold: str = "euclidean") -> Sampler:
    """K = `num_steps` (projected) unadjusted Langevin steps on all particles."""

    def sample(key, params, particles, step_size, temperature):
        def body(x, step_key):
            x = langevin_step(step_key, energy_fn, params, x, step_size, temperature,
                              antithetic=antithetic, manifold=manifold)
            return x, None

        particles, _ = jax.lax.scan(body, particles, jax.random.split(key, num_steps))
        return particles, SamplerInfo(acceptance_rate=jnp.ones((), particles.dtype))

    return sample


def _make_blackjax_sampler(energy_fn, num_steps: int, build_step) -> Sampler:
    """K steps of a BlackJAX kernel, vmapped over particles with one key per particle.

    build_step(logdensity_fn, step_size, temperature) -> (init, step) for one particle.
    """

    def sample(key, params, particles, step_size, temperature):
        def logdensity_fn(x):
            return -energy_fn(params, x) / temperature

        init, step = build_step(logdensity_fn, step_size, temperature)
        states = jax.vmap(init)(particles)

        def body(states, step_key):
            keys = jax.random.split(step_key, particles.shape[0])
            states, info = jax.vmap(step)(keys, states)
            return states, jnp.mean(info.acceptance_rate)

        states, acceptance = jax.lax.scan(body, states, jax.random.split(key, num_steps))
        return states.position, SamplerInfo(acceptance_rate=jnp.mean(acceptance))

    return sample


def make_mala(energy_fn, num_steps: int = 1) -> Sampler:
    """K MALA steps (BlackJAX) with ε = hT."""

    def build_step(logdensity_fn, step_size, temperature):
        kernel = blackjax.mala.build_kernel()

        def step(key, state):
            return kernel(key, state, logdensity_fn, step_size * temperature)

        return (lambda x: blackjax.mala.init(x, logdensity_fn)), step

    return _make_blackjax_sampler(energy_fn, num_steps, build_step)


def make_hmc(energy_fn, num_steps: int = 1, num_integration_steps: int = 1) -> Sampler:
    """K HMC transitions (BlackJAX), leapfrog step ε = √(2hT), unit mass."""

    def build_step(logdensity_fn, step_size, temperature):
        kernel = blackjax.hmc.build_kernel()

        def step(key, state):
            inverse_mass = jnp.ones_like(state.position)
            return kernel(key, state, logdensity_fn, jnp.sqrt(2.0 * step_size * temperature),
                          inverse_mass, num_integration_steps)

        return (lambda x: blackjax.hmc.init(x, logdensity_fn)), step

    return _make_blackjax_sampler(energy_fn, num_steps, build_step)


def get_sampler(config, energy_fn, manifold: str = "euclidean") -> Sampler:
    """The sampler named by `config.sampler.name`, for particles on `manifold`."""
    cfg = config.sampler
    if cfg.name not in SAMPLERS:
        raise ValueError(f"sampler.name={cfg.name!r}: expected one of {SAMPLERS}")
    if manifold not in MANIFOLDS:
        raise ValueError(f"manifold={manifold!r}: expected one of {MANIFOLDS}")
    if cfg.name == "ula":
        return make_ula(energy_fn, cfg.num_steps, cfg.antithetic, manifold)
    if manifold == "sphere":
        raise ValueError(f"sampler.name={cfg.name!r} works in R^d only; on the sphere use 'ula' "
                         "(projected Langevin)")
    if cfg.antithetic:
        raise ValueError(f"sampler.antithetic=True is for 'ula' only, not {cfg.name!r}")
    if cfg.name == "mala":
        return make_mala(energy_fn, cfg.num_steps)
    return make_hmc(energy_fn, cfg.num_steps, cfg.num_integration_steps)
