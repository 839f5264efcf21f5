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
* every mixture: its true mode weights (target_mode_weight_k) and the training set's
  mode fractions (train_mode_weight_k: what maximum likelihood on n samples can reach;
  in 2-D mode_mass_max_error against the first, mode_mass_max_error_to_train against the
  second), constant references, and target_test_nll = mean −log p*(test), the floor of
  test_nll.
* images (MNIST, CelebA, ImageNet 32×32; `image_metrics`): test NLL in bits/dim by
  annealed importance sampling on the box data_range^D, the Fréchet distance of the
  particles to held-out images on a project-trained classifier's features beside its
  floor (real training images against the same held-out images), the particles' class
  histogram against the held-out labels', and the cheap energy checks of `image_energy_metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from ebmdual import classifier as image_classifier
from ebmdual import evaluation
from ebmdual.compiler import jit
from ebmdual.data import images as image_data


def temperature_scaled(energy_fn):
    """model((params, T), x) = E_θ(x)/T: the energy of the density the particles target.

    T rides with the parameters, so one function object serves every temperature
    and the jitted metrics compile once.
    """

    def model(params_and_temperature, x):
        params, temperature = params_and_temperature
        return energy_fn(params, x) / temperature

    return model


UNIFORM_KEY = jax.random.key(20_210_710)  # the uniform points of kl_uniform, fixed across runs
MAX_TRAIN_IMAGES = 10_000  # training images whose energies the MNIST metrics average


def mean_difference(a, b) -> tuple[float, float]:
    """mean(a) − mean(b) and its standard error √(var a/n_a + var b/n_b) (independent
    samples, ddof = 1; 0 for a sample of one)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    var = sum(np.var(x, ddof=1) / len(x) for x in (a, b) if len(x) > 1)
    return float(a.mean() - b.mean()), float(np.sqrt(var))


def image_energy_metrics(energies, test, particles, train=None, data_range=(0.0, 1.0)) -> dict:
    """Cheap checks of an image EBM beside its likelihood (all floats).

    energies(x) -> E_θ(x)/T for a float32 batch of images as the model sees them. test /
    train: (n, ...) images on the model's scale. particles: (N, ...) likewise, or None
    (objective without a sampler). In nats (units of T), each with its standard error
    (`*_stderr`):

    * test_energy_gap = mean E/T(particles) − mean E/T(test): ≈ 0 when the chains sample
      the model and the model fits held-out data; ≫ 0 when the particles sit where the
      model puts little mass; ≪ 0 when they found low-energy regions away from the data.
    * train_test_energy_gap = mean E/T(test) − mean E/T(train) (the first
      MAX_TRAIN_IMAGES training images): > 0 when the model prefers its training images
      (overfitting).

    Pixel statistics over all pixels of all images: data_pixel_mean / _std (the test set)
    and particle_pixel_mean / _std; mean_image_rmse = RMS over pixels of (mean particle
    image − mean test image); particle_pixels_outside_range = fraction of particle pixels
    outside data_range.
    """
    test = np.asarray(test, np.float32)
    test_energy = np.asarray(energies(test))
    out = {"data_pixel_mean": float(test.mean()), "data_pixel_std": float(test.std())}
    if train is not None:
        train_energy = np.asarray(energies(np.asarray(train[:MAX_TRAIN_IMAGES], np.float32)))
        out["train_test_energy_gap"], out["train_test_energy_gap_stderr"] = mean_difference(
            test_energy, train_energy)
    if particles is not None:
        x = np.asarray(particles, np.float32)
        out["test_energy_gap"], out["test_energy_gap_stderr"] = mean_difference(
            np.asarray(energies(x)), test_energy)
        out["particle_pixel_mean"], out["particle_pixel_std"] = float(x.mean()), float(x.std())
        out["mean_image_rmse"] = float(np.sqrt(np.mean((x.mean(0) - test.mean(0)) ** 2)))
        low, high = data_range
        out["particle_pixels_outside_range"] = float(np.mean((x < low) | (x > high)))
    return out


EVAL_KEY = jax.random.key(20_261_124)  # dequantisation of held-out images and AIS: fixed across evaluations
MAX_FRECHET_IMAGES = 2000  # particles (and real training images, for the floor) in the Fréchet distance
MAX_CLASSIFIER_IMAGES = 50_000  # training images read for the classifier (and the floor)


def held_out_images(config, dataset) -> np.ndarray:
    """The first eval.num_test_images held-out images, dequantised with EVAL_KEY and scaled
    to data.data_range as in training: (n, H, W, C) float32, the same at every evaluation."""
    images = dataset.test[:config.eval.num_test_images]
    preprocess = image_data.make_image_preprocess(tuple(config.data.data_range),
                                                  config.data.dequantize)
    return np.asarray(preprocess(jax.random.fold_in(EVAL_KEY, 1), jnp.asarray(images)))


def train_images(config, dataset, num: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The first `num` training images on the model's scale (bin centres, no noise) and
    their labels (None for unlabelled data)."""
    index = np.arange(min(num, len(dataset.train)))
    preprocess = image_data.make_image_preprocess(tuple(config.data.data_range), False)
    images = np.asarray(preprocess(EVAL_KEY, jnp.asarray(dataset.train[index])))
    return images, dataset.train.labels(index)


