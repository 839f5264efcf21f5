"""End-to-end runs of every config, and the guarantees of the harness (issue: runs that survive).

Runs are tiny (tens of steps, hundreds of points) so that the whole file stays
within a couple of minutes on 2 CPU cores; the subprocess tests pay one JAX
start-up each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from ebmdual.checkpoint import Checkpointer
from experiments import (mixture2d, mixture4, mixture4_flow, mixture4_jarzynski, sphere3d,
                         sphere3d_monomodal, teacher, teacher_study)
from experiments.harness import Diverged, WorkdirError, train_and_evaluate
from experiments.validation import ConfigError, validate_config

REPO = Path(__file__).resolve().parent.parent


def tiny(config, num_steps=40):
    """Shrink any task config to a few seconds of work (sizes divisible by 4 devices)."""
    config.data.num_train = 256
    config.data.num_test = 256
    config.sampler.num_particles = 256
    config.train.num_steps = num_steps
    config.train.log_every = 10
    config.train.eval_every = 20
    config.train.checkpoint_every = 20
    config.eval.grid_size = 24
    config.eval.num_samples = 512
    config.eval.num_uniform = 4096
    if config.model.name == "shallow":
        config.model.num_neurons = 16
        config.model.num_positive = min(config.model.num_positive, 8)
    else:
        config.data.batch_size = 64
        config.model.hidden_sizes = (16, 16)
    assert config.model.name != "conv", "image configs: get_config('tiny')"
    return config


def run(config, workdir, **kwargs):
    return train_and_evaluate(config, workdir, progress=False, **kwargs)


def read_lines(workdir):
    return (Path(workdir) / "metrics.jsonl").read_text().splitlines()


def final_state(workdir, config):
    """The newest checkpoint's state as host arrays (restored without a template)."""
    checkpoints = Checkpointer(Path(workdir) / "checkpoints")
    step = checkpoints.steps()[-1]
    import orbax.checkpoint as ocp
    restored = checkpoints._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), metadata=ocp.args.JsonRestore()))
    def to_host(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf)

    return step, jax.tree.map(to_host, restored.state)


@pytest.mark.parametrize("module", [teacher, sphere3d, mixture2d, sphere3d_monomodal,
                                    teacher_study, mixture4, mixture4_flow, mixture4_jarzynski],
                         ids=lambda m: m.__name__)
def test_every_config_runs_end_to_end(module, tmp_path):
    config = tiny(module.get_config())
    summary = run(config, tmp_path / "run")
    assert summary["steps"] == config.train.num_steps
    for name in ("config.json", "run_info.json", "metrics.jsonl", "metrics.png", "summary.json"):
        assert (tmp_path / "run" / name).exists(), name
    final = summary["final"]
    assert all(np.isfinite(v) for k, v in final.items() if k != "kind")
    if module not in (teacher, teacher_study):  # 2-D and S^2 tasks also draw their samples
        assert (tmp_path / "run" / "samples.png").exists()
    # 40 steps already lower the task's main metric: a sign error in the update, a wrong
    # temperature or a broken evaluation would not.
    metric = "test_nll" if module in (mixture2d, mixture4, mixture4_flow,
                                      mixture4_jarzynski) else "kl"
    assert final[metric] < summary["initial"][metric], (summary["initial"], final)


