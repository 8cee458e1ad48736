"""Errors: raised by jaxrnn's own checks before any computation, torch's wording, naming the module."""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from flax import nnx

import jaxrnn
from jaxrnn import linen as jrl

R = nnx.Rngs(0)


@pytest.mark.parametrize(
    "make,exc,pattern",
    [
        (
            lambda: jaxrnn.LSTM(10, 20, dropout=1.5, rngs=R),
            ValueError,
            r"LSTM: dropout should be a number in range \[0, 1\]",
        ),
        (
            lambda: jaxrnn.LSTM(10, 20, dropout=-0.1, rngs=R),
            ValueError,
            "dropout should be a number",
        ),
        (
            lambda: jaxrnn.GRU(10, 20, dropout=True, rngs=R),
            ValueError,
            "dropout should be a number",
        ),
        (
            lambda: jaxrnn.LSTM(10, 20, proj_size=-1, rngs=R),
            ValueError,
            "proj_size should be a positive integer or zero",
        ),
        (
            lambda: jaxrnn.LSTM(10, 20, proj_size=20, rngs=R),
            ValueError,
            "proj_size has to be smaller than hidden_size",
        ),
        (
            lambda: jaxrnn.LSTM(10, 20, 0, rngs=R),
            ValueError,
            "LSTM: num_layers must be greater than zero",
        ),
        (
            lambda: jaxrnn.GRU(10, 0, rngs=R),
            ValueError,
            "GRU: hidden_size must be greater than zero",
        ),
        (lambda: jaxrnn.GRU(0, 4, rngs=R), ValueError, "input_size must be greater than zero"),
        (
            lambda: jaxrnn.GRU(10, 2.5, rngs=R),
            TypeError,
            "hidden_size should be of type int, got: float",
        ),
        (
            lambda: jaxrnn.RNN(10, 20, nonlinearity="sigmoid", rngs=R),
            ValueError,
            r"RNN: Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'.",
        ),
        (
            lambda: jaxrnn.LSTMCell(10, -1, rngs=R),
            ValueError,
            "LSTMCell: hidden_size must be non-negative, got -1",
        ),
        (lambda: jrl.LSTM(10, 20, proj_size=30), ValueError, "LSTM: proj_size has to be smaller"),
        (lambda: jrl.RNN(10, 20, nonlinearity="x"), ValueError, "Unknown nonlinearity"),
        (lambda: jrl.GRU(10, 20, num_layers=0), ValueError, "num_layers must be greater than zero"),
    ],
)
def test_constructor_errors(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_constructor_errors_agree_with_torch():
    """Each invalid constructor call that torch refuses, jaxrnn refuses with torch's message."""
    cases = [
        dict(input_size=3, hidden_size=4, dropout=2.0),
        dict(input_size=3, hidden_size=4, proj_size=4),
        dict(input_size=3, hidden_size=4, num_layers=0),
        dict(input_size=3, hidden_size=0),
    ]
    for kw in cases:
        with pytest.raises(Exception) as t_err:
            torch.nn.LSTM(**kw)
        with pytest.raises(ValueError) as j_err:
            jaxrnn.LSTM(**kw, rngs=R)
        assert str(t_err.value) in str(j_err.value)
    # dropout of the wrong type: torch's float(dropout) decides between TypeError and ValueError
    for dropout in (None, "abc", "0.5", [0.5]):
        theirs = _torch_error(lambda: torch.nn.LSTM(3, 4, 2, dropout=dropout))  # noqa: B023
        for make in (jaxrnn.LSTM, jrl.LSTM):
            with pytest.raises(type(theirs), match="LSTM: dropout should be a number"):
                make(3, 4, 2, dropout=dropout, **({"rngs": R} if make is jaxrnn.LSTM else {}))


def test_dropout_single_layer_warns_like_torch():
    """torch's warning and category, attributed to the caller's line (as torch's), once per
    constructed module (Linen: not again for the clones of init and apply)."""
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        torch.nn.GRU(3, 4, dropout=0.5)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        jaxrnn.GRU(3, 4, dropout=0.5, rngs=R)
        m = jrl.GRU(3, 4, dropout=0.5)
        m.apply(m.init(jax.random.key(0), jnp.ones((2, 1, 3))), jnp.ones((2, 1, 3)))
    assert len(theirs) == 1 and len(ours) == 2
    for w in ours:
        assert w.category is theirs[0].category
        assert str(w.message) == str(theirs[0].message)
        assert w.filename == __file__


def test_conversions_do_not_repeat_the_dropout_warning():
    """``from_torch``/``to_torch`` of a 1-layer module with dropout: the original's construction
    warned; the copy does not again (under ``-W error`` the conversion itself would fail)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = torch.nn.GRU(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = jaxrnn.from_torch(t)
        assert repr(jaxrnn.to_torch(m)) == repr(m) == repr(t)
    with pytest.warns(UserWarning, match="dropout option adds dropout"):  # still for a new one
        jaxrnn.GRU(3, 4, dropout=0.5, rngs=R)


@pytest.fixture(scope="module")
def lstm():
    return jaxrnn.LSTM(3, 5, 2, bidirectional=True, proj_size=2, rngs=nnx.Rngs(0))


def _raises(exc, pattern, f, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        f(*args, **kwargs)


def test_input_errors(lstm):
    x = jnp.ones((7, 4, 3))
    _raises(
        ValueError,
        re.escape("LSTM: input.size(-1) must be equal to input_size. Expected 3, got 7"),
        lstm,
        jnp.ones((7, 4, 7)),
    )
    _raises(
        ValueError,
        "LSTM: Expected input to be 2D or 3D, got 4D instead",
        lstm,
        jnp.ones((7, 4, 3, 1)),
    )
    _raises(ValueError, "Expected input to be 2D or 3D, got 1D", lstm, jnp.ones((3,)))
    _raises(
        TypeError,
        "LSTM: input must have a floating-point dtype",
        lstm,
        jnp.ones((7, 4, 3), jnp.int32),
    )
    _raises(TypeError, "LSTM: input must be an array, got str", lstm, "hello")
    h0, c0 = jnp.zeros((4, 4, 2)), jnp.zeros((4, 4, 5))
    lstm(x, (h0, c0))  # the right shapes work
    # proj_size: h_0 has H_out = proj_size, c_0 has H_cell = hidden_size
    _raises(
        ValueError, re.escape("Expected hidden[0] size (4, 4, 2), got [4, 4, 5]"), lstm, x, (c0, c0)
    )
    _raises(
        ValueError, re.escape("Expected hidden[1] size (4, 4, 5), got [4, 4, 2]"), lstm, x, (h0, h0)
    )
    _raises(
        ValueError,
        re.escape("Expected hidden[0] size (4, 4, 2), got [2, 4, 2]"),
        lstm,
        x,
        (h0[:2], c0),
    )
    _raises(
        ValueError,
        "For batched 3-D input, hx and cx should also be 3-D but got \\(2-D, 3-D\\)",
        lstm,
        x,
        (h0[:, 0], c0),
    )
    _raises(
        ValueError,
        "For unbatched 2-D input, hx and cx should also be 2-D but got \\(3-D, 3-D\\)",
        lstm,
        x[:, 0],
        (h0, c0),
    )
    _raises(TypeError, "LSTM: hx must be a tuple \\(h_0, c_0\\)", lstm, x, h0)


def test_hidden_errors_gru():
    gru = jaxrnn.GRU(3, 5, rngs=nnx.Rngs(0))
    x = jnp.ones((7, 4, 3))
    _raises(
        ValueError,
        re.escape("GRU: Expected hidden size (1, 4, 5), got [1, 3, 5]"),
        gru,
        x,
        jnp.zeros((1, 3, 5)),
    )
    _raises(
        ValueError,
        "For unbatched 2-D input, hx should also be 2-D but got 3-D tensor",
        gru,
        x[:, 0],
        jnp.zeros((1, 4, 5)),
    )
    _raises(
        ValueError,
        "For batched 3-D input, hx should also be 3-D but got 2-D tensor",
        gru,
        x,
        jnp.zeros((1, 5)),
    )
    _raises(TypeError, "GRU: hx must be a single array", gru, x, (jnp.zeros((1, 4, 5)),))


def test_cell_errors():
    cell = jaxrnn.GRUCell(3, 4, rngs=nnx.Rngs(0))
    _raises(
        ValueError,
        "GRUCell: input has inconsistent input_size: got 5 expected 3",
        cell,
        jnp.ones((2, 5)),
    )
    _raises(
        ValueError,
        "GRUCell: Expected input to be 1D or 2D, got 3D instead",
        cell,
        jnp.ones((1, 2, 3)),
    )
    _raises(
        ValueError,
        "Input batch size 2 doesn't match hidden0 batch size 3",
        cell,
        jnp.ones((2, 3)),
        jnp.ones((3, 4)),
    )
    _raises(
        ValueError,
        "hidden0 has inconsistent hidden_size: got 5, expected 4",
        cell,
        jnp.ones((2, 3)),
        jnp.ones((2, 5)),
    )
    lcell = jaxrnn.LSTMCell(3, 4, rngs=nnx.Rngs(0))
    _raises(
        TypeError,
        "LSTMCell: lstm_cell expects two hidden states: hx must be a tuple \\(h_0, c_0\\)",
        lcell,
        jnp.ones((2, 3)),
        (jnp.ones((2, 4)),),
    )


def test_errors_fire_at_trace_time_under_jit(lstm):
    """Under jit the checks run while tracing, so the user sees our message, not an XLA error."""
    f = nnx.jit(lambda m, x: m(x))
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size"):
        f(lstm, jnp.ones((7, 4, 6)))


def test_linen_call_errors():
    m = jrl.GRU(3, 4)
    v = m.init(jax.random.key(0), jnp.ones((5, 2, 3)))
    _raises(
        ValueError,
        "GRU: input.size\\(-1\\) must be equal to input_size. Expected 3, got 2",
        m.apply,
        v,
        jnp.ones((5, 2, 2)),
    )


def test_functional_param_errors():
    from jaxrnn import functional as F

    params = jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0)).torch_params()
    bad = dict(params, weight_hh_l0=np.zeros((16, 5), np.float32))
    _raises(
        ValueError,
        re.escape("parameter weight_hh_l0 has shape (16, 5), expected (16, 4)"),
        F.lstm,
        bad,
        jnp.ones((2, 3)),
    )
    missing = {k: v for k, v in params.items() if k != "bias_hh_l0"}
    _raises(ValueError, "missing parameters \\['bias_hh_l0'\\]", F.lstm, missing, jnp.ones((2, 3)))
    _raises(TypeError, "params must be a mapping", F.gru, [1, 2], jnp.ones((2, 3)))
    _raises(ValueError, "Unrecognized RNN mode", F.rnn, params, jnp.ones((2, 3)), mode="lstm")
    _raises(
        TypeError,
        "parameter weight_ih_l0 must be a JAX or numpy array, got Tensor "
        "\\(convert a torch state_dict with jaxrnn.state_dict_to_params\\)",
        F.lstm,
        torch.nn.LSTM(3, 4).state_dict(),
        jnp.ones((2, 3)),
    )


def test_functional_stray_projection_and_unknown_mode_are_named():
    """``weight_hr_l*`` in a GRU/RNN dict is unexpected (torch's load refuses it too; it was
    read as a projection), an LSTM projection as wide as the hidden state is refused as torch's
    constructor refuses it, and an unknown mode names the call."""
    from jaxrnn import functional as F

    x = jnp.ones((3, 2, 2))
    for mode, cls in (("GRU", torch.nn.GRU), ("RNN_TANH", torch.nn.RNN)):
        params = jaxrnn.state_dict_to_params(cls(2, 4).state_dict())
        for w_hr in (7 * jnp.ones((4, 4)), jnp.ones((2, 4))):
            with pytest.raises(ValueError, match=r"unexpected parameters \['weight_hr_l0'\]"):
                F.rnn(dict(params, weight_hr_l0=w_hr), x, mode=mode)
    lstm = jaxrnn.state_dict_to_params(torch.nn.LSTM(2, 4).state_dict())
    square = dict(lstm, weight_hr_l0=jnp.ones((4, 4)), weight_hh_l0=jnp.ones((16, 4)))
    with pytest.raises(ValueError, match="LSTM: proj_size has to be smaller than hidden_size"):
        F.lstm(square, x)
    with pytest.raises(ValueError, match="^rnn: Unrecognized RNN mode: gru"):
        F.rnn(lstm, x, mode="gru")
    with pytest.raises(ValueError, match="^cell_forward: Unrecognized RNN mode: gru"):
        F.cell_forward("gru", {}, jnp.ones(2))
    with pytest.raises(ValueError, match="unroll should be a positive int or a bool, got 0"):
        F.lstm(lstm, x, unroll=0)


def test_functional_params_with_a_gap_are_refused():
    """A stack with a gap would run as a different model (biases from layer 0, layers from
    every parameter's name while they follow on): what is missing or past the gap is named, as
    torch's strict load into the model the others describe would."""
    from jaxrnn import functional as F

    params = jaxrnn.LSTM(3, 4, 2, rngs=nnx.Rngs(0)).torch_params()
    x = jnp.ones((2, 1, 3))
    no_l1 = {k: v for k, v in params.items() if k != "weight_ih_l1"}
    _raises(ValueError, r"LSTM: missing parameters \['weight_ih_l1'\]", F.lstm, no_l1, x)
    past_gap = dict(params, weight_ih_l3=params["weight_hh_l1"])
    with pytest.raises(ValueError) as e:
        F.lstm(past_gap, x)
    assert "unexpected parameters ['weight_ih_l3']" in str(e.value)
    assert "the others describe LSTM(3, 4, num_layers=2)" in str(e.value)
    no_bias_l0 = {k: v for k, v in params.items() if not k.endswith("_l0") or "bias" not in k}
    _raises(
        ValueError, r"unexpected parameters \['bias_ih_l1', 'bias_hh_l1'\]", F.lstm, no_bias_l0, x
    )
    stray = dict(params, weight_hr_l1=np.zeros((2, 4), np.float32))
    _raises(ValueError, r"unexpected parameters \['weight_hr_l1'\]", F.lstm, stray, x)
    _raises(
        ValueError,
        r"parameter weight_ih_l0 must be 2-D, got shape \(16,\)",
        F.lstm,
        dict(params, weight_ih_l0=np.zeros(16, np.float32)),
        x,
    )
    cell = jaxrnn.LSTMCell(3, 4, rngs=nnx.Rngs(0)).torch_params()
    _raises(
        ValueError,
        r"unexpected parameters \['weight_hr'\]: the others describe LSTMCell\(3, 4\)",
        F.cell_forward,
        "LSTM",
        dict(cell, weight_hr=np.zeros((2, 4), np.float32)),
        jnp.ones((2, 3)),
    )
    _raises(
        ValueError,
        "must be 2-D",
        F.cell_forward,
        "GRU",
        {"weight_ih": np.zeros((6, 3)), "weight_hh": np.zeros(6)},
        jnp.ones(3),
    )
    # the model itself still runs, and so does a full one
    assert F.lstm(params, x)[0].shape == (2, 1, 4)
    t = torch.nn.LSTM(3, 4, 2)
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    np.testing.assert_allclose(
        F.lstm(params, x)[0], t(torch.from_numpy(np.array(x)))[0].detach().numpy(), atol=1e-6
    )


_TORCH_CELL_FNS = {
    "RNN_TANH": (torch.rnn_tanh_cell, "rnn_tanh_cell"),
    "LSTM": (torch.lstm_cell, "lstm_cell"),
    "GRU": (torch.gru_cell, "gru_cell"),
}


@pytest.mark.parametrize(
    "mode,source", [("LSTM", "GRU"), ("GRU", "LSTM"), ("GRU", "RNN"), ("RNN_TANH", "GRU")]
)
def test_another_modes_weights_are_refused_with_torchs_gate_count(mode, source):
    """Weights of another mode (a GRU's state dict given to ``F.lstm``/``F.lstm_cell``) are
    refused as torch's cells refuse them, ``weight_ih first dim must be 4 * hidden_size = 40,
    but got 30``, hidden_size read from ``weight_hh``'s columns. The raw cells split the gates
    unevenly (numpy's bare 'array split does not result in an equal division'), and the layers
    read the rows floor-divided as a smaller layer's ('expected (28, 6)' for a GRU(6, 10))."""
    from jaxrnn import functional as F

    torch_fn, fn_name = _TORCH_CELL_FNS[mode]
    cell_sd = getattr(torch.nn, source + "Cell")(6, 10).state_dict()
    x, h = torch.ones(2, 6), torch.zeros(2, 10)
    with pytest.raises(RuntimeError) as torch_error:
        torch_fn(x, (h, h) if mode == "LSTM" else h, *cell_sd.values())
    params = jaxrnn.state_dict_to_params(cell_sd)
    jhx = (jnp.zeros((2, 10)), jnp.zeros((2, 10))) if mode == "LSTM" else jnp.zeros((2, 10))
    name = {"RNN_TANH": "RNN_TANH cell", "LSTM": "LSTM cell", "GRU": "GRU cell"}[mode]
    _raises(
        RuntimeError,
        re.escape(f"{name}: {torch_error.value}"),
        getattr(F, fn_name),
        params,
        jnp.ones((2, 6)),
        jhx,
    )
    layer = jaxrnn.state_dict_to_params(getattr(torch.nn, source)(6, 10, 2).state_dict())
    expected = str(torch_error.value).replace("weight_ih", "weight_ih_l0")
    layer_fn = {"RNN_TANH": F.rnn_tanh, "LSTM": F.lstm, "GRU": F.gru}[mode]
    layer_name = {"RNN_TANH": "RNN", "LSTM": "LSTM", "GRU": "GRU"}[mode]
    _raises(
        RuntimeError, re.escape(f"{layer_name}: {expected}"), layer_fn, layer, jnp.ones((3, 2, 6))
    )


def test_projected_lstm_without_weight_hr_is_named():
    """An LSTM state dict with a projection but no ``weight_hr_l0`` names the missing key."""
    from jaxrnn import functional as F

    params = jaxrnn.state_dict_to_params(torch.nn.LSTM(3, 20, proj_size=5).state_dict())
    del params["weight_hr_l0"]
    _raises(
        ValueError,
        "LSTM: missing parameter weight_hr_l0: weight_hh_l0 \\(80, 5\\)",
        F.lstm,
        params,
        jnp.ones((2, 1, 3)),
    )


def test_raw_cells_check_their_structure():
    """``lstm_cell(p, x, hx)`` with one array as ``hx`` would unpack it along the batch axis:
    refused, as torch's ``'hx' must be tuple``; missing weights are named."""
    from jaxrnn import functional as F

    p = jaxrnn.LSTMCell(3, 4, rngs=nnx.Rngs(0)).torch_params()
    with pytest.raises(TypeError, match=r"LSTM cell: hx must be a tuple \(h, c\)"):
        F.lstm_cell(p, jnp.ones((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="GRU cell: params must hold weight_ih and weight_hh"):
        F.gru_cell({"weight_ih": np.zeros((12, 3))}, jnp.ones((2, 3)), jnp.zeros((2, 4)))
    gru = jaxrnn.GRUCell(3, 4, rngs=nnx.Rngs(0)).torch_params()
    with pytest.raises(
        TypeError, match="GRU cell: hx must be an array .* got None; .*cell_forward"
    ):
        F.gru_cell(gru, jnp.ones((2, 3)), None)  # failed inside opt_einsum, naming nothing
    h, c = F.lstm_cell(p, jnp.ones((2, 3)), (jnp.zeros((2, 4)), jnp.zeros((2, 4))))
    assert h.shape == c.shape == (2, 4)
    t = torch.nn.LSTMCell(3, 4)
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in p.items()})
    th, tc = t(torch.ones(2, 3), (torch.zeros(2, 4), torch.zeros(2, 4)))
    np.testing.assert_allclose(h, th.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(c, tc.detach().numpy(), atol=1e-6)


def test_functional_dropout_rate_is_checked_as_torchs():
    from jaxrnn import functional as F

    x = jnp.ones((4, 4))
    for rate in (-0.5, 1.5):
        with pytest.raises(ValueError) as theirs:
            torch.nn.functional.dropout(torch.ones(4, 4), rate)
        assert "dropout probability has to be between 0 and 1, but got" in str(theirs.value)
        with pytest.raises(ValueError, match=f"has to be between 0 and 1, but got {rate}"):
            F.dropout_layer(jax.random.key(0), x, rate)
        params = jaxrnn.GRU(4, 4, 2, rngs=nnx.Rngs(0)).torch_params()
        with pytest.raises(ValueError, match=f"GRU: dropout probability .* got {rate}"):
            F.gru(params, x[:, None], dropout=rate, training=True, dropout_key=jax.random.key(0))
    # not a number: refused where dropout acts (it raised a bare TypeError from a comparison),
    # ignored by one layer, whose rate torch's functional layers never read either
    with pytest.raises(ValueError, match="GRU: dropout probability .* got None"):
        F.gru(params, x[:, None], dropout=None, training=True, dropout_key=jax.random.key(0))
    one = jaxrnn.GRU(4, 4, rngs=nnx.Rngs(0)).torch_params()
    out, _ = F.gru(one, x[:, None], dropout=None, training=True)
    np.testing.assert_array_equal(out, F.gru(one, x[:, None])[0])


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_one_bias_alone_is_reported_missing(mode):
    """torch always has both biases; with only ``bias_hh`` (or only ``bias_ih``) the layer and the
    cell refuse the tree instead of computing with half a bias (the fused path and the scan would
    even disagree on which half)."""
    from jaxrnn import functional as F

    cls = {"RNN_TANH": "RNN", "LSTM": "LSTM", "GRU": "GRU"}[mode]
    layer = getattr(jaxrnn, cls)(3, 4, rngs=nnx.Rngs(0)).torch_params()
    cell = getattr(jaxrnn, cls + "Cell")(3, 4, rngs=nnx.Rngs(0)).torch_params()
    for gone in ("ih", "hh"):
        only = {k: v for k, v in layer.items() if k != f"bias_{gone}_l0"}
        _raises(
            ValueError,
            f"missing parameters \\['bias_{gone}_l0'\\]",
            F.rnn,
            only,
            jnp.ones((2, 3)),
            mode=mode,
        )
        only = {k: v for k, v in cell.items() if k != f"bias_{gone}"}
        _raises(
            ValueError,
            f"missing parameters \\['bias_{gone}'\\]",
            F.cell_forward,
            mode,
            only,
            jnp.ones((2, 3)),
        )


def test_dropout_key_must_be_a_single_key():
    """A batch of keys is refused up front (not deep inside ``jax.random.split``)."""
    from jaxrnn import functional as F

    params = jaxrnn.LSTM(3, 4, num_layers=2, rngs=nnx.Rngs(0)).torch_params()
    x = jnp.ones((5, 2, 3))
    for keys in (
        jax.random.split(jax.random.key(0), 3),
        jax.random.split(jax.random.PRNGKey(0), 3),
    ):
        _raises(
            TypeError,
            "LSTM: dropout_key must be a JAX PRNG key",
            F.lstm,
            params,
            x,
            dropout=0.5,
            training=True,
            dropout_key=keys,
        )
    for key in (jax.random.key(0), jax.random.PRNGKey(0)):  # single keys are accepted
        F.lstm(params, x, dropout=0.5, training=True, dropout_key=key)


def _cases_against_torch():
    """(id, torch module, jaxrnn module, input shape, state shapes or None) of bad calls."""
    z = nnx.Rngs(0)
    layer = [
        ("rnn-h0-batch", "RNN", (10, 20, 2), (5, 3, 10), (2, 5, 20)),
        ("rnn-4d", "RNN", (10, 20), (5, 3, 1, 10), None),
        ("gru-4d", "GRU", (10, 20), (5, 3, 1, 10), None),
        ("gru-input-size", "GRU", (10, 20), (5, 3, 7), None),
        ("gru-unbatched-h0", "GRU", (10, 20, 2), (5, 10), (1, 20)),
        ("lstm-c0", "LSTM", (10, 20), (5, 3, 10), ((1, 3, 20), (1, 3, 21))),
        ("lstm-unbatched-c0", "LSTM", (10, 20, 2), (5, 10), ((2, 20), (2, 19))),
    ]
    cell_states = [
        ("hx-3d", (3, 10), (1, 3, 20)),
        ("input-3d", (2, 3, 10), None),
        ("input-1d-hx-2d", (10,), (1, 20)),
        ("input-2d-hx-1d", (3, 10), (20,)),
        ("input-size", (3, 7), (3, 20)),
        ("hx-batch", (3, 10), (4, 20)),
        ("hx-size", (3, 10), (3, 21)),
        ("unbatched-hx-size", (10,), (21,)),
    ]
    for name, mod, args, x, h in layer:
        yield name, getattr(torch.nn, mod)(*args), getattr(jaxrnn, mod)(*args, rngs=z), x, h
    for mod in ("RNNCell", "GRUCell", "LSTMCell"):
        for name, x, h in cell_states:
            if mod == "LSTMCell" and h is not None:
                h = (h, h)
            yield (
                f"{mod}-{name}",
                getattr(torch.nn, mod)(10, 20),
                getattr(jaxrnn, mod)(10, 20, rngs=z),
                x,
                h,
            )
    for name, h in [("c-3d", ((3, 20), (1, 3, 20))), ("c-batch", ((3, 20), (4, 20)))]:
        yield (
            f"LSTMCell-{name}",
            torch.nn.LSTMCell(10, 20),
            jaxrnn.LSTMCell(10, 20, rngs=z),
            (
                3,
                10,
            ),
            h,
        )


@pytest.mark.parametrize("case", list(_cases_against_torch()), ids=lambda c: c[0])
def test_call_errors_have_torchs_wording(case):
    """The oracle is torch's own error for the same bad call: its message must appear in ours
    (ours adds the module's name in front), and ours is a ValueError or TypeError that is also an
    instance of torch's type (where torch raises RuntimeError: TorchRuntimeError)."""
    _, tmod, jmod, x_shape, h_shape = case

    def states(make):
        if h_shape is None:
            return None
        if isinstance(h_shape[0], tuple):
            return tuple(make(s) for s in h_shape)
        return make(h_shape)

    with pytest.raises(Exception) as theirs:
        tmod(torch.zeros(x_shape), states(torch.zeros))
    with pytest.raises((ValueError, TypeError)) as ours:
        jmod(jnp.zeros(x_shape), states(jnp.zeros))
    assert str(theirs.value) in str(ours.value)
    assert str(ours.value).startswith(type(jmod).__name__ + ": ")
    assert isinstance(ours.value, type(theirs.value))


# bad calls with two faults: torch reports the first in its order (the ranks of the input and of
# hx, the input's dtype and size, hx's sizes, then the dtypes of the states and the sequence
# length; cells: ranks, sizes, then dtypes). (id, class, args, input, hx): (shape, kind) pairs.
TWO_FAULTS = [
    ("int-input-4d", "GRU", (3, 4), ((1, 1, 1, 3), "int"), None),
    ("input-size-and-hx-2d", "GRU", (3, 4), ((2, 1, 5), "float"), ((1, 4), "float")),
    ("zero-length-and-hx-size", "GRU", (3, 4), ((0, 1, 3), "float"), ((1, 2, 4), "float")),
    ("int-hx-of-another-size", "RNN", (3, 4), ((2, 1, 3), "float"), ((1, 2, 4), "int")),
    (
        "int-input-and-c0-2d",
        "LSTM",
        (3, 4),
        ((2, 1, 3), "int"),
        (((1, 1, 4), "float"), ((1, 4), "float")),
    ),
    ("cell-int-hx-batch", "GRUCell", (3, 4), ((2, 3), "float"), ((3, 4), "int")),
    ("cell-int-input-3d", "LSTMCell", (3, 4), ((1, 1, 3), "int"), None),
    ("cell-int-input-size", "RNNCell", (3, 4), ((2, 5), "int"), None),
]


@pytest.mark.parametrize("case", TWO_FAULTS, ids=lambda c: c[0])
def test_two_faults_give_torchs_first_error(case):
    _, cls, args, x, h = case

    def make(spec, zeros, kinds):
        if spec is None:
            return None
        if isinstance(spec[0][0], tuple):  # LSTM's (h_0, c_0)
            return tuple(make(s, zeros, kinds) for s in spec)
        return zeros(spec[0], dtype=kinds[spec[1]])

    kinds_t = {"int": torch.int64, "float": torch.float32}
    kinds_j = {"int": jnp.int32, "float": jnp.float32}
    with pytest.raises(Exception) as theirs:
        getattr(torch.nn, cls)(*args)(make(x, torch.zeros, kinds_t), make(h, torch.zeros, kinds_t))
    with pytest.raises((ValueError, TypeError)) as ours:
        getattr(jaxrnn, cls)(*args, rngs=nnx.Rngs(0))(
            make(x, jnp.zeros, kinds_j), make(h, jnp.zeros, kinds_j)
        )
    assert str(theirs.value) in str(ours.value)
    assert isinstance(ours.value, type(theirs.value))


@pytest.mark.parametrize(
    "mod,args,kwargs",
    [
        ("LSTM", (10, 0), {"dropout": 2}),  # torch checks dropout first
        ("LSTM", (10, 20), {"bias": 1}),
        ("GRU", (10, 20), {"batch_first": "yes"}),
        ("GRU", (10, 2.5), {}),
        ("RNN", (0, 4), {}),
        ("LSTM", (10, 20, 0), {}),
        ("LSTM", (10, 20), {"proj_size": 20}),
        ("LSTM", (10, 20), {"proj_size": -1}),
        ("GRU", (10, 20), {"proj_size": 0}),  # any proj_size keyword, as torch
        ("RNN", (10, 20), {"proj_size": 3}),
        ("RNNBase", ("FOO", 10, 20), {}),  # an unknown mode (was a KeyError)
        ("RNNBase", ("lstm", 10, 20), {}),
        ("RNNBase", ("FOO", 10, 20), {"proj_size": -1}),  # torch checks the sizes first
    ],
)
def test_constructor_errors_have_torchs_wording(mod, args, kwargs):
    with pytest.raises(Exception) as theirs:
        getattr(torch.nn, mod)(*args, **kwargs)
    with pytest.raises(type(theirs.value)) as ours:
        getattr(jaxrnn, mod)(*args, **kwargs, rngs=nnx.Rngs(0))
    assert str(theirs.value) in str(ours.value)
    assert str(ours.value).startswith(f"{mod}: ")


def test_bidirectional_takes_an_int_like_torch():
    """torch's constructor takes ``bidirectional=1`` (its forward then fails in the C++ binding);
    ours builds the two-direction layer and runs it as torch's ``bidirectional=True``."""
    assert torch.nn.GRU(3, 4, bidirectional=1).state_dict().keys()
    t = torch.nn.GRU(3, 4, bidirectional=True)
    m = jaxrnn.GRU(3, 4, bidirectional=1, rngs=nnx.Rngs(0))
    assert m.state_dict().keys() == t.state_dict().keys()
    m.load_state_dict(t.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(
        m(jnp.asarray(x))[0], t(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_integer_input_is_a_value_and_a_type_error():
    """torch raises ValueError ("input dtype ... does not match weight dtype"); the error is both,
    so code written against either catches it."""
    lstm = jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0))
    for exc in (ValueError, TypeError):
        with pytest.raises(exc, match="LSTM: input must have a floating-point dtype"):
            lstm(jnp.ones((5, 2, 3), jnp.int32))
    with pytest.raises(ValueError, match="does not match weight dtype"):
        torch.nn.LSTM(3, 4)(torch.ones(5, 2, 3, dtype=torch.int64))


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"unroll": 0}, "unroll should be a positive int or a bool, got 0"),
        ({"unroll": 1.5}, "unroll should be a positive int or a bool, got 1.5"),
        ({"remat": -1}, "remat should be a bool or a positive int"),
        ({"remat": "yes"}, "remat should be a bool or a positive int"),
    ],
)
def test_loop_options_are_checked(kwargs, pattern):
    """At construction (they were taken there and refused only at the first call), and at the
    call for an attribute set afterwards."""
    _raises(ValueError, "GRU: " + pattern, jaxrnn.GRU, 3, 4, rngs=nnx.Rngs(0), **kwargs)
    _raises(ValueError, "GRU: " + pattern, jrl.GRU, 3, 4, **kwargs)
    m = jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    for key, value in kwargs.items():
        setattr(m, key, value)
    _raises(ValueError, "GRU: " + pattern, m, jnp.ones((5, 2, 3)))


