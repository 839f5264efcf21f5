"""ebmdual.compiler.jit: its options reach top-level programs, it composes with the caller's
own jax.jit / vmap / grad, and it changes convolutions only."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmdual import energies, samplers
from ebmdual.compiler import COMPILER_OPTIONS, jit

cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu",
                              reason="the options are read by the CPU compiler only")


@pytest.fixture(scope="module")
def conv_energy():
    module = energies.ConvEnergy(features=(4, 8, 8))
    x = jax.random.uniform(jax.random.key(0), (3, 16, 16, 1))
    params = module.init(jax.random.key(1), x[0])
    return (lambda p, xi: module.apply(p, xi)), params, x


def ynnpack_convolutions(hlo_text: str) -> int:
    """How many convolutions of a compiled program sit inside YNNPACK fusions."""
    called = set(re.findall(r"calls=(%[\w.-]+)[^\n]*__ynn_fusion", hlo_text))
    computations = re.split(r"\n(?=%|ENTRY)", hlo_text)   # one block per computation
    return sum(block.count(" convolution(") for block in computations
               if block.split(" ", 1)[0] in called)


def gradients(energy_fn):
    return lambda params, x: samplers.energy_gradients(energy_fn, params, x)


@cpu_only
def test_top_level_programs_keep_convolutions_out_of_ynnpack(conv_energy):
    """JAX's defaults hand ConvEnergy's convolutions to YNNPACK; ebmdual's jit keeps them
    XLA convolutions (the speed reason is in the module docstring)."""
    energy_fn, params, x = conv_energy
    ours = jit(gradients(energy_fn)).lower(params, x).compile().as_text()
    default = jax.jit(gradients(energy_fn)).lower(params, x).compile().as_text()
    assert ynnpack_convolutions(default) >= 1
    assert ynnpack_convolutions(ours) == 0
    assert ours.count(" convolution(") >= 4     # forward, and the input gradient's


@cpu_only
def test_programs_without_convolutions_are_unchanged():
    """Dots and reductions keep YNNPACK: an MLP's gradients and a normalised sum compile to
    the same program with and without the options."""
    module = energies.MLPEnergy(hidden_sizes=(32, 32))
    x = jax.random.normal(jax.random.key(0), (64, 8))
    params = module.init(jax.random.key(1), x[0])
    programs = [(gradients(lambda p, xi: module.apply(p, xi)), (params, x)),
                (lambda y: jnp.sin(y) / jnp.sum(jnp.sin(y)), (jnp.ones((256, 256)),))]
    for fn, args in programs:
        ours = jit(fn).lower(*args).compile().as_text()
        default = jax.jit(fn).lower(*args).compile().as_text()
        assert "__ynn_fusion" in default
        assert ours == default


def test_jit_composes_with_the_callers_transformations(conv_energy):
    """Inside a jax.jit of the caller's, under vmap and under grad, an ebmdual-jitted
    function runs (JAX refuses compiler options on an inner jit) and gives the top-level
    call's numbers; the decorator forms take jax.jit's arguments."""
    energy_fn, params, x = conv_energy
    ours = jit(gradients(energy_fn))
    expected = np.asarray(ours(params, x))
    np.testing.assert_allclose(jax.jit(ours)(params, x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(ours, (None, 0))(params, x[:, None])[:, 0], expected,
                               rtol=1e-5, atol=1e-6)

    @jit
    def total_energy(params, x):
        return jnp.sum(jax.vmap(energy_fn, (None, 0))(params, x))

    np.testing.assert_allclose(jax.grad(total_energy, 1)(params, x), expected, rtol=1e-5,
                               atol=1e-6)

    @jit(static_argnames="power")
    def moment(x, power):
        return jnp.mean(x ** power)

    assert float(moment(x, power=2)) == pytest.approx(float(jnp.mean(x ** 2)), rel=1e-6)
    assert float(jax.jit(lambda x: moment(x, power=2))(x)) == pytest.approx(
        float(jnp.mean(x ** 2)), rel=1e-6)


def test_options_are_the_documented_ones():
    """The one option and its value, spelled as XLA's DebugOptions enum expects (a wrong
    name fails every compile, so the tests above would fail too)."""
    assert COMPILER_OPTIONS == {"xla_cpu_experimental_ynn_fusion_type":
                                "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
