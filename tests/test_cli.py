"""``python -m jaxrnn inspect|convert``: the layers it reports are torch's, the files it writes load
into torch with ``strict=True``, and failures exit 1 with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jaxrnn.cli import main


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.GRU(4, 6, 2, bidirectional=True)
        self.decoder = torch.nn.LSTMCell(12, 5)
        self.head = torch.nn.Linear(5, 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = Model()
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pt")
    torch.save({"model": model.state_dict(), "step": 10}, path)
    return model, path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_table(capsys, checkpoint):
    model, path = checkpoint
    code, out, err = run(capsys, "inspect", path)
    assert code == 0 and err == ""
    lines = out.splitlines()
    n = len(model.state_dict())
    assert (
        lines[0] == f"{path}: {n} arrays, 2 recurrent layer(s) ({n - 2} arrays), 2 other array(s)"
    )
    assert lines[1].split() == ["'model.encoder.'", *repr(model.encoder).split()]
    assert lines[2].split() == ["'model.decoder.'", *repr(model.decoder).split()]
    assert "not stored in weights" in lines[3]


def test_inspect_json(capsys, checkpoint):
    model, path = checkpoint
    code, out, _ = run(capsys, "inspect", path, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["num_arrays"] == len(model.state_dict())
    layers = {layer["prefix"]: layer for layer in report["layers"]}
    enc = layers["model.encoder."]
    assert enc["cls"] == "GRU" and enc["error"] is None
    gru = model.encoder
    assert enc["config"] == dict(
        input_size=gru.input_size,
        hidden_size=gru.hidden_size,
        num_layers=gru.num_layers,
        bias=gru.bias,
        bidirectional=gru.bidirectional,
    )
    assert set(enc["keys"]) == {"model.encoder." + k for k in gru.state_dict()}
    assert layers["model.decoder."]["cls"] == "LSTMCell"


@pytest.mark.parametrize("out_fmt", ("safetensors", "pt", "npz"))
def test_convert_one_layer_loads_into_torch(capsys, checkpoint, tmp_path, out_fmt):
    model, path = checkpoint
    out = str(tmp_path / f"encoder.{out_fmt}")
    code, stdout, err = run(capsys, "convert", path, out, "--prefix", "model.encoder.")
    assert code == 0 and err == ""
    assert stdout.strip() == f"wrote {out}: 16 arrays {model.encoder!r}"
    if out_fmt == "safetensors":
        sd = load_file(out)
    elif out_fmt == "pt":
        sd = torch.load(out, weights_only=True)
    else:
        sd = {k: torch.from_numpy(v) for k, v in np.load(out).items()}
    target = torch.nn.GRU(4, 6, 2, bidirectional=True)
    target.load_state_dict(sd, strict=True)
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)


def test_convert_whole_file_keeps_every_array(capsys, checkpoint, tmp_path):
    model, path = checkpoint
    out = str(tmp_path / "model.safetensors")
    code, stdout, _ = run(capsys, "convert", path, out)
    assert code == 0
    sd = load_file(out)
    assert set(sd) == {"model." + k for k in model.state_dict()}
    target = Model()
    with torch.no_grad():
        for param in target.parameters():
            param.zero_()  # Model() is seeded: only a real load can make target equal model
    assert all(not v.any() for v in target.state_dict().values())
    target.load_state_dict({k[len("model.") :]: v for k, v in sd.items()}, strict=True)
    torch.testing.assert_close(target.head.weight, model.head.weight, rtol=0, atol=0)
    loaded = target.state_dict()
    assert set(loaded) == set(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(sd["model." + key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    "argv, message",
    [
        (("inspect", "{tmp}/missing.pt"), "no such checkpoint file"),
        (("inspect", "{tmp}/garbage.safetensors"), "not a valid .safetensors file"),
        (
            ("convert", "{ckpt}", "{tmp}/out.pt", "--prefix", "model."),
            "no recurrent layer at prefix 'model.'",
        ),
        (
            ("convert", "{ckpt}", "{tmp}/out.pt", "--prefix", "model.head."),
            "no recurrent layer at prefix 'model.head.'",
        ),
        (("convert", "{ckpt}", "{tmp}/out.txt"), "unsupported checkpoint suffix '.txt'"),
        (("convert", "{ckpt}", "{tmp}/missing/out.pt"), "no such directory '{tmp}/missing'"),
        (("convert", "{ckpt}", "{tmp}/missing/o.safetensors"), "no such directory '{tmp}/missing'"),
        (
            ("convert", "{tmp}/broken.pt", "{tmp}/out.pt", "--prefix", "rnn."),
            "do not form a recurrent layer: Error(s) in loading state_dict for GRU: "
            'Missing key(s) in state_dict: "weight_hh_l1".',
        ),
    ],
)
def test_errors_exit_1_with_one_line(capsys, checkpoint, tmp_path, argv, message):
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 5)
    broken = torch.nn.GRU(2, 3, 2).state_dict()
    del broken["weight_hh_l1"]
    torch.save({"rnn." + k: v for k, v in broken.items()}, tmp_path / "broken.pt")
    argv = [a.format(tmp=tmp_path, ckpt=checkpoint[1]) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith("jaxrnn: error: ") and message.format(tmp=tmp_path) in err
    assert len(err.strip().splitlines()) == 1
    if argv[0] == "convert" and "--prefix" in argv:  # the file the layer was looked for in
        assert argv[1] in err


def test_many_layers_are_listed_briefly_and_broken_ones_on_one_row(capsys, tmp_path):
    """A wrong prefix in a file of 30 layers lists ten and counts the rest; a layer with a
    missing key is one row of the table."""
    many = torch.nn.ModuleList(torch.nn.GRU(2, 3) for _ in range(30)).state_dict()
    torch.save(many, tmp_path / "many.pt")
    code, _, err = run(
        capsys, "convert", str(tmp_path / "many.pt"), str(tmp_path / "o.pt"), "--prefix", "nothere."
    )
    assert code == 1 and "... and 20 more" in err and len(err) < 1000
    broken = torch.nn.LSTM(2, 3, bidirectional=True).state_dict()
    del broken["bias_hh_l0_reverse"]
    torch.save(broken, tmp_path / "broken.pt")
    code, out, _ = run(capsys, "inspect", str(tmp_path / "broken.pt"))
    assert code == 0
    rows = out.strip().splitlines()
    assert len(rows) == 2
    assert rows[1].strip().startswith("'' ") and rows[1].endswith(
        "not a recurrent layer: Error(s) in loading state_dict for LSTM: "
        'Missing key(s) in state_dict: "bias_hh_l0_reverse".'
    )


def test_output_closed_early_exits_quietly(checkpoint):
    """``python -m jaxrnn inspect FILE | head -1``: no 'Broken pipe' error, status 0."""
    _, path = checkpoint
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxrnn", "inspect", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader goes away before the report is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Broken pipe" not in err


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m(checkpoint):
    model, path = checkpoint
    result = subprocess.run(
        [sys.executable, "-m", "jaxrnn", "inspect", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert repr(model.encoder) in result.stdout


@pytest.mark.parametrize("wrapper", ["module.", "_orig_mod.", "state_dict."])
def test_convert_strip_unwraps_a_whole_model(capsys, tmp_path, wrapper):
    """``--strip`` drops a wrapper's prefix (DataParallel, torch.compile, a Lightning
    checkpoint, whose optimizer state it leaves out): the output loads into the bare model."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.GRU(3, 4))
    wrapped = {wrapper + k: v for k, v in net.state_dict().items()}
    if wrapper == "state_dict.":
        wrapped = {"state_dict": net.state_dict(), "optimizer_states": [{"m": torch.ones(3)}]}
    torch.save(wrapped, tmp_path / "in.ckpt")
    out = tmp_path / "out.safetensors"
    code, stdout, err = run(
        capsys, "convert", str(tmp_path / "in.ckpt"), str(out), "--strip", wrapper
    )
    assert code == 0, err
    bare = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.GRU(3, 4))
    bare.load_state_dict(load_file(out), strict=True)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(bare.state_dict()[key], value, rtol=0, atol=0)
    code, _, err = run(capsys, "convert", str(tmp_path / "in.ckpt"), str(out), "--strip", "x.")
    assert code == 1 and "no key starts with prefix 'x.'" in err
    if wrapper != "state_dict.":  # without its dot the keys would start with '.'
        out.unlink()
        code, _, err = run(
            capsys, "convert", str(tmp_path / "in.ckpt"), str(out), "--strip", wrapper[:-1]
        )
        assert code == 1 and f"prefix {wrapper[:-1]!r} leaves keys that start with '.'" in err
        assert f"ends with its dot: {wrapper!r}" in err and not out.exists()
