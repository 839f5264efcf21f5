"""The replay buffer (particles_per_step B < N), the host sampler loop, and the ULA options
for images (clip, grad_clamp). The host loop must give the numbers of the scanned loop:
the same keys reach the same transitions, so they are compared exactly (float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ebmdual import objectives, samplers, train
from ebmdual.energies import MLPEnergy, as_energy
from ebmdual.jarzynski import jarzynski

DATA = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)


def make(sampler_name="ula", particles_per_step=None, sampler_loop="scan", num_particles=64,
         restart_prob=0.1, members=None, mesh=None):
    energy = as_energy(MLPEnergy((16,), base_std=2.0))
    if sampler_name == "ula":
        sampler = samplers.ula(energy.energy_fn, 3)
    elif sampler_name == "mala":
        sampler = samplers.mala(energy.energy_fn, 3, target_acceptance=0.6)
    else:
        sampler = jarzynski(energy.energy_fn, 2, ess_threshold=0.5)
    return train.make_trainer(
        energy, objectives.maximum_likelihood(energy.energy_fn), optax.adam(1e-2), data=DATA,
        sampler=sampler, restart=train.RestartPolicy(prob=restart_prob),
        num_particles=num_particles, steps_per_call=4, batch_size=32,
        particles_per_step=particles_per_step, sampler_loop=sampler_loop, members=members,
        mesh=mesh or train.make_mesh(1))


def run_calls(trainer, calls=2, key=0):
    data = trainer.put(DATA)
    state = trainer.init(jax.random.key(key), data)
    metrics = []
    for _ in range(calls):
        state, m = trainer.train_loop(state, data)
        metrics.append(jax.device_get(m))
    return state, jax.tree.map(lambda *m: np.concatenate(m), *metrics)


@pytest.mark.parametrize("sampler_name", ["ula", "mala"])
@pytest.mark.parametrize("particles_per_step", [None, 16])
def test_host_loop_gives_the_numbers_of_the_scan(sampler_name, particles_per_step):
    scan_state, scan_metrics = run_calls(make(sampler_name, particles_per_step, "scan"))
    host_state, host_metrics = run_calls(make(sampler_name, particles_per_step, "host"))
    np.testing.assert_array_equal(np.asarray(scan_state.particles),
                                  np.asarray(host_state.particles))
    for a, b in zip(jax.tree.leaves(scan_state.params), jax.tree.leaves(host_state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert scan_metrics.keys() == host_metrics.keys()
    for name in scan_metrics:
        np.testing.assert_array_equal(scan_metrics[name], host_metrics[name], err_msg=name)
    assert int(host_state.step) == 8


def test_host_loop_of_a_grid_matches_its_scan():
    def grid(loop):
        trainer = make("ula", 16, loop, members=2)
        data = trainer.put(np.stack([DATA, DATA]))
        state = trainer.init(jax.random.split(jax.random.key(3), 2), data)
        state, metrics = trainer.train_loop(state, data)
        return np.asarray(state.particles), jax.device_get(metrics)

    (scan_particles, scan_metrics), (host_particles, host_metrics) = grid("scan"), grid("host")
    np.testing.assert_array_equal(scan_particles, host_particles)
    assert host_metrics["loss"].shape == (2, 4)
    np.testing.assert_array_equal(scan_metrics["loss"], host_metrics["loss"])


def test_buffer_moves_only_the_drawn_particles():
    """With restart_prob = 0 and B = 16 of N = 64, one step changes exactly 16 rows and
    leaves the other 48 bit for bit; the objective and the restart see B particles."""
    trainer = make("ula", 16, restart_prob=0.0)
    data = trainer.put(DATA)
    state = trainer.init(jax.random.key(1), data)
    before = np.asarray(state.particles)
    state, metrics = jax.jit(trainer.train_step)(state, data[:32], jax.random.key(2))
    moved = np.any(np.asarray(state.particles) != before, axis=1)
    assert moved.sum() == 16
    assert float(metrics["restart_fraction"]) == 0.0


def test_buffer_of_all_particles_is_no_buffer():
    full, _ = run_calls(make("ula", 64))
    none, _ = run_calls(make("ula", None))
    np.testing.assert_array_equal(np.asarray(full.particles), np.asarray(none.particles))


def test_buffer_restarts_a_binomial_fraction_of_the_drawn_particles():
    """restart_prob 0.5 on B = 32 drawn particles over 8 steps: 256 Bernoulli(0.5) draws,
    SE of the mean fraction √(0.25/256) = 0.031; tolerance 4 SE."""
    _, metrics = run_calls(make("ula", 32, restart_prob=0.5, num_particles=128))
    assert abs(metrics["restart_fraction"].mean() - 0.5) <= 4 * np.sqrt(0.25 / 256)


def test_buffer_carries_per_particle_sampler_state():
    """Jarzynski walkers in a buffer: their log-weights (a particle-axis leaf of the sampler
    state) are gathered and written back with them; rows not drawn keep their weights."""
    trainer = make("jarzynski", 16, restart_prob=0.0)
    data = trainer.put(DATA)
    state = trainer.init(jax.random.key(1), data)
    state, _ = jax.jit(trainer.train_step)(state, data[:32], jax.random.key(2))
    before_weights = np.asarray(state.sampler_state["log_weight"])
    before = np.asarray(state.particles)
    state, _ = jax.jit(trainer.train_step)(state, data[:32], jax.random.key(5))
    moved = np.any(np.asarray(state.particles) != before, axis=1)
    weights = np.asarray(state.sampler_state["log_weight"])
    assert moved.sum() == 16
    np.testing.assert_array_equal(weights[~moved], before_weights[~moved])
    assert np.all(np.isfinite(weights))


def test_bad_buffer_sizes_and_loops_are_refused():
    with pytest.raises(ValueError, match="particles_per_step=65"):
        make("ula", 65)
    with pytest.raises(ValueError, match="sampler_loop='wrong'"):
        make("ula", None, "wrong")
    with pytest.raises(ValueError, match="one-transition"):
        make("jarzynski", None, "host")


def test_ula_clip_keeps_particles_in_range_and_grad_clamp_bounds_the_drift(key):
    """E = 1000·Σx: the drift is −h·1000 per coordinate, clamped to −h·c; without noise
    (T → 0) one step moves x by exactly −h·min(1000, c); clip holds x in [0, 1]."""
    def energy_fn(params, x):
        return 1000.0 * jnp.sum(x)

    x = jnp.full((5, 3), 0.5)
    hp = {"particle_step_size": jnp.float32(1e-3), "temperature": jnp.float32(1e-12)}
    clamped = samplers.ula(energy_fn, 1, grad_clamp=10.0)
    moved, _, _ = clamped.step(key, None, x, (), hp)
    np.testing.assert_allclose(np.asarray(moved), 0.5 - 1e-3 * 10.0, atol=1e-5)
    clipped = samplers.ula(energy_fn, 1000, clip=(0.0, 1.0))
    moved, _, _ = clipped.step(key, None, x, (), hp)
    np.testing.assert_allclose(np.asarray(moved), 0.0)
    with pytest.raises(ValueError, match="not both"):
        samplers.ula(energy_fn, 1, clip=(0, 1), project=lambda y: y)
