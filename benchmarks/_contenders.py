"""The three contenders of ``benchmarks/run.py`` on one workload, built from the same weights.

* torch: ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (oneDNN on CPU), the weights' source.
* flax: ``flax.nnx.RNN`` over ``OptimizedLSTMCell`` / ``GRUCell`` / ``SimpleCell`` (stacked for
  layers, a reversed second ``nnx.RNN`` concatenated for two directions, as
  ``nnx.Bidirectional``), time-major, zero initial carry, with torch's weights copied in.
  Flax's GRU has no ``b_hn`` inside ``r * (...)``, so the GRU workloads zero torch's ``b_hn``.
* jaxrnn: ``jaxrnn.from_torch(module)``.

Both JAX contenders run as ``jax.jit`` of a pure function of the split NNX state (``nnx.split`` /
``nnx.merge``), the fast NNX pattern, compiled with the same XLA compiler options (``run.py``'s
``--compiler-options``); a training step is ``value_and_grad`` with respect to the parameters of
``sum(output * w)``, the same loss torch backpropagates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import jaxrnn

GATES = {"RNN_TANH": 1, "LSTM": 4, "GRU": 3}


@dataclass(frozen=True)
class Workload:
    mode: str
    steps: int
    batch: int
    input_size: int
    hidden: int
    layers: int = 1
    bidirectional: bool = False

    @property
    def name(self) -> str:
        kind = {"RNN_TANH": "RNN"}.get(self.mode, self.mode)
        s = f"{kind} {self.steps},{self.batch},{self.input_size},{self.hidden},{self.layers}"
        return s + (",bi" if self.bidirectional else "")

    def flops(self, train: bool) -> float:
        """Matmul FLOPs of a forward pass (x3 for forward + backward)."""
        dirs = 2 if self.bidirectional else 1
        total = 0.0
        for layer in range(self.layers):
            inp = self.input_size if layer == 0 else dirs * self.hidden
            gate = GATES[self.mode] * self.hidden
            total += dirs * 2.0 * self.steps * self.batch * gate * (inp + self.hidden)
        return total * (3 if train else 1)


def torch_module(w: Workload, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = {"RNN_TANH": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[w.mode]
    m = cls(w.input_size, w.hidden, num_layers=w.layers, bidirectional=w.bidirectional)
    if w.mode == "GRU":  # flax's GRUCell has no b_hn: make the three contenders the same model
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.startswith("bias_hh"):
                    p[2 * w.hidden :] = 0.0
    return m


class FlaxStack(nnx.Module):
    """Layers of ``nnx.RNN`` (two per layer when bidirectional, concatenated as
    ``nnx.Bidirectional`` does), called with a zero initial carry."""

    def __init__(self, layers, mode: str):
        self.layers = nnx.List([nnx.List(rnns) for rnns in layers])
        self.mode = mode

    def __call__(self, x):
        for rnns in self.layers:
            outs = []
            for rnn in rnns:
                zeros = jnp.zeros((x.shape[1], rnn.cell.hidden_features), x.dtype)
                carry = (zeros, zeros) if self.mode == "LSTM" else zeros
                outs.append(rnn(x, initial_carry=carry))
            x = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        return x


def flax_model(w: Workload, tmod: torch.nn.Module) -> nnx.Module:
    """Flax's nn.RNN stack holding ``tmod``'s weights."""
    sd = {k: v.detach().numpy() for k, v in tmod.state_dict().items()}
    rngs = nnx.Rngs(0)
    dirs = 2 if w.bidirectional else 1
    layers = []
    for layer in range(w.layers):
        inp = w.input_size if layer == 0 else dirs * w.hidden
        rnns = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = sd["weight_ih" + sfx], sd["weight_hh" + sfx]
            b_ih, b_hh = sd["bias_ih" + sfx], sd["bias_hh" + sfx]
            if w.mode == "LSTM":
                cell = nnx.OptimizedLSTMCell(inp, w.hidden, rngs=rngs)
                cell.dense_h.bias[...] = jnp.asarray(b_ih + b_hh)
            elif w.mode == "GRU":
                cell = nnx.GRUCell(inp, w.hidden, rngs=rngs)
                cell.dense_i.bias[...] = jnp.asarray(b_ih + b_hh)  # b_hn is zero
            else:
                cell = nnx.SimpleCell(inp, w.hidden, rngs=rngs)
                cell.dense_i.bias[...] = jnp.asarray(b_ih + b_hh)
            cell.dense_i.kernel[...] = jnp.asarray(w_ih.T)
            cell.dense_h.kernel[...] = jnp.asarray(w_hh.T)
            rnns.append(nnx.RNN(cell, time_major=True, reverse=d == 1, keep_order=True))
        layers.append(rnns)
    return FlaxStack(layers, w.mode)


@dataclass
class Contender:
    """``fwd()`` / ``train()`` run one call to completion; ``out`` / ``loss`` give numpy results."""

    name: str
    fwd: object
    train: object
    fwd_out: object
    train_out: object
    compile_s: float = float("nan")
    train_temp_mib: float = float("nan")  # compiled temporary memory of the training step
    fwd_temp_mib: float = float("nan")  # and of the inference forward


def torch_contender(tmod, x, w_out) -> Contender:
    xt, wt = torch.from_numpy(x), torch.from_numpy(w_out)

    def fwd():
        with torch.inference_mode():
            return tmod(xt)[0]

    def train():
        for p in tmod.parameters():
            p.grad = None
        loss = (tmod(xt)[0] * wt).sum()
        loss.backward()
        return loss

    def train_out():
        loss = train()
        return loss.item(), {k: p.grad.numpy().copy() for k, p in tmod.named_parameters()}

    return Contender("torch", fwd, train, lambda: fwd().numpy(), train_out)


def jax_contender(name, model, x, w_out, compiler_options=None) -> Contender:
    """``model(x)`` returns the output (first element of a tuple for jaxrnn); both programs are
    compiled with ``compiler_options`` (XLA options, see ``jaxrnn.cpu_compiler_options``)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    xj, wj = jnp.asarray(x), jnp.asarray(w_out)

    def forward(params, rest, x):
        out = nnx.merge(graphdef, params, rest)(x)
        return out[0] if isinstance(out, tuple) else out

    def loss(params, rest, x):
        return jnp.sum(forward(params, rest, x) * wj)

    t0 = time.perf_counter()
    opts = dict(compiler_options or {})
    fwd_c = jax.jit(forward, compiler_options=opts).lower(params, rest, xj).compile()
    train_c = jax.jit(jax.value_and_grad(loss), compiler_options=opts)
    train_c = train_c.lower(params, rest, xj).compile()
    compile_s = time.perf_counter() - t0

    def train_out():
        value, grads = train_c(params, rest, xj)
        flat = {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(grads)}
        return float(value), flat

    return Contender(
        name,
        lambda: jax.block_until_ready(fwd_c(params, rest, xj)),
        lambda: jax.block_until_ready(train_c(params, rest, xj)),
        lambda: np.asarray(fwd_c(params, rest, xj)),
        train_out,
        compile_s,
        train_c.memory_analysis().temp_size_in_bytes / 2**20,
        fwd_c.memory_analysis().temp_size_in_bytes / 2**20,
    )


