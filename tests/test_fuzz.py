"""Property-based tests (hypothesis): random configurations against torch, and malformed inputs.

1. Random configurations (mode, sizes from 1, layers, directions, batch_first, bias, proj_size,
   batched/unbatched, hx, seq_lengths): outputs and final states equal torch's, and gradients
   too where torch can run the same call.
2. Malformed calls (wrong ranks/sizes, int/bool/complex dtypes, empty batches, zero-length
   sequences, non-array or mis-structured hx, lists, bad seq_lengths, the cell API too): either a
   result that torch, given the same values as float32 tensors, reproduces, or a ValueError/
   TypeError raised by :mod:`jaxrnn._checks` that names the module; never an error from deep
   inside JAX, never a silently wrong shape.

Examples are derandomized (the same every run) and bounded for time.
"""

from __future__ import annotations

import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _torch_oracle import CELL_CLASSES, assert_close, torch_layer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import jaxrnn
from jaxrnn import functional as F

MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
NAMES = {"RNN_TANH": "RNN", "RNN_RELU": "RNN", "LSTM": "LSTM", "GRU": "GRU"}
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# torch runs on one thread: see tests/conftest.py


# ---------------------------------------------------------------------------------------------
# 1. random valid configurations against torch


@st.composite
def configs(draw, mode):
    hidden = draw(st.integers(1, 4))
    cfg = dict(
        mode=mode,
        input_size=draw(st.integers(1, 4)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        proj_size=draw(st.integers(0, hidden - 1)) if mode == "LSTM" and hidden > 1 else 0,
        batched=draw(st.booleans()),
        seq_len=draw(st.integers(1, 5)),
        with_hx=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )
    cfg["batch"] = draw(st.integers(1, 3)) if cfg["batched"] else 1
    cfg["lengths"] = None
    if cfg["batched"] and draw(st.booleans()):
        n, t = cfg["batch"], cfg["seq_len"]
        length = st.one_of(st.just(0), st.just(t), st.integers(1, t))  # edges often
        cfg["lengths"] = draw(st.lists(length, min_size=n, max_size=n))
    return cfg


def _make_inputs(cfg):
    rng = np.random.default_rng(cfg["seed"])
    t, n, i = cfg["seq_len"], cfg["batch"], cfg["input_size"]
    if not cfg["batched"]:
        shape = (t, i)
    else:
        shape = (n, t, i) if cfg["batch_first"] else (t, n, i)
    x = rng.standard_normal(shape).astype(np.float32)
    hx = None
    if cfg["with_hx"]:
        lead = (cfg["num_layers"] * (2 if cfg["bidirectional"] else 1),)
        lead += (n,) if cfg["batched"] else ()
        h0 = rng.standard_normal((*lead, cfg["proj_size"] or cfg["hidden_size"]))
        h0 = h0.astype(np.float32)
        if cfg["mode"] == "LSTM":
            hx = (h0, rng.standard_normal((*lead, cfg["hidden_size"])).astype(np.float32))
        else:
            hx = h0
    return x, hx


def _torch_module(cfg):
    kwargs = {k: cfg[k] for k in ("num_layers", "bidirectional", "batch_first", "bias")}
    if cfg["proj_size"]:
        kwargs["proj_size"] = cfg["proj_size"]
    return torch_layer(
        cfg["mode"], cfg["input_size"], cfg["hidden_size"], seed=cfg["seed"], **kwargs
    )


def _sequence(tree, n, batch_axis):
    """Sequence ``n`` of a batched array (or tuple), keeping a batch axis of size 1."""
    return jax.tree.map(lambda a: np.take(a, [n], axis=batch_axis), tree)


@pytest.mark.parametrize("mode", MODES)
@settings(FUZZ, max_examples=5)
@given(data=st.data())
def test_random_configuration_matches_torch(mode, data):
    cfg = data.draw(configs(mode))
    tmod = _torch_module(cfg)
    x, hx = _make_inputs(cfg)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    mode, bf = cfg["mode"], cfg["batch_first"]
    lengths = cfg["lengths"]
    event(f"{mode}, {cfg['num_layers']} layers, {'bi' if cfg['bidirectional'] else 'uni'}")
    event("unbatched" if not cfg["batched"] else "seq_lengths" if lengths else "batched")
    if lengths is not None and 0 in lengths:
        event("an empty sequence")
    if cfg["proj_size"]:
        event("proj_size")

    def loss(params, x, hx):
        out = F.rnn(params, x, hx, mode=mode, batch_first=bf, seq_lengths=lengths)
        return sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(out)), out

    (_, (out, h_n)), grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(
        params, x, hx
    )
    to_t = lambda a: torch.tensor(a, requires_grad=True)  # noqa: E731

    if lengths is None:  # one torch call; compare values and gradients
        xt = to_t(x)
        hxt = None if hx is None else jax.tree.map(to_t, hx)
        t_out, t_hn = tmod(xt, hxt)
        sum(torch.sin(a).sum() for a in jax.tree.leaves((t_out, t_hn))).backward()
        assert_close((out, h_n), jax.tree.map(lambda a: a.detach().numpy(), (t_out, t_hn)))
        t_gp = {k: p.grad.numpy() for k, p in tmod.named_parameters()}
        assert_close(grads[0], t_gp, 2e-5, 2e-5, "grad params")
        assert_close(grads[1], xt.grad.numpy(), 2e-5, 2e-5, "grad input")
        if hx is not None:
            assert_close(grads[2], jax.tree.map(lambda a: a.grad.numpy(), hxt), 2e-5, 2e-5)
        return

    # variable lengths: sequence n is torch's call on its valid prefix; length 0 leaves h_0
    # untouched and the output zero
    seq_axis, b_axis = (1, 0) if bf else (0, 1)
    out, h_n = np.asarray(out), jax.tree.map(np.asarray, h_n)
    for n, length in enumerate(lengths):
        out_n = np.take(out, [n], axis=b_axis)
        hn_n = _sequence(h_n, n, 1)
        h0_n = None if hx is None else _sequence(hx, n, 1)
        if length == 0:
            np.testing.assert_array_equal(out_n, 0)
            want = h0_n if hx is not None else jax.tree.map(np.zeros_like, hn_n)
            assert_close(hn_n, want, what=f"h_n of empty sequence {n}")
            continue
        x_n = np.take(np.take(x, [n], axis=b_axis), range(length), axis=seq_axis)
        with torch.no_grad():
            t_out, t_hn = tmod(
                torch.from_numpy(x_n),
                None if h0_n is None else jax.tree.map(torch.from_numpy, h0_n),
            )
        valid = np.take(out_n, range(length), axis=seq_axis)
        assert_close(valid, t_out.numpy(), what=f"output {n}")
        np.testing.assert_array_equal(
            np.take(out_n, range(length, cfg["seq_len"]), axis=seq_axis), 0
        )
        assert_close(hn_n, jax.tree.map(lambda a: a.numpy(), t_hn), what=f"h_n {n}")


