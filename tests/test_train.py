"""The dual training loop: restart mask, the score-matching limit, tracing and
compilation, one device against four, and a sanity run on the tiny teacher.

Statistical tolerances are 4 standard errors (SE); each check names its SE.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P

from ebmdual import losses, optim, samplers, train
from ebmdual.energies import MLPEnergy, make_energy_fn
from experiments.defaults import base_config
from tests.conftest import build_trainer


def leaves_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


# ----------------------------------------------------------------------------- restart mask

@pytest.mark.parametrize("schedule", ["random", "periodic"])
def test_restart_prob_zero_never_restarts(key, schedule):
    for step in range(12):
        mask = train.restart_mask(jax.random.fold_in(key, step), 1000, 0.0, step, schedule)
        assert not np.any(np.asarray(mask))


@pytest.mark.parametrize("schedule", ["random", "periodic"])
def test_restart_prob_one_always_restarts(key, schedule):
    for step in range(12):
        mask = train.restart_mask(jax.random.fold_in(key, step), 1000, 1.0, step, schedule)
        assert np.all(np.asarray(mask))


@pytest.mark.parametrize("restart_prob", [0.025, 0.3, 0.9])
def test_random_restart_fraction_is_binomial(key, restart_prob):
    """i.i.d. Bernoulli(p) over n = 10^5 groups: the fraction's SE is √(p(1 − p)/n)."""
    num_groups = 100_000
    mask = np.asarray(train.restart_mask(key, num_groups, jnp.float32(restart_prob), 0, "random"))
    standard_error = np.sqrt(restart_prob * (1 - restart_prob) / num_groups)
    assert abs(mask.mean() - restart_prob) <= 4 * standard_error


@pytest.mark.parametrize("restart_prob, period", [(0.25, 4), (1 / 40, 40), (0.3, 3), (0.4, 2)])
def test_periodic_schedule_restarts_all_every_period(key, restart_prob, period):
    """All groups restart together exactly when step % round(1/p) == 0."""
    for step in range(3 * period + 1):
        mask = np.asarray(train.restart_mask(key, 16, jnp.float32(restart_prob),
                                             jnp.int32(step), "periodic"))
        assert np.all(mask == (step % period == 0)), step


def distinct_particles_and_batch(num_particles=40, num_data=7, dim=3):
    particles = 100.0 + jnp.arange(num_particles * dim, dtype=jnp.float32).reshape(-1, dim)
    batch = -1.0 - jnp.arange(num_data * dim, dtype=jnp.float32).reshape(-1, dim)
    return particles, batch


@pytest.mark.parametrize("schedule", ["random", "periodic"])
def test_antithetic_pairs_share_mask_and_target(key, schedule):
    particles, batch = distinct_particles_and_batch()
    half = particles.shape[0] // 2
    restart_prob = 0.5 if schedule == "random" else 1.0
    for step in range(5):
        out, mask = train.restart_particles(jax.random.fold_in(key, step), particles, batch,
                                                jnp.float32(restart_prob), step,
                                                train.RestartPolicy(schedule=schedule,
                                                                    antithetic=True))
        out, before = np.asarray(out), np.asarray(particles)
        restarted = np.any(out != before, axis=1)
        np.testing.assert_array_equal(restarted[:half], restarted[half:])
        # restarted pairs start at the same data row; the others are untouched
        np.testing.assert_array_equal(out[:half][restarted[:half]], out[half:][restarted[half:]])
        rows = {tuple(r) for r in np.asarray(batch)}
        assert all(tuple(r) in rows for r in out[restarted])
        np.testing.assert_array_equal(out[~restarted], before[~restarted])
        np.testing.assert_array_equal(np.asarray(mask), restarted)
        if schedule == "periodic":
            # the authors' "copies of the data set": pair j restarts at row j mod n
            np.testing.assert_array_equal(out[:half], np.asarray(batch)[np.arange(half) % 7])


def test_restart_to_noise_lands_on_sphere(key):
    particles, batch = distinct_particles_and_batch()
    policy = train.RestartPolicy(target="noise", antithetic=True, noise=train.sphere_noise)
    out, mask = train.restart_particles(key, particles, batch, 1.0, 0, policy)
    assert np.all(np.asarray(mask))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=1), 1.0, atol=1e-5)
    out = np.asarray(out)
    np.testing.assert_array_equal(out[:20], out[20:])  # pairs share their noise target
    assert len(np.unique(out[:20], axis=0)) == 20
    out_r, _ = train.restart_particles(key, particles, batch, 1.0, 0,
                                       train.RestartPolicy(target="noise"))
    assert np.std(np.linalg.norm(np.asarray(out_r), axis=1)) > 0.1  # R^d: plain Gaussian noise


