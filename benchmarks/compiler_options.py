"""What ``jaxrnn.cpu_compiler_options()`` buys on this machine: one table, float32.

For each workload of ``benchmarks/run.py`` (``--quick``: its quick subset) it builds jaxrnn and
Flax's ``nnx.RNN`` from the same torch weights, each compiled twice, with XLA's default options
and with ``jaxrnn.cpu_compiler_options()``, checks that the two compilations give the same output,
and times the four interleaved in one process (inference forward, and a training step: value and
gradient of ``sum(output * w)`` with respect to the parameters); the speed-ups are medians of the
per-round ratios. Above the table, the time per step of a ``(512, 64)`` tanh in a ``lax.scan``,
the element-wise work the option changes. Where the options are empty (no AVX-512, not a CPU
backend) the two compilations are the same program and the ratios only show the machine's noise.

Usage: ``python benchmarks/compiler_options.py [--quick] [--reps N] [--only SUBSTRING]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _contenders import flax_model, jax_contender, torch_module  # noqa: E402
from run import WORKLOADS, interleaved_rounds, ratio  # noqa: E402

import jaxrnn  # noqa: E402


def tanh_step_us(options: dict, reps: int) -> float:
    """Microseconds per step of ``h = tanh(x_t + h / 2)`` over ``(512, 64)`` blocks."""
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((128, 512, 64)), jnp.float32)

    def f(xs):
        return lax.scan(lambda h, x: (jnp.tanh(x + 0.5 * h), None), jnp.zeros((512, 64)), xs)[0]

    g = jax.jit(f, compiler_options=options)
    times = interleaved_rounds({"f": lambda: jax.block_until_ready(g(xs))}, reps)["f"]
    return float(np.median(times)) / xs.shape[0] * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="run.py's quick subset")
    parser.add_argument("--reps", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--only", default=None, help="workloads whose name contains this")
    args = parser.parse_args(argv)
    options = jaxrnn.cpu_compiler_options()
    workloads = [w for w, quick in WORKLOADS if quick or not args.quick]
    if args.only:
        workloads = [w for w in workloads if args.only in w.name]
    print(f"jaxrnn.cpu_compiler_options() here: {options}")
    print(
        f"tanh of a (512, 64) block per scan step: {tanh_step_us({}, args.reps):.1f} us with "
        f"XLA's defaults, {tanh_step_us(options, args.reps):.1f} us with the options\n"
    )
    print(
        "| workload (T,B,I,H,layers) | mode | jaxrnn ms (default / options) | jaxrnn speed-up "
        "| flax ms (default / options) | flax speed-up |"
    )
    print("|---|---|---|---|---|---|")
    for w in workloads:
        rng = np.random.default_rng(0)
        tmod = torch_module(w)
        x = rng.standard_normal((w.steps, w.batch, w.input_size)).astype(np.float32)
        dirs = 2 if w.bidirectional else 1
        w_out = rng.standard_normal((w.steps, w.batch, dirs * w.hidden)).astype(np.float32)
        runs = {}
        for name, make in (
            ("jaxrnn", jaxrnn.from_torch),
            ("flax", lambda t, w=w: flax_model(w, t)),
        ):
            runs[name] = jax_contender(name, make(tmod), x, w_out)
            runs[name + "+opts"] = jax_contender(name, make(tmod), x, w_out, options)
            np.testing.assert_allclose(
                runs[name + "+opts"].fwd_out(), runs[name].fwd_out(), rtol=1e-5, atol=1e-5
            )
        for mode in ("fwd", "train"):
            rounds = interleaved_rounds({k: getattr(c, mode) for k, c in runs.items()}, args.reps)
            ms = {k: float(np.median(v)) * 1e3 for k, v in rounds.items()}
            print(
                f"| {w.name} | {'fwd' if mode == 'fwd' else 'fwd+bwd'} "
                f"| {ms['jaxrnn']:.1f} / {ms['jaxrnn+opts']:.1f} "
                f"| {ratio(rounds, 'jaxrnn', 'jaxrnn+opts'):.2f}x "
                f"| {ms['flax']:.1f} / {ms['flax+opts']:.1f} "
                f"| {ratio(rounds, 'flax', 'flax+opts'):.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
