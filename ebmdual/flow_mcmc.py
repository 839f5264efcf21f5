"""Flow-MCMC with an adaptive normalizing flow (Gabrié, Rotskoff, Vanden-Eijnden, PNAS 2022;
for EBM training: Grenioux, Moulines, Gabrié, arXiv 2306.00684).

    flow = ebmdual.flows.coupling_flow(dim=2, kind="spline")
    sampler = flow_mcmc(energy_fn, flow, optax.adam(1e-3), num_cycles=1, local_steps=1,
                        target_acceptance=0.6)

Each train step runs `num_cycles` cycles of
1. a global move with the flow q_φ as an independent proposal, either
   * 'imh', independent Metropolis–Hastings: propose Y ~ q_φ, accept with
     probability min(1, π(Y) q_φ(X) / (π(X) q_φ(Y))), π = exp(−E_θ/T); or
   * 'isir', iterated sampling–importance resampling with M candidates: the
     current state and M − 1 fresh draws of q_φ, one chosen with probability
     ∝ π/q_φ (M = 1 never moves; M = 2 is IMH with Barker's acceptance);
   and then
2. `local_steps` MALA transitions (BlackJAX, through `ebmdual.samplers.mala`),
   whose step size adapts toward `target_acceptance` (None: fixed h).
After the cycles the flow takes `flow_steps` optax steps on
    L(φ) = −mean_i log q_φ(X_i) + λ · mean_j [log q_φ(Y_j) + E_θ(Y_j)/T],  Y_j ~ q_φ,
the forward KL to the chains (maximum likelihood on their current states) plus
λ = `reverse_kl_weight` times the reverse KL to π (reparametrised, up to log Z).
The flow follows p_θ as θ changes, so the global moves keep carrying walkers across
energy barriers that local moves never cross.

Tilted variant (`model_flow`): the model itself is p_{θ,φ} ∝ q_φ · exp(−E_θ), an
energy E = E_θ − log q_φ whose parameters hold φ (`ebmdual.energies.tilted`; Grenioux
et al. tilt the EBM by its companion flow). `model_flow(params)` returns φ; the global
proposal is then the model's own base, so the IMH ratio reduces to
exp(−(E_θ(Y) − E_θ(X))) at T = 1, and the sampler trains no flow of its own: the
maximum-likelihood step of the train state moves θ and φ together,
∇_φ = E_data[∇_φ log q_φ] − E_chains[∇_φ log q_φ]. flow_loss is still logged
(−mean log q_φ of the chains).

State (replicated; no leaf has a particle axis): {'flow': φ, 'flow_opt': optax
state, 'local': MALA state (the adapted log step scale, or ())}. It is a field of
the train state, so the flow is checkpointed and sharded with the run. Tilted, the
state is {'local': ...} only: φ is a part of the model's parameters.
Metrics (`SamplerInfo.extra`): global_acceptance (fraction of chains that moved in
the global step), local_acceptance (MALA), flow_loss (forward-KL part, nats), and
adapted_step_size when adapting. `acceptance_rate` is the global one.

Particles: one array (N, *shape) with prod(shape) = flow.dim (images are flattened for
the flow, moved in their own shape). `support=(low, high)`: the target is exp(−E/T)
restricted to the box [low, high]^D (images on their data range): proposals outside it,
global or local, are refused. The global moves are written here,
vectorised over chains (one batched flow call per cycle): BlackJAX's `irmh` works
one chain at a time and has no i-SIR; the local moves are BlackJAX's MALA.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from ebmdual.flows import Flow
from ebmdual.losses import batched_energies
from ebmdual.samplers import Sampler, SamplerInfo, box_restricted, mala, select_particles

__all__ = ["flow_mcmc", "independent_mh", "iterated_sir", "GLOBAL_MOVES"]

GLOBAL_MOVES = ("imh", "isir")


def flat(x: jax.Array) -> jax.Array:
    """(N, *shape) -> (N, prod(shape)): particles as the flow's vectors."""
    return x.reshape(x.shape[0], -1)


