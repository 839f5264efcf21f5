#!/usr/bin/env bash
# The MNIST study of docs/results/mnist.md: each line is one `python -m experiments.sweep`
# program (members differ only in array values) whose workdir holds table.md, results.csv
# and the plots. Usage: bash experiments/mnist_study.sh [name ...] (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
sweep() { name=$1; shift; python -m experiments.sweep "$@" --workdir="workdirs/$name"; }
declare -A GRIDS=(
  # restart probability at T = 1: persistent chains, rare and frequent restarts, CD-K from data
  [mnist-restart]="--config=experiments/mnist.py --sweep=train.restart_prob=0,0.05,0.3,1 --seeds=2"
  # the literature's sampler (IGEBM, JEM, the UvA tutorial: step 10, noise 0.005, so
  # T = 0.005²/(2·10) = 1.25e-6, per-pixel gradient clamp 0.03), p = 0.05, against T = 1 above
  [mnist-literature]="--config=experiments/mnist.py --config.sampler.step_size=10 --config.sampler.temperature=1.25e-6 --config.sampler.grad_clamp=0.03 --sweep=train.restart_prob=0.05 --seeds=1"
  # the mode-weight samplers of docs/results/mode_weights.md on MNIST at T = 1: Jarzynski
  # walkers with MALA moves on the box [0, 1]^784 (h = 1e-6: larger steps leave the box),
  # started uniform on it (flat start: exact weights for the initial energy), never
  # restarted; flow-MCMC (a spline flow on the 784 flattened pixels proposing, MALA adapting
  # to 60 % acceptance, moves out of the box refused), p = 0.05 like the study above
  [mnist-jarzynski]="--config=experiments/mnist.py --config.sampler.name=jarzynski --config.sampler.clip=False --config.sampler.jarzynski_kernel=mala --config.sampler.jarzynski_start=flat --config.sampler.step_size=1e-6 --config.train.restart_to=noise --config.train.num_steps=150 --sweep=train.restart_prob=0 --seeds=1"
  # (both 150 steps: their train steps cost several ULA train steps on CPU; timings in mode_weights.md)
  [mnist-flow-mcmc]="--config=experiments/mnist.py --config.sampler.name=flow_mcmc --config.sampler.clip=False --config.sampler.target_acceptance=0.6 --config.train.num_steps=150 --sweep=train.restart_prob=0.05 --seeds=1"
)
ORDER=(mnist-restart mnist-literature mnist-jarzynski mnist-flow-mcmc)
for name in "${@:-${ORDER[@]}}"; do
  [[ -n "${GRIDS[$name]:-}" ]] || { echo "unknown grid $name; one of: ${ORDER[*]}" >&2; exit 2; }
  echo "=== $name"
  # shellcheck disable=SC2086  # the flags are one word each
  sweep "$name" ${GRIDS[$name]}
done
