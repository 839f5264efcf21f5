"""PNG figures of a run: metric curves, samples with the learned density in 2-D and on S^2,
and image samples beside data with their energy histograms (one column per run of a sweep).

`plot_metrics` decides what to draw from the logged rows through pure helpers that
the tests check without matplotlib: `select_panels` (which metrics get a panel, in
which group, with which label), `is_constant`, `mirror_sign`, `use_log_scale` and
`stderr_band`. Constant metrics and a loss that mirrors the energy gap get no panel;
their values go into a line of text under the panels, so that nothing is lost.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib import ticker as mticker  # noqa: E402

from ebmdual.evaluation import batched_energies  # noqa: E402

IGNORED = ("kind", "step", "finite")  # finite is 1 on every logged row (else: divergence)
# Settings echoed by the train step: a single logged value already says they are constant.
SETTING = re.compile(r"^(temperature|restart_prob|particle_step_size|.*learning_rate"
                     r"|time_scale_ratio_.*)$")
# (dropped, kept): the first is drawn only when the data show it is not ±the second
# (maximum likelihood: loss = mean E(data) − mean E(particles) = −energy_gap).
MIRROR_CANDIDATES = (("loss", "energy_gap"),)
LOG_RATIO = 30.0     # log scale when positive values span more than this factor
DENSITY_RANGE = 12.0  # nats of log density shown below the maximum (the floor of the colours)

# Panels in display order: (title, y label, members). A member is (regex, label): a metric
# whose whole name matches joins the panel as a series labelled label.format(*groups)
# (label None: the metric's name). Series sharing their first group share a colour.
PANELS = (
    (r"$\mathrm{KL}(p^*\,\Vert\,p_\theta)$", "nats", ((r"kl", None),)),
    ("test negative log-likelihood", "nats per test point", ((r"test_nll", None),)),
    ("Fisher divergence to the teacher",
     r"$\mathbb{E}_{p^*}\Vert\nabla\log p^* - \nabla\log p_\theta\Vert^2$" "\n[nats²/length²]",
     ((r"fisher_divergence", None),)),
    ("energy gap on held-out data", "E/T(particles) − E/T(test)  [nats]",
     ((r"test_energy_gap", None),)),
    ("train − test energy gap", "E/T(test) − E/T(train)  [nats]",
     ((r"train_test_energy_gap", None),)),
    ("pixel mean", "intensity (data range)",
     ((r"particle_pixel_mean", "particles"), (r"data_pixel_mean", "test data"))),
    ("pixel std", "intensity (data range)",
     ((r"particle_pixel_std", "particles"), (r"data_pixel_std", "test data"))),
    ("RMS distance of mean images", "intensity (data range)", ((r"mean_image_rmse", None),)),
    ("particle pixels outside the data range", "fraction of pixels",
     ((r"particle_pixels_outside_range", None),)),
    ("test likelihood (AIS)", "bits/dim", ((r"test_bits_per_dim", None),)),
    ("Fréchet distance (project classifier)", "not comparable to FID",
     ((r"frechet_distance", "particles"), (r"frechet_floor", "real images (floor)"))),
    ("class histogram", "total-variation distance to the data", ((r"class_tv_distance", None),)),
    ("mode masses", "probability",
     ((r"mode_mass_(\d+)", "mode {0}"), (r"particle_mode_weight_(\d+)", "mode {0}, particles"),
      (r"target_mode_weight_(\d+)", "mode {0}, true"),
      (r"train_mode_weight_(\d+)", "mode {0}, training data"))),
    ("mode-weight error", "max_k |mass_k − weight_k|",
     ((r"mode_mass_max_error", "to the true weights"),
      (r"mode_mass_max_error_to_train", "to the training data's"))),
    ("model mass near the box edge", "probability", ((r"edge_mass", None),)),
    ("energy gap (training batch)", "E(particles) − E(data)  [energy units]",
     ((r"energy_gap", None),)),
    ("training loss", "objective value", ((r"loss", None),)),
    ("gradient norm", r"$\Vert\nabla_\theta\,\mathrm{loss}\Vert_2$", ((r"grad_norm", None),)),
    ("Metropolis acceptance", "fraction accepted", ((r"acceptance_rate", None),)),
    ("restarts", "fraction of particles per step",
     ((r"restart_fraction", "restarted"), (r"restart_prob", "restart_prob (set)"))),
    ("sampler step size", "h  [length²/energy]",
     ((r"particle_step_size", "h (set)"), (r"adapted_step_size", "h (adapted)"))),
    ("temperature", "T  [energy units]", ((r"temperature", None),)),
    ("learning rates", "learning rate", ((r"(.*)learning_rate", None),)),
    ("time-scale ratios", "learning rate / h", ((r"time_scale_ratio_(.*)", "{0}"),)),
)
# Line styles: the particles' side of a comparison dashed, fixed references dotted.
LINESTYLES = ((re.compile(r"particle_mode_weight_\d+"), "--"),
              (re.compile(r"target_mode_weight_\d+|data_pixel_.*|restart_prob"), ":"),
              (re.compile(r"train_mode_weight_\d+"), "-."))


class Series(NamedTuple):
    """One metric against the step. stderr: the ±1 standard-error band, or None."""

    name: str
    label: str
    colour_key: str
    steps: np.ndarray
    values: np.ndarray
    stderr: np.ndarray | None


class Panel(NamedTuple):
    title: str
    ylabel: str
    series: tuple[Series, ...]
    log: bool


class Selection(NamedTuple):
    """What `plot_metrics` draws. constants: 'name = value' of metrics constant over the
    run (no panel); mirrored: 'loss = −energy_gap'-style relations that cost a panel."""

    panels: list[Panel]
    constants: list[str]
    mirrored: list[str]


# ----------------------------------------------------------------------------- pure helpers

def is_constant(values, rtol: float = 1e-5) -> bool:
    """True when the finite values all agree to `rtol` (relative to their size) and there
    are at least two of them; NaN/inf break constancy. One value proves nothing."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return False
    scale = max(np.max(np.abs(v)), 1e-30)
    return bool(np.max(v) - np.min(v) <= rtol * scale)


