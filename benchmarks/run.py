"""Speed of jaxrnn against PyTorch's CPU kernels and Flax's nn.RNN: one table, float32.

For every workload (``T, B, I, H, layers``) and mode (``fwd``: inference forward; ``fwd+bwd``: a
training step, value and gradient of ``sum(output * w)`` with respect to the parameters) it builds
the three contenders from the same torch weights, checks their outputs, losses and (jaxrnn's)
gradients equal torch's, then times them interleaved in one process (``--reps`` rounds,
contenders in rotating order, each timed call right after an untimed call of the same contender,
``--warm-calls``, so that each is timed in its steady state rather than with the caches and threads
the previous library left; milliseconds are medians, the ratios the median of per-round ratios,
which cancels the machine's drift between rounds). torch runs at its best thread count
for the workload (1 or all cores, chosen by a short trial and reported). GFLOP/s count the
matmul FLOPs (x3 for forward + backward) and are compared to this machine's float32 GEMM rate
measured at the start (best of JAX and torch on a 2048^2 matmul), for every contender: the same
FLOPs in its time, as a share of that rate, shows how close each one is to the machine's matmul
bound. Compile seconds are jaxrnn's (forward + training step). Both JAX contenders (and the notes'
compiles) use the same XLA compiler options: by default ``jaxrnn.cpu_compiler_options()``, what
the README recommends (512-bit vectors on an AVX-512 CPU, else none); ``--compiler-options none``
compiles with XLA's defaults. The header records which.

The notes under the table show the compile time at two sequence lengths (flat: the time loop
is a ``while`` loop) and the compiled temporary memory of a training step at ``T = 1024`` with and
without ``remat``. The output is printed and written to ``benchmarks/results/<date>-<machine>.md``
(``-run2``, ``-run3``, ... for later runs of the same day); a subset run (``--only``) is
recorded only where ``--out`` names a file.

Usage: ``python benchmarks/run.py [--quick] [--reps N] [--only SUBSTRING] [--no-flax]
[--compiler-options recommended|none]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _contenders import Workload, build, check_against_torch  # noqa: E402

import jaxrnn  # noqa: E402
from jaxrnn import functional as F  # noqa: E402
from jaxrnn._params import layer_param_shapes  # noqa: E402

# The workloads, plus GRU/RNN equivalents. ``quick`` marks the --quick subset.
WORKLOADS = [
    (Workload("LSTM", 128, 32, 128, 256, 1), True),
    (Workload("LSTM", 128, 64, 256, 512, 2), False),
    (Workload("LSTM", 128, 32, 128, 256, 2, True), True),
    (Workload("LSTM", 512, 4, 64, 128, 1), True),
    (Workload("GRU", 128, 32, 128, 256, 1), True),
    (Workload("GRU", 128, 64, 256, 512, 2), False),
    (Workload("GRU", 128, 32, 128, 256, 2, True), False),
    (Workload("GRU", 512, 4, 64, 128, 1), False),
    (Workload("RNN_TANH", 128, 32, 128, 256, 1), True),
    (Workload("RNN_TANH", 512, 4, 64, 128, 1), False),
]


def machine() -> str:
    """The CPU's name, family and model and its widest vector extension (a VM's "AMD EPYC" alone
    names neither the generation nor its GEMM rate: Zen 4 and Zen 5 hosts both report it), and
    the number of cores."""
    cpu = platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get("model name", cpu)
    flags = fields.get("flags", "").split()
    vector = next((f for f in ("avx512f", "avx2", "avx") if f in flags), None)
    detail = (
        [f"family {fields['cpu family']}, model {fields['model']}"] if "model" in fields else []
    )
    detail += [vector] if vector else []
    return f"{cpu}" + (f" ({'; '.join(detail)})" if detail else "") + f", {os.cpu_count()} cores"


def gemm_rate(n: int = 2048, reps: int = 5) -> tuple[float, str]:
    """Best float32 GEMM GFLOP/s of JAX and torch (any thread count) on an n x n matmul."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    f = jax.jit(jnp.matmul)
    aj = jnp.asarray(a)
    f(aj, aj).block_until_ready()
    best = {"jax": min(_time(lambda: f(aj, aj).block_until_ready()) for _ in range(reps))}
    at = torch.from_numpy(a)
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        at @ at
        best[f"torch/{threads}t"] = min(_time(lambda: at @ at) for _ in range(reps))
    who = min(best, key=best.get)
    return 2.0 * n**3 / best[who] / 1e9, who


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_torch_threads(fn, reps: int = 3) -> int:
    candidates = sorted({1, os.cpu_count() or 1})
    times = {}
    for threads in candidates:
        torch.set_num_threads(threads)
        fn()
        times[threads] = min(_time(fn) for _ in range(reps))
    return min(times, key=times.get)


