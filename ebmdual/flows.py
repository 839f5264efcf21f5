"""Normalizing flows for flow-MCMC: coupling flows in flax, started at the identity.

    flow = coupling_flow(dim=2, kind="spline")
    params = flow.init(key)
    log_q = flow.log_prob(params, x)                 # x (n, d) -> (n,)
    x, log_q = flow.sample_and_log_prob(params, key, n)

A flow is a bijection f: z ↦ x of a standard normal base, so that
    log q(x) = log N(f⁻¹(x); 0, I) + log |det ∂f⁻¹/∂x|.
f is a stack of coupling layers (Dinh et al., RealNVP): the coordinates are split
in two halves, alternating from layer to layer; one half passes unchanged and
conditions an MLP whose output parametrises an elementwise monotone map of the
other half. Two kinds:

* `affine`: x_b = z_b · exp(s) + t, with s = c·tanh(s_raw/c) bounded (c = 3) for
  stability; log |det| = Σ s.
* `spline`: a monotone rational-quadratic spline on [−B, B] with K bins (Durkan
  et al., "Neural Spline Flows", 2019), the identity outside (linear tails of slope
  1). Bin widths and heights are softmaxes, interior knot derivatives softplus.
  Splines can split one base mode into several, which affine layers do poorly in
  low dimension: the default for multimodal targets.

The conditioners' last layers are initialised at zero, which makes every layer the
identity (s = t = 0; uniform bins with unit derivatives), so q starts as N(0, I).

Why written here rather than taken from a library: flowjax (the maintained JAX flow
library) builds flows as equinox modules, whose static fields must be partitioned
from the arrays at every jit, checkpoint and sharding boundary of the train state,
and adds equinox as a dependency; distrax has broken with several JAX releases. A
flax module's parameters are a plain dict of arrays, so the flow and its optax
state sit in the sampler state and are checkpointed and sharded like everything
else. The layers are ~150 lines.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["Flow", "coupling_flow", "FLOW_KINDS", "rational_quadratic_spline"]

FLOW_KINDS = ("affine", "spline")
AFFINE_SCALE_BOUND = 3.0
MIN_BIN = 1e-3          # smallest bin width/height, as a fraction of the interval
MIN_DERIVATIVE = 1e-3


class Flow(NamedTuple):
    """Pure functions of a flow on R^d.

    init(key) -> params. log_prob(params, x (n, d)) -> (n,).
    sample_and_log_prob(params, key, n) -> (x (n, d), log q(x) (n,)).
    dim: d.
    """

    init: Callable
    log_prob: Callable
    sample_and_log_prob: Callable
    dim: int


# ----------------------------------------------------------------------------- spline

def rational_quadratic_spline(x, widths, heights, derivatives, bound: float,
                              inverse: bool = False):
    """The monotone rational-quadratic spline of Durkan et al. (2019), elementwise.

    x: (...,). widths, heights: (..., K) unnormalised; derivatives: (..., K − 1)
    unnormalised interior-knot derivatives. Inside [−B, B] with bin k of width w_k,
    height h_k, slope s_k = h_k/w_k, knot derivatives d_k, d_{k+1} and ξ the position
    in the bin:
        y = y_k + h_k (s_k ξ² + d_k ξ(1−ξ)) / (s_k + (d_{k+1} + d_k − 2 s_k) ξ(1−ξ)).
    Outside, the identity. inverse=True solves the quadratic for ξ instead.
    Returns (y, log |dy/dx|) at the input point (of the map applied, forward or inverse).
    """
    num_bins = widths.shape[-1]
    w = MIN_BIN + (1 - MIN_BIN * num_bins) * jax.nn.softmax(widths, axis=-1)
    h = MIN_BIN + (1 - MIN_BIN * num_bins) * jax.nn.softmax(heights, axis=-1)
    w, h = 2 * bound * w, 2 * bound * h
    pad = [(0, 0)] * (w.ndim - 1) + [(1, 0)]
    x_knots = jnp.pad(jnp.cumsum(w, axis=-1), pad) - bound
    y_knots = jnp.pad(jnp.cumsum(h, axis=-1), pad) - bound
    # softplus(u + log(e − 1)) = 1 at u = 0: zero conditioner output is the identity
    d = MIN_DERIVATIVE + (1 - MIN_DERIVATIVE) * jax.nn.softplus(derivatives + math.log(math.e - 1.0))
    ones = jnp.ones(d.shape[:-1] + (1,), d.dtype)
    d = jnp.concatenate([ones, d, ones], axis=-1)          # boundary derivatives 1

    inside = jnp.abs(x) < bound
    xc = jnp.clip(x, -bound, bound)
    knots = y_knots if inverse else x_knots
    k = jnp.clip(jnp.sum(xc[..., None] >= knots[..., 1:-1], axis=-1), 0, num_bins - 1)

    def pick(a):
        return jnp.take_along_axis(a, k[..., None], axis=-1)[..., 0]

    x_k, y_k, w_k, h_k = pick(x_knots), pick(y_knots), pick(w), pick(h)
    d_k, d_k1 = pick(d[..., :-1]), pick(d[..., 1:])
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2 * s_k
    if inverse:
        dy = xc - y_k
        a = h_k * (s_k - d_k) + dy * curvature
        b = h_k * d_k - dy * curvature
        c = -s_k * dy
        xi = (2 * c) / (-b - jnp.sqrt(jnp.maximum(b * b - 4 * a * c, 0.0)))
        xi = jnp.clip(xi, 0.0, 1.0)  # float32 rounding in steep bins can leave [0, 1]
        y = xi * w_k + x_k
    else:
        xi = (xc - x_k) / w_k
        y = y_k + h_k * (s_k * xi ** 2 + d_k * xi * (1 - xi)) / (s_k + curvature * xi * (1 - xi))
    one_minus = 1 - xi
    denominator = s_k + curvature * xi * one_minus
    log_dy_dx = (2 * jnp.log(s_k) + jnp.log(d_k1 * xi ** 2 + 2 * s_k * xi * one_minus
                                            + d_k * one_minus ** 2)
                 - 2 * jnp.log(denominator))
    log_det = -log_dy_dx if inverse else log_dy_dx
    return jnp.where(inside, y, x), jnp.where(inside, log_det, 0.0)


# ----------------------------------------------------------------------------- layers

class _Conditioner(nn.Module):
    """MLP from the passive half to `num_outputs` parameters per active coordinate,
    last layer zero-initialised (the layer starts as the identity)."""

    num_active: int
    num_outputs: int
    hidden_size: int
    num_hidden: int

    @nn.compact
    def __call__(self, passive):
        h = passive
        for _ in range(self.num_hidden):
            h = nn.gelu(nn.Dense(self.hidden_size)(h))
        out = nn.Dense(self.num_active * self.num_outputs, kernel_init=nn.initializers.zeros)(h)
        return out.reshape(*passive.shape[:-1], self.num_active, self.num_outputs)


class _CouplingStack(nn.Module):
    """f: z ↦ x as `num_layers` coupling layers; `__call__(v, inverse)` -> (out, log|det|)
    of the map applied (forward z ↦ x, or inverse x ↦ z). v: (n, d)."""

    dim: int
    kind: str
    num_layers: int
    hidden_size: int
    num_hidden: int
    num_bins: int
    bound: float

    def setup(self):
        outputs = 2 if self.kind == "affine" else 3 * self.num_bins - 1
        self.conditioners = [
            _Conditioner(len(self._halves(i)[1]), outputs, self.hidden_size, self.num_hidden)
            for i in range(self.num_layers)]

    def _halves(self, layer: int):
        first, second = list(range(self.dim // 2)), list(range(self.dim // 2, self.dim))
        return (first, second) if layer % 2 == 0 else (second, first)

    def _layer(self, layer: int, v, inverse: bool):
        passive, active = self._halves(layer)
        params = self.conditioners[layer](v[:, passive])
        a = v[:, active]
        if self.kind == "affine":
            scale = AFFINE_SCALE_BOUND * jnp.tanh(params[..., 0] / AFFINE_SCALE_BOUND)
            shift = params[..., 1]
            out = (a - shift) * jnp.exp(-scale) if inverse else a * jnp.exp(scale) + shift
            log_det = jnp.sum(-scale if inverse else scale, axis=-1)
        else:
            k = self.num_bins
            out, log_det = rational_quadratic_spline(
                a, params[..., :k], params[..., k:2 * k], params[..., 2 * k:], self.bound,
                inverse=inverse)
            log_det = jnp.sum(log_det, axis=-1)
        return v.at[:, active].set(out), log_det

    def __call__(self, v, inverse: bool = False):
        total = jnp.zeros(v.shape[:1], v.dtype)
        order = reversed(range(self.num_layers)) if inverse else range(self.num_layers)
        for layer in order:
            v, log_det = self._layer(layer, v, inverse)
            total = total + log_det
        return v, total


def coupling_flow(dim: int, kind: str = "spline", num_layers: int = 4, hidden_size: int = 64,
                  num_hidden: int = 2, num_bins: int = 8, bound: float = 5.0) -> Flow:
    """A coupling flow on R^d (d ≥ 2) over a standard normal base, the identity at init.

    kind: 'affine' (RealNVP) or 'spline' (rational-quadratic, `num_bins` bins on
    [−bound, bound], identity outside). num_layers coupling layers alternate which
    half of the coordinates they transform; each conditioner is an MLP with
    `num_hidden` GELU layers of `hidden_size`.
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"flow kind={kind!r}: expected one of {FLOW_KINDS}")
    if dim < 2:
        raise ValueError(f"coupling flows need dim >= 2, got {dim}")
    if num_layers < 1 or num_bins < 2 or bound <= 0:
        raise ValueError(f"num_layers={num_layers}, num_bins={num_bins}, bound={bound}: "
                         "expected num_layers >= 1, num_bins >= 2, bound > 0")
    stack = _CouplingStack(dim, kind, num_layers, hidden_size, num_hidden, num_bins, bound)

    def base_log_prob(z):
        return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * dim * math.log(2 * math.pi)

    def init(key):
        return stack.init(key, jnp.zeros((1, dim), jnp.float32), inverse=True)

    def log_prob(params, x):
        z, log_det = stack.apply(params, x, inverse=True)
        return base_log_prob(z) + log_det

    def sample_and_log_prob(params, key, num):
        z = jax.random.normal(key, (num, dim), jnp.float32)
        x, log_det = stack.apply(params, z, inverse=False)
        return x, base_log_prob(z) - log_det

    return Flow(init=init, log_prob=log_prob, sample_and_log_prob=sample_and_log_prob, dim=dim)
