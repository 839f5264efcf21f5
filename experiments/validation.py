"""Config validation, before anything is built or compiled.

`validate_config(config, num_devices)` raises `ConfigError` whose message has one
line per problem: "config.<key>=<value>: <what is allowed>". `experiments.run`
prints it and exits with status 2, without a traceback.

Allowed names come from the registry that builds the objects (`experiments.registry`),
so adding an entry there is all it takes to allow its name here.
"""

from __future__ import annotations

import math

import numpy as np

from ebmdual.data import DATASET_NAMES
from ebmdual.data.images import DATASET_NAMES as IMAGE_DATASETS
from ebmdual.data.synthetic import PUBLISHED_TEACHERS, TEACHER_KINDS
from ebmdual.flow_mcmc import GLOBAL_MOVES
from ebmdual.jarzynski import KERNELS as JARZYNSKI_KERNELS, STARTS as JARZYNSKI_STARTS
from ebmdual.flows import FLOW_KINDS
from ebmdual.train import RESTART_SCHEDULES, RESTART_TARGETS
from experiments.registry import (ADAPTIVE_SAMPLERS, ANTITHETIC_SAMPLERS, CLIPPING_SAMPLERS,
                                  ENERGIES, HOST_LOOP_SAMPLERS, IMAGE_ENERGIES, SAMPLER_LOOPS,
                                  LR_SCALED_OPTIMIZERS, LR_SCALINGS, OBJECTIVES, OPTIMIZERS,
                                  PARTICLE_OBJECTIVES, REGIMES, SAMPLERS, SHALLOW_OPTIMIZERS,
                                  SPHERE_ENERGIES, SPHERE_OBJECTIVES, SPHERE_SAMPLERS)

SPHERE_DATASETS = ("teacher",)
TOY_DATASETS = ("eight_gaussians", "rings", "checkerboard")
DIVERGENCE_ACTIONS = ("stop", "rollback")
KSD_KERNELS = ("imq", "rbf")


class ConfigError(ValueError):
    """One line per invalid config entry."""