# ---------------------------------------------------------------------------------------------
# 2. malformed inputs


# hx that is not an array (or a pair of arrays) at all
_HX_STRUCTURAL = (
    "int",
    "str",
    "dict",
    "float list",
    "array list",
    "single for lstm",
    "one tuple",
    "three tuple",
    "nested tuple",
    "none inside",
)
_HX_CORRUPTIONS = _HX_STRUCTURAL + (
    "wrong lead",
    "wrong batch",
    "wrong hidden",
    "wrong rank",
    "int dtype",
)
_INPUT_CORRUPTIONS = (
    "rank 0",
    "rank 1",
    "rank 4",
    "feature size",
    "int32",
    "int8",
    "bool",
    "complex64",
    "float16",
    "float64",
    "empty batch",
    "zero length",
    "python list",
    "python float",
    "none",
)
_LENGTH_CORRUPTIONS = ("float", "bool", "2-D", "too long", "negative", "too many", "list")


# Calls jaxrnn refuses on purpose where torch, given the same values as float32 tensors (see
# _to_torch, which casts every array to float32), runs: non-float dtypes of input and hx.
# Everything else jaxrnn refuses, torch must refuse too. seq_lengths has no torch counterpart
# and is skipped.
_INTENDED_DIFFERENCES = {
    ("input", "int32"),
    ("input", "int8"),
    ("input", "bool"),
    ("input", "complex64"),
    ("hx", "int dtype"),
}

