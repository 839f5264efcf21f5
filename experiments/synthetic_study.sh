#!/usr/bin/env bash
# Every grid of docs/results/synthetic.md and mode_weights.md, in the order of the reports. Each line is one
# `python -m experiments.sweep` command whose workdir holds table.md, results.csv and the
# plots; rerunning a finished grid only rewrites its reports. Wall times on 2 CPU cores
# are in the report. Usage: bash experiments/synthetic_study.sh [name ...] (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
sweep() { name=$1; shift; python -m experiments.sweep "$@" --workdir="workdirs/$name"; }
declare -A GRIDS=(
  # 1. Reproduction
  [sphere3d-lr]="--config=experiments/sphere3d.py --sweep=optim.feature_learning_rate=0.04,0.08,0.16 --sweep=optim.weight_learning_rate=0.02,0.04,0.08 --sweep=train.restart_prob=0,1/60,1 --seeds=1 --config.train.num_steps=1000"
  [sphere3d]="--config=experiments/sphere3d.py --sweep=train.restart_schedule=periodic,random --sweep=data.num_train=1000,10000 --sweep=train.restart_prob=0,1/60,1 --seeds=3"
  [sphere3d-monomodal]="--config=experiments/sphere3d_monomodal.py --sweep=train.restart_prob=0,1/60,1 --seeds=3"
  [sphere3d-monomodal-half-steps]="--config=experiments/sphere3d_monomodal.py --config.optim.feature_learning_rate=0.04 --config.optim.weight_learning_rate=0.02 --sweep=train.restart_prob=0,1/60,1 --seeds=3"
  [teacher]="--config=experiments/teacher.py --sweep=train.restart_schedule=periodic,random --sweep=train.restart_prob=0,1/40,1 --seeds=5"
  [teacher-lr]="--config=experiments/teacher.py --sweep=optim.feature_learning_rate=0.2,0.4 --sweep=optim.weight_learning_rate=0.2,0.4 --sweep=train.restart_prob=0,1/40,1 --seeds=1"
  [teacher-n1e5]="--config=experiments/teacher.py --config.data.num_train=100000 --sweep=train.restart_prob=0,1/40,1 --seeds=5"
  [teacher-n1e5-step]="--config=experiments/teacher.py --config.data.num_train=100000 --config.train.restart_prob=0 --sweep=sampler.step_size=0.01,0.005 --seeds=1"
  # 2. Beyond the paper (experiments/teacher_study.py: n = 2000, 2000 iterations)
  [study-p]="--config=experiments/teacher_study.py --sweep=train.restart_schedule=random,periodic --sweep=train.restart_prob=0,0.001,0.01,0.025,0.1,0.3,1 --seeds=5"
  [study-neuron-step]="--config=experiments/teacher_study.py --sweep=train.restart_prob=0,1/40 --sweep=optim.feature_learning_rate=0.002,0.0063,0.02,0.063,0.2,0.63,2 --seeds=5"
  [study-particle-step]="--config=experiments/teacher_study.py --config.train.restart_prob=0 --sweep=sampler.step_size=0.002,0.0063,0.02,0.063,0.2 --seeds=5"
  [study-regime]="--config=experiments/teacher_study.py --config.data.teacher=random --sweep=data.dim=15,25,50,100 --sweep=data.num_train=1000,4000 --sweep=model.regime=active,lazy --seeds=5"
  [study-best-p]="--config=experiments/teacher_study.py --config.data.teacher=random --sweep=data.dim=15,50 --sweep=data.num_train=1000,4000 --sweep=train.restart_prob=0,0.01,0.1,1 --sweep=train.restart_decay=1,0.01 --seeds=5"
  [mixture4]="--config=experiments/mixture4.py --sweep=train.restart_prob=0,0.05,0.3,1 --seeds=5"
  [mixture4-sm]="--config=experiments/mixture4.py --sweep=train.loss=sm --seeds=5"
  # 3. Samplers that get the mode weights right (docs/results/mode_weights.md)
  [mixture4-flow]="--config=experiments/mixture4_flow.py --sweep=train.restart_prob=0 --seeds=5"
  [mixture4-jarzynski]="--config=experiments/mixture4_jarzynski.py --sweep=train.restart_prob=0 --seeds=5"
  [mixture4-jarzynski-n1e4]="--config=experiments/mixture4_jarzynski.py --config.sampler.num_particles=10000 --seeds=5"
  [mixture4-flow-decay]="--config=experiments/mixture4_flow.py --config.optim.lr_decay=0.1 --seeds=5"
  [mixture4-flow-decay001]="--config=experiments/mixture4_flow.py --config.optim.lr_decay=0.01 --seeds=5"
  [mixture4-flow-n4000-decay]="--config=experiments/mixture4_flow.py --config.sampler.num_particles=4000 --config.optim.lr_decay=0.1 --seeds=5"
  [mixture4-flow-tilted]="--config=experiments/mixture4_flow.py --config.sampler.flow_tilted=True --config.optim.lr_decay=0.1 --seeds=5"
  [mixture4-jarzynski-ess-decay]="--config=experiments/mixture4_jarzynski.py --config.optim.lr_decay=0.1 --sweep=sampler.ess_threshold=0.1,0.5,0.9 --seeds=5"
  [mixture4-jarzynski-n4e4-decay]="--config=experiments/mixture4_jarzynski.py --config.sampler.num_particles=40000 --config.optim.lr_decay=0.1 --config.sampler.ess_threshold=0.9 --seeds=5"
  [mixture4-jarzynski-n1e4-decay]="--config=experiments/mixture4_jarzynski.py --config.sampler.num_particles=10000 --config.optim.lr_decay=0.1 --config.sampler.ess_threshold=0.9 --seeds=5"
  [mixture4-jarzynski-n4e4-decay001]="--config=experiments/mixture4_jarzynski.py --config.sampler.num_particles=40000 --config.optim.lr_decay=0.01 --config.sampler.ess_threshold=0.9 --seeds=5"
  # n = 16000 training points: a quarter of the binomial error of n = 4000 in the data's own mode fractions
  [mixture4-n16000]="--config=experiments/mixture4.py --config.data.num_train=16000 --sweep=train.restart_prob=0 --seeds=5"
  [mixture4-jarzynski-weighted]="--config=experiments/mixture4_jarzynski.py --config.optim.lr_decay=0.1 --config.sampler.ess_threshold=0.9 --seeds=5"
  [mixture4-jarzynski-n16000]="--config=experiments/mixture4_jarzynski.py --config.data.num_train=16000 --config.sampler.num_particles=40000 --config.optim.lr_decay=0.01 --config.sampler.ess_threshold=0.9 --seeds=5"
)
ORDER=(sphere3d-lr sphere3d sphere3d-monomodal sphere3d-monomodal-half-steps teacher teacher-lr teacher-n1e5 teacher-n1e5-step study-p study-neuron-step
       study-particle-step study-regime study-best-p mixture4 mixture4-sm mixture4-flow
       mixture4-jarzynski mixture4-jarzynski-n1e4 mixture4-flow-decay mixture4-flow-decay001
       mixture4-flow-n4000-decay mixture4-flow-tilted mixture4-jarzynski-ess-decay
       mixture4-jarzynski-n1e4-decay mixture4-jarzynski-n4e4-decay mixture4-jarzynski-n4e4-decay001
       mixture4-n16000 mixture4-jarzynski-n16000 mixture4-jarzynski-weighted)
for name in "${@:-${ORDER[@]}}"; do
  [[ -n "${GRIDS[$name]:-}" ]] || { echo "unknown grid $name; one of: ${ORDER[*]}" >&2; exit 2; }
  echo "=== $name"
  # shellcheck disable=SC2086  # the flags are one word each
  sweep "$name" ${GRIDS[$name]}
done
