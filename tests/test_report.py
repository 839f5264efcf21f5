"""experiments.report: tables of a grid's results.csv (a handmade file, no training)."""

import csv

import numpy as np
import pytest

from experiments.report import main, metric_table, per_seed_table


def write_results(path, kls):
    """kls: {(p, seed): (kl at 0, kl at 10)}, the layout experiments.grid writes."""
    with open(path / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["member", "train.restart_prob", "seed", "step", "kl"])
        for member, ((p, seed), values) in enumerate(kls.items()):
            for step, kl in zip((0, 10), values):
                writer.writerow([member, p, seed, step, kl])


def test_table_and_paired_differences(tmp_path):
    kls = {(0.0, 0): (1.0, 0.10), (0.0, 1): (1.0, 0.20), (0.0, 2): (1.0, 0.30),
           (1.0, 0): (1.0, 0.11), (1.0, 1): (1.0, 0.23), (1.0, 2): (1.0, 0.32)}
    write_results(tmp_path, kls)
    table = metric_table(tmp_path, "kl", [0, 10], ("train.restart_prob", "0"))
    row = [line for line in table.splitlines() if line.startswith("| 1.0 |")][0]
    finals = np.array([0.11, 0.23, 0.32])
    mean, se = finals.mean(), finals.std(ddof=1) / np.sqrt(3)
    assert f"{mean:.3g} ± {se:.2g}" in row
    diffs = finals - np.array([0.10, 0.20, 0.30])  # paired by seed: 0.01, 0.03, 0.02
    assert f"{diffs.mean():.3g} ± {diffs.std(ddof=1) / np.sqrt(3):.2g}" in row
    assert "| 0.0 | 3 | 1 ± 0 | 0.2 ± 0.058 | — |" in table


def test_bad_requests_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path), "--metric=kl"]) == 2
    assert "run the grid first" in capsys.readouterr().err
    write_results(tmp_path, {(0.0, 0): (1.0, 0.1)})
    assert main([str(tmp_path), "--metric=nll"]) == 2
    assert "columns" in capsys.readouterr().err
    with pytest.raises(KeyError, match="not swept"):
        metric_table(tmp_path, "kl", None, ("data.dim", "3"))


def test_wall_time_accumulates_over_sessions(tmp_path):
    """A resumed or re-reported grid adds its session to the recorded wall time."""
    from experiments.grid import add_wall_time

    path = tmp_path / "timing.json"
    assert add_wall_time(path, 100.0, members=3) == 100.0
    assert add_wall_time(path, 2.5, members=3) == 102.5
    path.write_text('{"seconds": 7.0, "mode": "one program"}')  # written before sessions
    assert add_wall_time(path, 1.0) == 8.0
    path.write_text("{torn")
    assert add_wall_time(path, 1.0) == 1.0


def test_per_seed_table(tmp_path):
    write_results(tmp_path, {(0.0, 0): (1.0, 0.1), (1.0, 0): (1.0, 0.25)})
    table = per_seed_table(tmp_path, ["kl"])
    assert "| 1.0 | 0 | 0.25 |" in table and "| 0.0 | 0 | 0.1 |" in table
