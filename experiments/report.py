"""Tables from a finished grid: a metric at chosen iterations, mean ± SE over seeds.

    python -m experiments.report workdirs/sphere3d --metric=kl --steps=0,1000,4000

reads the grid's `results.csv` (written by `experiments.sweep`) and prints a markdown
table with one row per grid point (the swept values other than the seed) and one column
per iteration: mean ± standard error (sample std / √seeds) of the metric over the seeds
evaluated at that iteration. `--steps` defaults to the last evaluated iteration. The
grid's wall time (`timing.json`) is printed under the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from experiments.grid import mean_and_stderr


def format_value(mean: float, err: float) -> str:
    return f"{mean:.3g}" + ("" if math.isnan(err) else f" ± {err:.2g}")


def metric_table(workdir: Path, metric: str, steps: list[int] | None = None) -> str:
    """The markdown table of `metric` at `steps` (default: the last evaluation)."""
    path = workdir / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the grid first")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows or metric not in rows[0]:
        known = [k for k in (rows[0] if rows else {}) if k not in ("member", "step")]
        raise KeyError(f"{metric!r} is not a column of {path}; columns: {', '.join(known)}")
    keys = list(rows[0])[1:list(rows[0]).index("step")]  # the swept keys: member, *keys, step
    point_keys = [k for k in keys if k != "seed"]
    steps = steps or [max(int(r["step"]) for r in rows)]
    values: dict[tuple, dict[int, list[float]]] = {}
    for row in rows:
        point = tuple(row[k] for k in point_keys)
        step = int(row["step"])
        if step in steps and row[metric] != "":
            values.setdefault(point, {}).setdefault(step, []).append(float(row[metric]))
    header = [*point_keys, "seeds", *(f"{metric} at {s}" for s in steps)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point, by_step in values.items():
        seeds = max(len(v) for v in by_step.values())
        cells = [format_value(*mean_and_stderr(by_step[s])) if s in by_step else "—"
                 for s in steps]
        lines.append("| " + " | ".join([*point, str(seeds), *cells]) + " |")
    timing = workdir / "timing.json"
    if timing.exists():
        info = json.loads(timing.read_text())
        lines += ["", f"Wall time: {info['seconds']:.0f} s for {info['members']} members "
                      f"({info['mode']}), 2 CPU cores."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--metric", default="kl")
    parser.add_argument("--steps", default="", help="comma-separated iterations")
    args = parser.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s] or None
        print(metric_table(args.workdir, args.metric, steps))
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
