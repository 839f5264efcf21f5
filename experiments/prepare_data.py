"""Prepare a TFDS image data set as ArrayRecord, once, so training reads it without TensorFlow.

    pip install -e '.[prepare]'        # tensorflow-cpu: needed here only, not for training
    python -m experiments.prepare_data --dataset=mnist --data_dir=~/tensorflow_datasets
    python -m experiments.prepare_data --dataset=celeb_a --data_dir=DIR --manual_dir=FILES
    python -m experiments.prepare_data --dataset=imagenet32 --data_dir=DIR --manual_dir=FILES

Runs `tfds.builder(name, data_dir=DIR).download_and_prepare(file_format="array_record")`;
`ebmdual.data.images.tfds_source` then reads DIR through `tfds.data_source` (random access,
no TensorFlow). Progress is whatever tfds prints. A data set already prepared in DIR is
left as it is.

--dataset: mnist (tfds `mnist`), celeb_a (`celeb_a`), imagenet32 (`imagenet_resized/32x32`),
or a TFDS name of ebmdual.data.images.TFDS_SPECS (`downsampled_imagenet/32x32`).

Where the source files come from. tfds looks for each file in --manual_dir first, under
the file name of its checksum list, and downloads it otherwise:

* mnist: downloaded from storage.googleapis.com/cvdf-datasets/mnist; offline, put
  train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
  t10k-labels-idx1-ubyte.gz in --manual_dir.
* celeb_a: a manual download in practice (Google Drive refuses automated downloads of the
  1.4 GB archive once its quota is spent): get img_align_celeba.zip,
  list_eval_partition.txt, list_attr_celeba.txt, list_landmarks_align_celeba.txt and
  identity_CelebA.txt from mmlab.ie.cuhk.edu.hk/projects/CelebA.html into --manual_dir.
* imagenet32 (`imagenet_resized/32x32`): a manual download: Imagenet32_train_npz.zip and
  Imagenet32_val_npz.zip from image-net.org (needs an ImageNet account) into --manual_dir.
* `downsampled_imagenet/32x32`: train_32x32.tar and valid_32x32.tar of image-net.org/small
  into --manual_dir.

Exit status: 0 prepared (or already there); 2 TensorFlow missing, or a bad flag; 1 tfds
failed (its error is printed on one line).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ebmdual.data.images import IMAGENET32_TFDS_NAMES, TFDS_SPECS

DATASETS = {"mnist": "mnist", "celeb_a": "celeb_a", "imagenet32": IMAGENET32_TFDS_NAMES[0],
            **{name: name for name in TFDS_SPECS}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.prepare_data",
        description="Prepare a TFDS image data set as ArrayRecord (needs TensorFlow once).")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--data_dir", required=True, type=Path,
                        help="the TFDS data directory training will read")
    parser.add_argument("--manual_dir", type=Path, default=None,
                        help="directory holding manually downloaded source files")
    parser.add_argument("--download_dir", type=Path, default=None,
                        help="where tfds keeps downloads (default DATA_DIR/downloads)")
    return parser.parse_args(argv)


def prepare(tfds_name: str, data_dir: Path, manual_dir: Path | None = None,
            download_dir: Path | None = None) -> Path:
    """Prepare `tfds_name` as ArrayRecord in `data_dir`; the prepared variant directory."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(tfds_name, data_dir=str(data_dir))
    config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else str(manual_dir))
    builder.download_and_prepare(
        download_dir=None if download_dir is None else str(download_dir),
        download_config=config, file_format="array_record")
    return Path(str(builder.data_path))


def main(argv=None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("tensorflow") is None:
        print("error: preparing a TFDS image data set needs TensorFlow: run  "
              "pip install -e '.[prepare]'  (training reads the result without it)",
              file=sys.stderr)
        return 2
    data_dir = args.data_dir.expanduser()
    manual_dir = None if args.manual_dir is None else args.manual_dir.expanduser()
    if manual_dir is not None and not manual_dir.is_dir():
        print(f"error: --manual_dir {manual_dir} is not a directory", file=sys.stderr)
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    tfds_name = DATASETS[args.dataset]
    print(f"preparing {tfds_name} as ArrayRecord in {data_dir}; source files: "
          f"{TFDS_SPECS[tfds_name].data_files}", flush=True)
    try:
        path = prepare(tfds_name, data_dir, manual_dir,
                       None if args.download_dir is None else args.download_dir.expanduser())
    except Exception as error:  # noqa: BLE001 - one line for the user, whatever tfds raised
        first_line = (str(error).strip().splitlines() or [""])[0]
        print(f"error: preparing {tfds_name} in {data_dir} failed: "
              f"{type(error).__name__}: {first_line}  (source files: "
              f"{TFDS_SPECS[tfds_name].data_files})", file=sys.stderr)
        return 1
    print(f"{tfds_name} is prepared as ArrayRecord in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
