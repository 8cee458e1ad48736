"""One whole layer (all its directions) with a hand-written backward: the fast path of the driver.

Autodiff of a ``lax.scan`` accumulates the weight gradients step by step inside the backward loop
(``L`` thin ``(G*H, N) @ (N, H)`` matmuls) and runs each direction of a bidirectional layer as its
own loop. Here, as cuDNN does, the forward loop saves the gate activations; the backward loop runs
the recurrence for the gate gradients only and ``dW_ih``, ``dW_hh``, the biases and ``dx`` are then
large matmuls over all steps at once. Both directions of a layer advance in the same loop (two
independent chains that XLA may run side by side) and each step's recurrent product is one matmul
for all gates. For GRU, the RNN and the batch-major LSTM (small batches or fewer than 256 hidden
units, below) the input projections are computed ahead of the steps, in windows of steps
(``_fused_forward._projection_chunk``: an outer loop computes a window's projections as one GEMM, an
inner loop runs its steps), so that they never take more than a window's memory; a feature-major
LSTM step multiplies ``[W_ih, W_hh]`` by ``[x_t; h]`` in one matmul instead, except in the inference
forward of a bidirectional or a large layer (``_fused_forward._joint_step``, from interleaved
timings; the backward's large matmuls are the same either way). A layer above a feature-major one
reads its input feature-major where that layer kept its output so (:func:`input_feature_major`).

A direction whose per-step product is mid-sized (``_UNIT_GROUPS``) splits its hidden units into
groups (as many as XLA has threads, two here): each group computes all gates of its units from the
whole previous ``h`` with its own rows of the weights (reordered group-major once per call,
``_fused_layout._group_rows``), so a step is two independent products and two independent gate
updates, which XLA runs on two threads; one product of that size ran on one thread, or was split
inside the matmul library with the second thread waking up late every step. The backward mirrors it:
each backward step starts with one product per group, its columns of ``W_hh`` times all groups'
gate gradients of the step before (``_fused_backward._PRODUCTS_FIRST``), then the group's gate
arithmetic.

For LSTM from a batch of 8 and GRU from 32 (``_FEATURE_MAJOR_FROM``), with 256 hidden units or more
(``_FEATURE_MAJOR_MIN_HIDDEN``), the loops keep the state feature-major, ``(H, N)``, so that step is
``W @ h`` with torch's weights as stored. Otherwise, and for the one-gate RNN, they run batch-major,
``(N, H)``, with ``h @ W.T``. Both layouts compute the same; the choice is from timings
(``benchmarks/layouts.py`` times them against each other). Every dynamic index is declared in range
(``allow_negative_indices=False``): no index normalisation per step. Two XLA:CPU code-generation
traps shape the rest: gate nonlinearities on a dynamic slice that is then sliced again, or feeding a
concatenation, compile to scalar code; so each gate's block of a window's hoisted input projection
is read with a ``dynamic_slice`` of its own per step (never a slice of a step's slice), and
feature-major the backward writes the gate gradients of a step gate by gate into a ``(G*H, N)``
scratch, which is then copied into the buffers for all steps (``(G*H, L, N)``, read as the ``(G*H,
L*N)`` operands of the weight-gradient matmuls; for large layers the buffers are filled as ``(L,
G*H, N)`` and transposed once, see ``_STEP_MAJOR_GRADIENTS_FROM``). Those buffers are the ones in
which the forward saved the gate activations (``_fused_layout._GRADIENT_BUFFERS``): the backward
overwrites them step by step, so a training step holds them once, not twice.

The equations are torch's (see :func:`jaxrnn.functional.step_from_gates`); the tests check the
outputs and gradients of this path against torch and against autodiff of the plain scan.

Shapes: ``x (L, N, H_in)``; per direction the weights use torch's cell names; the state is stacked
over directions, ``h (D, N, H_out)`` and ``c (D, N, H_cell)``; ``mask (L, N, 1)`` (bool) marks the
valid steps, where the state moves; on the others it stays as it was (so a reverse direction
starts at each sequence's own last valid step).

The code: this module picks the defaults (layout, unit groups, buffer layout) and wires the
``custom_vjp``; :mod:`~jaxrnn.functional._fused_forward` is the forward loop,
:mod:`~jaxrnn.functional._fused_backward` the backward, and
:mod:`~jaxrnn.functional._fused_layout` the per-step indexing of their buffers, the unit groups'
rows and the matmuls in either layout.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from jaxrnn import _params
from jaxrnn.functional._fused_backward import _backward
from jaxrnn.functional._fused_forward import _forward
from jaxrnn.functional._fused_layout import _group_rows, _outputs_batch_major

# From these batch sizes, and this many hidden units, the loops of LSTM and GRU run
# feature-major, ``(H, N)`` states and ``W @ h`` per step; otherwise, and always for the one-gate
# RNN, batch-major, ``(N, H)`` and ``h @ W.T`` (from interleaved timings, ``benchmarks/layouts.py``;
# with 128 hidden units, batch-major against feature-major: LSTM B=8, 16, 32 forward 1.12-1.22x
# and training steps 1.15-1.6x, B=64 forward 1.10x and training level; GRU B=32 forward
# 1.03-1.08x and training 1.10x, B=64 level. At 256, B=32, feature-major is the benchmark's
# tuned layout).
_FEATURE_MAJOR_FROM = {"LSTM": 8, "GRU": 32}
_FEATURE_MAJOR_MIN_HIDDEN = 256

# From this many gate rows (``G*H``, per mode) a feature-major backward fills its gate-gradient
# buffers step-major, ``(L, G*H, N)``, one contiguous block per step, and transposes them once to
# ``(G*H, L, N)`` for the weight-gradient matmuls. Below, it writes ``(G*H, L, N)`` directly, a
# strided row per gate row and step, which is cheaper for LSTM while those rows are few
# (interleaved A/B: the transpose cost 0.5-3% on the H=256 LSTM workloads; at LSTM H=512, 2048
# rows, the strided writes were a tenth of the training step in profiles and step-major was
# 2.5-3.5% faster). A GRU step reads and writes four blocks per step for three gates (its ``n``
# gate's two sides), and step-major pays from its smallest feature-major layer on
# (``benchmarks/variants.py step-major-gradients``).
_STEP_MAJOR_GRADIENTS_FROM = {"LSTM": 2048, "GRU": 768}

# Hidden-unit groups (``layer(unit_groups=...)``): one direction's step split into independent
# products, each computing all gates of a group of units from the whole state, so that XLA runs
# them on separate threads. XLA:CPU runs one mid-sized per-step product on one thread (or hands
# half of it to a second thread that must wake up first, every step); two independent products
# keep both threads busy. On 2 cores, interleaved, forward: LSTM 128,32,128,256 1.7-1.8x, GRU
# 128,32,128,256 1.5-1.9x; no gain below about 3M or above about 40M multiply-adds per step
# (``benchmarks/run.py`` workloads: the B=4 layers lost 5-30%, the H=512 ones were level; a
# batch-major LSTM's step multiplies ``W_hh`` alone: H=128, B=32, 2.1M, one group 1.05-1.12x
# faster than two, GRU H=256, B=16, 3.1M, two groups 1.2-1.6x faster than one).
_UNIT_GROUPS = {"max": 2, "macs": (3_000_000, 40_000_000)}

# Whether a stacked layer may read its input feature-major (see input_feature_major; off: every
# layer reads its input as if it were the model's).
_STACKED_INPUT_FEATURE_MAJOR = True


def feature_major_default(mode: str, batch: int, hidden: int) -> bool:
    """The loop layout :func:`layer` picks: feature-major for LSTM from a batch of 8 and for GRU
    from 32 (``_FEATURE_MAJOR_FROM``), with at least ``_FEATURE_MAJOR_MIN_HIDDEN`` hidden units
    (``hidden_size``); batch-major otherwise."""
    return (
        mode in _FEATURE_MAJOR_FROM
        and batch >= _FEATURE_MAJOR_FROM[mode]
        and hidden >= _FEATURE_MAJOR_MIN_HIDDEN
    )


def step_major_gradients_default(mode: str, gate_rows: int, feature_major: bool) -> bool:
    """Whether a feature-major backward fills its gate-gradient buffers step-major: from
    ``_STEP_MAJOR_GRADIENTS_FROM[mode]`` gate rows (``G*H``). Batch-major they are always
    step-major."""
    return (
        feature_major
        and mode in _STEP_MAJOR_GRADIENTS_FROM
        and gate_rows >= _STEP_MAJOR_GRADIENTS_FROM[mode]
    )


def input_feature_major(stacked: bool, feature_major: bool, hidden_out: int, batch: int) -> bool:
    """Whether a feature-major layer reads the input of its projection windows from ``x``
    transposed to ``(L, H_in, N)`` rather than window by window from ``(L, N, H_in)``: where ``x``
    is the output of a feature-major layer below whose loops kept it ``(L, H, N)`` (``stacked``,
    and not :func:`_fused_layout._outputs_batch_major`). The two transposes then cancel; otherwise
    XLA wrote the layer's output batch-major and transposed it back for the windows (the
    inference forward's hoisted windows in two passes, through a buffer in the layout XLA picks
    for the transpose: 16 MiB more temporaries at H=512, B=64). Interleaved A/B
    (``benchmarks/variants.py stacked-input``, three runs, results/2026-12-07-amd-epyc-2-cores-
    variants-run2.md and -run3.md): 2-layer GRU 128,64,256,512 forward 1.06-1.09x (temporaries
    32.1 -> 27.8 MiB), training step 1.01-1.03x; 128,64,128,256 1.03-1.07x; bidirectional LSTM
    128,64,256,512 level."""
    if not _STACKED_INPUT_FEATURE_MAJOR:
        return False
    return bool(stacked and feature_major and not _outputs_batch_major(True, hidden_out, batch))


def _cpu_count() -> int:
    """The CPUs this process may run on (XLA's thread pool has as many threads)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _on_cpu() -> bool:
    """Whether the layer being traced will run on the CPU, as far as tracing can tell: the
    platform of ``jax.default_device(...)`` where one is set, else JAX's default backend (a jitted
    function's arguments committed to another device are not seen here)."""
    device = jax.config.jax_default_device
    if device is None:
        return jax.default_backend() == "cpu"
    return (device if isinstance(device, str) else device.platform).lower() == "cpu"


def unit_groups_default(mode: str, weights, batch: int, feature_major: bool) -> int:
    """The number of hidden-unit groups :func:`layer` picks (see ``_UNIT_GROUPS``): as many as
    XLA has threads, at most ``_UNIT_GROUPS["max"]``, for one direction without projection whose
    per-step product has between ``_UNIT_GROUPS["macs"]`` multiply-adds; else 1, and 1 on a
    backend other than the CPU (the groups share a step between XLA:CPU's threads; on a GPU they
    would only launch two kernels for one). The product is
    ``W_hh @ h``, or ``[W_ih, W_hh] @ [x_t; h]`` for a feature-major LSTM
    (``_fused_forward._joint_step``)."""
    w = weights[0]
    gate_rows, hidden_out = w["weight_hh"].shape
    joint = mode == "LSTM" and feature_major
    cols = hidden_out + (w["weight_ih"].shape[1] if joint else 0)
    lo, hi = _UNIT_GROUPS["macs"]
    groups = min(_UNIT_GROUPS["max"], _cpu_count()) if _on_cpu() else 1
    hidden = gate_rows // _params.GATES[mode]
    if (
        len(weights) != 1
        or w.get("weight_hr") is not None
        or groups < 2
        or hidden % groups
        or not lo <= gate_rows * cols * batch <= hi
    ):
        return 1
    return groups


def layer(
    mode: str,
    weights,
    x,
    state0,
    mask=None,
    *,
    reverse,
    precision=None,
    unroll: int = 1,
    feature_major: bool | None = None,
    step_major_gradients: bool | None = None,
    unit_groups: int | None = None,
    stacked: bool = False,
):
    """Run every direction of one layer; returns ``(finals, outputs)``.

    Args:
        mode: ``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"`` or ``"GRU"``.
        weights: one dict per direction with the cell names (``weight_ih``, ``weight_hh``,
            ``bias_ih``, ``bias_hh``, ``weight_hr``; absent ones ``None``).
        x: ``(L, N, H_in)`` time-major input, shared by the directions.
        state0: ``h_0 (D, N, H_out)``, for LSTM ``(h_0, c_0)`` with ``c_0 (D, N, H_cell)``.
        mask: optional bool ``(L, N, 1)``; ``False`` steps keep the state and output zeros.
        reverse: one bool per direction, ``True`` to run it from the last step to the first.
        precision: ``jax.lax.Precision`` of the matmuls.
        unroll: time steps per loop iteration.
        feature_major: the layout of the loops (the same results; ``None``:
            :func:`feature_major_default`).
        step_major_gradients: feature-major only, the layout of the backward's gate-gradient
            buffers while the loop fills them (the same results; ``None``:
            :func:`step_major_gradients_default`).
        unit_groups: split each direction's hidden units into this many groups, each computing
            all gates of its units from the whole state (the same results, independent work for
            XLA's threads; ``None``: :func:`unit_groups_default`). Must divide ``hidden_size``;
            not with ``proj_size``.
        stacked: ``x`` is the output of the layer below in the same stack (same mode, batch and
            sizes). Where that layer's loops kept their output feature-major, ``(L, H, N)``
            (:func:`_fused_layout._outputs_batch_major`), and this one computes its input
            projections in windows, it reads them from ``x`` feature-major too: XLA then cancels
            the two transposes in between instead of writing the output batch-major and then
            transposed again for the windows (the same results; see :func:`input_feature_major`).

    Returns:
        ``finals``: per direction the state after its last step (``h`` or ``(h, c)``);
        ``outputs``: per direction ``(L, N, H_out)``, zero on masked steps.
    """
    weights = tuple({k: w.get(k) for k in _params.RECURRENT_NAMES} for w in weights)
    hidden = weights[0]["weight_hh"].shape[0] // _params.GATES[mode]  # H_cell
    if feature_major is None:
        feature_major = feature_major_default(mode, x.shape[1], hidden)
    if step_major_gradients is None:
        gate_rows = weights[0]["weight_hh"].shape[0]
        step_major_gradients = step_major_gradients_default(mode, gate_rows, feature_major)
    if unit_groups is None:
        unit_groups = unit_groups_default(mode, weights, x.shape[1], feature_major)
    groups = int(unit_groups)
    if groups > 1:
        if weights[0]["weight_hr"] is not None:
            raise ValueError("unit_groups > 1 does not support proj_size")
        if hidden % groups:
            raise ValueError(f"unit_groups={groups} must divide hidden_size={hidden}")
        weights = tuple(_group_rows(w, _params.GATES[mode], groups) for w in weights)
    hidden_out = weights[0]["weight_hh"].shape[1]
    spec = (
        mode,
        tuple(bool(r) for r in reverse),
        precision,
        int(unroll),
        bool(feature_major),
        bool(feature_major and step_major_gradients),
        groups,
        input_feature_major(stacked, feature_major, hidden_out, x.shape[1]),
    )
    hs, c_last = _layer_jit(spec, weights, x, state0, mask)
    finals = []
    for d, h in enumerate(hs):
        h_last = h[0] if spec[1][d] else h[-1]
        finals.append((h_last, c_last[d]) if mode == "LSTM" else h_last)
    outputs = hs if mask is None else tuple(jnp.where(mask, h, jnp.zeros((), h.dtype)) for h in hs)
    return finals, list(outputs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _layer(spec, weights, x, state0, mask):
    out, _ = _forward(spec, weights, x, state0, mask, save=False)
    return out


def _layer_fwd(spec, weights, x, state0, mask):
    out, saved = _forward(spec, weights, x, state0, mask, save=True)
    return out, (weights, x, state0, mask, out, saved)


def _layer_bwd(spec, residuals, cts):
    weights, x, state0, mask, out, saved = residuals
    return _backward(spec, weights, x, state0, mask, out, saved, cts)


_layer.defvjp(_layer_fwd, _layer_bwd)

# jitted so that eager callers (and eager grad) compile a layer once per shape and reuse it; inside
# an outer jit this is inlined.
_layer_jit = jax.jit(_layer, static_argnums=0)
