"""Sweep config keys over values and seeds: a grid, run as one compiled program when it can be.

    python -m experiments.sweep --config=experiments/teacher.py \
        --sweep=train.restart_prob=0,0.025,1 --sweep=optim.feature_learning_rate=0.1,0.2 \
        --seeds=5 --workdir=workdirs/grid

Several --sweep flags form a cartesian product; --seeds is a count (seeds 0..n−1) or a
list (0,3,7). When every swept key is an array of the compiled step (restart_prob,
step sizes, temperature, learning rates, weight cap, seed) the whole grid is one
vmapped, jitted program (`experiments.grid`); keys that change shapes or the program
(particle count, network size, data size, dimension, loss, restart schedule) split the
grid into one such program per combination of their values, run one after another, and
the output says so. A config may tie keys together with field references (teacher.py:
sampler.num_particles = 2 × data.num_train), and swept values keep the tie.

Values are parsed by the type of the key's default: floats take fractions (1/60), integers
refuse 1000.7, booleans take
true/false, tuples are written in brackets (--sweep=model.hidden_sizes=[64,64],[128,128]),
None is accepted where the default is None or the key allows it (optim.weight_cap).

Writes into --workdir: grid.json, metrics.jsonl (rows carry "member"), checkpoints/,
results.csv, table.md (mean ± SE over seeds per grid point), grid_metrics.png and
grid_final.png. Starting the same command again resumes the grid (exactly, after SIGTERM
or SIGKILL). Exit status: 0 done or preempted, 2 invalid sweep, config or workdir.
"""

from __future__ import annotations

import ast
import fractions
import shlex
import sys
from pathlib import Path

from types import SimpleNamespace

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.run import DEFAULT_CONFIG, describe_flag_error

_FLAGS = SimpleNamespace()  # the flag holders, once defined and parsed


def _parse_flags_or_exit(argv):
    """Define and parse the flags; any problem is one line and exit status 2."""
    try:
        holders = SimpleNamespace(
            config=config_flags.DEFINE_config_file(
                "config", DEFAULT_CONFIG, "Base config file.", lock_config=True, sys_argv=argv),
            sweep=flags.DEFINE_multi_string("sweep", [], "key=v1,v2,...: a swept config key "
                                            "(repeatable)."),
            seeds=flags.DEFINE_list("seeds", ["3"], "A count n (seeds 0..n-1) or a list."),
            workdir=flags.DEFINE_string("workdir", "workdirs/sweep", "Directory of the sweep."),
            programs=flags.DEFINE_enum("programs", "auto", ["auto", "one", "per_member"],
                                       "one: the members as one vmapped program; per_member: "
                                       "one program per member, one after another; auto: "
                                       "per_member for convolutional energies on CPU "
                                       "(3-4x faster there), one otherwise."))
        remaining = flags.FLAGS(argv)
        holders.config.value.keys()  # a config file that failed to load raises when read
    except Exception as error:  # noqa: BLE001 - config files can raise anything
        print(f"error: {describe_flag_error(error, argv)}", file=sys.stderr)
        sys.exit(2)
    vars(_FLAGS).update(vars(holders))
    return remaining

NONE_ALLOWED = ("optim.weight_cap",)


class SweepError(ValueError):
    """A --sweep or --seeds value that does not fit its key."""


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets: '[1,2],[3,4]' -> ['[1,2]', '[3,4]']."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[(" and 1 or 0
        depth -= char in "])" and 1 or 0
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def lookup(config, dotted: str):
    node = config
    *path, name = dotted.split(".")
    for part in path:
        if part not in node:
            raise SweepError(f"--sweep={dotted}: no such config entry")
        node = node[part]
    if name not in node:
        raise SweepError(f"--sweep={dotted}: no such config entry")
    return node[name]


def parse_value(key: str, raw: str, current):
    """`raw` as a value of the type of `current` (the key's default); SweepError if it
    does not fit."""
    bad = SweepError(f"--sweep={key}: {raw!r} is not a {type(current).__name__} "
                     f"(the type of its default {current!r})")
    if raw.lower() == "none":
        if current is None or key in NONE_ALLOWED:
            return None
        raise bad
    if isinstance(current, bool):
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise bad
    if isinstance(current, int):
        try:
            return int(raw)
        except ValueError:
            raise bad from None
    if isinstance(current, float) or (current is None and key in NONE_ALLOWED):
        try:
            value = float(fractions.Fraction(raw)) if "/" in raw else float(raw)
        except (ValueError, ZeroDivisionError):
            raise bad from None
        if value != value or value in (float("inf"), float("-inf")):
            raise SweepError(f"--sweep={key}: {raw!r} is not a finite number")
        return value
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise bad from None
        if not isinstance(value, (tuple, list)):
            raise bad
        items = list(current)
        kind = type(items[0]) if items else None
        if kind is not None and not all(type(v) is kind for v in value):
            raise SweepError(f"--sweep={key}: {raw!r}: expected a list of {kind.__name__}")
        return tuple(value)
    if isinstance(current, str):
        return raw
    raise bad


def parse_sweeps(config, specs: list[str]) -> dict:
    """{key: [values]} from --sweep=key=v1,v2 specs, each value parsed by its key's type."""
    sweeps = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        if not sep or not raw:
            raise SweepError(f"--sweep={spec}: expected key=value1,value2,...")
        if key in sweeps:
            raise SweepError(f"--sweep={key} is given twice")
        current = lookup(config, key)
        values = [parse_value(key, v, current) for v in split_values(raw)]
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"--sweep={key}: repeated values")
        sweeps[key] = values
    return sweeps


def parse_seeds(raw: list[str]) -> list[int]:
    """['5'] -> [0..4]; ['0', '3'] -> [0, 3]."""
    try:
        seeds = [int(s) for s in raw]
    except ValueError:
        raise SweepError(f"--seeds={','.join(raw)}: expected a count or a list of integers") from None
    if len(seeds) == 1:
        if seeds[0] < 1:
            raise SweepError("--seeds: a count must be >= 1")
        return list(range(seeds[0]))
    if min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds={','.join(raw)}: expected distinct integers >= 0")
    return seeds


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    command = shlex.join(["python", "-m", "experiments.sweep", *sys.argv[1:]])
    from experiments.grid import run_grid
    from experiments.harness import exit_status

    config_name = Path(flags.FLAGS["config"].config_filename.partition(":")[0]).stem
    try:
        sweeps = parse_sweeps(_FLAGS.config.value, _FLAGS.sweep.value)
        seeds = parse_seeds(_FLAGS.seeds.value)
        print(run_grid(_FLAGS.config.value, sweeps, seeds, Path(_FLAGS.workdir.value), command,
                       title=config_name, programs=_FLAGS.programs.value))
    except Exception as error:  # noqa: BLE001 (exit_status picks the kinds it reports)
        status = exit_status(error, usage_errors=(SweepError,))
        if status is None:
            raise
        return status
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags_or_exit)
