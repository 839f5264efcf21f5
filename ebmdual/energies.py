"""Energy models E_θ(x) as flax modules, and the adapter to a pure `energy_fn`.

Every energy is used through one signature everywhere in ebmdual:

    energy_fn(params, x) -> scalar        x: one unbatched sample, shape (d,)

so losses, samplers and evaluation never see flax. `make_energy_fn(module)`
turns a linen module whose `__call__` maps (d,) to a scalar into that function;
`as_energy` accepts a linen module or any `(init, energy_fn)` pair and returns the
`Energy(init, energy_fn)` that the trainer builds from. A sample may be any pytree
(an image, or an image and its label).

Models
------
* `ShallowEnergy`: the paper's one-hidden-layer network on the sphere S^{d-1},

      E(x) = (1/m) Σ_i c_i w_i σ(⟨θ_i, x⟩),   σ(u) = relu(u)^α,

  neurons θ_i ∈ S^{d-1}, fixed output signs c_i ∈ {±1}, nonnegative weights w_i.
  It is trained with Wasserstein–Fisher–Rao steps (`ebmdual.optim.wfr`) in the
  `active` (feature-learning) regime, or with θ frozen in the `lazy`
  (random-features) regime.
* `MLPEnergy`: a swish MLP on R^d with a scalar output, for data in R^d (any sample
  shape, flattened).
* `ConvEnergy`: a swish CNN for images (H, W, C): a 3×3 convolution, then 4×4
  convolutions of stride 2 halving the resolution, then a linear read-out. No
  normalisation layer that couples samples (batch norm would make E(x) depend on
  the other images of the batch); optional spectral normalisation of every layer.
  Its layers compute nn.Conv's function with nn.Conv's parameters in the forms XLA's
  CPU backend runs fastest (docs/performance.md, `benchmarks/conv_layers.py`): the
  first, on the image's few channels, as one matrix multiply of patches (`PatchConv`);
  the stride-2 ones through space-to-depth (`StridedConv`), because the input gradient
  of a strided convolution is slow.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

EnergyFn = Callable[..., jax.Array]


def relu_power(u: jax.Array, alpha: float = 1.0) -> jax.Array:
    """σ(u) = max(u, 0)^α (α = 1 is the ReLU)."""
    r = jax.nn.relu(u)
    return r if alpha == 1.0 else r**alpha


def output_signs(num_neurons: int, num_positive: int) -> jax.Array:
    """Fixed signs c: the first `num_positive` neurons +1, the rest −1. Shape (m,)."""
    if not 0 <= num_positive <= num_neurons:
        raise ValueError(f"num_positive={num_positive} must lie in [0, {num_neurons}]")
    return jnp.where(jnp.arange(num_neurons) < num_positive, 1.0, -1.0)


def shallow_energy(theta: jax.Array, signed_weights: jax.Array, x: jax.Array,
                   alpha: float = 1.0) -> jax.Array:
    """E(x) = mean_i s_i σ(⟨θ_i, x⟩) with s_i = c_i w_i.

    Args:
      theta: (m, d) neurons. signed_weights: (m,). x: (d,).
    Returns: scalar.
    """
    # x @ θᵀ, not θ @ x: vmapped over samples it gives (N, m) pre-activations, which XLA
    # fuses without the transposed copies that (m, N) needs (benchmarks/throughput.py).
    return jnp.mean(signed_weights * relu_power(x @ theta.T, alpha))


def project_to_sphere(x: jax.Array) -> jax.Array:
    """x/‖x‖ along the last axis: the projection Π onto S^{d−1}."""
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def sphere_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Rows drawn uniformly on the unit sphere: normalised Gaussians. shape = (m, d)."""
    return project_to_sphere(jax.random.normal(key, shape, dtype))


class ShallowEnergy(nn.Module):
    """E(x) = (1/m) Σ_i c_i w_i relu(⟨θ_i, x⟩)^α on S^{d-1}.

    Parameters: `theta` (m, d) on the sphere, `w` (m,) ≥ 0 initialised to
    `init_weight`. The signs c (first `num_positive` neurons +1, the others −1)
    are constants, not parameters. Whether θ trains (active) or stays at its
    random initialisation (lazy) is decided by the optimizer, see
    `ebmdual.optim`.
    """

    num_neurons: int = 64
    num_positive: int = 0
    alpha: float = 1.0
    init_weight: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        theta = self.param("theta", sphere_init, (self.num_neurons, d))
        w = self.param("w", nn.initializers.constant(self.init_weight), (self.num_neurons,))
        signs = output_signs(self.num_neurons, self.num_positive)
        return shallow_energy(theta, signs * w, x, self.alpha)


