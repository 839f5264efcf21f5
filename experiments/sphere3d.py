"""The d = 3 orthogonal teacher of the paper: θ1* = e_1 ⊥ θ2* = e_2 on S^2.

f* = −5 relu(x_1) − 5 relu(x_2) is unimodal (one minimum, at x ∝ e_1 + e_2): the
authors' "monomodal" run, not the bimodal teacher of their published comparison
of restart probabilities (docs/tasks.md, d = 3). Student: m = 64 neurons, all
output signs −1, WFR steps h_θ = 0.04, h_w = 0.02 (a = 1), projected Langevin
h_x = 0.02, n = 2000. Evaluated by quadrature on S^2.
"""

from experiments.defaults import base_config


def get_config():
    config = base_config()
    config.data.dim = 3
    config.data.num_train = 2000
    config.data.num_test = 10_000
    config.model.num_positive = 0
    config.optim.feature_learning_rate = 0.04
    config.optim.weight_learning_rate = 0.02
    config.sampler.num_particles = 4000
    config.train.num_steps = 4000
    return config
