"""Task metrics for a trained energy: the right estimator for each kind of data set.

`make_evaluator(config, dataset, energy_fn)` returns `evaluate(params, particles,
temperature) -> dict[str, float]`. The model is p_θ ∝ exp(−E_θ/T) with T the
sampler temperature, so every metric uses E_θ/T.

* teacher on S^2: KL(p*‖p_θ), test NLL (quadrature on a ϑ×φ grid) and the
  Fisher divergence to the teacher.
* teacher on S^{d−1}, d > 3: KL by importance sampling on exact teacher samples
  (the test set), with its standard error, and the Fisher divergence.
* 2-D data: test NLL by normalising exp(−E/T) on a grid (and the mass near the
  box edge, which must be negligible), per-mode mass for mixtures.
* mixtures in higher d: mode weights of the particles.
"""

from __future__ import annotations

import numpy as np

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


def make_evaluator(config, dataset, energy_fn):
    """evaluate(params, particles, temperature) -> {metric name: float}.

    particles: host array (N, d), or None when the objective trained without a sampler."""
    dim = dataset.train.shape[-1]
    grid = config.eval.grid_size
    model = temperature_scaled(energy_fn)

    def evaluate(params, particles, temperature: float) -> dict:
        params = (params, temperature)
        out = {}
        if dataset.manifold == "sphere":
            target, target_params = dataset.target_energy_fn, dataset.target_params
            if dim == 3:
                out["kl"] = evaluation.kl_quadrature_s2(model, params, target, target_params, grid)
                out["test_nll"] = evaluation.nll_s2(model, params, dataset.test, grid).value
            else:
                kl = evaluation.kl_importance_sampling(model, params, target, target_params,
                                                       dataset.test)
                out["kl"], out["kl_stderr"] = kl.value, kl.stderr
            out["fisher_divergence"] = evaluation.fisher_divergence_sphere(
                model, params, target, target_params, dataset.test).value
        elif dim == 2:
            box = dataset.box  # every 2-D data set carries the square holding its mass
            nll = evaluation.nll_2d(model, params, dataset.test, box, 2 * grid)
            out["test_nll"], out["edge_mass"] = nll.value, nll.edge_mass
            if dataset.mixture is not None:
                masses = evaluation.mode_mass_2d(model, params, dataset.mixture, box, 2 * grid)
                out.update({f"mode_mass_{k}": m for k, m in enumerate(np.asarray(masses))})
        if dataset.mixture is not None and particles is not None:
            weights = evaluation.mode_weights_from_samples(particles, dataset.mixture)
            out.update({f"particle_mode_weight_{k}": w for k, w in enumerate(np.asarray(weights))})
        return {k: float(v) for k, v in out.items()}

    return evaluate
