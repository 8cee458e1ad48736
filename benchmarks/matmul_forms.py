"""The large input-gradient matmul of the fused backward, timed in the forms XLA can be given.

Feature-major, the fused layer's backward holds the gate gradients of all steps as ``dg (G*H, L,
N)`` and needs ``dx (L, N, H_in) = dg^T @ W_ih``. Written as one einsum, XLA:CPU runs that GEMM
with a transposed operand; ``jaxrnn.functional._fused_backward`` instead multiplies ``W_ih^T @ dg`` with
``W_ih^T`` materialised (``_fused_backward._dx_weight``) and transposes the ``(H_in, L, N)`` result. This
script times those forms on the same operands (they are checked equal first), float32,
interleaved, median of ``--reps``, and prints GFLOP/s.

Usage: ``python benchmarks/matmul_forms.py [--reps N]``.
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

from jaxrnn.functional import _fused_backward  # noqa: E402

# (name, G*H, L, N, H_in): layer 2 of the large GRU and LSTM workloads of benchmarks/run.py
SHAPES = [("GRU", 3 * 512, 128, 64, 512), ("LSTM", 4 * 512, 128, 64, 512)]

FORMS = {
    "dg^T @ W_ih as one einsum": lambda dg, w: jnp.einsum("gln,gi->lni", dg, w),
    "W_ih^T @ dg, transpose folded by XLA": lambda dg, w: jnp.einsum(
        "gi,gln->iln", w, dg
    ).transpose(1, 2, 0),
    "W_ih^T @ dg, W_ih^T materialised (jaxrnn)": lambda dg, w: jnp.einsum(
        "ig,gln->iln", _fused_backward._dx_weight(w), dg
    ).transpose(1, 2, 0),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=11)
    args = parser.parse_args(argv)
    print("| shape (G*H, L, N, H_in) | form | ms | GFLOP/s |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, gates, steps, batch, inp in SHAPES:
        dg = jnp.asarray(rng.standard_normal((gates, steps, batch)).astype(np.float32))
        w = jnp.asarray(rng.standard_normal((gates, inp)).astype(np.float32))
        fns = {k: jax.jit(f) for k, f in FORMS.items()}
        ref = np.asarray(fns[next(iter(fns))](dg, w))
        for f in fns.values():
            np.testing.assert_allclose(np.asarray(f(dg, w)), ref, rtol=1e-4, atol=1e-3)
        calls = {k: (lambda f=f, a=(dg, w): jax.block_until_ready(f(*a))) for k, f in fns.items()}
        times = interleaved(calls, args.reps)
        flops = 2.0 * gates * steps * batch * inp
        for k, sec in times.items():
            print(
                f"| {name} {gates},{steps},{batch},{inp} | {k} | {sec * 1e3:.1f} "
                f"| {flops / sec / 1e9:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
