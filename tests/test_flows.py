"""Coupling flows (ebmdual.flows): identity at init, exact inverse, normalised density."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmdual.flows import coupling_flow, rational_quadratic_spline


def perturbed(flow, scale, seed=5):
    """Flow parameters with the zero-initialised output layers set to N(0, scale²): a
    non-trivial flow whose density is smooth enough to integrate on a grid."""
    params = flow.init(jax.random.key(0))
    keys = iter(jax.random.split(jax.random.key(seed), 256))

    def perturb(path, leaf):
        last = "Dense_2" in jax.tree_util.keystr(path)
        return leaf + scale * jax.random.normal(next(keys), leaf.shape) if last else leaf

    return jax.tree_util.tree_map_with_path(perturb, params)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_flow_starts_as_the_standard_normal(kind):
    flow = coupling_flow(3, kind)
    x = jax.random.normal(jax.random.key(1), (64, 3)) * 2
    expected = -0.5 * np.sum(np.asarray(x) ** 2, 1) - 1.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(flow.log_prob(flow.init(jax.random.key(0)), x), expected,
                               atol=1e-5)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_log_prob_integrates_to_one_on_a_grid(kind):
    """Riemann sum of q on [−10, 10]² with 1001² points: the tails beyond hold < 1e-6 of
    a near-normal flow, and the grid error of a smooth density at spacing 0.02 is below
    1e-3 (the sum at half the resolution agrees to that)."""
    flow = coupling_flow(2, kind)
    params = perturbed(flow, 0.05)
    totals = []
    for num in (501, 1001):
        g = np.linspace(-10, 10, num)
        points = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
        totals.append(float(jnp.sum(jnp.exp(flow.log_prob(params, points)))) * (g[1] - g[0]) ** 2)
    assert abs(totals[1] - 1) < 2e-3 and abs(totals[0] - totals[1]) < 1e-3, totals
    # and it is not the base density any more
    x = jnp.ones((1, 2))
    assert abs(float(flow.log_prob(params, x)[0]) - (-1 - np.log(2 * np.pi))) > 1e-2


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_sample_and_log_prob_agrees_with_log_prob(kind):
    flow = coupling_flow(4, kind)
    params = perturbed(flow, 0.05)
    x, log_q = flow.sample_and_log_prob(params, jax.random.key(2), 512)
    np.testing.assert_allclose(flow.log_prob(params, x), log_q, atol=1e-3)


def test_spline_inverse_and_log_derivative():
    """The inverse undoes the forward map, and log|dy/dx| equals the autodiff derivative.
    In float64, so that the tolerance tests the algebra (float32 loses ~1e-4 in the
    quadratic solve of steep bins)."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), 3)
        w, h = (jax.random.normal(k, (400, 8), jnp.float64) for k in keys[:2])
        d = jax.random.normal(keys[2], (400, 7), jnp.float64)
        x = jnp.linspace(-6, 6, 400, dtype=jnp.float64)  # inside and outside [−5, 5]
        y, log_det = rational_quadratic_spline(x, w, h, d, 5.0)
        x_back, log_det_back = rational_quadratic_spline(y, w, h, d, 5.0, inverse=True)
        slope = jax.vmap(jax.grad(
            lambda a, b, c, e: rational_quadratic_spline(a, b, c, e, 5.0)[0]))(x, w, h, d)
    np.testing.assert_allclose(x_back, x, atol=1e-8)
    np.testing.assert_allclose(log_det_back, -log_det, atol=1e-8)
    np.testing.assert_allclose(np.log(slope), log_det, atol=1e-8)
    assert np.all(np.asarray(slope) > 0)  # monotone (each entry is its own spline)


def test_bad_flow_arguments_are_refused():
    with pytest.raises(ValueError, match="kind"):
        coupling_flow(2, "glow")
    with pytest.raises(ValueError, match="dim"):
        coupling_flow(1)
