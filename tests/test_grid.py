"""Grids as one compiled program (experiments.grid, experiments.sweep)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import mixture2d, sphere3d
from experiments.grid import grid_members, run_grid, shape_changing_keys
from experiments.harness import train_and_evaluate
from experiments.sweep import SweepError, parse_seeds, parse_sweeps
from tests.test_experiments import resume_case, tiny

REPO = Path(__file__).resolve().parent.parent


def eval_rows(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"]


def test_grid_members_equal_separate_runs(tmp_path):
    """2 restart probabilities × 2 seeds in one vmapped program: each member's final KL
    is the one of the same config run alone, to 1e-5 relative (the vmapped reductions
    round differently; the runs are otherwise the same computation)."""
    config = tiny(sphere3d.get_config(), num_steps=40)
    sweeps = {"train.restart_prob": [0.0, 1.0]}
    table = run_grid(config, sweeps, [0, 1], tmp_path / "grid", "cmd", progress=False)
    finals = {}
    for row in eval_rows(tmp_path / "grid"):
        finals[row["member"]] = row
    members = grid_members(config, sweeps, [0, 1])
    assert len(members) == 4 and len(finals) == 4
    for member in (members[0], members[3]):
        alone = train_and_evaluate(member.config, tmp_path / f"alone{member.index}",
                                   progress=False)["final"]
        assert finals[member.index]["kl"] == pytest.approx(alone["kl"], rel=1e-5)
    with open(tmp_path / "grid" / "results.csv") as f:
        results = list(csv.DictReader(f))
    assert {"member", "train.restart_prob", "seed", "step", "kl"} <= set(results[0])
    assert len(results) == 4 * 3  # members × evaluations at steps 0, 20, 40
    kls = [finals[m.index]["kl"] for m in members if m.values["train.restart_prob"] == 1.0]
    mean = np.mean(kls)
    stderr = np.std(kls, ddof=1) / np.sqrt(2)
    assert f"| 1.0 | 2/2 | " in table and f"{mean:.4g} ± {stderr:.2g}" in table
    for name in ("table.md", "grid_metrics.png", "grid_final.png", "grid.json"):
        assert (tmp_path / "grid" / name).stat().st_size > 0


def test_diverged_member_is_frozen_and_the_others_go_on(tmp_path):
    config = tiny(sphere3d.get_config(), num_steps=40)
    table = run_grid(config, {"optim.weight_learning_rate": [0.02, 1e4]}, [0], tmp_path, "cmd",
                     progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    diverged = [r for r in rows if r["kind"] == "diverged"]
    assert [r["member"] for r in diverged] == [1]
    last_steps = {m: max(r["step"] for r in rows if r.get("member") == m and r["kind"] == "eval")
                  for m in (0, 1)}
    assert last_steps[0] == 40 and last_steps[1] < 40
    assert "| 0.02 | 1/1 |" in table and "| 10000.0 | 0/1 |" in table
    assert "Diverged" in table


def test_shape_changing_keys_run_one_program_per_shape(tmp_path, capsys):
    """2 particle counts × 2 restart probabilities × 2 seeds: 2 programs of 4 members, and
    each member equals its run alone."""
    config = tiny(mixture2d.get_config(), num_steps=20)
    assert shape_changing_keys({"sampler.num_particles": [64], "seed": [0]}) == [
        "sampler.num_particles"]
    sweeps = {"sampler.num_particles": [64, 128], "train.restart_prob": [0.0, 0.5]}
    run_grid(config, sweeps, [0, 1], tmp_path, "cmd", progress=False)
    out = capsys.readouterr().out
    assert "8 members as 2 compiled programs" in out
    for number in ("000", "001"):
        assert (tmp_path / "programs" / number / "metrics.jsonl").exists()
    with open(tmp_path / "results.csv") as f:
        results = list(csv.DictReader(f))
    assert {r["sampler.num_particles"] for r in results} == {"64", "128"}
    assert {r["member"] for r in results} == {str(i) for i in range(8)}
    last = {int(r["member"]): r for r in results}  # rows in step order: the final evaluation
    member = grid_members(config, sweeps, [0, 1])[7]  # 128 particles, p = 0.5, seed 1
    alone = train_and_evaluate(member.config, tmp_path / "alone", progress=False)["final"]
    assert float(last[7]["test_nll"]) == pytest.approx(alone["test_nll"], rel=1e-5)
    # Rerunning the finished grid rewrites its reports but trains nothing, so it adds no
    # session to the recorded wall times.
    timings = [tmp_path / "timing.json", tmp_path / "programs" / "000" / "timing.json"]
    before = [json.loads(path.read_text())["sessions"] for path in timings]
    assert all(len(sessions) == 1 for sessions in before)
    run_grid(config, sweeps, [0, 1], tmp_path, "cmd", progress=False)
    assert "finished before this session" in capsys.readouterr().out
    assert [json.loads(path.read_text())["sessions"] for path in timings] == before


def test_swept_data_size_keeps_linked_particle_count(tiny_teacher_config):
    """A config with sampler.num_particles = 2 × data.num_train (a field reference, as in
    experiments/teacher.py) keeps N = 2n for every swept n."""
    config = tiny_teacher_config
    config.sampler.num_particles = config.data.get_ref("num_train") * 2
    members = grid_members(config, {"data.num_train": [64, 128]}, [0])
    assert [m.config.sampler.num_particles for m in members] == [128, 256]


def test_sweep_values_are_parsed_by_their_key_type(tiny_teacher_config):
    config = tiny_teacher_config
    with pytest.raises(SweepError, match="1000.7"):
        parse_sweeps(config, ["sampler.num_particles=1000.7"])
    assert parse_sweeps(config, ["sampler.antithetic=true,false"]) == {
        "sampler.antithetic": [True, False]}
    with pytest.raises(SweepError, match="bool"):
        parse_sweeps(config, ["sampler.antithetic=maybe"])
    assert parse_sweeps(config, ["model.hidden_sizes=[64,64],[128]"]) == {
        "model.hidden_sizes": [(64, 64), (128,)]}
    with pytest.raises(SweepError, match="finite"):
        parse_sweeps(config, ["train.restart_prob=inf"])
    assert parse_sweeps(config, ["train.restart_prob=0,1/60"]) == {
        "train.restart_prob": [0.0, 1 / 60]}
    with pytest.raises(SweepError):
        parse_sweeps(config, ["train.restart_prob=1/0"])
    assert parse_sweeps(config, ["optim.weight_cap=None,5"]) == {"optim.weight_cap": [None, 5.0]}
    with pytest.raises(SweepError, match="no such config entry"):
        parse_sweeps(config, ["train.restart_probb=1"])
    assert parse_seeds(["3"]) == [0, 1, 2] and parse_seeds(["4", "7"]) == [4, 7]
    with pytest.raises(SweepError):
        parse_seeds(["x"])


SWEEP_ARGS = ["--config=experiments/sphere3d.py", "--sweep=train.restart_prob=0,1", "--seeds=2",
              "--config.data.num_train=256", "--config.data.num_test=256",
              "--config.sampler.num_particles=256", "--config.model.num_neurons=16",
              "--config.train.num_steps=300", "--config.train.log_every=10",
              "--config.train.eval_every=100", "--config.train.checkpoint_every=20",
              "--config.eval.grid_size=24"]


def sweep_command(workdir):
    return [sys.executable, "-m", "experiments.sweep", *SWEEP_ARGS, f"--workdir={workdir}"]


def newest_checkpoint(workdir) -> int:
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=-1)


@pytest.mark.slow
def test_grid_resumes_exactly_after_sigkill(tmp_path):
    """SIGKILL the grid twice mid-run (each time once a newer checkpoint than the last
    kill's has appeared, so the kill lands between or during saves), restart it: the
    metrics and the results equal those of a straight run."""
    straight = subprocess.run(sweep_command(tmp_path / "straight"), cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed, reached = tmp_path / "killed", -1
    for _ in range(2):
        process = subprocess.Popen(sweep_command(killed), cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while newest_checkpoint(killed) <= max(reached, 0) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert newest_checkpoint(killed) > reached
        reached = newest_checkpoint(killed)
    assert 0 < reached < 300
    resumed = subprocess.run(sweep_command(killed), cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming the grid" in resumed.stdout
    assert ((killed / "metrics.jsonl").read_text()
            == (tmp_path / "straight" / "metrics.jsonl").read_text())
    assert (killed / "results.csv").read_text() == (tmp_path / "straight" / "results.csv").read_text()


def test_grid_of_streamed_mnist_runs_as_one_program(tmp_path):
    """Streamed uint8 batches per member (each member reads its own seed's stream)."""
    config = resume_case("mnist-streamed", tmp_path)  # tiny MNIST on fake IDX files
    config.train.num_steps = 20
    run_grid(config, {"train.restart_prob": [0.0, 1.0]}, [0, 1], tmp_path / "grid", "cmd",
             progress=False, programs="one")
    rows = [json.loads(line) for line in (tmp_path / "grid" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train" and r["step"] == 20]
    assert sorted(r["member"] for r in train_rows) == [0, 1, 2, 3]
    fractions = {r["member"]: r["restart_fraction"] for r in train_rows}
    assert fractions[0] == fractions[1] == 0.0 and fractions[2] == fractions[3] == 1.0


def test_conv_grid_on_cpu_runs_one_program_per_member(tmp_path, capsys):
    """programs='auto' with a conv energy on CPU: each member its own program (vmapping
    members makes grouped convolutions, 3× slower there); the reports cover every member,
    which match the same grid run as one program, and grid_samples.png shows them."""
    config = resume_case("mnist-streamed", tmp_path)
    config.train.num_steps = 10
    config.train.eval_every = 10
    sweeps = {"train.restart_prob": [0.0, 1.0]}
    run_grid(config, sweeps, [0], tmp_path / "auto", "cmd", progress=False)
    assert "2 compiled programs, one after another" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "auto" / "programs").iterdir()) == ["000", "001"]
    assert (tmp_path / "auto" / "grid_samples.png").stat().st_size > 0
    run_grid(config, sweeps, [0], tmp_path / "one", "cmd", progress=False, programs="one")
    def rows(name):
        with open(tmp_path / name / "results.csv") as f:
            return sorted(csv.DictReader(f), key=lambda r: (int(r["member"]), int(r["step"])))

    auto, one = rows("auto"), rows("one")
    assert len(auto) == len(one) == 4  # 2 members × evaluations at steps 0 and 10
    for a, b in zip(auto, one):
        np.testing.assert_allclose(float(a["test_energy_gap"]), float(b["test_energy_gap"]),
                                   rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="programs='two'"):
        run_grid(config, sweeps, [0], tmp_path / "bad", "cmd", progress=False, programs="two")