class MLPEnergy(nn.Module):
    """E(x) = MLP(x) on R^d with swish activations and a scalar linear output.

    base_std: when set to s, E(x) = MLP(x) + ‖x‖²/(2s²) with the output layer
    initialised at zero, so the initial model exp(−E/T) at T = 1 is exactly N(0, s²I)
    and can be sampled exactly (what Jarzynski-weighted walkers need at the start);
    the quadratic also keeps exp(−E) normalisable whatever the MLP learns.
    """

    hidden_sizes: Sequence[int] = (128, 128)
    base_std: float | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.ravel(x)
        for width in self.hidden_sizes:
            h = nn.swish(nn.Dense(width)(h))
        if self.base_std is None:
            return nn.Dense(1)(h)[..., 0]
        out = nn.Dense(1, kernel_init=nn.initializers.zeros)(h)[..., 0]
        return out + 0.5 * jnp.sum(x * x, axis=-1) / self.base_std ** 2


def conv_parameters(module: nn.Module, kernel_size: int, channels: int):
    """nn.Conv's parameters, declared in `module` (inside its compact __call__): kernel
    (k, k, C, module.features), lecun-normal, and bias (module.features,), zeros."""
    kernel = module.param("kernel", nn.initializers.lecun_normal(),
                          (kernel_size, kernel_size, channels, module.features))
    bias = module.param("bias", nn.initializers.zeros_init(), (module.features,))
    return kernel, bias


def on_batch(apply: Callable, x: jax.Array) -> jax.Array:
    """apply(batch (B, H, W, C)) on x of shape (H, W, C) or (B, H, W, C), the output batched
    as x is."""
    return apply(x[None])[0] if x.ndim == 3 else apply(x)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _valid_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC)


@jax.custom_vjp
def valid_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """y = x ⋆ W, a stride-1 'VALID' convolution: x (B, H, W, C), kernel (k, k, C, O) ->
    (B, H−k+1, W−k+1, O), y[n, i, j] = Σ_{a, b} W[a, b]ᵀ x[n, i + a, j + b],
    whose input gradient is a convolution in the same layout (NHWC input, HWIO kernel)
    and whose kernel gradient is matrix multiplies:

        ∂x = pad(g, k−1) ⋆ flip(W)ᵀ          (flip of both spatial axes, C ↔ O swapped)
        ∂W[a, b] = Σ_{n,i,j} x[n, i+a, j+b] g[n, i, j]ᵀ   (k² matrix multiplies, one per tap)

    Why: XLA's CPU backend runs a convolution fast (Eigen) only in that layout. JAX's own
    derivative rules emit the input gradient with the kernel's feature axes swapped and
    the kernel gradient with batch and feature swapped, which XLA rewrites into the layout
    (its convolution-canonicalization pass) only in a program's top-level computation:
    inside a lax.scan or fori_loop body they stay, and XLA CPU emits them as naive loops,
    10–100× slower (docs/performance.md, `benchmarks/conv_layers.py`). Here the transpose
    is explicit and the kernel gradient a sum of per-tap products (faster than the same
    gradient as a convolution with batch and channels swapped, which under the vmap over
    samples becomes a grouped convolution), so the derivatives are fast in loops: the
    scanned train step and the AIS chains run at the speed of separately called steps.
    Forward-over-reverse derivatives (jax.linearize of ∇ₓE) differentiate through these
    rules as usual.
    """
    return _valid_conv(x, kernel)


def _valid_conv_forward(x, kernel):
    return _valid_conv(x, kernel), (x, kernel)


