"""examples/silero_vad.py against the TorchScript model shipped in the silero-vad package.

Same weights, same audio: the JAX model's speech probabilities (streamed chunk by chunk with the
state carried between ``nnx.jit`` steps, and over the whole recording with ``lax.scan``) match
TorchScript's within 1e-4 over 120 consecutive chunks of a signal with silence and speech-like
stretches; resetting the carried state changes the result the same way in both.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxrnn

_spec = importlib.machinery.PathFinder.find_spec("silero_vad")  # found, not imported
if _spec is None:
    pytest.skip("silero-vad is not installed", allow_module_level=True)

_path = Path(__file__).resolve().parents[1] / "examples" / "silero_vad.py"
_example_spec = importlib.util.spec_from_file_location("silero_vad_example", _path)
vad = importlib.util.module_from_spec(_example_spec)
sys.modules["silero_vad_example"] = vad
_example_spec.loader.exec_module(vad)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

NUM_CHUNKS = 120
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Silero's own setting (its package calls torch.set_num_threads(1) on import). With more,
    torch's threads fight JAX's thread pool on a small machine and each 0.3 ms call takes ~50 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir():
    return os.path.join(_spec.submodule_search_locations[0], "data")


@pytest.fixture(scope="module")
def audio():
    return vad.synthetic_speech(NUM_CHUNKS, seed=1)


@pytest.fixture(scope="module")
def shipped_safetensors(data_dir):
    return jaxrnn.load_state_dict_file(os.path.join(data_dir, "silero_vad_16k.safetensors"))


@pytest.fixture(scope="module", params=["safetensors", "jit"])
def models(request, data_dir, shipped_safetensors):
    """(JAX model, TorchScript model) holding the same weights: the shipped safetensors (loaded
    through jaxrnn and copied into the TorchScript model) or TorchScript's own."""
    jit_model = torch.jit.load(os.path.join(data_dir, "silero_vad.jit")).eval()
    if request.param == "safetensors":
        weights = shipped_safetensors
        vad.copy_into_torchscript(jit_model, weights)
    else:
        weights = vad.torchscript_state_dict(jit_model)
    return vad.from_state_dict(weights), jit_model


def stream(model, audio, reset_at=()):
    """JAX streaming: one nnx.jit step per chunk, the state carried in Python."""
    state, probs = vad.initial_state(), []
    for i, chunk in enumerate(audio.reshape(-1, 1, vad.CHUNK)):
        if i in reset_at:
            state = vad.initial_state()
        prob, state = vad.stream_step(model, state, jnp.asarray(chunk))
        probs.append(float(prob[0]))
    return np.array(probs)


def torchscript(jit_model, batch, reset_at=()):
    """TorchScript chunk by chunk on a batch of recordings ``(N, T)``: probabilities ``(N, chunks)``."""
    jit_model.reset_states()
    out = []
    with torch.no_grad():
        for i, start in enumerate(range(0, batch.shape[1], vad.CHUNK)):
            if i in reset_at:
                jit_model.reset_states()
            chunk = torch.from_numpy(batch[:, start : start + vad.CHUNK])
            out.append(jit_model(chunk, vad.SAMPLE_RATE)[:, 0].numpy())
    return np.stack(out, axis=1)


@pytest.fixture(scope="module")
def recordings(audio):
    """Two recordings in a batch: the signal and the signal backwards."""
    return np.stack([audio, audio[::-1].copy()])