@pytest.mark.parametrize("bias", ["relu", 1, 0, False, None])
@pytest.mark.parametrize("cls", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cell_bias_is_taken_by_its_truth_as_torchs(cls, bias):
    """torch's cells check no argument: ``RNNCell(10, 20, 'relu')`` (torch's own test samples
    build it) has biases, ``bias=0`` none; the repr shows what was given, as torch's."""
    theirs = getattr(torch.nn, cls)(10, 20, bias)
    ours = getattr(jaxrnn, cls)(10, 20, bias, rngs=nnx.Rngs(0))
    assert repr(ours) == repr(theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    linen = getattr(jrl, cls)(10, 20, bias)
    variables = linen.init(jax.random.key(0), jnp.ones((2, 10)))
    assert sorted(variables["params"]) == sorted(n for n, _ in theirs.named_parameters())


def _torch_error(call):
    with pytest.raises(Exception) as theirs:
        call()
    return theirs.value


@pytest.mark.parametrize("shape", [(2, 20), (1, 2, 3, 20), (2, 4, 20)])
@pytest.mark.parametrize("cls", ["GRU", "RNN", "LSTM"])
def test_packed_input_checks_hx_size_only_as_torch(cls, shape):
    """With packed input torch checks ``hx`` for its size only: a 2-D or 4-D one is "Expected
    hidden size (2, 3, 20), got [2, 20]", where jaxrnn said "For batched 3-D input, hx should
    also be 3-D". torch's LSTM fails here by accident (an IndexError, or a broadcast error), so
    the LSTM's is the message of torch's size check for ``h_0``."""
    from torch.nn.utils.rnn import pack_padded_sequence

    packed = pack_padded_sequence(torch.randn(5, 3, 10), torch.tensor([5, 4, 2]))
    t = getattr(torch.nn, cls)(10, 20, 2)
    m = jaxrnn.from_torch(t)
    hx = torch.zeros(shape)
    if cls == "LSTM":
        with pytest.raises(RuntimeError) as ours:
            m(packed, (hx, hx))
        assert str(ours.value) == f"LSTM: Expected hidden[0] size (2, 3, 20), got {list(shape)}"
        return
    theirs = _torch_error(lambda: t(packed, hx))
    with pytest.raises(type(theirs)) as ours:
        m(packed, hx)
    assert str(ours.value) == f"{cls}: {theirs}"


@pytest.mark.parametrize(
    "name,torch_call,ours",
    [
        (
            "lstm-hx-3-tuple",
            lambda: torch.nn.LSTM(3, 4)(torch.zeros(2, 1, 3), (torch.zeros(1, 1, 4),) * 3),
            lambda: jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0))(
                jnp.zeros((2, 1, 3)), (jnp.zeros((1, 1, 4)),) * 3
            ),
        ),
        (
            "lstmcell-hx-1-tuple",
            lambda: torch.nn.LSTMCell(3, 4)(torch.zeros(1, 3), (torch.zeros(1, 4),)),
            lambda: jaxrnn.LSTMCell(3, 4, rngs=nnx.Rngs(0))(
                jnp.zeros((1, 3)), (jnp.zeros((1, 4)),)
            ),
        ),
        (
            "gru-int-hx",
            lambda: torch.nn.GRU(3, 4)(torch.zeros(2, 1, 3), torch.zeros(1, 1, 4).long()),
            lambda: jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))(
                jnp.zeros((2, 1, 3)), jnp.zeros((1, 1, 4), jnp.int32)
            ),
        ),
        (
            "grucell-int-input",
            lambda: torch.nn.GRUCell(3, 4)(torch.zeros(2, 3).long()),
            lambda: jaxrnn.GRUCell(3, 4, rngs=nnx.Rngs(0))(jnp.ones((2, 3), jnp.int32)),
        ),
        (
            "cell-negative-size",
            lambda: torch.nn.GRUCell(-1, 4),
            lambda: jaxrnn.GRUCell(-1, 4, rngs=nnx.Rngs(0)),
        ),
        (
            "rnncell-unknown-nonlinearity",  # in the forward, as torch's
            lambda: torch.nn.RNNCell(3, 4, nonlinearity="sigmoid")(torch.zeros(1, 3)),
            lambda: jaxrnn.RNNCell(3, 4, nonlinearity="sigmoid", rngs=nnx.Rngs(0))(
                jnp.zeros((1, 3))
            ),
        ),
    ],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_errors_where_torch_raises_runtime_error_are_runtime_errors(name, torch_call, ours):
    """Where torch raises ``RuntimeError``, ours is one too (and a ``ValueError`` or
    ``TypeError``), naming the module; torch's words appear where they are not an accident of
    its implementation (``mat1 and mat2 ...``, ``Trying to create tensor ...``)."""
    theirs = _torch_error(torch_call)
    assert type(theirs) is RuntimeError
    with pytest.raises(RuntimeError) as got:
        ours()
    assert isinstance(got.value, (ValueError, TypeError))
    assert re.match(r"(LSTM|LSTMCell|GRU|GRUCell|RNNCell): ", str(got.value))
    if "expects two hidden states" in str(theirs):
        assert str(theirs) in str(got.value)