def _problems(config, num_devices: int):
    """Yield (key, value, what is allowed) for every invalid entry."""
    data, model, optim = config.data, config.model, config.optim
    sampler, train, evaluation = config.sampler, config.train, config.eval

    def need(ok, key, value, allowed):
        return None if ok else (key, value, allowed)

    def number(value):
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))

    def positive(key, value):
        return need(number(value) and value > 0, key, value, "a finite number > 0")

    def count(key, value, minimum=1):
        return need(isinstance(value, int) and value >= minimum, key, value,
                    f"an integer >= {minimum}")

    def one_of(key, value, allowed):
        return need(value in allowed, key, value, f"one of {', '.join(map(str, allowed))}")

    def rows(value, width):
        """value as a (K, width) array of finite numbers with K >= 1, or None."""
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        shaped = array.ndim == 2 and array.shape[0] >= 1 and array.shape[1] == width
        return array if shaped and bool(np.all(np.isfinite(array))) else None

    yield count("seed", config.seed, 0)
    yield one_of("data.name", data.name, DATASET_NAMES)
    yield count("data.dim", data.dim, 2)
    images = data.name in IMAGE_DATASETS
    if images:
        yield need(data.streamed, "data.streamed", data.streamed,
                   "True for images (uint8 batches streamed from the source)")
        yield need(isinstance(data.data_range, (list, tuple)) and len(data.data_range) == 2
                   and all(number(v) for v in data.data_range)
                   and data.data_range[0] < data.data_range[1], "data.data_range",
                   data.data_range, "(low, high) with low < high")
        if data.name == "celeb_a":
            yield one_of("data.image_size", data.image_size, (32, 64))
    if data.name in TOY_DATASETS:
        yield need(data.dim == 2, "data.dim", data.dim, f"2 for the 2-D data set {data.name!r}")
    yield count("data.num_train", data.num_train, 2)
    yield count("data.num_test", data.num_test, 1)
    yield need(isinstance(data.batch_size, int) and 0 <= data.batch_size <= data.num_train,
               "data.batch_size", data.batch_size,
               f"0 (full batch) or an integer in [1, data.num_train={data.num_train}]")
    if data.streamed:
        yield need(isinstance(data.batch_size, int) and data.batch_size >= 1
                   and data.batch_size % num_devices == 0, "data.batch_size", data.batch_size,
                   f"a positive multiple of the device count {num_devices} with data.streamed=True")
    if data.name == "teacher":
        yield one_of("data.teacher", data.teacher, TEACHER_KINDS)
        if data.teacher == "published":
            yield need(data.dim in PUBLISHED_TEACHERS, "data.dim", data.dim,
                       f"one of {', '.join(map(str, PUBLISHED_TEACHERS))} for "
                       "data.teacher='published' (other dimensions: data.teacher='random')")
        if data.teacher == "explicit":
            theta = rows(data.teacher_theta, data.dim)
            yield need(theta is not None and bool(np.all(np.linalg.norm(theta, axis=1) > 0)),
                       "data.teacher_theta", data.teacher_theta,
                       f"a k x {data.dim} list of non-zero rows (k >= 1) for "
                       "data.teacher='explicit'")
        yield need(number(data.teacher_cosine) and -1 <= data.teacher_cosine <= 1,
                   "data.teacher_cosine", data.teacher_cosine, "a cosine in [-1, 1]")
        yield count("data.teacher_seed", data.teacher_seed, 0)
    if data.name == "mixture":
        weights = list(data.mixture_weights)
        yield need(len(weights) >= 1 and all(w >= 0 for w in weights) and sum(weights) > 0,
                   "data.mixture_weights", weights, "a non-empty list of weights >= 0, sum > 0")
        if data.mixture_means is None:
            yield positive("data.mixture_separation", data.mixture_separation)
        else:
            means = rows(data.mixture_means, data.dim)
            yield need(means is not None and len(means) == len(weights), "data.mixture_means",
                       data.mixture_means, f"None or a K x {data.dim} list of finite means, "
                       f"K = len(data.mixture_weights) = {len(weights)}")
        stds = data.mixture_stds
        yield need(stds is None or (isinstance(stds, (list, tuple)) and len(stds) == len(weights)
                                    and all(number(s) and s > 0 for s in stds)),
                   "data.mixture_stds", stds, f"None (data.mixture_std for every mode) or a "
                   f"list of K = {len(weights)} finite stds > 0")
    if data.name == "eight_gaussians" or (data.name == "mixture" and data.mixture_stds is None):
        yield positive("data.mixture_std", data.mixture_std)

    on_sphere = data.name in SPHERE_DATASETS
    yield one_of("model.name", model.name, tuple(ENERGIES))
    if model.name in SPHERE_ENERGIES:
        yield need(on_sphere, "model.name", model.name,
                   f"'mlp' for data in R^d ({data.name!r}); 'shallow' needs data on the sphere")
        yield count("model.num_neurons", model.num_neurons)
        yield need(isinstance(model.num_positive, int)
                   and 0 <= model.num_positive <= model.num_neurons,
                   "model.num_positive", model.num_positive,
                   f"an integer in [0, model.num_neurons={model.num_neurons}]")
        yield positive("model.alpha", model.alpha)
        yield positive("model.init_weight", model.init_weight)
    if model.name in IMAGE_ENERGIES:
        yield need(images, "model.name", model.name,
                   f"'mlp' for vector data ({data.name!r}); 'conv' needs images")
        features = list(model.conv_features)
        yield need(len(features) >= 1 and all(isinstance(c, int) and c >= 1 for c in features),
                   "model.conv_features", tuple(features), "a non-empty list of integers >= 1")
        yield count("model.power_iterations", model.power_iterations)
    if model.name == "mlp":
        sizes = list(model.hidden_sizes)
        yield need(len(sizes) >= 1 and all(isinstance(s, int) and s >= 1 for s in sizes),
                   "model.hidden_sizes", tuple(sizes), "a non-empty list of integers >= 1")
        yield need(model.base_std is None or (number(model.base_std) and model.base_std > 0),
                   "model.base_std", model.base_std, "None (no Gaussian base) or a number > 0")
    yield one_of("model.regime", model.regime, REGIMES)

    yield one_of("optim.name", optim.name, tuple(OPTIMIZERS))
    if optim.name in SHALLOW_OPTIMIZERS:
        yield need(model.name == "shallow", "optim.name", optim.name,
                   f"'adam' or 'sgd' for model.name={model.name!r}; 'wfr' needs 'shallow'")
        yield positive("optim.feature_learning_rate", optim.feature_learning_rate)
        yield positive("optim.weight_learning_rate", optim.weight_learning_rate)
        yield need(optim.weight_cap is None or (number(optim.weight_cap) and optim.weight_cap > 0),
                   "optim.weight_cap", optim.weight_cap, "None (no cap) or a finite number > 0")
    else:
        yield positive("optim.learning_rate", optim.learning_rate)
    yield need(number(optim.lr_decay) and 0 < optim.lr_decay <= 1, "optim.lr_decay",
               optim.lr_decay, "a number in (0, 1]: the final learning rate's fraction")
    if optim.lr_decay != 1:
        yield need(optim.name not in SHALLOW_OPTIMIZERS, "optim.lr_decay", optim.lr_decay,
                   f"1 for optim.name={optim.name!r} (the decay is for adam and sgd)")
    yield need(number(optim.grad_clip) and optim.grad_clip >= 0, "optim.grad_clip",
               optim.grad_clip, "0 (off) or a finite number > 0")
    yield one_of("optim.lr_scaling", optim.lr_scaling, LR_SCALINGS)
    if optim.lr_scaling != "off":
        yield need(number(optim.lr_scaling_c) and optim.lr_scaling_c >= 0, "optim.lr_scaling_c",
                   optim.lr_scaling_c, "a finite number >= 0")
        yield need(optim.name in LR_SCALED_OPTIMIZERS, "optim.lr_scaling", optim.lr_scaling,
                   f"'off' for optim.name={optim.name!r} (the scaling multiplies the gradient, "
                   f"a learning-rate factor for {', '.join(LR_SCALED_OPTIMIZERS)} only)")
        yield need(train.loss in PARTICLE_OBJECTIVES, "optim.lr_scaling", optim.lr_scaling,
                   f"'off' for train.loss={train.loss!r} (it depends on the restart period)")

    yield one_of("sampler.name", sampler.name, tuple(SAMPLERS))
    if on_sphere:
        yield need(sampler.name in SPHERE_SAMPLERS, "sampler.name", sampler.name,
                   "'ula' (projected Langevin) for data on the sphere")
    yield count("sampler.num_particles", sampler.num_particles)
    yield need(sampler.num_particles % num_devices == 0, "sampler.num_particles",
               sampler.num_particles, f"a multiple of the device count {num_devices}")
    if sampler.antithetic:
        yield need(sampler.name in ANTITHETIC_SAMPLERS, "sampler.antithetic", sampler.antithetic,
                   f"False for sampler.name={sampler.name!r} (antithetic pairs are ULA only)")
        yield need(sampler.num_particles % 2 == 0, "sampler.num_particles",
                   sampler.num_particles, "an even number with sampler.antithetic=True")
    ppb = sampler.particles_per_step
    yield need(ppb is None or (isinstance(ppb, int) and 1 <= ppb <= sampler.num_particles
                               and ppb % num_devices == 0), "sampler.particles_per_step", ppb,
               f"None (all particles move) or a multiple of the device count {num_devices} "
               f"in [1, sampler.num_particles={sampler.num_particles}]")
    yield one_of("sampler.loop", sampler.loop, SAMPLER_LOOPS)
    if sampler.loop == "host":
        yield need(sampler.name in HOST_LOOP_SAMPLERS, "sampler.loop", sampler.loop,
                   f"'scan' or 'auto' for sampler.name={sampler.name!r} (the host loop needs "
                   f"a one-transition sampler: {', '.join(HOST_LOOP_SAMPLERS)})")
    grad_clamp = sampler.grad_clamp
    yield need(grad_clamp is None or (number(grad_clamp) and grad_clamp > 0),
               "sampler.grad_clamp", grad_clamp, "None (off) or a number > 0")
    if sampler.clip or grad_clamp is not None:
        key, value = (("sampler.clip", sampler.clip) if sampler.clip
                      else ("sampler.grad_clamp", grad_clamp))
        yield need(sampler.name in CLIPPING_SAMPLERS, key, value,
                   f"{'False' if sampler.clip else 'None'} for sampler.name={sampler.name!r} "
                   f"(clipping is for {', '.join(CLIPPING_SAMPLERS)}; flow_mcmc keeps images in "
                   "the data range by refusing moves out of it, jarzynski walkers are unclipped)")
    if sampler.clip:
        yield need(images, "sampler.clip", sampler.clip, "False for data that are not images "
                   "(particles are clipped to data.data_range)")
    yield positive("sampler.step_size", sampler.step_size)
    yield positive("sampler.temperature", sampler.temperature)
    yield count("sampler.num_steps", sampler.num_steps)
    yield count("sampler.num_integration_steps", sampler.num_integration_steps)
    target = sampler.target_acceptance
    yield need(target is None or (isinstance(target, float) and 0 < target < 1),
               "sampler.target_acceptance", target, "None (no adaptation) or a value in (0, 1)")
    if target is not None:
        yield need(sampler.name in ADAPTIVE_SAMPLERS, "sampler.target_acceptance", target,
                   f"None for sampler.name={sampler.name!r} (step-size adaptation is for "
                   f"{', '.join(ADAPTIVE_SAMPLERS)})")
    if sampler.name == "jarzynski":
        yield need(number(sampler.ess_threshold) and 0 <= sampler.ess_threshold <= 1,
                   "sampler.ess_threshold", sampler.ess_threshold, "a fraction in [0, 1]")
        yield one_of("sampler.jarzynski_kernel", sampler.jarzynski_kernel, JARZYNSKI_KERNELS)
        yield one_of("sampler.jarzynski_start", sampler.jarzynski_start, JARZYNSKI_STARTS)
        if images:
            yield need(sampler.jarzynski_kernel == "mala", "sampler.jarzynski_kernel",
                       sampler.jarzynski_kernel, "'mala' for images (the walkers stay in the "
                       "data range's box by refusing moves out of it; ULA has no such form)")
        else:
            yield need(sampler.jarzynski_start == "model", "sampler.jarzynski_start",
                       sampler.jarzynski_start, "'model' for data without a box (a flat "
                       "start needs the bounded support of images)")
    if sampler.name == "flow_mcmc":
        yield one_of("sampler.global_move", sampler.global_move, GLOBAL_MOVES)
        yield count("sampler.num_proposals", sampler.num_proposals)
        yield count("sampler.local_steps", sampler.local_steps, minimum=0)
        yield one_of("sampler.flow_kind", sampler.flow_kind, FLOW_KINDS)
        yield count("sampler.flow_layers", sampler.flow_layers)
        yield count("sampler.flow_hidden", sampler.flow_hidden)
        yield count("sampler.flow_bins", sampler.flow_bins, minimum=2)
        yield positive("sampler.flow_bound", sampler.flow_bound)
        yield positive("sampler.flow_learning_rate", sampler.flow_learning_rate)
        yield count("sampler.flow_steps", sampler.flow_steps, minimum=0)
        yield need(number(sampler.flow_reverse_kl) and sampler.flow_reverse_kl >= 0,
                   "sampler.flow_reverse_kl", sampler.flow_reverse_kl, "a number >= 0")
        if not images:
            yield need(data.dim >= 2, "data.dim", data.dim, "at least 2 for sampler.name="
                       "'flow_mcmc' (coupling flows split the coordinates in two)")
        yield need(isinstance(sampler.flow_tilted, bool), "sampler.flow_tilted",
                   sampler.flow_tilted, "True or False")
        if sampler.flow_tilted:
            yield need(model.name == "mlp" and model.regime == "active", "sampler.flow_tilted",
                       sampler.flow_tilted, f"False for model.name={model.name!r}, "
                       f"model.regime={model.regime!r} (the tilt is for active MLP energies)")
    yield positive("sampler.adaptation_rate", sampler.adaptation_rate)
    if train.loss not in PARTICLE_OBJECTIVES:
        yield need(sampler.temperature == 1, "sampler.temperature", sampler.temperature,
                   f"1 for train.loss={train.loss!r} (score matching fits exp(-E): no temperature)")

    yield one_of("train.loss", train.loss, SPHERE_OBJECTIVES if on_sphere else tuple(OBJECTIVES))
    yield need(0 <= train.restart_prob <= 1, "train.restart_prob", train.restart_prob,
               "a probability in [0, 1]")
    yield need(number(train.restart_decay) and 0 < train.restart_decay <= 1,
               "train.restart_decay", train.restart_decay,
               "a factor in (0, 1]: p decays to restart_prob × restart_decay (1: constant)")
    yield one_of("train.restart_schedule", train.restart_schedule, RESTART_SCHEDULES)
    yield one_of("train.restart_to", train.restart_to, RESTART_TARGETS)
    yield positive("train.restart_noise_std", train.restart_noise_std)
    yield count("train.num_steps", train.num_steps)
    yield count("train.log_every", train.log_every)
    yield count("train.eval_every", train.eval_every)
    yield count("train.checkpoint_every", train.checkpoint_every)
    chunked = {k: train[k] for k in ("num_steps", "eval_every", "checkpoint_every")}
    if all(isinstance(v, int) and v >= 1 for v in (train.log_every, *chunked.values())):
        yield need(all(v % train.log_every == 0 for v in chunked.values()), "train.log_every",
                   train.log_every, "a common divisor of "
                   + ", ".join(f"train.{k}={v}" for k, v in chunked.items()))
    yield count("train.keep_checkpoints", train.keep_checkpoints)
    yield positive("train.dsm_sigma", train.dsm_sigma)
    yield count("train.ssm_num_projections", train.ssm_num_projections)
    yield one_of("train.ksd_kernel", train.ksd_kernel, KSD_KERNELS)
    yield positive("train.ksd_bandwidth", train.ksd_bandwidth)
    yield one_of("train.on_divergence", train.on_divergence, DIVERGENCE_ACTIONS)
    yield positive("train.max_energy_gap", train.max_energy_gap)
    yield need(0 < train.rollback_lr_factor < 1, "train.rollback_lr_factor",
               train.rollback_lr_factor, "a factor in (0, 1)")
    yield count("train.max_rollbacks", train.max_rollbacks, 0)
    yield count("eval.grid_size", evaluation.grid_size, 10)
    yield count("eval.num_samples", evaluation.num_samples)
    yield count("eval.num_uniform", evaluation.num_uniform)
    if images:
        yield count("eval.ais_chains", evaluation.ais_chains)
        yield count("eval.ais_temperatures", evaluation.ais_temperatures, 2)
        yield count("eval.ais_repeats", evaluation.ais_repeats, 2)
        yield positive("eval.ais_step_size", evaluation.ais_step_size)
        yield count("eval.num_test_images", evaluation.num_test_images)
        yield count("eval.classifier_steps", evaluation.classifier_steps, 0)


def validate_config(config, num_devices: int = 1) -> None:
    """Raise ConfigError listing every invalid entry, one line each."""
    lines = [f"config.{key}={value!r}: expected {allowed}"
             for key, value, allowed in filter(None, _problems(config, num_devices))]
    if lines:
        raise ConfigError("\n".join(dict.fromkeys(lines)))