def mirror_sign(a, b, rtol: float = 1e-3) -> int | None:
    """−1 when a = −b, +1 when a = b, elementwise to `rtol` of the series' size; else None."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.size == 0 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return None
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)))
    if scale == 0:
        return None  # both identically zero: constant, handled there
    for sign in (-1, 1):
        if np.all(np.abs(a - sign * b) <= rtol * np.maximum(np.abs(a), np.abs(b)) + 1e-6 * scale):
            return sign
    return None


def use_log_scale(values, ratio: float = LOG_RATIO) -> bool:
    """A log y axis when the finite values are all positive and span more than `ratio`, or
    more than `ratio`/3 with half of them squeezed into the bottom tenth of a linear axis
    (a fast initial drop that would flatten the rest of the curve)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or not np.all(v > 0):
        return False
    span = v.max() / v.min()
    squeezed = np.median(v) - v.min() < 0.1 * (v.max() - v.min())
    return bool(span > ratio or (span > ratio / 3 and squeezed))


def stderr_band(rows: list[dict], name: str) -> np.ndarray | None:
    """The standard errors of `name` (from `<name>_stderr`) on the rows that hold `name`,
    NaN where a row has none; None when no row has one (no band is drawn)."""
    holding = [r for r in rows if name in r]
    if not any(f"{name}_stderr" in r for r in holding):
        return None
    return np.array([r.get(f"{name}_stderr", np.nan) for r in holding], np.float64)


def _series(rows: list[dict], name: str, label: str, colour_key: str | None = None) -> Series:
    holding = [r for r in rows if name in r]
    return Series(name, label, colour_key or name, np.array([r["step"] for r in holding], np.float64),
                  np.array([r[name] for r in holding], np.float64), stderr_band(rows, name))


def _format(value: float) -> str:
    return f"{value:.3g}"


