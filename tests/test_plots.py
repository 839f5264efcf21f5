"""Plots a researcher can read: what `plot_metrics` decides to draw (pure helpers), that
every figure is written, and the MNIST metrics that feed them."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from ebmdual.data import synthetic
from experiments import plots
from experiments.defaults import base_config
from experiments.evaluate import (image_energy_metrics, make_evaluator, mean_difference,
                                  temperature_scaled)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000, (path, len(data))
    image = plots.plt.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image[..., :3]) > 0  # not a blank canvas


def ml_rows(num=6, acceptance=None):
    """Training rows as the ML train step logs them (ULA: acceptance 1, loss = −gap)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(num):
        gap = float(0.3 * 0.5**i + 0.01 * rng.standard_normal())
        rows.append({"kind": "train", "step": 100 * (i + 1), "loss": -gap, "energy_gap": gap,
                     "grad_norm": float(1.0 / (i + 1)), "finite": 1.0,
                     "acceptance_rate": 1.0 if acceptance is None else acceptance[i],
                     "restart_fraction": 0.025 + 0.001 * rng.standard_normal(),
                     "restart_prob": 0.025, "particle_step_size": 0.02, "temperature": 1.0,
                     "learning_rate": 0.001, "time_scale_ratio_learning_rate": 0.05})
    return rows


def eval_rows(num=4):
    return [{"kind": "eval", "step": 200 * i, "kl": 2.0 * 10.0**-i, "kl_stderr": 0.1 * 10.0**-i,
             "fisher_divergence": 5.0 - i} for i in range(num)]


def names(panel):
    return [s.name for s in panel.series]


def panel_with(selection, name):
    found = [p for p in selection.panels if name in names(p)]
    assert len(found) <= 1
    return found[0] if found else None


# ----------------------------------------------------------------------------- pure helpers

def test_is_constant():
    assert plots.is_constant([1.0, 1.0, 1.0])
    assert plots.is_constant([0.2, 0.2 * (1 + 1e-7)])  # float32 echoes of one setting
    assert not plots.is_constant([1.0, 1.0, 1.01])
    assert not plots.is_constant([0.0, 1e-3])
    assert not plots.is_constant([3.0])  # one value proves nothing
    assert not plots.is_constant([1.0, np.nan])


def test_mirror_sign():
    a = np.array([0.3, -0.1, 0.02, 1e-9])
    assert plots.mirror_sign(-a * (1 + 1e-6), a) == -1
    assert plots.mirror_sign(a, a) == 1
    assert plots.mirror_sign(-a + np.array([0, 0, 0.01, 0]), a) is None
    assert plots.mirror_sign(a[:3], a) is None
    assert plots.mirror_sign(np.zeros(3), np.zeros(3)) is None


def test_log_scale_for_data_spanning_decades_only():
    assert plots.use_log_scale([2.0, 0.2, 0.02, 0.005])
    assert not plots.use_log_scale([2.0, 0.2, -0.02, 0.005])  # a negative value: linear
    assert not plots.use_log_scale([2.0, 0.2, 0.0])           # zero: linear
    assert not plots.use_log_scale([5.0, 4.0, 3.0, 2.0])      # within a factor 30: linear
    # 38 -> 1.6 (factor 24) with most points crowded at the bottom: log
    assert plots.use_log_scale([38.0, 5.4, 5.0, 4.8, 4.6, 4.2, 3.7, 3.1, 2.5, 2.0, 1.6])
    assert not plots.use_log_scale([20.0, 16.0, 12.0, 8.0, 4.0, 1.0])  # factor 20, spread out
    assert not plots.use_log_scale([0.5])
    assert plots.use_log_scale([1e-3, np.nan, 1.0])  # NaN ignored


def test_stderr_band_only_where_stderr_rows_exist():
    rows = eval_rows()
    band = plots.stderr_band(rows, "kl")
    np.testing.assert_allclose(band, [0.1 * 10.0**-i for i in range(4)])
    assert plots.stderr_band(rows, "fisher_divergence") is None
    partial = rows[:2] + [{k: v for k, v in r.items() if k != "kl_stderr"} for r in rows[2:]]
    assert np.isnan(plots.stderr_band(partial, "kl")[2:]).all()

    selection = plots.select_panels(ml_rows(), rows)
    kl = panel_with(selection, "kl")
    np.testing.assert_allclose(kl.series[0].stderr, band)
    assert panel_with(selection, "fisher_divergence").series[0].stderr is None
    assert panel_with(selection, "kl_stderr") is None  # a band, not a panel
    assert kl.log and not panel_with(selection, "fisher_divergence").log  # 2 .. 2e-3; 5 .. 2