def test_tilted_flow_mcmc_trains_the_flow_with_the_energy(tmp_path):
    """sampler.flow_tilted: the model is q_φ · exp(−E_θ); φ sits in the model's parameters
    and maximum likelihood moves it (its conditioners start at zero, so any nonzero leaf
    was written by training), the sampler state holds no flow of its own, and the test
    NLL falls."""
    config = tiny(mixture4_flow.get_config())
    config.sampler.flow_tilted = True
    config.optim.lr_decay = 0.5
    summary = run(config, tmp_path / "run")
    _, state = final_state(tmp_path / "run", config)
    assert set(state["params"]) == {"energy", "flow"}
    assert "flow" not in state["sampler_state"]
    from experiments.registry import sampler_flow

    initial = jax.tree.leaves(sampler_flow(config, (2,)).init(jax.random.key(0)))
    trained = jax.tree.leaves(state["params"]["flow"])
    zero_at_init = [t for i, t in zip(initial, trained) if not np.any(np.asarray(i))]
    assert zero_at_init and all(np.any(t != 0) for t in zero_at_init)
    assert summary["final"]["test_nll"] < summary["initial"]["test_nll"]
    lines = [json.loads(line) for line in read_lines(tmp_path / "run")]
    lines = [line for line in lines if line["kind"] == "train"]
    assert lines[-1]["learning_rate"] < lines[0]["learning_rate"]  # the decay is logged


def test_default_teacher_kl_falls(tmp_path):
    """A short full-size-model run of the default config lowers KL(p*‖p_θ) markedly."""
    config = teacher.get_config()
    config.data.num_train, config.data.num_test = 2000, 4000
    config.sampler.num_particles = 4000
    config.train.num_steps = config.train.eval_every = config.train.checkpoint_every = 300
    summary = run(config, tmp_path / "run")
    # The initial KL is ~1.1 with a standard error ~1e-2; halving it is far beyond noise.
    assert summary["final"]["kl"] < 0.5 * summary["initial"]["kl"]


def resume_case(name, tmp_path):
    if name == "sphere3d":
        return tiny(sphere3d.get_config(), num_steps=60)
    if name == "mixture2d-sm":  # no sampler: the checkpoint holds no particles
        config = tiny(mixture2d.get_config(), num_steps=60)
        config.train.loss = "sm"
        return config
    from experiments import mnist
    from tests.test_mnist import fake_mnist

    fake_mnist(tmp_path / "mnist", n=400)  # streamed uint8 batches
    config = mnist.get_config("tiny")
    config.train.num_steps = 60
    config.data.path = str(tmp_path / "mnist")
    config.data.num_train, config.data.num_test = 256, 64
    config.sampler.num_particles = 64
    return config


@pytest.mark.parametrize("name", ["sphere3d", "mixture2d-sm", "mnist-streamed"])
def test_resume_is_bitwise_identical(name, tmp_path):
    """Interrupt after k steps (drop the later checkpoints), resume, compare with a straight run."""
    config = resume_case(name, tmp_path)
    config.train.keep_checkpoints = 10
    straight = tmp_path / "straight"
    run(config, straight)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(straight, interrupted)
    for step in (40, 60):
        shutil.rmtree(interrupted / "checkpoints" / str(step))
    (interrupted / "summary.json").unlink()
    run(config, interrupted)
    assert read_lines(interrupted) == read_lines(straight)
    step_a, state_a = final_state(straight, config)
    step_b, state_b = final_state(interrupted, config)
    assert step_a == step_b == 60
    jax.tree.map(np.testing.assert_array_equal, state_a, state_b)


def test_damaged_newest_checkpoint_falls_back(tmp_path):
    config = tiny(sphere3d.get_config())
    workdir = tmp_path / "run"
    run(config, workdir)
    checkpoints = workdir / "checkpoints"
    # A half-copied newer step (no data files) and an unfinished orbax temporary directory.
    (checkpoints / "1000").mkdir()
    (checkpoints / "1000" / "_CHECKPOINT_METADATA").write_text("{")
    (checkpoints / "2000.orbax-checkpoint-tmp-123").mkdir()
    assert 2000 not in Checkpointer(checkpoints).steps()
    summary = run(config, workdir)  # resumes from step 40, the newest readable one
    assert summary["steps"] == 40


def test_divergence_stops_with_step_and_checkpoint(tmp_path):
    config = tiny(mixture2d.get_config())
    config.optim.learning_rate = 1e4
    with pytest.raises(Diverged, match=r"diverged at step \d+: .*Last good checkpoint: step \d+"):
        run(config, tmp_path / "run")


