"""The fused layer's two loop layouts, timed against each other on the same work.

``jaxrnn.functional._fused.layer`` runs the time loops of LSTM and GRU feature-major (``(H, N)``
states, one ``W @ h`` per step for all gates) from the batch sizes in ``_fused._FEATURE_MAJOR_FROM``
with ``_fused._FEATURE_MAJOR_MIN_HIDDEN`` hidden units or more, and batch-major (``(N, H)`` states,
``h @ W.T``) otherwise; the one-gate RNN always batch-major. This script checks that choice on this
machine: for each workload it runs both layouts on the same weights and input, checks that their
outputs and gradients agree, and prints the median time of the forward pass and of a training step
(value and gradient of ``sum(output * w)`` with respect to the weights and the input), interleaved,
float32, plus which layout the default picks.

Usage: ``python benchmarks/layouts.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import interleaved  # noqa: E402

import jaxrnn  # noqa: E402
from jaxrnn._params import GATES  # noqa: E402
from jaxrnn.functional import _fused  # noqa: E402

# (mode, T, B, I, H): single-layer, one-direction versions of benchmarks/run.py's workloads, and
# H=128 at the batches where LSTM and GRU would otherwise switch to feature-major
WORKLOADS = [
    ("LSTM", 128, 4, 128, 256),
    ("LSTM", 128, 8, 128, 256),
    ("LSTM", 128, 16, 128, 256),
    ("LSTM", 128, 32, 128, 256),
    ("LSTM", 128, 64, 256, 512),
    ("LSTM", 512, 4, 64, 128),
    ("LSTM", 128, 8, 64, 128),
    ("LSTM", 128, 16, 64, 128),
    ("LSTM", 128, 32, 64, 128),
    ("LSTM", 128, 64, 64, 128),
    ("GRU", 128, 32, 64, 128),
    ("GRU", 128, 64, 64, 128),
    ("GRU", 128, 16, 128, 256),
    ("GRU", 128, 32, 128, 256),
    ("GRU", 128, 64, 256, 512),
    ("RNN_TANH", 128, 32, 128, 256),
    ("RNN_TANH", 128, 64, 256, 512),
]


def build(mode, steps, batch, inp, hid, feature_major):
    rng = np.random.default_rng(0)
    gates = GATES[mode]
    scale = hid**-0.5

    def arr(*shape, s=scale):
        return jnp.asarray(rng.uniform(-s, s, shape).astype(np.float32))

    weights = (
        {
            "weight_ih": arr(gates * hid, inp),
            "weight_hh": arr(gates * hid, hid),
            "bias_ih": arr(gates * hid),
            "bias_hh": arr(gates * hid),
        },
    )
    x = arr(steps, batch, inp, s=1.0)
    w_out = arr(steps, batch, hid, s=1.0)
    h0 = jnp.zeros((1, batch, hid), jnp.float32)
    state0 = (h0, h0) if mode == "LSTM" else h0

    def forward(weights, x):
        _, outs = _fused.layer(
            mode, weights, x, state0, reverse=[False], feature_major=feature_major
        )
        return outs[0]

    def loss(weights, x):
        return jnp.sum(forward(weights, x) * w_out)

    options = jaxrnn.cpu_compiler_options()  # as benchmarks/run.py
    fwd = jax.jit(forward, compiler_options=options)
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), compiler_options=options)
    return (weights, x), fwd, step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    print(
        f"feature-major from batch: _fused._FEATURE_MAJOR_FROM = {_fused._FEATURE_MAJOR_FROM}, "
        f"from hidden size {_fused._FEATURE_MAJOR_MIN_HIDDEN}"
    )
    print(
        "| workload (T,B,I,H) | mode | feature-major ms | batch-major ms | fm speed-up | default |"
    )
    print("|---|---|---|---|---|---|")
    for mode, steps, batch, inp, hid in WORKLOADS:
        runs = {fm: build(mode, steps, batch, inp, hid, fm) for fm in (True, False)}
        (args_fm, fwd_fm, step_fm), (args_bm, fwd_bm, step_bm) = runs[True], runs[False]
        got, ref = step_fm(*args_fm), step_bm(*args_bm)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
        fm_default = _fused.feature_major_default(mode, batch, hid)
        default = "feature-major" if fm_default else "batch-major"
        name = f"{mode} {steps},{batch},{inp},{hid}"
        for label, f_fm, f_bm in (("fwd", fwd_fm, fwd_bm), ("fwd+bwd", step_fm, step_bm)):
            times = interleaved(
                {
                    "fm": lambda f=f_fm, a=args_fm: jax.block_until_ready(f(*a)),
                    "bm": lambda f=f_bm, a=args_bm: jax.block_until_ready(f(*a)),
                },
                args.reps,
            )
            print(
                f"| {name} | {label} | {times['fm'] * 1e3:.1f} | {times['bm'] * 1e3:.1f} | "
                f"{times['bm'] / times['fm']:.2f}x | {default} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
