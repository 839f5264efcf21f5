"""Optimizers: the WFR step against the paper's formula (docs/tasks.md, Neuron updates
(WFR)) computed in NumPy, the lazy regime's frozen θ, the optax rules and their injected
learning rates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ebmdual import losses, optim
from ebmdual.energies import ShallowEnergy, make_energy_fn
from experiments.defaults import base_config
from experiments.registry import OPTIMIZERS
from experiments.validation import ConfigError, validate_config


def build_optimizer(config):
    """The optimizer the harness builds for `config` (experiments.registry)."""
    return OPTIMIZERS[config.optim.name](config)

NUM_NEURONS, NUM_POSITIVE, DIM = 6, 3, 4


def unit_rows(z):
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def shallow_problem(seed=0, num_data=10, num_particles=12):
    """Random θ on the sphere, w in [0.5, 2], data and particles on the sphere (float64)."""
    rng = np.random.default_rng(seed)
    theta = unit_rows(rng.standard_normal((NUM_NEURONS, DIM)))
    w = rng.uniform(0.5, 2.0, NUM_NEURONS)
    data = unit_rows(rng.standard_normal((num_data, DIM)))
    particles = unit_rows(rng.standard_normal((num_particles, DIM)))
    return theta, w, data, particles


def shallow_config(**optim_overrides):
    config = base_config()
    config.model.num_neurons = NUM_NEURONS
    config.model.num_positive = NUM_POSITIVE
    for name, value in optim_overrides.items():
        setattr(config.optim, name, value)
    return config


def ml_gradients(theta, w, data, particles):
    """θ-gradients of the ML loss mean E(data) − mean E(particles) for ShallowEnergy."""
    energy_fn = make_energy_fn(ShallowEnergy(num_neurons=NUM_NEURONS, num_positive=NUM_POSITIVE))
    params = {"params": {"theta": jnp.asarray(theta, jnp.float32),
                         "w": jnp.asarray(w, jnp.float32)}}
    grads = jax.grad(losses.maximum_likelihood_loss, argnums=1)(
        energy_fn, params, jnp.asarray(data, jnp.float32), jnp.asarray(particles, jnp.float32))
    return params, grads


def paper_wfr_step(theta, w, data, particles, h_z, h_w, beta, train_features=True):
    """docs/tasks.md, Neuron updates (WFR), written out independently in float64:

    θᵢ ← Π(θᵢ − h_z P⊥_{θᵢ} cᵢ [mean_k 1(⟨θᵢ,x_k⟩>0) x_k − mean_j 1(⟨θᵢ,X_j⟩>0) X_j]),
    wᵢ ← wᵢ exp(−h_w cᵢ [mean_k relu(⟨θᵢ,x_k⟩) − mean_j relu(⟨θᵢ,X_j⟩)]),
    then w ← βw/mean(w) if mean(w) > β.
    """
    signs = np.array([1.0] * NUM_POSITIVE + [-1.0] * (NUM_NEURONS - NUM_POSITIVE))
    new_theta, new_w = theta.copy(), w.copy()
    for i in range(NUM_NEURONS):
        a_data, a_part = data @ theta[i], particles @ theta[i]
        direction = (((a_data > 0)[:, None] * data).mean(0)
                     - ((a_part > 0)[:, None] * particles).mean(0))
        tangent = direction - (direction @ theta[i]) * theta[i]
        if train_features:
            moved = theta[i] - h_z * signs[i] * tangent
            new_theta[i] = moved / np.linalg.norm(moved)
        value = np.maximum(a_data, 0).mean() - np.maximum(a_part, 0).mean()
        new_w[i] = w[i] * np.exp(-h_w * signs[i] * value)
    if new_w.mean() > beta:
        new_w = beta * new_w / new_w.mean()
    return new_theta, new_w


def apply(optimizer, params, grads):
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates), updates


@pytest.mark.parametrize("cap", ["inactive", "binding"])
@pytest.mark.parametrize("seed", [0, 1])
def test_wfr_step_equals_paper_formula(seed, cap):
    theta, w, data, particles = shallow_problem(seed)
    h_z, h_w = 0.3, 0.7
    uncapped = paper_wfr_step(theta, w, data, particles, h_z, h_w, np.inf)[1]
    # binding: β below the new mean weight, so the rescaling acts
    beta = 10.0 if cap == "inactive" else 0.8 * uncapped.mean()
    expected_theta, expected_w = paper_wfr_step(theta, w, data, particles, h_z, h_w, beta)
    assert (expected_w.mean() < uncapped.mean()) == (cap == "binding")

    params, grads = ml_gradients(theta, w, data, particles)
    optimizer = build_optimizer(shallow_config(
        feature_learning_rate=h_z, weight_learning_rate=h_w, weight_cap=beta))
    new, _ = apply(optimizer, params, grads)
    np.testing.assert_allclose(np.asarray(new["params"]["theta"]), expected_theta, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new["params"]["w"]), expected_w, atol=1e-5)
    assert np.all(np.asarray(new["params"]["theta"]) != theta.astype(np.float32))  # θ moved


def test_wfr_lazy_keeps_theta_exactly_and_moves_w():
    theta, w, data, particles = shallow_problem(2)
    params, grads = ml_gradients(theta, w, data, particles)
    config = shallow_config(feature_learning_rate=0.3, weight_learning_rate=0.7)
    config.model.regime = "lazy"
    new, updates = apply(build_optimizer(config), params, grads)
    np.testing.assert_array_equal(np.asarray(updates["params"]["theta"]), 0.0)
    np.testing.assert_array_equal(np.asarray(new["params"]["theta"]),
                                  np.asarray(params["params"]["theta"]))
    _, expected_w = paper_wfr_step(theta, w, data, particles, 0.3, 0.7, 10.0, train_features=False)
    np.testing.assert_allclose(np.asarray(new["params"]["w"]), expected_w, atol=1e-5)


def test_wfr_learning_rates_are_injected_arrays():
    theta, w, data, particles = shallow_problem(3)
    params, grads = ml_gradients(theta, w, data, particles)
    optimizer = build_optimizer(shallow_config(feature_learning_rate=0.3,
                                                   weight_learning_rate=0.7))
    state = optimizer.init(params)
    assert set(optim.learning_rates(state)) == {"feature_learning_rate", "weight_learning_rate"}
    # a new value in the state changes the step: h_w = 0 leaves w where it was
    hyperparams = dict(state.hyperparams, weight_learning_rate=jnp.float32(0.0))
    updates, _ = optimizer.update(grads, state._replace(hyperparams=hyperparams), params)
    np.testing.assert_array_equal(np.asarray(updates["params"]["w"]), 0.0)


@pytest.mark.parametrize("name", ["adam", "sgd"])
@pytest.mark.parametrize("regime", ["active", "lazy"])
def test_optax_rules_and_lazy_freeze(name, regime):
    theta, w, data, particles = shallow_problem(4)
    params, grads = ml_gradients(theta, w, data, particles)
    config = shallow_config(name=name, learning_rate=0.05)
    config.model.regime = regime
    optimizer = build_optimizer(config)
    new, updates = apply(optimizer, params, grads)
    theta_update = np.asarray(updates["params"]["theta"])
    w_update = np.asarray(updates["params"]["w"])
    if regime == "lazy":
        np.testing.assert_array_equal(theta_update, 0.0)
        np.testing.assert_array_equal(np.asarray(new["params"]["theta"]),
                                      np.asarray(params["params"]["theta"]))
    else:
        assert np.all(theta_update != 0.0)
    assert np.all(w_update != 0.0)
    if name == "sgd":
        np.testing.assert_allclose(w_update, -0.05 * np.asarray(grads["params"]["w"]), rtol=1e-6)
    else:  # adam's first step is −lr · sign(g) up to ε
        np.testing.assert_allclose(w_update, -0.05 * np.sign(np.asarray(grads["params"]["w"])),
                                   rtol=1e-3)
    assert set(optim.learning_rates(optimizer.init(params))) == {"learning_rate"}


def test_grad_clip_bounds_the_sgd_step():
    theta, w, data, particles = shallow_problem(5)
    params, grads = ml_gradients(theta, w, data, particles)
    norm = float(optax.tree.norm(grads))
    clip = 0.5 * norm
    optimizer = build_optimizer(shallow_config(name="sgd", learning_rate=1.0, grad_clip=clip))
    _, updates = apply(optimizer, params, grads)
    expected = jax.tree.map(lambda g: -g * clip / norm, grads)
    for got, want in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_bad_optimizer_configs_are_refused_by_validation():
    """The registry's names are what validation allows: one line per bad key."""
    cases = [("optim.name", dict(name="lbfgs")), ("model.regime", dict(regime="frozen")),
             ("optim.name", dict(model="mlp"))]
    for key, change in cases:
        config = shallow_config()
        config.optim.name = change.get("name", config.optim.name)
        config.model.regime = change.get("regime", config.model.regime)
        config.model.name = change.get("model", config.model.name)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(config)


def test_plain_optax_optimizer_has_no_sweepable_rates():
    params = {"a": jnp.ones(3)}
    state = optax.adam(1e-3).init(params)
    assert optim.injected_hyperparams(state) == {}
    with pytest.raises(KeyError, match="inject_hyperparams"):
        optim.set_hyperparams(state, learning_rate=0.1)


def test_nested_injected_hyperparams_are_read_and_set():
    """inject_hyperparams inside a chain: found, changed, and the change acts on the update."""
    optimizer = optax.chain(optax.clip_by_global_norm(1e9),
                            optax.inject_hyperparams(optax.sgd)(learning_rate=0.5))
    params = {"a": jnp.ones(3)}
    state = optimizer.init(params)
    assert set(optim.injected_hyperparams(state)) == {"learning_rate"}
    state = optim.set_hyperparams(state, learning_rate=jnp.float32(0.25))
    assert float(optim.learning_rates(state)["learning_rate"]) == 0.25
    updates, _ = optimizer.update({"a": jnp.full(3, 2.0)}, state, params)
    np.testing.assert_allclose(np.asarray(updates["a"]), -0.5)  # −0.25 × 2, not −0.5 × 2
