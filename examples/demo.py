"""jaxrnn demo: take PyTorch recurrent models, run them in JAX under jit, print the parity figures.

    python examples/demo.py

For each model: build it in PyTorch, convert it with ``jaxrnn.from_torch``, run the same input
through both (JAX under ``nnx.jit``), and compare outputs, final states and gradients.
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import jaxrnn


def max_diff(a, b) -> float:
    if isinstance(a, (tuple, list)):
        return max(max_diff(x, y) for x, y in zip(a, b))
    return float(
        np.max(
            np.abs(np.asarray(a) - np.asarray(b.detach().numpy() if hasattr(b, "detach") else b))
        )
    )


def compare(title: str, torch_model: torch.nn.Module, x: np.ndarray, hx=None) -> None:
    torch_model.eval()
    model = jaxrnn.from_torch(torch_model)

    # forward, PyTorch vs JAX under jit
    xt = torch.tensor(x, requires_grad=True)
    hxt = (
        None
        if hx is None
        else tuple(torch.tensor(h) for h in hx)
        if isinstance(hx, tuple)
        else torch.tensor(hx)
    )
    t_out, t_state = torch_model(xt, hxt)
    forward = nnx.jit(lambda m, x, hx: m(x, hx))
    start = time.perf_counter()
    j_out, j_state = jax.block_until_ready(forward(model, jnp.asarray(x), hx))
    compile_s = time.perf_counter() - start

    # gradients of the same scalar with respect to every parameter and the input
    (t_out.square().sum()).backward()
    grad_fn = nnx.jit(nnx.grad(lambda m, x: jnp.sum(m(x, hx)[0] ** 2), argnums=(0, 1)))
    g_model, g_x = grad_fn(model, jnp.asarray(x))
    g_params = {path[0]: v for path, v in nnx.to_flat_state(g_model)}
    grad_diff = max(
        float(np.max(np.abs(np.asarray(g_params[name][...]) - p.grad.numpy())))
        / float(np.max(np.abs(p.grad.numpy())) or 1.0)
        for name, p in torch_model.named_parameters()
    )

    print(f"\n{title}")
    print(f"  torch : {torch_model}")
    print(
        f"  input {tuple(x.shape)} -> output {tuple(j_out.shape)}, "
        f"h_n {tuple(j_state[0].shape) if isinstance(j_state, tuple) else tuple(j_state.shape)}"
    )
    print(f"  max |output - torch|                    = {max_diff(j_out, t_out):.2e}")
    print(f"  max |final state - torch|               = {max_diff(j_state, t_state):.2e}")
    print(f"  max |d params - torch| / max |d params| = {grad_diff:.2e}")
    print(f"  max |d input - torch|                   = {max_diff(g_x, xt.grad):.2e}")
    print(f"  jit compile + first run                 = {compile_s:.2f} s")


def main() -> None:
    # torch's own note that oneDNN has no projected LSTM; irrelevant here
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(
        f"jaxrnn {jaxrnn.__version__} | jax {jax.__version__} on {jax.devices()[0].platform} | torch {torch.__version__}"
    )

    # 1. The blog-post GRU: nn.GRU(emb_dim=3, hidden_dim=2), input (seq_len=9, batch=5, 3)
    compare(
        "nn.GRU(3, 2), seq-first input, h_0 omitted",
        torch.nn.GRU(3, 2),
        rng.standard_normal((9, 5, 3)).astype(np.float32),
    )

    # 2. A 2-layer bidirectional LSTM with projections, batch_first, and an explicit (h_0, c_0)
    lstm = torch.nn.LSTM(10, 20, 2, batch_first=True, bidirectional=True, proj_size=5)
    h0 = rng.standard_normal((4, 3, 5)).astype(np.float32)
    c0 = rng.standard_normal((4, 3, 20)).astype(np.float32)
    compare(
        "nn.LSTM(10, 20, 2, batch_first=True, bidirectional=True, proj_size=5), given (h_0, c_0)",
        lstm,
        rng.standard_normal((3, 7, 10)).astype(np.float32),
        (h0, c0),
    )

    # 3. An Elman RNN with relu, 3 layers
    compare(
        "nn.RNN(8, 16, 3, nonlinearity='relu')",
        torch.nn.RNN(8, 16, 3, nonlinearity="relu"),
        rng.standard_normal((12, 4, 8)).astype(np.float32),
    )

    # 4. Embedding + GRU encoder: pick the GRU out of a whole model's state_dict by prefix
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(100, 32)
            self.gru = torch.nn.GRU(32, 64, batch_first=True, bidirectional=True)

        def forward(self, tokens):
            return self.gru(self.embedding(tokens))

    enc = Encoder().eval()
    tokens = torch.randint(0, 100, (4, 11))
    gru = jaxrnn.GRU(32, 64, batch_first=True, bidirectional=True, rngs=nnx.Rngs(0))
    gru.load_state_dict(jaxrnn.state_dict_to_params(enc.state_dict(), prefix="gru."))
    emb = jnp.asarray(enc.embedding.weight.detach().numpy())
    out, h_n = nnx.jit(lambda m, t: m(emb[t]))(gru, jnp.asarray(tokens.numpy()))
    t_out, t_h = enc(tokens)
    print(
        "\nEmbedding(100, 32) + GRU(32, 64, batch_first=True, bidirectional=True) encoder,"
        " loaded with state_dict_to_params(prefix='gru.')"
    )
    print(
        f"  max |output - torch| = {max_diff(out, t_out):.2e}, max |h_n - torch| = {max_diff(h_n, t_h):.2e}"
    )


if __name__ == "__main__":
    main()
