"""CelebA 32×32 (or 64×64 with --config.data.image_size=64) with a convolutional energy.

Data: TFDS `celeb_a` prepared as ArrayRecord in config.data.data_dir (once, with
TensorFlow: pip install -e '.[prepare]', then
python -m experiments.prepare_data --dataset=celeb_a --data_dir=DIR; CelebA needs its
files downloaded by hand, see that command's help). The 218×178 images are centre
cropped to 140×140 and resized on the host; pixels are dequantised and scaled to
[−1, 1] on the device. No class labels: the class histogram is not computed and the
Fréchet distance uses a classifier only where one exists (docs/evaluation.md).

Sized for an accelerator: N = 10000 particles in the replay buffer, B = 128 moving
K = 40 ULA steps per train step at T = 1, clipped to [−1, 1].

Run: python -m experiments.run --config=experiments/celeba.py --config.data.data_dir=DIR
Tests and a first look: --config=experiments/celeba.py:tiny (`tiny_image_config`, seconds of CPU).
"""

from experiments.defaults import base_config, tiny_image_config, with_variant


def get_config(variant: str = ""):
    """variant: '' (the config above) or 'tiny' (`tiny_image_config`: seconds of CPU, for tests)."""
    config = base_config()
    data = config.data
    data.name = "celeb_a"
    data.data_dir = None
    data.image_size = 32
    data.num_train = 162_770
    data.num_test = 1000
    data.batch_size = 128
    data.streamed = True
    data.data_range = (-1.0, 1.0)
    config.model.name = "conv"
    config.model.conv_features = (64, 128, 256, 256)
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-4
    config.optim.grad_clip = 1.0
    sampler = config.sampler
    sampler.name = "ula"
    sampler.num_particles = 10_000
    sampler.particles_per_step = 128
    sampler.num_steps = 40
    sampler.step_size = 1e-4
    sampler.clip = True
    sampler.noise_ahead = True  # faster on conv energies (ebmdual.samplers.ula)
    sampler.antithetic = False
    train = config.train
    train.num_steps = 20_000
    train.restart_prob = 0.05
    train.log_every = 100
    train.eval_every = 5000
    train.checkpoint_every = 1000
    config.eval.ais_chains = 64
    config.eval.ais_temperatures = 1000
    return with_variant(config, variant, {"tiny": tiny_image_config})