def _linen_cell_call(nonlinearity, x, hx=None):
    variables = jrl.RNNCell(3, 4).init(jax.random.key(0), jnp.zeros((1, 3)))
    return jrl.RNNCell(3, 4, nonlinearity=nonlinearity).apply(variables, x, hx)


@pytest.mark.parametrize(
    "ours",
    [
        lambda n, x, hx=None: jaxrnn.RNNCell(3, 4, nonlinearity=n, rngs=nnx.Rngs(0))(x, hx),
        _linen_cell_call,
    ],
    ids=["nnx", "linen"],
)
@pytest.mark.parametrize(
    "shapes",
    [((2, 3), None), ((3,), (4,)), ((2, 2, 3), None), ((2, 3), (1, 2, 4)), ((2, 5), (2, 4))],
    ids=str,
)
def test_rnncell_unknown_nonlinearity_fails_in_the_call_as_torchs(ours, shapes):
    """Torch's RNNCell takes any nonlinearity at construction and refuses an unknown one in its
    forward, after the dimensions of input and hx and before their sizes; so do ours, with its
    words, and a known one set after construction is used, as torch reads the attribute."""
    x_shape, h_shape = shapes
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    hx = None if h_shape is None else np.zeros(h_shape, np.float32)
    theirs = _torch_error(
        lambda: torch.nn.RNNCell(3, 4, nonlinearity="sigmoid")(
            torch.from_numpy(x), None if hx is None else torch.from_numpy(hx)
        )
    )
    with pytest.raises(type(theirs)) as got:
        ours("sigmoid", jnp.asarray(x), None if hx is None else jnp.asarray(hx))
    assert str(got.value) == re.sub("^(RNNCell: )?", "RNNCell: ", str(theirs))


