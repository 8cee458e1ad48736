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