def select_panels(train_rows: list[dict], eval_rows: list[dict]) -> Selection:
    """The panels to draw, and what has none (constants, mirrored metrics).

    Every numeric metric (but `IGNORED` and `*_stderr`, which become bands) joins the
    first group of `PANELS` whose pattern it matches, or a panel of its own. A series
    that is constant over ≥ 2 rows (or a setting logged once) is a note `name = value`
    instead; a panel left without a varying series is dropped. The loss is dropped with
    a note when the data show it equals ±energy_gap. Log scale: `use_log_scale` on the
    panel's values.
    """
    rows_of = {}
    for rows in (eval_rows, train_rows):  # a name logged in both: the training rows win
        for row in rows:
            for name, value in row.items():
                if (name not in IGNORED and not name.endswith("_stderr")
                        and isinstance(value, (int, float)) and not isinstance(value, bool)):
                    rows_of[name] = rows
    mirrored, dropped = [], set()
    for name, other in MIRROR_CANDIDATES:
        if name in rows_of and other in rows_of and rows_of[name] is rows_of[other]:
            a, b = _series(rows_of[name], name, name), _series(rows_of[name], other, other)
            sign = mirror_sign(a.values, b.values) if np.array_equal(a.steps, b.steps) else None
            if sign is not None:
                dropped.add(name)
                mirrored.append(f"{name} = {'−' if sign < 0 else ''}{other}")
    groups: dict[int, list[Series]] = {}
    extra: list[Series] = []
    for name in sorted(rows_of, key=_natural_key):
        if name in dropped:
            continue
        for index, (_, _, members) in enumerate(PANELS):
            found = next(((m, label) for m, label in
                          ((re.fullmatch(p, name), label) for p, label in members) if m), None)
            if found:
                match, label = found
                groups.setdefault(index, []).append(_series(
                    rows_of[name], name, label.format(*match.groups()) if label else name,
                    match.group(1) if match.groups() else name))
                break
        else:
            extra.append(_series(rows_of[name], name, name))
    panels, constants = [], []
    candidates = [(PANELS[i][0], PANELS[i][1], groups[i]) for i in sorted(groups)]
    candidates += [(s.name, "", [s]) for s in extra]
    for title, ylabel, series in candidates:
        constant = [s for s in series if is_constant(s.values)
                    or (s.values.size == 1 and SETTING.match(s.name))]
        if len(constant) == len(series):
            constants.extend(f"{s.name} = {_format(s.values[-1])}" for s in series)
            continue
        values = np.concatenate([s.values for s in series])
        panels.append(Panel(title, ylabel, tuple(series), use_log_scale(values)))
    temperature = next((c for c in constants if c.startswith("temperature = ")), None)
    if temperature:  # energies in units of a fixed T: say which
        t = temperature.split(" = ")[1]
        panels = [p._replace(ylabel=p.ylabel.replace("[energy units]", f"[energy; T = {t}]"))
                  for p in panels]
    return Selection(panels, constants, mirrored)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def run_title(config, name: str | None = None, max_name: int = 60,
              sample_shape: tuple | None = None) -> str:
    """Two lines for the top of a figure: the run's name (e.g. its workdir) and task, then
    the values that studies sweep (seed, restart probability, h, T, learning rates).
    sample_shape: one sample's shape (the data set's), e.g. (28, 28, 1) for MNIST, written
    as H×W×C; without it the task's dimension is config.data.dim (synthetic tasks)."""
    c = config
    if sample_shape is not None and len(sample_shape) > 1:
        size = "×".join(str(n) for n in sample_shape)
    else:
        size = f"d = {sample_shape[0] if sample_shape else c.data.dim}"
    task = (f"{c.data.name} ({size}), {c.model.name} energy"
            f"{' (lazy)' if c.model.get('regime') == 'lazy' else ''}, {c.train.loss} objective, "
            f"{c.optim.name}")
    uses_sampler = c.train.loss == "ml"
    if uses_sampler:
        steps = c.sampler.num_steps
        task += (f", {c.sampler.name} ({steps} step{'s' if steps != 1 else ''} per iteration, "
                 f"N = {c.sampler.num_particles})")
    if name:
        name = name if len(name) <= max_name else "…" + name[-(max_name - 1):]
        task = name.replace("$", r"\$") + ": " + task  # a lone $ would start mathtext
    swept = [f"seed = {c.seed}"]
    if uses_sampler:
        swept += [f"restart_prob = {_format(c.train.restart_prob)}",
                  f"h = {_format(c.sampler.step_size)}", f"T = {_format(c.sampler.temperature)}"]
    if c.optim.name == "wfr":
        swept += [rf"$h_\theta$ = {_format(c.optim.feature_learning_rate)}",
                  rf"$h_w$ = {_format(c.optim.weight_learning_rate)}"]
    else:
        swept.append(f"lr = {_format(c.optim.learning_rate)}")
    return task + "\n" + ", ".join(swept)


