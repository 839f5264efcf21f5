"""Tables from a finished grid: a metric at chosen iterations, mean ± SE over seeds.

    python -m experiments.report workdirs/sphere3d --metric=kl --steps=0,1000,4000

reads the grid's `results.csv` (written by `experiments.sweep`) and prints a markdown
table with one row per grid point (the swept values other than the seed) and one column
per iteration: mean ± standard error (sample std / √seeds) of the metric over the seeds
evaluated at that iteration. `--steps` defaults to the last evaluated iteration. The
grid's wall time (`timing.json`) is printed under the table.

    python -m experiments.report workdirs/study-p --metric=kl --paired=train.restart_prob=0

adds paired differences: for each grid point, metric(point) − metric(baseline) seed by
seed, where the baseline is the point with the given key set to the given value and every
other swept value the same (seeds share their data set across a grid, so the difference
cancels the seed-to-seed spread); mean ± SE of those differences.

    python -m experiments.report workdirs/mixture4 --per_seed --metric=mode_mass_0,mode_mass_1

prints one row per member (its swept values and seed) with several metrics.
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


def read_results(workdir: Path, metrics: list[str]) -> tuple[list[dict], list[str]]:
    """results.csv's rows and its swept keys (seed included); one-line errors."""
    path = workdir / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the grid first")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for metric in metrics:
        if not rows or metric not in rows[0]:
            known = [k for k in (rows[0] if rows else {}) if k not in ("member", "step")]
            raise KeyError(f"{metric!r} is not a column of {path}; columns: {', '.join(known)}")
    return rows, list(rows[0])[1:list(rows[0]).index("step")]  # member, *keys, step, ...


def per_seed_table(workdir: Path, metrics: list[str], step: int | None = None) -> str:
    """One row per member: its swept values (seed included) and `metrics` at `step`
    (default: the last evaluation)."""
    rows, keys = read_results(workdir, metrics)
    step = step if step is not None else max(int(r["step"]) for r in rows)
    header = [*keys, *(f"{m} at {step}" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if int(row["step"]) == step:
            cells = [f"{float(row[m]):.3g}" if row[m] != "" else "—" for m in metrics]
            lines.append("| " + " | ".join([*(row[k] for k in keys), *cells]) + " |")
    return "\n".join(lines)


def metric_table(workdir: Path, metric: str, steps: list[int] | None = None,
                 paired: tuple[str, str] | None = None) -> str:
    """The markdown table of `metric` at `steps` (default: the last evaluation); with
    `paired=(key, value)`, a column of paired differences to that baseline at the last
    of `steps`."""
    path = workdir / "results.csv"
    rows, keys = read_results(workdir, [metric])
    point_keys = [k for k in keys if k != "seed"]
    steps = steps or [max(int(r["step"]) for r in rows)]
    if paired and paired[0] not in point_keys:
        raise KeyError(f"--paired key {paired[0]!r} is not swept in {path}; swept: "
                       f"{', '.join(point_keys)}")
    values: dict[tuple, dict[int, list[float]]] = {}
    by_seed: dict[tuple, dict[str, float]] = {}  # (point) -> {seed: metric at the last step}
    for row in rows:
        point = tuple(row[k] for k in point_keys)
        step = int(row["step"])
        if step in steps and row[metric] != "":
            values.setdefault(point, {}).setdefault(step, []).append(float(row[metric]))
            if step == steps[-1]:
                by_seed.setdefault(point, {})[row.get("seed", row["member"])] = float(row[metric])
    header = [*point_keys, "seeds", *(f"{metric} at {s}" for s in steps)]
    if paired:
        header.append(f"paired difference to {paired[0]}={paired[1]} at {steps[-1]}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point, by_step in values.items():
        seeds = max(len(v) for v in by_step.values())
        cells = [format_value(*mean_and_stderr(by_step[s])) if s in by_step else "—"
                 for s in steps]
        if paired:
            cells.append(_paired_cell(point, point_keys, paired, by_seed))
        lines.append("| " + " | ".join([*point, str(seeds), *cells]) + " |")
    timing = workdir / "timing.json"
    if timing.exists():
        info = json.loads(timing.read_text())
        lines += ["", f"Wall time: {info['seconds']:.0f} s for {info['members']} members "
                      f"({info['mode']}), 2 CPU cores."]
    return "\n".join(lines)


def _paired_cell(point, point_keys, paired, by_seed) -> str:
    key, value = paired
    base = list(point)
    index = point_keys.index(key)
    matches = [p for p in by_seed if all(p[i] == base[i] for i in range(len(base)) if i != index)
               and _same(p[index], value)]
    if not matches or _same(point[index], value):
        return "—"
    ours, theirs = by_seed.get(point, {}), by_seed[matches[0]]
    diffs = [ours[s] - theirs[s] for s in ours if s in theirs]
    return format_value(*mean_and_stderr(diffs)) if diffs else "—"


def _same(text: str, value: str) -> bool:
    try:
        return float(text) == float(value)
    except ValueError:
        return text == value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--metric", default="kl")
    parser.add_argument("--steps", default="", help="comma-separated iterations")
    parser.add_argument("--per_seed", action="store_true", help="one row per member; "
                        "--metric may then be a comma list, shown at the last of --steps")
    parser.add_argument("--paired", default="", help="key=value: the baseline of paired "
                        "differences (same seed, other swept values equal)")
    args = parser.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s] or None
        paired = tuple(args.paired.split("=", 1)) if args.paired else None
        if paired is not None and len(paired) != 2:
            raise ValueError(f"--paired={args.paired}: expected key=value")
        if args.per_seed:
            print(per_seed_table(args.workdir, args.metric.split(","), steps and steps[-1]))
        else:
            print(metric_table(args.workdir, args.metric, steps, paired))
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