def test_divergence_rollback_finishes(tmp_path):
    config = tiny(mixture2d.get_config())
    config.optim.learning_rate = 1e4
    config.train.on_divergence = "rollback"
    config.train.rollback_lr_factor = 1e-6
    summary = run(config, tmp_path / "run")
    assert summary["steps"] == config.train.num_steps and summary["rollbacks"] >= 1
    rollbacks = [json.loads(line) for line in read_lines(tmp_path / "run") if '"rollback"' in line]
    assert len(rollbacks) == summary["rollbacks"]
    assert rollbacks[-1]["lr_scale"] == pytest.approx(1e-6 ** summary["rollbacks"])


def test_workdir_with_other_config_is_refused_then_moved_aside(tmp_path):
    config = tiny(sphere3d.get_config(), num_steps=20)
    run(config, tmp_path / "run")
    config.train.restart_prob = 0.5
    with pytest.raises(WorkdirError, match="--overwrite"):
        run(config, tmp_path / "run")
    run(config, tmp_path / "run", overwrite=True)
    assert len(list(tmp_path.glob("run.old-*"))) == 1
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["packages"]["jax"] == jax.__version__ and "git_commit" in info


def _invalid(**changes):
    config = tiny(teacher.get_config())
    if any(key.startswith("sampler.jarzynski") for key in changes):
        config.sampler.name = "jarzynski"  # its keys are read only for that sampler
    with config.unlocked():
        for key, value in changes.items():
            section, name = key.split(".")
            config[section][name] = value
    return config


INVALID = {
    "train.restart_prob": 1.5,
    "sampler.step_size": -0.1,
    "sampler.temperature": 0.0,
    "sampler.num_particles": 255,
    "sampler.name": "langevin",
    "train.loss": "nce",
    "model.name": "transformer",
    "data.name": "imagenet64",
    "model.num_positive": 99,
    "data.batch_size": 10**6,
    "train.restart_schedule": "sometimes",
    "train.restart_to": "prior",
    "train.on_divergence": "ignore",
    "train.rollback_lr_factor": 2.0,
    "train.log_every": 7,
    "optim.name": "lbfgs",
    "model.regime": "mean-field",
    "sampler.num_steps": 0,
    "data.dim": 1,
    "data.teacher": "student",
    "data.teacher_cosine": 1.5,
    "optim.lr_decay": 1.5,
    "sampler.jarzynski_kernel": "hmc",
    "sampler.jarzynski_start": "anywhere",
}


@pytest.mark.parametrize("key", sorted(INVALID))
def test_invalid_config_gives_one_line(key):
    with pytest.raises(ConfigError) as error:
        validate_config(_invalid(**{key: INVALID[key]}), num_devices=4)
    message = str(error.value)
    assert key in message and str(INVALID[key]) in message
    assert any(line.startswith(f"config.{key}=") for line in message.splitlines())


def test_tilt_needs_a_flow_sampler_and_an_mlp_energy():
    config = tiny(mixture4_flow.get_config())
    config.sampler.flow_tilted = True
    config.model.regime = "lazy"
    with pytest.raises(ConfigError, match="config.sampler.flow_tilted=True"):
        validate_config(config, num_devices=1)


def test_shape_mismatch_is_refused():
    config = tiny(mixture2d.get_config())
    config.model.name = "shallow"  # the shallow energy needs data on the sphere
    with pytest.raises(ConfigError, match="config.model.name='shallow'"):
        validate_config(config, num_devices=1)


