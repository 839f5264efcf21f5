"""Flow-MCMC (ebmdual.flow_mcmc): exact global moves and mode weights kept at equilibrium."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ebmdual.energies import tilted
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


def perturbed(flow, key, scale=0.02):
    """Flow parameters moved away from the identity: a non-Gaussian q_φ (mean |Δ log q|
    from N(0, I) about 0.3 under q_φ; larger moves make splines steep enough that the
    forward and inverse log-densities part in float32)."""
    leaves, tree = jax.tree.flatten(flow.init(key))
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    return jax.tree.unflatten(tree, [leaf + scale * jax.random.normal(k, leaf.shape)
                                     for leaf, k in zip(leaves, keys)])


def zero_energy():
    return (lambda key, x: {}), (lambda params, x: jnp.zeros((), x.dtype))


def test_tilted_energy_with_a_zero_energy_is_the_normalised_flow():
    """E = 0 − log q_φ: exp(−E) integrates to 1 on a grid for a non-trivial q_φ (with the
    sign of the tilt wrong, the integrand would be 1/q_φ and the integral huge)."""
    flow = coupling_flow(2, "spline")
    energy = tilted(zero_energy(), flow)
    params = energy.init(jax.random.key(0), jnp.zeros(2))
    params["flow"] = perturbed(flow, jax.random.key(3))
    axis = jnp.linspace(-9.0, 9.0, 361)
    grid = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    energies = jax.vmap(energy.energy_fn, in_axes=(None, 0))(params, grid)
    cell = float(axis[1] - axis[0]) ** 2
    assert float(jnp.sum(jnp.exp(-energies))) * cell == pytest.approx(1.0, abs=2e-3)
    # and it is not the identity flow's N(0, I)
    gaussian = 0.5 * jnp.sum(grid ** 2, -1) + jnp.log(2 * jnp.pi)
    assert float(jnp.max(jnp.abs(energies - gaussian))) > 0.1


def test_tilted_sampler_proposes_from_the_models_own_flow():
    """Tilted (model_flow), the proposal is q_φ of the model's parameters and the sampler
    keeps no flow of its own. With E_θ = 0 the model is q_φ itself, so every IMH proposal
    is accepted; the same moves with a different flow in the sampler would not be."""
    flow = coupling_flow(2, "spline")
    energy = tilted(zero_energy(), flow)
    params = energy.init(jax.random.key(0), jnp.zeros(2))
    params["flow"] = perturbed(flow, jax.random.key(3))
    sampler = flow_mcmc(energy.energy_fn, flow, None, local_steps=0,
                        model_flow=lambda p: p["flow"])
    start = jax.random.normal(jax.random.key(1), (512, 2))
    state = sampler.init(jax.random.key(2), params, start)
    assert set(state) == {"local"}
    step = jax.jit(lambda k, x, s: sampler.step(k, params, x, s, HP))
    x = start
    for t in range(3):
        x, state, info = step(jax.random.key(10 + t), x, state)
        assert float(info.extra["global_acceptance"]) == 1.0
        assert np.isfinite(float(info.extra["flow_loss"]))
    # the untilted sampler on the same model proposes from its own identity flow N(0, I):
    # not the model, so some proposals are refused
    untilted = flow_mcmc(energy.energy_fn, flow, optax.adam(1e-3), local_steps=0, flow_steps=0)
    state = untilted.init(jax.random.key(2), params, start)
    _, _, info = untilted.step(jax.random.key(10), params, start, state, HP)
    assert float(info.extra["global_acceptance"]) < 0.95


def test_image_particles_are_flattened_for_the_flow():
    """(N, 4, 4, 1) particles and a flow on R^16: with the target exp(−‖x‖²/2) equal to the
    identity flow, every proposal is accepted, and the particles keep their shape; the
    flow trains on the flattened chains."""
    flow = coupling_flow(16, "affine")
    sampler = flow_mcmc(standard_normal_energy, flow, optax.adam(1e-3), local_steps=0,
                        flow_steps=0)
    start = jax.random.normal(jax.random.key(1), (64, 4, 4, 1))
    moved, _, infos = run(sampler, start, 3)
    assert moved.shape == start.shape
    assert all(float(info.extra["global_acceptance"]) == 1.0 for info in infos)
    trained = flow_mcmc(standard_normal_energy, flow, optax.adam(1e-2), local_steps=1,
                        flow_steps=2, target_acceptance=None)
    _, state, infos = run(trained, start, 2)
    assert np.isfinite(float(infos[-1].extra["flow_loss"]))
    zero_at_init = [trained_leaf for initial, trained_leaf in
                    zip(jax.tree.leaves(flow.init(jax.random.key(0))), jax.tree.leaves(state["flow"]))
                    if not np.any(np.asarray(initial))]
    assert zero_at_init and all(np.any(np.asarray(leaf) != 0) for leaf in zero_at_init)
    with pytest.raises(ValueError, match="16 numbers"):
        sampler.init(jax.random.key(0), None, jnp.zeros((8, 3, 3, 1)))


def test_support_refuses_every_move_out_of_the_box():
    """support=(0, 1): the target is exp(−‖x‖²/2) on [0, 1]^16, proposals of the flow
    (N(0, I)) and of MALA that leave the box are refused, so the chains never leave it,
    and the global acceptance is about the probability that a N(0, I) draw lands in the box
    times the MH ratio (far below 1)."""
    flow = coupling_flow(16, "affine")
    sampler = flow_mcmc(standard_normal_energy, flow, optax.adam(1e-3), local_steps=1,
                        flow_steps=0, target_acceptance=None, support=(0.0, 1.0))
    start = jax.random.uniform(jax.random.key(1), (256, 4, 4, 1))
    moved, _, infos = run(sampler, start, 5)
    assert float(moved.min()) >= 0.0 and float(moved.max()) <= 1.0
    assert all(float(info.extra["global_acceptance"]) == 0.0 for info in infos)  # P(box) = 2^-16·…
    assert float(jnp.max(jnp.abs(moved - start))) > 0  # MALA still moves inside the box
