"""The composable core as a third-party JAX user meets it: no config, objects in.

* a trainer from a flax module of one's own, a plain `optax.adam`, the MALA of the
  sampler protocol, and 2-D data;
* particles of any shape: (N, 8, 8, 1) images and {'x', 'y'} pytrees through the
  restart, ULA, MALA, the ML loss and a checkpoint round trip;
* streamed and resident data: the same batches give the same run, and a resumed
  streamed run is bitwise equal to a straight one;
* objectives without particles (sm, ssm, dsm, ksd, sphere sm) inside the train step,
  which then skips the restart and the sampler;
* HMC inside training, and sampler state (adaptive MALA) carried in the train state.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ebmdual import losses, objectives, samplers, train
from ebmdual.checkpoint import Checkpointer
from ebmdual.data import stream
from ebmdual.energies import project_to_sphere


def host(leaf):
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def tree_equal(a, b):
    """Same structure and bitwise-equal leaves (typed keys compared by their data)."""
    return all(np.array_equal(host(x), host(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ----------------------------------------------------------------------------- third party

class RingEnergy(nn.Module):
    """A user's own energy: a swish MLP R^2 -> R."""

    @nn.compact
    def __call__(self, x):
        h = nn.swish(nn.Dense(32)(x))
        h = nn.swish(nn.Dense(32)(h))
        return nn.Dense(1)(h)[0]


def ring_data(num=512, radius=3.0, seed=0):
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, num)
    r = radius + 0.1 * rng.standard_normal(num)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], 1).astype(np.float32)


def test_third_party_trainer_without_config_learns_the_ring():
    """Own module, optax.adam(1e-2) (not injected), MALA, particles started at N(0, I)
    (mean radius ≈ 1.25) and never restarted: after 300 steps of persistent-chain
    maximum likelihood the particles' mean radius is the data's (3.0) within 0.3, a
    model-quality bound (measured ≈ 3.1), far from the start."""
    data = ring_data()
    module = RingEnergy()
    trainer = train.make_trainer(
        module, objectives.maximum_likelihood(module.apply), optax.adam(1e-2), data=data,
        sampler=samplers.mala(module.apply, num_steps=5),
        restart=train.RestartPolicy(prob=0.0, target="noise"), num_particles=256,
        particle_step_size=0.05, steps_per_call=100)
    placed = trainer.put(data)
    state = trainer.init(jax.random.key(0), placed)
    start_radius = np.linalg.norm(np.asarray(state.particles), axis=1).mean()
    for _ in range(3):
        state, metrics = trainer.train_loop(state, placed)
    radius = np.linalg.norm(np.asarray(state.particles), axis=1).mean()
    data_radius = np.linalg.norm(data, axis=1).mean()
    assert abs(start_radius - data_radius) > 1.5
    assert abs(radius - data_radius) < 0.3, (start_radius, radius)
    assert 0.0 < float(np.mean(metrics["acceptance_rate"])) < 1.0
    assert not any(k.endswith("learning_rate") for k in metrics)  # plain adam: nothing injected


def test_energy_as_an_init_apply_pair():
    """Energies may be any (init, energy_fn) pair, not only a flax module."""

    def init(key, example):
        return {"mean": jnp.zeros_like(example)}

    def energy_fn(params, x):
        return 0.5 * jnp.sum((x - params["mean"]) ** 2)

    data = ring_data(64)
    trainer = train.make_trainer((init, energy_fn), objectives.maximum_likelihood(energy_fn),
                                 optax.sgd(0.1), data=data, sampler=samplers.ula(energy_fn),
                                 restart=train.RestartPolicy(prob=0.5), num_particles=64,
                                 steps_per_call=5)
    placed = trainer.put(data)
    state, metrics = trainer.train_loop(trainer.init(jax.random.key(0), placed), placed)
    assert state.params["mean"].shape == (2,)
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))


def test_bad_objects_are_refused_with_one_line():
    with pytest.raises(TypeError, match="flax linen Module or an \\(init, energy_fn\\) pair"):
        train.make_trainer("mlp", None, optax.sgd(0.1), data=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="RestartPolicy.prob"):
        train.RestartPolicy(prob=1.5)
    with pytest.raises(ValueError, match="RestartPolicy.schedule"):
        train.RestartPolicy(schedule="sometimes")
    module = RingEnergy()
    with pytest.raises(ValueError, match="num_particles=6 must be a positive multiple"):
        train.make_trainer(module, objectives.maximum_likelihood(module.apply), optax.sgd(0.1),
                           data=np.zeros((4, 2), np.float32), sampler=samplers.ula(module.apply),
                           num_particles=6, mesh=train.make_mesh(4))


