"""Training parity with PyTorch: the same model trained in torch and in JAX follows the same curve.

Embedding -> 2-layer bidirectional LSTM (or GRU) -> Linear, a per-step tagging loss, torch's
initial weights copied into jaxrnn, the same batches, and then >= 20 optimiser steps on each side
(``torch.optim.SGD`` vs ``optax.sgd``, ``torch.optim.Adam`` vs ``optax.adam``). The loss curves must
agree within 1e-4 relative at every step and every final weight must be close. The weights are the
sharp check: a 2 % error in the gradient of a single recurrent matrix moves the loss curve by far
less than 1e-4 in 25 steps but moves that matrix well outside the tolerance (tested below).

Both front-ends are covered: the NNX modules with ``nnx.Optimizer`` under ``nnx.jit``, and the
Linen modules with an optax state under ``jax.jit``. Variable-length batches run through
``seq_lengths=`` in JAX and through ``pack_padded_sequence`` in torch.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxrnn
from jaxrnn import linen as jrl

VOCAB, EMBED, HIDDEN, CLASSES = 11, 5, 7, 4
BATCH, LENGTH, STEPS = 6, 9, 25
LR = {"sgd": 1.0, "adam": 0.02}


def _batches(seed: int, variable: bool):
    """``STEPS`` batches of ``(tokens (N, L), labels (N, L), lengths (N,))``.

    Two fixed batches, alternated, so that the small model visibly fits them within ``STEPS``.
    The label of step ``t`` is the class of the token at ``t - 1``: it needs the recurrence.
    """
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(2):
        tokens = rng.integers(0, VOCAB, (BATCH, LENGTH))
        labels = np.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1) % CLASSES
        lengths = rng.integers(2, LENGTH + 1, BATCH) if variable else np.full(BATCH, LENGTH)
        lengths[0] = LENGTH  # pad_packed_sequence pads to the longest; keep it at LENGTH
        pool.append((tokens.astype(np.int32), labels.astype(np.int32), lengths.astype(np.int32)))
    return [pool[i % 2] for i in range(STEPS)]


# ----------------------------------------------------------------------------- torch reference


class TorchTagger(torch.nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, EMBED)
        cls = torch.nn.LSTM if mode == "LSTM" else torch.nn.GRU
        self.rnn = cls(
            EMBED, HIDDEN, num_layers=2, batch_first=True, bidirectional=True, dropout=0.0
        )
        self.head = torch.nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, tokens, lengths):
        x = self.embed(tokens)
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.rnn(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=LENGTH)
        return self.head(out)


def _torch_loss(logits, labels, lengths):
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).float()
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    return (ce * mask).sum() / mask.sum()


def _torch_train(model, opt_name, batches):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these models are tiny: extra threads only spin (25x the CPU time)
    try:
        return _torch_train_loop(model, opt_name, batches)
    finally:
        torch.set_num_threads(threads)


def _torch_train_loop(model, opt_name, batches):
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=LR["sgd"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=LR["adam"], betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for tokens, labels, lengths in batches:
        lengths_t = torch.from_numpy(lengths).long()
        logits = model(torch.from_numpy(tokens).long(), lengths_t)
        loss = _torch_loss(logits, torch.from_numpy(labels).long(), lengths_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


def _torch_model(mode: str, seed: int = 0) -> TorchTagger:
    torch.manual_seed(seed)
    return TorchTagger(mode)


def _optax(opt_name):
    if opt_name == "sgd":
        return optax.sgd(LR["sgd"])
    return optax.adam(LR["adam"], b1=0.9, b2=0.999, eps=1e-8)


def _jax_loss(logits, labels, lengths):
    mask = (jnp.arange(LENGTH)[None, :] < lengths[:, None]).astype(logits.dtype)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return (ce * mask).sum() / mask.sum()


# ----------------------------------------------------------------------------- NNX


class NNXTagger(nnx.Module):
    def __init__(self, mode: str, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, EMBED, rngs=rngs)
        cls = jaxrnn.LSTM if mode == "LSTM" else jaxrnn.GRU
        self.rnn = cls(EMBED, HIDDEN, 2, batch_first=True, bidirectional=True, rngs=rngs)
        self.head = nnx.Linear(2 * HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, tokens, lengths):
        out, _ = self.rnn(self.embed(tokens), seq_lengths=lengths)
        return self.head(out)


def _nnx_from_torch(tm: TorchTagger, mode: str) -> NNXTagger:
    model = NNXTagger(mode, rngs=nnx.Rngs(1))  # different init; every weight is overwritten below
    model.embed.embedding[...] = jnp.asarray(tm.embed.weight.detach().numpy())
    model.rnn.load_state_dict(tm.rnn.state_dict())
    model.head.kernel[...] = jnp.asarray(tm.head.weight.detach().numpy().T)
    model.head.bias[...] = jnp.asarray(tm.head.bias.detach().numpy())
    return model


@nnx.jit
def _nnx_step(model, optimizer, tokens, labels, lengths):
    def loss_fn(m):
        return _jax_loss(m(tokens, lengths), labels, lengths)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def _nnx_train(model, opt_name, batches):
    optimizer = nnx.Optimizer(model, _optax(opt_name), wrt=nnx.Param)
    return np.array([float(_nnx_step(model, optimizer, *b)) for b in batches])


def _assert_weights_close(tm: TorchTagger, embedding, rnn_state, kernel, bias, tol):
    np.testing.assert_allclose(embedding, tm.embed.weight.detach().numpy(), rtol=tol, atol=tol)
    for key, value in tm.rnn.state_dict().items():
        np.testing.assert_allclose(rnn_state[key], value.numpy(), rtol=tol, atol=tol, err_msg=key)
    np.testing.assert_allclose(kernel, tm.head.weight.detach().numpy().T, rtol=tol, atol=tol)
    np.testing.assert_allclose(bias, tm.head.bias.detach().numpy(), rtol=tol, atol=tol)


def _assert_curves_match(jax_losses, torch_losses):
    assert len(jax_losses) == len(torch_losses) >= 20
    np.testing.assert_allclose(jax_losses, torch_losses, rtol=1e-4, atol=0)
    # the runs must actually have trained (first and last step see the same batch), or matching
    # curves would prove little
    assert torch_losses[-1] < 0.95 * torch_losses[0]


CASES = [
    pytest.param("LSTM", "sgd", False, 0, id="LSTM-sgd"),
    pytest.param("LSTM", "adam", True, 1, id="LSTM-adam-varlen"),
    pytest.param("GRU", "sgd", True, 2, id="GRU-sgd-varlen"),
]


@pytest.mark.parametrize("mode, opt_name, variable, seed", CASES)
def test_nnx_training_matches_torch(mode, opt_name, variable, seed):
    batches = _batches(seed=seed, variable=variable)
    tm = _torch_model(mode)
    model = _nnx_from_torch(tm, mode)

    jax_losses = _nnx_train(model, opt_name, batches)
    torch_losses = _torch_train(tm, opt_name, batches)

    _assert_curves_match(jax_losses, torch_losses)
    _assert_weights_close(
        tm,
        np.asarray(model.embed.embedding[...]),
        model.rnn.state_dict(),
        np.asarray(model.head.kernel[...]),
        np.asarray(model.head.bias[...]),
        tol=2e-4,
    )


@nnx.jit
def _nnx_step_wrong_grad(model, optimizer, tokens, labels, lengths):
    """``_nnx_step`` with a 2 % error in one gradient, as a backward-pass bug would make."""

    def loss_fn(m):
        return _jax_loss(m(tokens, lengths), labels, lengths)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    g = grads["rnn"]["weight_hh_l1_reverse"]
    g[...] = g[...] * 0.98
    optimizer.update(model, grads)
    return loss


def test_training_comparison_detects_a_wrong_gradient():
    """The final-weight check is sharp: a 2 % error in one gradient of 20 fails it."""
    batches = _batches(seed=0, variable=False)
    tm = _torch_model("LSTM")
    model = _nnx_from_torch(tm, "LSTM")
    optimizer = nnx.Optimizer(model, _optax("sgd"), wrt=nnx.Param)
    for b in batches:
        _nnx_step_wrong_grad(model, optimizer, *b)
    _torch_train(tm, "sgd", batches)
    with pytest.raises(AssertionError, match="weight_hh_l1_reverse"):
        _assert_weights_close(
            tm,
            np.asarray(model.embed.embedding[...]),
            model.rnn.state_dict(),
            np.asarray(model.head.kernel[...]),
            np.asarray(model.head.bias[...]),
            tol=2e-4,
        )


# ----------------------------------------------------------------------------- Linen


class LinenTagger(nn.Module):
    mode: str

    @nn.compact
    def __call__(self, tokens, lengths):
        x = nn.Embed(VOCAB, EMBED, name="embed")(tokens)
        cls = jrl.LSTM if self.mode == "LSTM" else jrl.GRU
        rnn = cls(EMBED, HIDDEN, 2, batch_first=True, bidirectional=True, name="rnn")
        out, _ = rnn(x, seq_lengths=lengths)
        return nn.Dense(CLASSES, name="head")(out)


@pytest.mark.parametrize("mode, opt_name", [("LSTM", "adam")])
def test_linen_training_matches_torch(mode, opt_name):
    batches = _batches(seed=7, variable=True)
    tm = _torch_model(mode)
    model = LinenTagger(mode)
    params = {
        "embed": {"embedding": jnp.asarray(tm.embed.weight.detach().numpy())},
        "rnn": {
            k: jnp.asarray(v) for k, v in jaxrnn.state_dict_to_params(tm.rnn.state_dict()).items()
        },
        "head": {
            "kernel": jnp.asarray(tm.head.weight.detach().numpy().T),
            "bias": jnp.asarray(tm.head.bias.detach().numpy()),
        },
    }
    # the tree we built is exactly the tree Linen creates
    init = model.init(jax.random.key(0), batches[0][0], batches[0][2])["params"]
    assert jax.tree.structure(init) == jax.tree.structure(params)
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, params)

    tx = _optax(opt_name)

    @jax.jit
    def step(params, opt_state, tokens, labels, lengths):
        def loss_fn(p):
            return _jax_loss(model.apply({"params": p}, tokens, lengths), labels, lengths)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    jax_losses = []
    for b in batches:
        params, opt_state, loss = step(params, opt_state, *b)
        jax_losses.append(float(loss))
    torch_losses = _torch_train(tm, opt_name, batches)

    _assert_curves_match(np.array(jax_losses), torch_losses)
    _assert_weights_close(
        tm,
        np.asarray(params["embed"]["embedding"]),
        jaxrnn.params_to_state_dict(params["rnn"]),
        np.asarray(params["head"]["kernel"]),
        np.asarray(params["head"]["bias"]),
        tol=2e-4,
    )
