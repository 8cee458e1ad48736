"""jaxrnn.interop: jaxrnn cells inside Flax's RNN/Bidirectional, and Flax <-> torch weights.

Oracles: Flax's own cells (same converted weights, same inputs), PyTorch's cells (weights loaded
from the converted dict) and jaxrnn's own multi-layer layers (same weights as the adapted cell).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _torch_oracle import assert_close, torch_cell
from flax import nnx

import jaxrnn
from jaxrnn import interop
from jaxrnn import linen as jrl

B, IN, H, T = 3, 4, 5, 6
BIAS_INIT = nn.initializers.normal(0.5)  # Flax's default is zeros, which would hide bias bugs


# torch runs on one thread: see tests/conftest.py


FLAX_CELLS = [
    ("nnx", "LSTMCell"),
    ("nnx", "OptimizedLSTMCell"),
    ("nnx", "GRUCell"),
    ("nnx", "SimpleCell"),
    ("linen", "LSTMCell"),
    ("linen", "OptimizedLSTMCell"),
    ("linen", "GRUCell"),
    ("linen", "SimpleCell"),
]
MODE = {"LSTMCell": "LSTM", "OptimizedLSTMCell": "LSTM", "GRUCell": "GRU", "SimpleCell": "RNN_TANH"}


def _flax_cell(front, name, **kwargs):
    """A Flax cell and a function ``f(carry, x) -> (carry, y)`` running it."""
    if front == "nnx":
        cell = getattr(nnx, name)(IN, H, bias_init=BIAS_INIT, rngs=nnx.Rngs(0), **kwargs)
        return cell, None, cell
    cell = getattr(nn, name)(H, bias_init=BIAS_INIT, **kwargs)
    carry = cell.initialize_carry(jax.random.key(0), (B, IN))
    variables = cell.init(jax.random.key(1), carry, jnp.zeros((B, IN)))
    return cell, variables, lambda c, x: cell.apply(variables, c, x)


def _random_carry(rng, mode, shape=(B, H)):
    """A random Flax-ordered carry: ``h``, or ``(c, h)`` for LSTM."""
    draw = lambda: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return (draw(), draw()) if mode == "LSTM" else draw()


def _torch_hx(mode, carry):
    if mode == "LSTM":
        c, h = carry
        return (torch.from_numpy(h), torch.from_numpy(c))
    return torch.from_numpy(carry)


# ---------------------------------------------------------------------------------------------
# Flax -> jaxrnn/torch


@pytest.mark.parametrize("front,name", FLAX_CELLS)
def test_from_flax_matches_flax_and_torch(front, name):
    rng = np.random.default_rng(0)
    mode = MODE[name]
    cell, variables, run_flax = _flax_cell(front, name)
    x = rng.standard_normal((B, IN)).astype(np.float32)
    carry = _random_carry(rng, mode)
    flax_carry, flax_y = run_flax(carry, x)

    params = interop.from_flax(cell, variables)
    assert interop.flax_cell_mode(cell) == mode
    assert set(params) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    # jaxrnn, through the adapter so the carry order is Flax's
    ours = interop.cell_from_flax(cell, variables)
    carry_j, y_j = interop.as_flax_cell(ours)(carry, x)
    assert_close(y_j, flax_y, what="jaxrnn y")
    assert_close(carry_j, flax_carry, what="jaxrnn carry")
    # ... and on to PyTorch
    tcell = torch_cell(mode, IN, H)
    tcell.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    with torch.no_grad():
        t_out = tcell(torch.from_numpy(x), _torch_hx(mode, carry))
    if mode == "LSTM":
        assert_close(t_out[0].numpy(), flax_carry[1], what="torch h")
        assert_close(t_out[1].numpy(), flax_carry[0], what="torch c")
    else:
        assert_close(t_out.numpy(), flax_y, what="torch h")


@pytest.mark.parametrize("front,name", FLAX_CELLS)
def test_torch_to_flax_matches_torch(front, name):
    """torch weights with both biases non-zero -> Flax cell computes torch's function."""
    rng = np.random.default_rng(1)
    mode = MODE[name]
    tcell = torch_cell(mode, IN, H, seed=3)
    if front == "nnx" and name == "GRUCell":
        with torch.no_grad():
            tcell.bias_hh[2 * H :] = 0  # the one case that has to be zero (see below)
    cell, variables, _ = _flax_cell(front, name)
    out = interop.to_flax(tcell.state_dict(), cell)
    if front == "nnx":
        assert out is cell
        run = cell
    else:
        assert jax.tree.structure(out) == jax.tree.structure(dict(variables["params"]))
        run = lambda c, x: cell.apply({"params": out}, c, x)  # noqa: E731
    x = rng.standard_normal((B, IN)).astype(np.float32)
    carry = _random_carry(rng, mode)
    (new_carry, y) = run(carry, x)
    with torch.no_grad():
        t_out = tcell(torch.from_numpy(x), _torch_hx(mode, carry))
    if mode == "LSTM":
        assert_close(new_carry, (t_out[1].numpy(), t_out[0].numpy()), what="(c, h)")
    else:
        assert_close(y, t_out.numpy(), what="h")


