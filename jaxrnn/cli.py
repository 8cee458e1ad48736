"""``python -m jaxrnn``: inspect and convert checkpoint files from the command line.

    python -m jaxrnn inspect FILE [--json]          list the recurrent layers in FILE
    python -m jaxrnn convert IN OUT [--prefix P]    rewrite IN as OUT (format from the suffix)
    python -m jaxrnn convert IN OUT --strip W       every array under the wrapper prefix W

Formats: .pt/.pth/.bin/.ckpt (read with torch.load(weights_only=True)), .safetensors, .npz.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxrnn import io
from jaxrnn.convert import state_dict_to_params

_NOT_STORED = (
    "not stored in weights: batch_first, dropout, and an RNN's nonlinearity (tanh or relu)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        # the console script's name where it runs as one, else (python -m) the module's
        prog="jaxrnn" if os.path.basename(sys.argv[0]) == "jaxrnn" else "python -m jaxrnn",
        description="Inspect and convert PyTorch recurrent-model checkpoints for jaxrnn.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="list the recurrent layers of a checkpoint file")
    p.add_argument("file", help="a .pt/.pth/.bin/.ckpt, .safetensors or .npz file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser(
        "convert",
        help="rewrite a checkpoint in another format, or extract one layer with --prefix",
    )
    p.add_argument("input", help="the file to read")
    p.add_argument("output", help="the file to write (.safetensors, .pt/.pth/.bin/.ckpt or .npz)")
    p.add_argument(
        "--prefix",
        default="",
        help="keep only the recurrent layer under this key prefix (e.g. 'encoder.lstm.') and "
        "strip the prefix, so the output loads into a bare torch.nn.LSTM/GRU/RNN or cell",
    )
    p.add_argument(
        "--strip",
        default="",
        help="keep every array under this prefix and strip it: a wrapper's ('module.' of "
        "DataParallel, '_orig_mod.' of torch.compile, 'state_dict.' of a Lightning checkpoint), "
        "so the output loads into the unwrapped model",
    )
    return parser


def inspect(path: str, as_json: bool = False) -> str:
    """The report of ``python -m jaxrnn inspect``: the file's recurrent layers and their config."""
    state_dict = io.load_state_dict_file(path)
    layers = io.find_recurrent_layers(state_dict)
    if as_json:
        return json.dumps(
            dict(
                file=path,
                num_arrays=len(state_dict),
                layers=[
                    dict(
                        prefix=layer.prefix,
                        cls=layer.cls,
                        config=layer.config,
                        keys=list(layer.keys),
                        error=layer.error,
                    )
                    for layer in layers
                ],
            ),
            indent=2,
        )
    ok = [layer for layer in layers if layer.error is None]
    in_layers = sum(len(layer.keys) for layer in ok)
    lines = [
        f"{path}: {len(state_dict)} arrays, {len(ok)} recurrent layer(s) "
        f"({in_layers} arrays), {len(state_dict) - in_layers} other array(s)"
    ]
    width = max([len(repr(layer.prefix)) for layer in layers] + [6])
    for layer in layers:
        lines.append(f"  {layer.prefix!r:<{width}}  {layer.describe()}")
    if ok:
        lines.append(f"({_NOT_STORED})")
    return "\n".join(lines)


def convert(input: str, output: str, prefix: str = "", strip: str = "") -> str:
    """``python -m jaxrnn convert``: read ``input``, write ``output``; returns a summary line.
    ``strip``: keep the arrays under that prefix, without it (before ``prefix`` applies)."""
    state_dict = io.load_state_dict_file(input, prefix=strip)
    what = ""
    if prefix:
        try:
            what = " " + io.recurrent_layer(state_dict, prefix).describe()
        except ValueError as e:
            raise ValueError(f"{input}: {e}") from None
        state_dict = state_dict_to_params(state_dict, prefix)
    io.save_state_dict_file(state_dict, output)
    return f"wrote {output}: {len(state_dict)} arrays{what}"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a failed command, 2 bad usage)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            print(inspect(args.file, args.json))
        else:
            print(convert(args.input, args.output, args.prefix, args.strip))
        sys.stdout.flush()
    except BrokenPipeError:  # `python -m jaxrnn inspect big.pt | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, ValueError, TypeError, ImportError) as e:
        message = " ".join(line.strip() for line in str(e).splitlines())
        print(f"jaxrnn: error: {message}", file=sys.stderr)
        return 1
    return 0
