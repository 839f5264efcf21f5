"""Cost per member of the vmapped grid step against a single run's step (d = 15 teacher).

    python -m benchmarks.grid_step --members=3 --steps_per_call=50

Builds the default teacher trainer once alone and once with `members=M` (the grid's
stacked state), runs one warm-up call each, then reports the best of `--repeats` timed
calls as ms per step per member.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from ebmdual.data import get_dataset
from experiments import teacher
from experiments.registry import build_trainer


def best_ms_per_member_step(trainer, state, data, steps: int, repeats: int, members: int) -> float:
    state, _ = trainer.train_loop(state, data)
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, _ = trainer.train_loop(state, data)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    return min(times) / steps * 1e3 / members


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--steps_per_call", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    config = teacher.get_config()
    data_key, run_key = jax.random.split(jax.random.key(0))
    dataset = get_dataset(config, data_key)
    single = build_trainer(config, dataset, steps_per_call=args.steps_per_call).trainer
    data = single.put(dataset.train)
    alone = best_ms_per_member_step(single, single.init(run_key, data), data,
                                    args.steps_per_call, args.repeats, 1)
    grid = build_trainer(config, dataset, steps_per_call=args.steps_per_call,
                         members=args.members).trainer
    stacked = grid.put(np.stack([np.asarray(dataset.train)] * args.members))
    state = grid.init(jax.random.split(run_key, args.members), stacked)
    per_member = best_ms_per_member_step(grid, state, stacked, args.steps_per_call, args.repeats,
                                         args.members)
    print(f"d = 15 teacher, N = {config.sampler.num_particles}: single run {alone:.2f} ms/step; "
          f"grid of {args.members}: {per_member:.2f} ms per step per member "
          f"({per_member / alone:.2f}x); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