# Malformed structures (not arrays where torch wants tensors, wrong nesting): torch refuses them
# with whatever Python error its indexing hits. Every other refusal must be one of torch's checks.
_STRUCTURAL = {
    ("input", "python list"),
    ("input", "python float"),
    ("input", "none"),
    *(("hx", kind) for kind in _HX_STRUCTURAL),
}

_ALL_CORRUPTIONS = [
    (target, kind)
    for target, kinds in (
        ("input", _INPUT_CORRUPTIONS),
        ("hx", _HX_CORRUPTIONS),
        ("seq_lengths", _LENGTH_CORRUPTIONS),
    )
    for kind in kinds
]


@st.composite
def call_settings(draw, target):
    """The rest of a malformed call: mode, cell or layer, directions, batched."""
    cell = draw(st.booleans()) and target != "seq_lengths"  # cells take no seq_lengths
    return dict(
        mode=draw(st.sampled_from(MODES)),
        cell=cell,
        bidirectional=draw(st.booleans()) and not cell,
        batched=draw(st.booleans()),
    )


def _corrupt_input(kind, x, batched):
    t_ax = 0
    if kind == "rank 0":
        return np.float32(1.5)
    if kind == "rank 1":
        return x.reshape(-1)
    if kind == "rank 4":
        return x[None]
    if kind == "feature size":
        return np.concatenate([x, x], axis=-1)
    if kind in ("int32", "int8", "bool", "complex64", "float16", "float64"):
        return x.astype(kind)
    if kind == "empty batch":  # the test forces a batched input for this kind
        assert batched, "an empty batch needs a batched input"
        return x[:, :0] if x.ndim == 3 else x[:0]  # layer (L, 0, H_in); cell (0, H_in)
    if kind == "zero length":
        return np.take(x, [], axis=t_ax)
    if kind == "python list":
        return x.tolist()
    if kind == "python float":
        return 1.5
    return None


def _corrupt_hx(kind, hx, mode):
    h = hx[0] if mode == "LSTM" else hx
    pair = (lambda a: (a, a)) if mode == "LSTM" else (lambda a: a)
    return {
        "int": 3,
        "str": "hx",
        "dict": {"h": h},
        "float list": h.tolist(),
        "array list": [h, h] if mode == "LSTM" else [h],
        "single for lstm": h,
        "one tuple": (h,),
        "three tuple": (h, h, h),
        "nested tuple": ((h,), h),
        "none inside": (None, h),
        "wrong lead": pair(np.concatenate([h, h], axis=0)),
        "wrong batch": pair(np.concatenate([h, h], axis=-2)) if h.ndim >= 2 else pair(h[None]),
        "wrong hidden": pair(np.concatenate([h, h], axis=-1)),
        "wrong rank": pair(h[None]),
        "int dtype": pair(h.astype(np.int32)),
    }[kind]


def _corrupt_lengths(kind, n, t):
    return {
        "float": np.full((n,), 1.0),
        "bool": np.ones((n,), bool),
        "2-D": np.ones((n, 1), np.int32),
        "too long": np.full((n,), t + 1),
        "negative": np.full((n,), -1),
        "too many": np.ones((n + 1,), np.int32),
        "list": [t] * n,
    }[kind]


def _to_torch(value):
    """torch's view of the same values: float arrays as float32 tensors, structure kept."""
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        return torch.from_numpy(np.array(value, np.float32).copy())
    if isinstance(value, (tuple, list)):
        return type(value)(_to_torch(v) for v in value)
    return value


