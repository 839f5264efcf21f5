"""The floor of the learned mode weights: each seed's training set has mode fractions of its
own, and maximum likelihood on that set can only learn those.

    python -m experiments.mode_weight_floor --config=experiments/mixture4.py --seeds=5
    python -m experiments.mode_weight_floor --config=experiments/mixture4.py --seeds=5 \\
        workdirs/mixture4-flow-n4000-decay workdirs/mixture4-jarzynski-n1e4

prints, per seed, the training set's mode fractions (the data set of seed s is the one
every run and grid member with seed s trains on: `get_dataset(config, split(key(s))[0])`)
and their largest distance to the true weights; then, for each finished grid, every
member's learned masses (`mode_mass_k` of results.csv at its last evaluation) against
both. The runs written since `train_mode_weight_k` joined the evaluator carry the same
numbers in their metrics; this reads grids that predate it.
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


def last_masses(workdir: Path) -> list[tuple[dict, np.ndarray]]:
    """(row, (K,) learned masses) of every member of a grid at its last evaluation."""
    path = workdir / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the grid first")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["step"]) for r in rows)
    keys = sorted(k for k in rows[0] if k.startswith("mode_mass_") and k[10:].isdigit())
    return [(r, np.array([float(r[k]) for k in keys])) for r in rows if int(r["step"]) == last]


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
              "| max error to the training set's |")
        print("|---|---|---|---|---|")
        for row, masses in members:
            seed = int(row["seed"])
            if seed not in fractions:
                fractions[seed] = train_fractions(config, seed)
            print(f"| {row['member']} | {seed} | {' / '.join(f'{m:.3f}' for m in masses)} | "
                  f"{np.abs(masses - truth).max():.4f} | "
                  f"{np.abs(masses - fractions[seed]).max():.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
