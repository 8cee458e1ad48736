"""Suite-wide settings.

* The suite runs as two pytest-xdist workers on two cores: torch's own thread pool would then
  oversubscribe the cores (and slow interleaved JAX work down by orders of magnitude), so each
  worker runs torch on one thread.
* Most of the suite's time is XLA compiling hundreds of small programs. LLVM's backend
  optimisation level changes how fast the generated code runs, not what it computes (no
  fast-math either way), so the tests compile at level 0, which halves compile time. Set
  ``JAXRNN_TEST_FULL_OPT=1`` to test with XLA's default level instead. The benchmarks never
  use this flag.
"""

import os
import sys

if not os.environ.get("JAXRNN_TEST_FULL_OPT"):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(__file__))  # tests/_torch_oracle.py


import pytest  # noqa: E402


@pytest.fixture
def retraced(monkeypatch):
    """``monkeypatch.setattr`` for constants read while a layer is traced: the compiled layers
    (``jaxrnn.functional``'s ``jax.jit`` of a whole call, the fused layer's) cache their traces by
    shape, so a patched value would go unseen where an earlier test traced the same shapes. Their
    caches are cleared after each patch and at teardown (no later test reuses a patched trace)."""

    # jaxrnn's own jax.jit functions, those that read tuning constants while traced, taken
    # before any patch (a test may patch one of them too); jax.clear_caches() would also drop every
    # other program the worker compiled, which later tests would compile again
    from jaxrnn.functional import _fused, _layers

    compiled = (
        _layers._layers_jit,
        _layers._cell_step_jit,
        _layers._scan_direction_jit,
        _fused._layer_jit,
    )

    def clear():
        for jitted in compiled:
            jitted.clear_cache()

    def setattr(target, name, value):
        monkeypatch.setattr(target, name, value)
        clear()

    yield setattr
    clear()