def test_teacher_and_mixture_keys_are_validated():
    def problems(config, **changes):
        with config.unlocked():
            for key, value in changes.items():
                section, name = key.split(".")
                config[section][name] = value
        with pytest.raises(ConfigError) as error:
            validate_config(config, num_devices=1)
        return str(error.value).splitlines()

    teacher_config = lambda: tiny(teacher.get_config())  # noqa: E731
    assert problems(teacher_config(), **{"data.dim": 7})[0].startswith(
        "config.data.dim=7: expected one of 3, 15 for data.teacher='published'")
    for theta in (None, [[1.0, 0.0, 0.0]], [[0.0] * 15], [[1.0, 2.0], [3.0]]):
        lines = problems(teacher_config(), **{"data.teacher": "explicit",
                                              "data.teacher_theta": theta})
        assert lines == [f"config.data.teacher_theta={theta!r}: expected a k x 15 list of "
                         "non-zero rows (k >= 1) for data.teacher='explicit'"]
    config = teacher_config()
    config.data.teacher, config.data.teacher_theta = "explicit", [[1.0] + [0.0] * 14]
    validate_config(config, num_devices=1)
    config.data.dim, config.data.teacher = 7, "random"
    validate_config(config, num_devices=1)

    mixture_config = lambda: tiny(mixture2d.get_config())  # noqa: E731 (2 weights, d = 2)
    lines = problems(mixture_config(), **{"data.mixture_means": [[0.0, 0.0, 1.0]] * 2,
                                          "data.mixture_stds": [0.5, 0.0]})
    assert [line.split("=")[0] for line in lines] == ["config.data.mixture_means",
                                                      "config.data.mixture_stds"]
    assert problems(mixture_config(), **{"data.mixture_means": [[0.0, 0.0]] * 3})[0].endswith(
        "K = len(data.mixture_weights) = 2")
    config = mixture_config()
    config.data.mixture_means, config.data.mixture_stds = [[0.0, 1.0], [2.0, 3.0]], [0.5, 0.2]
    config.data.mixture_std = -1.0  # unused with per-mode stds
    validate_config(config, num_devices=1)


