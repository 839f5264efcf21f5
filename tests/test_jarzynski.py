"""Jarzynski-weighted walkers (ebmdual.jarzynski) on a known path of targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmdual.jarzynski import effective_sample_size, jarzynski, systematic_resampling


def gaussian_energy(params, x):
    return 0.5 * jnp.sum((x - params["mean"]) ** 2) / params["var"]


def weighted_moments_and_errors(weights, x):
    """Self-normalised IS estimates of the mean and variance with their delta-method
    standard errors √(Σ w² (f − f̂)²)."""
    w, x = np.asarray(weights, np.float64), np.asarray(x, np.float64)[:, 0]
    mean = np.sum(w * x)
    var = np.sum(w * (x - mean) ** 2)
    se_mean = np.sqrt(np.sum(w ** 2 * (x - mean) ** 2))
    se_var = np.sqrt(np.sum(w ** 2 * ((x - mean) ** 2 - var) ** 2))
    return mean, var, se_mean, se_var


def test_weighted_walkers_follow_a_moving_gaussian_while_unweighted_ones_lag():
    """θ is not learned: the target N(3t, 1 + 3t) moves along t = k/200 over 200 steps of
    ULA (h = 0.05) started at exact samples of N(0, 1). The weighted mean and variance
    match the current target within 4 standard errors at every checkpoint; the
    unweighted walkers lag by more than 10 of them."""
    n, steps = 20_000, 200
    sampler = jarzynski(gaussian_energy, num_steps=1, ess_threshold=0.3)
    key = jax.random.key(0)
    x = jax.random.normal(key, (n, 1))
    state = sampler.init(key, {"mean": jnp.float32(0), "var": jnp.float32(1)}, x)
    hparams = {"particle_step_size": jnp.float32(0.05), "temperature": jnp.float32(1.0)}
    step = jax.jit(lambda k, p, x, s: sampler.step(k, p, x, s, hparams))
    resampled = 0
    for t in range(steps):
        fraction = (t + 1) / steps
        params = {"mean": jnp.float32(3 * fraction), "var": jnp.float32(1 + 3 * fraction)}
        x, state, info = step(jax.random.fold_in(key, t), params, x, state)
        resampled += int(info.extra["resampled"])
        if (t + 1) % 50 == 0:
            mean, var, se_mean, se_var = weighted_moments_and_errors(info.weights, x)
            exact_mean, exact_var = 3 * fraction, 1 + 3 * fraction
            assert abs(mean - exact_mean) < 4 * se_mean, (t, mean, exact_mean, se_mean)
            assert abs(var - exact_var) < 4 * se_var, (t, var, exact_var, se_var)
            assert abs(float(jnp.mean(x)) - exact_mean) > 10 * se_mean
    assert resampled > 0  # the path is long enough that the threshold is crossed


def bimodal_energy(weight, x):
    """E(x) = −log[(1 − w) N(x; (−2.5, 0), 0.3²I) + w N(x; (2.5, 0), 0.3²I)] + const:
    two modes 25 nats of barrier apart, the right one of mass w."""
    means = jnp.array([[-2.5, 0.0], [2.5, 0.0]])
    logits = jnp.log(jnp.stack([1.0 - weight, weight]))
    return -jax.scipy.special.logsumexp(logits - jnp.sum((x - means) ** 2, 1) / (2 * 0.3 ** 2))


def test_weights_carry_a_changing_mode_weight_that_no_walker_crosses():
    """θ is not learned: the right mode's mass w goes from 0.5 to 0.9 over 600 steps of ULA
    (h = 0.01, 5 moves per step) started at exact samples of w = 0.5. No walker crosses the
    barrier, so the unweighted fraction stays at its start; the weighted fraction
    Σ w_i 1[x_i right] matches w within 4 standard errors (self-normalised IS error
    √Σ w_i²(1_i − f)²) at every checkpoint. The training runs of docs/results/mode_weights.md
    rely on exactly this."""
    n, steps = 2000, 600
    sampler = jarzynski(bimodal_energy, num_steps=5, ess_threshold=0.5)
    key = jax.random.key(3)
    right = jax.random.bernoulli(key, 0.5, (n,))
    x = (jnp.stack([jnp.where(right, 2.5, -2.5), jnp.zeros(n)], 1)
         + 0.3 * jax.random.normal(jax.random.key(4), (n, 2)))
    start = int(jnp.sum(right))
    state = sampler.init(key, jnp.float32(0.5), x)
    hparams = {"particle_step_size": jnp.float32(0.01), "temperature": jnp.float32(1.0)}
    step = jax.jit(lambda k, w, x, s: sampler.step(k, w, x, s, hparams))
    for t in range(1, steps + 1):
        target = 0.5 + 0.4 * t / steps
        x, state, info = step(jax.random.fold_in(key, t), jnp.float32(target), x, state)
        if t % 150 == 0:
            on_right = np.asarray(x[:, 0] > 0, np.float64)
            w = np.asarray(info.weights, np.float64)
            fraction = float(np.sum(w * on_right))
            se = float(np.sqrt(np.sum(w ** 2 * (on_right - fraction) ** 2)))
            assert abs(fraction - target) < 4 * se, (t, fraction, target, se)
            assert on_right.sum() == start  # nobody crossed: the weights did all the work
            assert abs(on_right.mean() - target) > 10 * se or t < 300


def test_weights_remove_the_ula_bias_at_a_fixed_target():
    """At a large step (h = 0.5 on N(0, 1)) ULA's stationary variance is 1/(1 − h/2) = 4/3;
    the weighted variance is 1 within 4 standard errors."""
    sampler = jarzynski(lambda p, x: 0.5 * jnp.sum(x * x), num_steps=1, ess_threshold=0.3)
    key = jax.random.key(1)
    x = jax.random.normal(key, (20_000, 1))
    state = sampler.init(key, None, x)
    hparams = {"particle_step_size": jnp.float32(0.5), "temperature": jnp.float32(1.0)}
    step = jax.jit(lambda k, x, s: sampler.step(k, None, x, s, hparams))
    for t in range(40):
        x, state, info = step(jax.random.fold_in(key, t), x, state)
    _, var, _, se_var = weighted_moments_and_errors(info.weights, x)
    assert abs(var - 1.0) < 4 * se_var, (var, se_var)
    assert abs(float(jnp.mean(x ** 2)) - 4 / 3) < 0.05  # the walkers themselves are ULA's


def test_systematic_resampling_keeps_expected_counts():
    """Each walker gets ⌊N w⌋ or ⌈N w⌉ children."""
    log_w = jnp.log(jnp.array([0.5, 0.25, 0.125, 0.125]) + 0.0)
    log_w = jnp.tile(log_w, 25)  # N = 100
    counts = np.bincount(np.asarray(systematic_resampling(jax.random.key(2), log_w)),
                         minlength=100)
    expected = 100 * np.asarray(jax.nn.softmax(log_w))
    assert np.all(counts >= np.floor(expected) - 1e-9) and np.all(counts <= np.ceil(expected))
    assert float(effective_sample_size(jnp.zeros(10))) == pytest.approx(10.0)


def test_restarted_walkers_get_the_mean_weight_and_skip_the_switch():
    sampler = jarzynski(gaussian_energy, num_steps=1)
    params = {"mean": jnp.float32(0), "var": jnp.float32(1)}
    x = jnp.linspace(-2, 2, 8)[:, None]
    state = sampler.init(jax.random.key(0), params, x)
    state = {**state, "log_weight": jnp.log(jnp.arange(1.0, 9.0)),
             "fresh": jnp.zeros(8, bool)}
    mask = jnp.arange(8) < 2
    restarted = sampler.restart(state, mask)
    mean_weight = np.log(np.mean(np.arange(1.0, 9.0)))
    np.testing.assert_allclose(restarted["log_weight"][:2], mean_weight, rtol=1e-6)
    np.testing.assert_array_equal(restarted["log_weight"][2:], state["log_weight"][2:])
    np.testing.assert_array_equal(restarted["fresh"], mask)


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="ess_threshold"):
        jarzynski(gaussian_energy, ess_threshold=1.5)


def test_mala_kernel_walkers_follow_a_moving_gaussian_with_accepted_moves():
    """kernel='mala': the same moving target as above, moves accepted or refused instead of
    weighted. The moves leave each target invariant, so the switch alone carries the
    weights: weighted moments within 4 SE of the exact ones, acceptance below 1."""
    n, steps = 20_000, 100
    sampler = jarzynski(gaussian_energy, num_steps=1, ess_threshold=0.3, kernel="mala")
    key = jax.random.key(0)
    x = jax.random.normal(key, (n, 1))
    state = sampler.init(key, {"mean": jnp.float32(0), "var": jnp.float32(1)}, x)
    hparams = {"particle_step_size": jnp.float32(0.5), "temperature": jnp.float32(1.0)}
    step = jax.jit(lambda k, p, x, s: sampler.step(k, p, x, s, hparams))
    for t in range(steps):
        fraction = (t + 1) / steps
        params = {"mean": jnp.float32(3 * fraction), "var": jnp.float32(1 + 3 * fraction)}
        x, state, info = step(jax.random.fold_in(key, t), params, x, state)
        assert 0.3 < float(info.acceptance_rate) < 1.0
        if (t + 1) % 25 == 0:
            mean, var, se_mean, se_var = weighted_moments_and_errors(info.weights, x)
            assert abs(mean - 3 * fraction) < 4 * se_mean, (t, mean, se_mean)
            assert abs(var - (1 + 3 * fraction)) < 4 * se_var, (t, var, se_var)


def test_flat_start_on_a_box_weights_uniform_walkers_to_the_target():
    """start='flat', support (0, 1): walkers uniform on the unit interval, target
    exp(−a x) on [0, 1] (a = 3, mean 1/a − 1/(e^a − 1)). The first switch alone weights
    them to the target: weighted mean within 4 SE; MALA moves never leave the box."""
    a = 3.0
    sampler = jarzynski(lambda params, x: params * x[0], num_steps=3, ess_threshold=0.0,
                        kernel="mala", support=(0.0, 1.0), start="flat")
    x = jax.random.uniform(jax.random.key(1), (20_000, 1))
    state = sampler.init(jax.random.key(0), jnp.float32(a), x)
    hparams = {"particle_step_size": jnp.float32(0.02), "temperature": jnp.float32(1.0)}
    x, state, info = sampler.step(jax.random.key(2), jnp.float32(a), x, state, hparams)
    mean, _, se_mean, _ = weighted_moments_and_errors(info.weights, x)
    exact = 1 / a - 1 / (np.exp(a) - 1)
    assert abs(mean - exact) < 4 * se_mean, (mean, exact, se_mean)
    assert abs(float(jnp.mean(x)) - exact) > 10 * se_mean  # the walkers alone are not there
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert 0.0 < float(info.acceptance_rate) < 1.0
    with pytest.raises(ValueError, match="kernel='mala'"):
        jarzynski(gaussian_energy, support=(0.0, 1.0))