# ----------------------------------------------------------------------------- metrics figure

def plot_metrics(train_rows: list[dict], eval_rows: list[dict], path: str,
                 title: str | None = None) -> None:
    """One panel per varying metric (or group) against the step, from `select_panels`.

    title: drawn above the panels (e.g. `run_title(config, workdir)`). Constant metrics
    and a mirrored loss are listed under the panels."""
    panels, constants, mirrored = select_panels(train_rows, eval_rows)
    cols = max(1, min(3, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    notes = []
    if constants:
        notes.append("Constant over the run (no panel): " + ", ".join(constants) + ".")
    if mirrored:
        notes.append("Equal on every logged step (one panel kept): " + ", ".join(mirrored) + ".")
    note_text = "\n".join(textwrap.fill(n, width=int(60 * cols)) for n in notes)
    head = (title.count("\n") + 1) if title else 0
    foot = note_text.count("\n") + 1 if note_text else 0
    height = 3.1 * rows + 0.22 * (head + foot) + 0.3
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, height), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no metric varies", ha="center", va="center")
    if title:  # tight_layout leaves room for the suptitle
        fig.suptitle(title, fontsize=10)
    if note_text:
        fig.text(0.01, 0.005, note_text, fontsize=8, va="bottom", ha="left", color="0.25")
    bottom = (0.2 * foot + 0.05) / height if note_text else 0
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _PlainLogFormatter(mticker.LogFormatter):
    """Log-axis labels as plain numbers (0.02, 30), on the ticks LogFormatter labels."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _draw_panel(ax, panel: Panel) -> None:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = list(dict.fromkeys(s.colour_key for s in panel.series))
    for s in panel.series:
        color = cycle[keys.index(s.colour_key) % len(cycle)]
        style = next((ls for pattern, ls in LINESTYLES if pattern.fullmatch(s.name)), "-")
        reference = is_constant(s.values)  # a fixed value beside varying series: no markers
        ax.plot(s.steps, s.values, color=color, linestyle=style, label=s.label,
                marker="." if len(s.steps) < 30 and not reference else None)
        if s.stderr is not None:
            err = np.nan_to_num(s.stderr)
            low = s.values - err
            if panel.log:  # a band reaching 0 or below runs off the bottom of the log axis
                low = np.maximum(low, np.min(s.values[s.values > 0]) * 1e-3)
            ax.fill_between(s.steps, low, s.values + err, color=color, alpha=0.25, lw=0,
                            label=f"± standard error")
    if panel.log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False,
                                                        minor_thresholds=(2, 0.5)))
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(panel.ylabel, fontsize=9)
    ax.grid(alpha=0.3, which="both" if panel.log else "major")
    if len(panel.series) > 1 or any(s.stderr is not None for s in panel.series):
        ax.legend(fontsize=7, loc="best")


# ----------------------------------------------------------------------------- densities

def _energy_on(model, params, points: np.ndarray) -> np.ndarray:
    return np.asarray(batched_energies(model, params, jnp.asarray(points)))


def log_density_on_grid(energy: np.ndarray, cell_area: float) -> np.ndarray:
    """log p = −E − log Σ_cells exp(−E)·area: the density normalised on the grid (nats)."""
    neg = -np.asarray(energy, np.float64)
    top = neg.max()
    return neg - (top + np.log(np.sum(np.exp(neg - top)) * cell_area))


def _scatter(ax, points, color: str, limit: int = 2000) -> None:
    pts = np.asarray(points)[:limit]
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c=color, alpha=0.55, linewidths=0)


def plot_samples_2d(model, params, data, particles, box, path: str, num: int = 200,
                    title: str | None = None) -> None:
    """The model's log density (normalised on the grid, floored DENSITY_RANGE nats below
    its maximum so that neither the largest mode saturates nor the tails vanish), with data
    and particles on top. particles: None for objectives without a sampler."""
    xs = np.linspace(box[0], box[1], num, dtype=np.float32)
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    energy = _energy_on(model, params, grid).reshape(num, num)
    log_p = log_density_on_grid(energy, float(xs[1] - xs[0]) ** 2)
    norm = mcolors.Normalize(vmin=log_p.max() - DENSITY_RANGE, vmax=log_p.max())
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.6), layout="constrained")
    panels = ((axes[0], data, "training data", "tab:orange"),
              (axes[1], particles, "particles", "tab:red"))
    for ax, points, name, color in panels:
        image = ax.imshow(log_p, origin="lower", extent=(*box, *box), cmap="Blues", norm=norm)
        if points is None:  # trained without a sampler: the density alone
            ax.set_title(r"$\log p_\theta$ (no particles: objective without a sampler)",
                         fontsize=10)
        else:
            _scatter(ax, points, color)
            ax.set_title(rf"$\log p_\theta$ and {name} ({min(len(points), 2000)} shown)",
                         fontsize=10)
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    bar = fig.colorbar(image, ax=axes, shrink=0.9, extend="min")
    bar.set_label(r"$\log p_\theta(x) = -E_\theta(x)/T - \log Z$  [nats]")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spherical_angles(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(polar angle ϑ ∈ [0, π], azimuth φ ∈ [−π, π]) of points on S^2."""
    x = np.asarray(x)
    return np.arccos(np.clip(x[:, 2], -1, 1)), np.arctan2(x[:, 1], x[:, 0])


