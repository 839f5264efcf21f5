"""Parameter optimizers, all optax `GradientTransformation`s with array-valued learning rates.

The trainer takes any optax `GradientTransformation`. Wrapped in
`optax.inject_hyperparams`, its learning rates live in the optimizer state as
arrays: `injected_hyperparams` / `set_hyperparams` read and write them (through
`optax.tree_utils.tree_get` / `tree_set`, nested states included), so a sweep
changes them without recompiling and a rollback lowers them in place. A plain
`optax.adam(1e-3)` works too; its rate just cannot be swept.

Wasserstein–Fisher–Rao steps for `ShallowEnergy` (written here: optax has no
update on the sphere with multiplicative weights). For E = (1/m) Σ_i c_i w_i σ(⟨θ_i, x⟩)
and a loss L, the first variation of L with respect to the neuron measure has
θ-gradient g_θ,i = (m/w_i) ∂L/∂θ_i (it carries the sign c_i, not the weight)
and value g_w,i = m ∂L/∂w_i. One step is

    θ_i ← Π(θ_i − h_θ P⊥_{θ_i} g_θ,i)          (Π: back to the sphere; P⊥ = I − θθᵀ)
    w_i ← w_i exp(−h_w g_w,i),  then  w ← β w / mean(w)  if mean(w) > β,

the paper's update (docs/tasks.md, Neuron updates (WFR)). In the `lazy` regime θ stays at its random
initialisation (random features) and only w moves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ebmdual.energies import project_to_sphere

def wfr(feature_learning_rate, weight_learning_rate, weight_cap=jnp.inf,
        train_features: bool = True) -> optax.GradientTransformation:
    """Wasserstein–Fisher–Rao step for params {'params': {'theta': (m, d), 'w': (m,)}}.

    Returns updates u with params + u = the new (θ, w) above.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(grads, state, params):
        theta, w = params["params"]["theta"], params["params"]["w"]
        g_theta, g_w = grads["params"]["theta"], grads["params"]["w"]
        m = w.shape[0]
        velocity = m * g_theta / jnp.where(w > 0, w, 1.0)[:, None]
        velocity = velocity - jnp.sum(velocity * theta, -1, keepdims=True) * theta
        moved = theta - feature_learning_rate * velocity
        new_theta = project_to_sphere(moved)
        if not train_features:
            new_theta = theta
        new_w = w * jnp.exp(-weight_learning_rate * m * g_w)
        mean_w = jnp.mean(new_w)
        new_w = jnp.where(mean_w > weight_cap, new_w * weight_cap / mean_w, new_w)
        updates = {"params": {"theta": new_theta - theta, "w": new_w - w}}
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def restart_period_scaling(c: float, num_steps: int):
    """The authors' learning-rate factor as a `gradient_scale` for `make_train_step`:

        a = 1 + c / (N_R h_x),    N_R = min(1/p, num_steps),

    with p the restart probability of the step (N_R the restart period; without restarts
    the run's length) and h_x the particle step (docs/tasks.md, Learning-rate scaling;
    the authors use c = 0.1). Multiplying the gradient by a multiplies the WFR steps h_θ,
    h_w (and an SGD step) by a; Adam is invariant to it. Returns fn(p, h_x) -> a.
    """
    if c < 0 or num_steps < 1:
        raise ValueError(f"restart_period_scaling: c={c} must be >= 0 and num_steps={num_steps} >= 1")

    def scale(restart_prob, particle_step_size):
        inverse_period = jnp.maximum(jnp.asarray(restart_prob, jnp.float32), 1.0 / num_steps)
        return 1.0 + c * inverse_period / particle_step_size

    return scale


def _feature_labels(params):
    """Label tree for optax.multi_transform: 'frozen' for θ, 'trained' for the rest."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if getattr(path[-1], "key", None) == "theta" else "trained",
        params)


def freeze_features(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """The lazy (random-features) regime for a generic optimizer: leaves named 'theta' get
    zero updates, every other leaf follows `optimizer`. (For `wfr`, pass train_features=False.)"""
    return optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()},
                                 _feature_labels)


# ----------------------------------------------------------------------------- hyperparameters

def _is_injected(node) -> bool:
    return isinstance(node, optax.InjectStatefulHyperparamsState)


def injected_hyperparams(opt_state) -> dict:
    """{name: array} of every `optax.inject_hyperparams` value in `opt_state` (nested states
    included); {} for an optimizer that was not wrapped (its rates are constants)."""
    values = {}
    for node in jax.tree.leaves(opt_state, is_leaf=_is_injected):
        if _is_injected(node):
            values.update({k: v for k, v in node.hyperparams.items() if k not in values})
    return values


def learning_rates(opt_state) -> dict:
    """The injected learning-rate arrays (names ending in 'learning_rate')."""
    return {k: v for k, v in injected_hyperparams(opt_state).items() if k.endswith("learning_rate")}


LEARNING_RATE_DECAY = "learning_rate_decay"


def geometric_decay(final_fraction: float, num_steps: int) -> optax.Schedule:
    """f(t) = final_fraction^(min(t, T)/T), T = num_steps: 1 at the start, final_fraction from
    step T on. Injected as the hyperparameter `LEARNING_RATE_DECAY` beside a learning rate
    (an optimizer built as rule(learning_rate · learning_rate_decay)), it decays the rate
    while the injected base rate stays the one that sweeps and rollbacks set."""
    if not 0.0 < final_fraction <= 1.0 or num_steps < 1:
        raise ValueError(f"geometric_decay: final_fraction={final_fraction} must be in (0, 1] "
                         f"and num_steps={num_steps} >= 1")
    return optax.exponential_decay(1.0, num_steps, final_fraction, end_value=final_fraction)


def effective_learning_rates(opt_state) -> dict:
    """`learning_rates` times the injected `LEARNING_RATE_DECAY` factor where there is one:
    the rates the last update used."""
    factor = injected_hyperparams(opt_state).get(LEARNING_RATE_DECAY, 1.0)
    return {k: v * factor for k, v in learning_rates(opt_state).items()}


def set_hyperparams(opt_state, **values):
    """`opt_state` with injected hyperparameters replaced (optax.tree_utils.tree_set).

    Raises KeyError naming the known ones when a name is not injected."""
    known = injected_hyperparams(opt_state)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise KeyError(f"{unknown} not among the optimizer's injected hyperparameters "
                       f"{sorted(known)} (wrap it in optax.inject_hyperparams to sweep them)")
    return optax.tree_utils.tree_set(opt_state, **values) if values else opt_state
