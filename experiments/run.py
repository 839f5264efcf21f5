"""Train one energy-based model from a config file.

    python -m experiments.run                                   # the d = 15 teacher
    python -m experiments.run --config=experiments/sphere3d.py --workdir=/tmp/s3
    python -m experiments.run --config.train.restart_prob=0.1 --config.seed=3

Writes into --workdir (default workdirs/<config file name>): config.json,
run_info.json (versions, git commit), metrics.jsonl, checkpoints/, metrics.png,
samples.png (2-D and S^2 tasks) and summary.json. Starting again on a workdir
with a checkpoint resumes it exactly; SIGTERM / Ctrl-C saves and exits.

Several processes (one per host, or several on one machine for testing):

    python -m experiments.run --num_processes=2 --process_id=0 --coordinator_address=127.0.0.1:9911 &
    python -m experiments.run --num_processes=2 --process_id=1 --coordinator_address=127.0.0.1:9911

Each process loads its share of every batch; process 0 writes the files and prints.

Exit status: 0 done or preempted (checkpoint saved), 1 diverged, 2 invalid config,
workdir or data file.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/teacher.py",
    "Config file (ml_collections); override keys with --config.a.b=v.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default workdirs/<config name>).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0, to run as one of several processes (jax.distributed); on a "
    "cluster that JAX detects (SLURM, TPU pods) leave it unset and pass --num_processes=0.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 1, "Processes of a multi-process run (1: a single process; 0: let "
    "jax.distributed.initialize() detect them from the cluster environment).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Start afresh in a workdir holding a run with another config "
                               "(the old run is moved aside, not deleted).")


def default_workdir(config_path: str) -> Path:
    """workdirs/<config file stem>[-<variant>] for --config=path.py[:variant]."""
    path, _, variant = config_path.partition(":")
    return Path("workdirs") / (Path(path).stem + (f"-{variant}" if variant else ""))


def print_summary(workdir: Path, summary: dict) -> None:
    rate = summary["steps_per_second_this_session"]
    print(f"\nworkdir: {workdir}")
    print(f"{summary['steps']} steps" + (f", {rate:.1f} steps/s" if rate else "")
          + f" on {summary['devices']}, T = {summary['temperature']:g}")
    for name, value in summary["final"].items():
        if name not in ("step", "kind"):
            print(f"  {name:>28s}: {summary['initial'].get(name, float('nan')):.5g} -> {value:.5g}")


def start_processes() -> None:
    """jax.distributed.initialize() for a run of several processes (before JAX starts).

    On CPU the collectives go through gloo, so several processes on one machine form
    one mesh (how multi-host code is tested without a cluster)."""
    if _NUM_PROCESSES.value == 1:
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if _NUM_PROCESSES.value == 0:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    start_processes()
    # Imported here so that --help and flag errors come back before JAX starts.
    from experiments.harness import Diverged, Preempted, WorkdirError, train_and_evaluate
    from ebmdual.data import DatasetError
    from experiments.validation import ConfigError

    workdir = Path(_WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename))
    hint = shlex.join(["python", "-m", "experiments.run", *sys.argv[1:]]
                      + ([] if _WORKDIR.value else [f"--workdir={workdir}"]))
    try:
        summary = train_and_evaluate(_CONFIG.value, workdir, overwrite=_OVERWRITE.value,
                                     resume_hint=hint)
    except (ConfigError, WorkdirError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Diverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Preempted as error:
        print(f"\n{error}")
        return 0
    import jax

    if jax.process_index() == 0:
        print_summary(workdir, summary)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
