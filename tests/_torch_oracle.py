"""Shared helpers for tests that use PyTorch as the oracle (same weights, same inputs)."""

from __future__ import annotations

import numpy as np
import torch

TORCH_CLASSES = {
    "RNN_TANH": torch.nn.RNN,
    "RNN_RELU": torch.nn.RNN,
    "LSTM": torch.nn.LSTM,
    "GRU": torch.nn.GRU,
}
CELL_CLASSES = {
    "RNN_TANH": torch.nn.RNNCell,
    "RNN_RELU": torch.nn.RNNCell,
    "LSTM": torch.nn.LSTMCell,
    "GRU": torch.nn.GRUCell,
}


def torch_layer(mode, input_size, hidden_size, *, seed=0, dtype=torch.float32, **kwargs):
    """A seeded torch layer of ``mode`` with torch's default init."""
    torch.manual_seed(seed)
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    return TORCH_CLASSES[mode](input_size, hidden_size, **kwargs).to(dtype)


def torch_cell(mode, input_size, hidden_size, *, seed=0, bias=True):
    torch.manual_seed(seed)
    kwargs = {"bias": bias}
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    return CELL_CLASSES[mode](input_size, hidden_size, **kwargs)


def loss_weights(rng, tree):
    """Random cotangent-like weights shaped like each array of ``tree`` (a nested tuple)."""
    if isinstance(tree, (tuple, list)):
        return type(tree)(loss_weights(rng, t) for t in tree)
    return rng.standard_normal(np.shape(tree)).astype(np.asarray(tree).dtype)


def weighted_sum(outs, weights, lib=np):
    """``sum(out * w)`` over matching nested tuples (numpy/jax/torch agnostic)."""
    if isinstance(outs, (tuple, list)):
        return sum(weighted_sum(o, w, lib) for o, w in zip(outs, weights))
    if isinstance(outs, torch.Tensor):
        return (outs * torch.from_numpy(weights)).sum()
    return (outs * weights).sum()


def torch_run(module, x, hx, weights):
    """Outputs and gradients (params, input, hx) of ``sum(weights * outputs)`` in torch."""
    xt = torch.tensor(x, requires_grad=True)
    hxt = None
    if hx is not None:
        hxt = (
            tuple(torch.tensor(h, requires_grad=True) for h in hx)
            if isinstance(hx, tuple)
            else torch.tensor(hx, requires_grad=True)
        )
    module.zero_grad()
    outs = module(xt, hxt)
    weighted_sum(outs, weights).backward()
    grads = {k: p.grad.numpy().copy() for k, p in module.named_parameters()}
    g_hx = None
    if hx is not None:
        g_hx = tuple(h.grad.numpy() for h in hxt) if isinstance(hxt, tuple) else hxt.grad.numpy()
    outs_np = tuple_map(lambda t: t.detach().numpy(), outs)
    return outs_np, grads, xt.grad.numpy(), g_hx


def tuple_map(f, tree):
    if isinstance(tree, (tuple, list)):
        return tuple(tuple_map(f, t) for t in tree)
    return f(tree)


def assert_close(actual, expected, atol=1e-5, rtol=1e-5, what=""):
    """Compare nested tuples/dicts of arrays."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), (what, sorted(actual), sorted(expected))
        for k in expected:
            assert_close(actual[k], expected[k], atol, rtol, f"{what}[{k}]")
        return
    if isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected), what
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, atol, rtol, f"{what}[{i}]")
        return
    a = np.asarray(actual)
    assert a.shape == np.shape(expected), f"{what}: shape {a.shape} != {np.shape(expected)}"
    np.testing.assert_allclose(a, expected, atol=atol, rtol=rtol, err_msg=what)