# ----------------------------------------------------------------------------- shapes

NUM_CLASSES = 3


def image_energy(params, x):
    """E(x) = ½‖x − μ‖² for one (8, 8, 1) image."""
    return 0.5 * jnp.sum((x - params["mean"]) ** 2)


def labelled_energy(params, item):
    """Class-conditional E(x, y) = ½‖x − μ_y‖² for item {'x': (8, 8, 1), 'y': int}."""
    return 0.5 * jnp.sum((item["x"] - params["means"][item["y"]]) ** 2)


def image_batch(num, seed):
    return jax.random.normal(jax.random.key(seed), (num, 8, 8, 1))


def labelled_batch(num, seed):
    x = image_batch(num, seed)
    y = jax.random.randint(jax.random.key(seed + 1), (num,), 0, NUM_CLASSES)
    return {"x": x, "y": y}


SHAPE_CASES = {
    "image": (image_energy, {"mean": jnp.full((8, 8, 1), 0.5)}, image_batch),
    "labelled": (labelled_energy,
                 {"means": jnp.arange(NUM_CLASSES, dtype=jnp.float32)[:, None, None, None]
                  * jnp.ones((NUM_CLASSES, 8, 8, 1))}, labelled_batch),
}


def items_of(tree, index):
    return jax.tree.map(lambda leaf: np.asarray(leaf)[index], tree)


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
def test_restart_works_leaf_by_leaf(case, key):
    """Restarted particles are whole items of the batch (image and label together);
    the others are untouched. Antithetic pairs share their item."""
    _, _, make = SHAPE_CASES[case]
    particles, batch = make(16, 0), make(5, 10)
    policy = train.RestartPolicy(antithetic=True)
    out, mask = train.restart_particles(key, particles, batch, 0.5, 0, policy)
    first = jax.tree.leaves(out)[0]
    moved = np.any(np.asarray(first).reshape(16, -1) != np.asarray(
        jax.tree.leaves(particles)[0]).reshape(16, -1), axis=1)
    assert 0 < moved.sum() < 16
    np.testing.assert_array_equal(np.asarray(mask), moved)
    np.testing.assert_array_equal(moved[:8], moved[8:])
    batch_items = [jax.tree.map(np.asarray, items_of(batch, i)) for i in range(5)]
    for j in np.flatnonzero(moved):
        item = items_of(out, j)
        assert any(tree_equal(item, b) for b in batch_items), j
    for j in np.flatnonzero(~moved):
        assert tree_equal(items_of(out, j), items_of(particles, j))


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
@pytest.mark.parametrize("name", ["ula", "mala"])
def test_samplers_move_floating_leaves_and_carry_labels(case, name, key):
    """ULA and MALA on image / labelled particles: shapes kept, images moved, labels
    unchanged; one ULA step is exactly x − h∇E + √(2hT)ξ with ∇E = x − μ_y."""
    energy_fn, params, make = SHAPE_CASES[case]
    sampler = (samplers.ula(energy_fn) if name == "ula"
               else samplers.mala(energy_fn, num_steps=3))
    particles = make(16, 3)
    hparams = {"particle_step_size": jnp.float32(0.1), "temperature": jnp.float32(1.0)}
    state = sampler.init(key, params, particles)
    moved, _, info = jax.jit(sampler.step)(key, params, particles, state, hparams)
    assert jax.tree.map(jnp.shape, moved) == jax.tree.map(jnp.shape, particles)
    if case == "labelled":
        np.testing.assert_array_equal(np.asarray(moved["y"]), np.asarray(particles["y"]))
        x, x0, mean = moved["x"], particles["x"], params["means"][particles["y"]]
    else:
        x, x0, mean = moved, particles, params["mean"]
    assert not np.allclose(np.asarray(x), np.asarray(x0))
    if name == "ula":
        noise = samplers.gaussian_noise(jax.random.split(key, 1)[0], particles, False)
        noise = noise["x"] if case == "labelled" else noise
        expected = x0 - 0.1 * (x0 - mean) + np.sqrt(0.2) * noise
        np.testing.assert_allclose(np.asarray(x), np.asarray(expected), atol=1e-5)
    else:
        assert 0.0 < float(info.acceptance_rate) <= 1.0


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
def test_ml_loss_and_checkpoint_round_trip_for_shaped_particles(case, tmp_path):
    """A few train steps on image / labelled particles, then a checkpoint round trip that
    restores the state exactly; the ML gradient is that of mean E(data) − mean E(X)."""
    energy_fn, params, make = SHAPE_CASES[case]
    data = jax.tree.map(np.asarray, make(32, 5))

    def init(key, example):
        return params

    trainer = train.make_trainer((init, energy_fn), objectives.maximum_likelihood(energy_fn),
                                 optax.inject_hyperparams(optax.sgd)(learning_rate=0.01),
                                 data=data, sampler=samplers.ula(energy_fn),
                                 restart=train.RestartPolicy(prob=0.2), num_particles=16,
                                 particle_step_size=0.05, steps_per_call=3, mesh=train.make_mesh(4))
    placed = trainer.put(data)
    state = trainer.init(jax.random.key(0), placed)
    state, metrics = trainer.train_loop(state, placed)
    assert np.all(np.asarray(metrics["finite"]) == 1)
    grads = jax.grad(losses.maximum_likelihood_loss, argnums=1)(energy_fn, state.params, data,
                                                                state.particles)
    x = data["x"] if case == "labelled" else data
    px = state.particles["x"] if case == "labelled" else state.particles
    if case == "image":  # ∂/∂μ of mean ½‖x − μ‖² − mean ½‖X − μ‖² = mean X − mean x
        np.testing.assert_allclose(np.asarray(grads["mean"]),
                                   np.asarray(px).mean(0) - x.mean(0), atol=1e-5)
    checkpoints = Checkpointer(tmp_path / "ckpt")
    checkpoints.save(3, state, {"note": case})
    restored = checkpoints.restore(3, trainer.abstract_state)
    checkpoints.close()
    assert tree_equal(restored.state.particles, state.particles)
    assert tree_equal(restored.state.params, state.params)
    assert restored.state.particles is not None
    leaf = jax.tree.leaves(restored.state.particles)[0]
    assert leaf.sharding.spec == jax.sharding.PartitionSpec("data")


