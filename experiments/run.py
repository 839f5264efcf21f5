"""Train one energy-based model from a config file.

    python -m experiments.run                                   # the d = 15 teacher
    python -m experiments.run --config=experiments/sphere3d.py --workdir=/tmp/s3
    python -m experiments.run --config.train.restart_prob=0.1 --config.seed=3

Writes into --workdir (default workdirs/<config file name>): config.json,
run_info.json (versions, git commit), metrics.jsonl, checkpoints/, metrics.png,
samples.png (2-D and S^2 tasks) and summary.json. Starting again on a workdir
with a checkpoint resumes it exactly; on a finished run it says so and changes
nothing. One run at a time per workdir: a second is refused, naming the pid of
the first (the lock is workdir/.lock, released when that process ends).

Ctrl-C (or SIGTERM) during training is acknowledged at once; the current chunk
finishes, a checkpoint is saved and the command exits (status 0) printing the
command that resumes. A second Ctrl-C stops at once without saving (status 130;
143 for SIGTERM); the last complete checkpoint stays valid. Ctrl-C before
training starts stops at once (status 130).

Several processes (one per host, or several on one machine for testing):

    python -m experiments.run --num_processes=2 --process_id=0 --coordinator_address=127.0.0.1:9911 &
    python -m experiments.run --num_processes=2 --process_id=1 --coordinator_address=127.0.0.1:9911

Each process loads its share of every batch; process 0 locks the workdir, writes
the files and prints.

Exit status, with one line on stderr for every error:
  0    done, preempted (checkpoint saved), or the run had already finished;
  1    diverged (also: stalled), with rollbacks off or used up;
  2    a problem with the command line, the config, the workdir (in use, another
       config, not a writable directory, unreadable files) or the data files; also a
       write that failed during the run (a full disk): the last complete checkpoint
       is intact, and the same command resumes once the problem is fixed;
  130  Ctrl-C during start-up, or a second Ctrl-C (143: a second SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys


def _stop_during_start_up(signum, frame):
    """Until training starts, Ctrl-C / SIGTERM stop at once: nothing is half-written, since
    every file of the workdir is written atomically and checkpoints are renamed when done."""
    del frame
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    sys.stderr.write(f"\n{name}: stopped before training started (nothing to save; run the "
                     "same command to start again)\n")
    sys.stderr.flush()
    os._exit(128 + signum)


if __name__ == "__main__":  # first, before the slow imports
    for _signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signal, _stop_during_start_up)

import re  # noqa: E402
import shlex  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

DEFAULT_CONFIG = "experiments/teacher.py"
_FLAGS = SimpleNamespace()  # the flag holders, once defined (parse_command_line)


class CommandLineError(ValueError):
    """A flag or config override that cannot be used; the message is one line."""


def define_flags(flag_values=flags.FLAGS, argv=None) -> SimpleNamespace:
    """Define this command's flags in `flag_values`. Defining --config loads the default
    config file and applies its overrides from `argv` when no --config is given, so it
    can raise like parsing can."""
    return SimpleNamespace(
        config=config_flags.DEFINE_config_file(
            "config", DEFAULT_CONFIG,
            "Config file (ml_collections); override keys with --config.a.b=v.",
            flag_values=flag_values, lock_config=True, sys_argv=argv),
        workdir=flags.DEFINE_string(
            "workdir", None, "Output directory (default workdirs/<config name>).",
            flag_values=flag_values),
        coordinator_address=flags.DEFINE_string(
            "coordinator_address", None,
            "host:port of process 0, to run as one of several processes (jax.distributed); on "
            "a cluster that JAX detects (SLURM, TPU pods) leave it unset and pass "
            "--num_processes=0.", flag_values=flag_values),
        num_processes=flags.DEFINE_integer(
            "num_processes", 1, "Processes of a multi-process run (1: a single process; 0: let "
            "jax.distributed.initialize() detect them from the cluster environment).",
            flag_values=flag_values),
        process_id=flags.DEFINE_integer("process_id", None, "This process's index, 0-based.",
                                        flag_values=flag_values),
        overwrite=flags.DEFINE_bool(
            "overwrite", False,
            "Start afresh in a workdir holding a run with another config, or a finished run "
            "(the old run is moved aside to <workdir>.old-<time>, not deleted); an unfinished "
            "run of the same config resumes.", flag_values=flag_values),
    )


def _config_argument(argv) -> str:
    for arg in argv[1:]:
        match = re.match(r"^--?config=(.*)$", arg)
        if match:
            return match.group(1)
    return DEFAULT_CONFIG


def describe_flag_error(error: Exception, argv) -> str:
    """One line for an exception raised while defining or parsing the flags."""
    config_path = _config_argument(argv)
    file = config_path.partition(":")[0]
    if not Path(file).is_file():
        return f"--config={config_path}: no such file"
    if isinstance(error, (KeyError, AttributeError)):  # an override of a key that is not there
        text = str(error).replace("\\'", "'").replace("\\n", "\n")
        key = re.search(r"'([^'\s]+)'", text)
        hint = re.search(r'Did you mean "([^"]+)"', text)
        if key:
            override = next((a.split("=", 1)[0].lstrip("-").removeprefix("no") for a in argv[1:]
                             if re.match(rf"^--?(no)?config\.(.+\.)?{re.escape(key.group(1))}(=|$)",
                                         a)), f"config.{key.group(1)}")
            return (f"--{override}: no such config key in {file}"
                    + (f' (did you mean "{hint.group(1)}"?)' if hint else ""))
    if isinstance(error, flags.Error):
        return " ".join(str(error).split())
    return (f"--config={config_path} could not be loaded: {type(error).__name__}: "
            + " ".join(str(error).split()))


def parse_command_line(argv, flag_values=flags.FLAGS) -> tuple[SimpleNamespace, list[str]]:
    """Define and parse the flags: (flag holders, the remaining arguments). Any problem
    raises CommandLineError with one line."""
    try:
        holders = define_flags(flag_values, argv)
        remaining = flag_values(argv)
        holders.config.value.keys()  # a config file that failed to load raises when read
    except Exception as error:  # noqa: BLE001 - config files can raise anything
        raise CommandLineError(describe_flag_error(error, argv)) from None
    return holders, remaining


def _parse_flags_or_exit(argv):
    """app.run's flags_parser: parse, or print one line and exit with status 2."""
    try:
        holders, remaining = parse_command_line(argv)
    except CommandLineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    vars(_FLAGS).update(vars(holders))
    return remaining


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
    if _FLAGS.num_processes.value == 1:
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if _FLAGS.num_processes.value == 0:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=_FLAGS.coordinator_address.value,
                                   num_processes=_FLAGS.num_processes.value,
                                   process_id=_FLAGS.process_id.value)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    start_processes()
    # Imported here so that --help and flag errors come back before JAX starts.
    from experiments.harness import StoredSummary, exit_status, train_and_evaluate

    workdir = Path(_FLAGS.workdir.value or default_workdir(flags.FLAGS["config"].config_filename))
    hint = shlex.join(["python", "-m", "experiments.run", *sys.argv[1:]]
                      + ([] if _FLAGS.workdir.value else [f"--workdir={workdir}"]))
    try:
        summary = train_and_evaluate(_FLAGS.config.value, workdir,
                                     overwrite=_FLAGS.overwrite.value, resume_hint=hint)
    except Exception as error:  # noqa: BLE001 (exit_status picks the kinds it reports)
        status = exit_status(error)
        if status is None:
            raise
        return status
    import jax

    if jax.process_index() == 0 and not isinstance(summary, StoredSummary):
        print_summary(workdir, summary)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags_or_exit)