@pytest.mark.parametrize("target,kind", _ALL_CORRUPTIONS)
@settings(FUZZ, max_examples=4)
@given(data=st.data())
def test_malformed_inputs_give_a_result_or_a_clear_error(target, kind, data):
    case = dict(data.draw(call_settings(target)), target=target, kind=kind)
    if (target, kind) == ("input", "empty batch"):
        case["batched"] = True  # an unbatched input has no batch to empty
    mode, cell = case["mode"], case["cell"]
    t, n, i, h = 4, 2, 3, 5
    rng = np.random.default_rng(0)
    d = 2 if case["bidirectional"] else 1
    if cell:
        tmod = CELL_CLASSES[mode](i, h)
        if mode == "RNN_RELU":
            tmod = torch.nn.RNNCell(i, h, nonlinearity="relu")
        x = rng.standard_normal((n, i) if case["batched"] else (i,)).astype(np.float32)
        hshape = (n, h) if case["batched"] else (h,)
    else:
        tmod = torch_layer(mode, i, h, num_layers=2, bidirectional=case["bidirectional"])
        x = rng.standard_normal((t, n, i) if case["batched"] else (t, i)).astype(np.float32)
        hshape = (2 * d, n, h) if case["batched"] else (2 * d, h)
    h0 = rng.standard_normal(hshape).astype(np.float32)
    hx = (h0, h0 + 1) if mode == "LSTM" else h0
    lengths = None
    if case["target"] == "input":  # without hx, so an empty batch is a valid call
        x = _corrupt_input(case["kind"], x, case["batched"])
        hx = None
    elif case["target"] == "hx":
        hx = _corrupt_hx(case["kind"], hx, mode)
    elif case["batched"]:
        lengths = _corrupt_lengths(case["kind"], n, t)
    else:
        lengths = _corrupt_lengths(case["kind"], 1, t)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    name = (
        {"RNN_TANH": "RNNCell", "RNN_RELU": "RNNCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}[mode]
        if cell
        else NAMES[mode]
    )

    try:
        if cell:
            got = F.cell_forward(mode, params, x, hx)
        else:
            got = F.rnn(params, x, hx, mode=mode, seq_lengths=lengths)
    except (ValueError, TypeError) as err:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        assert frame.filename.endswith("jaxrnn/_checks.py"), (
            f"{case}: {type(err).__name__} raised from {frame.filename}:{frame.lineno}: {err}"
        )
        assert str(err).startswith(f"{name}:"), f"{case}: message does not name the module: {err}"
        event(f"{case['target']} {case['kind']}: {type(err).__name__}")
        # torch must refuse the same call too, unless the difference is intended (see above)
        if target == "seq_lengths" or (target, kind) in _INTENDED_DIFFERENCES:
            return
        refusals = Exception if (target, kind) in _STRUCTURAL else (RuntimeError, ValueError)
        try:
            with torch.no_grad():
                tmod(_to_torch(x), _to_torch(hx))
        except refusals:
            return
        raise AssertionError(f"{case}: jaxrnn raised {err!r}, torch accepts the same call") from err
    event(f"{case['target']} {case['kind']}: result")

    # a result: torch, given the same values as float32 tensors, must agree on values and shape
    if lengths is not None:  # only the valid "list" form reaches here: full lengths
        assert case["kind"] == "list", case
    with torch.no_grad():
        want = tmod(_to_torch(x), _to_torch(hx))
    want = jax.tree.map(lambda a: a.numpy(), want)
    assert_close(got, want, what=str(case))


@pytest.mark.parametrize("batch_first", [False, True])
def test_zero_length_and_empty_batch_follow_torch(batch_first):
    """torch's edge cases by name: no time steps is an error (torch's words), no sequences is
    an empty result of the right shape."""
    tmod = torch_layer("LSTM", 3, 4, num_layers=2, batch_first=batch_first)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    empty_t = np.zeros((2, 0, 3) if batch_first else (0, 2, 3), np.float32)
    with pytest.raises(ValueError, match="^LSTM: Expected sequence length to be larger than 0"):
        F.rnn(params, empty_t, mode="LSTM", batch_first=batch_first)
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0"):
        tmod(torch.from_numpy(empty_t))
    empty_n = np.zeros((0, 5, 3) if batch_first else (5, 0, 3), np.float32)
    out, (h, c) = F.rnn(params, empty_n, mode="LSTM", batch_first=batch_first)
    with torch.no_grad():
        t_out, (t_h, t_c) = tmod(torch.from_numpy(empty_n))
    assert out.shape == tuple(t_out.shape) and h.shape == tuple(t_h.shape) == (2, 0, 4)
