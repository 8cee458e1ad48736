"""Compiled temporary memory of an LSTM's backward pass vs sequence length, with and without remat.

Prints ``jax.jit(grad).lower(...).compile().memory_analysis().temp_size_in_bytes`` (XLA's buffer
assignment: deterministic, no run needed) for several sequence lengths, for two losses:

* ``h_n``: a loss on the final state only (many-to-one);
* ``output``: a sum over every step's output (sequence-to-sequence).

Without remat the backward pass keeps every step's activations, ``O(L)``. With ``remat=True``
(chunks of ``sqrt(L)`` steps, the input projection computed inside each chunk; see
``jaxrnn.functional._layers.time_scan``) it keeps the carry at chunk boundaries plus one chunk, so
temporary memory grows like ``sqrt(L)``. (Input, parameters and returned outputs are arguments
and results, not temporaries.) ``tests/test_transforms.py`` asserts the sublinear growth.

Usage: ``python benchmarks/memory.py [--hidden 32] [--lengths 256 1024 4096 16384]``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from jaxrnn import functional as F
from jaxrnn._params import layer_param_shapes


def temp_bytes(length: int, remat, loss_on: str, *, mode="LSTM", input_size=8, hidden=32, batch=1):
    """Temporary bytes of the compiled ``grad`` of the loss w.r.t. the parameters."""
    shapes = layer_param_shapes(mode, input_size, hidden)
    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
    x = jax.ShapeDtypeStruct((length, batch, input_size), jnp.float32)

    def loss(params, x):
        out, state = F.rnn(params, x, mode=mode, remat=remat)
        h_n = state[0] if mode == "LSTM" else state
        return jnp.sum(h_n) if loss_on == "h_n" else jnp.sum(out)

    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="LSTM", choices=["RNN_TANH", "LSTM", "GRU"])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    args = parser.parse_args(argv)
    print(
        f"{args.mode}, input {args.input_size}, hidden {args.hidden}, batch {args.batch}; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    print("compiled temporary memory of grad (KiB); growth = vs the shortest length")
    header = f"{'loss on':>8} {'L':>7} {'no remat':>10} {'growth':>7} {'remat':>10} {'growth':>7}"
    print(header)
    print("-" * len(header))
    for loss_on in ("h_n", "output"):
        base = None
        for length in args.lengths:
            kw = dict(
                mode=args.mode, input_size=args.input_size, hidden=args.hidden, batch=args.batch
            )
            plain = temp_bytes(length, False, loss_on, **kw)
            chunked = temp_bytes(length, True, loss_on, **kw)
            base = base or (plain, chunked)
            print(
                f"{loss_on:>8} {length:>7} {plain / 1024:>10.1f} {plain / base[0]:>6.1f}x "
                f"{chunked / 1024:>10.1f} {chunked / base[1]:>6.1f}x"
            )
    print(f"(length grows {args.lengths[-1] / args.lengths[0]:.0f}x over the table)")


if __name__ == "__main__":
    main()