def test_streaming_and_scan_match_torchscript(models, recordings):
    model, jit_model = models
    ref = torchscript(jit_model, recordings)
    assert ref.shape == (2, NUM_CHUNKS) and NUM_CHUNKS >= 100
    # the signal exercises both regimes of the model
    assert ref.min() < 0.1 and ref.max() > 0.9
    # (TorchScript's batched and single-recording kernels differ by ~1e-6)
    np.testing.assert_allclose(vad.torchscript_probs(jit_model, recordings[0]), ref[0], atol=1e-5)
    streamed = stream(model, recordings[0])
    scanned, state = vad.run_recording(model, recordings)
    assert scanned.shape == (2, NUM_CHUNKS) and state.h.shape == state.c.shape == (2, 128)
    np.testing.assert_allclose(streamed, ref[0], rtol=0, atol=TOL)
    np.testing.assert_allclose(scanned, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(streamed, scanned[0], rtol=0, atol=1e-5)


def test_resetting_the_state_changes_both_the_same_way(models, recordings):
    model, jit_model = models
    k = NUM_CHUNKS // 2
    carried = torchscript(jit_model, recordings)
    ref = torchscript(jit_model, recordings, reset_at=(k,))
    # the carried state matters: dropping it changes TorchScript's probabilities after chunk k
    assert np.abs(ref[:, k:] - carried[:, k:]).max() > 1e-2
    np.testing.assert_array_equal(ref[:, :k], carried[:, :k])
    streamed = stream(model, recordings[0], reset_at=(k,))
    scanned, _ = vad.run_recording(model, recordings, resets=np.arange(NUM_CHUNKS) == k)
    np.testing.assert_allclose(streamed, ref[0], rtol=0, atol=TOL)
    np.testing.assert_allclose(scanned, ref, rtol=0, atol=TOL)
    # and JAX's own results move with it
    assert np.abs(scanned[:, k:] - carried[:, k:]).max() > 1e-2


@pytest.mark.parametrize("size", [256, 480, 1024])
def test_chunks_of_another_size_are_refused_as_torchscripts(models, size):
    model, jit_model = models
    with pytest.raises(Exception, match="builtins.ValueError"):  # a torch.jit.Error saying so
        jit_model(torch.zeros(1, size), 16000)
    for call in (vad.step, vad.stream_step, vad.compile_step(model)):
        with pytest.raises(
            ValueError, match=rf"expected a chunk of shape \(N, 512\).*\(1, {size}\)"
        ):
            if call is vad.step or call is vad.stream_step:
                call(model, vad.initial_state(), jnp.zeros((1, size)))
            else:
                call(vad.initial_state(), jnp.zeros((1, size)))


def test_compiled_split_step_matches_nnx_jit_step(models, audio):
    model, jit_model = models
    fast = vad.compile_step(model)
    state = vad.initial_state()
    probs = []
    for chunk in audio.reshape(-1, 1, vad.CHUNK)[:10]:
        prob, state = fast(state, jnp.asarray(chunk))
        probs.append(float(prob[0]))
    np.testing.assert_allclose(probs, stream(model, audio[: 10 * vad.CHUNK]), rtol=0, atol=1e-6)
    # and the TorchScript model itself, on the same ten chunks
    ref = torchscript(jit_model, audio[None, : 10 * vad.CHUNK].copy())
    assert ref.shape == (1, 10)
    np.testing.assert_allclose(probs, ref[0], rtol=0, atol=TOL)


def test_shipped_safetensors_round_trip(shipped_safetensors, data_dir, tmp_path):
    (layer,) = jaxrnn.find_recurrent_layers(shipped_safetensors)
    assert (layer.prefix, layer.describe()) == ("lstm_cell.", "LSTMCell(128, 128)")
    model = vad.load_safetensors(os.path.join(data_dir, "silero_vad_16k.safetensors"))
    # the model's attribute paths are the file's keys: exporting it writes the same weights back
    out = tmp_path / "exported.safetensors"
    jaxrnn.save_state_dict_file(model, out)
    exported = jaxrnn.load_state_dict_file(out)
    assert set(exported) == set(shipped_safetensors)
    for key, value in shipped_safetensors.items():
        np.testing.assert_array_equal(exported[key], value)


def test_shipped_checkpoints_differ(shipped_safetensors, data_dir):
    """silero-vad 6.2.3 ships another checkpoint as safetensors than as TorchScript (the example's
    docstring says so): same names and shapes, other values."""
    own = vad.torchscript_state_dict(torch.jit.load(os.path.join(data_dir, "silero_vad.jit")))
    assert {k: v.shape for k, v in own.items()} == {
        k: v.shape for k, v in shipped_safetensors.items()
    }
    np.testing.assert_array_equal(own["stft_conv.weight"], shipped_safetensors["stft_conv.weight"])
    assert not np.allclose(own["lstm_cell.weight_ih"], shipped_safetensors["lstm_cell.weight_ih"])


def test_load_weights_is_strict(shipped_safetensors):
    model = nnx.eval_shape(lambda: vad.SileroVAD(rngs=nnx.Rngs(0)))
    extra = dict(shipped_safetensors, **{"decoder.extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys \['decoder.extra'\]"):
        vad.load_weights(model, extra)
    missing = {k: v for k, v in shipped_safetensors.items() if k != "conv2.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['conv2.bias'\]"):
        vad.load_weights(model, missing)
    wrong = dict(shipped_safetensors, **{"conv2.bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"conv2.bias has shape \(3,\), expected \(64,\)"):
        vad.load_weights(model, wrong)


def test_load_safetensors_without_the_package_says_so(monkeypatch):
    monkeypatch.setattr(vad, "silero_data_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"silero-vad is not installed \(pip install"):
        vad.load_safetensors()