# ----------------------------------------------------------------------------- score-matching limit
#
# With restart_prob = 1 (periodic: every particle pair restarts at its data point x_k)
# and one antithetic ULA step, X_k^± = x_k + δ^±, δ^± = −h∇ₓE(x_k) ± √(2h) ξ_k. Taylor
# expanding ∇_θE(x_k + δ) and averaging the pair, every odd power of ξ cancels exactly:
#
#   ∇_θ L_ML / h = mean_k [ ∇ₓE · ∇_θ∇ₓE − ξ_kᵀ (∇ₓ²∇_θE) ξ_k ] (x_k) + O(h)
#               = ∇_θ L_SM + mean_k ∇_θ[ΔE − ξ_kᵀ∇ₓ²E ξ_k](x_k) + O(h),
#
# L_SM = mean_k ½‖∇ₓE‖² − ΔE. The middle term ("MC term") has mean zero over ξ
# (E ξξᵀ = I) and, given ξ, does not depend on h; the O(h) remainder is the h² part
# of the expansion (h²‖∇E‖², h²ξ²∇E and h²ξ⁴ terms) divided by h. Two tests:
#   * with the same noise ξ for every h (common random numbers), the discrepancy
#     minus the exact MC term (computed by autodiff from ξ, recovered from the
#     particles) halves with h: first order, not noise;
#   * the Richardson combination 2 D(h) − D(2h), which removes the O(h) term,
#     agrees with ∇_θ L_SM within 4 SE, SE = per-sample std of that estimator / √n.

SM_DIM, SM_NUM_DATA = 2, 1024


@pytest.fixture(scope="module")
def score_matching_setup():
    module = MLPEnergy(hidden_sizes=(16,))  # swish MLP: non-quadratic, 65 parameters
    energy_fn = make_energy_fn(module)
    params = module.init(jax.random.key(1), jnp.zeros(SM_DIM))
    data = jax.random.normal(jax.random.key(2), (SM_NUM_DATA, SM_DIM))
    sm_gradient = jax.jit(lambda p: ravel_pytree(
        jax.grad(losses.score_matching_loss, argnums=1)(energy_fn, p, data))[0])(params)
    return energy_fn, params, data, np.asarray(sm_gradient, np.float64)


def one_step_from_data(energy_fn, params, data, step_size, key):
    """The real train-step pieces: restart all pairs at the data, one antithetic ULA step."""
    restart_key, step_key = jax.random.split(key)
    start = jnp.zeros((2 * data.shape[0], data.shape[1]))
    particles, mask = train.restart_particles(
        restart_key, start, data, 1.0, 0, train.RestartPolicy(schedule="periodic", antithetic=True))
    particles = samplers.langevin_step(step_key, energy_fn, params, particles, step_size, 1.0,
                                       antithetic=True)
    return particles, jnp.mean(mask.astype(jnp.float32))


def ml_gradient_over_h(energy_fn, params, data, particles, step_size):
    gradient = jax.grad(losses.maximum_likelihood_loss, argnums=1)(energy_fn, params, data,
                                                                  particles)
    return ravel_pytree(gradient)[0] / step_size


def per_sample_mc_term(energy_fn, params, data, noise):
    """∇_θ[ΔE(x_k) − ξ_kᵀ∇ₓ²E(x_k) ξ_k] for each k: (n, num_params)."""

    def mc_term(p, x, xi):
        hessian = jax.hessian(energy_fn, argnums=1)(p, x)
        return jnp.trace(hessian) - xi @ hessian @ xi

    return jax.vmap(lambda x, xi: ravel_pytree(jax.grad(mc_term)(params, x, xi))[0])(data, noise)


def per_sample_parameter_gradients(energy_fn, params, x):
    """∇_θE(x_k) for each row: (n, num_params)."""
    return jax.vmap(lambda y: ravel_pytree(jax.grad(energy_fn)(params, y))[0])(x)


