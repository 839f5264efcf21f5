"""MNIST with a convolutional energy on [0, 1]^(28×28), trained at T = 1 (issue 8).

Data: the official IDX files at config.data.path (this project's machines hold the
10,000 test images: items [0, 9000) train, [9000, 10000) evaluate; with
--config.data.path='' and data.data_dir, TFDS's prepared `mnist`). Pixels are
dequantised (u + U)/256 on the device, so the model is a density on [0, 1]^784.

Model: `ConvEnergy` (16-32-64-64 channels, swish). Sampler: ULA at T = 1 with
particles clipped to [0, 1], a replay buffer of N = 2000 particles of which B = 64 move
K = 20 steps per train step, restarted at batch images with probability 0.05.
Evaluation (docs/evaluation.md): test NLL in bits/dim by AIS on the box [0, 1]^784,
the Fréchet distance of the particles to held-out images on the penultimate features
of a classifier trained here (not comparable to Inception FID) beside the same
distance for real training images (its floor), and the particles' class histogram.

Run: python -m experiments.run --config=experiments/mnist.py --config.data.path=../shared/data/mnist
Tests and a first look: --config=experiments/mnist.py:tiny (`tiny_image_config`, seconds of CPU).
The study of restart probabilities and temperatures on it: docs/results/mnist.md.
"""

from experiments.defaults import base_config, tiny_image_config, with_variant


def get_config(variant: str = ""):
    """variant: '' (the config above) or 'tiny' (`tiny_image_config`: seconds of CPU, for tests)."""
    config = base_config()
    data = config.data
    data.name = "mnist"
    data.path = "../shared/data/mnist"
    data.num_train = 9000
    data.num_test = 1000
    data.batch_size = 64
    data.streamed = True
    data.data_range = (0.0, 1.0)
    config.model.name = "conv"
    config.model.conv_features = (16, 32, 64, 64)
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-4
    config.optim.grad_clip = 1.0
    sampler = config.sampler
    sampler.name = "ula"
    sampler.num_particles = 2000
    sampler.particles_per_step = 64
    sampler.num_steps = 20
    sampler.step_size = 1e-4
    sampler.temperature = 1.0
    sampler.clip = True
    sampler.noise_ahead = True  # faster on conv energies (ebmdual.samplers.ula)
    sampler.antithetic = False
    train = config.train
    train.num_steps = 300
    train.restart_prob = 0.05
    train.restart_to = "data"
    train.log_every = 10
    train.eval_every = 150
    train.checkpoint_every = 150
    config.eval.ais_chains = 32
    config.eval.ais_temperatures = 300
    config.eval.ais_repeats = 3
    return with_variant(config, variant, {"tiny": tiny_image_config})