@pytest.mark.parametrize("front", ["nnx", "linen"])
def test_round_trip_folds_biases(front):
    """torch -> Flax -> torch: same function; the LSTM biases come back folded into bias_hh."""
    tcell = torch_cell("LSTM", IN, H, seed=4)
    cell, _, _ = _flax_cell(front, "LSTMCell")
    flax_params = interop.to_flax(tcell.state_dict(), cell)
    back = interop.from_flax(cell, None if front == "nnx" else {"params": flax_params})
    sd = {k: v.numpy() for k, v in tcell.state_dict().items()}
    np.testing.assert_array_equal(back["weight_ih"], sd["weight_ih"])
    np.testing.assert_array_equal(back["weight_hh"], sd["weight_hh"])
    np.testing.assert_array_equal(back["bias_ih"], np.zeros_like(sd["bias_ih"]))
    assert_close(back["bias_hh"], sd["bias_ih"] + sd["bias_hh"], atol=1e-7, rtol=1e-7)


def test_linen_gru_keeps_b_hn_exactly():
    """linen GRUCell has b_hn: torch -> linen -> torch keeps b_hn and folds only b_hr, b_hz."""
    tcell = torch_cell("GRU", IN, H, seed=5)
    cell = nn.GRUCell(H)
    back = interop.from_flax(cell, interop.to_flax(tcell.state_dict(), cell))
    b_ih, b_hh = tcell.bias_ih.detach().numpy(), tcell.bias_hh.detach().numpy()
    np.testing.assert_array_equal(back["bias_hh"][2 * H :], b_hh[2 * H :])
    np.testing.assert_array_equal(back["bias_hh"][: 2 * H], 0)
    np.testing.assert_array_equal(back["bias_ih"][2 * H :], b_ih[2 * H :])
    assert_close(back["bias_ih"][: 2 * H], b_ih[: 2 * H] + b_hh[: 2 * H], atol=1e-7, rtol=1e-7)


def test_nnx_gru_rejects_nonzero_b_hn():
    tcell = torch_cell("GRU", IN, H, seed=6)
    cell = nnx.GRUCell(IN, H, rngs=nnx.Rngs(0))
    before = np.asarray(cell.dense_i.kernel[...]).copy()
    with pytest.raises(ValueError, match=r"nnx.GRUCell has no b_hn.*bias_hh\[2\*H:\]"):
        interop.to_flax(tcell.state_dict(), cell)
    np.testing.assert_array_equal(cell.dense_i.kernel[...], before)  # nothing written


