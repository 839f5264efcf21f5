"""Jarzynski-weighted persistent walkers (Carbone, Hua, Coste, Vanden-Eijnden, NeurIPS 2023,
arXiv 2305.19414).

    sampler = jarzynski(energy_fn, num_steps=1, ess_threshold=0.5)

Persistent ULA walkers X^i carry log-weights A^i such that Σ_i w^i f(X^i), with
w = softmax(A), estimates E_{ρ_θ}[f] for the *current* θ however slowly the
walkers mix: the weights account for the work done on each walker as θ changes.
The maximum-likelihood objective receives w and uses Σ_i w^i E_θ(X^i), so its
gradient is the log-likelihood gradient, unbiased up to the importance-sampling
error, without waiting for the chains to equilibrate (mode weights included).

The paper's discrete rule, with U_k = E_{θ_k}/T, the ULA step
X_{k+1} = X_k − h∇E_{θ_k}(X_k) + √(2hT) ξ and
α_k(x, y) = U_k(x) + ‖y − x + h∇E_{θ_k}(x)‖²/(4hT) (minus the log of the ULA
transition density from x to y), is
    A_{k+1} = A_k + α_k(X_k, X_{k+1}) − α_{k+1}(X_{k+1}, X_k).
Here it is applied in two exact halves, which lets the objective at step k use
walkers weighted for exactly ρ_{θ_k} (the train step moves the particles before θ
changes):
1. switch θ_{k−1} → θ_k at fixed positions: A += U_{k−1}(X) − U_k(X);
2. each of the K ULA moves under θ_k: A += α_k(X, Y) − α_k(Y, X), the backward
   kernel being ULA under the same θ_k (this increment is the log Metropolis ratio
   MALA would use; here nothing is rejected, the walker keeps the log-ratio as weight).
Both are importance-sampling identities on the path space; in continuous time
they give dA = −∂_t U_{θ(t)}(X_t) dt, the Jarzynski equality. Each move costs one
energy gradient (at the new point, reused by the next move), plus one energy value
per step for the switch.

MALA kernel (`kernel='mala'`): the same proposal, accepted with probability
min(1, exp(α_k(X, Y) − α_k(Y, X))) instead of carrying that ratio as weight. The move
then leaves ρ_{θ_k} invariant, so only the switch half changes A (the annealed
importance sampling form of the equality). Needed where ULA cannot go: a target on a
box (`support=(low, high)`, images on their data range), where a proposal out of the
box is refused.

Start: `start='model'` (default): the walkers start as exact samples of ρ_{θ_0} (below).
`start='flat'`: they start as samples of the flat density on the support (uniform on
the box), and the first switch weights them by exp(−U_0): exact too, for any θ_0 —
e.g. an image energy at initialisation, whose density is no closed form.

Resampling: when ESS/N = 1/(N Σ w²) falls below `ess_threshold`, walkers are
resampled systematically (before the moves, so that children separate) and
A is reset to 0.

The walkers must start as exact samples of ρ_{θ_0}: for example an energy with a
Gaussian base (`ebmdual.energies.MLPEnergy(base_std=s)`, exactly N(0, s²I) at
init) and particles restarted at N(0, s²I) noise. Started at data, the weights would
correct toward ρ_θ/ρ_{θ_0} · p_data rather than ρ_θ.

Restarts (`Sampler.restart`): a walker the train step resets (restart_prob > 0)
gets the mean weight of the population, exp(logmeanexp A), and no switch term at
its next step. This is a heuristic: a restarted walker is a sample of the data,
not of ρ_θ, and its weight is unknown; at restart_prob = 0 the sampler is exact.

State (every leaf has the particle axis, sharded with the particles):
    {'log_weight': (N,) A, 'energy': (N,) U of the last θ at the current positions,
     'fresh': (N,) bool, restarted since the last step}.
Metrics (`SamplerInfo.extra`): ess_fraction (ESS/N before resampling), resampled
(1 when resampled this step), log_weight_std (spread of A after the moves).

Written here: BlackJAX has SMC with resampling, but its SMC moves a population
between *fixed* tempered targets; the walkers here are weighted across the
changing targets of training, one train step at a time, with the weights handed
to the objective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ebmdual.samplers import (Sampler, SamplerInfo, box_restricted, energies_and_gradients,
                              floating_part, gaussian_noise, leading_size, merge_floating,
                              select_particles)

__all__ = ["jarzynski", "systematic_resampling", "effective_sample_size", "KERNELS", "STARTS"]


def effective_sample_size(log_weight: jax.Array) -> jax.Array:
    """ESS = 1 / Σ w_i², w = softmax(A): a scalar in [1, N]."""
    w = jax.nn.softmax(log_weight)
    return 1.0 / jnp.sum(w * w)


def systematic_resampling(key, log_weight: jax.Array) -> jax.Array:
    """Indices (N,) of systematic resampling: ancestor of child i is the first j with
    Σ_{l ≤ j} w_l > (u + i)/N, u ~ U[0, 1): each walker gets ⌊N w_j⌋ or ⌈N w_j⌉ children."""
    n = log_weight.shape[0]
    cumulative = jnp.cumsum(jax.nn.softmax(log_weight))
    points = (jax.random.uniform(key, ()) + jnp.arange(n)) / n
    return jnp.minimum(jnp.searchsorted(cumulative, points, side="right"), n - 1)


def _squared_norms(tree) -> jax.Array:
    """Σ over the non-particle axes and leaves of x²: (N,)."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if leaf is not None]
    return sum(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1) for leaf in leaves)


