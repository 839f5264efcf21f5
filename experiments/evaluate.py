"""Task metrics for a trained energy: the right estimator for each kind of data set.

`make_evaluator(config, dataset, energy_fn)` returns `evaluate(params, particles,
temperature) -> dict[str, float]`. The model is p_θ ∝ exp(−E_θ/T) with T the
sampler temperature, so every metric uses E_θ/T.

* teacher on S^2: KL(p*‖p_θ), test NLL (quadrature on a ϑ×φ grid) and the
  Fisher divergence to the teacher (on the eval.num_samples reference samples).
* teacher on S^{d−1}, d > 3: KL by importance sampling on the eval.num_samples exact
  teacher samples (`kl`, `kl_stderr`), the same KL with log Z_θ − log Z* from
  eval.num_uniform uniform points (`kl_uniform`, `kl_uniform_stderr`: an independent
  check, see docs/evaluation.md), and the Fisher divergence.
* 2-D data: test NLL by normalising exp(−E/T) on a grid (and the mass near the
  box edge, which must be negligible), per-mode mass for mixtures.
* mixtures in higher d: mode weights of the particles.
* every mixture: its true mode weights (target_mode_weight_k), constant references for
  the two above, and target_test_nll = mean −log p*(test), the floor of test_nll.
* MNIST (no likelihood yet: it needs AIS in d = 784): cheap checks on held-out images,
  see `mnist_metrics`.
"""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp

from ebmdual import evaluation


def temperature_scaled(energy_fn):
    """model((params, T), x) = E_θ(x)/T: the energy of the density the particles target.

    T rides with the parameters, so one function object serves every temperature
    and the jitted metrics compile once.
    """

    def model(params_and_temperature, x):
        params, temperature = params_and_temperature
        return energy_fn(params, x) / temperature

    return model


def unit_interval(images) -> np.ndarray:
    """Host images as float32 on the [0, 1] scale the energy sees: stored uint8 pixels are
    divided by 255 (as the trainer's MNIST preprocessing does); floats pass unchanged."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    return images.astype(np.float32)


UNIFORM_KEY = jax.random.key(20_210_710)  # the uniform points of kl_uniform, fixed across runs
MAX_TRAIN_IMAGES = 10_000  # training images whose energies the MNIST metrics average


def mean_difference(a, b) -> tuple[float, float]:
    """mean(a) − mean(b) and its standard error √(var a/n_a + var b/n_b) (independent
    samples, ddof = 1; 0 for a sample of one)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    var = sum(np.var(x, ddof=1) / len(x) for x in (a, b) if len(x) > 1)
    return float(a.mean() - b.mean()), float(np.sqrt(var))


def mnist_metrics(energies, test, particles, train=None) -> dict:
    """Cheap metrics for image data while no likelihood is available (all floats).

    energies(x) -> E_θ(x)/T for a (n, d) float32 batch. test / train: (n, d) images,
    uint8 or in [0, 1]. particles: (N, d) in [0, 1] space, or None (objective without a
    sampler). In nats (units of T), each with its standard error (`*_stderr`):

    * test_energy_gap = mean E/T(particles) − mean E/T(test): ≈ 0 when the chains sample
      the model and the model fits held-out data; ≫ 0 when the particles sit where the
      model puts little mass; ≪ 0 when they found low-energy regions away from the data.
    * train_test_energy_gap = mean E/T(test) − mean E/T(train) (the first
      MAX_TRAIN_IMAGES training images): > 0 when the model prefers its training images
      (overfitting).

    Pixel statistics over all pixels of all images: data_pixel_mean / _std (the test set)
    and particle_pixel_mean / _std; mean_image_rmse = RMS over pixels of (mean particle
    image − mean test image); particle_pixels_outside_unit = fraction of particle pixels
    outside [0, 1].
    """
    test = unit_interval(test)
    test_energy = np.asarray(energies(test))
    out = {"data_pixel_mean": float(test.mean()), "data_pixel_std": float(test.std())}
    if train is not None:
        train_energy = np.asarray(energies(unit_interval(train[:MAX_TRAIN_IMAGES])))
        out["train_test_energy_gap"], out["train_test_energy_gap_stderr"] = mean_difference(
            test_energy, train_energy)
    if particles is not None:
        x = np.asarray(particles, np.float32).reshape(len(particles), -1)
        out["test_energy_gap"], out["test_energy_gap_stderr"] = mean_difference(
            np.asarray(energies(x)), test_energy)
        out["particle_pixel_mean"], out["particle_pixel_std"] = float(x.mean()), float(x.std())
        out["mean_image_rmse"] = float(np.sqrt(np.mean((x.mean(0) - test.mean(0)) ** 2)))
        out["particle_pixels_outside_unit"] = float(np.mean((x < 0) | (x > 1)))
    return out