def test_rnncell_nonlinearity_is_read_in_the_call_as_torchs():
    t = torch.nn.RNNCell(3, 4, nonlinearity="sigmoid")
    ours = jaxrnn.from_torch(t)  # torch constructs it, so it converts
    t.nonlinearity = ours.nonlinearity = "relu"
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        ours(jnp.asarray(x)), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6
    )
    assert repr(jaxrnn.RNNCell(3, 4, nonlinearity="x", rngs=nnx.Rngs(0))) == repr(
        torch.nn.RNNCell(3, 4, nonlinearity="x")
    )


@pytest.mark.parametrize("rngs", [0, jax.random.key(0), None, "x"])
@pytest.mark.parametrize("cls,args", [("LSTM", (2, 4)), ("GRUCell", (2, 4))])
def test_rngs_must_be_nnx_rngs(cls, args, rngs):
    with pytest.raises(TypeError, match=f"{cls}: rngs must be nnx.Rngs"):
        getattr(jaxrnn, cls)(*args, rngs=rngs)


def test_rngs_without_params_stream_is_named():
    with pytest.raises(ValueError, match="GRU: the weights need a 'params' .* stream"):
        jaxrnn.GRU(2, 4, rngs=nnx.Rngs(dropout=0))


def test_refused_constructor_draws_nothing():
    """The rngs are checked before the weights are drawn: a refused constructor (no dropout
    stream for dropout between layers) leaves the caller's streams where they were."""
    rngs = nnx.Rngs(params=0)
    with pytest.raises(ValueError, match="LSTM: dropout=0.5 between layers needs a 'dropout'"):
        jaxrnn.LSTM(2, 4, 2, dropout=0.5, rngs=rngs)
    assert int(rngs.params.count[...]) == 0
    a = jaxrnn.LSTM(2, 4, 2, rngs=rngs)
    b = jaxrnn.LSTM(2, 4, 2, rngs=nnx.Rngs(params=0))
    np.testing.assert_array_equal(a.weight_hh_l1[...], b.weight_hh_l1[...])