def test_constant_panels_dropped_and_listed():
    selection = plots.select_panels(ml_rows(), eval_rows())
    drawn = {n for p in selection.panels for n in names(p)}
    constants = dict(c.split(" = ") for c in selection.constants)
    for name in ("acceptance_rate", "particle_step_size", "temperature", "learning_rate",
                 "time_scale_ratio_learning_rate"):
        assert name not in drawn and name in constants, name
    assert constants["acceptance_rate"] == "1" and constants["learning_rate"] == "0.001"
    assert {"energy_gap", "grad_norm", "kl", "fisher_divergence", "restart_fraction"} <= drawn
    assert "finite" not in drawn and "finite" not in constants
    # restart_prob is constant but shares its panel with the varying restart fraction:
    # a reference line there, not a note.
    assert names(panel_with(selection, "restart_fraction")) == ["restart_fraction", "restart_prob"]
    # The energy gap carries its units, with the fixed temperature.
    assert "T = 1" in panel_with(selection, "energy_gap").ylabel


def test_varying_acceptance_and_settings_get_panels():
    """MALA (acceptance varies) and a learning rate lowered by a rollback are drawn."""
    rows = ml_rows(acceptance=[0.9, 0.8, 0.7, 0.75, 0.72, 0.7])
    rows[-1]["learning_rate"] = 0.0005
    drawn = {n for p in plots.select_panels(rows, []).panels for n in names(p)}
    assert {"acceptance_rate", "learning_rate"} <= drawn


def test_single_row_keeps_measurements_and_drops_settings():
    selection = plots.select_panels(ml_rows(num=1), [])
    drawn = {n for p in selection.panels for n in names(p)}
    assert {"energy_gap", "grad_norm", "acceptance_rate"} <= drawn
    assert not drawn & {"temperature", "learning_rate", "particle_step_size"}


def test_mirrored_loss_dropped_from_data_not_names():
    selection = plots.select_panels(ml_rows(), [])
    assert panel_with(selection, "loss") is None and panel_with(selection, "energy_gap")
    assert selection.mirrored == ["loss = −energy_gap"]
    # The same names, but a loss that is not −gap on one row: both drawn, nothing noted.
    rows = ml_rows()
    rows[2]["loss"] += 0.05
    selection = plots.select_panels(rows, [])
    assert panel_with(selection, "loss") and panel_with(selection, "energy_gap")
    assert selection.mirrored == []


def test_groups_and_unknown_metrics():
    evals = [{"kind": "eval", "step": s, "mode_mass_0": 0.6 + 0.1 * s, "mode_mass_1": 0.4 - 0.1 * s,
              "target_mode_weight_0": 0.8, "target_mode_weight_1": 0.2,
              "particle_mode_weight_0": 0.7, "particle_mode_weight_1": 0.3 + 0.01 * s,
              "something_new": float(s) ** 2} for s in range(3)]
    selection = plots.select_panels([], evals)
    modes = panel_with(selection, "mode_mass_0")
    assert sorted(names(modes)) == sorted(k for k in evals[0] if "mode" in k)
    assert [s.colour_key for s in modes.series if s.name.endswith("_1")] == ["1"] * 3
    assert panel_with(selection, "something_new").title == "something_new"
    assert [p.title for p in selection.panels][0] == "mode masses"  # known panels first


def test_run_title_names_the_run_and_swept_values():
    config = base_config()
    config.train.restart_prob = 0.25
    config.seed = 3
    title = plots.run_title(config, "workdirs/sweep/train.restart_prob=0.25/seed=3")
    first, second = title.split("\n")
    assert first.startswith("workdirs/sweep/train.restart_prob=0.25/seed=3: teacher (d = 15)")
    assert "wfr" in first and "ula" in first
    assert "seed = 3" in second and "restart_prob = 0.25" in second and "T = 1" in second
    config.train.loss, config.optim.name, config.optim.learning_rate = "sm", "adam", 3e-4
    title = plots.run_title(config, "x" * 100)
    assert "restart_prob" not in title and "lr = 0.0003" in title
    assert title.startswith("…") and len(title.split(":")[0]) == 60


def test_run_title_gives_images_their_shape():
    """An image run is titled with its sample shape, not the synthetic tasks' data.dim."""
    config = base_config()
    config.data.name = "mnist"
    assert "mnist (28×28×1)," in plots.run_title(config, sample_shape=(28, 28, 1))
    assert "(d = 15)" not in plots.run_title(config, sample_shape=(28, 28, 1))
    assert "mnist (d = 7)," in plots.run_title(config, sample_shape=(7,))