KERNELS = ("ula", "mala")
STARTS = ("model", "flat")


def jarzynski(energy_fn, num_steps: int = 1, ess_threshold: float = 0.5, *,
              kernel: str = "ula", support: tuple[float, float] | None = None,
              start: str = "model") -> Sampler:
    """K = `num_steps` weighted ULA (or MALA) moves per train step, resampling below
    `ess_threshold`. See the module docstring for `kernel`, `support` and `start`.

    Hands the normalised weights softmax(A) (N,) to the objective (SamplerInfo.weights).
    """
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"ess_threshold={ess_threshold}: expected a fraction in [0, 1]")
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}: expected >= 1")
    if kernel not in KERNELS or start not in STARTS:
        raise ValueError(f"kernel={kernel!r}, start={start!r}: expected one of {KERNELS}, "
                         f"one of {STARTS}")
    if support is not None:
        if kernel != "mala":
            raise ValueError("a support needs kernel='mala' (ULA moves cannot stay in a box "
                             "with a known transition density)")
        energy_fn = box_restricted(energy_fn, *support)

    def init(key, params, particles):
        del key, params
        n = leading_size(particles)
        # 'model': every walker is fresh, the first step has no switch term; 'flat': the
        # walkers' previous target is U = 0, so the first switch weights them by exp(−U_0)
        return {"log_weight": jnp.zeros((n,), jnp.float32), "energy": jnp.zeros((n,), jnp.float32),
                "fresh": jnp.full((n,), start == "model")}

    def restart(state, mask):
        mean_weight = logsumexp(state["log_weight"]) - jnp.log(state["log_weight"].shape[0])
        return {"log_weight": jnp.where(mask, mean_weight, state["log_weight"]),
                "energy": state["energy"], "fresh": state["fresh"] | mask}

    def weights(state):
        return jax.nn.softmax(state["log_weight"])

    def step(key, params, particles, state, hparams):
        h, temperature = hparams["particle_step_size"], hparams["temperature"]
        resample_key, move_key = jax.random.split(key)
        n = leading_size(particles)
        energies, gradients = energies_and_gradients(energy_fn, params, particles)
        u = energies / temperature
        log_weight = state["log_weight"] + jnp.where(state["fresh"], 0.0, state["energy"] - u)

        ess_fraction = effective_sample_size(log_weight) / n
        resampled = ess_fraction < ess_threshold
        index = jnp.where(resampled, systematic_resampling(resample_key, log_weight),
                          jnp.arange(n))
        particles, energies, gradients = jax.tree.map(lambda leaf: leaf[index],
                                                      (particles, energies, gradients))
        log_weight = jnp.where(resampled, 0.0, log_weight)

        def move(carry, step_key):
            x, energy_x, grad_x, log_weight = carry
            noise = gaussian_noise(step_key, x, antithetic=False)
            scale = jnp.sqrt(2.0 * h * temperature)
            y_moving = jax.tree.map(lambda a, g, xi: a - h * g + scale * xi,
                                    floating_part(x), grad_x, noise)
            y = merge_floating(y_moving, x)
            energy_y, grad_y = energies_and_gradients(energy_fn, params, y)
            # α(x, y) = U(x) + ‖y − x + h∇E(x)‖²/(4hT) = U(x) + ‖ξ‖²/2
            forward = energy_x / temperature + 0.5 * _squared_norms(noise)
            backward = energy_y / temperature + _squared_norms(jax.tree.map(
                lambda a, b, g: a - b + h * g, floating_part(x), y_moving, grad_y)) / (
                    4.0 * h * temperature)
            log_ratio = forward - backward
            if kernel == "ula":
                return (y, energy_y, grad_y, log_weight + log_ratio), jnp.ones(())
            accept = jnp.log(jax.random.uniform(jax.random.fold_in(step_key, 1),
                                                log_ratio.shape)) < log_ratio
            moved = select_particles(accept, (y, energy_y, grad_y), (x, energy_x, grad_x))
            return (*moved, log_weight), jnp.mean(accept.astype(jnp.float32))

        (particles, energies, _, log_weight), acceptance = jax.lax.scan(
            move, (particles, energies, gradients, log_weight),
            jax.random.split(move_key, num_steps))
        new_state = {"log_weight": log_weight, "energy": energies / temperature,
                     "fresh": jnp.zeros((n,), bool)}
        extra = {"ess_fraction": ess_fraction, "resampled": resampled.astype(jnp.float32),
                 "log_weight_std": jnp.std(log_weight)}
        return particles, new_state, SamplerInfo(acceptance_rate=jnp.mean(acceptance),
                                                 weights=weights(new_state), extra=extra)

    def particle_axes(state):
        return jax.tree.map(lambda _: True, state)

    return Sampler(init=init, step=step, particle_axes=particle_axes, restart=restart,
                   weights=weights)