def per_sample_score_matching_gradients(energy_fn, params, data):
    """∇_θ of the score-matching loss of each sample alone: (n, num_params)."""
    return jax.vmap(lambda x: ravel_pytree(jax.grad(losses.score_matching_loss, argnums=1)(
        energy_fn, params, x[None]))[0])(data)


def test_ml_gradient_over_h_tends_to_score_matching_gradient_at_first_order(score_matching_setup):
    energy_fn, params, data, sm_gradient = score_matching_setup
    n = data.shape[0]

    @jax.jit
    def discrepancy_and_mc_terms(step_size, key):
        particles, fraction = one_step_from_data(energy_fn, params, data, step_size, key)
        ml = ml_gradient_over_h(energy_fn, params, data, particles, step_size)
        noise = (particles[:n] - particles[n:]) / (2 * jnp.sqrt(2 * step_size))  # ξ_k, exactly
        return ml, per_sample_mc_term(energy_fn, params, data, noise), fraction

    key = jax.random.key(3)  # the same ξ for every h
    residuals = []
    for step_size in (0.04, 0.02, 0.01):
        ml, per_sample, fraction = discrepancy_and_mc_terms(jnp.float32(step_size), key)
        assert float(fraction) == 1.0
        discrepancy = np.asarray(ml, np.float64) - sm_gradient
        per_sample = np.asarray(per_sample, np.float64)
        mc = per_sample.mean(0)
        residuals.append(np.linalg.norm(discrepancy - mc))
        # The MC term is zero-mean noise of its predicted size: each component within
        # 4 SE (SE = per-sample std / √n), plus 1e-6 for components that are exactly 0.
        mc_se = per_sample.std(0, ddof=1) / np.sqrt(n)
        assert np.all(np.abs(mc) <= 4 * mc_se + 1e-6)
        # The MC term is what separates the raw discrepancy from O(h): it is larger.
        assert np.linalg.norm(discrepancy) > 2 * residuals[-1]
    coarse, middle, fine = residuals
    # First order: each halving of h halves the residual (measured ratios 1.9–2.0).
    assert 1.7 < coarse / middle < 2.3
    assert 1.7 < middle / fine < 2.3
    assert fine < 0.01 * np.linalg.norm(sm_gradient)


def test_richardson_extrapolated_ml_gradient_matches_score_matching(score_matching_setup):
    energy_fn, params, data, sm_gradient = score_matching_setup
    n = data.shape[0]
    per_sample_sm = np.asarray(jax.jit(per_sample_score_matching_gradients, static_argnums=0)(
        energy_fn, params, data), np.float64)
    np.testing.assert_allclose(per_sample_sm.mean(0), sm_gradient, atol=1e-5)

    @jax.jit
    def per_sample_ml_over_h(step_size, key):
        particles, _ = one_step_from_data(energy_fn, params, data, step_size, key)
        pair_mean = 0.5 * (per_sample_parameter_gradients(energy_fn, params, particles[:n])
                           + per_sample_parameter_gradients(energy_fn, params, particles[n:]))
        terms = (per_sample_parameter_gradients(energy_fn, params, data) - pair_mean) / step_size
        return terms, ml_gradient_over_h(energy_fn, params, data, particles, step_size)

    key = jax.random.key(4)
    terms = {}
    for step_size in (0.02, 0.01):
        per_sample, ml = per_sample_ml_over_h(jnp.float32(step_size), key)
        terms[step_size] = np.asarray(per_sample, np.float64)
        # the per-sample terms average to the library's ML gradient / h (float32 floor)
        np.testing.assert_allclose(terms[step_size].mean(0), np.asarray(ml), atol=2e-4)
    # 2 D(h) − D(2h): the O(h) term cancels, the MC term remains (mean zero).
    extrapolated = 2 * (terms[0.01] - per_sample_sm) - (terms[0.02] - per_sample_sm)
    deviation = np.abs(extrapolated.mean(0))
    standard_error = extrapolated.std(0, ddof=1) / np.sqrt(n)
    # 4 SE; plus 2e-4 for float32 cancellation in (∇θE(x) − ∇θE(X))/h at h = 0.01
    # (≈ 1e-7 · O(10) / h, measured 4e-5), which also covers the exactly-zero components.
    assert np.all(deviation <= 4 * standard_error + 2e-4), np.max(deviation / standard_error)


# ----------------------------------------------------------------------------- tracing