# ----------------------------------------------------------------------------- figures

def quadratic(scale, x):
    return 0.5 * scale * jnp.sum(x**2)


@pytest.mark.parametrize("title", [None, "run: mixture\nseed = 0, T = 1"])
def test_plot_metrics_writes_png(tmp_path, title):
    path = tmp_path / "metrics.png"
    plots.plot_metrics(ml_rows(), eval_rows(), str(path), title=title)
    assert_png(path)


def test_plot_metrics_without_rows_writes_png(tmp_path):
    plots.plot_metrics([], [], str(tmp_path / "metrics.png"))
    assert (tmp_path / "metrics.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("with_particles", [True, False])
def test_plot_samples_2d_writes_png(tmp_path, with_particles):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((300, 2)).astype(np.float32)
    particles = data + 0.3 if with_particles else None
    plots.plot_samples_2d(quadratic, 1.0, data, particles, (-4.0, 4.0), str(tmp_path / "s.png"),
                          num=40, title="t")
    assert_png(tmp_path / "s.png")


def test_log_density_on_grid_is_normalised():
    xs = np.linspace(-6, 6, 241)
    energy = 0.5 * (xs[:, None] ** 2 + xs[None] ** 2)
    log_p = plots.log_density_on_grid(energy, (xs[1] - xs[0]) ** 2)
    np.testing.assert_allclose(log_p.max(), -np.log(2 * np.pi), rtol=1e-4)  # N(0, I) at 0


@pytest.mark.parametrize("with_particles", [True, False])
def test_plot_samples_sphere_writes_png(tmp_path, with_particles):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 3))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def tilt(kappa, y):
        return -kappa * y[2]

    plots.plot_samples_sphere(tilt, 2.0, tilt, 3.0, x, x if with_particles else None,
                              str(tmp_path / "s.png"), num=30)
    assert_png(tmp_path / "s.png")


def quadratic_image_energy(scale, x):
    return scale * jnp.sum(x * x)


@pytest.mark.parametrize("with_particles", [True, False])
def test_plot_image_samples_writes_png(tmp_path, with_particles):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
    held_out = rng.uniform(0, 1, (30, 28, 28, 1)).astype(np.float32)
    particles = rng.normal(0.3, 0.5, (70, 28, 28, 1)).astype(np.float32) if with_particles else None
    runs = [plots.ImageRun("restart_prob=0", 1.0, particles),
            plots.ImageRun("restart_prob=1", 2.0, particles)]
    plots.plot_image_samples(quadratic_image_energy, runs, data, held_out,
                             str(tmp_path / "samples.png"))
    assert_png(tmp_path / "samples.png")


def test_plot_image_samples_writes_colour_png(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    held_out = rng.uniform(-1, 1, (10, 32, 32, 3)).astype(np.float32)
    particles = rng.uniform(-1.2, 1.2, (30, 32, 32, 3)).astype(np.float32)
    plots.plot_image_samples(quadratic_image_energy, [plots.ImageRun("run", 0.5, particles)],
                             data, held_out, str(tmp_path / "samples.png"), data_range=(-1, 1))
    assert_png(tmp_path / "samples.png")


def test_as_image_batch_maps_the_data_range_to_unit_scale():
    floats = np.array([[-1.0, 0.0, 1.0, 3.0]], np.float32)
    np.testing.assert_allclose(plots.as_image_batch(floats, (-1, 1), shape=(2, 2))[0, ..., 0],
                               [[0.0, 0.5], [1.0, 2.0]])
    stored = np.array([[0, 255, 51, 102]], np.uint8)
    np.testing.assert_allclose(plots.as_image_batch(stored, (-1, 1), shape=(2, 2)).ravel(),
                               [0.0, 1.0, 0.2, 0.4], rtol=1e-6)


def test_tile_places_images_row_major_with_gutters():
    images = np.arange(3 * 4, dtype=np.float32).reshape(3, 2, 2, 1) * np.array(
        [1, 10, 100]).reshape(3, 1, 1, 1)
    mosaic = plots.tile(images, cols=2)
    assert mosaic.shape == (5, 5, 1)
    np.testing.assert_array_equal(mosaic[:2, 3:, 0], images[1, ..., 0])
    np.testing.assert_array_equal(mosaic[3:, :2, 0], images[2, ..., 0])
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[3:, 3:]).all()


# ----------------------------------------------------------------------------- image energy checks

