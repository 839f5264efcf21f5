"""`jit`: `jax.jit` with the XLA compiler options every ebmdual program is compiled with.

    from ebmdual.compiler import jit
    step = jit(fn, donate_argnums=0)          # any jax.jit argument passes through

Every program ebmdual compiles goes through it (the train loop and its host-loop pieces,
evaluation, the classifier, the data generators, the experiments' grid step).

COMPILER_OPTIONS, per option:

* `xla_cpu_experimental_ynn_fusion_type` = [INDIVIDUAL_DOT, REDUCE]: XLA's default list
  less INDIVIDUAL_CONVOLUTION. XLA's CPU backend (jaxlib 0.10) hands convolutions, dots
  and reductions to YNNPACK by default (checked by compiling each kind: elementwise
  fusions are not in the default). YNNPACK's convolutions are slower than
  XLA's own (Eigen) ones on the convolutions of an image energy: ∇ₓE of the MNIST
  `ConvEnergy` on 128 images takes 44.7 ms under JAX's defaults and 21.75 ms with these
  options, eager PyTorch 21.65 ms (`python -m benchmarks.conv_layers`; docs/performance.md). Dots and reductions keep YNNPACK: programs without convolutions
  (the MLP and shallow energies) compile as under JAX's defaults.
  The option is read only by the CPU compiler; GPU and TPU compilers ignore it.

The same choice for a whole process, including jax.jit calls of your own, is the
environment variable read when JAX starts:
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution.
A function of ebmdual that you call inside your own `jax.jit` is compiled with your
options, not these (XLA compiles the outermost program; JAX refuses compiler options on
an inner jit, so `jit` leaves them out there).

Why a wrapper of our own: JAX has no process-wide default for compiler options, and
XLA_FLAGS set from inside a library would change programs that are not ours and would
do nothing once a backend has started.
"""

from __future__ import annotations

import functools

import jax

COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def jit(fun=None, /, **kwargs):
    """jax.jit(fun, **kwargs), compiled with COMPILER_OPTIONS when called at top level.

    Called with traced arguments (inside your own jax.jit, or under jax.vmap or jax.grad),
    it is jax.jit(fun, **kwargs) without them: JAX accepts compiler options only on the
    outermost program, whose options then apply to the whole. Usable as a decorator, bare
    or with arguments (`functools.partial(jit, static_argnames=...)`). `.lower` lowers
    the top-level form.
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    top_level = jax.jit(fun, compiler_options=COMPILER_OPTIONS, **kwargs)
    nested = jax.jit(fun, **kwargs)

    @functools.wraps(fun)
    def call(*args, **call_kwargs):
        traced = any(isinstance(leaf, jax.core.Tracer)
                     for leaf in jax.tree.leaves((args, call_kwargs)))
        return (nested if traced else top_level)(*args, **call_kwargs)

    call.lower = top_level.lower
    return call
