"""Flow-MCMC (ebmdual.flow_mcmc): exact global moves and mode weights kept at equilibrium."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ebmdual.flow_mcmc import flow_mcmc
from ebmdual.flows import coupling_flow

HP = {"particle_step_size": jnp.float32(0.01), "temperature": jnp.float32(1.0)}
MEANS = jnp.array([[-2.5, -2.5], [2.5, -2.5], [-2.5, 2.5], [2.5, 2.5]])
WEIGHTS = jnp.array([0.1, 0.2, 0.3, 0.4])
STD = 0.3


def mixture_energy(params, x):
    del params
    log_components = jnp.log(WEIGHTS) - 0.5 * jnp.sum((x - MEANS) ** 2, -1) / STD ** 2
    return -jax.scipy.special.logsumexp(log_components)


def standard_normal_energy(params, x):
    del params
    return 0.5 * jnp.sum(x * x)


def run(sampler, particles, steps, seed=0):
    state = sampler.init(jax.random.key(seed), None, particles)
    step = jax.jit(lambda k, x, s: sampler.step(k, None, x, s, HP))
    infos = []
    for t in range(steps):
        particles, state, info = step(jax.random.fold_in(jax.random.key(seed), t), particles,
                                      state)
        infos.append(info)
    return particles, state, infos


def test_independent_mh_with_the_target_as_proposal_accepts_everything():
    """The flow at init is N(0, I), the target exp(−‖x‖²/2): every ratio is exactly 1."""
    flow = coupling_flow(2, "spline")
    sampler = flow_mcmc(standard_normal_energy, flow, optax.adam(1e-3), local_steps=0,
                        flow_steps=0)
    start = jax.random.normal(jax.random.key(1), (256, 2))
    moved, _, infos = run(sampler, start, 3)
    assert all(float(info.extra["global_acceptance"]) == 1.0 for info in infos)
    assert np.all(np.asarray(moved) != np.asarray(start))


def test_isir_with_one_candidate_never_moves():
    flow = coupling_flow(2, "affine")
    sampler = flow_mcmc(mixture_energy, flow, optax.adam(1e-3), global_move="isir",
                        num_proposals=1, local_steps=0, flow_steps=2)
    start = jax.random.normal(jax.random.key(1), (128, 2))
    moved, _, infos = run(sampler, start, 3)
    np.testing.assert_array_equal(np.asarray(moved), np.asarray(start))
    assert all(float(info.extra["global_acceptance"]) == 0.0 for info in infos)


def exact_mixture_samples(key, n):
    mode_key, noise_key = jax.random.split(key)
    modes = jax.random.choice(mode_key, 4, (n,), p=WEIGHTS)
    return MEANS[modes] + STD * jax.random.normal(noise_key, (n, 2))


def mode_fractions(x):
    modes = np.argmin(np.sum((np.asarray(x)[:, None] - np.asarray(MEANS)) ** 2, -1), 1)
    return np.bincount(modes, minlength=4) / len(modes)


@pytest.mark.parametrize("move", ["imh", "isir"])
def test_chains_started_at_exact_samples_keep_the_mode_weights(move):
    """N = 2000 chains, exact samples of the mixture at the start: after 200 cycles (global
    move + adaptive MALA + flow update) the chains are still exact samples, independent
    across chains, so each mode's fraction is binomial: within 3 σ = 3√(w(1−w)/N). The
    global moves must have moved chains between modes for this to test anything."""
    n = 2000
    start = exact_mixture_samples(jax.random.key(3), n)
    sampler = flow_mcmc(mixture_energy, coupling_flow(2, "spline"), optax.adam(1e-3),
                        global_move=move, num_proposals=3, local_steps=1,
                        target_acceptance=0.6, flow_steps=1)
    end, _, infos = run(sampler, start, 200)
    fractions, weights = mode_fractions(end), np.asarray(WEIGHTS)
    band = 3 * np.sqrt(weights * (1 - weights) / n)
    assert np.all(np.abs(fractions - weights) <= band), (fractions, band)
    switched = np.mean(np.argmin(np.sum((np.asarray(end)[:, None] - np.asarray(MEANS)) ** 2, -1), 1)
                       != np.argmin(np.sum((np.asarray(start)[:, None] - np.asarray(MEANS)) ** 2, -1), 1))
    assert switched > 0.3, switched
    assert np.mean([float(i.extra["global_acceptance"]) for i in infos[-50:]]) > 0.2


def test_uneven_start_is_rebalanced_while_mala_keeps_it():
    """Chains started 70/10/10/10 over the modes: flow-MCMC reaches the true weights (within
    binomial 4σ of N = 1000 after 300 cycles); MALA alone keeps the starting split."""
    n = 1000
    counts = [700, 100, 100, 100]
    start = jnp.concatenate([MEANS[k] + STD * jax.random.normal(jax.random.key(k), (c, 2))
                             for k, c in enumerate(counts)])
    sampler = flow_mcmc(mixture_energy, coupling_flow(2, "spline"), optax.adam(1e-3),
                        local_steps=1, target_acceptance=0.6, flow_steps=5)
    end, _, _ = run(sampler, start, 300)
    weights = np.asarray(WEIGHTS)
    assert np.all(np.abs(mode_fractions(end) - weights) <= 4 * np.sqrt(weights * (1 - weights) / n))
    local_only = flow_mcmc(mixture_energy, coupling_flow(2, "spline"), optax.adam(1e-3),
                           global_move="isir", num_proposals=1, local_steps=1,
                           target_acceptance=0.6, flow_steps=0)
    end, _, _ = run(local_only, start, 300)
    np.testing.assert_allclose(mode_fractions(end), np.array(counts) / n, atol=0.005)


def test_flow_state_is_trained_toward_the_chains():
    start = exact_mixture_samples(jax.random.key(4), 512)
    sampler = flow_mcmc(mixture_energy, coupling_flow(2, "spline"), optax.adam(3e-3),
                        local_steps=1, flow_steps=5)
    _, _, infos = run(sampler, start, 30)
    losses = [float(i.extra["flow_loss"]) for i in infos]
    assert losses[-1] < losses[0] - 0.5, losses
