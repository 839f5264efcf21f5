"""The d = 15 teacher shrunk for the study grids of docs/results/synthetic.md.

experiments/teacher.py (published teacher, m = 64, authors' learning-rate scaling,
h_x = 0.02, T = 1) with n = 2000 data, N = 2n walkers and 2000 iterations, so that a
5-seed grid of 70 members runs in minutes on 2 CPU cores, and with the WFR weight step
tied to the feature step (optim.weight_learning_rate is a reference to
optim.feature_learning_rate, so sweeping the feature step moves both: the neuron time
scale). Random per-particle restarts (the paper's text). KL by importance sampling on
10^4 exact teacher samples, checked against a second estimator (kl_uniform).

No published numbers: this is not a setting of the paper.
"""

from experiments import teacher


def get_config():
    config = teacher.get_config()
    config.data.num_train = 2000
    config.train.num_steps = 2000
    config.train.restart_schedule = "random"
    config.optim.weight_learning_rate = config.optim.get_ref("feature_learning_rate")
    config.eval.num_samples = 10_000
    return config