def euclidean_config():
    """A 2-D Euclidean task: small MLP, Adam, MALA, periodic restarts."""
    config = base_config()
    config.data.name = "mixture"
    config.data.dim = 2
    config.model.name = "mlp"
    config.model.hidden_sizes = (8,)
    config.optim.name = "adam"
    config.sampler.name = "mala"
    config.sampler.num_particles = 32
    config.sampler.num_steps = 2
    config.sampler.antithetic = False
    config.train.restart_schedule = "periodic"
    config.train.restart_prob = 0.25
    config.train.log_every = 3
    return config


def euclidean_data():
    return np.random.default_rng(0).standard_normal((32, 2)).astype(np.float32)


@pytest.mark.parametrize("task", ["teacher", "euclidean"])
def test_train_step_traces_once_across_hyperparameter_values(task, tiny_teacher_config,
                                                           tiny_teacher_data):
    if task == "teacher":
        config, data, manifold = tiny_teacher_config, tiny_teacher_data, "sphere"
        rate_names = ("feature_learning_rate", "weight_learning_rate")
    else:
        config, data, manifold = euclidean_config(), euclidean_data(), "euclidean"
        rate_names = ("learning_rate",)
    chex.clear_trace_counter()  # both parametrisations wrap a function named train_step
    trainer, data = build_trainer(config, data, manifold, num_devices=1)
    step = jax.jit(chex.assert_max_traces(trainer.train_step, n=1))
    state = trainer.init(jax.random.key(0), data)
    sweep = [dict(restart_prob=0.0, particle_step_size=0.01, temperature=1.0),
             dict(restart_prob=1.0, particle_step_size=0.05, temperature=0.5),
             dict(restart_prob=0.3, particle_step_size=0.002, temperature=3.0)]
    for i, values in enumerate(sweep):
        rates = {name: 0.1 / (i + 1) for name in rate_names}
        state = train.with_hyperparams(state, **values, **rates)
        state, metrics = step(state, data, jax.random.key(i))
        # the new values reach the step: they are reported back, not baked in
        for name, value in {**values, **rates}.items():
            np.testing.assert_allclose(float(metrics[name]), value, rtol=1e-6)
    assert int(state.step) == len(sweep)


def test_with_hyperparams_rejects_unknown_names(tiny_teacher_config, tiny_teacher_data):
    trainer, data = build_trainer(tiny_teacher_config, tiny_teacher_data, num_devices=1)
    state = trainer.init(jax.random.key(0), data)
    with pytest.raises(KeyError):
        train.with_hyperparams(state, learning_rate_typo=0.1)


_TRAIN_LOOP_EVENTS = []


def _record_train_loop_event(event, duration, fun_name="", **kwargs):
    del duration, kwargs
    if "train_loop" in str(fun_name):
        _TRAIN_LOOP_EVENTS.append(event)


jax.monitoring.register_event_duration_secs_listener(_record_train_loop_event)


def train_loop_compilations():
    """How many times a function named train_loop has been traced or XLA-compiled so far."""
    return len(_TRAIN_LOOP_EVENTS)


@pytest.fixture(scope="module")
def recompile_trainer(make_tiny_teacher_config, tiny_teacher_data):
    """Its own trainer: the cache-size checks below must not see other tests' calls."""
    return build_trainer(make_tiny_teacher_config(), tiny_teacher_data, num_devices=4)


def test_train_loop_does_not_recompile_for_new_hyperparameter_values(recompile_trainer):
    trainer, data = recompile_trainer
    state = trainer.init(jax.random.key(0), data)
    state, _ = trainer.train_loop(state, data)
    compiled = train_loop_compilations()
    assert compiled > 0  # the listener sees the first call's trace and compile
    for i, value in enumerate([0.0, 1.0, 0.5]):
        new = train.with_hyperparams(state, restart_prob=value, particle_step_size=0.01 * (i + 1),
                                     temperature=1.0 + i, feature_learning_rate=0.1 * value,
                                     weight_learning_rate=0.3, weight_cap=5.0 + i)
        state, metrics = trainer.train_loop(new, data)  # the state as with_hyperparams returns it
        np.testing.assert_allclose(np.asarray(metrics["restart_prob"]), value)
        np.testing.assert_allclose(np.asarray(metrics["temperature"]), 1.0 + i)
    assert train_loop_compilations() == compiled  # neither retraced nor recompiled


