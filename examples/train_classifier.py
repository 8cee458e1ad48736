"""Train a bidirectional LSTM sequence classifier with jaxrnn, Flax NNX and optax.

The task needs memory and variable lengths: each sequence (length 8 to 64, padded to 64) holds the
symbols ``a`` and ``b`` among distractors, and the label says whether ``a`` occurs more often than
``b`` (ties never happen; most sequences differ by one or two). The model reads the padded batch
with ``seq_lengths=``, so each direction's final state is taken at the sequence's own last valid
step, exactly as a packed sequence in PyTorch:

    Embed(10, 32) -> jaxrnn.LSTM(32, 64, num_layers=2, bidirectional=True, dropout=0.1)
                  -> [h_n forward ; h_n backward] of the top layer -> Linear(128, 2)

Everything a training script needs is here: one ``nnx.jit``-compiled train step (optax Adam with
gradient clipping), a tqdm bar with loss and throughput, evaluation on a held-out set, checkpoints
(safetensors, written with ``jaxrnn.save_state_dict_file``) that resume on the same loss curve,
an export of the trained LSTM that ``torch.nn.LSTM.load_state_dict`` accepts, and data parallelism
over every device with ``jax.sharding`` (``--data-parallel``: the batch is split over a ``Mesh``,
the parameters are replicated, XLA inserts the gradient all-reduce).

Usage:
    python examples/train_classifier.py                  # defaults: >= 99 % accuracy in 500 steps (a run by hand)
    python examples/train_classifier.py --quick          # a few seconds (what the tests run)
    python examples/train_classifier.py --ckpt-dir runs/a --stop-at 200  # interrupted at 200 ...
    python examples/train_classifier.py --ckpt-dir runs/a                # ... resumes there
    python examples/train_classifier.py --data-parallel  # shard the batch over all devices
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python examples/train_classifier.py --data-parallel  # try it on 8 simulated CPU devices

On several hosts, start the same command on every host with ``--distributed`` (it calls
``jax.distributed.initialize()``; see README.md, section Training).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

import jaxrnn

PAD, A, B = 0, 1, 2  # token ids; 3..vocab-1 are distractors
SYMBOLS = ".ab" + "cdefghijklmnopqrstuvwxyz"


@dataclasses.dataclass(frozen=True)
class Config:
    steps: int = 500  # the length of the run (and of the learning-rate schedule)
    stop_at: int | None = None  # stop after this step, as if interrupted (then resume)
    batch_size: int = 64
    lr: float = 3e-3
    min_len: int = 8
    max_len: int = 64
    vocab: int = 10
    embed: int = 32
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    eval_size: int = 2048
    eval_every: int = 100
    log_every: int = 25
    seed: int = 0
    ckpt_dir: str | None = None
    ckpt_every: int = 100
    data_parallel: bool = False
    target_accuracy: float = 0.99


QUICK = dict(
    steps=40,
    lr=1e-2,
    batch_size=16,
    max_len=16,
    embed=8,
    hidden=16,
    eval_size=256,
    eval_every=20,
    log_every=10,
    ckpt_every=20,
    target_accuracy=0.0,
)


# ----------------------------------------------------------------------------------------------
# data: a pure function of (seed, step), so a resumed run sees exactly the batches it would have


def make_batch(cfg: Config, seed: int, index: int, size: int):
    """``size`` sequences: tokens ``(N, max_len)`` int32 padded with 0, lengths ``(N,)``, labels."""
    rng = np.random.default_rng([seed, index])
    lengths = rng.integers(cfg.min_len, cfg.max_len + 1, size)
    # each position: a or b with probability 1/4 each, else a distractor
    kind = rng.choice(3, size=(size, cfg.max_len), p=[0.25, 0.25, 0.5])
    tokens = np.where(kind == 0, A, np.where(kind == 1, B, rng.integers(3, cfg.vocab, kind.shape)))
    valid = np.arange(cfg.max_len)[None, :] < lengths[:, None]
    tokens = np.where(valid, tokens, PAD)
    diff = ((tokens == A).sum(1) - (tokens == B).sum(1)).astype(np.int64)
    # break ties by changing the first token: a <-> b, or a distractor into a random symbol
    first = tokens[:, 0]
    flip = np.where(first == A, B, np.where(first == B, A, rng.choice([A, B], size)))
    tokens[:, 0] = np.where(diff == 0, flip, first)
    labels = ((tokens == A).sum(1) > (tokens == B).sum(1)).astype(np.int32)
    return tokens.astype(np.int32), lengths.astype(np.int32), labels


# ----------------------------------------------------------------------------------------------
# model


class Classifier(nnx.Module):
    def __init__(self, cfg: Config, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(cfg.vocab, cfg.embed, rngs=rngs)
        self.rnn = jaxrnn.LSTM(
            cfg.embed,
            cfg.hidden,
            cfg.layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout,
            rngs=rngs,
        )
        self.head = nnx.Linear(2 * cfg.hidden, 2, rngs=rngs)

    def __call__(self, tokens, lengths, *, dropout_key=None):
        """Logits ``(N, 2)``; dropout between the LSTM layers when ``dropout_key`` is given."""
        x = self.embed(tokens)
        _, (h_n, _) = self.rnn(
            x, seq_lengths=lengths, deterministic=dropout_key is None, rngs=dropout_key
        )
        # h_n: (num_layers * 2, N, H); the last two rows are the top layer's two directions,
        # each taken at the sequence's own end (forward: step length-1, backward: step 0)
        return self.head(jnp.concatenate([h_n[-2], h_n[-1]], axis=-1))


@functools.cache  # one object per setting: nnx.jit then reuses its compilation in a new run
def make_tx(lr: float, steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(lr, steps, alpha=0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def make_optimizer(model: Classifier, cfg: Config) -> nnx.Optimizer:
    return nnx.Optimizer(model, make_tx(cfg.lr, cfg.steps), wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, tokens, lengths, labels, key):
    def loss_fn(model):
        logits = model(tokens, lengths, dropout_key=key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, tokens, lengths):
    """Predicted classes ``(N,)`` (no dropout)."""
    return model(tokens, lengths).argmax(-1)


# ----------------------------------------------------------------------------------------------
# data parallelism: a 1-D mesh over every device, batch split along it, parameters replicated


def make_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def to_global(arrays, mesh: Mesh | None):
    """Place one global batch: on the default device, or sharded over ``mesh`` along axis 0.

    Each process passes its own slice of the global batch (all of it on one host); the arrays
    this returns are global ``jax.Array`` s whose rows live on the devices that own them.
    """
    if mesh is None:
        return tuple(jnp.asarray(a) for a in arrays)
    sharding = NamedSharding(mesh, P("data"))
    return tuple(jax.make_array_from_process_local_data(sharding, a) for a in arrays)


def local_rows(size: int) -> slice:
    """This process's rows of a global batch of ``size`` (all of them on a single host)."""
    per = size // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def replicate(tree, mesh: Mesh):
    """Copy every array of ``tree`` (NNX state) to all devices of ``mesh``, on every host.

    Each process holds the same values (same seed or same checkpoint) and contributes its copy.
    """
    sharding = NamedSharding(mesh, P())

    def put(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # RNG keys: replicate their raw bits
            return jax.random.wrap_key_data(
                put(jax.random.key_data(x)), impl=jax.random.key_impl(x)
            )
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(put, tree)


# ----------------------------------------------------------------------------------------------
# checkpoints: model parameters and optimizer state in one safetensors file


def _training_state(model, optimizer):
    return {"model": nnx.state(model, nnx.Param), "optimizer": nnx.state(optimizer)}


def _key(path) -> str:
    """A leaf's name, as torch's state dicts name it (no trailing ``.value`` of the variable), so
    that ``python -m jaxrnn inspect`` finds the LSTM under ``model.rnn.``."""
    return jax.tree_util.keystr(path, simple=True, separator=".").removesuffix(".value")


def save_checkpoint(path: str, model, optimizer) -> None:
    """Write ``{'model.rnn.weight_ih_l0': array, 'optimizer.step': ..., ...}``."""
    if jax.process_index() != 0:
        return
    leaves = jax.tree_util.tree_leaves_with_path(_training_state(model, optimizer))
    # addressable_data(0): a replicated array's local copy, also when it spans several hosts
    arrays = {_key(p): np.asarray(x.addressable_data(0)) for p, x in leaves}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    jaxrnn.save_state_dict_file(arrays, path)  # written to a temporary file, then renamed


def restore_checkpoint(path: str, model, optimizer) -> int:
    """Load a :func:`save_checkpoint` file into ``model`` and ``optimizer``; returns the step."""
    arrays = jaxrnn.load_state_dict_file(path)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(_training_state(model, optimizer))
    # reshape defensively to the live leaf shapes (files written before 0-d arrays were kept 0-d)
    values = [jnp.asarray(arrays[_key(p)]).reshape(x.shape) for p, x in leaves]
    restored = jax.tree.unflatten(treedef, values)
    nnx.update(model, restored["model"])
    nnx.update(optimizer, restored["optimizer"])
    return int(optimizer.step[...])


# ----------------------------------------------------------------------------------------------
# the loop


@dataclasses.dataclass
class Result:
    losses: dict[int, float]  # step -> training loss (steps run in this call only)
    accuracy: float
    model: Classifier
    start_step: int
    end_step: int
    mesh: Mesh | None


EVAL_BATCH = 256


def eval_batch_size(mesh: Mesh | None) -> int:
    """``EVAL_BATCH``, rounded down to a multiple of the devices it is split over."""
    return EVAL_BATCH if mesh is None else max(EVAL_BATCH - EVAL_BATCH % mesh.size, mesh.size)


def eval_batch(cfg: Config, index: int, mesh: Mesh | None):
    """Batch ``index`` of the held-out set (its own random stream): host arrays, device arrays."""
    size = eval_batch_size(mesh)
    host = make_batch(cfg, cfg.seed + 1, index, size)
    rows = local_rows(size)
    return host, to_global([a[rows] for a in host], mesh)


def evaluate(model, cfg: Config, mesh: Mesh | None) -> float:
    correct = 0
    size = eval_batch_size(mesh)
    batches = max(cfg.eval_size // size, 1)
    for i in range(batches):
        _, (tokens, lengths, labels) = eval_batch(cfg, i, mesh)
        correct += int((predict(model, tokens, lengths) == labels).sum())
    return correct / (batches * size)


def train(cfg: Config, *, progress: bool = True) -> Result:
    mesh = make_mesh() if cfg.data_parallel else None
    if mesh is not None and cfg.batch_size % mesh.size:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of {mesh.size} devices")
    model = Classifier(cfg, rngs=nnx.Rngs(cfg.seed))
    optimizer = make_optimizer(model, cfg)
    ckpt = os.path.join(cfg.ckpt_dir, "checkpoint.safetensors") if cfg.ckpt_dir else None
    start = restore_checkpoint(ckpt, model, optimizer) if ckpt and os.path.exists(ckpt) else 0
    if mesh is not None:
        nnx.update(optimizer, replicate(nnx.state(optimizer), mesh))
        nnx.update(model, replicate(nnx.state(model), mesh))
    dropout_base = jax.random.key(cfg.seed + 2)

    losses: dict[int, float] = {}
    pending = []  # (step, loss on device): fetched every log_every steps, not every step
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="train", unit="step")
    tick, tick_step = time.perf_counter(), start
    end = cfg.steps if cfg.stop_at is None else min(cfg.stop_at, cfg.steps)
    for step in range(start, end):
        tokens, lengths, labels = make_batch(cfg, cfg.seed, step, cfg.batch_size)
        rows = local_rows(cfg.batch_size)
        batch = to_global((tokens[rows], lengths[rows], labels[rows]), mesh)
        key = jax.random.fold_in(dropout_base, step)
        pending.append((step, train_step(model, optimizer, *batch, key)))
        done = step + 1
        if done % cfg.log_every == 0 or done == end:
            for s, loss in pending:
                losses[s] = float(loss)
            pending.clear()
            now = time.perf_counter()
            rate = (done - tick_step) * cfg.batch_size / (now - tick)
            tick, tick_step = now, done
            bar.set_postfix(loss=f"{losses[step]:.4f}", seq_per_s=f"{rate:,.0f}")
            bar.update(done - bar.n)
        if done % cfg.eval_every == 0 and done != end:
            accuracy = evaluate(model, cfg, mesh)  # on every process: it runs collectives
            if progress:
                bar.write(f"step {done}: eval accuracy {accuracy:.4f}")
        if ckpt and (done % cfg.ckpt_every == 0 or done == end):
            save_checkpoint(ckpt, model, optimizer)
    bar.close()
    accuracy = evaluate(model, cfg, mesh)
    return Result(losses, accuracy, model, start, max(start, end), mesh)


def show_samples(model, cfg: Config, mesh: Mesh | None, n: int = 6) -> None:
    (tokens, lengths, labels), device_batch = eval_batch(cfg, 0, mesh)
    preds = np.asarray(predict(model, *device_batch[:2]))
    for t, n_, y, p in zip(tokens[:n], lengths[:n], labels[:n], preds[:n], strict=True):
        text = "".join(SYMBOLS[min(int(c), len(SYMBOLS) - 1)] for c in t[:n_])
        a, b = int((t == A).sum()), int((t == B).sum())
        verdict = "ok" if y == p else "WRONG"
        print(
            f"  {text:<{cfg.max_len}}  a={a:2d} b={b:2d}  predicted {'a' if p else 'b'}: {verdict}"
        )


def parse_args(argv=None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Config()
    for field in dataclasses.fields(Config):
        if field.name in ("data_parallel", "ckpt_dir", "stop_at"):
            continue
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(getattr(defaults, field.name)),
            default=None,
            help=f"default {getattr(defaults, field.name)}",
        )
    parser.add_argument("--ckpt-dir", default=None, help="save here; resume if it holds one")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this step")
    parser.add_argument(
        "--data-parallel", action="store_true", help="shard the batch over all devices"
    )
    parser.add_argument(
        "--distributed", action="store_true", help="multi-host: jax.distributed.initialize()"
    )
    parser.add_argument("--coordinator", help="--distributed: host:port of process 0")
    parser.add_argument("--num-processes", type=int, help="--distributed: number of processes")
    parser.add_argument("--process-id", type=int, help="--distributed: this process, 0 to n-1")
    parser.add_argument("--quick", action="store_true", help="a tiny run that takes seconds")
    args = parser.parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    values.update(
        {k: v for k, v in vars(args).items() if v is not None and k in Config.__annotations__}
    )
    values["data_parallel"] = args.data_parallel
    distributed = None
    if args.distributed:  # None values: detected on Cloud TPU, SLURM and Open MPI
        distributed = dict(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    return Config(**values), distributed


def main(argv=None) -> Result:
    cfg, distributed = parse_args(argv)
    if distributed is not None:  # one process per host, before any other JAX call
        jax.distributed.initialize(**distributed)
    devices = jax.devices()
    print(
        f"{len(devices)} {devices[0].platform} device(s), {jax.process_count()} process(es); "
        + (
            f"batch {cfg.batch_size} sharded over {len(devices)}"
            if cfg.data_parallel
            else "one device"
        )
    )
    result = train(cfg, progress=jax.process_index() == 0)
    print(f"eval accuracy after {result.end_step} steps: {result.accuracy:.4f}")
    if jax.process_count() == 1:  # with several hosts, no process holds the whole model alone
        show_samples(result.model, cfg, result.mesh)
        if cfg.ckpt_dir:
            path = os.path.join(cfg.ckpt_dir, "lstm_torch.safetensors")
            # torch.nn.LSTM(32, 64, 2, batch_first=True, bidirectional=True).load_state_dict(...)
            jaxrnn.save_state_dict_file(result.model.rnn, path)
            print(f"LSTM weights for torch.nn.LSTM.load_state_dict: {path}")
    if result.end_step < cfg.steps:
        print(f"stopped at step {result.end_step}; run again with the same --ckpt-dir to resume")
    elif result.accuracy < cfg.target_accuracy:
        raise SystemExit(f"accuracy {result.accuracy:.4f} below the target {cfg.target_accuracy}")
    return result


if __name__ == "__main__":
    main()