# Untimed calls of a contender right before each of its timed calls (--warm-calls): in a round
# each contender otherwise starts right after another library's call, with its weights and
# buffers evicted from the caches and its threads asleep, while a training or inference loop
# calls the same step back to back. Measured on this VM (a script outside the repository, 9
# rounds each way): timed cold, the rows moved by up to 20% (the LSTM 512,4,64,128 forward:
# torch 2.75 -> 2.22 ms warm, jaxrnn 2.29 -> 2.29; the RNN 128,32,128,256 forward: jaxrnn 4.59
# -> 3.94, Flax 4.20 -> 4.01), depending on whose call came before.
WARM_CALLS = 1


def interleaved_rounds(fns: dict, reps: int, warm: int = WARM_CALLS) -> dict:
    """Seconds per callable and round, ``{name: [t_0, ..., t_reps-1]}``; each round runs all of
    them in rotating order, each timed call right after ``warm`` untimed calls of the same
    callable (after one untimed warm-up call each before the first round)."""
    names = list(fns)
    for fn in fns.values():
        fn()
    times = {k: [] for k in names}
    for r in range(reps):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            for _ in range(warm):
                fns[k]()
            times[k].append(_time(fns[k]))
    return times


def interleaved(fns: dict, reps: int) -> dict:
    """Median seconds per callable over :func:`interleaved_rounds`."""
    return {k: float(np.median(v)) for k, v in interleaved_rounds(fns, reps).items()}


def ratio(times: dict, num: str, den: str) -> float:
    """Median over rounds of ``num``'s time over ``den``'s in the same round: the runs compared
    are seconds apart, so the machine's drift between rounds cancels."""
    if num not in times:
        return float("nan")
    return float(np.median(np.asarray(times[num]) / np.asarray(times[den])))