# ----------------------------------------------------------------------------- devices

def run_teacher(config, data, num_devices, num_calls):
    trainer, placed = build_trainer(config, data, num_devices=num_devices)
    state = trainer.init(jax.random.key(config.seed), placed)
    history = []
    for _ in range(num_calls):
        state, metrics = trainer.train_loop(state, placed)
        history.append(jax.device_get(metrics))
    return trainer, state, history


@pytest.fixture(scope="module")
def one_and_four_devices(make_tiny_teacher_config, tiny_teacher_data):
    """The tiny teacher (h_θ = h_w = 0.2, so θ and w move visibly), 3 calls × 5 steps."""
    config = make_tiny_teacher_config()
    config.optim.feature_learning_rate = 0.2
    config.optim.weight_learning_rate = 0.2
    return {num: run_teacher(config, tiny_teacher_data, num, num_calls=3) for num in (1, 4)}


def test_one_device_and_four_devices_give_the_same_run(one_and_four_devices):
    (_, one, one_metrics), (_, four, four_metrics) = one_and_four_devices.values()
    assert int(one.step) == int(four.step) == 15
    leaves_close(one.params, four.params, atol=1e-5)
    leaves_close(one.particles, four.particles, atol=1e-5)
    leaves_close(one_metrics, four_metrics, atol=1e-5)


def test_four_device_particles_are_sharded(one_and_four_devices):
    trainer, state, _ = one_and_four_devices[4]
    assert trainer.mesh.size == 4
    sharding = state.particles.sharding
    assert sharding.spec == P("data")
    shards = state.particles.addressable_shards
    assert len({shard.device for shard in shards}) == 4
    assert all(shard.data.shape == (16, 3) for shard in shards)
    # parameters are replicated: every device holds all of θ
    theta = state.params["params"]["theta"]
    assert theta.sharding.is_fully_replicated and len(theta.sharding.device_set) == 4


# ----------------------------------------------------------------------------- sanity

def uniform_sphere(num, dim, seed):
    z = np.random.default_rng(seed).standard_normal((num, dim))
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def test_tiny_teacher_training_sanity(tiny_teacher_config, tiny_teacher_data):
    """40 WFR steps (h_θ = h_w = 0.2, β = 1.5): finite metrics, w ≥ 0, unit θ rows and
    particles, the cap binding, and an energy that has learnt where the data are."""
    config = tiny_teacher_config
    config.optim.feature_learning_rate = 0.2
    config.optim.weight_learning_rate = 0.2
    weight_cap = 1.5
    config.optim.weight_cap = weight_cap
    trainer, data = build_trainer(config, tiny_teacher_data, num_devices=1)
    state = trainer.init(jax.random.key(0), data)
    restart_fractions = []
    for _ in range(8):
        state, metrics = trainer.train_loop(state, data)
        for name, values in metrics.items():
            assert np.all(np.isfinite(np.asarray(values))), name
        restart_fractions.append(np.asarray(metrics["restart_fraction"]))
        w = np.asarray(state.params["params"]["w"])
        theta = np.asarray(state.params["params"]["theta"])
        assert np.all(w >= 0)
        assert w.mean() <= weight_cap * (1 + 1e-6)
        np.testing.assert_allclose(np.linalg.norm(theta, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(state.particles), axis=1), 1.0,
                                   atol=1e-5)
    assert abs(w.mean() - weight_cap) < 1e-5 * weight_cap  # the cap binds by the end
    # restart fraction: 32 antithetic pairs × 40 steps of Bernoulli(1/40);
    # SE = √(p(1 − p) / 1280).
    p, trials = config.train.restart_prob, 32 * 40
    assert abs(np.mean(restart_fractions) - p) <= 4 * np.sqrt(p * (1 - p) / trials)
    # Learnt: mean energy on the data lies below the mean energy under the uniform law.
    # SE of the difference from both sample spreads.
    energies = jax.vmap(trainer.energy_fn, in_axes=(None, 0))
    on_data = np.asarray(energies(state.params, data), np.float64)
    uniform = np.asarray(energies(state.params, uniform_sphere(4000, 3, seed=1)), np.float64)
    gap_se = np.hypot(on_data.std(ddof=1) / np.sqrt(len(on_data)),
                      uniform.std(ddof=1) / np.sqrt(len(uniform)))
    assert on_data.mean() < uniform.mean() - 4 * gap_se


