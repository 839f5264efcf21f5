"""Sweep one config key over values and seeds; write a table of final metrics.

    python -m experiments.sweep --config=experiments/sphere3d.py \
        --key=train.restart_prob --values=0,0.025,0.25,1 --seeds=0,1,2 \
        --workdir=workdirs/sweep-restart

Each (value, seed) is an ordinary run in <workdir>/<key>=<value>/seed=<seed> (so an
interrupted sweep resumes run by run), and <workdir>/table.md gets, for every final
evaluation metric, the mean over seeds ± its standard error (std/√seeds).

Runs go one after another, each compiled anew (about a second on CPU). Running a grid as
one vmapped program is left for later; the hyperparameters are already arrays of the
compiled step, so it needs no change to the train step.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/sphere3d.py", "Base config file.",
                                          lock_config=True)
_KEY = flags.DEFINE_string("key", "train.restart_prob", "Dotted config key to sweep.")
_VALUES = flags.DEFINE_list("values", ["0", "0.025", "0.25", "1"], "Values of --key.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/sweep", "Directory of the sweep.")


def set_key(config, dotted: str, raw: str):
    """A copy of `config` with `dotted` set to `raw` parsed as the key's current type."""
    config = config.copy_and_resolve_references()
    *path, name = dotted.split(".")
    node = config
    for part in path:
        node = node[part]
    if name not in node:
        raise KeyError(f"--key={dotted}: no such config entry")
    current = node[name]
    node[name] = type(current)(float(raw)) if isinstance(current, (int, float)) else raw
    return config


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and std/√n (sample std, ddof = 1); stderr is nan for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def format_table(key: str, results: dict[str, list[dict]], command: str) -> str:
    """Markdown: one row per value, one column per final metric, mean ± SE over seeds."""
    metrics = sorted({m for runs in results.values() for r in runs for m in r
                      if m not in ("step", "kind")})
    lines = [f"Command: `{command}`", "",
             f"| {key} | seeds | " + " | ".join(metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for value, runs in results.items():
        cells = []
        for m in metrics:
            mean, err = mean_and_stderr([r[m] for r in runs])
            cells.append(f"{mean:.4g}" + ("" if math.isnan(err) else f" ± {err:.2g}"))
        lines.append(f"| {value} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_sweep(config, key, values, seeds, workdir: Path, command: str, progress=True) -> str:
    """Run every (value, seed), write workdir/table.md and results.json, return the table."""
    from experiments.harness import train_and_evaluate

    results = {}
    for value in values:
        runs = []
        for seed in seeds:
            run_config = set_key(config, key, value)
            run_config.seed = int(seed)
            print(f"--- {key}={value} seed={seed}")
            summary = train_and_evaluate(run_config, workdir / f"{key}={value}" / f"seed={seed}",
                                         progress=progress)
            runs.append(summary["final"])
        results[value] = runs
    table = format_table(key, results, command)
    (workdir / "table.md").write_text(table)
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    return table


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    command = shlex.join(["python", "-m", "experiments.sweep", *sys.argv[1:]])
    from ebmdual.data import DatasetError
    from experiments.harness import Diverged, Preempted, WorkdirError
    from experiments.validation import ConfigError

    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(run_sweep(_CONFIG.value, _KEY.value, _VALUES.value, _SEEDS.value, workdir, command))
    except (ConfigError, WorkdirError, DatasetError, Diverged, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Preempted as error:
        print(f"\n{error}\nStart the sweep again to resume it.")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
