"""The two-time-scale dual training loop: restart mask, particle moves, parameter update.

One `train_step(state, batch, key) -> (state, metrics)`:

1. Restart: each particle (each antithetic pair) is reset, with probability
   `restart_prob`, to a random sample of the batch (or to noise). With
   `restart_schedule='periodic'` all particles restart together every
   round(1/restart_prob) steps, onto the batch in order (the authors' code).
   restart_prob = 0 is persistent-chain maximum likelihood; restart_prob = 1 with
   one small Langevin step is score matching as h → 0.
2. K sampler steps of size h (`particle_step_size`) at temperature T on E_θ:
   the particles target exp(−E_θ/T).
3. One optax update of θ on the objective: 'ml' (mean E(data) − mean E(particles),
   the maximum-likelihood gradient of exp(−E/T) up to the factor 1/T), or the
   baselines 'sm', 'ssm', 'dsm', 'ksd' (see `ebmdual.losses`).

`train_loop` runs `num_steps` of these in one `lax.scan`; `make_trainer` jits it
with explicit shardings on a 1-D mesh ('data',): parameters, optimizer state and
keys replicated, particles sharded on their leading axis, the data sharded too
when its size divides the device count (replicated otherwise). The same code runs
on one device or many.

Swept hyperparameters are arrays in the state: `state.hparams` holds
restart_prob, particle_step_size and temperature; learning rates live in
`state.opt_state.hyperparams` (optax.inject_hyperparams). `with_hyperparams`
sets either kind. Changing them never recompiles, and a grid of states can be
vmapped.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from ebmdual import losses
from ebmdual.energies import get_energy, make_energy_fn, project_to_sphere
from ebmdual.optim import get_optimizer, learning_rates
from ebmdual.samplers import get_sampler

OBJECTIVES = ("ml", "sm", "ssm", "dsm", "ksd")
SPHERE_OBJECTIVES = ("ml", "sm")
RESTART_SCHEDULES = ("random", "periodic")
RESTART_TARGETS = ("data", "noise")
SAMPLER_HPARAMS = ("restart_prob", "particle_step_size", "temperature")


class TrainState(NamedTuple):
    """Everything a run needs to continue: a plain pytree.

    params: energy parameters. opt_state: optax state (learning rates inside).
    particles: (N, d) sampler positions. step: int32 scalar. key: typed PRNG key
    (the run's seed; step keys are fold_in(key, step)). hparams: dict of float32
    scalars restart_prob, particle_step_size, temperature.
    """

    params: Any
    opt_state: Any
    particles: jax.Array
    step: jax.Array
    key: jax.Array
    hparams: dict


class Trainer(NamedTuple):
    """Pure functions of one experiment, built by `make_trainer`.

    init(key, data) -> TrainState (jitted, sharded).
    train_step(state, batch, key) -> (state, metrics) (pure, not jitted).
    train_loop(state, data) -> (state, metrics stacked over `num_steps`) (jitted, donates state).
    energy_fn(params, x) -> scalar. mesh: the device mesh. abstract_state: the
    state's ShapeDtypeStructs with their shardings (for restoring checkpoints).
    """

    init: Callable
    train_step: Callable
    train_loop: Callable
    energy_fn: Callable
    mesh: jax.sharding.Mesh
    abstract_state: TrainState


# ----------------------------------------------------------------------------- restart

def restart_mask(key, num_groups: int, restart_prob, step, schedule: str = "random") -> jax.Array:
    """Which of `num_groups` particles (or antithetic pairs) restart: bool (num_groups,).

    random: i.i.d. Bernoulli(restart_prob). periodic: all when step % round(1/p) == 0, p > 0.
    """
    if schedule == "random":
        return jax.random.uniform(key, (num_groups,)) < restart_prob
    period = jnp.maximum(jnp.round(1.0 / jnp.maximum(restart_prob, 1e-12)), 1.0).astype(jnp.int32)
    due = (restart_prob > 0) & (step % period == 0)
    return jnp.broadcast_to(due, (num_groups,))


def restart_targets(key, batch, num_groups: int, schedule: str, target: str, manifold: str):
    """Where restarted particles go: (num_groups, d).

    data + random: uniform random rows of `batch`; data + periodic: rows in order
    (row j mod n, the authors' "copies of the data set"); noise: N(0, I), projected
    to the sphere on the sphere.
    """
    if target == "noise":
        noise = jax.random.normal(key, (num_groups, batch.shape[-1]), batch.dtype)
        return project_to_sphere(noise) if manifold == "sphere" else noise
    n = batch.shape[0]
    if schedule == "periodic":
        index = jnp.arange(num_groups) % n
    else:
        index = jax.random.randint(key, (num_groups,), 0, n)
    return batch[index]


def restart_particles(key, particles, batch, restart_prob, step, *, schedule="random",
                      target="data", antithetic=False, manifold="euclidean"):
    """Apply the restart mask: (N, d) particles -> (N, d) particles, fraction restarted.

    With antithetic noise the pair (j, j + N/2) shares its mask and its target, so a
    restarted pair starts at one point and moves by ±ξ.
    """
    num = particles.shape[0]
    num_groups = num // 2 if antithetic else num
    mask_key, target_key = jax.random.split(key)
    mask = restart_mask(mask_key, num_groups, restart_prob, step, schedule)
    targets = restart_targets(target_key, batch, num_groups, schedule, target, manifold)
    if antithetic:
        mask = jnp.concatenate([mask, mask])
        targets = jnp.concatenate([targets, targets])
    particles = jnp.where(mask[:, None], targets.astype(particles.dtype), particles)
    return particles, jnp.mean(mask.astype(jnp.float32))


def restart_options(config, manifold: str) -> dict:
    """The keyword options of `restart_particles` set by the config."""
    return dict(schedule=config.train.restart_schedule, target=config.train.restart_to,
                antithetic=config.sampler.antithetic, manifold=manifold)


# ----------------------------------------------------------------------------- objective

def make_objective(config, energy_fn, manifold: str) -> Callable:
    """objective(params, batch, particles, key) -> scalar loss, from `config.train.loss`."""
    name = config.train.loss
    if name not in OBJECTIVES:
        raise ValueError(f"train.loss={name!r}: expected one of {OBJECTIVES}")
    if manifold == "sphere" and name not in SPHERE_OBJECTIVES:
        raise ValueError(f"train.loss={name!r} is defined in R^d only; on the sphere use one of "
                         f"{SPHERE_OBJECTIVES}")

    def objective(params, batch, particles, key):
        if name == "ml":
            return losses.maximum_likelihood_loss(energy_fn, params, batch, particles)
        if name == "sm" and manifold == "sphere":
            return losses.sphere_score_matching_loss(energy_fn, params, batch)
        if name == "sm":
            return losses.score_matching_loss(energy_fn, params, batch)
        if name == "ssm":
            return losses.sliced_score_matching_loss(energy_fn, params, batch, key,
                                                     config.train.ssm_num_projections)
        if name == "dsm":
            return losses.denoising_score_matching_loss(energy_fn, params, batch, key,
                                                        config.train.dsm_sigma)
        return losses.kernel_stein_discrepancy(energy_fn, params, batch,
                                               kernel=config.train.ksd_kernel,
                                               bandwidth=config.train.ksd_bandwidth)

    return objective


def mean_energy(energy_fn, params, x) -> jax.Array:
    """mean_k E_θ(x_k) over a (n, d) batch."""
    return jnp.mean(losses.batched_energies(energy_fn, params, x))


# ----------------------------------------------------------------------------- step

def make_train_step(config, energy_fn, optimizer, manifold: str = "euclidean") -> Callable:
    """train_step(state, batch, key) -> (state, metrics): restart, K sampler steps, θ update.

    batch: (n, d). metrics: dict of float32 scalars (loss, energy_gap = mean E(particles)
    − mean E(data), grad_norm, restart_fraction, acceptance_rate, learning rates,
    particle_step_size, temperature, time_scale_ratio = learning rate / h, and
    finite = 1 when the loss, the new parameters and the particles are all finite).
    """
    sampler = get_sampler(config, energy_fn, manifold)
    objective = make_objective(config, energy_fn, manifold)
    restart_kwargs = restart_options(config, manifold)

    def train_step(state: TrainState, batch, key):
        restart_key, sample_key, loss_key = jax.random.split(key, 3)
        hp = state.hparams
        particles, restarted = restart_particles(restart_key, state.particles, batch,
                                                 hp["restart_prob"], state.step, **restart_kwargs)
        particles, info = sampler(sample_key, state.params, particles,
                                  hp["particle_step_size"], hp["temperature"])
        loss, grads = jax.value_and_grad(objective)(state.params, batch, particles, loss_key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if config.train.loss == "ml":
            energy_gap = -loss
        else:
            energy_gap = (mean_energy(energy_fn, state.params, particles)
                          - mean_energy(energy_fn, state.params, batch))
        rates = learning_rates(state.opt_state)
        finite = jnp.isfinite(loss) & all_finite(params) & all_finite(particles)
        metrics = dict(
            loss=loss, finite=finite, energy_gap=energy_gap, grad_norm=optax.tree.norm(grads),
            restart_fraction=restarted, acceptance_rate=info.acceptance_rate,
            particle_step_size=hp["particle_step_size"], temperature=hp["temperature"],
            restart_prob=hp["restart_prob"],
            **rates,
            **{f"time_scale_ratio_{k}": v / hp["particle_step_size"] for k, v in rates.items()},
        )
        new_state = state._replace(params=params, opt_state=opt_state, particles=particles,
                                   step=state.step + 1)
        return new_state, jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

    return train_step


def all_finite(tree) -> jax.Array:
    """True when every entry of every leaf of `tree` is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_batch_fn(batch_size: int | None) -> Callable:
    """batch_fn(key, data) -> batch: the full data set, or `batch_size` rows drawn with replacement."""

    def batch_fn(key, data):
        if not batch_size or batch_size >= data.shape[0]:
            return data
        return data[jax.random.randint(key, (batch_size,), 0, data.shape[0])]

    return batch_fn


def make_train_loop(train_step, batch_fn, num_steps: int) -> Callable:
    """train_loop(state, data) -> (state, metrics with a leading (num_steps,) axis), one lax.scan.

    Step t uses key fold_in(state.key, t), so a run is a function of (seed, config)
    only, whatever the chunking into calls.
    """

    def train_loop(state, data):
        def body(state, _):
            batch_key, step_key = jax.random.split(jax.random.fold_in(state.key, state.step))
            return train_step(state, batch_fn(batch_key, data), step_key)

        return jax.lax.scan(body, state, None, length=num_steps)

    return train_loop


# ----------------------------------------------------------------------------- state

def initial_hparams(config) -> dict:
    """float32 scalars restart_prob, particle_step_size, temperature from the config."""
    return dict(restart_prob=jnp.float32(config.train.restart_prob),
                particle_step_size=jnp.float32(config.sampler.step_size),
                temperature=jnp.float32(config.sampler.temperature))


def with_hyperparams(state: TrainState, **values) -> TrainState:
    """A state with some swept hyperparameters replaced (sampler ones or learning rates).

    Each new value keeps the dtype and the device placement of the one it replaces,
    so the jitted train loop sees the same input types and does not recompile.
    """
    hparams, injected = dict(state.hparams), dict(state.opt_state.hyperparams)

    def like(old, value):
        old = jnp.asarray(old)
        new = jnp.asarray(value, old.dtype)
        return jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else new

    for name, value in values.items():
        if name in hparams:
            hparams[name] = like(hparams[name], value)
        elif name in injected:
            injected[name] = like(injected[name], value)
        else:
            raise KeyError(f"{name!r} is not a hyperparameter of this state; known: "
                           f"{sorted(hparams) + sorted(injected)}")
    opt_state = state.opt_state._replace(hyperparams=injected)
    return state._replace(hparams=hparams, opt_state=opt_state)


def make_init(config, module, optimizer, manifold: str) -> Callable:
    """init(key, data) -> TrainState: θ from the module's init, particles all restarted."""
    num_particles = config.sampler.num_particles
    restart_kwargs = restart_options(config, manifold)

    def init(key, data):
        param_key, particle_key = jax.random.split(key)
        params = module.init(param_key, data[0])
        empty = jnp.zeros((num_particles, data.shape[-1]), data.dtype)
        particles, _ = restart_particles(particle_key, empty, data, 1.0, 0, **restart_kwargs)
        return TrainState(params=params, opt_state=optimizer.init(params), particles=particles,
                          step=jnp.zeros((), jnp.int32), key=key, hparams=initial_hparams(config))

    return init


# ----------------------------------------------------------------------------- devices

def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh ('data',) over the first `num_devices` devices (all by default), Auto axes."""
    devices = jax.devices()[:num_devices]
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def state_shardings(abstract_state: TrainState, mesh) -> TrainState:
    """Replicated everything, particles sharded along their leading axis."""
    replicated = NamedSharding(mesh, P())
    shardings = jax.tree.map(lambda _: replicated, abstract_state)
    return shardings._replace(
        particles=jax.tree.map(lambda _: NamedSharding(mesh, P("data")), abstract_state.particles))


def data_sharding(num_rows: int, mesh) -> NamedSharding:
    """Rows sharded over 'data' when they divide evenly, replicated otherwise."""
    return NamedSharding(mesh, P("data") if num_rows % mesh.size == 0 else P())


def make_trainer(config, data_shape: tuple[int, ...], manifold: str = "euclidean",
                 num_devices: int | None = None, steps_per_call: int | None = None) -> Trainer:
    """Build the energy, optimizer, sampler and the jitted init and train loop.

    data_shape: (n, d) of the on-device data set. steps_per_call: steps per
    `train_loop` call (default `config.train.log_every`).
    """
    mesh = make_mesh(num_devices)
    if config.sampler.num_particles % mesh.size:
        raise ValueError(f"sampler.num_particles={config.sampler.num_particles} must be divisible "
                         f"by the device count {mesh.size}")
    module = get_energy(config)
    energy_fn = make_energy_fn(module)
    optimizer = get_optimizer(config)
    train_step = make_train_step(config, energy_fn, optimizer, manifold)
    init = make_init(config, module, optimizer, manifold)

    abstract_state = jax.eval_shape(init, jax.random.key(0),
                                    jax.ShapeDtypeStruct(data_shape, jnp.float32))
    shardings = state_shardings(abstract_state, mesh)
    data_sh = data_sharding(data_shape[0], mesh)
    replicated = NamedSharding(mesh, P())
    loop = make_train_loop(train_step, make_batch_fn(config.data.get("batch_size")),
                           steps_per_call or config.train.log_every)
    return Trainer(
        init=jax.jit(init, in_shardings=(replicated, data_sh), out_shardings=shardings),
        train_step=train_step,
        train_loop=jax.jit(loop, in_shardings=(shardings, data_sh),
                           out_shardings=(shardings, replicated), donate_argnums=0),
        energy_fn=energy_fn,
        mesh=mesh,
        abstract_state=jax.tree.map(
            lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
            abstract_state, shardings),
    )


def put_data(data, trainer: Trainer) -> jax.Array:
    """Place an (n, d) host array on the trainer's mesh with `data_sharding`."""
    return jax.device_put(jnp.asarray(data, jnp.float32), data_sharding(data.shape[0], trainer.mesh))
