"""A PyTorch peer of ebmdual's MNIST image setting (benchmark only; `benchmarks.image_step`).

The network is `ebmdual.energies.ConvEnergy(features=(16, 32, 64, 64))` written in
torch, the same function: a 3×3 convolution (stride 1, padding 1) to 16 channels, then
4×4 convolutions of stride 2 to 32, 64, 64 channels with flax's 'SAME' padding
(total = max((out − 1)·s + k − in, 0), low = total // 2, high = total − low: for
28 → 14 → 7 → 4 that is (1, 1), (1, 1), (1, 2); the asymmetric one through `F.pad`),
swish (`F.silu`) after each, the map flattened in flax's (H, W, C) order (NCHW
permuted to NHWC first) and a Linear layer to one output. `load_flax_params` copies a
flax parameter tree into it (Conv kernel (kh, kw, in, out) → weight (out, in, kh, kw),
Dense kernel (in, 1) → weight (1, in)), so energies and ∇ₓE can be compared.

The sampler and the train step are written as a PyTorch user writes them, eagerly:
`langevin_step` (x.requires_grad_, `torch.autograd.grad` of E(x).sum(), optional
per-pixel clamp of the gradient, x − h∇E + √(2hT)ξ clamped to [0, 1]) and
`TorchTrainer.train_step` (a replay-buffer tensor of N particles, B drawn by randperm,
restarts at random batch items with probability p, a Python loop of K Langevin steps,
the buffer rows written back, then one Adam step on mean E(batch) − mean E(particles)).
`compiled_langevin_step` is the same step through `torch.compile` (the gradient by
`torch.func.grad`, so forward and backward are one graph).

torch is an optional, benchmark-only dependency (`pip install -e '.[bench]'`); this
module imports it at import time, so import it under a guard.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """flax / XLA 'SAME' padding of one spatial axis: (low, high)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TorchConvEnergy(nn.Module):
    """E(x) for images x (B, C, H, W) -> (B,): ConvEnergy's function in torch."""

    def __init__(self, features: Sequence[int] = (16, 32, 64, 64), image_size: int = 28,
                 channels: int = 1):
        super().__init__()
        self.convs = nn.ModuleList()
        self.pads: list[tuple[int, int]] = []
        size, c_in = image_size, channels
        for i, width in enumerate(features):
            kernel, stride = (3, 1) if i == 0 else (4, 2)
            low, high = same_padding(size, kernel, stride)
            self.pads.append((low, high))
            self.convs.append(nn.Conv2d(c_in, width, kernel, stride=stride,
                                        padding=low if low == high else 0))
            size, c_in = -(-size // stride), width
        self.linear = nn.Linear(size * size * c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv, (low, high) in zip(self.convs, self.pads):
            if low != high:  # asymmetric 'SAME' padding: (left, right, top, bottom)
                h = F.pad(h, (low, high, low, high))
            h = F.silu(conv(h))
        # flax flattens (H, W, C): permute NCHW -> NHWC before flattening
        return self.linear(h.permute(0, 2, 3, 1).flatten(1)).squeeze(-1)


def load_flax_params(module: TorchConvEnergy, params) -> TorchConvEnergy:
    """Copy ConvEnergy's flax parameters ({'params': {'Conv_i', 'Dense_0'}}) into `module`."""
    tree = params["params"] if "params" in params else params
    with torch.no_grad():
        for i, conv in enumerate(module.convs):
            layer = tree[f"Conv_{i}"]
            conv.weight.copy_(torch.from_numpy(np.asarray(layer["kernel"]).transpose(3, 2, 0, 1)
                                               .copy()))
            conv.bias.copy_(torch.from_numpy(np.asarray(layer["bias"]).copy()))
        dense = tree["Dense_0"]
        module.linear.weight.copy_(torch.from_numpy(np.asarray(dense["kernel"]).T.copy()))
        module.linear.bias.copy_(torch.from_numpy(np.asarray(dense["bias"]).copy()))
    return module


def nhwc_to_nchw(x) -> torch.Tensor:
    """A (B, H, W, C) array (numpy / jax) as a contiguous (B, C, H, W) torch tensor."""
    return torch.from_numpy(np.array(np.asarray(x).transpose(0, 3, 1, 2), order="C"))


# ----------------------------------------------------------------------------- sampler

def energy_gradient(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """∇ₓE at each image of x (B, C, H, W): autograd.grad of E(x).sum() w.r.t. x."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    return grad


def langevin_step(net: nn.Module, x: torch.Tensor, step_size: float, temperature: float,
                  grad_clamp: float | None = None, noise: torch.Tensor | None = None):
    """One ULA step clip(x − h g + √(2hT) ξ, 0, 1), g = ∇E (clamped per pixel if grad_clamp)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    if grad_clamp is not None:
        grad = grad.clamp(-grad_clamp, grad_clamp)
    noise = torch.randn_like(x) if noise is None else noise
    return (x.detach() - step_size * grad
            + math.sqrt(2.0 * step_size * temperature) * noise).clamp_(0.0, 1.0)


def compiled_langevin_step(net: nn.Module, step_size: float, temperature: float,
                           grad_clamp: float | None = None):
    """`langevin_step` through torch.compile: step(x) -> x, ∇E by torch.func.grad (one graph
    of forward and backward; autograd.grad would break the graph). Compiles at first call."""
    scale = math.sqrt(2.0 * step_size * temperature)

    def step(x):
        grad = torch.func.grad(lambda y: net(y).sum())(x)
        if grad_clamp is not None:
            grad = grad.clamp(-grad_clamp, grad_clamp)
        return (x - step_size * grad + scale * torch.randn_like(x)).clamp(0.0, 1.0)

    compiled = torch.compile(step)

    def call(x):
        with torch.no_grad():
            return compiled(x)

    return call


# ----------------------------------------------------------------------------- train step

class TorchTrainer:
    """The replay-buffer maximum-likelihood train step of ebmdual's image setting, eager.

    buffer: (N, C, H, W) float32 particles in [0, 1], started at random images of `data`.
    `step_fn(x) -> x`: one Langevin step (default `langevin_step` with the given h, T, clamp).
    """

    def __init__(self, net: nn.Module, data_uint8: torch.Tensor, num_particles: int,
                 particles_per_step: int, num_steps: int, step_size: float, temperature: float,
                 restart_prob: float, learning_rate: float, grad_clamp: float | None = None,
                 step_fn=None):
        self.net = net
        self.optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
        rows = torch.randint(0, data_uint8.shape[0], (num_particles,))
        self.buffer = data_uint8[rows].float().div_(255.0)
        self.particles_per_step, self.num_steps = particles_per_step, num_steps
        self.restart_prob = restart_prob
        self.step_fn = step_fn or (lambda x: langevin_step(net, x, step_size, temperature,
                                                           grad_clamp))

    def train_step(self, batch_uint8: torch.Tensor) -> float:
        """One step on a (B, C, H, W) uint8 batch: restart, K Langevin steps, Adam. -> loss."""
        data = batch_uint8.float().div_(255.0)
        index = torch.randperm(self.buffer.shape[0])[:self.particles_per_step]
        x = self.buffer[index]
        restart = torch.rand(x.shape[0]) < self.restart_prob
        targets = data[torch.randint(0, data.shape[0], (x.shape[0],))]
        x = torch.where(restart[:, None, None, None], targets, x)
        for _ in range(self.num_steps):
            x = self.step_fn(x)
        x = x.detach()
        self.buffer[index] = x
        loss = self.net(data).mean() - self.net(x).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()
