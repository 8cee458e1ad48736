"""jaxrnn against itself with one of its tuning constants changed: the A/B behind a choice of the
fused path, re-runnable.

Each experiment names module constants of ``jaxrnn.functional`` (e.g.
``_fused_forward._INFERENCE_PROJECTION_COLUMNS``) and the values to compare with the defaults.
For each workload the script builds jaxrnn once per variant (``jax.clear_caches()`` first: the
driver's and the fused layer's inner ``jax.jit`` functions cache their traces by shape, so without
it every variant would reuse the first one's program), checks that the variants' outputs, losses and gradients agree, and times
the inference forward and the training step (value and gradient of ``sum(output * w)``)
interleaved (each timed call after an untimed one of the same variant, as ``run.py``), float32, compiled with ``jaxrnn.cpu_compiler_options()``. It prints the medians, each
variant's ratio to the default (median of the per-round ratios, > 1: the default is faster) and the
compiled temporary memory of the forward or training step timed (XLA's, per variant) and the page
faults per call after the timed rounds.

Usage: ``python benchmarks/variants.py [EXPERIMENT ...] [--reps N] [--out FILE]``; experiments:
``activation-block``, ``bias-gradient``, ``inference-windows``, ``joint-inference``, ``products-first``,
``step-major-gradients``, ``stacked-input``, ``unit-groups`` (all by default).
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _contenders as C  # noqa: E402
from run import WARM_CALLS, interleaved_rounds, machine, ratio  # noqa: E402

import jaxrnn  # noqa: E402

# name -> (what it checks, {variant: {module.constant: value}}, workloads, modes)
EXPERIMENTS = {
    "activation-block": (
        "a one-direction feature-major LSTM's training step computes i, f, g, o as one block "
        "(_fused_forward._activation_block) against gate by gate",
        {"gate-wise": {"_fused_forward._ACTIVATION_BLOCK": False}},
        [
            C.Workload("LSTM", 128, 32, 128, 256),
            C.Workload("LSTM", 128, 16, 128, 256),
            C.Workload("LSTM", 128, 64, 256, 512, 2),
        ],
        ("train",),
    ),
    "bias-gradient": (
        "the backward's bias gradients as a product with ones against a sum over steps and batch "
        "(_fused_backward._BIAS_GRADIENT_AS_PRODUCT)",
        {"sum": {"_fused_backward._BIAS_GRADIENT_AS_PRODUCT": False}},
        [
            C.Workload("LSTM", 128, 64, 256, 512, 2),
            C.Workload("LSTM", 128, 32, 128, 256),
            C.Workload("LSTM", 512, 4, 64, 128),
            C.Workload("RNN_TANH", 128, 32, 128, 256),
            C.Workload("GRU", 128, 32, 128, 256, 2, True),
        ],
        ("train",),
    ),
    "inference-windows": (
        "the inference forward's projection windows (_fused_forward._projection_chunk: up to "
        "4096 columns, 512 to 4096 within 4 MiB) against the training step's 1024 columns",
        {
            "1024 columns": {
                "_fused_forward._INFERENCE_PROJECTION_COLUMNS": 1024,
                "_fused_forward._INFERENCE_PROJECTION_MIN_COLUMNS": 1024,
            }
        },
        [
            C.Workload("RNN_TANH", 512, 4, 64, 128),
            C.Workload("GRU", 512, 4, 64, 128),
            C.Workload("LSTM", 512, 4, 64, 128),
            C.Workload("GRU", 128, 32, 128, 256, 2, True),
            C.Workload("LSTM", 128, 32, 128, 256, 2, True),
            C.Workload("GRU", 128, 64, 256, 512, 2),
            C.Workload("LSTM", 128, 64, 256, 512, 2),
        ],
        ("fwd",),
    ),
    "joint-inference": (
        "a one-direction feature-major LSTM's inference forward: the joint [W_ih, W_hh] step up "
        "to 40M multiply-adds per step, hoisted input projections above "
        "(_fused_forward._joint_step), against the joint step at all sizes",
        {"joint": {"_fused_forward._JOINT_INFERENCE_MAX_MACS": 10**12}},
        [
            C.Workload("LSTM", 128, 32, 128, 256),
            C.Workload("LSTM", 128, 16, 128, 256),
            C.Workload("LSTM", 128, 64, 256, 512, 2),
        ],
        ("fwd",),
    ),
    "products-first": (
        "each backward step starts with the recurrent products of the step before "
        "(_fused_backward._PRODUCTS_FIRST; with unit groups one product per group of its "
        "columns of W_hh with all groups' gate gradients), against ending with them",
        {"products last": {"_fused_backward._PRODUCTS_FIRST": False}},
        [
            C.Workload("LSTM", 128, 32, 128, 256, 2, True),
            C.Workload("GRU", 128, 32, 128, 256, 2, True),
            C.Workload("LSTM", 128, 32, 128, 256),
            C.Workload("GRU", 128, 32, 128, 256),
            C.Workload("LSTM", 128, 16, 128, 256),
            C.Workload("LSTM", 512, 4, 64, 128),
            C.Workload("RNN_TANH", 128, 32, 128, 256),
            C.Workload("LSTM", 128, 64, 256, 512, 2),
            C.Workload("GRU", 128, 64, 256, 512, 2),
        ],
        ("train",),
    ),
    "unit-groups": (
        "a direction's hidden units in two groups (two products per step, one per thread) from "
        "3M to 40M multiply-adds per step (_fused._UNIT_GROUPS), against from 1M and against up "
        "to 160M: the range was timed on a Zen 5 host; a slower core might gain outside it",
        {
            "from 1M": {"_fused._UNIT_GROUPS": {"max": 2, "macs": (1_000_000, 40_000_000)}},
            "to 160M": {"_fused._UNIT_GROUPS": {"max": 2, "macs": (3_000_000, 160_000_000)}},
        },
        [
            C.Workload("RNN_TANH", 128, 32, 128, 256),
            C.Workload("LSTM", 128, 16, 64, 128),
            C.Workload("GRU", 128, 64, 256, 512, 2),
            C.Workload("LSTM", 128, 64, 256, 512, 2),
        ],
        ("fwd", "train"),
    ),
    "step-major-gradients": (
        "a feature-major backward fills its gate-gradient buffers step-major from 2048 gate rows "
        "for LSTM, 768 for GRU (_fused._STEP_MAJOR_GRADIENTS_FROM), against 2048 for both, and "
        "against 1024 for LSTM",
        {
            "GRU from 2048": {"_fused._STEP_MAJOR_GRADIENTS_FROM": {"LSTM": 2048, "GRU": 2048}},
            "LSTM from 1024": {"_fused._STEP_MAJOR_GRADIENTS_FROM": {"LSTM": 1024, "GRU": 768}},
        },
        [
            C.Workload("GRU", 128, 64, 256, 512, 2),
            C.Workload("GRU", 128, 32, 128, 256),
            C.Workload("GRU", 128, 32, 128, 256, 2, True),
            C.Workload("GRU", 128, 64, 128, 256, 2),
            C.Workload("LSTM", 128, 32, 128, 256),
            C.Workload("LSTM", 128, 32, 128, 256, 2, True),
        ],
        ("train",),
    ),
    "stacked-input": (
        "a feature-major layer above another reads its input feature-major, where the layer "
        "below kept its output so (_fused.input_feature_major), against window by window from "
        "the batch-major output",
        {"batch-major": {"_fused._STACKED_INPUT_FEATURE_MAJOR": False}},
        [
            C.Workload("GRU", 128, 64, 256, 512, 2),
            C.Workload("GRU", 128, 64, 128, 256, 2),
            C.Workload("LSTM", 128, 64, 256, 512, 2, True),
        ],
        ("fwd", "train"),
    ),
}


def _set(settings: dict) -> dict:
    """Apply ``{"module.constant": value}`` to ``jaxrnn.functional``; returns the old values."""
    old = {}
    for key, value in settings.items():
        module, name = key.rsplit(".", 1)
        mod = importlib.import_module(f"jaxrnn.functional.{module}")
        old[key] = getattr(mod, name)
        setattr(mod, name, value)
    return old


def _build(tmod, x, w_out, settings, options):
    jax.clear_caches()  # retrace: the inner jits would otherwise reuse another variant's program
    old = _set(settings)
    try:
        return C.jax_contender("jaxrnn", jaxrnn.from_torch(tmod), x, w_out, options)
    finally:
        _set(old)


def _faults_per_call(fn, calls: int = 3) -> float:
    """Minor page faults of this process per call of ``fn``, after the timed rounds: pages of
    temporaries that glibc served fresh (see the README's "Memory is time")."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def run_experiment(name: str, reps: int, options: dict) -> list[str]:
    what, variants, workloads, modes = EXPERIMENTS[name]
    lines = [f"## {name}", "", what, ""]
    names = ["default", *variants]
    header = "| workload | mode | " + " | ".join(f"{v} ms" for v in names)
    header += " | " + " | ".join(f"{v}/default" for v in names[1:])
    header += " | temp MiB | page faults per call |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    print("\n".join(lines), flush=True)
    for w in workloads:
        rng = np.random.default_rng(0)
        tmod = C.torch_module(w)
        x = rng.standard_normal((w.steps, w.batch, w.input_size)).astype(np.float32)
        dirs = 2 if w.bidirectional else 1
        w_out = rng.standard_normal((w.steps, w.batch, dirs * w.hidden)).astype(np.float32)
        settings = {"default": {}, **variants}
        built = {v: _build(tmod, x, w_out, s, options) for v, s in settings.items()}
        ref_out, (ref_loss, ref_grads) = built["default"].fwd_out(), built["default"].train_out()
        for v, c in built.items():  # the variants compute the same
            np.testing.assert_allclose(c.fwd_out(), ref_out, rtol=1e-4, atol=1e-4, err_msg=v)
            loss, grads = c.train_out()
            np.testing.assert_allclose(loss, ref_loss, rtol=1e-4, err_msg=v)
            for k, g in grads.items():
                np.testing.assert_allclose(g, ref_grads[k], rtol=1e-3, atol=1e-3, err_msg=v)
        for mode in modes:
            rounds = interleaved_rounds({v: getattr(c, mode) for v, c in built.items()}, reps)
            ms = [np.median(rounds[v]) * 1e3 for v in names]
            row = f"| {w.name} | {mode} | " + " | ".join(f"{t:.2f}" for t in ms)
            row += " | " + " | ".join(f"{ratio(rounds, v, 'default'):.3f}x" for v in names[1:])
            temps = [getattr(built[v], f"{mode}_temp_mib") for v in names]
            row += " | " + " / ".join(f"{t:.1f}" for t in temps)
            faults = [_faults_per_call(getattr(built[v], mode)) for v in names]
            row += " | " + " / ".join(f"{f:.0f}" for f in faults) + " |"
            print(row, flush=True)
            lines.append(row)
    print(flush=True)
    return lines + [""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiments", nargs="*", help=f"of {', '.join(EXPERIMENTS)} (default all)")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    options = jaxrnn.cpu_compiler_options()
    lines = [
        "# jaxrnn tuning constants, A/B",
        "",
        f"- machine: {machine()}; jax {jax.__version__}; compiler options {options}",
        f"- {args.reps} interleaved rounds, each timed call after {WARM_CALLS} untimed call(s) of "
        "the same variant; ratios > 1: the default is faster",
        "",
    ]
    print("\n".join(lines), flush=True)
    unknown = set(args.experiments) - set(EXPERIMENTS)
    if unknown:
        parser.error(f"unknown experiments {sorted(unknown)}; choose from {list(EXPERIMENTS)}")
    for name in args.experiments or EXPERIMENTS:
        lines += run_experiment(name, args.reps, options)
    if args.out:
        Path(args.out).write_text("\n".join(lines))
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
