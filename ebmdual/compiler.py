"""`jit`: `jax.jit` with the XLA compiler options every ebmdual program is compiled with.

    from ebmdual.compiler import jit
    step = jit(fn, donate_argnums=0)          # any jax.jit argument passes through

COMPILER_OPTIONS, per option:

* `xla_cpu_experimental_ynn_fusion_type` = [INDIVIDUAL_DOT]. XLA's CPU backend (jaxlib
  0.10) hands every convolution and every dot to YNNPACK by default (its default list
  is [INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION]). YNNPACK's convolutions are slower than
  XLA's own (Eigen) ones on the convolutions of an image energy: ∇ₓE of the MNIST
  `ConvEnergy` on 128 images takes 35 ms with the default list and 24 ms with dots only,
  eager PyTorch 24 ms (`benchmarks/conv_layers.py`, `benchmarks/image_step.py`;
  docs/performance.md). Dots keep YNNPACK: the MLP and shallow energies do not change.
  The option is read only by the CPU compiler; GPU and TPU compilers ignore it.

The same choice for a whole process, including jax.jit calls of your own, is the
environment variable read when JAX starts:
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution.
A function of ebmdual that you call inside your own `jax.jit` is compiled with your
options, not these (XLA compiles the outermost program).

Why a wrapper of our own: JAX has no process-wide default for compiler options, and
XLA_FLAGS set from inside a library would change programs that are not ours and would
do nothing once a backend has started.
"""

from __future__ import annotations

import functools

import jax

COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}

jit = functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS)
jit.__doc__ = "jax.jit(fun, **kwargs) with compiler_options=COMPILER_OPTIONS (see module docstring)."