def _python(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_cli_invalid_config_exits_2_without_traceback(tmp_path):
    result = _python(["--config=experiments/teacher.py", "--config.train.restart_prob=1.5",
                      f"--workdir={tmp_path / 'run'}"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: config.train.restart_prob=1.5: expected a probability in [0, 1]"]


def test_sigterm_saves_checkpoint_and_resume_matches_straight_run(tmp_path):
    """SIGTERM mid-run → checkpoint + clean exit; the resumed run equals a straight one."""
    args = ["--config=experiments/sphere3d.py", "--config.train.num_steps=3000",
            "--config.train.log_every=10", "--config.train.eval_every=1000",
            "--config.train.checkpoint_every=1000", "--config.data.num_train=256",
            "--config.data.num_test=256", "--config.sampler.num_particles=256",
            "--config.eval.grid_size=24"]
    workdir = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    process = subprocess.Popen([sys.executable, "-m", "experiments.run", *args,
                                f"--workdir={workdir}"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and '"train"' in metrics.read_text()):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    assert "SIGTERM received: saved a checkpoint at step" in stdout and "Resume with:" in stdout
    assert "Traceback" not in stderr
    steps = Checkpointer(workdir / "checkpoints").steps()
    listing = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert 0 < steps[-1] < 3000, (steps, listing, stdout)  # saved where it stopped

    resumed = _python([*args, f"--workdir={workdir}"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    straight = _python([*args, f"--workdir={tmp_path / 'straight'}"])
    assert straight.returncode == 0, straight.stderr
    assert read_lines(workdir) == read_lines(tmp_path / "straight")


def test_mnist_config_runs_on_idx_files(tmp_path):
    from experiments import mnist
    from tests.test_mnist import fake_mnist

    fake_mnist(tmp_path / "mnist", n=400)
    config = mnist.get_config("tiny")
    config.data.path = str(tmp_path / "mnist")
    config.data.num_train, config.data.num_test = 256, 64
    config.sampler.num_particles = 64
    summary = run(config, tmp_path / "run")
    assert summary["steps"] == 20


def test_cli_missing_dataset_file_is_one_clear_line(tmp_path):
    result = _python(["--config=experiments/mnist.py", f"--config.data.path={tmp_path}/none",
                      f"--workdir={tmp_path / 'run'}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: MNIST directory {tmp_path}/none does not exist (set config.data.path)"]


# ----------------------------------------------------------------------------- image configs

SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte").exists() and
                    not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="the real MNIST test set is not at ../shared/data/mnist")
def test_cli_mnist_tiny_variant_runs_on_real_mnist(tmp_path):
    """`--config=experiments/mnist.py:tiny` on the real MNIST files, from the command line:
    trains the conv energy, evaluates bits/dim and writes the samples with their energy
    histogram."""
    workdir = tmp_path / "run"
    result = _python(["--config=experiments/mnist.py:tiny", f"--config.data.path={SHARED_MNIST}",
                      f"--workdir={workdir}"])
    assert result.returncode == 0, result.stderr[-2000:]
    final = [json.loads(line) for line in read_lines(workdir)][-1]
    assert final["kind"] == "eval" and final["step"] == 20
    assert 0 < final["test_bits_per_dim"] < 8.5 and (workdir / "samples.png").exists()


def test_cli_unknown_config_variant_is_one_clear_line(tmp_path):
    result = _python(["--config=experiments/mnist.py:huge", f"--workdir={tmp_path / 'run'}"])
    assert result.returncode != 0 and "unknown config variant 'huge'; known: tiny" in result.stderr


@pytest.mark.parametrize("name", ["celeba", "imagenet32"])
def test_image_config_runs_end_to_end_on_mock_tfds(name, tmp_path):
    """The CelebA and ImageNet 32×32 configs train, evaluate (AIS bits/dim; the classifier
    metrics for labelled ImageNet) and write their sample grid, on `tfds.testing.mock_data`."""
    import importlib

    from tests.test_image_data import mock_tfds

    config = importlib.import_module(f"experiments.{name}").get_config("tiny")
    config.data.data_dir = str(tmp_path / "tfds")  # exists; the mock ignores its content
    (tmp_path / "tfds").mkdir()
    config.sampler.num_particles = 64
    if name == "imagenet32":  # a few classifier steps, cached in the test's directory
        config.eval.classifier_steps = 5
        config.eval.classifier_dir = str(tmp_path / "classifiers")
    with mock_tfds():
        summary = run(config, tmp_path / "run")
    final = summary["final"]
    assert summary["steps"] == 20 and np.isfinite(final["test_bits_per_dim"])
    assert final["test_bits_per_dim"] > 0 and (tmp_path / "run" / "samples.png").exists()
    assert ("frechet_distance" in final) == (name == "imagenet32")
    if name == "imagenet32":
        assert 0 <= final["class_tv_distance"] <= 1 and final["frechet_floor"] >= 0


@pytest.mark.parametrize("name, dataset", [("celeba", "celeb_a"), ("imagenet32", "imagenet32")])
def test_cli_absent_image_data_says_what_to_run(name, dataset, tmp_path):
    result = _python([f"--config=experiments/{name}.py",
                      f"--config.data.data_dir={tmp_path / 'tfds'}",
                      f"--workdir={tmp_path / 'run'}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pip install -e '.[prepare]'" in errors[0]
    assert f"python -m experiments.prepare_data --dataset={dataset} " in errors[0]


def test_mode_weight_floor_reads_a_grid_against_each_seeds_training_set(tmp_path, capsys):
    """experiments.mode_weight_floor: the training fractions it prints are the evaluator's
    train_mode_weight_k of the same seed, and each member's errors are computed against
    the truth and against its own seed's fractions."""
    from experiments import mode_weight_floor
    from experiments.evaluate import make_evaluator
    from ebmdual.data import get_dataset

    config = mixture4.get_config()
    config.seed = 1
    dataset = get_dataset(config, jax.random.split(jax.random.key(1))[0])
    evaluate = make_evaluator(config, dataset, lambda params, x: 0.5 * (x ** 2).sum())
    metrics = evaluate(None, None, 1.0)
    fractions = mode_weight_floor.train_fractions(mixture4.get_config(), 1)
    np.testing.assert_allclose(fractions, [metrics[f"train_mode_weight_{k}"] for k in range(4)])
    grid = tmp_path / "grid"
    grid.mkdir()
    masses = fractions + np.array([0.01, -0.01, 0.0, 0.0])
    header = "member,seed,step," + ",".join(f"mode_mass_{k}" for k in range(4))
    (grid / "results.csv").write_text(
        f"{header}\n0,1,0,.25,.25,.25,.25\n0,1,100," + ",".join(map(str, masses)) + "\n")
    assert mode_weight_floor.main(["--config=experiments/mixture4.py", "--seeds=1", str(grid)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    truth = np.array([0.1, 0.2, 0.3, 0.4])
    assert float(row[4]) == pytest.approx(np.abs(masses - truth).max(), abs=1e-4)
    assert float(row[5]) == pytest.approx(0.01, abs=1e-4)
    # A member that logged its own training fractions (a grid with another data.num_train)
    # is compared with those, not with the training set --config builds.
    own = np.array([0.12, 0.18, 0.3, 0.4])
    (grid / "results.csv").write_text(
        f"{header}," + ",".join(f"train_mode_weight_{k}" for k in range(4)) + "\n0,1,100,"
        + ",".join(map(str, masses)) + "," + ",".join(map(str, own)) + "\n")
    assert mode_weight_floor.main(["--config=experiments/mixture4.py", "--seeds=1", str(grid)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert float(row[5]) == pytest.approx(np.abs(masses - own).max(), abs=1e-4)
    assert float(row[6]) == pytest.approx(0.02, abs=1e-4)
    assert mode_weight_floor.main(["--config=experiments/mixture4.py", "--seeds=1",
                                   str(tmp_path / "missing")]) == 1


def test_jarzynski_runs_log_the_weighted_walker_fractions(tmp_path):
    """Evaluations of a weighted sampler add weighted_particle_mode_weight_k: the walkers'
    mode fractions under the weights softmax(A) the objective used, recomputed here from
    the final checkpoint. Without resampling the weights spread, so they differ from the
    unweighted fractions. A replay buffer leaves the weights of undrawn walkers stale:
    then the metric is absent."""
    from ebmdual.data import get_dataset

    config = tiny(mixture4_jarzynski.get_config(), num_steps=20)
    config.sampler.ess_threshold = 0.0  # never resample: the weights keep their spread
    summary = run(config, tmp_path / "run")
    assert summary["steps"] == 20
    final = [json.loads(line) for line in read_lines(tmp_path / "run")][-1]
    weighted = np.array([final[f"weighted_particle_mode_weight_{k}"] for k in range(4)])
    unweighted = np.array([final[f"particle_mode_weight_{k}"] for k in range(4)])
    _, state = final_state(tmp_path / "run", config)
    log_weight = state["sampler_state"]["log_weight"].astype(np.float64)
    weights = np.exp(log_weight - log_weight.max())
    mixture = get_dataset(config, jax.random.split(jax.random.key(config.seed))[0]).mixture
    modes = np.asarray(mixture.assign_modes(jax.numpy.asarray(state["particles"])))
    expected = np.bincount(modes, weights=weights / weights.sum(), minlength=4)
    np.testing.assert_allclose(weighted, expected, atol=1e-5)
    assert np.abs(weighted - unweighted).max() > 1e-3

    config.sampler.particles_per_step = 64
    run(config, tmp_path / "buffered")
    final = [json.loads(line) for line in read_lines(tmp_path / "buffered")][-1]
    assert "particle_mode_weight_0" in final and "weighted_particle_mode_weight_0" not in final