# ----------------------------------------------------------------------------- data paths

def gaussian_energy(params, x):
    return 0.5 * jnp.sum((x - params["mean"]) ** 2)


def gaussian_trainer(data, streamed, steps_per_call, batch_size=0, preprocess=None):
    def init(key, example):
        return {"mean": jnp.zeros(example.shape, jnp.float32)}

    return train.make_trainer(
        (init, gaussian_energy), objectives.maximum_likelihood(gaussian_energy),
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.05), data=data,
        sampler=samplers.ula(gaussian_energy), restart=train.RestartPolicy(prob=0.1),
        num_particles=32, particle_step_size=0.05, streamed=streamed, batch_size=batch_size,
        preprocess=preprocess, steps_per_call=steps_per_call, mesh=train.make_mesh(4))


def test_streamed_and_resident_data_give_the_same_run():
    """Full-batch resident data, and the same batch streamed S times per chunk: equal."""
    data = np.asarray(jax.random.normal(jax.random.key(0), (16, 3)) + 1.0)
    resident = gaussian_trainer(data, streamed=False, steps_per_call=4)
    streamed = gaussian_trainer(data, streamed=True, steps_per_call=4)
    placed = resident.put(data)
    a = resident.init(jax.random.key(1), placed)
    b = streamed.init(jax.random.key(1), streamed.put_batch(data))
    assert tree_equal(a, b)
    chunk = streamed.put(np.stack([data] * 4))
    for _ in range(3):
        a, metrics_a = resident.train_loop(a, placed)
        b, metrics_b = streamed.train_loop(b, chunk)
    assert tree_equal(a, b) and tree_equal(metrics_a, metrics_b)


def uint8_to_unit(key, batch):
    del key
    return batch.astype(jnp.float32) / 255.0


