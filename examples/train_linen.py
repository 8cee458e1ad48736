"""A Flax Linen training loop with jaxrnn: a GRU classifier, optax and one ``jax.jit`` train step.

Task: does a sequence (length 4 to 32, padded) hold at least as many ``a`` (token 1) as ``b``
(token 2) among its distractors? The GRU must count over each sequence's own length, which
``seq_lengths=`` gives it: its final state is taken at the last valid step, not at the padding.
Chance is about 50 %; the defaults reached 98.9 % held-out accuracy in 600 steps (30 CPU-seconds)
in our latest run by hand (the run is deterministic on one machine; 800 steps gave 96.1 %, after a
late loss spike, and 1000 steps 100 %).

    python examples/train_linen.py            # defaults
    python examples/train_linen.py --quick    # a few seconds (what the tests run)

The parameters are the ``params`` collection of ``model.init``; the GRU's own subtree is keyed by
torch's names (``params['rnn']['weight_ih_l0']``, ...), so ``jaxrnn.params_to_state_dict`` turns it
into a state dict that ``torch.nn.GRU.load_state_dict`` accepts.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import numpy as np
import optax
from flax.training import train_state

from jaxrnn import linen as jrl

VOCAB, MAX_LEN = 8, 32


def make_batch(seed: int, step: int, size: int):
    """tokens ``(N, MAX_LEN)`` (0 = padding), lengths ``(N,)``, labels ``(N,)``: #a >= #b."""
    rng = np.random.default_rng([seed, step])
    lengths = rng.integers(4, MAX_LEN + 1, size)
    tokens = rng.integers(1, VOCAB, (size, MAX_LEN))
    tokens = np.where(np.arange(MAX_LEN)[None] < lengths[:, None], tokens, 0)
    labels = (tokens == 1).sum(1) >= (tokens == 2).sum(1)
    return tokens.astype(np.int32), lengths.astype(np.int32), labels.astype(np.int32)


class Classifier(nn.Module):
    hidden: int = 64

    @nn.compact
    def __call__(self, tokens, lengths, *, deterministic: bool = True):
        x = nn.Embed(VOCAB, 16, name="embed")(tokens)
        rnn = jrl.GRU(16, self.hidden, num_layers=2, batch_first=True, dropout=0.1, name="rnn")
        _, h_n = rnn(x, seq_lengths=lengths, deterministic=deterministic)
        return nn.Dense(2, name="head")(h_n[-1])  # top layer, at each sequence's last valid step


@jax.jit
def train_step(state: train_state.TrainState, tokens, lengths, labels, key):
    def loss_fn(params):
        logits = state.apply_fn(
            {"params": params}, tokens, lengths, deterministic=False, rngs={"dropout": key}
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


@jax.jit
def accuracy(state: train_state.TrainState, tokens, lengths, labels):
    logits = state.apply_fn({"params": state.params}, tokens, lengths)
    return (logits.argmax(-1) == labels).mean()


def train(
    steps: int = 600, batch_size: int = 64, hidden: int = 64, lr: float = 3e-3, seed: int = 0
):
    """Returns ``(state, losses, held-out accuracy)``."""
    model = Classifier(hidden)
    tokens, lengths, _ = make_batch(seed, 0, batch_size)
    params = model.init(jax.random.key(seed), tokens, lengths)["params"]
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    key = jax.random.key(seed + 1)
    losses = []
    for step in range(steps):
        state, loss = train_step(
            state, *make_batch(seed, step, batch_size), jax.random.fold_in(key, step)
        )
        losses.append(loss)
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: loss {float(loss):.4f}")
    acc = float(accuracy(state, *make_batch(seed + 1, 0, 1024)))  # held-out stream
    return state, np.array(jax.device_get(losses)), acc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--quick", action="store_true", help="40 steps of a small model")
    args = parser.parse_args(argv)
    kwargs = dict(steps=40, batch_size=16, hidden=16) if args.quick else dict(steps=args.steps)
    state, losses, acc = train(**kwargs)
    print(f"loss {losses[:10].mean():.4f} (first 10 steps) -> {losses[-10:].mean():.4f} (last 10)")
    print(f"held-out accuracy {acc:.4f}")
    return state, losses, acc


if __name__ == "__main__":
    main()
