"""PyTorch's own RNN and packed-sequence tests, ported to jaxrnn (third-party suites are ported
this way, so these hold jaxrnn to what torch's tests expect of torch).

Sources (pytorch/pytorch):
  test/test_nn.py                 (TestNN and TestNNDeviceType RNN tests)
  test/nn/test_packed_sequence.py (PackedSequenceTest)

Each test keeps torch's intent: same inputs, same expected values (torch is run as the oracle on
the same weights where values matter), same exception types and message fragments.
Skipped (device/CUDA/cuDNN/weight_norm/torch internals) tests are listed at the bottom.
"""

from __future__ import annotations

import itertools
import pickle
import random
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.utils.rnn as rnn_utils
from flax import nnx

import jaxrnn
from jaxrnn.utils import rnn as jrnn

JMOD = {
    "RNN": jaxrnn.RNN,
    "GRU": jaxrnn.GRU,
    "LSTM": jaxrnn.LSTM,
    "RNNCell": jaxrnn.RNNCell,
    "GRUCell": jaxrnn.GRUCell,
    "LSTMCell": jaxrnn.LSTMCell,
}


def R(seed=0):
    return nnx.Rngs(seed)


def npy(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def J(t):
    return jnp.asarray(npy(t))


def close(a, b, rtol=1.3e-6, atol=1e-5):
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y, rtol, atol)
        return
    a, b = npy(a), npy(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def not_close(a, b):
    a, b = npy(a), npy(b)
    return a.shape != b.shape or not np.allclose(a, b, rtol=1.3e-6, atol=1e-5)


def pure(state):
    return {k: np.asarray(v) for k, v in nnx.to_pure_dict(state).items()}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


# ---------------------------------------------------------------------------------------------
# test/test_nn.py :: TestNN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["RNNCell", "GRUCell"])
@pytest.mark.parametrize("bias", [True, False])
def test_RNN_cell(name, bias):
    # torch: smoke test, 6 steps then hx.sum().backward(). Here: same, values and grads vs torch.
    input = torch.randn(3, 10)
    hx0 = torch.randn(3, 20)
    tcell = getattr(tnn, name)(10, 20, bias=bias)
    jcell = jaxrnn.from_torch(tcell)

    hx = hx0
    for _ in range(6):
        hx = tcell(input, hx)
    hx.sum().backward()

    def run(cell):
        h = J(hx0)
        for _ in range(6):
            h = cell(J(input), h)
        return h

    close(run(jcell), hx)
    grads = pure(nnx.grad(lambda c: run(c).sum())(jcell))
    for k, p in tcell.named_parameters():
        close(grads[k], p.grad, atol=1e-4, rtol=1e-4)


def test_RNN_cell_forward_zero_hidden_size():
    input = jnp.asarray(np.random.randn(3, 10), jnp.float32)
    hx = jnp.zeros((3, 0))
    for cell in (
        jaxrnn.RNNCell(10, 0, nonlinearity="relu", rngs=R()),
        jaxrnn.RNNCell(10, 0, nonlinearity="tanh", rngs=R()),
        jaxrnn.GRUCell(10, 0, rngs=R()),
    ):
        assert cell(input, hx).shape == (3, 0)


def test_RNN_cell_no_broadcasting():
    def test(cell_name, input, hx, input_size, hidden_size):
        cell = JMOD[cell_name](input_size, hidden_size, rngs=R())
        with pytest.raises(RuntimeError):
            cell(input, hx)

    def test_all(hidden_size, bad_hx, good_hx, input_size, input):
        test("RNNCell", input, bad_hx, input_size, hidden_size)
        test("GRUCell", input, bad_hx, input_size, hidden_size)
        test("LSTMCell", input, (bad_hx, good_hx), input_size, hidden_size)
        test("LSTMCell", input, (good_hx, bad_hx), input_size, hidden_size)

    hidden_size, input_size = 20, 10
    input = J(torch.randn(3, input_size))
    bad_hx = J(torch.randn(1, hidden_size))
    good_hx = J(torch.randn(3, hidden_size))
    test_all(hidden_size, bad_hx, good_hx, input_size, input)  # batch broadcasting
    bad_hx = J(torch.randn(3, 1))
    test_all(hidden_size, bad_hx, good_hx, input_size, input)  # hidden_size broadcasting
    bad_input = J(torch.randn(3, 1))
    test_all(hidden_size, good_hx, good_hx, input_size, bad_input)  # input_size broadcasting


@pytest.mark.parametrize("bias", [True, False])
def test_LSTM_cell(bias):
    input, hx0, cx0 = torch.randn(3, 10), torch.randn(3, 20), torch.randn(3, 20)
    tl = tnn.LSTMCell(10, 20, bias=bias)
    jl = jaxrnn.from_torch(tl)
    hx, cx = hx0, cx0
    for _ in range(6):
        hx, cx = tl(input, (hx, cx))
    (hx + cx).sum().backward()

    def run(cell):
        h, c = J(hx0), J(cx0)
        for _ in range(6):
            h, c = cell(J(input), (h, c))
        return h, c

    close(run(jl), (hx, cx))
    grads = pure(nnx.grad(lambda m: sum(x.sum() for x in run(m)))(jl))
    for k, p in tl.named_parameters():
        close(grads[k], p.grad, atol=1e-4, rtol=1e-4)


def test_LSTM_cell_forward_input_size():
    input, hx, cx = J(torch.randn(3, 11)), J(torch.randn(3, 20)), J(torch.randn(3, 20))
    lstm = jaxrnn.LSTMCell(10, 20, rngs=R())
    with pytest.raises(RuntimeError):
        lstm(input, (hx, cx))


def test_LSTM_cell_forward_hidden_size():
    input, hx, cx = J(torch.randn(3, 10)), J(torch.randn(3, 21)), J(torch.randn(3, 20))
    lstm = jaxrnn.LSTMCell(10, 20, rngs=R())
    with pytest.raises(RuntimeError):
        lstm(input, (hx, cx))
    with pytest.raises(RuntimeError):
        lstm(input, (cx, hx))


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_RNN_input_size_zero(mode):
    input = jnp.zeros((5, 0, 3))
    rnn = JMOD[mode](input_size=3, hidden_size=4, rngs=R())
    outs = rnn(input)
    assert outs[0].shape == (5, 0, 4)
    # backward must not hard-error
    g = jax.grad(lambda x: rnn(x)[0].sum())(input)
    assert g.shape == input.shape
    # and torch agrees on the shape
    assert getattr(tnn, mode)(3, 4)(torch.zeros(5, 0, 3))[0].shape == (5, 0, 4)


@pytest.mark.parametrize("mode", ["RNN", "GRU", "LSTM"])
def test_rnn_args_check(mode):
    input_size, hidden_size, num_layers, batch_size, seq_len, num_directions = 3, 5, 2, 4, 6, 1
    bad_size = 7
    correct_input_shape = (seq_len, batch_size, input_size)
    correct_hidden_shape = (num_layers * num_directions, batch_size, hidden_size)

    def update_shape(shape, dim, new):
        s = list(shape)
        s[dim] = new
        return tuple(s)

    def get_inputs(input_shape, hidden_shape):
        input = J(torch.randn(input_shape))
        hidden = J(torch.randn(hidden_shape))
        if mode != "LSTM":
            return [(input, hidden)]
        if hidden_shape == correct_hidden_shape:
            return [(input, (hidden, hidden))]
        good = J(torch.randn(correct_hidden_shape))
        return [(input, (hidden, good)), (input, (good, hidden))]

    def test(input_shape, hidden_shape):
        for input, hidden in get_inputs(input_shape, hidden_shape):
            model = JMOD[mode](input_size, hidden_size, num_layers, rngs=R())
            with pytest.raises(RuntimeError):
                model(input, hidden)

    test(update_shape(correct_input_shape, 1, bad_size), correct_hidden_shape)
    test(correct_input_shape, update_shape(correct_hidden_shape, 1, bad_size))
    test(update_shape(correct_input_shape, 2, bad_size), correct_hidden_shape)
    test(correct_input_shape, update_shape(correct_hidden_shape, 2, bad_size))
    test(correct_input_shape, update_shape(correct_hidden_shape, 0, bad_size))


def test_projections_lstm_args_check():
    input_size, hidden_size, proj_size, num_layers, batch_size, seq_len = 3, 5, 2, 2, 4, 6
    bad_size = 7
    ci = (seq_len, batch_size, input_size)
    ch = (num_layers, batch_size, proj_size)
    cc = (num_layers, batch_size, hidden_size)

    def up(shape, dim, new):
        s = list(shape)
        s[dim] = new
        return tuple(s)

    def test(i, h, c):
        model = jaxrnn.LSTM(input_size, hidden_size, num_layers, proj_size=proj_size, rngs=R())
        with pytest.raises(RuntimeError):
            model(J(torch.randn(i)), (J(torch.randn(h)), J(torch.randn(c))))

    test(up(ci, 1, bad_size), ch, cc)
    test(ci, up(ch, 1, bad_size), up(cc, 1, bad_size))
    test(up(ci, 2, bad_size), ch, cc)
    test(ci, up(ch, 2, bad_size), up(cc, 2, bad_size))
    test(ci, up(ch, 0, bad_size), up(cc, 0, bad_size))
    test(ci, up(ch, 0, hidden_size), cc)
    test(ci, up(ch, 0, bad_size), cc)
    test(ci, ch, up(cc, 0, bad_size))


@pytest.mark.parametrize("mode", ["RNN", "GRU", "LSTM"])
def test_rnn_initial_hidden_state(mode):
    trnn = getattr(tnn, mode)(30, 20, 2)
    rnn = jaxrnn.from_torch(trnn)
    input = torch.randn(10, 32, 30)
    hidden = jnp.zeros((2, 32, 20))
    if mode == "LSTM":
        hidden = (hidden, hidden)
    output1, hidden1 = rnn(J(input), hidden)
    output2, hidden2 = rnn(J(input))
    close(output1, output2)
    close(hidden1, hidden2)
    tout, th = trnn(input)
    close(output2, tout)
    close(hidden2, th)


@pytest.mark.parametrize("bidir", [False, True])
def test_projections_lstm_initial_hidden_state(bidir):
    trnn = tnn.LSTM(30, 20, 2, bidirectional=bidir, proj_size=10)
    rnn = jaxrnn.from_torch(trnn)
    num_dirs = 2 if bidir else 1
    input = torch.randn(10, 32, 30)
    hidden = (jnp.zeros((2 * num_dirs, 32, 10)), jnp.zeros((2 * num_dirs, 32, 20)))
    output1, hidden1 = rnn(J(input), hidden)
    output2, hidden2 = rnn(J(input))
    close(output1, output2)
    close(hidden1, hidden2)
    tout, th = trnn(input)
    close(output2, tout)
    close(hidden2, th)


@pytest.mark.parametrize("mode", ["RNN", "GRU"])
def test_projections_errors_on_gru_and_rnn(mode):
    error_msg = "proj_size argument is only supported for LSTM, not RNN or GRU"
    with pytest.raises(ValueError, match=re.escape(error_msg)):
        getattr(tnn, mode)(30, 20, 2, proj_size=10)
    with pytest.raises(ValueError, match=re.escape(error_msg)):
        JMOD[mode](30, 20, 2, proj_size=10, rngs=R())


def test_cudnn_forward_exception():
    # not CUDA-gated in torch: runs on CPU
    rnns = [
        (
            jaxrnn.LSTM(10, 20, batch_first=True, rngs=R()),
            (jnp.zeros((1, 2, 19)), jnp.zeros((1, 2, 19))),
        ),
        (
            jaxrnn.LSTM(10, 20, batch_first=True, proj_size=10, rngs=R()),
            (jnp.zeros((1, 2, 19)), jnp.zeros((1, 2, 19))),
        ),
        (jaxrnn.GRU(10, 20, batch_first=True, rngs=R()), jnp.zeros((1, 2, 19))),
        (jaxrnn.RNN(10, 20, batch_first=True, rngs=R()), jnp.zeros((1, 2, 19))),
    ]
    x_wrong = J(torch.randn(2, 3, 3))
    x_right = J(torch.randn(2, 3, 10))
    for rnn, hidden in rnns:
        with pytest.raises(RuntimeError, match="Expected hidden.*size.*got"):
            rnn(x_right, hidden)
        with pytest.raises(
            RuntimeError, match=re.escape("input.size(-1) must be equal to input_size")
        ):
            rnn(x_wrong)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_error_RNN_seq_len_zero(mode, bidirectional):
    # cuDNN-gated in torch, but the loop also covers CPU
    input = jnp.ones((0, 10, 5))
    rnn = JMOD[mode](5, 6, bidirectional=bidirectional, rngs=R())
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0 in RNN"):
        rnn(input)


@pytest.mark.parametrize("p", [0, 0.276, 0.731, 1])
@pytest.mark.parametrize("train", [True, False])
def test_RNN_dropout(p, train):
    # cuDNN-gated in torch (checks CPU too); @set_default_dtype(torch.double) -> float64
    with jax.enable_x64(True):
        rnn = jaxrnn.RNN(
            10,
            1000,
            2,
            bias=False,
            dropout=p,
            nonlinearity="relu",
            rngs=nnx.Rngs(0),
            param_dtype=jnp.float64,
        )
        rnn.train() if train else rnn.eval()
        rnn.load_state_dict({k: np.ones(v.shape) for k, v in rnn.state_dict().items()})
        input = jnp.ones((1, 1, 10), jnp.float64)
        hx = jnp.zeros((2, 1, 1000), jnp.float64)
        output, hy = rnn(input, hx)
        output, hy = np.asarray(output), np.asarray(hy)
    assert output.min() == output.max()
    output_val = output[0][0][0]
    if p == 0 or not train:
        assert output_val == 10000
    elif p == 1:
        assert output_val == 0
    else:
        assert 8000 < output_val < 12000
        denorm_mod = (output_val * (1 - p)) % 10
        assert min(denorm_mod, 10 - denorm_mod) < 1e-2
    assert hy[0].min() == hy[0].max()
    assert hy[1].min() == hy[1].max()
    assert hy[0][0][0] == 10
    assert hy[1][0][0] == output_val


@pytest.mark.parametrize("p", [0, 0.1234])
@pytest.mark.parametrize("train", [True, False])
def test_RNN_dropout_state(p, train):
    rnn = jaxrnn.RNN(100, 100, 2, bias=False, dropout=p, nonlinearity="relu", rngs=R())
    rnn.train() if train else rnn.eval()
    input = J(torch.rand(1, 1, 100))
    hx = J(torch.rand(2, 1, 100))
    output1, hy1 = rnn(input, hx)
    output2, hy2 = rnn(input, hx)
    # torch.save(rnn) / torch.load -> pickle round trip of the module
    rnn2 = pickle.loads(pickle.dumps(rnn))
    rnn2.flatten_parameters()
    output3, hy3 = rnn2(input, hx)
    if p == 0 or not train:
        close(output1, output2)
        close(output1, output3)
        close(hy1, hy2)
        close(hy1, hy3)
    else:
        assert not_close(output1, output2)
        assert not_close(output1, output3)
        assert not_close(hy1, hy2)
        assert not_close(hy1, hy3)


@pytest.mark.parametrize("train", [True, False])
def test_RNN_change_dropout(train):
    # @set_default_dtype(torch.double)
    with jax.enable_x64(True):
        rnn = jaxrnn.RNN(
            100, 100, 2, dropout=0, nonlinearity="relu", rngs=R(), param_dtype=jnp.float64
        )
        input = jnp.asarray(np.random.rand(3, 2, 100))
        rnn.train() if train else rnn.eval()
        prev_output = None
        for p in (0, 0.5, 0, 0.7, 0.2, 1, 0.2, 0):
            rnn.dropout = p
            output1, hy1 = rnn(input)
            output2, hy2 = rnn(input)
            if p == 0 or p == 1 or not train:
                close(output1, output2)
                close(hy1, hy2)
            else:
                assert not_close(output1, output2), p
                assert not_close(hy1, hy2), p
            if prev_output is not None:
                if not train:
                    close(output1, prev_output)
                    close(output2, prev_output)
                else:
                    assert not_close(output1, prev_output), p
                    assert not_close(output2, prev_output), p
            prev_output = output1


def test_RNN_nonlinearity():
    rnn = jaxrnn.RNN(1, 10, rngs=R())
    assert rnn.nonlinearity == "tanh"
    rnn = jaxrnn.RNN(1, 10, nonlinearity="relu", rngs=R())
    assert rnn.nonlinearity == "relu"
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        jaxrnn.RNN(1, 10, nonlinearity="garbage", rngs=R())


def test_RNN_nonlinearity_passed_as_arg():
    rnn = jaxrnn.RNN(2, 3, 1, "relu", rngs=R())
    assert rnn.nonlinearity == "relu"
    # and it is actually used: compare with torch
    trnn = tnn.RNN(2, 3, 1, "relu")
    x = torch.randn(4, 2, 2)
    close(jaxrnn.from_torch(trnn)(J(x))[0], trnn(x)[0])


# ---------------------------------------------------------------------------------------------
# test/test_nn.py :: TestNNDeviceType (CPU-meaningful ones)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_rnn_retain_variables(mode):
    # @dtypes(torch.double): grads of output[0].sum(), 5 times, must be identical (+ vs torch)
    trnn = getattr(tnn, mode)(10, 20, num_layers=2).double()
    inp_t = torch.randn(5, 6, 10, dtype=torch.double, requires_grad=True)
    trnn(inp_t)[0].sum().backward()
    with jax.enable_x64(True):
        rnn = jaxrnn.from_torch(trnn)
        inp = J(inp_t)
        g = nnx.grad(lambda m, x: m(x)[0].sum(), argnums=(0, 1))
        grads = g(rnn, inp)
        first = (pure(grads[0]), np.asarray(grads[1]))
        for _ in range(4):
            again = g(rnn, inp)
            again = (pure(again[0]), np.asarray(again[1]))
            np.testing.assert_array_equal(first[1], again[1])
            for k in first[0]:
                np.testing.assert_array_equal(first[0][k], again[0][k])
    close(first[1], inp_t.grad, rtol=1e-10, atol=1e-10)
    for k, p in trnn.named_parameters():
        close(first[0][k], p.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
@pytest.mark.parametrize("bias", [True, False])
def test_LSTM_GRU_grad_and_gradgrad(name, bias):
    # test_LSTM_grad_and_gradgrad / test_GRU_grad_and_gradgrad: gradcheck + gradgradcheck wrt
    # the input (float64) of the flattened outputs
    from jax.test_util import check_grads

    hsize = 4
    inp_t = torch.rand(1, 3, hsize, dtype=torch.double, requires_grad=True)
    tmod = getattr(tnn, name)(hsize, hsize, bias=bias).double()
    with jax.enable_x64(True):
        mod = jaxrnn.from_torch(tmod)

        def flat(x):
            out, h = mod(x)
            return (out,) + (tuple(h) if isinstance(h, tuple) else (h,))

        inp = J(inp_t)
        check_grads(flat, (inp,), order=2, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)
        # first derivative vs torch
        ct = tuple(jnp.ones_like(o) for o in flat(inp))
        _, vjp = jax.vjp(flat, inp)
        (gx,) = vjp(ct)
    touts = tmod(inp_t)
    touts = (touts[0],) + (tuple(touts[1]) if isinstance(touts[1], tuple) else (touts[1],))
    (tgx,) = torch.autograd.grad([o.sum() for o in touts], inp_t)
    close(gx, tgx, rtol=1e-10, atol=1e-10)


def test_lstmcell_backward_only_one_output_grad():
    # onlyCUDA in torch, but device-agnostic in intent (issue #11872)
    tl = tnn.LSTMCell(2, 3).double()
    s_t = torch.randn(1, 2, dtype=torch.double, requires_grad=True)
    with jax.enable_x64(True):
        jl = jaxrnn.from_torch(tl)
        s = J(s_t)
        for i in range(2):
            g = jax.grad(lambda x, i=i: jl(x)[i].sum())(s)
            assert not (np.abs(np.asarray(g)).sum() == 0)
            (tg,) = torch.autograd.grad(tl(s_t)[i].sum(), s_t)
            close(g, tg, rtol=1e-10, atol=1e-10)


def test_LSTM_differentiable_backward_using_oneDNN():
    # onlyCPU: double backward through a 20-layer LSTM; torch (mkldnn off) as oracle
    batch, seq_len, input = 10, 12, 3
    tnet = tnn.LSTM(input, 3, 20, batch_first=True)
    x = torch.rand(batch, seq_len, input)
    x1 = x.clone().requires_grad_(True)
    torch._C._set_mkldnn_enabled(False)
    try:
        out1, _ = tnet(x1)
        der_out1 = torch.autograd.grad(
            out1, x1, grad_outputs=torch.ones_like(out1), retain_graph=True, create_graph=True
        )[0]
        der_out1.sum().backward(retain_graph=True)
    finally:
        torch._C._set_mkldnn_enabled(True)

    net = jaxrnn.from_torch(tnet)
    graphdef, state = nnx.split(net)

    def der_out(xx):
        m = nnx.merge(graphdef, state)
        return jax.grad(lambda z: m(z)[0].sum())(xx)

    xj = J(x)
    d = der_out(xj)
    gx = jax.grad(lambda z: der_out(z).sum())(xj)
    close(d, der_out1, rtol=1e-4, atol=1e-6)
    close(gx, x1.grad, rtol=1e-3, atol=1e-6)


def test_variable_sequence():
    # (old TestNN._test_variable_sequence(cuda=False))
    def pad(var, length):
        if var.shape[0] == length:
            return var
        return jnp.concatenate(
            [var, jnp.zeros((length - var.shape[0],) + var.shape[1:], var.dtype)]
        )

    lengths = [10, 10, 6, 2, 2, 1, 1]
    max_length = lengths[0]
    x_t = torch.randn(max_length, len(lengths), 3, requires_grad=True)
    tlstm = tnn.LSTM(3, 4, bidirectional=True, num_layers=2)
    lstm = jaxrnn.from_torch(tlstm)
    x = J(x_t)

    def separate(m, x):
        seq_outs, seq_hiddens = [], []
        for i, n in enumerate(lengths):
            out, hid = m(x[:n, i : i + 1])
            seq_outs.append(pad(out, max_length))
            seq_hiddens.append(hid)
        seq_out = jnp.concatenate(seq_outs, 1)
        seq_hidden = tuple(jnp.concatenate(h, 1) for h in zip(*seq_hiddens))
        return seq_out, seq_hidden

    def packed(m, x):
        packed = jrnn.pack_padded_sequence(x, lengths)
        packed_out, packed_hidden = m(packed)
        unpacked, unpacked_len = jrnn.pad_packed_sequence(packed_out)
        return unpacked, packed_hidden, unpacked_len

    seq_out, seq_hidden = separate(lstm, x)
    unpacked, packed_hidden, unpacked_len = packed(lstm, x)
    close(packed_hidden, seq_hidden)
    close(unpacked, seq_out)
    assert list(np.asarray(unpacked_len)) == lengths

    # torch oracle
    tp = rnn_utils.pack_padded_sequence(x_t, lengths)
    tout, thid = tlstm(tp)
    tunp, _ = rnn_utils.pad_packed_sequence(tout)
    close(unpacked, tunp)
    close(packed_hidden, thid)

    # backward: same input and parameter grads both ways
    gsep = nnx.grad(lambda m, x: separate(m, x)[0].sum(), argnums=(0, 1))(lstm, x)
    gpk = nnx.grad(lambda m, x: packed(m, x)[0].sum(), argnums=(0, 1))(lstm, x)
    close(gpk[1], gsep[1])
    a, b = pure(gpk[0]), pure(gsep[0])
    for k in a:
        close(a[k], b[k], atol=1e-5, rtol=1e-5)
    tunp.sum().backward()
    close(gpk[1], x_t.grad)


# ---------------------------------------------------------------------------------------------
# test/nn/test_packed_sequence.py :: PackedSequenceTest
# ---------------------------------------------------------------------------------------------

BATCH_SIZE, MAX_LENGTH = 5, 6
TYPES = {  # torch type name -> (torch ctor dtype, jnp dtype, cast method)
    "torch.DoubleTensor": (torch.double, jnp.float64, "double"),
    "torch.FloatTensor": (torch.float, jnp.float32, "float"),
    "torch.LongTensor": (torch.long, jnp.int64, "long"),
    "torch.IntTensor": (torch.int, jnp.int32, "int"),
    "torch.ShortTensor": (torch.short, jnp.int16, "short"),
    "torch.CharTensor": (torch.int8, jnp.int8, "char"),
    "torch.ByteTensor": (torch.uint8, jnp.uint8, "byte"),
}


def _ordered_sequence(tdtype):
    seqs = [torch.empty(random.randint(1, MAX_LENGTH), dtype=tdtype) for _ in range(BATCH_SIZE)]
    if tdtype == torch.uint8:
        seqs = [s.random_(0, 256) for s in seqs]
    else:
        seqs = [s.random_(-128, 128) for s in seqs]
    return sorted(seqs, key=len, reverse=True)


def _padded_sequence(tdtype):
    ordered = _ordered_sequence(tdtype)
    lengths = [len(i) for i in ordered]
    return rnn_utils.pad_sequence(ordered), lengths


def test_type_casts():
    # torch's LongTensor/DoubleTensor need x64 in JAX
    with jax.enable_x64(True):
        for tin, _, _ in TYPES.values():
            for expected_name, (_, jexp, cast_str) in TYPES.items():
                for enforce_sorted in [True, False]:
                    padded, lengths = _padded_sequence(tin)
                    packed = jrnn.pack_padded_sequence(
                        J(padded), lengths, enforce_sorted=enforce_sorted
                    )
                    masked = getattr(packed, cast_str)()
                    unpacked, lengths_out = jrnn.pad_packed_sequence(masked)
                    assert unpacked.dtype == jexp, (tin, expected_name, unpacked.dtype)


def test_wrong_order():
    a = jnp.ones((25, 300))
    b = jnp.ones((22, 300))
    b_a = jrnn.pad_sequence([b, a])
    with pytest.raises(RuntimeError):
        jrnn.pack_padded_sequence(b_a, [22, 25], enforce_sorted=True)


def test_pad_sequence_with_tensor_sequences():
    seq_tuple_input = jrnn.pad_sequence((jnp.array([[7, 6]]), jnp.array([[-7, -1]])))
    seq_tensor_input = jrnn.pad_sequence(jnp.array([[[7, 6]], [[-7, -1]]]))
    np.testing.assert_array_equal(seq_tuple_input, seq_tensor_input)
    assert seq_tuple_input.shape == (1, 2, 2)


def test_pad_sequence_with_non_iterable_sequences():
    msg = r"Expected iterable for input sequences, but got arg of type"
    with pytest.raises(RuntimeError, match=msg):
        jrnn.pad_sequence(5)


def test_total_length():
    padded_t, lengths = _padded_sequence(torch.float)
    padded = J(padded_t)
    max_length = max(lengths)
    packed = jrnn.pack_padded_sequence(padded, lengths)
    for total_length in (-1, 0, max_length - 1):
        for batch_first in (True, False):
            with pytest.raises(
                ValueError,
                match=r"Expected total_length to be at least the "
                r"length of the longest sequence in input",
            ):
                jrnn.pad_packed_sequence(packed, batch_first=batch_first, total_length=total_length)
    for batch_first in (True, False):
        no_extra_pad, _ = jrnn.pad_packed_sequence(packed, batch_first=batch_first)
        for delta in (0, 1, 8):
            total_length = max_length + delta
            unpacked, lengths_out = jrnn.pad_packed_sequence(
                packed, batch_first=batch_first, total_length=total_length
            )
            assert list(np.asarray(lengths_out)) == lengths
            assert unpacked.shape[1 if batch_first else 0] == total_length
            if delta == 0:
                ref = no_extra_pad
            elif batch_first:
                ref = jnp.concatenate([no_extra_pad, jnp.zeros((BATCH_SIZE, delta))], 1)
            else:
                ref = jnp.concatenate([no_extra_pad, jnp.zeros((delta, BATCH_SIZE))], 0)
            np.testing.assert_array_equal(unpacked, ref)


def test_to():
    cpu = jax.devices("cpu")[0]
    with jax.enable_x64(True):
        for enforce_sorted in (True, False):
            padded, lengths = _padded_sequence(torch.int)
            a = jrnn.pack_padded_sequence(J(padded), lengths, enforce_sorted=enforce_sorted).cpu()
            assert a is a.to(cpu)
            assert a is a.cpu()
            assert a is a.to(cpu, dtype=jnp.int32)
            b, c = a.long(), a.to(jnp.int64)
            for x, y in zip(b, c):
                if x is None:
                    assert y is None
                else:
                    np.testing.assert_array_equal(x, y)
                    assert np.asarray(x).dtype == np.asarray(y).dtype


def test_to_torch_style_device_string():
    # torch's literal spelling: a.to('cpu') / a.to('cpu', dtype=torch.int32)
    padded, lengths = _padded_sequence(torch.int)
    a = jrnn.pack_padded_sequence(J(padded), lengths)
    assert a is a.to("cpu")
    assert a is a.to("cpu", dtype=torch.int32)


def test_pad_sequence():
    a, b, c = jnp.array([1, 2, 3]), jnp.array([4, 5]), jnp.array([6])
    expected = np.array([[4, 5, 0], [1, 2, 3], [6, 0, 0]])
    np.testing.assert_array_equal(jrnn.pad_sequence([b, a, c], True), expected)
    np.testing.assert_array_equal(jrnn.pad_sequence([b, a, c]), expected.T)
    expected = np.array([[4, 5, 1], [1, 2, 3], [6, 1, 1]])
    np.testing.assert_array_equal(jrnn.pad_sequence([b, a, c], True, 1), expected)
    expected = np.array([[1, 2, 3], [4, 5, 0], [6, 0, 0]])
    np.testing.assert_array_equal(jrnn.pad_sequence([a, b, c], True), expected)

    maxlen = 9
    for num_dim in (0, 1, 2, 3):
        trailing = [4] * num_dim
        sequences = [
            np.random.rand(i * i, 5, *trailing).astype(np.float32) for i in range(1, maxlen + 1)
        ]
        random.shuffle(sequences)
        expected = np.stack(
            [
                np.concatenate(
                    [s, np.zeros((maxlen * maxlen - s.shape[0],) + s.shape[1:], s.dtype)]
                )
                for s in sequences
            ]
        )
        js = [jnp.asarray(s) for s in sequences]
        np.testing.assert_array_equal(jrnn.pad_sequence(js, True), expected)
        np.testing.assert_array_equal(jrnn.pad_sequence(js), np.swapaxes(expected, 0, 1))


def test_unpad_sequence():
    a, b, c = jnp.array([1, 2, 3]), jnp.array([4, 5]), jnp.array([6])
    sequences = [a, b, c]
    lengths = jnp.asarray([v.shape[0] for v in sequences])
    for batch_first in [True, False]:
        padded = jrnn.pad_sequence(sequences, batch_first=batch_first)
        unpadded = jrnn.unpad_sequence(padded, lengths, batch_first=batch_first)
        assert len(unpadded) == 3
        for x, y in zip(sequences, unpadded):
            np.testing.assert_array_equal(x, y)

    maxlen = 9
    for num_dim in (0, 1, 2, 3):
        trailing = [4] * num_dim
        sequences = [
            jnp.asarray(np.random.rand(i * i, 5, *trailing), jnp.float32)
            for i in range(1, maxlen + 1)
        ]
        random.shuffle(sequences)
        lengths = jnp.asarray([v.shape[0] for v in sequences])
        padded = jrnn.pad_sequence(sequences, batch_first=batch_first)
        unpadded = jrnn.unpad_sequence(padded, lengths, batch_first=batch_first)
        for x, y in zip(sequences, unpadded):
            np.testing.assert_array_equal(x, y)


def _assert_packed_equal(p, q):
    np.testing.assert_array_equal(p.data, q.data)
    np.testing.assert_array_equal(p.batch_sizes, q.batch_sizes)
    for x, y in ((p.sorted_indices, q.sorted_indices), (p.unsorted_indices, q.unsorted_indices)):
        if x is None or y is None:
            assert x is None and y is None
        else:
            np.testing.assert_array_equal(x, y)


def test_pack_sequence():
    def _compatibility_test(sequences, lengths, batch_first, enforce_sorted=False):
        padded = jrnn.pad_sequence(sequences, batch_first)
        packed = jrnn.pack_sequence(sequences, enforce_sorted)
        unpacked = jrnn.pad_packed_sequence(packed, batch_first)
        np.testing.assert_array_equal(padded, unpacked[0])
        pack_padded = jrnn.pack_padded_sequence(padded, lengths, batch_first, enforce_sorted)
        _assert_packed_equal(packed, pack_padded)

    a, b, c = jnp.array([1, 2, 3]), jnp.array([4, 5]), jnp.array([6])
    packed = jrnn.pack_sequence([a, b, c], enforce_sorted=False)
    expected = np.array([1, 4, 6, 2, 5, 3])
    assert list(packed.batch_sizes) == [3, 2, 1]
    np.testing.assert_array_equal(packed.data, expected)
    assert list(np.asarray(packed.sorted_indices)) == [0, 1, 2]
    assert list(np.asarray(packed.unsorted_indices)) == [0, 1, 2]

    pu = jrnn.pack_sequence([b, c, a], enforce_sorted=False)
    assert list(pu.batch_sizes) == [3, 2, 1]
    np.testing.assert_array_equal(pu.data, expected)
    assert list(np.asarray(pu.sorted_indices)) == [2, 0, 1]
    assert list(np.asarray(pu.unsorted_indices)) == [1, 2, 0]

    pe = jrnn.pack_sequence([a, b, c], enforce_sorted=True)
    assert list(pe.batch_sizes) == [3, 2, 1]
    np.testing.assert_array_equal(pe.data, expected)
    assert pe.sorted_indices is None
    assert pe.unsorted_indices is None

    with pytest.raises(RuntimeError, match="must be sorted in decreasing order"):
        jrnn.pack_sequence([b, c, a], enforce_sorted=True)
    with pytest.raises(RuntimeError, match="You can pass `enforce_sorted=False`"):
        jrnn.pack_sequence([b, c, a], enforce_sorted=True)

    maxlen = 9
    for num_dim in (0, 1, 2, 3):
        trailing = [4] * num_dim
        sequences, lengths = [], []
        for i in range(maxlen, 0, -1):
            lengths.append(i * i)
            sequences.append(jnp.asarray(np.random.rand(i * i, 5, *trailing), jnp.float32))
        unsorted = list(sequences)
        random.shuffle(unsorted)
        unsorted_lengths = [t.shape[0] for t in unsorted]
        for batch_first in (True, False):
            for enforce_sorted in (True, False):
                _compatibility_test(sequences, lengths, batch_first, enforce_sorted)
            _compatibility_test(unsorted, unsorted_lengths, batch_first)


def test_unpack_sequence():
    a, b, c = jnp.array([1, 2, 3]), jnp.array([4, 5]), jnp.array([6])
    sequences = [a, b, c]
    packed = jrnn.pack_sequence(sequences, enforce_sorted=False)
    unpacked = jrnn.unpack_sequence(packed)
    assert len(unpacked) == 3
    for x, y in zip(sequences, unpacked):
        np.testing.assert_array_equal(x, y)

    maxlen = 9
    for num_dim in (0, 1, 2, 3):
        trailing = [4] * num_dim
        sequences = [
            jnp.asarray(np.random.rand(i * i, 5, *trailing), jnp.float32)
            for i in range(1, maxlen + 1)
        ]
        random.shuffle(sequences)
        packed = jrnn.pack_sequence(sequences, enforce_sorted=False)
        unpacked = jrnn.unpack_sequence(packed)
        for x, y in zip(sequences, unpacked):
            np.testing.assert_array_equal(x, y)


def _generate_pack_case(sorted_lengths, should_shuffle):
    def pad(tensor, length):
        return torch.cat([tensor, tensor.new(length - tensor.size(0), *tensor.size()[1:]).zero_()])

    max_length = sorted_lengths[0]
    batch_sizes = [
        sum(map(bool, filter(lambda x: x >= i, sorted_lengths))) for i in range(1, max_length + 1)
    ]
    padded = torch.cat(
        [
            pad(i * 100 + torch.arange(1.0, 5 * n + 1).view(n, 1, 5), max_length)
            for i, n in enumerate(sorted_lengths, 1)
        ],
        1,
    )
    expected_data = [
        [torch.arange(1.0, 6) + (i + 1) * 100 + 5 * n for i in range(bs)]
        for n, bs in enumerate(batch_sizes)
    ]
    expected_data = torch.stack(list(itertools.chain.from_iterable(expected_data)), dim=0)
    if should_shuffle:
        permutation = list(range(len(sorted_lengths)))
        random.shuffle(permutation)
        unsorted_indices = torch.tensor(permutation)
        padded = padded.index_select(1, unsorted_indices)
        lengths = torch.tensor(sorted_lengths).index_select(0, unsorted_indices)
    else:
        unsorted_indices = None
        lengths = sorted_lengths
    return padded, lengths, expected_data, batch_sizes, unsorted_indices


@pytest.mark.parametrize(
    "case",
    [
        ([10, 8, 4, 2, 2, 2, 1], False),
        ([11, 10, 8, 6, 4, 3, 1], False),
        ([11, 10, 8, 6, 4, 3, 1], True),
    ],
)
@pytest.mark.parametrize("batch_first", [True, False])
def test_pack_padded_sequence(case, batch_first):
    sorted_lengths, should_shuffle = case
    padded_t, lengths_t, expected_data, batch_sizes, unsorted_indices = _generate_pack_case(
        sorted_lengths, should_shuffle
    )
    lengths = npy(lengths_t) if isinstance(lengths_t, torch.Tensor) else lengths_t
    padded = J(padded_t)

    def src_of(p):
        return jnp.swapaxes(p, 0, 1) if batch_first else p

    packed = jrnn.pack_padded_sequence(
        src_of(padded), lengths, batch_first=batch_first, enforce_sorted=not should_shuffle
    )
    np.testing.assert_array_equal(packed.data, npy(expected_data))
    assert list(packed.batch_sizes) == batch_sizes
    if unsorted_indices is None:
        assert packed.unsorted_indices is None
    else:
        np.testing.assert_array_equal(packed.unsorted_indices, npy(unsorted_indices))

    unpacked, unpacked_len = jrnn.pad_packed_sequence(packed, batch_first=batch_first)
    np.testing.assert_array_equal(unpacked, src_of(padded))
    np.testing.assert_array_equal(unpacked_len, np.asarray(lengths))

    # grad
    def f(p):
        pk = jrnn.pack_padded_sequence(
            src_of(p), lengths, batch_first=batch_first, enforce_sorted=not should_shuffle
        )
        return jrnn.pad_packed_sequence(pk, batch_first=batch_first)[0]

    out, vjp = jax.vjp(f, padded)
    grad_output = jnp.asarray(np.random.randn(*out.shape), out.dtype)
    (g,) = vjp(grad_output)
    go = np.asarray(jnp.swapaxes(grad_output, 0, 1) if batch_first else grad_output)
    g = np.asarray(g)
    for i, n in enumerate(np.asarray(lengths)):
        np.testing.assert_array_equal(g[:n, i], go[:n, i])
        if n < 10:
            assert np.abs(g[n:, i]).sum() == 0


def test_pack_padded_sequence_errors():
    with pytest.raises(RuntimeError, match="You can pass `enforce_sorted=False`"):
        jrnn.pack_padded_sequence(J(torch.randn(3, 3)), [1, 3, 2])
    with pytest.raises(RuntimeError, match="empty tensor"):
        jrnn.pack_padded_sequence(J(torch.randn(0, 0)), [])
    with pytest.raises(RuntimeError, match="empty tensor"):
        jrnn.pack_padded_sequence(J(torch.randn([0, 1, 10])), J(torch.randn([11, 14, 14, 2])), True)


# ---------------------------------------------------------------------------------------------
# Not ported (devices/CUDA/cuDNN/weight_norm/torch internals):
#   test_rnn_check_device, test_projections_lstm_check_device (multi-GPU),
#   test_pack_sequence_batch_sizes_throw (CUDA batch_sizes), test_device_mask (CUDA),
#   test_RNN_cpu_vs_cudnn_{no_,with_}dropout, test_RNN_cudnn_weight_norm,
#   test_partial_flat_weights, test_cudnn_weight_format, test_cudnn_weight_tying,
#   test_cudnn_rnn_dropout_states_device, test_save_lstm_compatibility (__setstate__ of
#   torch's __dict__), test_to_memory_format (Conv2d), test_to's CUDA half.
# ---------------------------------------------------------------------------------------------