def test_resumed_streamed_run_is_bitwise_equal_to_a_straight_one(tmp_path):
    """uint8 data streamed in chunks of S = 3 batches of B = 8 (batch of step t chosen by
    (seed, t)), cast on the device. 4 chunks straight, against 2 chunks, a checkpoint
    round trip, and 2 more chunks read from step 6 on: the same final state, bit for bit.
    The device only ever sees chunks of S·B items in their stored dtype."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(40, 5), dtype=np.uint8)
    source = stream.ArraySource(data)
    trainer = gaussian_trainer(data[:8], streamed=True, steps_per_call=3, batch_size=8,
                               preprocess=uint8_to_unit)
    first = trainer.put_batch(stream.read_chunk(source, 7, 0, 1, 8)[0])
    chunk0 = trainer.put(stream.read_chunk(source, 7, 0, 3, 8))
    assert chunk0.dtype == jnp.uint8 and chunk0.shape == (3, 8, 5)
    assert chunk0.sharding.spec == jax.sharding.PartitionSpec(None, "data")

    def run(state, first_step, num_chunks):
        for k in range(num_chunks):
            chunk = stream.read_chunk(source, 7, first_step + 3 * k, 3, 8)
            state, _ = trainer.train_loop(state, trainer.put(chunk))
        return state

    straight = run(trainer.init(jax.random.key(2), first), 0, 4)
    half = run(trainer.init(jax.random.key(2), first), 0, 2)
    checkpoints = Checkpointer(tmp_path / "ckpt")
    checkpoints.save(6, half, {})
    resumed = run(checkpoints.restore(6, trainer.abstract_state).state, 6, 2)
    checkpoints.close()
    assert int(straight.step) == int(resumed.step) == 12
    assert tree_equal(straight, resumed)
    assert float(jnp.max(straight.particles)) < 5.0  # preprocessed to [0, 1] scale, not 0..255


def test_batch_indices_visit_every_item_once_per_epoch():
    n, batch = 10, 4
    seen = np.concatenate([stream.batch_indices(3, t, n, batch) for t in range(5)])  # 20 items
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    np.testing.assert_array_equal(stream.batch_indices(3, 2, n, batch),
                                  stream.batch_indices(3, 2, n, batch))
    assert not np.array_equal(stream.batch_indices(3, 0, n, batch),
                              stream.batch_indices(4, 0, n, batch))
    share = stream.read_chunk(stream.ArraySource(np.arange(n)), 3, 1, 2, batch, 1, 2)
    whole = stream.read_chunk(stream.ArraySource(np.arange(n)), 3, 1, 2, batch)
    np.testing.assert_array_equal(share, whole[:, 2:])  # process 1 of 2 reads rows 2..3


def test_prefetcher_hands_on_errors_and_stops():
    def failing():
        yield 1
        raise OSError("disk gone")

    prefetch = stream.Prefetcher(failing())
    assert next(prefetch) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(prefetch)
    endless = stream.Prefetcher(iter(int, 1))
    assert next(endless) == 0
    endless.close()


# ----------------------------------------------------------------------------- objectives

def quadratic_mlp():
    class Quadratic(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.swish(nn.Dense(8)(x))
            return nn.Dense(1)(h)[0] + 0.5 * jnp.sum(x**2)

    return Quadratic()


OBJECTIVE_CASES = {
    "sm": (lambda e: objectives.score_matching(e),
           lambda e, p, b, k: losses.score_matching_loss(e, p, b)),
    "ssm": (lambda e: objectives.sliced_score_matching(e, 2),
            lambda e, p, b, k: losses.sliced_score_matching_loss(e, p, b, k, 2)),
    "dsm": (lambda e: objectives.denoising_score_matching(e, 0.3),
            lambda e, p, b, k: losses.denoising_score_matching_loss(e, p, b, k, 0.3)),
    "ksd": (lambda e: objectives.kernel_stein_discrepancy(e, "rbf", 1.5),
            lambda e, p, b, k: losses.kernel_stein_discrepancy(e, p, b, "rbf", 1.5)),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVE_CASES))
def test_particle_free_objectives_inside_the_train_step(name):
    """sgd(lr) on a score-matching objective: the step's update is −lr ∇θ of the loss
    function called directly with the step's loss key; no particles, no restart."""
    module = quadratic_mlp()
    build, direct = OBJECTIVE_CASES[name]
    data = np.asarray(jax.random.normal(jax.random.key(0), (24, 2)))
    trainer = train.make_trainer(module, build(module.apply), optax.sgd(0.1), data=data,
                                 steps_per_call=2, mesh=train.make_mesh(1))
    placed = trainer.put(data)
    state = trainer.init(jax.random.key(1), placed)
    assert state.particles is None and set(state.hparams) == {"temperature"}
    step_key = jax.random.key(5)
    new, metrics = jax.jit(trainer.train_step)(state, placed, step_key)
    loss_key = jax.random.split(step_key, 3)[2]
    loss, grads = jax.value_and_grad(lambda p: direct(module.apply, p, data, loss_key))(
        state.params)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
    for got, old, g in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params),
                           jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(old - 0.1 * g), atol=1e-6)
    assert "restart_fraction" not in metrics and "energy_gap" not in metrics
    loop_state, loop_metrics = trainer.train_loop(state, placed)
    assert np.all(np.asarray(loop_metrics["finite"]) == 1)


