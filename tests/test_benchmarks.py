"""``benchmarks/run.py``, the speed table of the README, runs end to end on its smallest workload:
every contender is checked equal to torch, timed, and the table and its results file are written.
The timings themselves are never asserted (speed is measured by the benchmarks, not by tests)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_run_prints_and_records_the_table(tmp_path):
    out = tmp_path / "results.md"
    done = _run("--only", "RNN 512", "--reps", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.splitlines()[0].startswith("# jaxrnn speed, 20")
    assert "all contenders checked equal to torch first" in text
    number = r"\d+(?:\.\d+)?"
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith("RNN 512,4,64,128,1"):
            rows[cells[1]] = cells
    assert sorted(rows) == ["fwd", "fwd+bwd"]
    for cells in rows.values():
        assert re.fullmatch(rf"{number} \(\d+\)", cells[2])  # torch ms (threads)
        for ms in cells[3:5]:  # flax, jaxrnn
            assert re.fullmatch(number, ms)
        for ratio in cells[5:7]:
            assert re.fullmatch(rf"{number}x", ratio)
    assert "RNN 512,4,64,128,1" in done.stdout  # the same table is printed


def test_only_matching_nothing_names_the_workloads():
    done = _run("--only", "RNN_TANH")
    assert done.returncode == 2
    assert "--only 'RNN_TANH' matches no workload" in done.stderr
    assert "RNN 512,4,64,128,1" in done.stderr


def test_eager_script_prints_and_records_its_table(tmp_path):
    """``benchmarks/eager.py``: every workload checked equal to torch, timed, one row each."""
    out = tmp_path / "eager.md"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "eager.py"), "--reps", "1", "--calls", "2"]
        + ["--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.splitlines()[0].startswith("# jaxrnn eager calls, 20")
    rows = [line for line in text.splitlines() if re.match(r"\| (LSTM|GRU)", line)]
    assert len(rows) == 6
    number = r"\d+(?:\.\d+)?"
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(re.fullmatch(number, c) for c in cells[1:5]), line
        assert re.fullmatch(rf"{number}x", cells[5]), line