def plot_samples_sphere(model, params, target, target_params, data, particles, path: str,
                        num: int = 120, title: str | None = None) -> None:
    """Teacher and model log densities on S^2 (w.r.t. area, one colour scale) in
    (φ, cos ϑ) coordinates, which are equal-area, with data and particles on top."""
    phi = np.linspace(-np.pi, np.pi, 2 * num, dtype=np.float32)
    cos_theta = np.linspace(-1, 1, num, dtype=np.float32)
    pp, cc = np.meshgrid(phi, cos_theta)
    ss = np.sqrt(1 - cc**2)
    grid = np.stack([ss * np.cos(pp), ss * np.sin(pp), cc], -1).reshape(-1, 3)
    cell = 4 * np.pi / grid.shape[0]  # equal-area coordinates: every cell has the same area
    panels = [(r"teacher $\log p^*$ and training data", target, target_params, data, "tab:orange"),
              (r"model $\log p_\theta$ and particles", model, params, particles, "tab:red")]
    fields = [log_density_on_grid(_energy_on(fn, p, grid).reshape(num, 2 * num), cell)
              for _, fn, p, _, _ in panels]
    top = max(f.max() for f in fields)
    low = max(min(f.min() for f in fields), top - DENSITY_RANGE)
    norm = mcolors.Normalize(vmin=low, vmax=top)
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.4), layout="constrained")
    for ax, (name, _, _, points, color), field in zip(axes, panels, fields):
        image = ax.imshow(field, origin="lower", aspect="auto", extent=(-np.pi, np.pi, -1, 1),
                          cmap="Blues", norm=norm)
        if points is not None:  # None: trained without a sampler
            theta, az = spherical_angles(np.asarray(points)[:2000])
            ax.scatter(az, np.cos(theta), s=2, c=color, alpha=0.5, linewidths=0)
        else:
            name = name.replace(" and particles", " (no particles: objective without a sampler)")
        ax.set_xlabel("azimuth φ  [rad]")
        ax.set_ylabel("cos ϑ  (ϑ: polar angle)")
        ax.set_title(name, fontsize=10)
    bar = fig.colorbar(image, ax=axes, shrink=0.9)
    bar.set_label("log density w.r.t. area  [nats]")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- images

