"""Cost per train step of each sampler on the four-mode mixture (docs/results/mode_weights.md).

    python -m benchmarks.sampler_cost
    python -m benchmarks.sampler_cost --particles=1000,4000 --repeats=5

The configs of the report, as they train: experiments/mixture4.py (persistent ULA,
K = 5 steps of h = 0.01, p = 0), experiments/mixture4_jarzynski.py (5 weighted ULA
steps), experiments/mixture4_flow.py (one cycle: IMH with the spline flow, one
adaptive MALA step, one Adam step of the flow), flow-MCMC with i-SIR (M = 4
candidates) instead of IMH, and the tilted variant (sampler.flow_tilted: the flow is a
part of the energy, so every energy and gradient evaluation runs it). Same MLP energy, data, batch 500 and Adam update of θ.
Each row is timed as `benchmarks.throughput` times (one warm-up `train_loop` call,
then the median of `--repeats` calls of S steps, ended by block_until_ready), one
sampler after another in the same process; the last column is the cost relative to
persistent ULA at the same N.
"""

from __future__ import annotations

import argparse

from benchmarks.throughput import build, dataset_and_run_key, print_table, time_per_step
from experiments import mixture4, mixture4_flow, mixture4_jarzynski


def configs(num_particles: int):
    """(name, config) of every sampler of the report at N particles."""
    langevin = mixture4.get_config()
    langevin.train.restart_prob = 0.0
    isir = mixture4_flow.get_config()
    isir.sampler.global_move, isir.sampler.num_proposals = "isir", 4
    tilted = mixture4_flow.get_config()
    tilted.sampler.flow_tilted = True
    rows = [("ULA, K = 5 (p = 0)", langevin), ("Jarzynski, K = 5", mixture4_jarzynski.get_config()),
            ("flow-MCMC IMH + 1 MALA", mixture4_flow.get_config()),
            ("flow-MCMC i-SIR M = 4 + 1 MALA", isir),
            ("flow-MCMC tilted, IMH + 1 MALA", tilted)]
    for _, config in rows:
        config.sampler.num_particles = num_particles
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", default="1000", help="comma-separated N")
    parser.add_argument("--steps_per_call", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = []
    for n in (int(v) for v in args.particles.split(",")):
        base = None
        for name, config in configs(n):
            dataset, run_key = dataset_and_run_key(config)
            call, state, _ = build(config, dataset, run_key, args.steps_per_call, None)
            seconds, _ = time_per_step(call, state, args.steps_per_call, args.repeats)
            base = base or seconds
            rows.append((name, n, f"{1e3 * seconds:.2f}", f"{seconds / base:.2f}x"))
    print_table(("sampler", "N", "ms / train step", "vs ULA"), rows)


if __name__ == "__main__":
    main()