def test_sphere_score_matching_inside_the_train_step():
    """Sphere sm on the shallow energy: the step uses the Laplace–Beltrami loss."""
    from ebmdual.energies import ShallowEnergy

    module = ShallowEnergy(num_neurons=8, num_positive=4)
    data = np.asarray(project_to_sphere(jax.random.normal(jax.random.key(0), (32, 3))))
    trainer = train.make_trainer(module, objectives.score_matching(module.apply, "sphere"),
                                 optax.sgd(0.05), data=data, steps_per_call=2,
                                 mesh=train.make_mesh(1))
    placed = trainer.put(data)
    state = trainer.init(jax.random.key(1), placed)
    new, metrics = jax.jit(trainer.train_step)(state, placed, jax.random.key(2))
    loss, grads = jax.value_and_grad(
        lambda p: losses.sphere_score_matching_loss(module.apply, p, data))(state.params)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new.params["params"]["w"]),
                               np.asarray(state.params["params"]["w"]
                                          - 0.05 * grads["params"]["w"]), atol=1e-6)


def test_weighted_samplers_reach_a_weighted_objective():
    """A sampler handing weights (as flow-MCMC or Jarzynski walkers will): the ML loss is
    mean E(data) − Σ w_j E(X_j); an objective without `weights` is refused."""

    def weighted_ula(energy_fn):
        base = samplers.ula(energy_fn)

        def step(key, params, particles, state, hparams):
            particles, state, info = base.step(key, params, particles, state, hparams)
            weights = jax.nn.softmax(-jnp.arange(particles.shape[0], dtype=jnp.float32))
            return particles, state, info._replace(weights=weights)

        return samplers.Sampler(base.init, step)

    data = np.asarray(jax.random.normal(jax.random.key(0), (8, 2)))

    def init(key, example):
        return {"mean": jnp.ones(2)}

    for objective, ok in ((objectives.maximum_likelihood(gaussian_energy), True),
                          (lambda p, b, x, k: losses.maximum_likelihood_loss(
                              gaussian_energy, p, b, x), False)):
        trainer = train.make_trainer((init, gaussian_energy), objective, optax.sgd(0.1),
                                     data=data, sampler=weighted_ula(gaussian_energy),
                                     num_particles=8, steps_per_call=1, mesh=train.make_mesh(1))
        state = trainer.init(jax.random.key(1), trainer.put(data))
        if not ok:
            with pytest.raises(TypeError, match="weights"):
                trainer.train_step(state, data, jax.random.key(2))
            continue
        new, metrics = trainer.train_step(state, data, jax.random.key(2))
        weights = np.asarray(jax.nn.softmax(-jnp.arange(8, dtype=jnp.float32)))
        energies = 0.5 * np.sum((np.asarray(new.particles) - 1.0) ** 2, axis=1)
        data_energy = 0.5 * np.sum((data - 1.0) ** 2, axis=1).mean()
        np.testing.assert_allclose(float(metrics["loss"]), data_energy - weights @ energies,
                                   rtol=1e-5)
        np.testing.assert_allclose(float(metrics["energy_gap"]),
                                   weights @ energies - data_energy, rtol=1e-5)


# ----------------------------------------------------------------------------- samplers in training

def test_hmc_and_adaptive_mala_inside_training():
    """HMC trains (acceptance in (0, 1)); adaptive MALA carries its step scale in the train
    state (sampler_state), reports it, and the scale moves."""
    data = ring_data(64)
    module = RingEnergy()
    for sampler in (samplers.hmc(module.apply, num_steps=2, num_integration_steps=3),
                    samplers.mala(module.apply, num_steps=2, target_acceptance=0.9,
                                  adaptation_rate=0.2)):
        trainer = train.make_trainer(module, objectives.maximum_likelihood(module.apply),
                                     optax.adam(1e-3), data=data, sampler=sampler,
                                     restart=train.RestartPolicy(prob=0.1), num_particles=64,
                                     particle_step_size=0.3, steps_per_call=10,
                                     mesh=train.make_mesh(4))
        placed = trainer.put(data)
        state = trainer.init(jax.random.key(0), placed)
        state, metrics = trainer.train_loop(state, placed)
        assert 0.0 < float(np.mean(metrics["acceptance_rate"])) < 1.0
        if "adapted_step_size" in metrics:
            assert float(state.sampler_state["log_step_scale"]) != 0.0
            np.testing.assert_allclose(
                float(metrics["adapted_step_size"][-1]),
                0.3 * np.exp(float(state.sampler_state["log_step_scale"])), rtol=1e-5)
