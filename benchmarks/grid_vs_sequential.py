"""Wall time of a grid run as one compiled program against the same runs one after another.

    python -m benchmarks.grid_vs_sequential                       # 3 restart probs × 5 seeds, d = 15
    python -m benchmarks.grid_vs_sequential --steps=400 --seeds=2  # a quick look

Both sides are whole commands, as a user runs them (each in a fresh process, timed from
start to exit, compile, evaluation, checkpoints and plots included):

* one program: `python -m experiments.sweep --config=experiments/teacher.py
  --sweep=train.restart_prob=<values> --seeds=<n>`;
* one after another: `python -m experiments.run --config=experiments/teacher.py
  --config.train.restart_prob=<p> --config.seed=<s>` for every member.

It then checks that every member's final KL is the same in both (to 1e-4 relative; the
vmapped reductions round differently) and prints the times, the speed-up and the load
average (2 shared cores make timings noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", default="0,0.025,1", help="restart probabilities")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4000, help="train.num_steps")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="grid-timing-"))
    shutil.rmtree(work, ignore_errors=True)
    common = ["--config=experiments/teacher.py", f"--config.train.num_steps={args.steps}"]
    if args.steps % 500:
        common += [f"--config.train.eval_every={args.steps}",
                   f"--config.train.checkpoint_every={args.steps}"]
    values = args.values.split(",")
    grid_seconds = timed([sys.executable, "-m", "experiments.sweep", *common,
                          f"--sweep=train.restart_prob={args.values}", f"--seeds={args.seeds}",
                          f"--workdir={work / 'grid'}"])
    grid_rows = [json.loads(line) for line in (work / "grid" / "metrics.jsonl").read_text().splitlines()]
    grid_final = {}
    for row in grid_rows:
        if row["kind"] == "eval":
            grid_final[row["member"]] = row["kl"]
    sequential_seconds, member = 0.0, 0
    worst = 0.0
    for value in values:
        for seed in range(args.seeds):
            run_dir = work / "runs" / f"{value}-{seed}"
            sequential_seconds += timed([sys.executable, "-m", "experiments.run", *common,
                                         f"--config.train.restart_prob={value}",
                                         f"--config.seed={seed}", f"--workdir={run_dir}"])
            kl = json.loads((run_dir / "summary.json").read_text())["final"]["kl"]
            worst = max(worst, abs(kl - grid_final[member]) / abs(kl))
            member += 1
    members = len(values) * args.seeds
    print(f"d = 15 teacher, {len(values)} restart probabilities × {args.seeds} seeds = {members} "
          f"runs of {args.steps} steps")
    print(f"  one program (experiments.sweep): {grid_seconds:8.1f} s")
    print(f"  one after another (experiments.run × {members}): {sequential_seconds:8.1f} s "
          f"({sequential_seconds / members:.1f} s per run)")
    print(f"  speed-up: {sequential_seconds / grid_seconds:.2f}x; largest relative difference of "
          f"a final KL between the two: {worst:.1e}")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
