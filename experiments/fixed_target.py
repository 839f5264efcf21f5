"""Fixed-target sampler check: do the chains find the right mode weights by themselves?

    python -m experiments.fixed_target --dim=16 --steps=500 --out=docs/results/mode_weights

Target: a mixture of four Gaussians in R^d with weights 0.1 / 0.2 / 0.3 / 0.4, means
2.5·(±1, ±1, 0, …, 0), standard deviation 0.3 in every coordinate (the modes are 16.7 σ
apart). N = 1000 chains start unevenly: 70 / 10 / 10 / 10 % in the four modes (exact
Gaussian draws inside each). Two samplers move them for `--steps` iterations:
* flow-MCMC (`ebmdual.flow_mcmc`): IMH with a spline flow proposal, one adaptive MALA
  step, five Adam steps of the flow on the chains per iteration;
* MALA alone (`ebmdual.samplers.mala`, the same adaptive step).
Printed: the chains' mode fractions every 100 iterations and at the end, with the
binomial standard error √(w(1−w)/N) of exact samples; a PNG of the fractions over time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ebmdual.compiler import jit
from ebmdual.flow_mcmc import flow_mcmc
from ebmdual.flows import coupling_flow
from ebmdual.samplers import mala

WEIGHTS = np.array([0.1, 0.2, 0.3, 0.4])
START = np.array([0.7, 0.1, 0.1, 0.1])
STD = 0.3


def mixture(dim: int):
    means = np.zeros((4, dim), np.float32)
    means[:, :2] = 2.5 * np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]])
    means = jnp.asarray(means)

    def energy_fn(params, x):
        del params
        log_components = jnp.log(WEIGHTS) - 0.5 * jnp.sum((x - means) ** 2, -1) / STD ** 2
        return -jax.scipy.special.logsumexp(log_components)

    def fractions(x):
        modes = jnp.argmin(jnp.sum((x[:, None] - means) ** 2, -1), 1)
        return np.asarray(jnp.bincount(modes, length=4)) / x.shape[0]

    return means, energy_fn, fractions


def run(sampler, start, steps, fractions, seed=0):
    hparams = {"particle_step_size": jnp.float32(0.01), "temperature": jnp.float32(1.0)}
    key = jax.random.key(seed)
    state = sampler.init(key, None, start)
    step = jit(lambda k, x, s: sampler.step(k, None, x, s, hparams))
    x, history = start, [fractions(start)]
    for t in range(steps):
        x, state, info = step(jax.random.fold_in(key, t), x, state)
        history.append(fractions(x))
    return np.array(history), info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--out", default=None, help="folder for fixed_target.png")
    args = parser.parse_args(argv)
    means, energy_fn, fractions = mixture(args.dim)
    counts = (START * args.chains).astype(int)
    keys = jax.random.split(jax.random.key(1), 4)
    start = jnp.concatenate([means[k] + STD * jax.random.normal(keys[k], (c, args.dim))
                             for k, c in enumerate(counts)])
    samplers = {
        "flow-MCMC": flow_mcmc(energy_fn, coupling_flow(args.dim, "spline"), optax.adam(1e-3),
                               local_steps=1, target_acceptance=0.6, flow_steps=5),
        "MALA": mala(energy_fn, 1, target_acceptance=0.6),
    }
    se = np.sqrt(WEIGHTS * (1 - WEIGHTS) / args.chains)
    print(f"d = {args.dim}, N = {args.chains}, start {START}, target {WEIGHTS}, binomial SE "
          f"{np.round(se, 3)}")
    histories = {}
    for name, sampler in samplers.items():
        begin = time.perf_counter()
        histories[name], info = run(sampler, start, args.steps, fractions)
        seconds = time.perf_counter() - begin
        for t in range(0, args.steps + 1, 100):
            print(f"{name:10s} iteration {t:4d}: mode fractions {np.round(histories[name][t], 3)}")
        extra = {k: round(float(v), 3) for k, v in (info.extra or {}).items()}
        print(f"{name:10s} final error {np.round(histories[name][-1] - WEIGHTS, 3)} "
              f"({seconds:.0f} s; last step {extra or float(info.acceptance_rate)})")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
        for ax, (name, history) in zip(axes, histories.items()):
            for k in range(4):
                ax.plot(history[:, k], color=f"C{k}", label=f"mode {k} (w = {WEIGHTS[k]})")
                ax.axhline(WEIGHTS[k], color=f"C{k}", ls=":")
            ax.set(title=f"{name}, d = {args.dim}", xlabel="iteration")
        axes[0].set_ylabel("fraction of chains")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        Path(args.out).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(args.out) / "fixed_target.png", dpi=120)
        print(f"wrote {Path(args.out) / 'fixed_target.png'}")


if __name__ == "__main__":
    main()
