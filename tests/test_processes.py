"""Several processes: `experiments.run` under `jax.distributed` equals one process.

Two processes on this machine (gloo collectives on CPU, one device each, one
2-device mesh) run the tiny d = 3 teacher for 200 steps; a single process runs the
same command. Each process of the pair loads its share of the data and holds half
the particles; process 0 writes the files. The metrics lines and the final
checkpoint's parameters and particles agree to 1e-5: the runs differ only in how
the reductions over particles are split between devices (float32 rounding).
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

TINY = ["--config.data.dim=3", "--config.data.num_train=64", "--config.data.num_test=64",
        "--config.model.num_neurons=8", "--config.model.num_positive=4",
        "--config.sampler.num_particles=64", "--config.train.num_steps=200",
        "--config.train.log_every=20", "--config.train.eval_every=100",
        "--config.train.checkpoint_every=100", "--config.optim.feature_learning_rate=0.2",
        "--config.optim.weight_learning_rate=0.2", "--config.eval.grid_size=40"]
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(workdir, *extra):
    return [sys.executable, "-m", "experiments.run", *TINY, f"--workdir={workdir}", *extra]


def restore_numpy(path: Path) -> dict:
    """A checkpointed state as NumPy arrays, whatever the devices that wrote it."""
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, restore_args=args)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    single = subprocess.run(run_command(tmp_path / "one"), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    address = f"127.0.0.1:{free_port()}"
    pair = [subprocess.Popen(run_command(tmp_path / "two", "--num_processes=2",
                                         f"--process_id={i}", f"--coordinator_address={address}"),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in pair]
    for process, (out, err) in zip(pair, outputs):
        assert process.returncode == 0, err[-2000:]
    assert "2 x cpu in 2 processes" in outputs[0][0]
    assert "workdir:" not in outputs[1][0]  # only process 0 prints the summary

    one = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in one] == [r["step"] for r in two] and len(one) == 13
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for name, value in a.items():
            if isinstance(value, float):
                assert abs(value - b[name]) <= 1e-5 * max(1.0, abs(value)), (a["step"], name)
    states = [restore_numpy(tmp_path / run / "checkpoints" / "200" / "state")
              for run in ("one", "two")]
    assert states[0]["step"] == states[1]["step"] == 200
    for part in ("params", "particles"):
        for a, b in zip(jax.tree.leaves(states[0][part]), jax.tree.leaves(states[1][part])):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
