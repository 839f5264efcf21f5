"""ebmdual: energy-based models trained by two-time-scale dual gradient descent-ascent.

Modules (import what you need; this file imports nothing, so `import ebmdual.losses`
stays free of flax):

  energies     flax energy models and the pure `energy_fn(params, x)` adapter
  losses       pure objectives: maximum likelihood, score matching variants, KSD
  samplers     ULA / projected Langevin, MALA, HMC particle kernels
  optim        optax optimizers, Wasserstein-Fisher-Rao steps for shallow energies
  train        TrainState, restart mask, train_step, lax.scan train loop, sharding
  evaluation   KL, NLL, Fisher divergence, mode masses
  data         synthetic tasks (teacher on the sphere, Gaussian mixtures, 2-D toys)
"""

__version__ = "0.1.0"
