"""PNG figures of a run: metric curves, and samples with the learned density in 2-D and on S^2."""

from __future__ import annotations

import math

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ebmdual.evaluation import batched_energies  # noqa: E402

CURVES = ("loss", "energy_gap", "grad_norm", "acceptance_rate", "kl", "test_nll",
          "fisher_divergence")


def plot_metrics(train_rows: list[dict], eval_rows: list[dict], path: str) -> None:
    """One panel per metric against the step; evaluation metrics on a log scale."""
    names = [n for n in CURVES if any(n in r for r in train_rows + eval_rows)]
    if not names:
        return
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        from_train = any(name in r for r in train_rows)
        source = [r for r in (train_rows if from_train else eval_rows) if name in r]
        steps, values = [r["step"] for r in source], [r[name] for r in source]
        ax.plot(steps, values, marker="." if len(steps) < 50 else None)
        if not from_train and all(v > 0 for v in values):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _energy_on(model, params, points: np.ndarray) -> np.ndarray:
    return np.asarray(batched_energies(model, params, jnp.asarray(points)))


def plot_samples_2d(model, params, data, particles, box, path: str, num: int = 200) -> None:
    """Learned density exp(−E/T) on a grid, with data and particles on top."""
    xs = np.linspace(box[0], box[1], num, dtype=np.float32)
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    energy = _energy_on(model, params, grid).reshape(num, num)
    density = np.exp(-(energy - energy.min()))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, points, title in ((axes[0], data, "data"), (axes[1], particles, "particles")):
        ax.imshow(density, origin="lower", extent=(*box, *box), cmap="viridis")
        if points is None:  # trained without a sampler: the density alone
            ax.set_title("exp(−E/T) (no particles: score-matching objective)")
            continue
        pts = np.asarray(points)[:2000]
        ax.scatter(pts[:, 0], pts[:, 1], s=1, c="white", alpha=0.5)
        ax.set_title(f"exp(−E/T) and {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spherical_angles(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(polar angle ϑ ∈ [0, π], azimuth φ ∈ [−π, π]) of points on S^2."""
    x = np.asarray(x)
    return np.arccos(np.clip(x[:, 2], -1, 1)), np.arctan2(x[:, 1], x[:, 0])


def plot_samples_sphere(model, params, target, target_params, data, particles, path: str,
                        num: int = 120) -> None:
    """Learned and teacher densities on S^2 in (φ, cos ϑ) coordinates (equal-area), with points."""
    phi = np.linspace(-np.pi, np.pi, 2 * num, dtype=np.float32)
    cos_theta = np.linspace(-1, 1, num, dtype=np.float32)
    pp, cc = np.meshgrid(phi, cos_theta)
    ss = np.sqrt(1 - cc**2)
    grid = np.stack([ss * np.cos(pp), ss * np.sin(pp), cc], -1).reshape(-1, 3)
    panels = [("teacher exp(−E*) and data", target, target_params, data),
              ("model exp(−E/T) and particles", model, params, particles)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (title, fn, p, points) in zip(axes, panels):
        energy = _energy_on(fn, p, grid).reshape(num, 2 * num)
        ax.imshow(np.exp(-(energy - energy.min())), origin="lower", aspect="auto",
                  extent=(-np.pi, np.pi, -1, 1), cmap="viridis")
        if points is not None:  # None: trained without a sampler
            theta, az = spherical_angles(np.asarray(points)[:2000])
            ax.scatter(az, np.cos(theta), s=1, c="white", alpha=0.4)
        ax.set_xlabel("φ")
        ax.set_ylabel("cos ϑ")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
