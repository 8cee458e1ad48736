"""The training examples run, learn, checkpoint and resume on the same curve.

``examples/train_classifier.py`` (NNX) and ``examples/train_linen.py`` (Linen) in their ``--quick``
configurations, in-process so that the jit compilations are shared between the tests. The
default configurations (and their stated accuracies) are too slow for the suite; they are run by
hand (see README.md, section Training).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clf():
    return _load("train_classifier")


@pytest.fixture(scope="module")
def quick_cfg(clf):
    return clf.parse_args(["--quick"])[0]


@pytest.fixture(scope="module")
def quick_run(clf, quick_cfg):
    return clf.train(quick_cfg, progress=False)


def test_data_is_a_function_of_the_step_and_labels_need_counting(clf, quick_cfg):
    tokens, lengths, labels = clf.make_batch(quick_cfg, 0, 5, 512)
    again = clf.make_batch(quick_cfg, 0, 5, 512)
    for a, b in zip((tokens, lengths, labels), again, strict=True):
        np.testing.assert_array_equal(a, b)
    valid = np.arange(quick_cfg.max_len)[None] < lengths[:, None]
    assert (tokens[~valid] == clf.PAD).all() and (tokens[valid] != clf.PAD).all()
    assert lengths.min() >= quick_cfg.min_len and lengths.max() <= quick_cfg.max_len
    n_a, n_b = (tokens == clf.A).sum(1), (tokens == clf.B).sum(1)
    assert (n_a != n_b).all()  # no ties
    np.testing.assert_array_equal(labels, n_a > n_b)
    assert 0.4 < labels.mean() < 0.6
    assert (np.abs(n_a - n_b) <= 2).mean() > 0.3  # many close calls: it needs exact counting


def test_quick_run_learns(quick_run, quick_cfg):
    losses = np.array([quick_run.losses[s] for s in range(quick_cfg.steps)])
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.85 * losses[:10].mean()
    assert quick_run.accuracy > 0.7  # chance is 0.5


def test_resume_continues_the_same_curve(clf, quick_cfg, quick_run, tmp_path):
    half = quick_cfg.steps // 2
    first = clf.train(
        dataclasses.replace(quick_cfg, stop_at=half, ckpt_dir=str(tmp_path)), progress=False
    )
    assert (tmp_path / "checkpoint.safetensors").exists()
    assert sorted(first.losses) == list(range(half))
    resumed = clf.train(dataclasses.replace(quick_cfg, ckpt_dir=str(tmp_path)), progress=False)
    assert resumed.start_step == half
    assert sorted(resumed.losses) == list(range(half, quick_cfg.steps))
    for step in range(quick_cfg.steps):
        part = first.losses if step < half else resumed.losses
        np.testing.assert_allclose(part[step], quick_run.losses[step], rtol=1e-6, err_msg=str(step))
    assert resumed.accuracy == quick_run.accuracy
    for key, value in resumed.model.rnn.state_dict().items():
        np.testing.assert_allclose(
            value, quick_run.model.rnn.state_dict()[key], rtol=1e-6, atol=1e-7
        )


def test_checkpoint_restores_params_and_adam_state(clf, quick_cfg, quick_run, tmp_path):
    from flax import nnx

    path = str(tmp_path / "ckpt.safetensors")
    optimizer = clf.make_optimizer(quick_run.model, quick_cfg)
    optimizer.step[...] = 7
    mu = optimizer.opt_state[1][0].mu  # chain(clip, adam): adam's ScaleByAdamState
    mu["rnn"]["weight_hh_l0"][...] = jnp.full_like(mu["rnn"]["weight_hh_l0"][...], 0.25)
    clf.save_checkpoint(path, quick_run.model, optimizer)

    fresh = clf.Classifier(quick_cfg, rngs=nnx.Rngs(123))
    fresh_opt = clf.make_optimizer(fresh, quick_cfg)
    assert clf.restore_checkpoint(path, fresh, fresh_opt) == 7
    for (p, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(quick_run.model, nnx.Param)),
        nnx.to_flat_state(nnx.state(fresh, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(p))
    np.testing.assert_array_equal(fresh_opt.opt_state[1][0].mu["rnn"]["weight_hh_l0"][...], 0.25)


def test_cli_exports_an_lstm_that_torch_loads(clf, tmp_path, capsys):
    result = clf.main(["--quick", "--ckpt-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "eval accuracy after 40 steps" in out and "predicted" in out

    cfg = clf.parse_args(["--quick"])[0]
    lstm = torch.nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True, bidirectional=True)
    sd = clf.jaxrnn.load_state_dict_file(tmp_path / "lstm_torch.safetensors")
    lstm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    x = np.random.default_rng(0).standard_normal((3, 5, cfg.embed)).astype(np.float32)
    expected, _ = lstm(torch.from_numpy(x))
    result.model.rnn.eval()
    got, _ = result.model.rnn(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), expected.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_linen_example_learns():
    linen = _load("train_linen")
    tokens, lengths, labels = linen.make_batch(0, 3, 256)
    np.testing.assert_array_equal(labels, (tokens == 1).sum(1) >= (tokens == 2).sum(1))
    assert 0.3 < labels.mean() < 0.7
    assert (tokens[np.arange(linen.MAX_LEN)[None] >= lengths[:, None]] == 0).all()

    state, losses, acc = linen.main(["--quick"])
    assert np.isfinite(losses).all() and len(losses) == 40
    assert losses[-10:].mean() < losses[:10].mean()
    assert set(state.params["rnn"]) >= {"weight_ih_l0", "weight_hh_l1", "bias_hh_l1"}


def test_eval_batch_splits_over_any_device_count(clf):
    """The held-out batch is split over the mesh like the training batch: any device count that
    divides --batch-size works (6 devices crashed on the fixed 256 before)."""

    class Mesh:  # only its size matters here
        def __init__(self, size):
            self.size = size

    assert clf.eval_batch_size(None) == clf.EVAL_BATCH == 256
    for devices in (1, 2, 3, 5, 6, 7, 8, 12):
        size = clf.eval_batch_size(Mesh(devices))
        assert size % devices == 0 and clf.EVAL_BATCH - devices < size <= clf.EVAL_BATCH
