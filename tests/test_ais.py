"""Annealed importance sampling (ebmdual.evaluation.ais_log_partition) against closed forms.

Statistical checks use fixed seeds and a tolerance of NUM_SE = 3 standard errors, where the
standard error is the estimator's own: the spread of log Ẑ over its R independent repeats,
std_r(log Ẑ_r)/√R (AISResult.stderr). Each check also asserts that this standard error is
small (well under a nat), so that "within 3 SE" is a sharp test that a wrong log Z fails,
and one test shows that it does fail for an energy 10 % off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmdual import evaluation

NUM_SE = 3.0  # tolerance of the statistical checks, in standard errors of the estimator
DIM = 100
BOX_SHAPE = (10, 10, 1)  # D = 100, annealed as images
BOX_SLOPE = 2.0


def quadratic_energy(params, x):
    """E(x) = ½ (x − μ)ᵀ Λ (x − μ), Λ = diag(λ): Z = (2π)^{d/2} Π_i λ_i^{−1/2}."""
    return 0.5 * jnp.sum(params["precision"] * (x - params["mean"]) ** 2)


def linear_energy(slope, x):
    """E(x) = a Σ_i x_i on [0, 1]^D: Z = ((1 − e^{−a})/a)^D."""
    return slope * jnp.sum(x)


def gaussian_params(precision_scale=1.0):
    precision = jnp.linspace(0.5, 2.0, DIM)
    return {"precision": precision_scale * precision, "mean": jnp.linspace(-1.0, 1.0, DIM) + 0.3}


def gaussian_log_partition(params) -> float:
    """(d/2) log 2π − ½ log det Λ, in float64."""
    precision = np.asarray(params["precision"], np.float64)
    return 0.5 * precision.size * np.log(2 * np.pi) - 0.5 * np.sum(np.log(precision))


GAUSSIAN_AIS = dict(num_chains=256, num_temperatures=500, num_repeats=16, step_size=0.1)


@pytest.fixture(scope="module")
def gaussian_result():
    return evaluation.ais_log_partition(quadratic_energy, gaussian_params(), jax.random.key(1),
                                        example=jnp.zeros(DIM), **GAUSSIAN_AIS)


def test_gaussian_log_partition(gaussian_result):
    """d = 100, Λ = diag(0.5..2), μ ≠ 0, base N(0, I): log Z within 3 SE (SE over repeats)."""
    result, truth = gaussian_result, gaussian_log_partition(gaussian_params())
    assert result.log_weights.shape == (16, 256) and result.repeat_log_partitions.shape == (16,)
    assert result.schedule.shape == (501,) and result.step_sizes.shape == (500,)
    assert 0 < float(result.stderr) < 0.1  # sharp: a wrong log Z by 0.3 nats would fail
    assert abs(float(result.log_partition) - truth) < NUM_SE * float(result.stderr), (
        float(result.log_partition), truth, float(result.stderr))
    # Diagnostics: the tuned step keeps the acceptance near its 0.6 target, weights even.
    assert 0.5 < float(jnp.mean(result.acceptance_rate)) < 0.7
    assert float(jnp.min(result.ess_fraction)) > 0.1
    # Jensen: the log of the pooled mean is at least the mean of the repeats' logs.
    assert float(result.pooled_log_partition) >= float(result.log_partition) - 1e-5


def test_wrong_energy_lands_outside_the_error_bars(gaussian_result):
    """The same estimator on Λ·1.1 (true log Z lower by 50 log 1.1 = 4.8 nats) is many SE
    away from the log Z of Λ: the test above can fail."""
    truth = gaussian_log_partition(gaussian_params())
    wrong = evaluation.ais_log_partition(quadratic_energy, gaussian_params(1.1),
                                         jax.random.key(1), example=jnp.zeros(DIM),
                                         **GAUSSIAN_AIS)
    assert abs(float(wrong.log_partition) - truth) > 10 * NUM_SE * float(wrong.stderr)
    assert abs(float(wrong.log_partition) - gaussian_log_partition(gaussian_params(1.1))) < (
        NUM_SE * float(wrong.stderr))


def test_box_log_partition():
    """E = 2 Σ x_i on [0, 1]^100, samples shaped (10, 10, 1), uniform base: log Z =
    D log((1 − e^{−a})/a) within 3 SE (SE over repeats)."""
    result = evaluation.ais_log_partition(
        linear_energy, BOX_SLOPE, jax.random.key(2), example=jnp.zeros(BOX_SHAPE),
        num_chains=128, num_temperatures=500, num_repeats=16, mala_steps=3, box=(0.0, 1.0))
    truth = DIM * np.log((1 - np.exp(-BOX_SLOPE)) / BOX_SLOPE)
    assert 0 < float(result.stderr) < 0.1
    assert abs(float(result.log_partition) - truth) < NUM_SE * float(result.stderr), (
        float(result.log_partition), truth, float(result.stderr))
    assert float(jnp.min(result.ess_fraction)) > 0.2


def test_base_as_target_gives_exact_weights():
    """E(x) = ‖x‖²/(2s²) with base N(0, s² I): every increment is the constant
    log Z = (d/2) log 2πs², so every log-weight equals it up to float32 rounding whatever
    the chains do (checks the bookkeeping of u = log(f_1/f_0) across temperatures)."""
    scale = 0.7
    result = evaluation.ais_log_partition(
        lambda s, x: 0.5 * jnp.sum(x**2) / s**2, scale, jax.random.key(3),
        example=jnp.zeros((28, 28, 1)), num_chains=32, num_temperatures=200, num_repeats=2,
        base_std=scale)
    truth = 0.5 * 784 * np.log(2 * np.pi * scale**2)
    np.testing.assert_allclose(np.asarray(result.log_weights), truth, atol=2e-3)


def test_negative_log_likelihood():
    """NLL of exact Gaussian samples: E[E(x)] + log Z = d/2 + log Z, within 3 combined SE;
    with a box, a test point outside it has NLL +∞."""
    params = gaussian_params()
    key_data, key_ais = jax.random.split(jax.random.key(4))
    noise = jax.random.normal(key_data, (2000, DIM))
    test_data = params["mean"] + noise / jnp.sqrt(params["precision"])
    nll = evaluation.ais_negative_log_likelihood(quadratic_energy, params, test_data, key_ais,
                                                 **GAUSSIAN_AIS)
    truth = DIM / 2 + gaussian_log_partition(params)
    assert 0 < float(nll.stderr) < 0.5
    assert abs(float(nll.value) - truth) < NUM_SE * float(nll.stderr)

    images = jnp.full((3, 2, 2, 1), 0.5).at[2, 0, 0, 0].set(1.5)
    outside = evaluation.ais_negative_log_likelihood(
        linear_energy, 1.0, images, key_ais, box=(0.0, 1.0), num_chains=4,
        num_temperatures=5, num_repeats=2, num_warmup=2)
    inside = evaluation.ais_negative_log_likelihood(
        linear_energy, 1.0, images[:2], key_ais, box=(0.0, 1.0), num_chains=4,
        num_temperatures=5, num_repeats=2, num_warmup=2)
    assert float(outside.value) == np.inf and np.isfinite(float(inside.value))


@pytest.mark.parametrize("kind", ["sigmoid", "geometric", "linear"])
def test_schedules(kind):
    schedule = np.asarray(evaluation.ais_schedule(50, kind))
    assert schedule.shape == (51,) and schedule[0] == 0 and schedule[-1] == pytest.approx(1)
    assert np.all(np.diff(schedule) > 0)


def test_bad_arguments():
    kwargs = dict(example=jnp.zeros(2), num_chains=4)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="increasing strictly"):
        evaluation.ais_log_partition(linear_energy, 1.0, key, schedule=[0.0, 0.7, 0.5, 1.0],
                                     **kwargs)
    with pytest.raises(ValueError, match="exactly one"):
        evaluation.ais_log_partition(linear_energy, 1.0, key, **kwargs)
    with pytest.raises(ValueError, match="at least 2 repeats"):
        evaluation.ais_log_partition(linear_energy, 1.0, key, num_temperatures=3,
                                     num_repeats=1, **kwargs)