def _valid_conv_backward(residuals, g):
    x, kernel = residuals
    k = kernel.shape[0]
    padded = jnp.pad(g, ((0, 0), (k - 1, k - 1), (k - 1, k - 1), (0, 0)))
    dx = _valid_conv(padded, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    rows, cols = g.shape[1:3]
    dkernel = jnp.stack([jnp.stack([
        jnp.einsum("nijc,nijo->co", x[:, a:a + rows, b:b + cols], g) for b in range(k)])
        for a in range(k)])
    return dx, dkernel


valid_conv.defvjp(_valid_conv_forward, _valid_conv_backward)


def space_to_depth(x: jax.Array, kernel_size: int) -> jax.Array:
    """x (B, H, W, C) zero-padded as a k×k stride-2 'SAME' convolution pads it, then
    rearranged to (B, ⌈H'/2⌉, ⌈W'/2⌉, 4C), channel order (row parity, column parity, c).
    An odd padded size gets one more zero row/column, which no output reads."""
    pads = [jax.lax.padtype_to_pads((size,), (kernel_size,), (2,), "SAME")[0]
            for size in x.shape[1:3]]
    pads = [(low, high + (size + low + high) % 2) for (low, high), size in zip(pads, x.shape[1:3])]
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def depth_kernel(kernel: jax.Array) -> jax.Array:
    """A (k, k, C, O) stride-2 kernel as the (k/2, k/2, 4C, O) stride-1 kernel that acts on
    `space_to_depth`'s output: W'[a', b'][(p, q, c)] = W[2a' + p, 2b' + q, c]."""
    k, _, c, o = kernel.shape
    half = k // 2
    return kernel.reshape(half, 2, half, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(
        half, half, 4 * c, o)


class StridedConv(nn.Module):
    """A k×k convolution of stride 2 with 'SAME' padding: the function and the parameters
    (kernel (k, k, C, O), lecun-normal; bias (O,), zeros) of
    `nn.Conv(features, (k, k), strides=(2, 2))`, k even.

    Computed as `space_to_depth` (after the 'SAME' zero padding) and a (k/2)×(k/2)
    stride-1 'VALID' convolution (`valid_conv`) with the kernel rearranged by
    `depth_kernel`:

        y[i, j] = Σ_{a, b < k} W[a, b] · x_pad[2i + a, 2j + b]
                = Σ_{a', b' < k/2} W'[a', b'] · s2d(x_pad)[i + a', j + b'].

    Why: its input gradient is then a stride-1 convolution instead of the dilated one of a
    strided convolution, which XLA's CPU backend runs slowly. ∇ₓE of the MNIST ConvEnergy
    takes 34 ms instead of 38 ms for 128 images on 2 cores (`benchmarks/conv_layers.py`,
    docs/performance.md). x: (H, W, C) or (B, H, W, C).
    """

    features: int
    kernel_size: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        if k % 2:
            raise ValueError(f"StridedConv needs an even kernel size, got {k}")
        kernel, bias = conv_parameters(self, k, x.shape[-1])
        return on_batch(lambda b: valid_conv(space_to_depth(b, k), depth_kernel(kernel)) + bias,
                        x)


def image_patches(x: jax.Array, kernel_size: int) -> jax.Array:
    """x (B, H, W, C) zero-padded as a k×k stride-1 'SAME' convolution pads it, then the k²
    shifted copies side by side: (B, H, W, k²C), channel order (row offset, column
    offset, c), so that patches @ kernel.reshape(k²C, O) is that convolution (im2col)."""
    k = kernel_size
    low = (k - 1) // 2
    x = jnp.pad(x, ((0, 0), (low, k - 1 - low), (low, k - 1 - low), (0, 0)))
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    return jnp.concatenate([x[:, a:a + h, b:b + w] for a in range(k) for b in range(k)],
                           axis=-1)


class PatchConv(nn.Module):
    """A k×k stride-1 convolution with 'SAME' padding: the function and the parameters
    (kernel (k, k, C, O), lecun-normal; bias (O,), zeros) of `nn.Conv(features, (k, k))`,
    computed as one matrix multiply of `image_patches` (im2col):

        y[i, j] = Σ_{a, b < k} W[a, b]ᵀ · x_pad[i + a, j + b]
                = patches[i, j] · W.reshape(k²C, O).

    Why: on an image's few channels XLA's CPU convolution is slow; the matrix multiply
    takes ∇ₓE of the MNIST ConvEnergy (1 channel) from 24.4 to 21.8 ms for 128 images on
    2 cores, and of the CelebA one (3 channels) from 71.7 to 68.7 ms for 32 images
    (`benchmarks/conv_layers.py`, docs/performance.md). With many input channels it is
    slower than the convolution, so ConvEnergy uses it for its first layer only.
    x: (H, W, C) or (B, H, W, C).
    """

    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, channels = self.kernel_size, x.shape[-1]
        kernel, bias = conv_parameters(self, k, channels)
        matrix = kernel.reshape(k * k * channels, self.features)
        return on_batch(lambda b: image_patches(b, k) @ matrix + bias, x)


class ConvEnergy(nn.Module):
    """E(x) for one image x (H, W, C): a swish CNN with a scalar linear output.

    features = (c_0, c_1, …, c_L): a 3×3 convolution to c_0 channels at full resolution
    (`PatchConv`, named Conv_0), then for each c_l (l ≥ 1) a 4×4 convolution of stride 2
    to c_l channels ('SAME' padding: 28 → 14 → 7 → 4; `StridedConv`, named Conv_l as
    nn.Conv would be), swish after each, then Dense(1) on the flattened map. The
    parameters are those of the same network written with nn.Conv.
    spectral_norm: wrap every layer in `flax.linen.SpectralNorm` with
    `power_iterations` steps of power iteration per call, started from the stored
    random vector (never updated: E stays a pure function of its parameters, and the
    estimate of σ_max is a lower bound that tightens with the number of steps).
    """

    features: Sequence[int] = (16, 32, 64, 64)
    spectral_norm: bool = False
    power_iterations: int = 3

    def _layer(self, layer, h):
        if not self.spectral_norm:
            return layer(h)
        return nn.SpectralNorm(layer, n_steps=self.power_iterations)(h, update_stats=False)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.swish(self._layer(PatchConv(self.features[0], 3, name="Conv_0"), x))
        for i, width in enumerate(self.features[1:], start=1):
            h = nn.swish(self._layer(StridedConv(width, 4, name=f"Conv_{i}"), h))
        return self._layer(nn.Dense(1), jnp.ravel(h))[0]


def tilted(energy: "Energy", flow) -> "Energy":
    """The energy of an EBM tilted by a normalizing flow, p ∝ q_φ · exp(−E_θ):

        E(x) = E_θ(x) − log q_φ(x),    params = {'energy': θ, 'flow': φ}.

    `energy`: an `Energy` (or anything `as_energy` takes); `flow`: an
    `ebmdual.flows.Flow` on R^d, started at N(0, I). Trained by maximum likelihood, θ and
    φ move together; flow-MCMC proposes from q_φ itself (`flow_mcmc(model_flow=...)`).
    """
    energy = as_energy(energy)

    def init(key, example):
        energy_key, flow_key = jax.random.split(key)
        return {"energy": energy.init(energy_key, example), "flow": flow.init(flow_key)}

    def energy_fn(params, x):
        return (energy.energy_fn(params["energy"], x)
                - flow.log_prob(params["flow"], x[None])[0])

    return Energy(init=init, energy_fn=energy_fn)


def make_energy_fn(module: nn.Module) -> EnergyFn:
    """energy_fn(params, x) = module.apply(params, x): x (d,) -> scalar."""

    def energy_fn(params, x):
        return module.apply(params, x)

    return energy_fn


class Energy(NamedTuple):
    """An energy as a pair of pure functions.

    init(key, example) -> params: `example` is one sample (the particle pytree without
    its leading axis). energy_fn(params, x) -> scalar for one sample x.
    """

    init: Callable
    energy_fn: EnergyFn


def as_energy(model) -> Energy:
    """An `Energy` from a flax linen module (init/apply on one sample) or an (init, energy_fn) pair."""
    if isinstance(model, Energy):
        return model
    if isinstance(model, nn.Module):
        return Energy(init=model.init, energy_fn=make_energy_fn(model))
    if isinstance(model, tuple) and len(model) == 2 and all(map(callable, model)):
        return Energy(*model)
    raise TypeError(f"expected a flax linen Module or an (init, energy_fn) pair, got "
                    f"{type(model).__name__}")
