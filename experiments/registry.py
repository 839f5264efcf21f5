"""The one place where config names become ebmdual objects.

`build_trainer(config, dataset)` reads the config and composes the library's
objects: an energy (flax module), a sampler (`ebmdual.samplers`), an objective
(`ebmdual.objectives`), an optax optimizer and a `RestartPolicy`, then calls
`ebmdual.train.make_trainer`. Adding an energy, a sampler, an optimizer or an
objective means adding one entry to a table below; `experiments.validation`
reads the allowed names from these same tables.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ebmdual import objectives, samplers
from ebmdual.data.images import DATASET_NAMES as IMAGE_DATASETS, make_image_preprocess
from ebmdual.energies import ConvEnergy, MLPEnergy, ShallowEnergy, as_energy, tilted
from ebmdual.flow_mcmc import flow_mcmc
from ebmdual.flows import coupling_flow
from ebmdual.jarzynski import jarzynski
from ebmdual.optim import (LEARNING_RATE_DECAY, freeze_features, geometric_decay,
                           restart_period_scaling, wfr)
from ebmdual.train import (RestartPolicy, Trainer, make_mesh, make_trainer, scaled_normal_noise,
                           sphere_noise)

# ----------------------------------------------------------------------------- energies
# name -> (config) -> flax module


def _shallow(config):
    m = config.model
    return ShallowEnergy(num_neurons=m.num_neurons, num_positive=m.num_positive, alpha=m.alpha,
                         init_weight=m.init_weight)


def _mlp(config):
    return MLPEnergy(hidden_sizes=tuple(config.model.hidden_sizes),
                     base_std=config.model.base_std)


def _conv(config):
    m = config.model
    return ConvEnergy(features=tuple(m.conv_features), spectral_norm=m.spectral_norm,
                      power_iterations=m.power_iterations)


ENERGIES: dict[str, Callable] = {"shallow": _shallow, "mlp": _mlp, "conv": _conv}
SPHERE_ENERGIES = ("shallow",)  # energies built for data on S^{d−1} only
IMAGE_ENERGIES = ("conv",)      # energies of (H, W, C) images only

# ----------------------------------------------------------------------------- samplers
# name -> (config, energy_fn, manifold, particle_shape) -> Sampler
# (particle_shape: one particle's shape, (d,) or (H, W, C))


def _ula(config, energy_fn, manifold, particle_shape):
    del particle_shape
    s = config.sampler
    if manifold == "sphere":
        return samplers.projected_langevin(energy_fn, s.num_steps, s.antithetic)
    clip = tuple(config.data.data_range) if s.clip else None
    return samplers.ula(energy_fn, s.num_steps, s.antithetic, grad_clamp=s.grad_clamp, clip=clip,
                        noise_ahead=s.noise_ahead)


def _mala(config, energy_fn, manifold, particle_shape):
    del manifold, particle_shape
    s = config.sampler
    return samplers.mala(energy_fn, s.num_steps, target_acceptance=s.target_acceptance,
                         adaptation_rate=s.adaptation_rate)


def _hmc(config, energy_fn, manifold, particle_shape):
    del manifold, particle_shape
    return samplers.hmc(energy_fn, config.sampler.num_steps, config.sampler.num_integration_steps)


def _jarzynski(config, energy_fn, manifold, particle_shape):
    del manifold, particle_shape
    s = config.sampler
    return jarzynski(energy_fn, s.num_steps, ess_threshold=s.ess_threshold,
                     kernel=s.jarzynski_kernel, support=image_support(config),
                     start=s.jarzynski_start)


def image_support(config):
    """The box data_range of an image data set (its model is a density on that box),
    None for vector data: the support of the samplers that refuse moves out of it."""
    return tuple(config.data.data_range) if config.data.name in IMAGE_DATASETS else None


def sampler_flow(config, particle_shape):
    """The coupling flow of `config.sampler` (flow_kind, flow_layers, ...) on R^D, D the
    number of values of one particle (images flattened)."""
    s = config.sampler
    return coupling_flow(math.prod(particle_shape), s.flow_kind, num_layers=s.flow_layers,
                         hidden_size=s.flow_hidden, num_bins=s.flow_bins, bound=s.flow_bound)


def tilted_by_flow(config) -> bool:
    """Whether the model is p ∝ q_φ · exp(−E_θ) (flow-MCMC's tilted variant)."""
    return config.sampler.name == "flow_mcmc" and bool(config.sampler.flow_tilted)


def _flow_mcmc(config, energy_fn, manifold, particle_shape):
    del manifold
    s = config.sampler
    model_flow = (lambda params: params["flow"]) if tilted_by_flow(config) else None
    return flow_mcmc(energy_fn, sampler_flow(config, particle_shape),
                     optax.adam(s.flow_learning_rate),
                     num_cycles=s.num_steps, global_move=s.global_move,
                     num_proposals=s.num_proposals, local_steps=s.local_steps,
                     target_acceptance=s.target_acceptance, adaptation_rate=s.adaptation_rate,
                     flow_steps=s.flow_steps, reverse_kl_weight=s.flow_reverse_kl,
                     model_flow=model_flow, support=image_support(config))


SAMPLERS: dict[str, Callable] = {"ula": _ula, "mala": _mala, "hmc": _hmc,
                                 "jarzynski": _jarzynski, "flow_mcmc": _flow_mcmc}
SPHERE_SAMPLERS = ("ula",)       # samplers that keep particles on the sphere
ANTITHETIC_SAMPLERS = ("ula",)   # samplers that can draw antithetic noise
CLIPPING_SAMPLERS = ("ula",)     # samplers with sampler.clip and sampler.grad_clamp
HOST_LOOP_SAMPLERS = ("ula", "mala", "hmc")  # samplers with a one-transition form
SAMPLER_LOOPS = ("auto", "scan", "host")
ADAPTIVE_SAMPLERS = ("mala", "flow_mcmc")  # samplers whose MALA step adapts (target_acceptance)

# ----------------------------------------------------------------------------- optimizers
# name -> (config) -> optax GradientTransformation with injected learning rates


def _wfr(config):
    o = config.optim
    cap = o.weight_cap if o.weight_cap is not None else jnp.inf
    return optax.inject_hyperparams(wfr, static_args=("train_features",))(
        feature_learning_rate=o.feature_learning_rate, weight_learning_rate=o.weight_learning_rate,
        weight_cap=cap, train_features=config.model.regime != "lazy")


def _optax_rule(rule):
    def build(config):
        o, lazy = config.optim, config.model.regime == "lazy"

        def make(learning_rate, learning_rate_decay=1.0):
            step = rule(learning_rate * learning_rate_decay)
            step = freeze_features(step) if lazy else step
            return optax.chain(optax.clip_by_global_norm(o.grad_clip), step) if o.grad_clip else step

        decay = ({LEARNING_RATE_DECAY: geometric_decay(o.lr_decay, config.train.num_steps)}
                 if o.lr_decay != 1 else {})  # lr_t = lr · decay^(min(t, T)/T)
        return optax.inject_hyperparams(make)(learning_rate=o.learning_rate, **decay)

    return build


OPTIMIZERS: dict[str, Callable] = {"wfr": _wfr, "adam": _optax_rule(optax.adam),
                                   "sgd": _optax_rule(optax.sgd)}
SHALLOW_OPTIMIZERS = ("wfr",)    # optimizers defined for ShallowEnergy parameters only
REGIMES = ("active", "lazy")

# ----------------------------------------------------------------------------- objectives
# name -> (config, energy_fn, manifold) -> objective(params, batch, particles, key)

OBJECTIVES: dict[str, Callable] = {
    "ml": lambda config, energy_fn, manifold: objectives.maximum_likelihood(energy_fn),
    "sm": lambda config, energy_fn, manifold: objectives.score_matching(energy_fn, manifold),
    "ssm": lambda config, energy_fn, manifold: objectives.sliced_score_matching(
        energy_fn, config.train.ssm_num_projections),
    "dsm": lambda config, energy_fn, manifold: objectives.denoising_score_matching(
        energy_fn, config.train.dsm_sigma),
    "ksd": lambda config, energy_fn, manifold: objectives.kernel_stein_discrepancy(
        energy_fn, config.train.ksd_kernel, config.train.ksd_bandwidth),
}
PARTICLE_OBJECTIVES = ("ml",)       # the others skip the restart and the sampler
SPHERE_OBJECTIVES = ("ml", "sm")    # defined on S^{d−1}

# ----------------------------------------------------------------------------- data

def preprocessing(config):
    """The device-side preprocessing of `config.data`: for images, uint8 pixels
    dequantised (data.dequantize) and scaled to data.data_range; None for the rest."""
    if config.data.name not in IMAGE_DATASETS:
        return None
    return make_image_preprocess(tuple(config.data.data_range), config.data.dequantize)


def sampler_loop(config) -> str:
    """'scan' or 'host' for `config.sampler.loop`; 'auto' is 'scan' on every backend: with
    `energies.valid_conv` the scanned train step of a conv energy is as fast as the host
    loop on CPU, or faster (docs/performance.md). 'host' stays for comparison."""
    return "scan" if config.sampler.loop == "auto" else config.sampler.loop


def members_share_program(config) -> bool:
    """Whether `experiments.sweep` runs a grid's members as one vmapped program (True) or
    as one program per member, one after another (False: convolutional energies on the
    CPU backend, where vmapping over members turns each convolution into a grouped one
    with per-member kernels, 2.3× slower than the members one by one; docs/performance.md)."""
    conv_on_cpu = config.model.name in IMAGE_ENERGIES and jax.default_backend() == "cpu"
    return not conv_on_cpu


def uniform_noise(low: float, high: float) -> Callable:
    """noise(key, particles): Uniform[low, high] in every floating leaf (restarts of images
    at noise)."""

    def noise(key, particles):
        moving = samplers.floating_part(particles)
        keys = samplers.leaf_keys(key, moving)
        drawn = jax.tree.map(lambda k, leaf: jax.random.uniform(k, leaf.shape, leaf.dtype,
                                                                low, high), keys, moving)
        return samplers.merge_floating(drawn, particles)

    return noise


def restart_noise(config, manifold: str) -> Callable:
    """Where particles restart with train.restart_to='noise': uniform on the sphere, uniform
    on the data range for images, N(0, restart_noise_std² I) in R^d."""
    if manifold == "sphere":
        return sphere_noise
    if config.data.name in IMAGE_DATASETS:
        return uniform_noise(*config.data.data_range)
    return scaled_normal_noise(config.train.restart_noise_std)


# Config keys whose values are arrays of the compiled step (-> the name `with_hyperparams`
# takes), so a grid over them is one vmapped program; "seed" is the other such key.
SWEPT_STATE_VALUES = {
    "train.restart_prob": "restart_prob",
    "train.restart_decay": "restart_decay",
    "sampler.step_size": "particle_step_size",
    "sampler.temperature": "temperature",
    "optim.learning_rate": "learning_rate",
    "optim.feature_learning_rate": "feature_learning_rate",
    "optim.weight_learning_rate": "weight_learning_rate",
    "optim.weight_cap": "weight_cap",
}


LR_SCALINGS = ("off", "authors")
LR_SCALED_OPTIMIZERS = ("wfr", "sgd")  # a gradient factor is a learning-rate factor for these


def gradient_scale(config):
    """The `gradient_scale` of `config.optim.lr_scaling`: None ('off'), or the authors'
    a = 1 + c/(N_R h_x) ('authors', c = optim.lr_scaling_c; `optim.restart_period_scaling`)."""
    if config.optim.lr_scaling == "off":
        return None
    return restart_period_scaling(config.optim.lr_scaling_c, config.train.num_steps)


def state_values(config, names) -> dict:
    """{with_hyperparams name: float} read from `config` for the given state names."""
    by_name = {name: key for key, name in SWEPT_STATE_VALUES.items()}
    values = {}
    for name in names:
        section, field = by_name[name].split(".")
        value = config[section][field]
        values[name] = float("inf") if value is None else float(value)  # weight_cap None
    return values


class Components(NamedTuple):
    """What `build_trainer` composed, for callers that want the pieces."""

    trainer: Trainer
    streamed: bool
    batch_size: int


def build_trainer(config, dataset, num_devices: int | None = None,
                  steps_per_call: int | None = None, members: int | None = None) -> Components:
    """The trainer of `config` for `dataset` (an `ebmdual.data.Dataset`); with `members`,
    the trainer of a grid of that many runs stacked on a leading axis."""
    manifold = dataset.manifold
    energy = as_energy(ENERGIES[config.model.name](config))
    particle_shape = tuple(dataset.train.shape[1:])
    if tilted_by_flow(config):
        energy = tilted(energy, sampler_flow(config, particle_shape))
    energy_fn = energy.energy_fn
    uses_particles = config.train.loss in PARTICLE_OBJECTIVES
    sampler = (SAMPLERS[config.sampler.name](config, energy_fn, manifold, particle_shape)
               if uses_particles else None)
    restart = RestartPolicy(prob=config.train.restart_prob,
                            schedule=config.train.restart_schedule,
                            target=config.train.restart_to,
                            antithetic=config.sampler.antithetic,
                            noise=restart_noise(config, manifold),
                            decay=config.train.restart_decay,
                            decay_steps=config.train.num_steps)
    streamed = bool(config.data.get("streamed", False))
    batch_size = config.data.batch_size
    example = dataset.train[:batch_size] if streamed else dataset.train
    trainer = make_trainer(
        energy, OBJECTIVES[config.train.loss](config, energy_fn, manifold),
        OPTIMIZERS[config.optim.name](config), data=example, sampler=sampler, restart=restart,
        num_particles=config.sampler.num_particles, particle_step_size=config.sampler.step_size,
        temperature=config.sampler.temperature, streamed=streamed, batch_size=batch_size,
        preprocess=preprocessing(config), mesh=make_mesh(num_devices),
        steps_per_call=steps_per_call or config.train.log_every, members=members,
        gradient_scale=gradient_scale(config),
        particles_per_step=config.sampler.particles_per_step, sampler_loop=sampler_loop(config))
    return Components(trainer, streamed, batch_size)
