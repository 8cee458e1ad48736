"""The documentation runs as written: docstring examples, the README's Python blocks (in order, as
one session), the demo behind ``scripts/demo.sh`` and the packed-sequence example."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCTESTED = [
    "jaxrnn.convert",
    "jaxrnn.interop",
    "jaxrnn.io",
    "jaxrnn.linen",
    "jaxrnn.nnx",
    "jaxrnn.utils.rnn",
]


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(name), optionflags=flags, verbose=False)
    assert result.attempted > 0, f"{name} has no examples left: update DOCTESTED"
    assert result.failed == 0


def test_every_module_with_examples_is_doctested():
    with_examples = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "jaxrnn").rglob("*.py")
        if ">>>" in p.read_text()
    }
    assert with_examples == set(DOCTESTED)


class _ReadmeModel(torch.nn.Module):
    """The model behind the README's ``model.pt``: an LSTM at ``encoder.lstm.`` and a head."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.lstm = torch.nn.LSTM(40, 64, 2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(128, 3)


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    """Each block continues the session of the ones before it, as a reader would type them. The
    checkpoint block reads ``model.pt``: here a torch model shaped like the one its comments
    describe, so the printed description is checked too."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 10
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")

    torch.save(_ReadmeModel().state_dict(), tmp_path / "model.pt")
    session: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), session)
    assert "encoder.lstm. LSTM(40, 64, num_layers=2, bidirectional=True)" in capsys.readouterr().out


def test_readme_command_lines_run(tmp_path, monkeypatch, capsys):
    """The README's ``python -m jaxrnn`` lines, run in-process on the files they name:
    ``model.pt`` as above, ``last.ckpt`` a training checkpoint holding it under ``state_dict``.
    What they write loads into torch."""
    from jaxrnn.cli import main

    text = (ROOT / "README.md").read_text()
    lines = [
        line.split("#")[0].split()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.startswith("python -m jaxrnn ")
    ]
    assert len(lines) >= 4
    monkeypatch.chdir(tmp_path)
    model = _ReadmeModel()
    torch.save(model.state_dict(), "model.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, "last.ckpt")
    for argv in lines:
        assert main(argv[3:]) == 0, argv
    out = capsys.readouterr().out
    assert "'encoder.lstm.'  LSTM(40, 64, num_layers=2, bidirectional=True)" in out

    from safetensors.torch import load_file

    lstm = torch.nn.LSTM(40, 64, 2, batch_first=True, bidirectional=True)
    lstm.load_state_dict(load_file("lstm.safetensors"), strict=True)
    assert torch.equal(lstm.weight_hh_l1_reverse, model.encoder.lstm.weight_hh_l1_reverse)
    assert set(load_file("model.safetensors")) == set(model.state_dict())
    model.load_state_dict(torch.load("model.pt", weights_only=True), strict=True)


def _run_example(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _reported_differences(text: str) -> list[float]:
    """Every ``max |... - torch| ... = 1.2e-07`` the example prints."""
    return [float(v) for v in re.findall(r"max \|.*?=\s*([0-9.]+e[-+][0-9]+)", text)]


def test_demo_prints_torch_parity():
    """``bash scripts/demo.sh`` runs ``examples/demo.py``: converted models with their output, final
    state, parameter- and input-gradient differences to torch, and a packed encoder's."""
    diffs = _reported_differences(_run_example("demo.py"))
    assert len(diffs) >= 14
    assert max(diffs) < 1e-5


def test_packed_encoder_example():
    out = _run_example("packed_encoder.py")
    diffs = [float(v) for v in re.findall(r"([0-9.]+e[-+][0-9]+)", out)]
    assert len(diffs) >= 4
    assert max(diffs) < 1e-5
    assert "compilations for 2 batches of different lengths: 1" in out
