"""Suite-wide settings. The suite runs as two pytest-xdist workers on two cores: torch's own
thread pool would then oversubscribe the cores (and slow interleaved JAX work down by orders of
magnitude), so each worker runs torch on one thread."""

import os
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(__file__))  # tests/_torch_oracle.py
