"""A 2-D Gaussian mixture with unequal weights (0.8 / 0.2): where score matching and
maximum likelihood disagree. MLP energy, Adam, unadjusted Langevin in R^2.
Evaluated on a grid: exact NLL and per-mode mass.
"""

from experiments.defaults import base_config


def get_config():
    config = base_config()
    config.data.name = "mixture"
    config.data.dim = 2
    config.data.num_train = 4000
    config.data.num_test = 4000
    config.data.batch_size = 500
    config.data.mixture_weights = [0.8, 0.2]
    config.data.mixture_separation = 4.0
    config.data.mixture_std = 0.5
    config.model.name = "mlp"
    config.model.hidden_sizes = (64, 64)
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.sampler.num_particles = 1000
    config.sampler.step_size = 0.01
    config.sampler.num_steps = 5
    config.sampler.antithetic = False
    config.train.num_steps = 3000
    config.train.restart_prob = 0.02
    config.train.eval_every = 500
    return config
