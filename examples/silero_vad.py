"""Silero VAD in JAX: the whole model in Flax NNX with a ``jaxrnn.LSTMCell`` decoder, streaming.

    python examples/silero_vad.py [--weights safetensors|jit] [--chunks 150]

The ``silero-vad`` package (``pip install --no-deps silero-vad``; it needs only torch to run its
TorchScript model) ships the 16 kHz model twice: as ``silero_vad_16k.safetensors`` and as the
TorchScript ``silero_vad.jit``. Read from the TorchScript code (``model.code``,
``model._model.code``, ``model._model.stft.code``, ...), one call on a 512-sample chunk is:

1. prepend the previous call's last 64 samples (the *context*; zeros at the start): 576 samples;
2. STFT as a convolution: reflect-pad 64 samples on the right, ``conv1d`` with the shipped
   ``(258, 1, 256)`` basis at stride 128 (4 frames), magnitude ``sqrt(re^2 + im^2)`` of the
   129 real and 129 imaginary rows;
3. encoder: four ``Conv1d(k=3, padding=1)`` + ReLU, strides 1, 2, 2, 1: ``129 -> 128 -> 64 -> 64
   -> 128`` channels, 4 frames -> 1;
4. decoder: ``LSTMCell(128, 128)`` whose ``(h, c)`` is carried to the next chunk (TorchScript
   keeps it as ``torch.stack([h, c])``), then ReLU, ``Conv1d(128, 1, 1)``, sigmoid: the speech
   probability.

The state carried between chunks is therefore ``(context, h, c)``. Here it is an explicit
pytree: :func:`stream_step` is one ``nnx.jit``-compiled chunk (the streaming pattern), and
:func:`run_recording` runs a whole recording with ``lax.scan`` over chunks.

Note on the weights: in silero-vad 6.2.3 the shipped ``.safetensors`` is a *different checkpoint*
from the TorchScript (and ONNX) model, same architecture and names but other values (upstream
issue snakers4/silero-vad#768). ``--weights safetensors`` (the default) loads the safetensors
file through ``jaxrnn.load_state_dict_file`` and compares with the TorchScript model running the
same weights (copied into it); ``--weights jit`` takes the TorchScript model's own weights and
compares with it as shipped.
"""

from __future__ import annotations

import argparse
import functools
import importlib.machinery
import os
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxrnn

SAMPLE_RATE = 16000
CHUNK = 512  # samples per call at 16 kHz
CONTEXT = 64  # samples of the previous chunk prepended to each call
HIDDEN = 128


def silero_data_dir() -> str | None:
    """The installed ``silero_vad/data`` folder (found without importing the package), or None."""
    here = os.path.dirname(os.path.abspath(__file__))  # this file is silero_vad.py too: skip it
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("silero_vad", path)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(spec.submodule_search_locations[0], "data")


# ---------------------------------------------------------------------------------------------
# the model


class Conv1d(nnx.Module):
    """``torch.nn.Conv1d`` with torch's layout: weight ``(out, in, k)``, input ``(N, C, W)``."""

    def __init__(self, c_in, c_out, kernel, *, stride=1, padding=0, bias=True, rngs: nnx.Rngs):
        self.stride, self.padding = stride, padding
        bound = 1.0 / np.sqrt(c_in * kernel)
        self.weight = nnx.Param(
            jax.random.uniform(rngs.params(), (c_out, c_in, kernel), minval=-bound, maxval=bound)
        )
        self.bias = nnx.Param(jnp.zeros((c_out,))) if bias else None

    def __call__(self, x):
        y = jax.lax.conv_general_dilated(
            x,
            self.weight[...],
            window_strides=(self.stride,),
            padding=[(self.padding, self.padding)],
            dimension_numbers=("NCH", "OIH", "NCH"),
            precision=jax.lax.Precision.HIGHEST,
        )
        return y if self.bias is None else y + self.bias[...][:, None]