@pytest.mark.parametrize("mode", [None, 1, "eval"])
def test_train_mode_must_be_a_bool_as_torchs(mode):
    theirs = _torch_error(lambda: torch.nn.LSTM(3, 4).train(mode))
    m = jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(type(theirs)) as ours:
        m.train(mode)
    assert str(theirs) in str(ours.value) and str(ours.value).startswith("LSTM.train: ")
    assert m.training  # unchanged


@pytest.mark.parametrize("bad", [None, "abc", {"a": 1}, "list", 0.5])
def test_load_state_dict_of_a_non_array_value_has_torchs_message(bad):
    sd = dict(torch.nn.LSTM(3, 4).state_dict())
    sd["bias_ih_l0"] = [0.0] * 16 if bad == "list" else bad  # a list of the right length too
    theirs = _torch_error(lambda: torch.nn.LSTM(3, 4).load_state_dict(sd))
    m = jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0))
    before = m.state_dict()
    for strict in (True, False):
        with pytest.raises(RuntimeError) as ours:
            m.load_state_dict(sd, strict=strict)
        assert str(theirs) in str(ours.value)
    for key, value in m.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("bad", [None, "abc", [("weight_ih", 1)]])
@pytest.mark.parametrize("cls", ["GRU", "LSTMCell"])
def test_load_state_dict_of_a_non_mapping_has_torchs_message(cls, bad):
    theirs = _torch_error(lambda: getattr(torch.nn, cls)(3, 4).load_state_dict(bad))
    m = getattr(jaxrnn, cls)(3, 4, rngs=nnx.Rngs(0))
    for strict in (True, False):
        with pytest.raises(type(theirs)) as ours:
            m.load_state_dict(bad, strict=strict)
        assert str(ours.value) == f"{cls}.load_state_dict: {theirs}"


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_load_state_dict_assign_refuses_integer_dtypes_as_torch(dtype):
    """assign=True keeps the checkpoint's dtype: torch refuses an integer or bool tensor (it
    cannot require gradients), and so does jaxrnn now (it made the bias int32 while param_dtype
    said float32), changing nothing."""
    theirs = torch.nn.GRU(3, 4)
    sd = theirs.state_dict()
    sd["bias_hh_l0"] = sd["bias_hh_l0"].to(dtype)
    with pytest.raises(RuntimeError, match='While copying the parameter named "bias_hh_l0"'):
        theirs.load_state_dict(sd, assign=True)
    ours = jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    before = {k: np.array(v) for k, v in ours.state_dict().items()}
    with pytest.raises(
        RuntimeError, match=r'While copying the parameter named "bias_hh_l0".*floating point'
    ):
        ours.load_state_dict(sd, assign=True)
    for key, value in ours.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize(
    "make",
    [
        lambda: jaxrnn.RNN(3, 4, precision="bogus", rngs=nnx.Rngs(0)),
        lambda: jaxrnn.GRUCell(3, 4, precision="bogus", rngs=nnx.Rngs(0)),
        lambda: jrl.LSTM(3, 4, precision="bogus"),
        lambda: jrl.LSTMCell(3, 4, precision="bogus"),
    ],
    ids=["layer", "cell", "linen-layer", "linen-cell"],
)
def test_precision_is_checked_at_construction(make):
    """An unknown precision was taken by the constructor and refused only at the first call,
    far from the mistake (unroll and remat: test_loop_options_are_checked)."""
    with pytest.raises(TypeError, match=r"^(LSTM|RNN|GRUCell|LSTMCell): precision must be"):
        make()