def run_workload(
    w: Workload, reps: int, with_flax: bool, peak: float, options: dict, warm: int = WARM_CALLS
) -> list[dict]:
    contenders, tmod = build(w, with_flax=with_flax, compiler_options=options)
    check_against_torch(contenders)
    rows = []
    for mode in ("fwd", "fwd+bwd"):
        attr = "fwd" if mode == "fwd" else "train"
        threads = best_torch_threads(getattr(contenders[0], attr))
        torch.set_num_threads(threads)
        rounds = interleaved_rounds({c.name: getattr(c, attr) for c in contenders}, reps, warm)
        ms = {k: float(np.median(v)) * 1e3 for k, v in rounds.items()}
        flops = w.flops(mode != "fwd")
        gflops = flops / (ms["jaxrnn"] / 1e3) / 1e9
        # each contender's share of the GEMM rate (the same FLOPs): how far any of them is from
        # the machine's matmul bound
        share = {k: 100.0 * flops / (v / 1e3) / 1e9 / peak for k, v in ms.items()}
        rows.append(
            dict(
                workload=w.name,
                mode=mode,
                torch=ms["torch"],
                threads=threads,
                flax=ms.get("flax", float("nan")),
                jaxrnn=ms["jaxrnn"],
                vs_torch=ratio(rounds, "torch", "jaxrnn"),
                vs_flax=ratio(rounds, "flax", "jaxrnn"),
                gflops=gflops,
                share=share,
                compile=contenders[-1].compile_s,
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    head = (
        "| workload (T,B,I,H,layers) | mode | torch ms (threads) | flax ms | jaxrnn ms "
        "| torch/jaxrnn | flax/jaxrnn | jaxrnn GFLOP/s | % of GEMM (torch/flax/jaxrnn) "
        "| compile s |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['torch']:.1f} ({r['threads']}) "
            f"| {r['flax']:.1f} | {r['jaxrnn']:.1f} | {r['vs_torch']:.2f}x "
            f"| {r['vs_flax']:.2f}x | {r['gflops']:.1f} | {_shares(r['share'])} "
            f"| {r['compile']:.1f} |"
        )
    return "\n".join(lines)


def _shares(share: dict) -> str:
    return "/".join(f"{share[k]:.0f}" if k in share else "-" for k in ("torch", "flax", "jaxrnn"))


def compile_seconds(length: int, w: Workload, options: dict) -> float:
    """Seconds to compile jaxrnn's training step of ``w`` at sequence length ``length``."""
    shapes = layer_param_shapes(w.mode, w.input_size, w.hidden, w.layers, True, w.bidirectional)
    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
    x = jax.ShapeDtypeStruct((length, w.batch, w.input_size), jnp.float32)

    def loss(params, x):
        return jnp.sum(F.rnn(params, x, mode=w.mode)[0])

    t0 = time.perf_counter()
    jax.jit(jax.value_and_grad(loss), compiler_options=options).lower(params, x).compile()
    return time.perf_counter() - t0


def temp_mib(w: Workload, length: int, remat, options: dict) -> float:
    """Compiled temporary memory (MiB) of jaxrnn's training step at ``length`` steps."""
    shapes = layer_param_shapes(w.mode, w.input_size, w.hidden, w.layers, True, w.bidirectional)
    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
    x = jax.ShapeDtypeStruct((length, w.batch, w.input_size), jnp.float32)

    def loss(params, x):
        out, state = F.rnn(params, x, mode=w.mode, remat=remat)
        return jnp.sum(state[0] if w.mode == "LSTM" else state)

    compiled = jax.jit(jax.grad(loss), compiler_options=options).lower(params, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def allocator_settings() -> str:
    """The environment variables that change how glibc's malloc serves this process (all three
    contenders' temporaries), e.g. ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``; see the README's
    "Huge pages" note."""
    names = sorted(k for k in os.environ if k == "GLIBC_TUNABLES" or k.startswith("MALLOC_"))
    return ", ".join(f"{k}={os.environ[k]!r}" for k in names) or "glibc defaults"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset, fewer repetitions")
    parser.add_argument("--reps", type=int, default=None, help="timed runs per contender")
    parser.add_argument("--only", default=None, help="workloads whose name contains this")
    parser.add_argument("--no-flax", action="store_true", help="skip the flax contender")
    parser.add_argument(
        "--warm-calls",
        type=int,
        default=WARM_CALLS,
        help="untimed calls of a contender right before each timed one (0: timed right after "
        "another contender's call)",
    )
    parser.add_argument("--out", default=None, help="results file (default: results/<date>-...)")
    parser.add_argument(
        "--compiler-options",
        choices=("recommended", "none"),
        default="recommended",
        help="XLA options of both JAX contenders: jaxrnn.cpu_compiler_options() or XLA's defaults",
    )
    args = parser.parse_args(argv)
    options = jaxrnn.cpu_compiler_options() if args.compiler_options == "recommended" else {}
    if args.warm_calls < 0:
        parser.error(f"--warm-calls must be 0 or more, got {args.warm_calls}")
    reps = args.reps or (5 if args.quick else 7)
    workloads = [w for w, quick in WORKLOADS if quick or not args.quick]
    if args.only:
        names = [w.name for w in workloads]
        workloads = [w for w in workloads if args.only in w.name]
        if not workloads:
            parser.error(f"--only {args.only!r} matches no workload; they are: {', '.join(names)}")

    today = datetime.date.today().isoformat()
    peak, peak_who = gemm_rate()
    header = [
        f"# jaxrnn speed, {today}",
        "",
        f"- machine: {machine()}",
        f"- versions: jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__}, "
        f"jaxrnn {jaxrnn.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        f"- allocator settings: {allocator_settings()}",
        f"- command: python benchmarks/run.py {' '.join(sys.argv[1:] if argv is None else argv)}",
        f"- compiler options of both JAX contenders: {options} (--compiler-options "
        f"{args.compiler_options})",
        f"- float32 GEMM rate (2048^2): {peak:.0f} GFLOP/s ({peak_who})",
        f"- {reps} interleaved rounds, each timed call after {args.warm_calls} untimed call(s) of "
        "the same contender: ms are medians, torch/jaxrnn and flax/jaxrnn the median "
        "of the per-round ratios (> 1: jaxrnn is faster); all contenders checked equal to torch "
        "first",
        "",
    ]
    print("\n".join(header), flush=True)

    rows = []
    for w in workloads:
        t0 = time.perf_counter()
        new = run_workload(w, reps, not args.no_flax, peak, options, args.warm_calls)
        rows.extend(new)
        for r in new:
            print(
                f"  {r['workload']:<26} {r['mode']:<8} torch {r['torch']:8.1f} ms "
                f"({r['threads']}t)  flax {r['flax']:8.1f}  jaxrnn {r['jaxrnn']:8.1f}  "
                f"[{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
    table = format_table(rows)

    notes = ["", "Notes:"]
    w = Workload("LSTM", 128, 32, 128, 256, 1)
    short, long_ = (128, 2048)
    notes.append(
        f"- compile time of jaxrnn's training step ({w.name.replace(' 128,', ' T,', 1)}): "
        f"T={short}: {compile_seconds(short, w, options):.1f} s, T={long_}: "
        f"{compile_seconds(long_, w, options):.1f} s"
    )
    if not args.quick:
        big = Workload("LSTM", 128, 64, 256, 512, 2)
        notes.append(
            f"- compile time of the largest model ({big.name}): "
            f"{compile_seconds(big.steps, big, options):.1f} s"
        )
    mem = Workload("LSTM", 1024, 32, 128, 256, 1)
    plain, chunked = temp_mib(mem, 1024, False, options), temp_mib(mem, 1024, True, options)
    notes.append(
        f"- compiled temporary memory of a training step (loss on h_n), LSTM T=1024, B=32, "
        f"I=128, H=256: {plain:.0f} MiB without remat, {chunked:.0f} MiB with remat=True"
    )
    text = "\n".join(header) + "\n" + table + "\n" + "\n".join(notes) + "\n"
    print("\n" + table + "\n" + "\n".join(notes), flush=True)

    if args.out or not args.only:  # a subset of the table: printed, recorded only with --out
        record(text, args.out)


def record(text: str, out: str | None, kind: str = "") -> None:
    """Write a results file: ``out``, or ``results/<date>-<machine>[-kind].md`` (``-run2``,
    ``-run3``, ... for later runs of the same day, which keep the earlier ones)."""
    if out:
        path = Path(out)
    else:
        today = datetime.date.today().isoformat()
        slug = re.sub(r"[^a-z0-9]+", "-", machine().lower()).strip("-") + kind
        path = Path(__file__).resolve().parent / "results" / f"{today}-{slug}.md"
        run = 2
        while path.exists():  # another run today: keep it
            path = path.with_name(f"{today}-{slug}-run{run}.md")
            run += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