def tile(images: np.ndarray, cols: int) -> np.ndarray:
    """(n, h, w, c) images -> one (rows·(h+1)−1, cols·(w+1)−1, c) mosaic with NaN gutters."""
    n, h, w, c = images.shape
    rows = max(1, math.ceil(n / cols))
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, c), np.nan, np.float32)
    for k, image in enumerate(images):
        r, col = divmod(k, cols)
        mosaic[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = image
    return mosaic


def as_image_batch(images, data_range=(0.0, 1.0), shape=None) -> np.ndarray:
    """Images (n, H, W, C) on the [0, 1] display scale: stored uint8 pixels / 255, model-space
    floats mapped from data_range; (n, d) vectors are reshaped to `shape` (H, W[, C])."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255)
    else:
        low, high = data_range
        images = (images.astype(np.float32) - low) / (high - low)
    if images.ndim == 2:
        images = images.reshape(len(images), *(shape or (28, 28)))
    return images[..., None] if images.ndim == 3 else images


class ImageRun(NamedTuple):
    """One column of `plot_image_samples`: a label (e.g. "restart_prob=0"), the model's
    parameters as `model` takes them, and its particles (model-space floats (n, H, W, C),
    or None for objectives without a sampler)."""

    label: str
    params: object
    particles: object


def plot_image_samples(model, runs: Sequence[ImageRun], data, held_out, path: str,
                       data_range=(0.0, 1.0), num: int = 64, title: str | None = None,
                       shape=None, bins: int = 40) -> None:
    """Data images and each run's particles side by side (restarted and persistent chains
    of a sweep next to each other), and under each run the histogram of E/T of its
    particles against E/T of `held_out` images under the same model.

    model(params, x) -> E/T for one image; data: images shown in the first column (uint8
    or model-space floats); held_out: (n, H, W, C) model-space floats. Pixels run from the
    low (black) to the high end (white) of data_range; values outside it are clipped in
    the picture and counted in the panel's title. The histograms share their bins and mark
    each mean: a gap between the two means is `test_energy_gap` of the evaluation.
    """
    cols = int(math.ceil(math.sqrt(num)))
    width = 1 + len(runs)
    fig, axes = plt.subplots(2, width, figsize=(4.6 * width, 8.2), squeeze=False,
                             height_ratios=(1.25, 0.75), layout="constrained")
    panels = [("data", data)] + [(run.label, run.particles) for run in runs]
    for ax, (name, images) in zip(axes[0], panels):
        ax.set_xticks([])
        ax.set_yticks([])
        if images is None:
            ax.set_title(f"{name}: no particles\n(objective without a sampler)", fontsize=9)
            ax.set_frame_on(False)
            continue
        images = as_image_batch(images, data_range, shape)[:num]
        outside = float(np.mean((images < 0) | (images > 1)))
        mosaic = tile(np.clip(images, 0, 1), cols)
        if mosaic.shape[-1] == 1:
            cmap = plt.get_cmap("gray").with_extremes(bad="tab:blue")  # NaN: the gutters
            ax.imshow(mosaic[..., 0], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(np.nan_to_num(mosaic, nan=1.0), interpolation="nearest")
        low, high = data_range
        clipped = (f"\n{outside:.1%} of pixels outside [{low:g}, {high:g}]"
                   if outside or name != "data" else "")
        ax.set_title(f"{name}: {len(images)} shown{clipped}", fontsize=9)
    axes[1][0].set_axis_off()
    axes[1][0].text(0.0, 0.5, "below each run: E/T of its particles\nagainst E/T of "
                    f"{len(held_out)} held-out images\nunder that run's model (nats)",
                    fontsize=9, va="center")
    held_out = jnp.asarray(held_out, jnp.float32)
    for ax, run in zip(axes[1][1:], runs):
        test_energy = np.asarray(batched_energies(model, run.params, held_out))
        series = [("held-out images", test_energy, "tab:blue")]
        if run.particles is not None:
            series.append(("particles", np.asarray(batched_energies(
                model, run.params, jnp.asarray(run.particles, jnp.float32))), "tab:orange"))
        finite = np.concatenate([e[np.isfinite(e)] for _, e, _ in series])
        edges = np.histogram_bin_edges(finite, bins=bins) if finite.size else bins
        for label, energy, colour in series:
            energy = energy[np.isfinite(energy)]
            ax.hist(energy, bins=edges, density=True, alpha=0.55, color=colour,
                    label=f"{label} (mean {energy.mean():.4g})" if energy.size else label)
            if energy.size:
                ax.axvline(energy.mean(), color=colour, lw=1)
        ax.set_xlabel("E/T [nats]")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        ax.set_title(run.label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