def make_evaluator(config, dataset, energy_fn):
    """evaluate(params, particles, temperature) -> {metric name: float}.

    particles: host array (N, d), or None when the objective trained without a sampler."""
    dim = dataset.train.shape[-1]
    grid = config.eval.grid_size
    model = temperature_scaled(energy_fn)
    scaled_energies = jax.jit(lambda params, x: evaluation.batched_energies(model, params, x))

    def evaluate(params, particles, temperature: float) -> dict:
        params = (params, temperature)
        out = {}
        if dataset.name == "mnist":
            out.update(mnist_metrics(lambda x: scaled_energies(params, jnp.asarray(x)),
                                     dataset.test, particles, dataset.train))
        elif dataset.manifold == "sphere":
            target, target_params = dataset.target_energy_fn, dataset.target_params
            reference = dataset.reference
            if dim == 3:
                out["kl"] = evaluation.kl_quadrature_s2(model, params, target, target_params, grid)
                out["test_nll"] = evaluation.nll_s2(model, params, dataset.test, grid).value
            else:
                kl = evaluation.kl_importance_sampling(model, params, target, target_params,
                                                       reference)
                out["kl"], out["kl_stderr"] = kl.value, kl.stderr
                kl = evaluation.kl_uniform_partition(model, params, target, target_params,
                                                     reference, UNIFORM_KEY,
                                                     config.eval.num_uniform)
                out["kl_uniform"], out["kl_uniform_stderr"] = kl.value, kl.stderr
            out["fisher_divergence"] = evaluation.fisher_divergence_sphere(
                model, params, target, target_params, reference).value
        elif dim == 2:
            box = dataset.box  # every 2-D data set carries the square holding its mass
            nll = evaluation.nll_2d(model, params, dataset.test, box, 2 * grid)
            out["test_nll"], out["edge_mass"] = nll.value, nll.edge_mass
            if dataset.mixture is not None:
                masses = evaluation.mode_mass_2d(model, params, dataset.mixture, box, 2 * grid)
                out.update({f"mode_mass_{k}": m for k, m in enumerate(np.asarray(masses))})
        if dataset.mixture is not None:
            # the floor of test_nll: the true density's NLL on the same test points
            out["target_test_nll"] = float(np.mean(np.asarray(
                -dataset.mixture.log_prob(jnp.asarray(dataset.test)))))
            weights = np.asarray(dataset.mixture.weights, np.float64)
            out.update({f"target_mode_weight_{k}": w
                        for k, w in enumerate(weights / weights.sum())})
            if dim == 2:  # the largest error of the learned mode weights
                out["mode_mass_max_error"] = float(np.max(np.abs(
                    np.asarray(masses, np.float64) - weights / weights.sum())))
        if dataset.mixture is not None and particles is not None:
            weights = evaluation.mode_weights_from_samples(particles, dataset.mixture)
            out.update({f"particle_mode_weight_{k}": w for k, w in enumerate(np.asarray(weights))})
        return {k: float(v) for k, v in out.items()}

    return evaluate