class ImageReference(NamedTuple):
    """What every evaluation of an image run compares with, prepared once per run.

    test: held-out images (`held_out_images`). train, train_labels: the first
    MAX_CLASSIFIER_IMAGES training images on the model's scale and their labels (None
    unlabelled). classifier: (params, info) of `image_classifier_for`, or None.
    """

    test: np.ndarray
    train: np.ndarray
    train_labels: np.ndarray | None
    classifier: Any


def image_reference(config, dataset) -> ImageReference:
    """The held-out and training images on the model's scale and the classifier (trained or
    loaded from the cache), once per run."""
    test = held_out_images(config, dataset)
    train, labels = train_images(config, dataset, MAX_CLASSIFIER_IMAGES)
    return ImageReference(test, train, labels,
                          image_classifier_for(config, dataset, train, labels, test))


def image_classifier_for(config, dataset, images, labels, test):
    """The classifier of the Fréchet distance and the class histogram, trained once on
    `images` (training images on the model's scale) and cached in eval.classifier_dir, with
    its accuracy on `test`; None for data without class labels (CelebA) or with
    eval.classifier_steps = 0."""
    if dataset.num_classes is None or config.eval.classifier_steps == 0:
        return None
    params, info = image_classifier.load_or_train_classifier(
        Path(config.eval.classifier_dir).expanduser(),
        f"{dataset.name}-{tuple(config.data.data_range)}", images, labels, dataset.num_classes,
        jax.random.key(0), num_steps=config.eval.classifier_steps, test_images=test,
        test_labels=dataset.test_labels[:len(test)])
    return params, info