@pytest.mark.parametrize("front", ["nnx", "linen"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("residual", [False, True])
def test_simple_cell_variants(front, activation, residual):
    """SimpleCell(activation_fn=relu) is RNNCell(nonlinearity='relu'); residual adds IN to W_hh."""
    rng = np.random.default_rng(2)
    fn = jnp.tanh if activation == "tanh" else jax.nn.relu
    cell, variables, run_flax = _flax_cell(front, "SimpleCell", activation_fn=fn, residual=residual)
    mode = "RNN_TANH" if activation == "tanh" else "RNN_RELU"
    assert interop.flax_cell_mode(cell) == mode
    x = rng.standard_normal((B, IN)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32)
    _, y = run_flax(h, x)
    params = interop.from_flax(cell, variables)
    tcell = torch_cell(mode, IN, H)
    tcell.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    with torch.no_grad():
        assert_close(tcell(torch.from_numpy(x), torch.from_numpy(h)).numpy(), y)
    # and back: torch weights into the residual/relu cell
    tcell2 = torch_cell(mode, IN, H, seed=7)
    out = interop.to_flax(tcell2.state_dict(), cell)
    run = cell if front == "nnx" else (lambda c, x: cell.apply({"params": out}, c, x))
    with torch.no_grad():
        want = tcell2(torch.from_numpy(x), torch.from_numpy(h)).numpy()
    assert_close(run(h, x)[1], want)


def test_suffix_assembles_layer_params():
    """Two Flax cells -> one bidirectional jaxrnn layer -> torch.nn.GRU, outputs equal."""
    rng = np.random.default_rng(3)
    fwd = nnx.GRUCell(IN, H, bias_init=BIAS_INIT, rngs=nnx.Rngs(1))
    bwd = nnx.GRUCell(IN, H, bias_init=BIAS_INIT, rngs=nnx.Rngs(2))
    params = {
        **interop.from_flax(fwd, suffix="_l0"),
        **interop.from_flax(bwd, suffix="_l0_reverse"),
    }
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    flax_out = nnx.Bidirectional(nnx.RNN(fwd), nnx.RNN(bwd))(x)
    tgru = torch.nn.GRU(IN, H, batch_first=True, bidirectional=True)
    tgru.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    with torch.no_grad():
        t_out, _ = tgru(torch.from_numpy(x))
    assert_close(flax_out, t_out.numpy())
    back = nnx.GRUCell(IN, H, rngs=nnx.Rngs(9))
    interop.to_flax(params, back, suffix="_l0_reverse")
    np.testing.assert_array_equal(back.dense_h.kernel[...], bwd.dense_h.kernel[...])


def test_conversion_errors():
    lstm = nnx.LSTMCell(IN, H, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="Flax's built-in cells.*got Dense"):
        interop.from_flax(nn.Dense(3))
    with pytest.raises(TypeError, match="pass its params"):
        interop.from_flax(nn.GRUCell(H))
    with pytest.raises(ValueError, match="gate_fn must be sigmoid.*'relu'"):
        interop.from_flax(nnx.LSTMCell(IN, H, gate_fn=jax.nn.relu, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="activation_fn must be tanh or relu.*'gelu'"):
        interop.flax_cell_mode(nn.SimpleCell(H, activation_fn=jax.nn.gelu))
    proj = torch.nn.LSTM(IN, H, proj_size=2)
    with pytest.raises(ValueError, match="projection"):
        interop.to_flax(proj.state_dict(), lstm, suffix="_l0")
    with pytest.raises(ValueError, match=r"weight_ih has shape \(28, 4\), expected \(20, 4\)"):
        interop.to_flax(torch.nn.LSTMCell(IN, 7).state_dict(), lstm)
    with pytest.raises(ValueError, match="in_features is 4"):
        interop.to_flax(torch.nn.LSTMCell(3, H).state_dict(), lstm)
    with pytest.raises(ValueError, match="missing parameters"):
        interop.to_flax({"weight_ih": np.zeros((4 * H, IN))}, lstm)
    with pytest.raises(TypeError, match="expected a jaxrnn NNX cell"):
        interop.FlaxCellAdapter(jaxrnn.LSTM(IN, H, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match="expected a jaxrnn.linen cell"):
        interop.LinenCellAdapter(nn.GRUCell(H))


def test_bias_free_torch_cell_and_dtype():
    """bias=False torch cells convert with zero Flax biases; the weights' dtype is kept."""
    rng = np.random.default_rng(4)
    tcell = torch_cell("GRU", IN, H, bias=False).double()
    cell = nn.GRUCell(H, param_dtype=jnp.float64)
    p = interop.to_flax(tcell.state_dict(), cell)
    assert p["hn"]["bias"].dtype == np.float64 and not p["hn"]["bias"].any()
    back = interop.from_flax(cell, p)
    assert back["weight_ih"].dtype == np.float64
    x, h = rng.standard_normal((B, IN)), rng.standard_normal((B, H))
    with torch.no_grad():
        want = tcell(torch.from_numpy(x), torch.from_numpy(h)).numpy()
    tcell_b = torch.nn.GRUCell(IN, H).double()
    tcell_b.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})
    with torch.no_grad():
        assert_close(tcell_b(torch.from_numpy(x), torch.from_numpy(h)).numpy(), want, 1e-12, 1e-12)


# ---------------------------------------------------------------------------------------------
# adapters inside Flax's RNN / Bidirectional, against jaxrnn's own layers


LAYERS = {"LSTM": jaxrnn.LSTM, "GRU": jaxrnn.GRU, "RNN_TANH": jaxrnn.RNN}
CELLS = {"LSTM": jaxrnn.LSTMCell, "GRU": jaxrnn.GRUCell, "RNN_TANH": jaxrnn.RNNCell}


def _layer_from_cells(mode, cells, bidirectional=False):
    layer = LAYERS[mode](IN, H, batch_first=True, bidirectional=bidirectional, rngs=nnx.Rngs(5))
    sd = {}
    for cell, sfx in zip(cells, ("_l0", "_l0_reverse"), strict=False):
        sd.update({k + sfx: v for k, v in cell.torch_params().items()})
    layer.load_state_dict(sd)
    return layer


def _to_flax_carry(mode, state, index=0):
    """jaxrnn's ``h_n`` (or ``(h_n, c_n)``) slice ``index`` in Flax's carry order."""
    if mode == "LSTM":
        return (state[1][index], state[0][index])
    return state[index]


@pytest.mark.parametrize("mode", ["LSTM", "RNN_TANH"])
def test_nnx_rnn_adapter_matches_layer(mode):
    rng = np.random.default_rng(5)
    cell = CELLS[mode](IN, H, rngs=nnx.Rngs(1))
    rnn = nnx.RNN(interop.FlaxCellAdapter(cell), return_carry=True)
    layer = _layer_from_cells(mode, [cell])
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    carry0 = _random_carry(rng, mode)
    carry, out = rnn(x, initial_carry=carry0)
    hx = (carry0[1][None], carry0[0][None]) if mode == "LSTM" else carry0[None]
    want_out, want_state = layer(x, hx)
    assert_close(out, want_out, what="output")
    assert_close(carry, _to_flax_carry(mode, want_state), what="carry")

    # seq_lengths: final carry at each sequence's own end, outputs equal on valid steps
    lengths = np.array([T, 2, 4])
    carry, out = rnn(x, seq_lengths=jnp.asarray(lengths))
    want_out, want_state = layer(x, seq_lengths=lengths)
    valid = (np.arange(T)[None, :] < lengths[:, None])[..., None]
    assert_close(np.where(valid, out, 0), want_out, what="output (valid steps)")
    assert_close(carry, _to_flax_carry(mode, want_state), what="carry (seq_lengths)")

    # gradients through Flax's scan equal gradients through jaxrnn's driver
    def loss_adapter(c, x):
        return jnp.sum(nnx.RNN(interop.FlaxCellAdapter(c))(x) ** 2)

    g_cell = nnx.grad(loss_adapter)(cell, x)
    g_layer = nnx.grad(lambda m, x: jnp.sum(m(x)[0] ** 2))(layer, x)
    for k, v in g_cell.items():
        assert_close(v[...], g_layer[k + "_l0"][...], what=f"grad {k}")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_nnx_bidirectional_adapter_matches_layer(mode):
    rng = np.random.default_rng(6)
    fwd, bwd = CELLS[mode](IN, H, rngs=nnx.Rngs(1)), CELLS[mode](IN, H, rngs=nnx.Rngs(2))
    bi = nnx.Bidirectional(
        nnx.RNN(interop.as_flax_cell(fwd)), nnx.RNN(interop.as_flax_cell(bwd)), return_carry=True
    )
    layer = _layer_from_cells(mode, [fwd, bwd], bidirectional=True)
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    lengths = np.array([3, T, 1])
    (c_f, c_b), out = bi(x, seq_lengths=jnp.asarray(lengths))
    want_out, want_state = layer(x, seq_lengths=lengths)
    valid = (np.arange(T)[None, :] < lengths[:, None])[..., None]
    assert_close(np.where(valid, out, 0), want_out, what="output")
    assert_close(c_f, _to_flax_carry(mode, want_state, 0), what="forward carry")
    assert_close(c_b, _to_flax_carry(mode, want_state, 1), what="backward carry")


def test_adapter_extra_batch_axes_and_unbatched():
    rng = np.random.default_rng(7)
    cell = jaxrnn.LSTMCell(IN, H, rngs=nnx.Rngs(1))
    rnn = nnx.RNN(interop.as_flax_cell(cell))
    x = rng.standard_normal((2, B, T, IN)).astype(np.float32)
    out = rnn(x)
    assert_close(out, rnn(x.reshape(2 * B, T, IN)).reshape(2, B, T, H))
    assert_close(rnn(x[0, 0]), out[0, 0], what="unbatched (T, H_in)")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_linen_rnn_and_bidirectional_adapter_match_layer(mode):
    rng = np.random.default_rng(8)
    cls = {"LSTM": jrl.LSTMCell, "GRU": jrl.GRUCell}[mode]
    layer_cls = {"LSTM": jrl.LSTM, "GRU": jrl.GRU}[mode]
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    rnn = nn.RNN(interop.LinenCellAdapter(cls(IN, H)), return_carry=True)
    variables = rnn.init(jax.random.key(0), x)
    carry, out = rnn.apply(variables, x)
    cell_params = variables["params"]["cell"]["cell"]
    layer = layer_cls(IN, H, batch_first=True)
    want_out, want_state = layer.apply(
        {"params": {k + "_l0": v for k, v in cell_params.items()}}, x
    )
    assert_close(out, want_out, what="output")
    assert_close(carry, _to_flax_carry(mode, want_state), what="carry")

    bi = nn.Bidirectional(
        nn.RNN(interop.LinenCellAdapter(cls(IN, H))), nn.RNN(interop.LinenCellAdapter(cls(IN, H)))
    )
    variables = bi.init(jax.random.key(1), x)
    lengths = np.array([2, 5, T])
    out = bi.apply(variables, x, seq_lengths=jnp.asarray(lengths))
    p = variables["params"]
    layer = layer_cls(IN, H, batch_first=True, bidirectional=True)
    lp = {k + "_l0": v for k, v in p["forward_rnn"]["cell"]["cell"].items()}
    lp.update({k + "_l0_reverse": v for k, v in p["backward_rnn"]["cell"]["cell"].items()})
    want_out, _ = layer.apply({"params": lp}, x, seq_lengths=lengths)
    valid = (np.arange(T)[None, :] < lengths[:, None])[..., None]
    assert_close(np.where(valid, out, 0), want_out, what="bidirectional output")


def test_initialize_carry_dtype_and_order():
    cell = jaxrnn.LSTMCell(IN, H, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    c, h = interop.as_flax_cell(cell).initialize_carry((2, B, IN))
    assert c.shape == h.shape == (2, B, H) and c.dtype == jnp.bfloat16
    ones = interop.as_flax_cell(cell).initialize_carry(
        (B, IN), rngs=nnx.Rngs(carry=0), carry_init=nn.initializers.ones
    )
    assert_close(ones, (np.ones((B, H)), np.ones((B, H))))
    # bfloat16 parameters, float32 input: computes in float32, the bfloat16 carry scans as is
    mixed = nnx.RNN(
        interop.as_flax_cell(jaxrnn.GRUCell(IN, H, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16)),
        return_carry=True,
    )
    carry, y = mixed(jnp.ones((B, T, IN), jnp.float32))
    assert carry.dtype == jnp.bfloat16 and y.dtype == jnp.float32
    lin = interop.as_flax_cell(jrl.GRUCell(IN, H, param_dtype=jnp.float16))
    assert lin.initialize_carry(jax.random.key(0), (IN,)).dtype == jnp.float16
    assert lin.initialize_carry(jax.random.key(0), (IN,)).shape == (H,)


def test_checks_name_the_users_call():
    """Kind and argument checks run once, before any work, and name the function called."""
    lstm = nnx.LSTMCell(IN, H, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"to_flax\(nnx.LSTMCell\): torch_params must be a mapping"):
        interop.to_flax([("weight_ih", np.zeros((4 * H, IN)))], lstm)
    with pytest.raises(TypeError, match=r"^cell_from_flax: expected one of Flax's built-in cells"):
        interop.cell_from_flax(nn.Dense(3))
    with pytest.raises(TypeError, match=r"cell_from_flax\(linen.GRUCell\): .*pass its params"):
        interop.cell_from_flax(nn.GRUCell(H))
    with pytest.raises(TypeError, match=r"from_flax\(linen.GRUCell\): params must be a mapping"):
        interop.from_flax(nn.GRUCell(H), [("params", {})])
    with pytest.raises(ValueError, match=r"from_flax\(linen.GRUCell\): missing parameters"):
        interop.from_flax(nn.GRUCell(H), {"params": {}})
    with pytest.raises(ValueError, match="initialize_carry: carry_init needs rngs"):
        interop.as_flax_cell(jaxrnn.GRUCell(IN, H, rngs=nnx.Rngs(0))).initialize_carry(
            (B, IN), carry_init=nn.initializers.ones
        )


def test_as_flax_cell_names_itself_and_tells_flax_cells_apart():
    """Flax's own ``LSTMCell`` is the likely mistake: the message gives its module."""
    for cell, shown in (
        (nnx.LSTMCell(2, 3, rngs=nnx.Rngs(0)), "flax.nnx.nn.recurrent.LSTMCell; a Flax cell"),
        (jrl.LSTM(2, 3), "jaxrnn.linen.LSTM"),
    ):
        with pytest.raises(TypeError) as info:
            interop.as_flax_cell(cell)
        message = str(info.value)
        assert message.startswith("as_flax_cell: expected a jaxrnn NNX or jaxrnn.linen cell")
        assert shown in message