def test_in_place_writes_check_every_shape_first():
    """A parameter replaced with another shape (nnx.update with another configuration's state):
    load_state_dict and reset_parameters wrote the parameters before it, then failed in JAX's
    broadcasting. They refuse before writing anything; assign=True replaces them."""
    ours = jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    good = {k: np.array(v) + 1 for k, v in ours.state_dict().items()}
    ours.bias_hh_l0 = nnx.Param(jnp.zeros(5))
    before = {k: np.array(v) for k, v in ours.state_dict().items()}
    for call in (lambda: ours.load_state_dict(good), lambda: ours.reset_parameters(0)):
        with pytest.raises(
            ValueError, match=r"parameter bias_hh_l0 has shape \(5,\), but .*\(12,\)"
        ):
            call()
        for key, value in ours.state_dict().items():
            np.testing.assert_array_equal(value, before[key])
    ours.load_state_dict(good, assign=True)
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, good[key])


def test_load_state_dict_assign_warns_once_for_float64_without_x64():
    sd = torch.nn.LSTM(3, 4).double().state_dict()
    m = jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.load_state_dict(sd, assign=True)
    if jax.config.jax_enable_x64:
        assert m.weight_ih_l0[...].dtype == jnp.float64
    else:
        assert [str(w.message) for w in caught] == [
            "LSTM.load_state_dict: the state dict is float64 but jax_enable_x64 is off; its "
            "parameters are loaded as float32"
        ]
        assert m.weight_ih_l0[...].dtype == jnp.float32
    np.testing.assert_allclose(m.weight_ih_l0[...], sd["weight_ih_l0"].float().numpy())


