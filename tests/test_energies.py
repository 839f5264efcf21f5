"""Energy modules against their formulas (NumPy), their initialisation and the factory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmdual import energies
from experiments.defaults import base_config
from experiments.registry import ENERGIES


def numpy_shallow_energy(theta, w, x, num_positive, alpha):
    """E(x) = (1/m) Σᵢ cᵢ wᵢ relu(⟨θᵢ, x⟩)^α, c = (+1 × num_positive, −1 × the rest)."""
    m = len(w)
    signs = np.where(np.arange(m) < num_positive, 1.0, -1.0)
    return float(np.sum(signs * w * np.maximum(theta @ x, 0.0) ** alpha) / m)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
@pytest.mark.parametrize("num_positive", [0, 3, 7])
def test_shallow_energy_equals_formula(num_positive, alpha):
    m, d = 7, 5
    rng = np.random.default_rng(num_positive)
    theta = rng.standard_normal((m, d))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    w = rng.uniform(0.1, 3.0, m)
    module = energies.ShallowEnergy(num_neurons=m, num_positive=num_positive, alpha=alpha)
    energy_fn = energies.make_energy_fn(module)
    params = {"params": {"theta": jnp.asarray(theta, jnp.float32),
                         "w": jnp.asarray(w, jnp.float32)}}
    for x in rng.standard_normal((20, d)):
        expected = numpy_shallow_energy(theta, w, x, num_positive, alpha)
        got = float(energy_fn(params, jnp.asarray(x, jnp.float32)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_shallow_init_unit_rows_and_initial_weight(key):
    """Through `as_energy`: init draws unit rows and constant weights, energy_fn is the formula."""
    energy = energies.as_energy(energies.ShallowEnergy(num_neurons=64, num_positive=10,
                                                       init_weight=0.7))
    params = energy.init(key, jnp.zeros(15))
    theta = np.asarray(params["params"]["theta"])
    assert theta.shape == (64, 15)
    np.testing.assert_allclose(np.linalg.norm(theta, axis=1), 1.0, atol=1e-6)
    assert np.unique(np.round(theta, 6), axis=0).shape[0] == 64  # distinct random directions
    np.testing.assert_array_equal(np.asarray(params["params"]["w"]), np.full(64, 0.7, np.float32))
    assert set(params["params"]) == {"theta", "w"}  # the signs are constants, not parameters
    x = np.linspace(-1.0, 1.0, 15)
    np.testing.assert_allclose(energy.energy_fn(params, jnp.asarray(x, jnp.float32)),
                               numpy_shallow_energy(theta, np.full(64, 0.7), x, 10, 1.0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_positive", [0, 2, 5])
def test_signs_split_per_num_positive(num_positive):
    """Neuron i alone (w = e_i, θ_i = x): E(x) = cᵢ/m, so each sign is read off the module."""
    m, d = 5, 3
    x = np.array([0.0, 0.6, 0.8])
    module = energies.ShallowEnergy(num_neurons=m, num_positive=num_positive)
    theta = jnp.tile(jnp.asarray(x, jnp.float32), (m, 1))
    signs = []
    for i in range(m):
        params = {"params": {"theta": theta, "w": jnp.zeros(m).at[i].set(1.0)}}
        signs.append(m * float(module.apply(params, jnp.asarray(x, jnp.float32))))
    np.testing.assert_allclose(signs, [1.0] * num_positive + [-1.0] * (m - num_positive), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(energies.output_signs(m, num_positive)),
                                  [1.0] * num_positive + [-1.0] * (m - num_positive))


@pytest.mark.parametrize("num_positive", [-1, 6])
def test_output_signs_rejects_out_of_range(num_positive):
    with pytest.raises(ValueError):
        energies.output_signs(5, num_positive)


def test_relu_power_and_sphere_init(key):
    u = jnp.array([-2.0, -0.1, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(energies.relu_power(u), [0, 0, 0, 0.5, 3.0])
    np.testing.assert_allclose(energies.relu_power(u, 2.0), [0, 0, 0, 0.25, 9.0])
    rows = energies.sphere_init(key, (100, 4))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(rows), axis=1), 1.0, atol=1e-6)


def numpy_mlp_energy_and_gradient(layers, x):
    """E(x) = W_out·h_L + b_out, h_l = swish(W_l h_{l−1} + b_l), swish(z) = z sigmoid(z);
    and ∇_x E by backpropagation written out by hand. layers: [(kernel (in, out), bias)]."""
    h, pre_activations = np.asarray(x, np.float64), []
    for kernel, bias in layers[:-1]:
        z = h @ kernel + bias
        pre_activations.append(z)
        h = z / (1.0 + np.exp(-z))
    kernel, bias = layers[-1]
    energy = float(h @ kernel[:, 0] + bias[0])
    gradient = kernel[:, 0]
    for (kernel, _), z in zip(layers[-2::-1], pre_activations[::-1]):
        sigmoid = 1.0 / (1.0 + np.exp(-z))
        gradient = kernel @ (gradient * (sigmoid + z * sigmoid * (1.0 - sigmoid)))
    return energy, gradient


def test_mlp_energy_equals_formula(key):
    """MLPEnergy against a NumPy swish MLP from the module's own parameters, value and ∇_x."""
    hidden_sizes = (16, 8)
    module = energies.MLPEnergy(hidden_sizes=hidden_sizes)
    params = module.init(key, jnp.zeros(3))
    # Random biases too (flax initialises them to 0, which would leave them untested).
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: jnp.asarray(
        rng.standard_normal(leaf.shape) / np.sqrt(max(leaf.shape[0], 1)), jnp.float32), params)
    names = [f"Dense_{i}" for i in range(len(hidden_sizes) + 1)]
    assert sorted(params["params"]) == names  # two hidden layers and the output layer
    layers = [(np.asarray(params["params"][name]["kernel"], np.float64),
               np.asarray(params["params"][name]["bias"], np.float64)) for name in names]
    energy_fn = energies.make_energy_fn(module)
    batch = jnp.asarray(rng.standard_normal((11, 3)), jnp.float32)
    values, gradients = jax.jit(jax.vmap(jax.value_and_grad(energy_fn, argnums=1),
                                         in_axes=(None, 0)))(params, batch)
    assert values.shape == (11,) and gradients.shape == (11, 3)
    assert energy_fn(params, batch[0]).shape == ()  # one (d,) sample -> a scalar
    for x, value, gradient in zip(np.asarray(batch), values, gradients):
        expected_value, expected_gradient = numpy_mlp_energy_and_gradient(layers, x)
        # float32 network against float64 NumPy; values and gradients are O(1).
        np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-6)


