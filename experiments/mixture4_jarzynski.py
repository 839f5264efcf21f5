"""The four-Gaussian mixture of `experiments/mixture4.py`, trained with Jarzynski-weighted
persistent walkers (`ebmdual.jarzynski`; Carbone et al., NeurIPS 2023).

Same data, energy (MLP 64-64 on a Gaussian base N(0, 3² I), the exact initial model),
optimizer and length as mixture4.py. The 1000 walkers start as exact samples of the
initial model (restart_to=noise with std 3 = model.base_std), never restart
(restart_prob 0), take 5 weighted ULA steps of h = 0.01 per iteration and are
resampled when ESS/N < 0.5. The ML gradient uses their weights, so the learned mode
weights need no mixing between modes. Report: docs/results/mode_weights.md.

Measured there (5 seeds): as it stands, max mode-weight error 0.25 at iteration 3000 (the
walkers' finite number feeds noise into training); with
--config.sampler.num_particles=40000 --config.optim.lr_decay=0.1
--config.sampler.ess_threshold=0.9, 0.020 ± 0.003 (4 of 5 seeds within 0.03: the
fifth seed's n = 4000 training points are themselves 0.029 off the true weights); adding
--config.data.num_train=16000 and lr_decay 0.01, 0.0073 ± 0.0011, every seed within 0.011.
"""

from experiments import mixture4


def get_config():
    config = mixture4.get_config()
    config.sampler.name = "jarzynski"
    config.sampler.ess_threshold = 0.5
    config.train.restart_prob = 0.0
    config.train.restart_to = "noise"
    config.train.restart_noise_std = config.model.get_ref("base_std")
    return config
