"""Parameter optimizers, all optax `GradientTransformation`s with array-valued learning rates.

`get_optimizer(config)` wraps the chosen rule in `optax.inject_hyperparams`, so
the learning rates live in `opt_state.hyperparams` as arrays: a sweep changes
them without recompiling, and a rollback can lower them in place.

Wasserstein–Fisher–Rao steps for `ShallowEnergy` (written here: optax has no
update on the sphere with multiplicative weights). For E = (1/m) Σ_i c_i w_i σ(⟨θ_i, x⟩)
and a loss L, the first variation of L with respect to the neuron measure has
θ-gradient g_θ,i = (m/w_i) ∂L/∂θ_i (it carries the sign c_i, not the weight)
and value g_w,i = m ∂L/∂w_i. One step is

    θ_i ← Π(θ_i − h_θ P⊥_{θ_i} g_θ,i)          (Π: back to the sphere; P⊥ = I − θθᵀ)
    w_i ← w_i exp(−h_w g_w,i),  then  w ← β w / mean(w)  if mean(w) > β,

the paper's update (DESIGN §4). In the `lazy` regime θ stays at its random
initialisation (random features) and only w moves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ebmdual.energies import project_to_sphere

OPTIMIZERS = ("wfr", "adam", "sgd")
REGIMES = ("active", "lazy")


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


def _freeze_theta(params):
    """Label tree for optax.multi_transform: 'frozen' for θ, 'trained' for the rest."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if getattr(path[-1], "key", None) == "theta" else "trained",
        params)


def get_optimizer(config) -> optax.GradientTransformation:
    """The optimizer named by `config.optim.name`, learning rates injected as arrays.

    'wfr' (ShallowEnergy only): hyperparams feature_learning_rate, weight_learning_rate,
    weight_cap. 'adam' / 'sgd': hyperparam learning_rate. `config.model.regime='lazy'`
    freezes θ.
    """
    cfg, regime = config.optim, config.model.get("regime", "active")
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r}: expected one of {OPTIMIZERS}")
    if regime not in REGIMES:
        raise ValueError(f"model.regime={regime!r}: expected one of {REGIMES}")
    lazy = regime == "lazy"
    if cfg.name == "wfr":
        if config.model.name != "shallow":
            raise ValueError(f"optim.name='wfr' needs model.name='shallow', got {config.model.name!r}")
        cap = cfg.weight_cap if cfg.weight_cap is not None else jnp.inf
        return optax.inject_hyperparams(wfr, static_args=("train_features",))(
            feature_learning_rate=cfg.feature_learning_rate,
            weight_learning_rate=cfg.weight_learning_rate,
            weight_cap=cap, train_features=not lazy)
    base = optax.adam if cfg.name == "adam" else optax.sgd

    def make(learning_rate):
        rule = base(learning_rate)
        if lazy:
            rule = optax.multi_transform({"trained": rule, "frozen": optax.set_to_zero()},
                                         _freeze_theta)
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), rule) if cfg.grad_clip else rule

    return optax.inject_hyperparams(make)(learning_rate=cfg.learning_rate)


def learning_rates(opt_state) -> dict:
    """The injected learning-rate arrays (keys ending in 'learning_rate')."""
    return {k: v for k, v in opt_state.hyperparams.items() if k.endswith("learning_rate")}
