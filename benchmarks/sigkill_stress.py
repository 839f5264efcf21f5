"""Kill a run with SIGKILL many times at random moments; it must always resume exactly.

    python -m benchmarks.sigkill_stress --kills=80

Runs a small d = 3 teacher config straight through once. Then it runs it again in other
workdirs, SIGKILLing it at random moments: a seeded uniform delay covering start-up,
training, checkpoint writes and the final plots. After each kill it restarts the same
command. Whenever a killed run reaches its end, the script checks that its metrics.jsonl
is byte-identical to the straight run's, then starts a new round in a fresh workdir. This
goes on until `--kills` kills have landed mid-run. The script also checks that no
restart printed a traceback. Not a test (it takes minutes); the test suite kills runs a few times
(tests/test_reliability.py, tests/test_grid.py).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--config=experiments/sphere3d.py", "--config.data.num_train=256",
        "--config.data.num_test=256", "--config.sampler.num_particles=256",
        "--config.model.num_neurons=16", "--config.train.num_steps=600",
        "--config.train.log_every=20", "--config.train.eval_every=100",
        "--config.train.checkpoint_every=20", "--config.eval.grid_size=24"]


def command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "experiments.run", *ARGS, f"--workdir={workdir}"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=float, default=12.0,
                        help="kill after a uniform delay in [0.5, window] seconds")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="sigkill-"))
    straight = subprocess.run(command(work / "straight"), cwd=ROOT, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = (work / "straight" / "metrics.jsonl").read_bytes()
    kills = rounds = tracebacks = mismatches = 0
    killed = work / "killed-0"
    while kills < args.kills:
        process = subprocess.Popen(command(killed), cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, args.window))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        out, err = process.communicate()
        tracebacks += "Traceback" in out + err
        if process.returncode == 0:  # the run finished: check it, then start a new round
            rounds += 1
            mismatches += (killed / "metrics.jsonl").read_bytes() != expected
            killed = work / f"killed-{rounds}"
        print(f"kills {kills}/{args.kills}, finished rounds {rounds}: status {process.returncode}",
              flush=True)
    final = subprocess.run(command(killed), cwd=ROOT, capture_output=True, text=True)
    rounds += 1
    mismatches += (killed / "metrics.jsonl").read_bytes() != expected
    tracebacks += "Traceback" in final.stdout + final.stderr
    print(f"{kills} SIGKILLs mid-run over {rounds} runs, each resumed to the end; final restart "
          f"status {final.returncode}; tracebacks {tracebacks}; runs whose metrics.jsonl "
          f"differs from the straight run's: {mismatches}")
    return 0 if not mismatches and final.returncode == 0 and not tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