class SileroVAD(nnx.Module):
    """Silero VAD (16 kHz). Attribute names are the shipped safetensors' keys.

    Inputs: x, (h, c)
        * **x**: ``(N, 64 + 512)``: the context samples followed by the new chunk.
        * **h, c**: ``(N, 128)`` each, the decoder's LSTM state.

    Outputs: prob, (h', c')
        * **prob**: ``(N,)`` speech probability of the chunk.
        * **h', c'**: ``(N, 128)``, the state for the next chunk.

    Example:
        >>> model = SileroVAD(rngs=nnx.Rngs(0))
        >>> prob, (h, c) = model(jnp.zeros((2, CONTEXT + CHUNK)), (jnp.zeros((2, 128)),) * 2)
        >>> prob.shape, h.shape
        ((2,), (2, 128))
    """

    def __init__(self, *, rngs: nnx.Rngs):
        self.stft_conv = Conv1d(1, 258, 256, stride=128, bias=False, rngs=rngs)
        self.conv1 = Conv1d(129, 128, 3, padding=1, rngs=rngs)
        self.conv2 = Conv1d(128, 64, 3, stride=2, padding=1, rngs=rngs)
        self.conv3 = Conv1d(64, 64, 3, stride=2, padding=1, rngs=rngs)
        self.conv4 = Conv1d(64, 128, 3, padding=1, rngs=rngs)
        self.lstm_cell = jaxrnn.LSTMCell(128, HIDDEN, rngs=rngs)
        self.final_conv = Conv1d(128, 1, 1, rngs=rngs)

    def __call__(self, x, state):
        x = jnp.pad(x, ((0, 0), (0, 64)), mode="reflect")[:, None, :]  # ReflectionPad1d((0, 64))
        spec = self.stft_conv(x)  # (N, 258, 4)
        x = jnp.sqrt(spec[:, :129] ** 2 + spec[:, 129:] ** 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = jax.nn.relu(conv(x))
        h, c = self.lstm_cell(x[:, :, 0], state)  # (N, 128, 1) -> (N, 128)
        out = jax.nn.sigmoid(self.final_conv(jax.nn.relu(h)[:, :, None]))  # (N, 1, 1)
        return out[:, 0].mean(axis=1), (h, c)


def load_weights(model: SileroVAD, state_dict) -> SileroVAD:
    """Copy a state dict named as the safetensors file (``conv1.weight``, ``lstm_cell.bias_ih``,
    ...) into ``model``; every key must be used and every shape match."""
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    names = {".".join(map(str, path)): path for path in flat}
    missing, unexpected = sorted(set(names) - set(state_dict)), sorted(set(state_dict) - set(names))
    if missing or unexpected:
        raise ValueError(f"SileroVAD: missing keys {missing}, unexpected keys {unexpected}")
    for name, path in names.items():
        value = np.asarray(state_dict[name])
        if value.shape != flat[path].get_value().shape:
            raise ValueError(
                f"SileroVAD: {name} has shape {value.shape}, expected {flat[path].get_value().shape}"
            )
        flat[path].set_value(jnp.asarray(value, jnp.float32))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


def from_state_dict(state_dict) -> SileroVAD:
    """A model holding ``state_dict``'s weights (safetensors names). It is built abstractly
    (``nnx.eval_shape``: no random init to compute) and every parameter then set from the dict."""
    return load_weights(nnx.eval_shape(lambda: SileroVAD(rngs=nnx.Rngs(0))), state_dict)


def load_safetensors(path: str | None = None) -> SileroVAD:
    """The model with the weights of the shipped ``silero_vad_16k.safetensors`` (no torch)."""
    if path is None:
        data = silero_data_dir()
        if data is None:
            raise FileNotFoundError(
                "silero-vad is not installed (pip install --no-deps silero-vad), or pass the "
                "path of silero_vad_16k.safetensors"
            )
        path = os.path.join(data, "silero_vad_16k.safetensors")
    return from_state_dict(jaxrnn.load_state_dict_file(path))


#: TorchScript parameter names -> the safetensors names used here.
JIT_NAMES = {
    "stft.forward_basis_buffer": "stft_conv.weight",
    **{
        f"encoder.{i}.reparam_conv.{p}": f"conv{i + 1}.{p}"
        for i in range(4)
        for p in ("weight", "bias")
    },
    **{
        f"decoder.rnn.{p}": f"lstm_cell.{p}"
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    },
    "decoder.decoder.2.weight": "final_conv.weight",
    "decoder.decoder.2.bias": "final_conv.bias",
}


def torchscript_state_dict(jit_model) -> dict[str, np.ndarray]:
    """The TorchScript model's own 16 kHz weights, under the safetensors names."""
    sd = jaxrnn.state_dict_to_params(jit_model._model.state_dict())
    return {JIT_NAMES[k]: v for k, v in sd.items()}


def copy_into_torchscript(jit_model, state_dict) -> None:
    """Overwrite the TorchScript model's 16 kHz weights in place (safetensors names)."""
    import torch

    tensors = dict(jit_model._model.named_parameters()) | dict(jit_model._model.named_buffers())
    with torch.no_grad():
        for jit_name, name in JIT_NAMES.items():
            tensors[jit_name].copy_(torch.from_numpy(np.asarray(state_dict[name])))


# ---------------------------------------------------------------------------------------------
# streaming and whole recordings


class VADState(NamedTuple):
    """What Silero VAD carries from one chunk to the next."""

    context: jax.Array  # (N, 64) last samples of the previous call's input
    h: jax.Array  # (N, 128)
    c: jax.Array  # (N, 128)


def initial_state(batch: int = 1) -> VADState:
    """The state at the start of a stream (TorchScript's ``reset_states()``): all zeros."""
    return VADState(
        jnp.zeros((batch, CONTEXT)), jnp.zeros((batch, HIDDEN)), jnp.zeros((batch, HIDDEN))
    )


def step(model: SileroVAD, state: VADState, chunk) -> tuple[jax.Array, VADState]:
    """One 512-sample chunk ``(N, 512)``: returns the speech probability ``(N,)`` and the state.
    Another chunk size is refused (a ``ValueError`` at trace time, as the TorchScript model's: its
    other size, 256, is the 8 kHz model's, which this port is not)."""
    if jnp.ndim(chunk) != 2 or jnp.shape(chunk)[-1] != CHUNK:
        raise ValueError(
            f"step: expected a chunk of shape (N, {CHUNK}) (16 kHz, 32 ms), got "
            f"{tuple(jnp.shape(chunk))}"
        )
    x = jnp.concatenate([state.context, chunk], axis=1)
    prob, (h, c) = model(x, (state.h, state.c))
    return prob, VADState(x[:, -CONTEXT:], h, c)


#: The streaming step, compiled once: call it on each new chunk with the state it returned.
stream_step = nnx.jit(step)


def compile_step(model: SileroVAD):
    """``stream_step`` with the model split once and closed over: ``fast(state, chunk)``.

    ``nnx.jit`` walks the module's graph on every call; for a ~0.3 ms model that overhead shows,
    so a latency-bound stream can split the module once and ``jax.jit`` a pure function.
    """
    graphdef, params = nnx.split(model)

    @jax.jit
    def fast(params, state, chunk):
        return step(nnx.merge(graphdef, params), state, chunk)

    return functools.partial(fast, params)


@nnx.jit
def _scan(model: SileroVAD, state: VADState, chunks, resets):
    def body(state, inputs):
        chunk, reset = inputs
        state = jax.tree.map(lambda s: jnp.where(reset, jnp.zeros_like(s), s), state)
        prob, state = step(model, state, chunk)
        return state, prob

    state, probs = jax.lax.scan(body, state, (chunks, resets))
    return probs.T, state


def run_recording(model: SileroVAD, audio, state: VADState | None = None, resets=None):
    """Speech probabilities of whole recordings ``(N, T)`` (or ``(T,)``), one per 512 samples.

    The recording is zero-padded to a multiple of 512 samples (as silero's own utilities do) and
    scanned chunk by chunk with ``lax.scan``, the state carried as in :func:`stream_step`.
    ``resets`` (bool, one per chunk) zeroes the state before the chunks where it is True, as
    TorchScript's ``reset_states()`` does. Returns ``(probs (N, chunks), final state)``.
    """
    audio = jnp.atleast_2d(jnp.asarray(audio, jnp.float32))
    n, length = audio.shape
    num_chunks = -(-length // CHUNK)
    audio = jnp.pad(audio, ((0, 0), (0, num_chunks * CHUNK - length)))
    chunks = audio.reshape(n, num_chunks, CHUNK).swapaxes(0, 1)
    resets = jnp.zeros(num_chunks, bool) if resets is None else jnp.asarray(resets, bool)
    return _scan(model, initial_state(n) if state is None else state, chunks, resets)


# ---------------------------------------------------------------------------------------------
# a test signal


def synthetic_speech(num_chunks: int = 150, seed: int = 0) -> np.ndarray:
    """``num_chunks * 512`` samples at 16 kHz: stretches of near-silence and of speech-like sound.

    Speech-like: voiced syllables (a gliding 90-220 Hz fundamental with harmonics shaped by three
    moving formant peaks, under a ~5 Hz syllabic envelope) and bursts of high-passed noise
    (fricatives). Silence: faint white noise.
    """
    rng = np.random.default_rng(seed)
    n = num_chunks * CHUNK
    t = np.arange(n) / SAMPLE_RATE
    signal = 1e-3 * rng.standard_normal(n)
    pos = int(0.4 * SAMPLE_RATE)
    while pos < n:
        length = int(rng.uniform(0.6, 1.4) * SAMPLE_RATE)  # a speech-like stretch
        end = min(n, pos + length)
        tt = t[pos:end] - t[pos]
        f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * tt))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        formants = [rng.uniform(300, 800), rng.uniform(900, 2200), rng.uniform(2300, 3200)]
        wobble = 1 + 0.1 * np.sin(2 * np.pi * 3 * tt)
        voiced = np.zeros_like(tt)
        for k in range(1, 40):
            fk = k * f0
            gain = sum(np.exp(-0.5 * ((fk - f * wobble) / 120.0) ** 2) for f in formants)
            voiced += (gain + 0.02) / k**0.5 * np.sin(k * phase)
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3.5, 6) * tt), 0, None) ** 0.7
        voiced *= syllables
        fricative = np.diff(rng.standard_normal(len(tt) + 1)) * (syllables < 0.05) * 0.4
        burst = voiced / (np.abs(voiced).max() + 1e-9) * 0.5 + fricative * 0.2
        signal[pos:end] += burst[: end - pos]
        pos = end + int(rng.uniform(0.3, 1.0) * SAMPLE_RATE)  # a silent stretch
    return signal.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the demo


