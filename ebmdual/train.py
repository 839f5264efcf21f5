"""The two-time-scale dual training loop, built from objects.

    trainer = make_trainer(energy, objective, optimizer, sampler=sampler,
                           restart=RestartPolicy(prob=1/40), num_particles=N, data=example)

* `energy`: a flax linen module or an `(init, energy_fn)` pair (`ebmdual.energies.as_energy`).
* `objective(params, batch, particles, key) -> loss`: `ebmdual.objectives`, or your own.
  When the sampler hands per-particle weights, it is called with `weights=` too.
* `optimizer`: any optax `GradientTransformation` (wrap it in `optax.inject_hyperparams`
  to sweep its learning rates).
* `sampler`: a `ebmdual.samplers.Sampler` (init/step pair with state), or None for
  objectives that use no particles (score matching and its variants): the restart
  and the sampler are then skipped.
* `restart`: a `RestartPolicy` (probability, schedule, target).

One `train_step(state, batch, key) -> (state, metrics)`:

1. Restart: each particle (each antithetic pair) is reset, with probability
   `restart_prob`, to a random item of the current batch (or to noise). With
   schedule 'periodic' all particles restart together every round(1/restart_prob)
   steps, onto the batch in order (the authors' code). restart_prob = 0 is
   persistent-chain maximum likelihood; restart_prob = 1 with one small Langevin
   step is score matching as h → 0.
2. The sampler moves the particles at step size h (`particle_step_size`) and
   temperature T on E_θ: they target exp(−E_θ/T).
3. One optax update of θ on the objective (for maximum likelihood,
   mean E(batch) − mean E(particles), the log-likelihood gradient of exp(−E/T) up
   to the factor 1/T).

Particles and batches are pytrees whose leaves share a leading axis: (N, d), (N, 28,
28, 1) images, or {'x': images, 'y': labels}. The restart works leaf by leaf.

`train_loop(state, data)` runs `steps_per_call` steps in one `lax.scan`. Data reach
it in one of two ways, fixed when the trainer is built:
* resident (`streamed=False`): `data` is a small whole data set (n, ...) on the
  device; step t uses all of it (batch_size 0) or `batch_size` rows drawn with
  the key fold_in(state.key, t), inside the scan;
* streamed (`streamed=True`): `data` is a chunk of S batches stacked on a leading
  axis (S, B, ...), scanned as `xs`, in their stored dtype (uint8 images): nothing
  larger than S·B examples is on the device. The host chooses the batch of step t
  as a pure function of (seed, t) (`ebmdual.data.stream`).
Either way `preprocess(key, batch)` (the device cast, dequantisation, scaling) runs
inside the step.

`make_trainer` jits init and the loop with explicit shardings on a 1-D mesh
('data',) of every device of every process: parameters, optimizer state and keys
replicated; particles (and sampler-state leaves that have a particle axis)
sharded on their leading axis; batches sharded on their example axis. The same
code runs on one device, many, or several processes (`jax.distributed`).

Swept hyperparameters are arrays in the state: `state.hparams` holds restart_prob,
restart_decay, particle_step_size and temperature; learning rates live in the optimizer state
(optax.inject_hyperparams). `with_hyperparams` sets either kind. Changing them
never recompiles, and a grid of states can be vmapped.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from ebmdual import losses
from ebmdual.compiler import jit
from ebmdual.energies import as_energy, project_to_sphere
from ebmdual.optim import (effective_learning_rates, injected_hyperparams, learning_rates,
                           set_hyperparams)
from ebmdual.samplers import (Sampler, SamplerInfo, floating_part, gaussian_noise, leading_size,
                              merge_floating, select_particles)

RESTART_SCHEDULES = ("random", "periodic")
RESTART_TARGETS = ("data", "noise")
SAMPLER_HPARAMS = ("restart_prob", "restart_decay", "particle_step_size", "temperature")


class TrainState(NamedTuple):
    """Everything a run needs to continue: a plain pytree.

    params: energy parameters. opt_state: optax state (injected learning rates inside).
    particles: pytree with leading axis N (None without a sampler). sampler_state: the
    sampler's pytree (() when stateless). step: int32 scalar. key: typed PRNG key (the
    run's seed; step keys are fold_in(key, step)). hparams: dict of float32 scalars
    temperature and, with a sampler, restart_prob, restart_decay, particle_step_size.
    """

    params: Any
    opt_state: Any
    particles: Any
    sampler_state: Any
    step: jax.Array
    key: jax.Array
    hparams: dict


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """When and where particles restart.

    prob: the initial restart_prob (state.hparams['restart_prob'], swept as an array).
    schedule: 'random' (i.i.d. Bernoulli(prob) per particle or pair) or 'periodic'
      (all together every round(1/prob) steps, onto the batch in order).
    target: 'data' (items of the current batch) or 'noise' (`noise(key, particles)`,
      default standard normal on the floating leaves; pass a projection for the sphere).
    antithetic: pairs (j, j + N/2) share their mask and target (for antithetic noise).
    decay: the restart probability decays geometrically from `prob` to `prob · decay`
      over `decay_steps` steps and stays there, p_t = prob · decay^(min(t, T)/T)
      (state.hparams['restart_decay'], swept as an array); 1 keeps it constant.
    decay_steps: T (the run's length), needed when decay != 1.
    """

    prob: float = 0.0
    schedule: str = "random"
    target: str = "data"
    antithetic: bool = False
    noise: Callable | None = None
    decay: float = 1.0
    decay_steps: int | None = None

    def __post_init__(self):
        if not 0.0 <= float(self.prob) <= 1.0:
            raise ValueError(f"RestartPolicy.prob={self.prob}: expected a probability in [0, 1]")
        if self.schedule not in RESTART_SCHEDULES:
            raise ValueError(f"RestartPolicy.schedule={self.schedule!r}: expected one of "
                             f"{RESTART_SCHEDULES}")
        if self.target not in RESTART_TARGETS:
            raise ValueError(f"RestartPolicy.target={self.target!r}: expected one of "
                             f"{RESTART_TARGETS}")
        if not 0.0 < float(self.decay) <= 1.0:
            raise ValueError(f"RestartPolicy.decay={self.decay}: expected a factor in (0, 1]")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ValueError(f"RestartPolicy.decay_steps={self.decay_steps}: expected >= 1")

    def prob_at(self, prob, decay, step) -> jax.Array:
        """p_t = prob · decay^(min(t, T)/T): exactly `prob` when decay == 1 (or no T)."""
        if self.decay_steps is None:
            return prob
        fraction = jnp.minimum(step, self.decay_steps) / self.decay_steps
        return prob * decay ** fraction.astype(jnp.float32)


class Trainer(NamedTuple):
    """Pure functions of one experiment, built by `make_trainer`.

    init(key, data) -> TrainState (jitted, sharded): `data` is the resident data set or,
      streamed, one batch; the particles start at its items. (For a grid of M members:
      M keys and data stacked on a leading member axis.)
    train_step(state, batch, key) -> (state, metrics) (pure, not jitted).
    train_loop(state, data) -> (state, metrics stacked over the steps) (jitted, donates state).
    put(host_data) -> the device array `train_loop` takes (resident data or a chunk (S, B, ...),
      this process's share of it under several processes); put_batch(host_batch) -> what
      `init` takes when streamed.
    energy_fn(params, x) -> scalar. mesh: the device mesh. abstract_state: the state's
    ShapeDtypeStructs with their shardings (for restoring checkpoints).
    particle_weights(sampler_state) -> (N,) normalised particle weights (on host copies, and
      on one grid member's slice); None instead of the function when the particles are
      unweighted (a sampler without `weights`) or when a replay buffer (particles_per_step
      < N) leaves the weights of the particles not drawn stale.
    """

    init: Callable
    train_step: Callable
    train_loop: Callable
    put: Callable
    put_batch: Callable
    energy_fn: Callable
    mesh: jax.sharding.Mesh
    abstract_state: TrainState
    particle_weights: Callable | None = None


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


def scaled_normal_noise(std: float) -> Callable:
    """noise(key, particles): N(0, std² I) in every floating leaf; other leaves (labels) kept."""

    def noise(key, particles):
        moving = gaussian_noise(key, particles, antithetic=False)
        return merge_floating(jax.tree.map(lambda xi: std * xi, moving), particles)

    return noise


standard_normal_noise = scaled_normal_noise(1.0)  # the default restart noise, N(0, I)


def sphere_noise(key, particles):
    """Uniform points on S^{d−1} shaped like (N, d) `particles`: normalised Gaussians."""
    return project_to_sphere(jax.random.normal(key, particles.shape, particles.dtype))


def restart_targets(key, batch, particles, num_groups: int, policy: RestartPolicy):
    """Where restarted groups go: a pytree like the first `num_groups` particles.

    data + random: uniform random items of `batch`; data + periodic: items in order
    (item j mod n, the authors' "copies of the data set"); noise: policy.noise.
    """
    if policy.target == "noise":
        first = jax.tree.map(lambda leaf: leaf[:num_groups], particles)
        return (policy.noise or standard_normal_noise)(key, first)
    n = leading_size(batch)
    if policy.schedule == "periodic":
        index = jnp.arange(num_groups) % n
    else:
        index = jax.random.randint(key, (num_groups,), 0, n)
    return jax.tree.map(lambda leaf: leaf[index], batch)


def restart_particles(key, particles, batch, restart_prob, step, policy: RestartPolicy):
    """Apply the restart mask: particles -> (particles, mask), mask (N,) bool: restarted.

    With `policy.antithetic` the pair (j, j + N/2) shares its mask and its target, so a
    restarted pair starts at one point and moves by ±ξ.
    """
    num = leading_size(particles)
    num_groups = num // 2 if policy.antithetic else num
    mask_key, target_key = jax.random.split(key)
    mask = restart_mask(mask_key, num_groups, restart_prob, step, policy.schedule)
    targets = restart_targets(target_key, batch, particles, num_groups, policy)
    if policy.antithetic:
        mask = jnp.concatenate([mask, mask])
        targets = jax.tree.map(lambda t: jnp.concatenate([t, t]), targets)

    return select_particles(mask, targets, particles), mask


# ----------------------------------------------------------------------------- step

def weighted_mean_energy(energy_fn, params, x, weights=None) -> jax.Array:
    """mean_k E_θ(x_k) over a batch pytree, or Σ_k w_k E_θ(x_k) with weights (n,)."""
    energies = losses.batched_energies(energy_fn, params, x)
    return jnp.mean(energies) if weights is None else jnp.sum(weights * energies)


def all_finite(tree) -> jax.Array:
    """True when every entry of every floating leaf of `tree` is finite."""
    leaves = [x for x in jax.tree.leaves(floating_part(tree)) if x is not None]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] or [jnp.bool_(True)]))


def _accepts_weights(objective) -> bool:
    try:
        return "weights" in inspect.signature(objective).parameters
    except (TypeError, ValueError):
        return False


class Moving(NamedTuple):
    """What `begin` hands to the sampler and to `finish` within one train step.

    particles: the particles that move this step (all N, or the B drawn from the buffer).
    sampler_state: the sampler state restricted to them. index: (B,) int32 buffer rows of
    the drawn particles, or None when all move. restarted: (B,) bool. restart_prob: p_t.
    sample_key, loss_key: the keys of the sampler and of the objective.
    """

    particles: Any
    sampler_state: Any
    index: Any
    restarted: jax.Array
    restart_prob: jax.Array
    sample_key: jax.Array
    loss_key: jax.Array


class StepParts(NamedTuple):
    """A train step in three pieces: begin (draw from the buffer, restart), the sampler
    (its `step`, or K calls of its `transition`), finish (write back, θ update).

    begin(state, batch, key) -> Moving.
    finish(state, batch, moving, particles, sampler_state, info) -> (state, metrics).
    """

    begin: Callable
    finish: Callable


def _particle_leaves(sampler: Sampler | None, sampler_state):
    """A pytree of bools like `sampler_state`: True where a leaf has a particle axis."""
    if sampler is None or sampler.particle_axes is None:
        return jax.tree.map(lambda _: False, sampler_state)
    return sampler.particle_axes(sampler_state)


def gather_rows(tree, index, flags=None):
    """tree[index] on the leading axis of each leaf (of the leaves flagged True)."""
    flags = jax.tree.map(lambda _: True, tree) if flags is None else flags
    return jax.tree.map(lambda leaf, f: leaf[index] if f else leaf, tree, flags)


def scatter_rows(tree, index, rows, flags=None):
    """tree with rows `index` of each (flagged) leaf replaced by `rows`; unflagged leaves
    are taken from `rows` (sampler-wide state such as an adapted step size)."""
    flags = jax.tree.map(lambda _: True, tree) if flags is None else flags
    return jax.tree.map(lambda leaf, new, f: leaf.at[index].set(new) if f else new,
                        tree, rows, flags)


def make_step_parts(energy_fn, objective, optimizer: optax.GradientTransformation,
                    sampler: Sampler | None = None,
                    restart: RestartPolicy | None = None,
                    gradient_scale: Callable | None = None,
                    particles_per_step: int | None = None) -> StepParts:
    """The pieces of `make_train_step` (see there), for the host loop that dispatches the
    sampler's transitions one by one."""
    restart = restart or RestartPolicy()
    weighted_objective = _accepts_weights(objective)

    def begin(state: TrainState, batch, key) -> Moving:
        restart_key, sample_key, loss_key = jax.random.split(key, 3)
        hp = state.hparams
        restart_prob = hp.get("restart_prob", jnp.float32(0.0))
        if sampler is None:
            return Moving(None, state.sampler_state, None, jnp.zeros((0,), bool),
                          restart_prob, sample_key, loss_key)
        restart_prob = restart.prob_at(hp["restart_prob"], hp["restart_decay"], state.step)
        particles, sampler_state, index = state.particles, state.sampler_state, None
        num = leading_size(particles)
        if particles_per_step is not None and particles_per_step < num:
            # the replay buffer: B of the N particles, drawn without replacement
            index = jax.random.permutation(jax.random.fold_in(restart_key, 1),
                                           num)[:particles_per_step]
            particles = gather_rows(particles, index)
            sampler_state = gather_rows(sampler_state, index,
                                        _particle_leaves(sampler, sampler_state))
        particles, restarted = restart_particles(restart_key, particles, batch, restart_prob,
                                                 state.step, restart)
        if sampler.restart is not None:
            sampler_state = sampler.restart(sampler_state, restarted)
        return Moving(particles, sampler_state, index, restarted, restart_prob, sample_key,
                      loss_key)

    def finish(state: TrainState, batch, moving: Moving, particles, sampler_state,
               info: SamplerInfo | None):
        hp = state.hparams
        metrics, weights = {}, None
        if sampler is not None:
            weights = info.weights
            metrics.update(restart_fraction=jnp.mean(moving.restarted.astype(jnp.float32)),
                           acceptance_rate=info.acceptance_rate,
                           particle_step_size=hp["particle_step_size"],
                           restart_prob=moving.restart_prob, **(info.extra or {}))
        if weights is not None and not weighted_objective:
            raise TypeError("the sampler hands per-particle weights, but the objective takes no "
                            "`weights` argument")
        extra_args = {"weights": weights} if weights is not None else {}
        loss, grads = jax.value_and_grad(objective)(state.params, batch, particles,
                                                    moving.loss_key, **extra_args)
        scaled = grads
        if gradient_scale is not None:
            scale = gradient_scale(moving.restart_prob, hp.get("particle_step_size", 1.0))
            scaled = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
            metrics["gradient_scale"] = scale
        updates, opt_state = optimizer.update(scaled, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        rates = effective_learning_rates(state.opt_state)
        finite = jnp.isfinite(loss) & all_finite(params)
        all_particles = particles
        if sampler is not None:
            finite = finite & all_finite(particles)
            metrics["energy_gap"] = (
                weighted_mean_energy(energy_fn, state.params, particles, weights)
                - weighted_mean_energy(energy_fn, state.params, batch))
            metrics.update({f"time_scale_ratio_{k}": v / hp["particle_step_size"]
                            for k, v in rates.items()})
            if moving.index is not None:
                all_particles = scatter_rows(state.particles, moving.index, particles)
                sampler_state = scatter_rows(state.sampler_state, moving.index, sampler_state,
                                             _particle_leaves(sampler, state.sampler_state))
        metrics.update(loss=loss, finite=finite, grad_norm=optax.tree.norm(grads),
                       temperature=hp["temperature"], **rates)
        new_state = state._replace(params=params, opt_state=opt_state, particles=all_particles,
                                   sampler_state=sampler_state, step=state.step + 1)
        return new_state, jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

    return StepParts(begin=begin, finish=finish)


def make_train_step(energy_fn, objective, optimizer: optax.GradientTransformation,
                    sampler: Sampler | None = None,
                    restart: RestartPolicy | None = None,
                    gradient_scale: Callable | None = None,
                    particles_per_step: int | None = None) -> Callable:
    """train_step(state, batch, key) -> (state, metrics): restart, sampler step, θ update.

    particles_per_step: B < N makes the N particles a replay buffer (IGEBM, JEM): each
    step draws B of them without replacement, restarts and moves only those, and
    writes them back (with the sampler-state leaves that have a particle axis); the
    objective sees the B moved particles. None (or N): all N move, as without a buffer.

    gradient_scale(restart_prob_t, particle_step_size) -> scalar a, when given, multiplies
    the objective's gradient before the optimizer sees it (for SGD and WFR this is a
    learning-rate factor; `ebmdual.optim.restart_period_scaling` is the authors' a).

    metrics: dict of float32 scalars: loss, grad_norm, finite (1 when the loss, the new
    parameters and the particles are all finite), temperature, the injected learning
    rates; with a sampler also energy_gap = mean E(particles) − mean E(batch) (weighted
    when the sampler hands weights), restart_fraction, acceptance_rate,
    particle_step_size, restart_prob, time_scale_ratio_* = learning rate / h, and the
    sampler's extra metrics.
    """
    return compose_train_step(make_step_parts(energy_fn, objective, optimizer, sampler,
                                              restart, gradient_scale, particles_per_step),
                              sampler)


def compose_train_step(parts: StepParts, sampler: Sampler | None) -> Callable:
    """train_step(state, batch, key): begin, the sampler's whole `step`, finish."""

    def train_step(state: TrainState, batch, key):
        moving = parts.begin(state, batch, key)
        particles, sampler_state, info = moving.particles, moving.sampler_state, None
        if sampler is not None:
            particles, sampler_state, info = sampler.step(moving.sample_key, state.params,
                                                          particles, sampler_state,
                                                          state.hparams)
        return parts.finish(state, batch, moving, particles, sampler_state, info)

    return train_step


# ----------------------------------------------------------------------------- loop

def draw_batch(key, data, batch_size: int):
    """The whole resident data set (batch_size 0 or ≥ n), or `batch_size` items drawn
    uniformly with replacement (the same rows in every leaf)."""
    n = leading_size(data)
    if not batch_size or batch_size >= n:
        return data
    index = jax.random.randint(key, (batch_size,), 0, n)
    return jax.tree.map(lambda leaf: leaf[index], data)


SAMPLER_LOOPS = ("scan", "host")


def step_batch(state, data, streamed: bool, batch_size: int, preprocess: Callable | None):
    """(preprocessed batch, step key) of step `state.step`: from the key fold_in(state.key, t),
    split into (batch key, step key); the batch is `data` itself when streamed, else drawn
    from the resident set by `draw_batch`."""
    batch_key, step_key = jax.random.split(jax.random.fold_in(state.key, state.step))
    batch = data if streamed else draw_batch(batch_key, data, batch_size)
    if preprocess is not None:
        batch = preprocess(jax.random.fold_in(batch_key, 1), batch)
    return batch, step_key


def make_train_loop(train_step, steps_per_call: int, *, streamed: bool = False,
                    batch_size: int = 0, preprocess: Callable | None = None) -> Callable:
    """train_loop(state, data) -> (state, metrics with a leading (steps,) axis): one lax.scan.

    Resident: `data` is the whole (n, ...) set, `steps_per_call` steps, batches drawn
    by `draw_batch`. Streamed: `data` is (S, B, ...) and the scan runs over its S
    batches. Step t uses key fold_in(state.key, t), split into (batch key, step key),
    so a run is a function of its seed only, whatever the chunking into calls.
    `preprocess(key, batch)`, when given, runs on each batch with a key of its own.
    """

    def train_loop(state, data):
        def body(state, streamed_batch):
            batch, step_key = step_batch(state, streamed_batch if streamed else data, streamed,
                                         batch_size, preprocess)
            return train_step(state, batch, step_key)

        if streamed:
            return jax.lax.scan(body, state, data)
        return jax.lax.scan(body, state, None, length=steps_per_call)

    return train_loop


def make_host_train_loop(parts: StepParts, sampler: Sampler, steps_per_call: int, *,
                         streamed: bool = False, batch_size: int = 0,
                         preprocess: Callable | None = None, members: int | None = None,
                         mesh: jax.sharding.Mesh | None = None,
                         state_sharding=None) -> Callable:
    """train_loop(state, data) -> (state, metrics (steps,)), the same function as
    `make_train_loop` of `make_train_step`, with the sampler's K transitions dispatched
    from Python as K calls of one jitted `sampler.transition` (keys split(sample key, K),
    so the numbers are those of the scanned loop) between a jitted `begin` and a jitted
    `finish`. For XLA CPU, where convolutions in a loop body run 2-3× slower than in a
    call of their own (docs/performance.md); accelerators keep the scan.

    members: M for a grid (every piece vmapped; metrics (M, steps)).
    On a mesh of several devices each call is waited for before the next is dispatched:
    XLA CPU runs the collectives of calls in flight together on a shared thread pool, and
    two programs' all-gathers waiting on each other's device threads deadlock.
    """
    if sampler.transition is None:
        raise ValueError("sampler_loop='host' needs a sampler with a one-transition form "
                         "(`Sampler.transition`: ula, mala, hmc); use sampler_loop='scan'")
    vmap = jax.vmap if members else (lambda f, **kw: f)

    def start(state, data, t):
        # The K transition keys come back as K arrays, not one (K,) array: indexing it
        # from Python would run an eager program per transition, which XLA CPU executes
        # on the calling thread once the transition before it is done, stalling dispatch.
        source = jax.tree.map(lambda leaf: leaf[t], data) if streamed else data
        batch, step_key = step_batch(state, source, streamed, batch_size, preprocess)
        moving = parts.begin(state, batch, step_key)
        return batch, moving, tuple(jax.random.split(moving.sample_key, sampler.num_steps))

    def finish(state, batch, moving, particles, sampler_state, acceptances, last):
        info = last._replace(acceptance_rate=jnp.mean(jnp.stack(acceptances), axis=0))
        return parts.finish(state, batch, moving, particles, sampler_state, info)

    serial = mesh is not None and mesh.size > 1

    def dispatch(function):
        if not serial:
            return function
        return lambda *args: jax.block_until_ready(function(*args))

    start_jit = dispatch(jit(vmap(start, in_axes=(0, 0, None))))
    move_jit = dispatch(jit(vmap(sampler.transition)))
    finish_jit = dispatch(jit(vmap(finish), donate_argnums=0,
                              out_shardings=None if state_sharding is None else
                              (state_sharding, NamedSharding(mesh, P()))))

    def train_loop(state, data):
        lead = 1 if members else 0
        num = jax.tree.leaves(data)[0].shape[lead] if streamed else steps_per_call
        metrics = []
        for t in range(num):
            batch, moving, keys = start_jit(state, data, np.int32(t))
            particles, sampler_state, acceptances, info = (moving.particles,
                                                           moving.sampler_state, [], None)
            for k in range(sampler.num_steps):
                particles, sampler_state, info = move_jit(keys[k], state.params,
                                                          particles, sampler_state,
                                                          state.hparams)
                acceptances.append(info.acceptance_rate)
            state, step_metrics = finish_jit(state, batch, moving, particles, sampler_state,
                                             tuple(acceptances), info)
            metrics.append(step_metrics)
        return state, jax.tree.map(lambda *m: jnp.stack(m, axis=lead), *metrics)

    return train_loop


# ----------------------------------------------------------------------------- state

def with_hyperparams(state: TrainState, **values) -> TrainState:
    """A state with some swept hyperparameters replaced (sampler ones or learning rates).

    Each new value keeps the dtype and the device placement of the one it replaces,
    so the jitted train loop sees the same input types and does not recompile.
    """
    hparams = dict(state.hparams)
    injected = injected_hyperparams(state.opt_state)

    def like(old, value):
        old = jnp.asarray(old)
        new = jnp.asarray(value, old.dtype)
        return jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else new

    optimizer_values = {}
    for name, value in values.items():
        if name in hparams:
            hparams[name] = like(hparams[name], value)
        elif name in injected:
            optimizer_values[name] = like(injected[name], value)
        else:
            raise KeyError(f"{name!r} is not a hyperparameter of this state; known: "
                           f"{sorted(hparams) + sorted(injected)}")
    return state._replace(hparams=hparams,
                          opt_state=set_hyperparams(state.opt_state, **optimizer_values))


def make_init(energy, optimizer, sampler: Sampler | None, restart: RestartPolicy | None,
              num_particles: int, hparams: dict, preprocess: Callable | None = None) -> Callable:
    """init(key, data) -> TrainState: θ from the energy's init on one item, particles all
    restarted (at items of `data`, or at noise), the sampler's initial state.

    hparams: initial float values of temperature and, with a sampler, restart_prob,
    restart_decay and particle_step_size.
    """
    energy = as_energy(energy)
    restart = restart or RestartPolicy()

    def init(key, data):
        param_key, particle_key = jax.random.split(key)
        if preprocess is not None:
            data = preprocess(jax.random.fold_in(key, 2), data)
        params = energy.init(param_key, jax.tree.map(lambda leaf: leaf[0], data))
        particles, sampler_state = None, ()
        if sampler is not None:
            empty = jax.tree.map(lambda leaf: jnp.zeros((num_particles, *leaf.shape[1:]),
                                                        leaf.dtype), data)
            particles, _ = restart_particles(particle_key, empty, data, 1.0, 0, restart)
            sampler_state = sampler.init(jax.random.fold_in(key, 1), params, particles)
        return TrainState(params=params, opt_state=optimizer.init(params), particles=particles,
                          sampler_state=sampler_state, step=jnp.zeros((), jnp.int32), key=key,
                          hparams={k: jnp.float32(v) for k, v in hparams.items()})

    return init


# ----------------------------------------------------------------------------- devices

def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh ('data',) over the first `num_devices` devices of all processes, Auto axes."""
    devices = jax.devices()[:num_devices]
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def state_shardings(abstract_state: TrainState, mesh, sampler: Sampler | None,
                    member_axis: bool = False) -> TrainState:
    """Replicated everything; particles, and the sampler-state leaves that have a particle
    axis, sharded along it (axis 1 when the state is stacked over grid members)."""
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P(None, "data") if member_axis else P("data"))
    shardings = jax.tree.map(lambda _: replicated, abstract_state)
    sampler_shardings = shardings.sampler_state
    if sampler is not None and sampler.particle_axes is not None:
        sampler_shardings = jax.tree.map(lambda flag: sharded if flag else replicated,
                                         sampler.particle_axes(abstract_state.sampler_state))
    return shardings._replace(
        particles=jax.tree.map(lambda _: sharded, abstract_state.particles),
        sampler_state=sampler_shardings)


def leading_axis_sharding(num_rows: int, mesh, axis: int = 0) -> NamedSharding:
    """Axis `axis` sharded over 'data' when its size divides the device count, else replicated."""
    spec = (None,) * axis + ("data",)
    return NamedSharding(mesh, P(*spec) if num_rows % mesh.size == 0 else P())


def _global_array(host_tree, mesh, axis: int, process_local: bool):
    """Host pytree -> global jax.Arrays sharded on `axis` (replicated when indivisible).

    process_local: each process holds only its rows of `axis` (its share of a streamed
    chunk); otherwise every process holds the whole array.
    """

    def place(leaf):
        leaf = np.asarray(leaf)
        if process_local:
            global_shape = list(leaf.shape)
            global_shape[axis] *= jax.process_count()
            sharding = leading_axis_sharding(global_shape[axis], mesh, axis)
            return jax.make_array_from_process_local_data(sharding, leaf, tuple(global_shape))
        sharding = leading_axis_sharding(leaf.shape[axis], mesh, axis)
        return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree.map(place, host_tree)


def make_trainer(energy, objective, optimizer: optax.GradientTransformation, *,
                 data, sampler: Sampler | None = None, restart: RestartPolicy | None = None,
                 num_particles: int = 0, particle_step_size: float = 0.01,
                 temperature: float = 1.0, streamed: bool = False, batch_size: int = 0,
                 preprocess: Callable | None = None, steps_per_call: int = 100,
                 mesh: jax.sharding.Mesh | None = None, members: int | None = None,
                 gradient_scale: Callable | None = None,
                 particles_per_step: int | None = None,
                 sampler_loop: str = "scan") -> Trainer:
    """Build the jitted, sharded init and train loop from objects.

    data: a pytree of arrays or ShapeDtypeStructs with the structure, trailing shape and
      stored dtype of the data: the resident set (n, ...), or one streamed batch (B, ...).
    num_particles: N (with a sampler; a multiple of the device count).
    particle_step_size, temperature: initial h and T (state.hparams; the restart
      probability comes from `restart.prob`).
    streamed, batch_size, preprocess, steps_per_call: see `make_train_loop`.
    members: M for a grid of runs as one program: init and the loop are vmapped, so the
      state, the keys, the data (M, n, ...) or chunks (M, S, B, ...) and the metrics
      (M, S) carry a leading member axis; `with_hyperparams` then takes (M,) values.
      Particles stay sharded over devices, on their own (second) axis.
    gradient_scale: see `make_train_step` (e.g. `ebmdual.optim.restart_period_scaling`).
    particles_per_step: B, the particles drawn from the N-particle replay buffer and moved
      each step (a multiple of the device count, at most N); None: all N move.
    sampler_loop: 'scan' (the whole step, the sampler's K transitions included, in one
      compiled lax.scan; for GPU and TPU) or 'host' (K jitted transitions dispatched from
      Python, `make_host_train_loop`; faster for convolutional energies on XLA CPU).
    """
    mesh = mesh or make_mesh()
    if sampler_loop not in SAMPLER_LOOPS:
        raise ValueError(f"sampler_loop={sampler_loop!r}: expected one of {SAMPLER_LOOPS}")
    if particles_per_step is not None and sampler is not None and not (
            0 < particles_per_step <= num_particles and particles_per_step % mesh.size == 0):
        raise ValueError(f"particles_per_step={particles_per_step} must be a positive multiple "
                         f"of the device count {mesh.size}, at most num_particles="
                         f"{num_particles}")
    energy = as_energy(energy)
    if sampler is not None and (num_particles < 1 or num_particles % mesh.size):
        raise ValueError(f"num_particles={num_particles} must be a positive multiple of the "
                         f"device count {mesh.size}")
    if sampler is not None and restart is not None and restart.antithetic and num_particles % 2:
        raise ValueError(f"num_particles={num_particles} must be even for antithetic pairs")
    restart = restart or RestartPolicy()
    hparams = dict(temperature=temperature)
    if sampler is not None:
        hparams.update(restart_prob=restart.prob, restart_decay=restart.decay,
                       particle_step_size=particle_step_size)
    parts = make_step_parts(energy.energy_fn, objective, optimizer, sampler, restart,
                            gradient_scale, particles_per_step)
    train_step = compose_train_step(parts, sampler)
    init = make_init(energy, optimizer, sampler, restart, num_particles, hparams, preprocess)

    example = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), data)
    num_rows = leading_size(example)
    loop = make_train_loop(train_step, steps_per_call, streamed=streamed, batch_size=batch_size,
                           preprocess=preprocess)
    lead = 1 if members else 0  # axes before the example axis: the member axis of a grid
    key_example = jax.random.key(0)
    if members:
        init, loop = jax.vmap(init), jax.vmap(loop)
        key_example = jax.random.split(key_example, members)
        example = jax.tree.map(lambda a: jax.ShapeDtypeStruct((members, *a.shape), a.dtype),
                               example)
    abstract_state = jax.eval_shape(init, key_example, example)
    shardings = state_shardings(abstract_state, mesh, sampler, member_axis=bool(members))
    replicated = NamedSharding(mesh, P())
    batch_sh = jax.tree.map(lambda _: leading_axis_sharding(num_rows, mesh, lead), example)
    loop_sh = (jax.tree.map(lambda _: leading_axis_sharding(num_rows, mesh, lead + 1), example)
               if streamed else batch_sh)
    jitted_init = jit(lambda key_data, batch: init(jax.random.wrap_key_data(key_data), batch),
                      in_shardings=(replicated, batch_sh), out_shardings=shardings)

    def init_from_key(key, batch):
        # Raw key data is a host value every process can pass to a multi-process jit.
        return jitted_init(np.asarray(jax.random.key_data(key)), batch)

    if sampler_loop == "host" and sampler is not None:
        train_loop = make_host_train_loop(
            parts, sampler, steps_per_call, streamed=streamed, batch_size=batch_size,
            preprocess=preprocess, members=members, mesh=mesh, state_sharding=shardings)
    else:
        train_loop = jit(loop, in_shardings=(shardings, loop_sh),
                         out_shardings=(shardings, replicated), donate_argnums=0)

    return Trainer(
        init=init_from_key,
        train_step=train_step,
        train_loop=train_loop,
        put=lambda host: _global_array(host, mesh, lead + streamed, process_local=streamed),
        put_batch=lambda host: _global_array(host, mesh, lead, process_local=streamed),
        energy_fn=energy.energy_fn,
        mesh=mesh,
        abstract_state=jax.tree.map(
            lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
            abstract_state, shardings),
        particle_weights=_particle_weights(sampler, num_particles, particles_per_step),
    )


def _particle_weights(sampler: Sampler | None, num_particles: int,
                      particles_per_step: int | None) -> Callable | None:
    """Trainer.particle_weights: the sampler's weights, when they are current for every
    particle; None otherwise."""
    buffered = particles_per_step is not None and particles_per_step < num_particles
    if sampler is None or sampler.weights is None or buffered:
        return None
    return lambda sampler_state: np.asarray(sampler.weights(sampler_state))