def fake_images(n=64, seed=0):
    """(test, train) float32 (n, 784) images in [0, 200/255], training images 0.2 brighter."""
    rng = np.random.default_rng(seed)
    test = rng.integers(0, 201, (n, 784)).astype(np.float32) / 255
    return test, test + np.float32(0.2)


def brightness_energies(scale):
    """energies(x) = θ · Σ pixels, per image."""
    return lambda x: scale * np.asarray(x, np.float64).reshape(len(x), -1).sum(1)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_image_energy_metrics_particles_equal_to_data(temperature):
    test, train = fake_images()
    energies = brightness_energies(0.5 / temperature)
    out = image_energy_metrics(energies, test, test.copy(), train)
    assert out["test_energy_gap"] == pytest.approx(0.0, abs=1e-6)
    assert out["particle_pixel_mean"] == pytest.approx(out["data_pixel_mean"], abs=1e-6)
    assert out["particle_pixel_std"] == pytest.approx(out["data_pixel_std"], abs=1e-6)
    assert out["data_pixel_mean"] == pytest.approx(test.astype(np.float64).mean(), rel=1e-5)
    assert out["mean_image_rmse"] == pytest.approx(0.0, abs=1e-6)
    assert out["particle_pixels_outside_range"] == 0.0
    # training images are 0.2 brighter on every pixel: E/T larger by 0.5 · 0.2 · 784 / T
    assert out["train_test_energy_gap"] == pytest.approx(-0.5 * 0.2 * 784 / temperature, rel=1e-4)
    # the same images, shifted: the spread of E is that of the test set on both sides
    se = np.std(0.5 * test.astype(np.float64).sum(1), ddof=1) / temperature * np.sqrt(2 / len(test))
    assert out["train_test_energy_gap_stderr"] == pytest.approx(se, rel=1e-3)


def test_image_energy_metrics_shifted_particles():
    test, train = fake_images()
    out = image_energy_metrics(brightness_energies(0.25), test, test + 0.5, train)
    assert out["test_energy_gap"] == pytest.approx(0.25 * 0.5 * 784, rel=1e-4)  # nats
    assert out["particle_pixel_mean"] == pytest.approx(test.mean() + 0.5, rel=1e-5)
    assert out["mean_image_rmse"] == pytest.approx(0.5, rel=1e-5)
    assert out["particle_pixels_outside_range"] == pytest.approx(np.mean(test > 0.5))
    assert out["particle_pixels_outside_range"] > 0.1
    # shifted pixels lie in [0.5, 1.29]: none outside the range [-1, 2]
    wide = image_energy_metrics(brightness_energies(0.25), test, test + 0.5, train, (-1, 2))
    assert wide["particle_pixels_outside_range"] == 0.0


def test_image_energy_metrics_without_particles():
    test, train = fake_images()
    out = image_energy_metrics(lambda x: np.zeros(len(x)), test, None, train)
    assert set(out) == {"data_pixel_mean", "data_pixel_std", "train_test_energy_gap",
                        "train_test_energy_gap_stderr"}
    assert out["train_test_energy_gap"] == 0.0


def test_mean_difference():
    value, stderr = mean_difference([1.0, 3.0], [0.0, 0.0, 0.0])
    assert value == 2.0 and stderr == pytest.approx(np.sqrt(2.0 / 2))
    assert mean_difference([1.0], [0.0]) == (1.0, 0.0)


def test_mixture_evaluator_logs_the_true_mode_weights():
    config = base_config()
    config.eval.grid_size = 20
    mixture = synthetic.eight_gaussians(np.arange(1.0, 9.0), std=0.3)
    test = jnp.asarray(np.asarray(mixture.means)[np.arange(40) % 8], jnp.float32)
    dataset = synthetic.Dataset("eight_gaussians", test, test, "euclidean",
                                synthetic.mixture_energy, mixture, mixture, synthetic.TOY_BOX)
    out = make_evaluator(config, dataset, synthetic.mixture_energy)(mixture, None, 1.0)
    np.testing.assert_allclose([out[f"target_mode_weight_{k}"] for k in range(8)],
                               np.arange(1.0, 9.0) / 36, rtol=1e-6)
    assert "particle_mode_weight_0" not in out


def test_temperature_scaled_model_feeds_the_plots(tmp_path):
    """The harness passes (params, T) with the E/T model: the 2-D density uses E/T."""
    model = temperature_scaled(quadratic)
    plots.plot_samples_2d(model, (1.0, 2.0), np.zeros((5, 2), np.float32), None, (-3.0, 3.0),
                          str(tmp_path / "s.png"), num=30)
    assert_png(tmp_path / "s.png")