@pytest.mark.parametrize("method", ["state_dict", "named_parameters"])
def test_prefix_errors_name_the_method(method):
    m = jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=f"GRU.{method}: prefix must be a str, got NoneType"):
        dict(getattr(m, method)(prefix=None))


@pytest.mark.parametrize("cls", ["GRU", "RNN"])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_linen_proj_size_on_gru_and_rnn_is_torchs_value_error(cls, proj_size):
    with pytest.raises(ValueError) as theirs:
        getattr(torch.nn, cls)(3, 4, proj_size=proj_size)
    with pytest.raises(ValueError) as ours:
        getattr(jrl, cls)(3, 4, proj_size=proj_size)
    assert str(ours.value) == f"{cls}: {theirs.value}"


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: jrl.LSTM(3, 4, dtype=jnp.int32), "LSTM: dtype must be a floating-point dtype"),
        (
            lambda: jrl.GRUCell(3, 4, param_dtype="int8"),
            "GRUCell: param_dtype must be a floating-point dtype",
        ),
    ],
)
def test_linen_dtypes_are_checked_at_construction_as_nnx(make, pattern):
    with pytest.raises(TypeError, match=pattern):
        make()


def test_linen_torch_dtype_warning_once_per_construction():
    x = jnp.ones((5, 2, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = jrl.LSTM(3, 4, dtype=torch.bfloat16)
        variables = m.init(jax.random.key(0), x)
        m.apply(variables, x)
        m.apply(variables, x)
    assert [str(w.message)[:40] for w in caught] == ["LSTM: dtype=torch.bfloat16 sets the comp"]


def test_linen_dropout_without_rng_names_the_module():
    m = jrl.LSTM(3, 4, 2, dropout=0.5)
    x = jnp.ones((5, 2, 3))
    variables = m.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="LSTM: dropout=0.5 with deterministic=False needs a"):
        m.apply(variables, x, deterministic=False)
    m.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})


