"""The floor of the learned mode weights: each seed's training set has mode fractions of its
own, and maximum likelihood on that set can only learn those.

    python -m experiments.mode_weight_floor --config=experiments/mixture4.py --seeds=5
    python -m experiments.mode_weight_floor --config=experiments/mixture4.py --seeds=5 \\
        workdirs/mixture4-flow-n4000-decay workdirs/mixture4-jarzynski-n1e4

prints, per seed, the training set's mode fractions (the data set of seed s is the one
every run and grid member with seed s trains on: `get_dataset(config, split(key(s))[0])`)
and their largest distance to the true weights; then, for each finished grid, every
member's learned masses (`mode_mass_k` of results.csv at its last evaluation) against
both. Members whose results carry `train_mode_weight_k` (every run since that metric
joined the evaluator) are compared with those, their own training set whatever the grid
overrode (data.num_train included); older grids are compared with the training sets that
--config builds.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import sys
from pathlib import Path

import jax
import numpy as np

from ebmdual.data import get_dataset
from ebmdual.evaluation import mode_weights_from_samples


def train_fractions(config, seed: int) -> np.ndarray:
    """(K,) mode fractions of the training set of `seed`."""
    config = config.copy_and_resolve_references()
    config.seed = seed
    data_key, _ = jax.random.split(jax.random.key(seed))
    dataset = get_dataset(config, data_key)
    return np.asarray(mode_weights_from_samples(dataset.train, dataset.mixture), np.float64)


def _indexed_columns(row: dict, prefix: str) -> np.ndarray | None:
    """The values of row[prefix + "0"], row[prefix + "1"], ... as an array; None if absent."""
    keys = sorted((k for k in row if k.startswith(prefix) and k[len(prefix):].isdigit()),
                  key=lambda k: int(k[len(prefix):]))
    if not keys or any(row[k] in ("", None) for k in keys):
        return None
    return np.array([float(row[k]) for k in keys])


def last_masses(workdir: Path) -> list[tuple[dict, np.ndarray, np.ndarray | None]]:
    """(row, (K,) learned masses, (K,) training-set fractions or None) of every member of a
    grid at its last evaluation. The fractions are the evaluator's `train_mode_weight_k`,
    the member's own training set whatever its config overrides; grids that predate that
    metric give None."""
    path = workdir / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the grid first")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["step"]) for r in rows)
    return [(r, _indexed_columns(r, "mode_mass_"), _indexed_columns(r, "train_mode_weight_"))
            for r in rows if int(r["step"]) == last]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a mixture config file, e.g. "
                        "experiments/mixture4.py")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("workdirs", nargs="*", type=Path)
    args = parser.parse_args(argv)
    module = importlib.import_module(args.config.removesuffix(".py").replace("/", "."))
    config = module.get_config()
    truth = np.asarray(config.data.mixture_weights, np.float64)
    truth = truth / truth.sum()
    fractions = {seed: train_fractions(config, seed) for seed in range(args.seeds)}
    print(f"true weights: {' / '.join(f'{w:.3f}' for w in truth)}\n")
    print("| seed | training set's mode fractions | max distance to the true weights |")
    print("|---|---|---|")
    for seed, f in fractions.items():
        print(f"| {seed} | {' / '.join(f'{w:.4f}' for w in f)} | {np.abs(f - truth).max():.4f} |")
    for workdir in args.workdirs:
        try:
            members = last_masses(workdir)
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"\n{workdir} (last evaluation)\n")
        print("| member | seed | learned masses | max error to the true weights "
              "| max error to the training set's | training set's max distance to the truth |")
        print("|---|---|---|---|---|---|")
        for row, masses, train in members:
            seed = int(row["seed"])
            if train is None:  # a grid from before train_mode_weight_k: rebuild from --config
                if seed not in fractions:
                    fractions[seed] = train_fractions(config, seed)
                train = fractions[seed]
            print(f"| {row['member']} | {seed} | {' / '.join(f'{m:.3f}' for m in masses)} | "
                  f"{np.abs(masses - truth).max():.4f} | "
                  f"{np.abs(masses - train).max():.4f} | {np.abs(train - truth).max():.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