def build(w: Workload, seed: int = 0, with_flax: bool = True, compiler_options=None):
    """The contenders of ``w`` (torch first) and the torch module; the JAX contenders compiled
    with ``compiler_options``."""
    rng = np.random.default_rng(seed)
    tmod = torch_module(w, seed)
    x = rng.standard_normal((w.steps, w.batch, w.input_size)).astype(np.float32)
    dirs = 2 if w.bidirectional else 1
    w_out = rng.standard_normal((w.steps, w.batch, dirs * w.hidden)).astype(np.float32)
    out = [torch_contender(tmod, x, w_out)]
    if with_flax:
        out.append(jax_contender("flax", flax_model(w, tmod), x, w_out, compiler_options))
    out.append(jax_contender("jaxrnn", jaxrnn.from_torch(tmod), x, w_out, compiler_options))
    return out, tmod


def check_against_torch(contenders, tol: float = 2e-4) -> None:
    """Every contender's output and loss equal torch's; jaxrnn's gradients equal torch's."""
    ref_out = contenders[0].fwd_out()
    ref_loss, ref_grads = contenders[0].train_out()
    scale = max(1.0, float(np.max(np.abs(ref_out))))
    for c in contenders[1:]:
        err = float(np.max(np.abs(c.fwd_out() - ref_out)))
        if err > tol * scale:
            raise AssertionError(f"{c.name}: output differs from torch by {err:.3g}")
        loss, grads = c.train_out()
        if abs(loss - ref_loss) > tol * max(1.0, abs(ref_loss)):
            raise AssertionError(f"{c.name}: loss {loss} != torch {ref_loss}")
        if c.name == "jaxrnn":
            for k, g in ref_grads.items():
                err = float(np.max(np.abs(grads[k] - g)))
                if err > tol * max(1.0, float(np.max(np.abs(g)))):
                    raise AssertionError(f"jaxrnn: d{k} differs from torch by {err:.3g}")
