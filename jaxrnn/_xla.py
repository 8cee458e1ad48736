"""XLA compiler options for jaxrnn's loops on CPU: :func:`cpu_compiler_options`."""

from __future__ import annotations

import jax

# XLA:CPU asks LLVM for 256-bit vectors by default, also on CPUs with AVX-512. The gate
# nonlinearities of a recurrent step (sigmoid, tanh) are vectorised polynomial and division code,
# and 512-bit vectors cut their cost there (a (512, 64) tanh per scan step, 2-core AMD EPYC Zen 5:
# 13.1 -> 9.4 us, ``benchmarks/compiler_options.py``); the matmuls run in their own kernels.
_WIDE_VECTORS = {"xla_cpu_prefer_vector_width": 512}


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (Linux); empty where it cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_compiler_options(backend: str | None = None, *, cpuinfo: str = "/proc/cpuinfo") -> dict:
    """XLA compiler options that make jaxrnn's layers faster on this CPU, for ``jax.jit``.

    On a CPU with AVX-512 (``avx512f`` in ``/proc/cpuinfo``) this is
    ``{"xla_cpu_prefer_vector_width": 512}``: XLA:CPU vectorises element-wise code for 256-bit
    registers by default, and the gates' sigmoid and tanh, a large part of every time step, cost
    less with 512-bit ones (``benchmarks/compiler_options.py`` times it). Everywhere else (no
    AVX-512, a backend other than the CPU, a system without ``/proc/cpuinfo``) it is ``{}``, so it
    is always safe to pass. The options change code generation only: results agree with torch as
    without them (tested).

    Use it where the step is compiled::

        step = jax.jit(train_step, compiler_options=jaxrnn.cpu_compiler_options())

    or ahead of time with ``jax.jit(f).lower(*args).compile(compiler_options=...)``, which
    ``nnx.jit(f).lower(*args).compile(compiler_options=...)`` also takes (the ``nnx.jit``
    decorator itself takes no compiler options). For a whole process, set the same option in
    the environment before JAX starts: ``XLA_FLAGS=--xla_cpu_prefer_vector_width=512``.
    On older Intel server CPUs (Skylake-SP, Cascade Lake) 512-bit code may lower the clock; time
    it there (``python benchmarks/run.py --compiler-options none`` compares).

    Args:
      backend: the platform the function will be compiled for (``"cpu"``, ``"gpu"``, ...; any
        case); default ``jax.default_backend()``.
      cpuinfo: where to read the CPU's features (for tests).

    Returns:
      A new ``dict`` of option names to values, for ``jax.jit(..., compiler_options=)``.
    """
    platform = backend if backend is not None else jax.default_backend()
    if platform.lower() != "cpu" or "avx512f" not in _cpu_flags(cpuinfo):
        return {}
    return dict(_WIDE_VECTORS)
