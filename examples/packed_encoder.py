"""Sentences of different lengths through an Embedding + bidirectional GRU encoder: torch and jaxrnn.

The encoder PyTorch users write for seq2seq models (pack the padded batch, run the GRU, unpack),
written the same way with ``jaxrnn.utils.rnn`` under ``nnx.jit``, with the torch model's weights.
Two batches with different lengths run through one compilation; the script prints how far the
outputs, sentence vectors and gradients are from torch's.

    python examples/packed_encoder.py
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.utils.rnn as tr
from flax import nnx

import jaxrnn
from jaxrnn.utils.rnn import pack_padded_sequence, pad_packed_sequence

BATCHES = [
    ["the cat sat on the mat", "hello", "packed sequences keep their own lengths", "a b c"],
    ["jax and torch agree", "one more sentence of words here", "hi", "the mat sat on the cat"],
]
MAX_LEN, EMBED, HIDDEN = 8, 8, 16


def tokenize(batch, vocab):
    """Token ids ``(N, MAX_LEN)`` padded with 0, and the lengths ``(N,)``."""
    ids = np.zeros((len(batch), MAX_LEN), np.int64)
    lengths = np.array([len(s.split()) for s in batch])
    for i, sentence in enumerate(batch):
        for j, word in enumerate(sentence.split()):
            ids[i, j] = vocab.setdefault(word, len(vocab))
    return ids, lengths


class TorchEncoder(torch.nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, EMBED, padding_idx=0)
        self.gru = torch.nn.GRU(EMBED, HIDDEN, 2, batch_first=True, bidirectional=True)

    def forward(self, ids, lengths):
        packed = tr.pack_padded_sequence(
            self.embedding(ids), lengths, batch_first=True, enforce_sorted=False
        )
        out, h_n = self.gru(packed)
        out, _ = tr.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return out, torch.cat([h_n[-2], h_n[-1]], dim=-1)  # last layer, both directions


class Encoder(nnx.Module):
    def __init__(self, torch_encoder: TorchEncoder):
        weight = torch_encoder.embedding.weight.detach().numpy()
        self.embedding = nnx.Embed(*weight.shape, rngs=nnx.Rngs(0))
        self.embedding.embedding[...] = weight
        self.gru = jaxrnn.from_torch(torch_encoder.gru)

    def __call__(self, ids, lengths):
        packed = pack_padded_sequence(
            self.embedding(ids), lengths, batch_first=True, enforce_sorted=False
        )
        out, h_n = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return out, jnp.concatenate([h_n[-2], h_n[-1]], axis=-1)


def main():
    vocab = {"<pad>": 0}
    batches = [tokenize(b, vocab) for b in BATCHES]
    torch.manual_seed(0)
    torch_encoder = TorchEncoder(len(vocab))
    encoder = Encoder(torch_encoder)
    traces = []

    @nnx.jit
    def encode_and_grad(encoder, ids, lengths):
        traces.append(1)

        def loss(encoder):
            out, sentence = encoder(ids, lengths)
            return (out**2).sum() + sentence.sum(), (out, sentence)

        return nnx.grad(loss, has_aux=True)(encoder)

    for (ids, lengths), sentences in zip(batches, BATCHES, strict=True):
        grads, (out, sentence) = encode_and_grad(encoder, ids, lengths)
        torch_encoder.zero_grad()
        t_out, t_sentence = torch_encoder(torch.tensor(ids), torch.tensor(lengths))
        ((t_out**2).sum() + t_sentence.sum()).backward()
        # the JAX-native spelling: the padded batch and seq_lengths=, same numbers
        out2, _ = encoder.gru(encoder.embedding(ids), seq_lengths=lengths)

        def diff(a, b):
            return float(np.max(np.abs(np.asarray(a) - b.detach().numpy())))

        g_embed = diff(grads["embedding"]["embedding"], torch_encoder.embedding.weight.grad)
        g_gru = max(diff(grads["gru"][k], p.grad) for k, p in torch_encoder.gru.named_parameters())
        print(f"batch of lengths {lengths.tolist()}: {sentences}")
        rows = [
            (f"outputs {tuple(out.shape)}", f"{diff(out, t_out):.1e}"),
            (f"sentence vectors {tuple(sentence.shape)}", f"{diff(sentence, t_sentence):.1e}"),
            ("outputs via seq_lengths=", f"{diff(out2, t_out):.1e}"),
            ("gradients (embedding, GRU)", f"{g_embed:.1e}, {g_gru:.1e}"),
        ]
        print("  max |jax - torch|:")
        for label, value in rows:
            print(f"    {label:<30}{value}")
    print(f"compilations for {len(batches)} batches of different lengths: {len(traces)}")


if __name__ == "__main__":
    main()
