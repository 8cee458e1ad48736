"""Data parallelism with jax.sharding: 8 simulated CPU devices give the single-device loss curve.

``examples/train_classifier.py --data-parallel`` splits every batch over a 1-D ``Mesh`` of all
devices (``NamedSharding(mesh, P('data'))``) and replicates the parameters; XLA's SPMD partitioner
adds the gradient all-reduce. The device count is fixed when JAX starts, so the run happens in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``; it trains the ``--quick``
configuration once on one device and sharded in both loop layouts, and reports the loss curves. A
second test runs it as two processes of 4 devices each, joined by ``jax.distributed.initialize``
over localhost (the multi-host path: per-process batch slices, Gloo collectives between processes).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

SCRIPT = r"""
import dataclasses, importlib.util, json, sys
import jax, numpy as np

spec = importlib.util.spec_from_file_location("train_classifier", sys.argv[1])
clf = importlib.util.module_from_spec(spec)
sys.modules["train_classifier"] = clf
spec.loader.exec_module(clf)

cfg = clf.parse_args(["--quick"])[0]
single = clf.train(cfg, progress=False)
sharded = clf.main(["--quick", "--data-parallel"])  # the command-line flag
# the quick model (16 hidden units) runs batch-major; once more sharded in the feature-major
# layout (from 256 hidden units by default), whose batch axis is the minor one
from jaxrnn.functional import _fused
_fused._FEATURE_MAJOR_MIN_HIDDEN = 1
layouts = [_fused.feature_major_default("LSTM", cfg.batch_size, cfg.hidden)]
sharded_fm = clf.main(["--quick", "--data-parallel"])

w = sharded.model.rnn.weight_hh_l0[...]
m = sharded.model.head.kernel[...]
tokens, lengths, labels = clf.make_batch(cfg, 0, 0, cfg.batch_size)
batch = clf.to_global((tokens, lengths, labels), sharded.mesh)
print("RESULT " + json.dumps({
    "devices": jax.device_count(),
    "mesh": dict(sharded.mesh.shape),
    "single_devices": len(single.model.rnn.weight_hh_l0[...].sharding.device_set),
    "param_devices": [len(w.sharding.device_set), len(m.sharding.device_set)],
    "param_replicated": [w.sharding.is_fully_replicated, m.sharding.is_fully_replicated],
    "batch_shards": sorted({s.data.shape for s in batch[0].addressable_shards}),
    "batch_devices": len(batch[0].sharding.device_set),
    "batch_equal": bool(np.array_equal(np.asarray(batch[0]), tokens)),
    "single": [single.losses[s] for s in range(cfg.steps)],
    "sharded": [sharded.losses[s] for s in range(cfg.steps)],
    "sharded_fm": [sharded_fm.losses[s] for s in range(cfg.steps)],
    "layouts": layouts,
    "accuracy": [single.accuracy, sharded.accuracy],
    "batch_size": cfg.batch_size,
}))
"""


def _cpu_devices_env(count: int) -> dict:
    """This process's environment for a JAX process with ``count`` simulated CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run_result(script: str, devices: int, *args: str) -> dict:
    """Run ``script`` in a process with ``devices`` CPU devices; its ``RESULT {json}`` line."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=_cpu_devices_env(devices),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def report():
    return _run_result(SCRIPT, 8, str(ROOT / "examples" / "train_classifier.py"))


def test_runs_on_eight_devices_with_replicated_params_and_a_sharded_batch(report):
    assert report["devices"] == 8
    assert report["mesh"] == {"data": 8}
    assert report["single_devices"] == 1
    assert report["param_devices"] == [8, 8] and report["param_replicated"] == [True, True]
    assert report["batch_devices"] == 8
    assert report["batch_shards"] == [[report["batch_size"] // 8, 16]]  # 8 rows of 2, not copies
    assert report["batch_equal"]


def test_sharded_losses_equal_the_single_device_run(report):
    single, sharded = np.array(report["single"]), np.array(report["sharded"])
    assert len(single) == len(sharded) == 40 and np.isfinite(single).all()
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)
    # sharded in the other loop layout (forced feature-major): the same curve
    assert report["layouts"] == [True]
    np.testing.assert_allclose(report["sharded_fm"], single, rtol=1e-5, atol=1e-6)
    assert single[-10:].mean() < single[:10].mean()  # and they trained
    assert abs(report["accuracy"][0] - report["accuracy"][1]) <= 2 / 256  # at most 2 flips


MULTI = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("train_classifier", sys.argv[1])
clf = importlib.util.module_from_spec(spec)
sys.modules["train_classifier"] = clf
spec.loader.exec_module(clf)
r = clf.main(["--quick", "--data-parallel", "--distributed", "--coordinator", sys.argv[2],
              "--num-processes", "2", "--process-id", sys.argv[3]])
import jax
print("RESULT " + json.dumps({
    "process": jax.process_index(), "processes": jax.process_count(),
    "devices": jax.device_count(), "local_devices": jax.local_device_count(),
    "losses": [r.losses[s] for s in range(40)], "accuracy": r.accuracy,
}))
"""


@pytest.mark.skipif(
    not os.environ.get("JAXRNN_SLOW_TESTS"),
    reason="two processes compiling the train step take ~2 CPU-minutes; set JAXRNN_SLOW_TESTS=1",
)
def test_two_processes_give_the_single_device_curve(report):
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = _cpu_devices_env(4)
    script = str(ROOT / "examples" / "train_classifier.py")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI, script, f"localhost:{port}", str(i)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, err[-4000:]
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
    assert sorted(r["process"] for r in results) == [0, 1]
    for r in results:
        assert r["processes"] == 2 and r["devices"] == 8 and r["local_devices"] == 4
        np.testing.assert_allclose(r["losses"], report["single"], rtol=1e-5, atol=1e-6)
        assert abs(r["accuracy"] - report["accuracy"][0]) <= 2 / 256


SHARD_MAP_SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np, torch
from jax.sharding import Mesh, PartitionSpec as P
import jaxrnn

torch.manual_seed(0)
tmod = torch.nn.GRU(3, 8, 2, bidirectional=True)
params = jaxrnn.state_dict_to_params(tmod.state_dict())
x = np.random.default_rng(0).standard_normal((5, 8, 3)).astype(np.float32)
lengths = np.array([5, 4, 3, 2, 1, 5, 4, 3])

def loss(p, x, n):
    return jnp.sum(jaxrnn.functional.gru(p, x, seq_lengths=n)[0] ** 2)

mesh = Mesh(np.array(jax.devices()), ("data",))
sharded = jax.jit(jax.shard_map(
    lambda p, x, n: jax.grad(loss)(p, x, n), mesh=mesh,
    in_specs=(P(), P(None, "data"), P("data")), out_specs=P(),
))(params, x, lengths)
xt = torch.tensor(x)
packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
out, _ = torch.nn.utils.rnn.pad_packed_sequence(tmod(packed)[0], total_length=5)
(out ** 2).sum().backward()
print("RESULT " + json.dumps({
    "devices": jax.device_count(),
    "err": max(float(np.abs(np.asarray(sharded[k]) - p.grad.numpy()).max())
               for k, p in tmod.named_parameters()),
}))
"""


def test_gradients_inside_shard_map_are_summed_over_the_shards():
    """Four simulated devices, the batch split in four, weights replicated: the gradients that
    ``jax.grad`` returns inside ``jax.shard_map`` are the whole batch's, torch's on the same
    batch (JAX sums the cotangent of a replicated value used with sharded data)."""
    result = _run_result(SHARD_MAP_SCRIPT, 4)
    assert result["devices"] == 4
    assert result["err"] < 1e-4
