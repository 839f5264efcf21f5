"""ImageNet 32×32 with a convolutional energy.

Data: TFDS `imagenet_resized/32x32` (or `downsampled_imagenet/32x32` when that is the
one prepared) in config.data.data_dir, prepared once with TensorFlow:
pip install -e '.[prepare]', then
python -m experiments.prepare_data --dataset=imagenet32 --data_dir=DIR (ImageNet needs
its files downloaded by hand, see that command's help). Pixels are dequantised and
scaled to [−1, 1] on the device. 1000 classes: the class histogram of the particles is
summarised by its total-variation distance to the validation labels' histogram.

Sized for an accelerator, like experiments/celeba.py.

Run: python -m experiments.run --config=experiments/imagenet32.py --config.data.data_dir=DIR
Tests and a first look: --config=experiments/imagenet32.py:tiny (`tiny_image_config`, seconds of CPU).
"""

from experiments import celeba
from experiments.defaults import tiny_image_config, with_variant


def get_config(variant: str = ""):
    """variant: '' (the config above) or 'tiny' (`tiny_image_config`: seconds of CPU, for tests)."""
    config = celeba.get_config()
    config.data.name = "imagenet32"
    config.data.num_train = 1_281_167
    config.data.num_test = 10_000
    return with_variant(config, variant, {"tiny": tiny_image_config})