def image_metrics(config, dataset, model, params, particles, reference: ImageReference) -> dict:
    """Metrics of an image EBM (all floats); model(params, x) = E_θ(x)/T for one image.

    * test_nll (nats, in x units on the box data_range^D) = mean E/T(test) + log Ẑ, with
      log Ẑ by AIS (`evaluation.ais_log_partition`, eval.ais_* settings, EVAL_KEY): biased
      low, see there; test_bits_per_dim = (test_nll + D ln(256/(high − low)))/(D ln 2),
      comparable to the dequantised-likelihood literature; *_stderr from the AIS repeats
      and the test energies; ais_ess_fraction, ais_pooled_gap = pooled − mean log Ẑ (large
      when the weights are uneven: the estimate is then unreliable).
    * frechet_distance: particles against held-out images on the classifier's penultimate
      features, frechet_floor: as many real training images against the same held-out
      images (the value of a perfect sampler, up to sampling noise). NOT comparable to
      Inception-based FID.
    * class_fraction_k (≤ 20 classes), class_tv_distance = ½ Σ_k |q_k − p_k| between the
      particles' predicted classes q and the held-out labels p, class_max_fraction.
    """
    low, high = config.data.data_range
    test = reference.test
    dim = int(np.prod(test.shape[1:]))
    e = config.eval
    ais = evaluation.ais_log_partition(
        model, params, EVAL_KEY, example=jnp.asarray(test[0]), num_chains=e.ais_chains,
        num_temperatures=e.ais_temperatures, num_repeats=e.ais_repeats,
        step_size=e.ais_step_size, box=(low, high))
    nll = evaluation.negative_log_likelihood(model, params, jnp.asarray(test), ais.log_partition,
                                             ais.stderr)
    bits = 1.0 / (dim * np.log(2.0))
    out = {"test_nll": nll.value, "test_nll_stderr": nll.stderr,
           "test_bits_per_dim": image_data.bits_per_dim(float(nll.value), dim, (low, high)),
           "test_bits_per_dim_stderr": float(nll.stderr) * bits,
           "ais_log_partition": ais.log_partition, "ais_log_partition_stderr": ais.stderr,
           "ais_ess_fraction": jnp.mean(ais.ess_fraction),
           "ais_acceptance": jnp.mean(ais.acceptance_rate),
           "ais_pooled_gap": ais.pooled_log_partition - ais.log_partition}
    if reference.classifier is not None and particles is not None:
        classifier, info = reference.classifier
        out["classifier_test_accuracy"] = info.get("test_accuracy", np.nan)
        num = min(len(particles), MAX_FRECHET_IMAGES, len(reference.train))
        real = reference.train[:num]
        sample = np.asarray(particles[:num], np.float32)
        out["frechet_distance"] = image_classifier.frechet_features_distance(
            classifier, sample, test)
        out["frechet_floor"] = image_classifier.frechet_features_distance(classifier, real, test)
        fractions = np.asarray(image_classifier.class_histogram(classifier, sample,
                                                                dataset.num_classes))
        labels = np.bincount(dataset.test_labels[:len(test)], minlength=dataset.num_classes)
        data_fractions = labels / labels.sum()
        out["class_tv_distance"] = 0.5 * float(np.abs(fractions - data_fractions).sum())
        out["class_max_fraction"] = float(fractions.max())
        if dataset.num_classes <= 20:
            out.update({f"class_fraction_{k}": f for k, f in enumerate(fractions)})
    return out


def make_evaluator(config, dataset, energy_fn):
    """evaluate(params, particles, temperature, particle_weights=None) -> {metric name: float}.

    particles: host array (N, d), or None when the objective trained without a sampler.
    particle_weights: (N,) normalised weights of a weighted sampler (`Trainer.particle_weights`),
    or None; with a mixture they add the weighted fractions weighted_particle_mode_weight_k."""
    dim = dataset.train.shape[-1]
    grid = config.eval.grid_size
    model = temperature_scaled(energy_fn)
    scaled_energies = jit(lambda params, x: evaluation.batched_energies(model, params, x))
    image_cache = []  # image runs: the ImageReference, prepared at the first evaluation
    train_fractions = (evaluation.mode_weights_from_samples(dataset.train, dataset.mixture)
                       if dataset.mixture is not None else None)

    def evaluate(params, particles, temperature: float, particle_weights=None) -> dict:
        params = (params, temperature)
        out = {}
        if dataset.manifold == "image":
            if not image_cache:
                image_cache.append(image_reference(config, dataset))
            images = image_cache[0]
            out.update(image_metrics(config, dataset, model, params, particles, images))
            out.update(image_energy_metrics(lambda x: scaled_energies(params, jnp.asarray(x)),
                                            images.test, particles,
                                            images.train[:MAX_TRAIN_IMAGES],
                                            tuple(config.data.data_range)))
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
            # the training set's own mode fractions: what maximum likelihood on it can reach
            train_weights = np.asarray(train_fractions, np.float64)
            out.update({f"train_mode_weight_{k}": w for k, w in enumerate(train_weights)})
            if dim == 2:  # the largest error of the learned mode weights, to p* and to the data
                out["mode_mass_max_error"] = float(np.max(np.abs(
                    np.asarray(masses, np.float64) - weights / weights.sum())))
                out["mode_mass_max_error_to_train"] = float(np.max(np.abs(
                    np.asarray(masses, np.float64) - train_weights)))
        if dataset.mixture is not None and particles is not None:
            weights = evaluation.mode_weights_from_samples(particles, dataset.mixture)
            out.update({f"particle_mode_weight_{k}": w for k, w in enumerate(np.asarray(weights))})
            if particle_weights is not None:
                weighted = evaluation.mode_weights_from_samples(particles, dataset.mixture,
                                                                particle_weights)
                out.update({f"weighted_particle_mode_weight_{k}": w
                            for k, w in enumerate(np.asarray(weighted))})
        return {k: float(v) for k, v in out.items()}

    return evaluate
