"""A 2-D mixture of four Gaussians with unequal weights: what no restart probability fixes.

Modes at (±2.5, ±2.5), σ = 0.3, weights 0.1 / 0.2 / 0.3 / 0.4 (means listed as
(−2.5, −2.5), (2.5, −2.5), (−2.5, 2.5), (2.5, 2.5)). MLP energy (64, 64) on a Gaussian
base, E = MLP + ‖x‖²/(2·3²) (model.base_std = 3: normalisable, and exactly N(0, 9 I) at
init, the start the Jarzynski variant needs; every variant shares it), Adam 1e-3,
unadjusted Langevin h = 0.01 in R², 5 steps per iteration, N = 1000 particles,
batches of 500 from n = 4000, 3000 iterations, random restarts with p = 0.05.

The modes are 5 apart (16.7 σ), behind barriers of ≈ 35 nats, so the Langevin
chains do not cross between them: the learned mode weights, normalised exactly on a
grid (eval: mode_mass_k), carry no information from the chains. No published numbers.
"""

from experiments import mixture2d


def get_config():
    config = mixture2d.get_config()  # MLP energy, Adam, ULA, n = 4000, N = 1000, 3000 steps
    config.data.mixture_means = [[-2.5, -2.5], [2.5, -2.5], [-2.5, 2.5], [2.5, 2.5]]
    config.data.mixture_weights = [0.1, 0.2, 0.3, 0.4]
    config.data.mixture_std = 0.3
    config.model.base_std = 3.0
    config.train.restart_prob = 0.05
    return config
