"""Where the image step's time goes on XLA CPU: each layer of the MNIST ConvEnergy, and
two rewrites of its strided convolutions, against eager PyTorch in the same process.

    python -m benchmarks.conv_layers                       (pip install -e '.[bench]' for torch)
    XLA_FLAGS=--xla_cpu_use_onednn=true python -m benchmarks.conv_layers

Every JAX row is compiled by `ebmdual.compiler.jit`, as ebmdual's own programs are (XLA's
convolutions, not YNNPACK's), except the row `ConvEnergy, jax.jit`: the same gradient under
JAX's default compiler options.

Rows (batch B = 128, float32, median of --repeats timed calls after a warm-up call that
compiles, each ended by `jax.block_until_ready`; torch on the CPU is synchronous):

* one row per layer of `ConvEnergy(features=(16, 32, 64, 64))` on 28×28×1 images: the
  layer and its swish alone, `lax.conv_general_dilated` in NHWC/HWIO (flax's layout) and
  NCHW/OIHW, forward and forward + ∇ of the summed output w.r.t. the layer's input;
  PyTorch `conv2d` + `silu` forward (no_grad) and forward + `autograd.grad`.
* the whole network, ∇ₓ Σ E(x):
  - `ConvEnergy`: `jax.vmap(jax.grad(E))` of the module, as `ebmdual.samplers` does: its
    first layer `energies.PatchConv` (im2col: the 9 shifted copies, one matrix multiply),
    its stride-2 layers `energies.StridedConv` (pad → space-to-depth → 2×2 stride-1
    `energies.valid_conv` with the same weights rearranged, so the input gradient is a
    stride-1 convolution, not a dilated one); `ConvEnergy, jax.jit`: the same under JAX's
    default compiler options (YNNPACK convolutions);
  - `conv_first`: ConvEnergy with its first layer a plain convolution (nn.Conv's);
  - `lax`: ConvEnergy with `lax.conv_general_dilated` in place of `valid_conv` (JAX's
    own derivative rules; the same at top level, see the loop rows);
  - `strided`: the same parameters with the stride-2 layers as plain strided
    convolutions (`nn.Conv(..., strides=(2, 2))`, what ConvEnergy used first);
  - `im2col`: every convolution as shifted slices concatenated, then one matrix multiply;
  - PyTorch eager with the same weights.
  Every alternative is checked against ConvEnergy's gradient (1e-5 relative) before
  timing.
* the CelebA config's network (64-128-256-256 on 32×32×3, --celeba_batch images):
  ConvEnergy against `conv_first`, i.e. PatchConv against a plain first convolution on
  3 channels.
* inside a loop: ∇ₓ Σ E and ∇_θ Σ E of ConvEnergy and of `lax`, alone and per step of a
  `lax.fori_loop` of 10 steps (x moved along −∇ₓE, or scaled, each step), as the scanned
  train step and AIS run them.
* a grid: ∇ₓ of --members ConvEnergy members (B/2 images each) vmapped over their stacked
  parameters, as one `experiments.sweep` program would run them, against the same
  members one at a time (what `experiments.sweep` does for conv energies on CPU).

XLA_FLAGS is read when JAX starts: run the module once per flag setting to compare (the
flags in effect are printed; `ebmdual.compiler.COMPILER_OPTIONS` override them in every
row but `ConvEnergy, jax.jit`). Threads: XLA and torch both use every core of the process
(--threads restricts the process's CPU affinity first, as benchmarks.image_step does).
Results and their reading: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

LOOP_STEPS = 10
CELEBA_FEATURES = (64, 128, 256, 256)   # experiments/celeba.py
LAYERS = ((28, 1, 16, 3, 1), (28, 16, 32, 4, 2), (14, 32, 64, 4, 2), (7, 64, 64, 4, 2))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="cores to use (0: all)")
    parser.add_argument("--torch", type=int, default=1, help="0: JAX rows only")
    parser.add_argument("--celeba_batch", type=int, default=32,
                        help="images of the CelebA-network row (0: skip it)")
    parser.add_argument("--members", type=int, default=8,
                        help="grid members of the last row (each with batch/2 images)")
    return parser.parse_args(argv)


def median_ms(fn, *args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def conv(x, kernel, strides, padding):
    from jax import lax

    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def im2col_conv(x, kernel, pad):
    """A stride-1 convolution as shifted slices concatenated and one matrix multiply."""
    import jax.numpy as jnp

    k = kernel.shape[0]
    x = jnp.pad(x, ((0, 0), pad, pad, (0, 0)))
    rows, cols = x.shape[1] - k + 1, x.shape[2] - k + 1
    patches = jnp.concatenate([x[:, i:i + rows, j:j + cols] for i in range(k) for j in range(k)],
                              axis=-1)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def rewritten_energy(params, x, layer):
    """Batched E(x) (B,) of ConvEnergy's parameters, computed other ways:
    'strided': every layer `lax.conv_general_dilated`, the stride-2 ones with stride 2
    (i.e. `nn.Conv`, what ConvEnergy was first); 'im2col': space-to-depth, then shifted
    slices and one matrix multiply for every layer; 'lax': ConvEnergy's own formulation
    (`PatchConv` first, space-to-depth after) with `lax.conv_general_dilated` in place of
    `energies.valid_conv`, i.e. JAX's own derivative rules; 'conv_first': ConvEnergy with
    its first layer a `lax.conv_general_dilated` instead of `PatchConv`."""
    import flax.linen as nn

    from ebmdual.energies import depth_kernel, space_to_depth, valid_conv

    p = params["params"]
    first = p["Conv_0"]
    if layer in ("im2col", "lax"):
        h = im2col_conv(x, first["kernel"], (1, 1))
    else:
        h = conv(x, first["kernel"], (1, 1), "SAME")
    h = nn.swish(h + first["bias"])
    for i in range(1, len(LAYERS)):
        weights = p[f"Conv_{i}"]
        if layer == "strided":
            h = conv(h, weights["kernel"], (2, 2), "SAME")
        else:
            h, kernel = space_to_depth(h, 4), depth_kernel(weights["kernel"])
            if layer == "im2col":
                h = im2col_conv(h, kernel, (0, 0))
            elif layer == "lax":
                h = conv(h, kernel, (1, 1), "VALID")
            else:
                h = valid_conv(h, kernel)
        h = nn.swish(h + weights["bias"])
    h = h.reshape(h.shape[0], -1)
    return (h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])[:, 0]


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ebmdual.compiler import jit
    from ebmdual.energies import ConvEnergy

    cores = len(os.sched_getaffinity(0))
    torch = None
    if args.torch:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(cores)
    print(f"jax {jax.__version__}, {cores} cores, B = {args.batch}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
          + (f", torch {torch.__version__}" if torch else ""))
    reps = args.repeats
    header = ("layer", "jax fwd", "jax fwd+∇x", "NCHW fwd", "NCHW fwd+∇x", "torch fwd",
              "torch fwd+∇x", "∇x ratio")
    print("\nms per call; ∇x ratio = JAX NHWC fwd+∇x ÷ torch fwd+∇x")
    print(" | ".join(header))
    for size, cin, cout, k, stride in LAYERS:
        key_x, key_w = jax.random.split(jax.random.key(size * 1000 + cout))
        x = jax.random.normal(key_x, (args.batch, size, size, cin))
        w = 0.1 * jax.random.normal(key_w, (k, k, cin, cout))

        def layer(x, w, numbers=("NHWC", "HWIO", "NHWC")):
            return jax.nn.swish(jax.lax.conv_general_dilated(
                x, w, (stride, stride), "SAME", dimension_numbers=numbers))

        def nchw(x, w):
            return layer(x, w, ("NCHW", "OIHW", "NCHW"))

        fwd = jit(layer)
        grad = jit(jax.grad(lambda x, w: layer(x, w).sum()))
        x_c, w_c = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1))
        fwd_c = jit(nchw)
        grad_c = jit(jax.grad(lambda x, w: nchw(x, w).sum()))
        row = [median_ms(fwd, x, w, repeats=reps), median_ms(grad, x, w, repeats=reps),
               median_ms(fwd_c, x_c, w_c, repeats=reps), median_ms(grad_c, x_c, w_c, repeats=reps)]
        if torch:
            tx = torch.tensor(np.asarray(x_c), requires_grad=True)
            tw = torch.tensor(np.asarray(w_c))
            pad = (k - 1) // 2 if stride == 1 else 1

            def torch_fwd():
                return F.silu(F.conv2d(tx, tw, stride=stride, padding=pad))

            def torch_grad():
                return torch.autograd.grad(torch_fwd().sum(), tx)[0]

            with torch.no_grad():
                row.append(median_ms(torch_fwd, repeats=reps))
            row.append(median_ms(torch_grad, repeats=reps))
            row.append(row[1] / row[5])
        name = f"{size}×{size} {cin}→{cout} k{k} s{stride}"
        print(" | ".join([name] + [f"{v:.2f}" for v in row]))

    module = ConvEnergy(features=(16, 32, 64, 64))
    images = jax.random.uniform(jax.random.key(1), (args.batch, 28, 28, 1))
    params = module.init(jax.random.key(0), images[0])
    per_image_grad = jax.vmap(jax.grad(lambda xi: module.apply(params, xi)))
    flax_grad = jit(per_image_grad)
    reference = np.asarray(flax_grad(images))
    scale = np.abs(reference).max()
    rows = [("ConvEnergy", flax_grad), ("ConvEnergy, jax.jit", jax.jit(per_image_grad))]
    for layer in ("conv_first", "lax", "strided", "im2col"):
        rewritten = jit(jax.grad(
            lambda x, layer=layer: rewritten_energy(params, x, layer).sum()))
        error = np.abs(np.asarray(rewritten(images)) - reference).max() / scale
        if error > 1e-5:
            raise SystemExit(f"{layer}: ∇x differs from the flax energy's by {error:.2g} "
                             "(relative): not timed")
        rows.append((layer, rewritten))
    print("\nwhole network, ∇x Σ E(x), ms per call")
    times = {name: median_ms(fn, images, repeats=reps) for name, fn in rows}
    if torch:
        from benchmarks.torch_image_peer import (TorchConvEnergy, energy_gradient,
                                                 load_flax_params, nhwc_to_nchw)

        net = load_flax_params(TorchConvEnergy(features=(16, 32, 64, 64)), params)
        timages = nhwc_to_nchw(images)

        def torch_input_grad():
            return energy_gradient(net, timages)

        times["torch eager"] = median_ms(torch_input_grad, repeats=reps)
    for name, ms in times.items():
        ratio = f"  ({ms / times['torch eager']:.2f}× torch)" if "torch eager" in times else ""
        print(f"{name:>16}: {ms:7.2f}{ratio}")

    if args.celeba_batch:
        # The first layer on 3 channels: the CelebA config's network on 32×32×3 images.
        celeba = ConvEnergy(features=CELEBA_FEATURES)
        faces = jax.random.uniform(jax.random.key(4), (args.celeba_batch, 32, 32, 3))
        celeba_params = celeba.init(jax.random.key(5), faces[0])
        ours = jit(jax.vmap(jax.grad(lambda xi: celeba.apply(celeba_params, xi))))
        plain_first = jit(jax.grad(
            lambda x: rewritten_energy(celeba_params, x, "conv_first").sum()))
        error = (np.abs(np.asarray(plain_first(faces)) - np.asarray(ours(faces))).max()
                 / np.abs(np.asarray(ours(faces))).max())
        if error > 1e-5:
            raise SystemExit(f"conv_first (CelebA): ∇x differs by {error:.2g}: not timed")
        # 3 interleaved rounds: the two differ by a few per cent, less than the drift of
        # one pass after the other on shared cores.
        rounds = {"ConvEnergy": [], "conv_first": []}
        for _ in range(3):
            rounds["ConvEnergy"].append(median_ms(ours, faces, repeats=max(3, reps // 6)))
            rounds["conv_first"].append(median_ms(plain_first, faces, repeats=max(3, reps // 6)))
        print(f"\nCelebA ConvEnergy{CELEBA_FEATURES}, {args.celeba_batch} images 32×32×3, ∇x "
              "Σ E(x), ms per call (median of 3 interleaved rounds): " + ", ".join(
                  f"{name} {statistics.median(times):.1f}" for name, times in rounds.items()))

    # Inside a loop body: XLA CPU rewrites convolutions into the layout its Eigen kernels
    # take only in a program's top-level computation (docs/performance.md).
    def convenergy(p, x):
        return jax.vmap(lambda xi: module.apply(p, xi))(x)

    def lax_energy(p, x):
        return rewritten_energy(p, x, "lax")

    print(f"\ninside a fori_loop of {LOOP_STEPS} steps, ms per step (the same call alone: "
          "first column)")
    print("energy | ∇x alone | ∇x in loop | ∇θ alone | ∇θ in loop")
    for name, energy_of in (("ConvEnergy (valid_conv)", convenergy),
                            ("lax (JAX's derivative rules)", lax_energy)):
        grad_x = jax.grad(lambda x, p: energy_of(p, x).sum())
        grad_p = jax.grad(lambda p, x: energy_of(p, x).sum())

        def x_loop(x, grad_x=grad_x):
            return jax.lax.fori_loop(0, LOOP_STEPS, lambda _, y: y - 1e-3 * grad_x(y, params), x)

        def p_loop(x, grad_p=grad_p):
            def body(_, carry):
                y, total = carry
                grads = grad_p(params, y)
                return y * 0.999, total + sum(jnp.sum(g) for g in jax.tree.leaves(grads))
            return jax.lax.fori_loop(0, LOOP_STEPS, body, (x, 0.0))[1]

        cells = [median_ms(jit(lambda x, g=grad_x: g(x, params)), images, repeats=reps),
                 median_ms(jit(x_loop), images, repeats=max(3, reps // 5)) / LOOP_STEPS,
                 median_ms(jit(lambda x, g=grad_p: g(params, x)), images, repeats=reps),
                 median_ms(jit(p_loop), images, repeats=max(3, reps // 5)) / LOOP_STEPS]
        print(" | ".join([name] + [f"{v:.2f}" for v in cells]))

    # A grid of M members vmapped over their parameters: each convolution gets per-member
    # kernels, which XLA lowers to one grouped convolution (feature_group_count = M).
    members, per_member = args.members, args.batch // 2
    stacked = jax.vmap(lambda k: module.init(k, images[0]))(
        jax.random.split(jax.random.key(2), members))
    grid_images = jax.random.uniform(jax.random.key(3), (members, per_member, 28, 28, 1))
    member_grad = jax.vmap(jax.grad(lambda xi, p: module.apply(p, xi)), in_axes=(0, None))
    vmapped = jit(jax.vmap(member_grad))
    one = jit(member_grad)
    first = jax.tree.map(lambda leaf: leaf[0], stacked)
    grouped = vmapped.lower(grid_images, stacked).as_text().count("feature_group_count")
    together = median_ms(vmapped, grid_images, stacked, repeats=reps)
    alone = members * median_ms(one, grid_images[0], first, repeats=reps)
    print(f"\n{members} members × {per_member} images, ∇x of ConvEnergy, ms: vmapped over "
          f"members {together:.1f} (grouped convolutions in its HLO: {grouped}); one member "
          f"at a time × {members}: {alone:.1f}; ratio {together / alone:.2f}")


if __name__ == "__main__":
    main()
