"""MNIST (the official IDX files at config.data.path) with an MLP energy on [0, 1]^784.

A baseline for the image-data studies: persistent chains with rare restarts,
ULA at T = 1, Adam. No likelihood metric yet (it needs AIS in d = 784): the
evaluation logs cheap checks instead (experiments.evaluate.mnist_metrics): the
energy gap between particles and held-out images and between test and training
images (nats, with standard errors), particle vs test pixel mean / std, the RMS
distance of their mean images and the fraction of particle pixels outside [0, 1];
samples.png shows particles beside test images (plots.plot_image_grid).
"""

from experiments.defaults import base_config


def get_config():
    config = base_config()
    config.data.name = "mnist"
    config.data.dim = 784
    config.data.num_train = 8000
    config.data.num_test = 2000
    config.data.batch_size = 128
    config.data.streamed = True      # uint8 pixels streamed in chunks, cast on the device
    config.model.name = "mlp"
    config.model.hidden_sizes = (256, 256)
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-4
    config.sampler.num_particles = 128
    config.sampler.step_size = 1e-4
    config.sampler.num_steps = 10
    config.sampler.antithetic = False
    config.train.num_steps = 2000
    config.train.restart_prob = 0.05
    return config