def independent_mh(key, x, log_target_x, log_q_x, proposal, log_target_y, log_q_y):
    """One independent Metropolis–Hastings step per chain, vectorised.

    x, proposal: (N, d); the log-densities are (N,). Accept Y with probability
    min(1, exp(log π(Y) − log π(X) + log q(X) − log q(Y))).
    Returns (x, log π(x), log q(x), accepted (N,) bool).
    """
    log_ratio = log_target_y - log_target_x + log_q_x - log_q_y
    accept = jnp.log(jax.random.uniform(key, log_ratio.shape)) < log_ratio
    x, log_target_x, log_q_x = select_particles(accept, (proposal, log_target_y, log_q_y),
                                                (x, log_target_x, log_q_x))
    return x, log_target_x, log_q_x, accept


def iterated_sir(key, x, log_target_x, log_q_x, proposals, log_target_y, log_q_y):
    """One i-SIR step per chain with M candidates: the current state and M − 1 proposals.

    proposals: (N, M − 1, d) with log-densities (N, M − 1). Candidate j is chosen with
    probability ∝ π(y_j)/q(y_j). Returns (x, log π(x), log q(x), moved (N,) bool).
    """
    candidates = jnp.concatenate([x[:, None], proposals], axis=1)
    log_target = jnp.concatenate([log_target_x[:, None], log_target_y], axis=1)
    log_q = jnp.concatenate([log_q_x[:, None], log_q_y], axis=1)
    choice = jax.random.categorical(key, log_target - log_q, axis=1)
    take = lambda a: jnp.take_along_axis(a, choice.reshape((-1,) + (1,) * (a.ndim - 1)),
                                         axis=1)[:, 0]
    return take(candidates), take(log_target), take(log_q), choice > 0


