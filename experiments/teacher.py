"""The d = 15 teacher of the paper (docs/tasks.md, d = 15): two ReLU neurons, cos(θ1*, θ2*) = 0.2.

Student: m = 64 neurons, half the output signs +1, WFR steps h_θ = h_w = 0.2,
n = 10^4 data, N = 2n antithetic walkers, projected Langevin h_x = 0.02, T = 1,
random per-particle restarts with restart_prob = 1/40, 4000 iterations.
"""

from experiments.defaults import base_config


def get_config():
    return base_config()