def numpy_shallow_energy(params, x, num_positive):
    """E(x) = mean_i c_i w_i relu(⟨θ_i, x⟩) in float64 NumPy, from the flax parameters."""
    theta = np.asarray(params["params"]["theta"], np.float64)
    w = np.asarray(params["params"]["w"], np.float64)
    signs = np.where(np.arange(len(w)) < num_positive, 1.0, -1.0)
    return np.mean(signs * w * np.maximum(np.asarray(x, np.float64) @ theta.T, 0.0), axis=-1)


def test_energy_gap_and_loss_are_those_of_the_moved_particles(tiny_teacher_config,
                                                              tiny_teacher_data):
    """One step: energy_gap = mean E_θ(X') − mean E_θ(x) with θ the parameters before the
    update and X' the particles after the restart and the Langevin move (the ones the
    loss saw), recomputed in NumPy; the ML loss is its negative. Particles from before
    the move, or θ after the update, give other values (checked)."""
    config = tiny_teacher_config
    config.optim.feature_learning_rate = config.optim.weight_learning_rate = 0.5
    trainer, data = build_trainer(config, tiny_teacher_data, num_devices=1)
    state = trainer.init(jax.random.key(0), data)
    new, metrics = jax.jit(trainer.train_step)(state, data, jax.random.key(1))
    num_positive = config.model.num_positive

    def gap(params, particles):
        return (numpy_shallow_energy(params, particles, num_positive).mean()
                - numpy_shallow_energy(params, tiny_teacher_data, num_positive).mean())

    expected = gap(state.params, new.particles)
    np.testing.assert_allclose(float(metrics["energy_gap"]), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(metrics["loss"]), -expected, rtol=1e-4, atol=1e-6)
    for wrong in (gap(state.params, state.particles), gap(new.params, new.particles)):
        assert abs(wrong - expected) > 1e-3 * abs(expected) + 1e-5


def test_lazy_regime_leaves_theta_unchanged(tiny_teacher_config, tiny_teacher_data):
    config = tiny_teacher_config
    config.model.regime = "lazy"
    trainer, data = build_trainer(config, tiny_teacher_data, num_devices=1)
    state = trainer.init(jax.random.key(0), data)
    theta0 = np.asarray(state.params["params"]["theta"]).copy()
    w0 = np.asarray(state.params["params"]["w"]).copy()
    for _ in range(3):
        state, metrics = trainer.train_loop(state, data)
    np.testing.assert_array_equal(np.asarray(state.params["params"]["theta"]), theta0)
    assert not np.array_equal(np.asarray(state.params["params"]["w"]), w0)  # w still trains
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))


# ----------------------------------------------------------------------------- p schedules, lr scaling

def test_restart_decay_is_geometric_and_exact_when_constant():
    """p_t = p · r^(min(t, T)/T); r = 1 gives p bit for bit (old runs unchanged)."""
    policy = train.RestartPolicy(prob=0.5, decay=1e-3, decay_steps=100)
    expected = {0: 0.5, 50: 0.5 * 1e-3**0.5, 100: 0.5e-3, 400: 0.5e-3}
    for step, value in expected.items():
        got = policy.prob_at(jnp.float32(0.5), jnp.float32(1e-3), jnp.int32(step))
        np.testing.assert_allclose(float(got), value, rtol=1e-5)
    constant = train.RestartPolicy(prob=0.3, decay_steps=100)
    for step in (0, 37, 100, 1000):
        assert float(constant.prob_at(jnp.float32(0.3), jnp.float32(1.0), step)) == np.float32(0.3)
    with pytest.raises(ValueError, match="decay"):
        train.RestartPolicy(prob=0.3, decay=0.0)


