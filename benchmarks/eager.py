"""Eager calls: a layer or cell called as torch code calls it, without ``jax.jit`` around it.

A torch user's first JAX code often keeps torch's shape: a Python loop that calls a cell once per
step, or a layer once per chunk of a stream, with no ``jit`` around the loop. Each such call costs
what its Python work and dispatch cost, whatever the arithmetic. jaxrnn runs a call's checks in
Python and then one compiled program (``jaxrnn.functional``'s ``jax.jit`` of the whole layer or
cell step, compiled once per configuration and shapes), so an eager call is one dispatch.

For each workload this script builds torch's module and jaxrnn's NNX module from the same weights,
checks that the outputs agree, and times, interleaved (rotating order, median of ``--reps``
rounds of ``--calls`` back-to-back calls each): torch's call under ``torch.no_grad()`` at one
thread (``benchmarks/run.py`` picks torch's thread count, this script does not), jaxrnn's
module called eagerly, and the same module under ``nnx.jit`` and under ``jax.jit`` of its split
state (the least a compiled call costs).
Times are microseconds per call, float32; ``torch/eager`` above 1 means jaxrnn's eager call is
faster than torch's. The output is printed and written to
``benchmarks/results/<date>-<machine>-eager.md`` (``--out`` to choose).

Usage: ``python benchmarks/eager.py [--reps N] [--calls N] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import interleaved_rounds, machine, ratio, record  # noqa: E402

import jaxrnn  # noqa: E402

# (name, torch constructor, input shape, state given): cells one step per call, layers one
# short chunk per call (as a stream is fed), the state carried from the previous call
WORKLOADS = [
    ("LSTMCell 32->32, B=1", lambda: torch.nn.LSTMCell(32, 32), (1, 32)),
    ("GRUCell 32->32, B=1", lambda: torch.nn.GRUCell(32, 32), (1, 32)),
    ("LSTMCell 128->256, B=32", lambda: torch.nn.LSTMCell(128, 256), (32, 128)),
    ("LSTM 32->32, 1 layer, T=1, B=1", lambda: torch.nn.LSTM(32, 32), (1, 1, 32)),
    ("GRU 64->64, 2 layers, T=16, B=1", lambda: torch.nn.GRU(64, 64, 2), (16, 1, 64)),
    (
        "LSTM 64->64, 2 layers bi, T=16, B=4",
        lambda: torch.nn.LSTM(64, 64, 2, bidirectional=True),
        (16, 4, 64),
    ),
]


def contenders(make, shape, calls: int) -> dict:
    """The four ways to call one workload, each a function running ``calls`` calls that feed
    each call's state to the next; checked equal to torch first."""
    torch.manual_seed(0)
    tmod = make()
    model = jaxrnn.from_torch(tmod)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    tx, jx = torch.from_numpy(x), jnp.asarray(x)
    cell = isinstance(tmod, torch.nn.RNNCellBase)

    def state(out):  # what the next call takes as hx
        return out if cell else out[1]

    with torch.no_grad():
        theirs = tmod(tx)
    ours = model(jx)
    want = jax.tree.map(lambda t: t.numpy(), theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-5)
    t_hx, j_hx = state(theirs), state(ours)

    def torch_calls():
        hx = t_hx
        with torch.no_grad():
            for _ in range(calls):
                hx = state(tmod(tx, hx))
        return hx

    def eager_calls():
        hx = j_hx
        for _ in range(calls):
            hx = state(model(jx, hx))
        return jax.block_until_ready(hx)

    step = nnx.jit(lambda m, x, hx: state(m(x, hx)))

    def nnx_jit_calls():
        hx = j_hx
        for _ in range(calls):
            hx = step(model, jx, hx)
        return jax.block_until_ready(hx)

    graphdef, params = nnx.split(model)
    split_step = jax.jit(lambda p, x, hx: state(nnx.merge(graphdef, p)(x, hx)))

    def jax_jit_calls():
        hx = j_hx
        for _ in range(calls):
            hx = split_step(params, jx, hx)
        return jax.block_until_ready(hx)

    return {
        "torch": torch_calls,
        "eager": eager_calls,
        "nnx.jit": nnx_jit_calls,
        "jax.jit": jax_jit_calls,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=50, help="calls per timed round")
    parser.add_argument("--out", default=None, help="results file (default: results/<date>-...)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    today = datetime.date.today().isoformat()
    header = [
        f"# jaxrnn eager calls, {today}",
        "",
        f"- machine: {machine()}",
        f"- versions: jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__}, "
        f"jaxrnn {jaxrnn.__version__}",
        f"- command: python benchmarks/eager.py {' '.join(sys.argv[1:] if argv is None else argv)}",
        f"- {args.reps} interleaved rounds of {args.calls} back-to-back calls each, each call "
        "fed the state of the one before; us per call (median over rounds), torch/eager the "
        "median of the per-round ratios (> 1: jaxrnn's eager call is faster); torch at 1 thread "
        "under no_grad; outputs checked equal to torch first",
        "",
        "| workload | torch us | jaxrnn eager us | nnx.jit us | jax.jit us | torch/eager |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows = []
    for name, make, shape in WORKLOADS:
        fns = contenders(make, shape, args.calls)
        t0 = time.perf_counter()
        rounds = interleaved_rounds(fns, args.reps, warm=0)
        us = {k: float(np.median(v)) / args.calls * 1e6 for k, v in rounds.items()}
        row = (
            f"| {name} | {us['torch']:.0f} | {us['eager']:.0f} | {us['nnx.jit']:.0f} | "
            f"{us['jax.jit']:.0f} | {ratio(rounds, 'torch', 'eager'):.2f}x |"
        )
        rows.append(row)
        print(row, f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    record("\n".join(header + rows) + "\n", args.out, "-eager")


if __name__ == "__main__":
    main()