def flow_mcmc(energy_fn, flow: Flow, flow_optimizer: optax.GradientTransformation | None, *,
              num_cycles: int = 1, global_move: str = "imh", num_proposals: int = 2,
              local_steps: int = 1, target_acceptance: float | None = 0.6,
              adaptation_rate: float = 0.05, flow_steps: int = 1,
              reverse_kl_weight: float = 0.0, reverse_kl_samples: int = 256,
              model_flow: Callable | None = None,
              support: tuple[float, float] | None = None) -> Sampler:
    """The flow-MCMC sampler: global flow moves interleaved with local MALA, flow trained
    on the chains after every train step. See the module docstring.

    model_flow: None, or (params -> φ) for the tilted variant, where the flow is the base
    of the model (`ebmdual.energies.tilted`) and is trained with it, not here
    (`flow_optimizer`, `flow_steps` and `reverse_kl_weight` are then unused).
    support: None (R^D), or (low, high): the target lives on [low, high]^D.
    """
    if support is not None:
        energy_fn = box_restricted(energy_fn, *support)
    if global_move not in GLOBAL_MOVES:
        raise ValueError(f"global_move={global_move!r}: expected one of {GLOBAL_MOVES}")
    if global_move == "isir" and num_proposals < 1:
        raise ValueError(f"num_proposals={num_proposals}: i-SIR needs M >= 1 candidates")
    if num_cycles < 1 or local_steps < 0 or flow_steps < 0:
        raise ValueError(f"num_cycles={num_cycles}, local_steps={local_steps}, "
                         f"flow_steps={flow_steps}: expected >= 1, >= 0, >= 0")
    local = mala(energy_fn, max(local_steps, 1), target_acceptance, adaptation_rate)
    draws = 1 if global_move == "imh" else num_proposals - 1

    def log_target(params, x, temperature):
        return -batched_energies(energy_fn, params, x) / temperature

    def init(key, params, particles):
        del params
        if not isinstance(particles, jax.Array) or math.prod(particles.shape[1:]) != flow.dim:
            raise ValueError(f"flow_mcmc moves one array of particles (N, ...) with "
                             f"{flow.dim} numbers each, got "
                             f"{jax.tree.map(jnp.shape, particles)}")
        local_state = local.init(key, None, particles)
        if model_flow is not None:
            return {"local": local_state}
        flow_params = flow.init(key)
        return {"flow": flow_params, "flow_opt": flow_optimizer.init(flow_params),
                "local": local_state}

    def global_step(key, params, flow_params, x, temperature):
        n = x.shape[0]
        log_target_x = log_target(params, x, temperature)
        log_q_x = flow.log_prob(flow_params, flat(x))
        if draws == 0:  # i-SIR with M = 1: the only candidate is the current state
            return x, jnp.zeros((n,), bool)
        draw_key, choose_key = jax.random.split(key)
        y, log_q_y = flow.sample_and_log_prob(flow_params, draw_key, n * draws)
        y = y.reshape((n * draws,) + x.shape[1:])
        log_target_y = log_target(params, y, temperature)
        if global_move == "imh":
            x, _, _, moved = independent_mh(choose_key, x, log_target_x, log_q_x, y,
                                            log_target_y, log_q_y)
        else:
            x, _, _, moved = iterated_sir(
                choose_key, x, log_target_x, log_q_x, y.reshape((n, draws) + x.shape[1:]),
                log_target_y.reshape(n, draws), log_q_y.reshape(n, draws))
        return x, moved

    def flow_loss(flow_params, params, x, key, temperature):
        forward = -jnp.mean(flow.log_prob(flow_params, flat(jax.lax.stop_gradient(x))))
        if reverse_kl_weight == 0.0:
            return forward, forward
        y, log_q_y = flow.sample_and_log_prob(flow_params, key, reverse_kl_samples)
        y = y.reshape((reverse_kl_samples,) + x.shape[1:])
        reverse = jnp.mean(log_q_y - log_target(jax.lax.stop_gradient(params), y, temperature))
        return forward + reverse_kl_weight * reverse, forward

    def step(key, params, particles, state, hparams):
        temperature = hparams["temperature"]
        cycle_keys = jax.random.split(key, num_cycles + 1)
        proposal = model_flow(params) if model_flow is not None else state["flow"]

        def cycle(carry, cycle_key):
            x, local_state = carry
            global_key, local_key = jax.random.split(cycle_key)
            x, moved = global_step(global_key, params, proposal, x, temperature)
            local_acceptance, local_extra = jnp.ones((), jnp.float32), {}
            if local_steps:
                x, local_state, info = local.step(local_key, params, x, local_state, hparams)
                local_acceptance, local_extra = info.acceptance_rate, info.extra or {}
            return (x, local_state), (jnp.mean(moved.astype(jnp.float32)), local_acceptance,
                                      local_extra)

        (particles, local_state), (moved, local_acceptance, local_extra) = jax.lax.scan(
            cycle, (particles, state["local"]), cycle_keys[:-1])

        def flow_update(carry, update_key):
            flow_params, opt_state = carry
            (_, forward), grads = jax.value_and_grad(flow_loss, has_aux=True)(
                flow_params, params, particles, update_key, temperature)
            updates, opt_state = flow_optimizer.update(grads, opt_state, flow_params)
            return (optax.apply_updates(flow_params, updates), opt_state), forward

        if model_flow is None:
            (flow_params, flow_opt), losses = jax.lax.scan(
                flow_update, (state["flow"], state["flow_opt"]),
                jax.random.split(cycle_keys[-1], flow_steps))
            new_state = {"flow": flow_params, "flow_opt": flow_opt, "local": local_state}
            logged_loss = losses[-1] if flow_steps else jnp.float32(jnp.nan)
        else:
            new_state = {"local": local_state}
            logged_loss = -jnp.mean(flow.log_prob(proposal, flat(particles)))
        global_acceptance = jnp.mean(moved)
        extra = {"global_acceptance": global_acceptance,
                 "local_acceptance": jnp.mean(local_acceptance),
                 "flow_loss": logged_loss,
                 **{k: v[-1] for k, v in local_extra.items()}}  # MALA's, after the last cycle
        return particles, new_state, SamplerInfo(acceptance_rate=global_acceptance, extra=extra)

    return Sampler(init=init, step=step)