def test_linen_dropout_falls_back_to_the_params_rng_as_flax_dropout():
    """Flax's make_rng('dropout') takes the 'params' stream where there is no 'dropout' one, so
    nn.Dropout runs in a training-mode init(key, x): so does a Linen layer (it refused)."""

    class Encoder(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Dropout(0.5, deterministic=not train)(x)
            return jrl.LSTM(3, 4, 2, dropout=0.5, deterministic=not train)(x)

    x = jnp.ones((5, 2, 3))
    variables = Encoder().init(jax.random.key(0), x, train=True)
    evaluated = Encoder().apply(variables, x, train=False)[0]
    trained = [
        Encoder().apply(variables, x, train=True, rngs={"params": jax.random.key(k)})[0]
        for k in (1, 1, 2)
    ]
    np.testing.assert_array_equal(trained[0], trained[1])
    assert not np.allclose(trained[0], evaluated) and not np.allclose(trained[0], trained[2])


@pytest.mark.parametrize(
    "torch_layer,ours",
    [
        (lambda: torch.nn.LSTM(3, 4, 2), lambda: jrl.LSTM(3, 4)),
        (lambda: torch.nn.GRU(3, 4, bidirectional=True), lambda: jrl.GRU(3, 4)),
        (lambda: torch.nn.RNN(3, 4), lambda: jrl.RNN(3, 4, bias=False)),
        (lambda: torch.nn.LSTM(3, 4, proj_size=2), lambda: jrl.LSTM(3, 4)),
        (lambda: torch.nn.GRUCell(3, 4), lambda: jrl.GRUCell(3, 4, bias=False)),
    ],
    ids=["num_layers", "bidirectional", "bias", "proj_size", "cell-bias"],
)
def test_linen_refuses_weights_of_another_configuration(torch_layer, ours):
    """Linen's apply reads the parameters a module declares and ignored the rest: torch weights
    of a 2-layer LSTM ran as one layer (outputs off by 0.3). They are refused, naming the keys
    that torch's load_state_dict names as unexpected."""
    theirs, module = torch_layer(), ours()
    params = {
        k: jnp.asarray(v) for k, v in jaxrnn.state_dict_to_params(theirs.state_dict()).items()
    }
    x = jnp.ones((5, 2, 3)) if "Cell" not in type(module).__name__ else jnp.ones((2, 3))
    own = module.init(jax.random.key(0), x)["params"]
    mine = _like(module).state_dict()  # torch's unexpected keys (without its shape check)
    unexpected = [k for k in theirs.state_dict() if k not in mine]
    assert unexpected
    quoted = ", ".join(f'"{k}"' for k in unexpected)
    extra = {k: v for k, v in params.items() if k not in own}  # the shared ones: Flax checks
    with pytest.raises(ValueError, match=re.escape(f"Unexpected key(s) in params: {quoted};")):
        module.apply({"params": {**own, **extra}}, x)


def test_linen_layer_and_cell_may_share_a_scope():
    """Under nn.share_scope an encoder layer and a decoder cell keep their parameters in one
    flat dict (their names differ): neither takes the other's for weights of another
    configuration. The outputs are torch's."""

    class EncoderDecoder(nn.Module):
        @nn.compact
        def __call__(self, x):
            encoder, decoder = jrl.LSTM(3, 4), jrl.LSTMCell(4, 4)
            nn.share_scope(self, encoder)
            nn.share_scope(self, decoder)
            y, (h, c) = encoder(x)
            return decoder(y[-1], (h[0], c[0]))

    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 2, 3)), jnp.float32)
    params = EncoderDecoder().init(jax.random.key(0), x)["params"]
    got = EncoderDecoder().apply({"params": params}, x)
    encoder, decoder = torch.nn.LSTM(3, 4), torch.nn.LSTMCell(4, 4)
    for module in (encoder, decoder):
        module.load_state_dict(
            {k: torch.tensor(np.asarray(params[k])) for k in module.state_dict()}
        )
    with torch.no_grad():
        y, (h, c) = encoder(torch.tensor(np.asarray(x)))
        want = decoder(y[-1], (h[0], c[0]))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-6)


def _like(module):
    """The torch module of ``module``'s configuration."""
    if "Cell" in type(module).__name__:
        return getattr(torch.nn, type(module).__name__)(3, 4, bias=module.bias)
    kwargs = dict(
        num_layers=module.num_layers, bias=module.bias, bidirectional=module.bidirectional
    )
    return getattr(torch.nn, type(module).__name__)(3, 4, **kwargs)


def test_to_linen_without_a_dropout_rng_says_how_linen_gives_one():
    lin = nnx.bridge.to_linen(jaxrnn.LSTM, 4, 6, 2, dropout=0.5)
    x = jnp.ones((5, 3, 4))
    with pytest.raises(ValueError, match=r"to_linen: init\(\{'params': key, 'dropout': key2\}"):
        lin.init(jax.random.key(0), x)
    lin.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)  # as it says


def test_linen_cells_have_torchs_mode():
    assert [jrl.GRUCell(3, 4).mode, jrl.LSTMCell(3, 4).mode] == ["GRU", "LSTM"]
    assert jrl.RNNCell(3, 4, nonlinearity="relu").mode == "RNN_RELU"


def test_to_torch_of_a_linen_module_says_where_its_weights_are():
    with pytest.raises(TypeError, match=r"got jaxrnn.linen.LSTM \(a Linen module holds no"):
        jaxrnn.to_torch(jrl.LSTM(3, 4))


@pytest.mark.parametrize("proj_size", [2.5, "2", None, True])
def test_linen_lstm_checks_proj_sizes_type_as_the_nnx_twin(proj_size):
    with pytest.raises(TypeError) as nnx_error:
        jaxrnn.LSTM(3, 4, proj_size=proj_size, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError) as linen_error:
        jrl.LSTM(3, 4, proj_size=proj_size)
    assert str(linen_error.value) == str(nnx_error.value)
    assert str(linen_error.value).startswith("LSTM: proj_size should be of type int")


def test_rnncell_mode_follows_its_nonlinearity():
    """The call reads ``nonlinearity`` (as torch's); ``mode`` says what the call will run, and
    ``None`` for a nonlinearity the call refuses."""
    cell = jaxrnn.RNNCell(3, 4, nonlinearity="sigmoid", rngs=nnx.Rngs(0))
    assert cell.mode is None and jrl.RNNCell(3, 4, nonlinearity="sigmoid").mode is None
    cell.nonlinearity = "relu"
    assert cell.mode == "RNN_RELU" == jrl.RNNCell(3, 4, nonlinearity="relu").mode
    assert jaxrnn.LSTMCell(3, 4, rngs=nnx.Rngs(0)).mode == "LSTM"