def torchscript_probs(jit_model, audio: np.ndarray, reset_at=()) -> np.ndarray:
    """Run the TorchScript model chunk by chunk (its own state handling); ``(chunks,)`` probs."""
    import torch

    jit_model.reset_states()
    chunks = torch.from_numpy(audio.reshape(-1, CHUNK))
    out = []
    with torch.no_grad():
        for i, chunk in enumerate(chunks):
            if i in reset_at:
                jit_model.reset_states()
            out.append(float(jit_model(chunk[None], SAMPLE_RATE)[0, 0]))
    return np.array(out)


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", choices=("safetensors", "jit"), default="safetensors")
    parser.add_argument("--chunks", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per model")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # as silero_vad's own package does on import
    data = silero_data_dir()
    if data is None:
        raise SystemExit("silero-vad is not installed: pip install --no-deps silero-vad")
    jit_model = torch.jit.load(os.path.join(data, "silero_vad.jit")).eval()
    if args.weights == "safetensors":
        weights = jaxrnn.load_state_dict_file(os.path.join(data, "silero_vad_16k.safetensors"))
        copy_into_torchscript(jit_model, weights)
        print("weights: silero_vad_16k.safetensors (jaxrnn.load_state_dict_file), copied into the")
        print(
            "         TorchScript model as well (it ships a different checkpoint, see --weights jit)"
        )
    else:
        weights = torchscript_state_dict(jit_model)
        print("weights: the TorchScript model's own (silero_vad.jit)")
    model = from_state_dict(weights)
    for layer in jaxrnn.find_recurrent_layers(weights):
        print(f"recurrent layer found in the weights: {layer.prefix!r} {layer.describe()}")

    audio = synthetic_speech(args.chunks)
    print(f"\nsignal: {args.chunks} chunks of {CHUNK} samples ({len(audio) / SAMPLE_RATE:.1f} s)")

    ref = torchscript_probs(jit_model, audio)
    state, streamed = initial_state(), []
    for chunk in audio.reshape(-1, 1, CHUNK):
        prob, state = stream_step(model, state, jnp.asarray(chunk))
        streamed.append(float(prob[0]))
    streamed = np.array(streamed)
    scanned = np.asarray(run_recording(model, audio)[0][0])
    print(
        f"speech probability: min {ref.min():.3f}, max {ref.max():.3f}, "
        f"{np.mean(ref > 0.5):.0%} of chunks > 0.5 (TorchScript)"
    )
    print(f"max |JAX streaming - TorchScript|  = {np.abs(streamed - ref).max():.2e}")
    print(f"max |JAX lax.scan  - TorchScript|  = {np.abs(scanned - ref).max():.2e}")
    print(f"max |JAX streaming - JAX lax.scan| = {np.abs(streamed - scanned).max():.2e}")

    k = args.chunks // 2
    ref_reset = torchscript_probs(jit_model, audio, reset_at=(k,))
    resets = np.arange(args.chunks) == k
    scanned_reset = np.asarray(run_recording(model, audio, resets=resets)[0][0])
    print(
        f"state reset at chunk {k}: changes TorchScript's probabilities by up to "
        f"{np.abs(ref_reset - ref).max():.3f}; max |JAX lax.scan - TorchScript|, both reset = "
        f"{np.abs(scanned_reset - ref_reset).max():.2e}"
    )

    # latency of one chunk: the jit-compiled JAX step vs the TorchScript call
    chunk = jnp.asarray(audio[None, :CHUNK])
    fast_step = compile_step(model)
    states = {"nnx": initial_state(), "fast": initial_state()}

    def jax_call():
        prob, states["nnx"] = stream_step(model, states["nnx"], chunk)
        jax.block_until_ready(prob)

    def fast_call():
        prob, states["fast"] = fast_step(states["fast"], chunk)
        jax.block_until_ready(prob)

    torch_chunk = torch.from_numpy(audio[None, :CHUNK])

    def torch_call():
        with torch.no_grad():
            jit_model(torch_chunk, SAMPLE_RATE)

    calls = (jax_call, fast_call, torch_call)
    for fn in calls:
        _median_ms(fn, 20)  # compile and warm up
    jax_ms, fast_ms, torch_ms = (_median_ms(fn, args.repeats) for fn in calls)
    jax.block_until_ready(run_recording(model, audio))
    scan_ms = _median_ms(lambda: jax.block_until_ready(run_recording(model, audio)), 10)
    print(
        f"\nper-chunk latency, median of {args.repeats} calls (torch threads: "
        f"{torch.get_num_threads()}, JAX on {jax.devices()[0].platform}):"
    )
    print(f"  JAX nnx.jit streaming step : {jax_ms:.3f} ms")
    print(f"  JAX jax.jit on split model : {fast_ms:.3f} ms  (compile_step)")
    print(f"  TorchScript model call     : {torch_ms:.3f} ms")
    print(
        f"  JAX lax.scan, whole signal : {scan_ms / args.chunks:.3f} ms per chunk "
        f"({scan_ms:.1f} ms for {args.chunks} chunks)"
    )


if __name__ == "__main__":
    main()