def test_registry_builds_the_configured_module():
    """config.model -> module, through the table the trainer uses (experiments.registry).

    Unknown names are rejected by experiments.validation (tests/test_experiments.py)."""
    config = base_config()
    config.model.num_neurons = 12
    config.model.num_positive = 4
    config.model.alpha = 2.0
    config.model.init_weight = 0.5
    assert set(ENERGIES) == {"shallow", "mlp", "conv"}
    module = ENERGIES["shallow"](config)
    assert isinstance(module, energies.ShallowEnergy)
    assert (module.num_neurons, module.num_positive, module.alpha, module.init_weight) == (
        12, 4, 2.0, 0.5)
    config.model.hidden_sizes = (5, 6)
    module = ENERGIES["mlp"](config)
    assert isinstance(module, energies.MLPEnergy) and tuple(module.hidden_sizes) == (5, 6)
    config.model.conv_features = (3, 5)
    config.model.spectral_norm = True
    module = ENERGIES["conv"](config)
    assert isinstance(module, energies.ConvEnergy) and tuple(module.features) == (3, 5)
    assert module.spectral_norm


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_conv_energy_is_per_image_and_shapes_follow_the_strides(key, spectral_norm):
    """One image -> a scalar; vmapped over a batch it equals the per-image calls (no
    coupling between images, unlike batch norm); 28 → 14 → 7 → 4 with 'SAME' padding."""
    module = energies.ConvEnergy(features=(4, 6, 8, 8), spectral_norm=spectral_norm)
    energy = energies.as_energy(module)
    images = jax.random.uniform(key, (5, 28, 28, 1))
    params = energy.init(key, images[0])
    batched = jax.vmap(energy.energy_fn, (None, 0))(params, images)
    single = jnp.stack([energy.energy_fn(params, x) for x in images])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(single), rtol=1e-5, atol=1e-6)
    assert float(jnp.std(batched)) > 0
    dense = params["params"]["Dense_0"]
    assert dense["kernel"].shape == (4 * 4 * 8, 1)


def assert_computes_flax_conv(ours, flax_conv, x):
    """`ours` has `flax_conv`'s parameters (same names, shapes and initial values) and, with
    every parameter shifted by 0.1 (so a nonzero bias takes part), computes the same
    function, batched and unbatched, and the same input gradient, to float32 rounding."""
    params = ours.init(jax.random.key(0), x)
    reference = flax_conv.init(jax.random.key(0), x)
    assert jax.tree.all(jax.tree.map(lambda a, b: a.shape == b.shape and bool(jnp.all(a == b)),
                                     params, reference))
    params = jax.tree.map(lambda p: p + 0.1, params)
    np.testing.assert_allclose(ours.apply(params, x), flax_conv.apply(params, x),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.apply(params, x[0]), flax_conv.apply(params, x[0]),
                               rtol=1e-5, atol=1e-5)

    def input_grad(module):
        return jax.grad(lambda x: jnp.sum(jnp.sin(module.apply(params, x))))(x)

    np.testing.assert_allclose(input_grad(ours), input_grad(flax_conv), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(28, 28, 1), (14, 14, 16), (7, 7, 8), (32, 32, 3), (7, 9, 2)])