def test_decaying_restart_prob_reaches_the_step(tiny_teacher_config, tiny_teacher_data):
    """The step restarts with p_t: the reported restart_prob follows the schedule and the
    restarted fraction its binomial law (N/2 = 32 antithetic pairs per step, 4σ)."""
    config = tiny_teacher_config
    config.train.restart_prob, config.train.restart_decay = 1.0, 0.01
    trainer, data = build_trainer(config, tiny_teacher_data, num_devices=1)
    state = trainer.init(jax.random.key(0), data)
    fractions, probs = [], []
    for _ in range(config.train.num_steps // config.train.log_every):
        state, metrics = trainer.train_loop(state, data)
        fractions.append(np.asarray(metrics["restart_fraction"]))
        probs.append(np.asarray(metrics["restart_prob"]))
    probs, fractions = np.concatenate(probs), np.concatenate(fractions)
    steps = np.arange(len(probs))
    np.testing.assert_allclose(probs, 0.01 ** (steps / config.train.num_steps), rtol=1e-5)
    pairs = config.sampler.num_particles // 2
    stderr = np.sqrt(np.sum(probs * (1 - probs)) / pairs) / len(probs)
    assert abs(fractions.mean() - probs.mean()) < 4 * stderr


def test_authors_scaling_formula():
    """a = 1 + c/(N_R h_x) with N_R = 1/p, or the run length without restarts
    (docs/tasks.md, Learning-rate scaling: 6 at p = 1, 1.125 at 1/40, 1.00125 for 4000
    iterations without restarts, all at h_x = 0.02, c = 0.1)."""
    scale = optim.restart_period_scaling(0.1, 4000)
    for p, a in ((1.0, 6.0), (1 / 40, 1.125), (1 / 60, 1 + 0.1 / (60 * 0.02)), (0.0, 1.00125)):
        np.testing.assert_allclose(float(scale(jnp.float32(p), jnp.float32(0.02))), a, rtol=1e-6)
    with pytest.raises(ValueError):
        optim.restart_period_scaling(-1.0, 10)


def test_authors_scaling_multiplies_the_wfr_steps(tiny_teacher_config, tiny_teacher_data):
    """With lr_scaling='authors' one WFR step equals an unscaled step with both learning
    rates multiplied by a (WFR is linear in the gradient inside its step)."""
    config = tiny_teacher_config
    config.train.restart_prob = 0.25
    a = 1 + 0.1 * 0.25 / config.sampler.step_size
    scaled_config = config.copy_and_resolve_references()
    scaled_config.optim.lr_scaling = "authors"
    manual = config.copy_and_resolve_references()
    manual.optim.feature_learning_rate *= a
    manual.optim.weight_learning_rate *= a
    results = []
    for cfg in (scaled_config, manual, config):
        trainer, data = build_trainer(cfg, tiny_teacher_data, num_devices=1)
        state = trainer.init(jax.random.key(0), data)
        state, metrics = jax.jit(trainer.train_step)(state, data, jax.random.key(1))
        results.append(np.asarray(state.params["params"]["theta"]))
        if cfg is scaled_config:
            np.testing.assert_allclose(float(metrics["gradient_scale"]), a, rtol=1e-6)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)
    assert np.abs(results[0] - results[2]).max() > 1e-4  # the scaling changed the step


def test_learning_rate_decay_is_geometric_and_leaves_the_swept_rate_alone():
    """optim.lr_decay = r over T steps: the SGD step at update t is lr · r^(min(t, T)/T) · g
    (checked against that formula in NumPy), the logged effective rate follows it, and the
    injected base rate, the one sweeps and rollbacks set, stays lr."""
    from experiments.registry import OPTIMIZERS

    config = base_config()
    config.model.name, config.optim.name = "mlp", "sgd"
    config.optim.learning_rate, config.optim.lr_decay, config.train.num_steps = 0.5, 0.1, 4
    optimizer = OPTIMIZERS["sgd"](config)
    params = {"w": jnp.zeros(3)}
    gradient = {"w": jnp.array([1.0, -2.0, 3.0])}
    state = optimizer.init(params)
    for t in range(7):
        updates, state = optimizer.update(gradient, state, params)
        expected = -0.5 * 0.1 ** (min(t, 4) / 4) * np.array([1.0, -2.0, 3.0])
        np.testing.assert_allclose(np.asarray(updates["w"]), expected, rtol=1e-5)
        np.testing.assert_allclose(float(optim.effective_learning_rates(state)["learning_rate"]),
                                   0.5 * 0.1 ** (min(t, 4) / 4), rtol=1e-5)
        np.testing.assert_allclose(float(optim.learning_rates(state)["learning_rate"]), 0.5)
    halved = optim.set_hyperparams(state, learning_rate=0.25)  # a rollback's halving
    updates, _ = optimizer.update(gradient, halved, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.25 * 0.1 * np.array([1, -2, 3]),
                               rtol=1e-5)