def test_strided_conv_is_flax_strided_conv(shape):
    """StridedConv (space-to-depth, then a stride-1 convolution) is nn.Conv with stride 2
    (assert_computes_flax_conv) for even and odd sizes, and refuses odd kernels."""
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(1), (3, *shape))
    assert_computes_flax_conv(energies.StridedConv(5, 4), nn.Conv(5, (4, 4), strides=(2, 2)), x)
    with pytest.raises(ValueError, match="even kernel size"):
        energies.StridedConv(5, 3).init(jax.random.key(0), x)


@pytest.mark.parametrize("shape,kernel_size", [((28, 28, 1), 3), ((32, 32, 3), 3),
                                               ((7, 9, 2), 3), ((8, 8, 3), 4), ((5, 6, 1), 5)])
def test_patch_conv_is_flax_conv(shape, kernel_size):
    """PatchConv (im2col: shifted copies side by side, one matrix multiply) is nn.Conv
    (assert_computes_flax_conv) for odd and even kernels ('SAME' padding asymmetric) and
    non-square images."""
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(1), (3, *shape))
    assert_computes_flax_conv(energies.PatchConv(5, kernel_size),
                              nn.Conv(5, (kernel_size, kernel_size)), x)


def test_valid_conv_derivatives_are_lax_conv_derivatives():
    """valid_conv's own VJP gives lax.conv_general_dilated's value, input and kernel
    gradients, and its second derivative (forward-over-reverse, as the score-matching
    losses take it), to float32 rounding, on a non-square input."""
    x = jax.random.normal(jax.random.key(0), (3, 7, 6, 4))
    kernel = jax.random.normal(jax.random.key(1), (2, 2, 4, 5))

    def lax_conv(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def loss(conv):
        return lambda x, kernel: jnp.sum(jnp.sin(conv(x, kernel)))

    np.testing.assert_allclose(energies.valid_conv(x, kernel), lax_conv(x, kernel),
                               rtol=1e-5, atol=1e-5)
    for ours, reference in zip(jax.grad(loss(energies.valid_conv), (0, 1))(x, kernel),
                               jax.grad(loss(lax_conv), (0, 1))(x, kernel)):
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    tangent = jax.random.normal(jax.random.key(2), x.shape)

    def hvp(conv):
        return jax.linearize(lambda y: jax.grad(loss(conv))(y, kernel), x)[1](tangent)

    np.testing.assert_allclose(hvp(energies.valid_conv), hvp(lax_conv), rtol=1e-4, atol=1e-4)


def test_conv_energy_gradients_in_a_loop_are_canonical_convolutions():
    """Inside a fori_loop, every convolution XLA CPU compiles for ∇ₓE and ∇_θE of
    ConvEnergy is in the layout it runs with Eigen (b01f_01io->b01f): none is left with
    swapped kernel or batch/feature axes, which XLA CPU would emit as naive loops
    (energies.valid_conv; docs/performance.md)."""
    import re

    module = energies.ConvEnergy(features=(4, 8, 8))
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
    params = module.init(jax.random.key(1), x[0])

    def loss(params, x):
        return jnp.sum(jax.vmap(lambda xi: module.apply(params, xi))(x))

    def body(_, carry):
        x, acc = carry
        return (x - 0.01 * jax.grad(loss, 1)(params, x),
                acc + sum(jnp.sum(g) for g in jax.tree.leaves(jax.grad(loss)(params, x))))

    from ebmdual.compiler import jit

    program = jit(lambda x: jax.lax.fori_loop(0, 3, body, (x, 0.0))).lower(x).compile()
    labels = re.findall(r"convolution\(.*?dim_labels=(\S+?),", program.as_text())
    assert len(labels) >= 4, labels   # forward, input and kernel gradients are convolutions
    assert set(labels) == {"b01f_01io->b01f"}, labels


def test_as_energy_passes_pairs_and_rejects_others(key):
    """(init, energy_fn) pairs and Energy values pass through; anything else raises.
    (Modules: test_shallow_init_unit_rows_and_initial_weight.)"""
    quadratic = energies.as_energy((lambda k, example: jnp.ones(()),
                                    lambda scale, x: scale * jnp.sum(x**2)))
    scale = quadratic.init(key, jnp.zeros(2))
    assert float(quadratic.energy_fn(scale, jnp.array([3.0, 4.0]))) == 25.0
    assert energies.as_energy(quadratic) is quadratic
    for invalid in (energies.shallow_energy, (len,), (len, len, len), (len, 1.0)):
        with pytest.raises(TypeError):
            energies.as_energy(invalid)
