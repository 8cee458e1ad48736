"""Checkpoint files <-> flat state dicts, and the recurrent layers inside a model's checkpoint.

Reads PyTorch files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``: ``torch.load(weights_only=True)``, so
loading never runs code from the file; TorchScript archives of ``torch.jit.save`` with
``torch.jit.load``, their parameters and buffers), ``.safetensors`` (no torch needed) and ``.npz`` into a
flat ``{torch_name: numpy array}`` dict, writes a jaxrnn model back as a file that
``torch.nn.Module.load_state_dict(strict=True)`` accepts, and finds the RNN/LSTM/GRU layers and
cells of a full model's checkpoint from their keys and shapes.
"""

from __future__ import annotations

import functools
import os
import pickle
import secrets
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxrnn import _checks, _params, convert

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
NUMPY_SUFFIXES = (".npz",)
_SUPPORTED = ", ".join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES + NUMPY_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# reading


def load_state_dict_file(path: str | os.PathLike, prefix: str = "") -> dict[str, np.ndarray]:
    """Read a checkpoint file as a flat state dict of numpy arrays.

    Args:
        path: a PyTorch file (``.pt``/``.pth``/``.bin``/``.ckpt``, or any other name whose content
            is one, such as ``model_best.pth.tar``: read with
            ``torch.load(weights_only=True)``: a file that needs arbitrary objects unpickled is
            refused with a ``ValueError``, never executed; a TorchScript archive, e.g. of
            ``torch.jit.save``, gives its ``state_dict()``), a ``.safetensors`` file (read without
            torch) or an ``.npz`` archive (read without pickle). Files with other suffixes are
            recognised by their first bytes.
        prefix: keep only keys starting with it and strip it, e.g. ``'encoder.lstm.'`` to pick
            one recurrent layer out of a full model's checkpoint.

    Returns:
        ``{name: numpy array}``. Nested dicts, lists and tuples in a PyTorch file
        (``{'model': state_dict, 'epoch': 3}``, ``{'models': [sd0, sd1]}``) are flattened with
        dots (``'model.lstm.weight_ih_l0'``, ``'models.1.lstm.weight_ih_l0'``); values that are
        not tensors (numbers, strings) are left out.

    Raises:
        FileNotFoundError: ``path`` does not exist (``IsADirectoryError``: it is a directory).
        ValueError: not a checkpoint of a known format; corrupt, truncated or unsafe file; no
            array under ``prefix``.
        ModuleNotFoundError: a PyTorch file without torch installed (or ``.safetensors``
            without the ``safetensors`` package).

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), 'gru.npz')
        >>> np.savez(path, **{'gru.weight_ih_l0': np.zeros((6, 3), np.float32)})
        >>> {k: v.shape for k, v in load_state_dict_file(path, prefix='gru.').items()}
        {'weight_ih_l0': (6, 3)}
    """
    path = _existing_file(_checks.check_path("load_state_dict_file", path))
    _checks.check_prefix("load_state_dict_file", prefix)
    kind = _file_kind(path)
    if kind == "safetensors":
        state_dict = _load_safetensors(path)
    elif kind == "npz":
        state_dict = _load_npz(path)
    else:
        state_dict = _load_torch(path)
    if not prefix:
        return state_dict
    picked = convert._picked(path, state_dict, prefix)
    _checks.check_stripped_keys(path, prefix, picked)
    if not picked:
        layers = [
            repr(layer.prefix) for layer in find_recurrent_layers(state_dict) if not layer.error
        ]
        raise ValueError(
            f"{path}: no key starts with prefix {prefix!r}; recurrent layers in the file: "
            f"{_listed(layers)}"
        )
    return picked


def _existing_file(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint file: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"expected a checkpoint file, got a directory: {path!r}")
    return path


def _suffix(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in TORCH_SUFFIXES + SAFETENSORS_SUFFIXES + NUMPY_SUFFIXES:
        raise ValueError(f"{path}: unsupported checkpoint suffix {suffix!r}; expected {_SUPPORTED}")
    return suffix


def _file_kind(path: str) -> str:
    """``'torch'``, ``'safetensors'`` or ``'npz'``: from the suffix where it is one of
    ``_SUPPORTED``, else from the first bytes (``model_best.pth.tar``, ``ckpt.pkl``, no suffix:
    names ``torch.save`` files often have)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in NUMPY_SUFFIXES:
        return "npz"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    kind = _sniff(path)
    if kind is None:
        _check_what_else(path)
        raise ValueError(
            f"{path}: unsupported checkpoint suffix {suffix!r}, and the file is not a PyTorch, "
            f".safetensors or .npz file either; expected {_SUPPORTED}"
        )
    return kind


def _sniff(path: str) -> str | None:
    """The kind of checkpoint the file's content is, or ``None``: a zip of ``.npy`` members
    (``np.savez``), any other zip (``torch.save``; ``torch.load`` judges it), a pickle
    (``torch.save``'s legacy format), or an 8-byte header length followed by a JSON header
    (safetensors)."""
    with open(path, "rb") as f:
        head = f.read(9)
        size = os.fstat(f.fileno()).st_size
    if head[:4] == b"PK\x03\x04":  # a damaged zip too: torch.load says what is wrong with it
        names = _zip_names(path)
        return "npz" if names and all(n.endswith(".npy") for n in names) else "torch"
    if head[:1] == b"\x80":  # pickle protocol 2+
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    return None


def _listed(items: list[str], most: int = 10) -> str:
    """``items`` joined for a message: the first ``most``, then how many more."""
    if not items:
        return "none"
    more = f", ... and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def _check_what_else(path: str) -> None:
    """A ``ValueError`` saying what a file that is no checkpoint is instead, where its first
    bytes say: a Git LFS pointer (the repository's placeholder for a large file), or a web page
    (a download link that returned one); nothing otherwise."""
    with open(path, "rb") as f:
        head = f.read(256).lstrip().lower()
    if head.startswith(b"version https://git-lfs"):
        raise ValueError(f"{path}: a Git LFS pointer, not the checkpoint itself (git lfs pull)")
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        raise ValueError(
            f"{path}: a web page (HTML), not a checkpoint (did a download link return a page?)"
        )


def _zip_read(path: str, read):
    """``read(archive)`` of the zip file at ``path``, ``None`` if it is not a readable zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return read(archive)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def _zip_names(path: str) -> list[str] | None:
    """The member names of a zip file, ``None`` if it is not a readable zip."""
    return _zip_read(path, lambda archive: archive.namelist())


def _check_zip_members(path: str) -> None:
    """A zip-format PyTorch file whose members fail their CRC check is damaged: ``torch.load``
    does not check, and would return tensors with garbage in them (a file that is not a
    readable zip passes: torch.load says what is wrong with it). Members stored with a CRC of 0
    are not checked: ``torch.save`` writes that when told not to compute them
    (``torch.serialization.set_crc32_options(False)``), and ``torch.load`` reads such files."""
    bad = _zip_read(path, _failed_member)
    if bad is not None:
        raise ValueError(
            f"{path}: corrupt checkpoint: its member {bad!r} fails its CRC check (a damaged "
            "download or copy?)"
        )


def _failed_member(archive) -> str | None:
    """The first member of a zip archive with a CRC that fails its check (``ZipFile.testzip``,
    skipping members stored with a CRC of 0), else ``None``."""
    import zipfile

    for info in archive.infolist():
        if info.CRC == 0:
            continue
        try:
            with archive.open(info) as member:
                while member.read(2**24):
                    pass
        except zipfile.BadZipFile:
            return info.filename
    return None


def _safetensors(action: str, path: str):
    """``safetensors.numpy``, or a ModuleNotFoundError saying what needs it."""
    try:
        import safetensors.numpy
    except ImportError as e:
        raise ModuleNotFoundError(
            f"{action} {path} needs the safetensors package (pip install safetensors)"
        ) from e
    return safetensors.numpy


# safetensors' dtype names as numpy dtype names (ml_dtypes' for bfloat16 and float8)
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
}


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    module = _safetensors("reading", path)
    try:
        try:
            return dict(module.load_file(path))
        except AttributeError:  # a float8 tensor: the numpy reader looks its dtype up in numpy
            return _load_safetensors_bytes(path)
    except Exception as e:  # SafetensorError, OSError, ... : one message for all
        _check_what_else(path)
        raise ValueError(
            f"{path}: not a valid .safetensors file (corrupt or truncated?): {e}"
        ) from e


def _load_safetensors_bytes(path: str) -> dict[str, np.ndarray]:
    """A ``.safetensors`` file read whole and parsed by safetensors, its arrays built here with
    the ``ml_dtypes`` types numpy lacks (float8, as ``torch.load`` gives them in a ``.pt``)."""
    import ml_dtypes
    import safetensors

    with open(path, "rb") as f:
        tensors = safetensors.deserialize(f.read())
    out = {}
    for key, view in tensors:
        kind = _SAFETENSORS_DTYPES.get(view["dtype"])
        if kind is None:
            raise ValueError(f"{key}: safetensors dtype {view['dtype']} has no numpy equivalent")
        dtype = getattr(ml_dtypes, kind) if kind in _checks.ML_DTYPES else np.dtype(kind)
        out[key] = np.frombuffer(view["data"], dtype=dtype).reshape(view["shape"])
    return out


def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with archive:
            return {key: np.array(archive[key]) for key in archive.files}
    except Exception as e:  # BadZipFile, EOFError, ValueError (pickled objects), ...
        raise ValueError(
            f"{path}: not a valid .npz archive of arrays (corrupt, truncated or pickled?): {e}"
        ) from e


def _torch(action: str, path: str):
    """``torch``, or a ModuleNotFoundError saying what needs it."""
    try:
        import torch
    except ImportError as e:
        raise ModuleNotFoundError(
            f"{action} the PyTorch file {path} needs torch; without torch, use .safetensors or "
            ".npz (python -m jaxrnn convert IN OUT, where torch is installed, converts)"
        ) from e
    return torch


def _load_torch(path: str) -> dict[str, np.ndarray]:
    torch = _torch("reading", path)
    _check_zip_members(path)
    try:
        with warnings.catch_warnings():  # torch's advice to call torch.jit.load: done below
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            warnings.filterwarnings("ignore", message=".*Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # a zip (torch.save's format) or a pickle (PROTO opcode) that holds more than tensors;
        # anything else is not a checkpoint at all (torch's message would advise
        # weights_only=False, which is no help for a file that is not a checkpoint)
        if "Weights only load failed" not in str(e) or _sniff(path) != "torch":
            raise _not_torch(path) or _unreadable(path, e) from e
        if _plain_pickle(path):
            raise ValueError(
                f"{path}: a plain Python pickle (pickle.dump), not a torch.save checkpoint "
                "(torch.load cannot read it either), and unpickling it could run code from it. "
                "If you trust the file, load it with pickle and pass its state dict to "
                "load_state_dict or jaxrnn.state_dict_to_params, or save it again with "
                "torch.save(state_dict, path)"
            ) from None
        detail = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line), "")
        if "torch.ScriptObject" in detail:
            raise ValueError(
                f"{path}: holds torch.ScriptObject values, as a quantized model's state dict "
                "does (torch.ao.quantization's packed weights, e.g. a quantize_dynamic LSTM's "
                "_packed_params), which are not tensors; jaxrnn reads floating-point weights: "
                "save the state dict of the model before quantization"
            ) from None
        raise ValueError(
            f"{path}: refusing to load: this file needs arbitrary Python objects unpickled, "
            "which could run code from it (torch.load(weights_only=True) failed"
            + (f": {detail}" if detail else "")
            + "). Save tensors only, e.g. torch.save(model.state_dict(), path), or use "
            ".safetensors."
        ) from None
    except RuntimeError as e:
        if _is_export_archive(path):
            raise ValueError(
                f"{path}: a torch.export archive (.pt2): torch.export.load reads its weights with "
                "pickle allowed, which could run code from the file, so jaxrnn does not; save "
                "torch.save(model.state_dict(), path) or a .safetensors file instead"
            ) from None
        if "TorchScript" not in str(e):  # zip errors etc.
            raise _not_torch(path) or _unreadable(path, e) from e
        try:  # torch.jit.save's archive: compiled TorchScript, no Python from the file runs
            with warnings.catch_warnings():  # deprecated in favour of torch.export, still read
                warnings.filterwarnings("ignore", message=".*torch.jit.load. is deprecated")
                obj = torch.jit.load(path, map_location="cpu").state_dict()
        except Exception as e2:
            raise _unreadable(path, e2) from e2
    except Exception as e:  # KeyError/EOFError (pickle), ...
        raise _not_torch(path) or _unreadable(path, e) from e
    if not isinstance(obj, (Mapping, list, tuple)):
        raise ValueError(
            f"{path}: expected a state dict (a mapping of names to tensors), got "
            f"{type(obj).__name__}"
        )
    flat = _flatten(path, obj)
    if not flat:
        raise ValueError(f"{path}: the file holds no tensors")
    return flat


# the first object of torch.save's legacy (non-zip) format
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _NoClasses(pickle.Unpickler):
    """An unpickler that builds no class and no persistent object: nothing from the file runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} is not loaded")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not loaded")


def _plain_pickle(path: str) -> bool:
    """Whether a pickle file (not a zip) was written by ``pickle.dump``: its first object is not
    torch's legacy magic number (read with :class:`_NoClasses`)."""
    import zipfile

    if zipfile.is_zipfile(path):
        return False
    try:
        with open(path, "rb") as f:
            return _NoClasses(f).load() != _TORCH_LEGACY_MAGIC
    except Exception:  # its first object needs a class: not the magic number
        return True


def _is_export_archive(path: str) -> bool:
    """Whether the file is ``torch.export.save``'s archive (a zip with ``archive_format``)."""
    return any(n.rsplit("/", 1)[-1] == "archive_format" for n in _zip_names(path) or [])


def _not_torch(path: str) -> ValueError | None:
    """Why a file ``torch.load`` could not read is no PyTorch checkpoint at all, where its
    content says so (empty, another format under a PyTorch suffix, neither a zip nor a pickle);
    ``None`` for a zip or a pickle (then it is damaged). A Git LFS pointer or a web page raises
    here already (:func:`_check_what_else`)."""
    if os.path.getsize(path) == 0:
        return ValueError(f"{path}: not a PyTorch checkpoint: the file is empty")
    _check_what_else(path)
    kind = _sniff(path)
    if kind in ("safetensors", "npz"):
        return ValueError(
            f"{path}: not a PyTorch checkpoint: the file is a .{kind} file under a PyTorch "
            f"suffix (the suffix decides how it is read; rename it to .{kind})"
        )
    if kind is None:
        return ValueError(f"{path}: not a PyTorch checkpoint (neither a zip nor a pickle)")
    return None


def _unreadable(path: str, e: Exception) -> ValueError:
    detail = str(e).splitlines()[0] if str(e) else ""
    if not detail and isinstance(e, EOFError):
        detail = "the file ends early"
    return ValueError(
        f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): "
        f"{type(e).__name__}: {detail}"
    )


def _flatten(path: str, obj) -> dict[str, np.ndarray]:
    """The tensors of a loaded PyTorch object (a mapping, or a list or tuple of them), named
    by key path (list and tuple items by index) joined with dots. Two values under one name
    (``{'a.w': t, 'a': {'w': u}}``), or a tensor numpy cannot hold (sparse, quantized), are a
    ``ValueError`` naming the file and the key."""
    flat = {}
    for name, value in convert._dotted_leaves(path, obj).items():
        if not (hasattr(value, "detach") and hasattr(value, "shape")):  # not a tensor
            continue
        try:
            flat[name] = convert.to_numpy(value)
        except (TypeError, RuntimeError) as e:
            raise ValueError(
                f"{path}: {name}: cannot read this tensor as an array ({str(e).splitlines()[0]})"
            ) from e
    return flat


def _dotted(path: tuple) -> str:
    return ".".join(str(key) for key in path)


# ---------------------------------------------------------------------------------------------
# writing


def save_state_dict_file(params_or_module: Any, path: str | os.PathLike, prefix: str = "") -> None:
    """Write weights as a checkpoint file that PyTorch loads with ``load_state_dict(strict=True)``.

    Args:
        params_or_module: a jaxrnn module (its ``state_dict()``), any Flax NNX module (its
            ``nnx.Param`` leaves, named by attribute path joined with dots, which gives torch's
            names when attributes are named as in the torch model), or a mapping of arrays,
            nested mappings (a Linen ``variables['params']``) flattened with dots the same way.
        path: ``.safetensors`` (no torch needed), ``.pt``/``.pth``/``.bin``/``.ckpt`` (needs
            torch) or ``.npz`` (not for bfloat16 or float8: numpy has no such dtypes; torch
            loads its arrays after ``torch.from_numpy``). Written to a temporary file first,
            then renamed into place.
        prefix: prepended to every key, e.g. ``'encoder.lstm.'`` to match the attribute path of
            the layer in the torch model that will load the file.

    Example:
        >>> import os, tempfile
        >>> from flax import nnx
        >>> import jaxrnn
        >>> path = os.path.join(tempfile.mkdtemp(), 'gru.safetensors')
        >>> save_state_dict_file(jaxrnn.GRU(3, 2, rngs=nnx.Rngs(0)), path, prefix='gru.')
        >>> sorted(load_state_dict_file(path))[:2]
        ['gru.bias_hh_l0', 'gru.bias_ih_l0']
    """
    _checks.check_prefix("save_state_dict_file", prefix)
    path = _checks.check_path("save_state_dict_file", path)
    suffix = _suffix(path)
    folder = _checks.check_output_folder("save_state_dict_file", path)
    state_dict = _to_state_dict(params_or_module, prefix)
    if suffix in NUMPY_SUFFIXES:
        _checks.check_npz_dtypes("save_state_dict_file", state_dict)
    if suffix in SAFETENSORS_SUFFIXES:
        save_file = _safetensors("writing", path).save_file
    if suffix in TORCH_SUFFIXES:
        _torch("writing", path)
    # through a symlink to its target (as torch.save writes), via a temporary file of a name no
    # other writer of the same path takes (ranks saving one checkpoint at once)
    target = os.path.realpath(path) if os.path.islink(path) else path
    folder = os.path.dirname(target) or folder
    tmp = os.path.join(
        folder,
        f".{os.path.basename(target)}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}",
    )
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            save_file(state_dict, tmp, metadata={"format": "pt"})
        elif suffix in NUMPY_SUFFIXES:
            _save_npz(state_dict, tmp)
        else:
            _save_torch(state_dict, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _save_npz(state_dict: Mapping[str, np.ndarray], path: str) -> None:
    """``np.savez``'s format, written member by member: ``np.savez(f, **state_dict)`` would
    take a key named ``allow_pickle`` (or ``file``) as its own argument."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in state_dict.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)


def _to_state_dict(obj, prefix: str) -> dict[str, np.ndarray]:
    if isinstance(obj, Mapping):  # nested mappings flattened with dots
        sd = convert._state_dict("save_state_dict_file", obj, prefix)
    elif callable(getattr(obj, "state_dict", None)):  # jaxrnn modules, torch modules
        sd = {k: convert.to_numpy(v) for k, v in obj.state_dict(prefix=prefix).items()}
    else:
        from flax import nnx

        if not isinstance(obj, nnx.Module):
            raise TypeError(
                "save_state_dict_file: expected a jaxrnn or Flax NNX module or a mapping of "
                f"arrays, got {type(obj).__name__}"
            )
        flat = sorted(nnx.to_flat_state(nnx.state(obj, nnx.Param)), key=lambda i: _rank(obj, i[0]))
        sd = {prefix + _dotted(path): convert.to_numpy(v.get_value()) for path, v in flat}
    _checks.check_numeric_arrays("save_state_dict_file", sd)
    # ascontiguousarray alone turns 0-d arrays (e.g. BatchNorm.num_batches_tracked) into (1,)
    return {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in sd.items()}


def _rank(module, path) -> tuple:
    """Where an NNX module's parameter at ``path`` comes in torch's order: a module's own
    parameters before those of its submodules, each in the order the module assigned them
    (torch's registration order; a jaxrnn layer creates its parameters in torch's order), list
    items by index; a jaxrnn layer's or cell's in torch's (its ``_flat_weights_names``, since
    ``nnx.update``, as an optimizer step runs it, re-sorts every module's attributes). NNX's own
    order is alphabetical."""
    rank, node = [], module
    for depth, part in enumerate(path):
        own = depth == len(path) - 1  # a parameter of this module, not of a submodule
        names = list(vars(node)) if hasattr(node, "__dict__") else []
        if own and str(part) in getattr(node, "_flat_weights_names", ()):
            names = list(node._flat_weights_names)
        if str(part) in names:
            rank.append((not own, names.index(str(part))))
            node = getattr(node, str(part))
        elif isinstance(part, int) and isinstance(node, (list, tuple)):
            rank.append((not own, part))
            node = node[part]
        else:  # a structure of another kind: NNX's order from here on
            rank.append((True, len(names)))
            break
    return tuple(rank)


def _save_torch(state_dict: Mapping[str, np.ndarray], path: str) -> None:
    import torch

    torch.save(convert.to_torch_tensors(state_dict), path)


# ---------------------------------------------------------------------------------------------
# recurrent layers in a checkpoint


# the keys of a layer or cell with an empty prefix, as split_recurrent_key gives them
_DIRECT = {("", name, "_l0") for name in ("weight_ih", "weight_hh")} | {
    ("", name, "") for name in ("weight_ih", "weight_hh")
}


class RecurrentLayer(NamedTuple):
    """A recurrent layer or cell found in a state dict.

    Attributes:
        prefix: the key prefix of its parameters (``'encoder.lstm.'``, ``''`` at the top).
        cls: torch's class name: ``'RNN'``, ``'LSTM'``, ``'GRU'``, ``'RNNCell'``, ``'LSTMCell'``
            or ``'GRUCell'``. An RNN's nonlinearity (tanh or relu) is not stored in its weights.
        config: its constructor arguments as far as the weights tell (``input_size``,
            ``hidden_size``, ``bias``; for layers ``num_layers``, ``bidirectional`` and, for LSTM,
            ``proj_size``). ``batch_first``, ``dropout`` and ``nonlinearity`` are not stored.
        keys: the full keys of its parameters.
        error: ``None``, or why keys named like recurrent parameters do not form a layer.
    """

    prefix: str
    cls: str | None
    config: dict
    keys: tuple[str, ...]
    error: str | None = None

    def describe(self) -> str:
        """Torch's repr of the module, e.g. ``'LSTM(40, 64, num_layers=2, bidirectional=True)'``
        (for keys that are not one, why, on one line)."""
        if self.error is not None:
            return "not a recurrent layer: " + " ".join(self.error.split())
        return _params.torch_repr(self.cls, self.config)


def recurrent_layer(state_dict: Mapping, prefix: str = "") -> RecurrentLayer:
    """The recurrent layer or cell whose parameters are exactly the keys under ``prefix``.

    Raises:
        ValueError: the keys under ``prefix`` are not exactly one RNN/LSTM/GRU layer's or cell's
            (missing, unexpected or mis-shaped keys are named, in torch's wording).
    """
    _checks.check_mapping("recurrent_layer", "state_dict", state_dict)
    _checks.check_prefix("recurrent_layer", prefix)
    flat = convert._dotted_leaves("recurrent_layer", state_dict)
    params = convert._picked("recurrent_layer", flat, prefix)
    where = f"prefix {prefix!r}" if prefix else "the top level"
    if not any(_params.split_recurrent_key(k) in _DIRECT for k in params):
        search, base = (params, prefix) if params else (flat, "")
        found = [
            f"{base + layer.prefix!r} ({layer.describe()})"
            for layer in find_recurrent_layers(search)
            if layer.error is None
        ]
        what = (
            f"no weight_ih_l0/weight_hh_l0 (layer) or weight_ih/weight_hh (cell) key there "
            f"({len(params)} keys under it); recurrent layers under it"
            if params
            else f"no key starts with {prefix!r}; recurrent layers in the state dict"
        )
        raise ValueError(f"no recurrent layer at {where}: {what}: {_listed(found)}")
    try:
        return _infer(prefix, params, flat)
    except ValueError as e:
        raise ValueError(f"the keys under {where} do not form a recurrent layer: {e}") from None


def _infer(prefix: str, params: Mapping, keys) -> RecurrentLayer:
    """The layer or cell ``params`` (keys without ``prefix``) form; ValueError unless exactly.

    ``keys``: every (flattened) key of the state dict, for the weight-drop wrapper above the
    layer that keeps ``weight_hh_l0_raw`` (fastai's AWD-LSTM: ``rnns.0.weight_hh_l0_raw`` beside
    ``rnns.0.module.weight_ih_l0``), named when the layer misses its weight.
    """
    parent = prefix[:-1].rpartition(".")[0] + "." if prefix.count(".") > 1 else ""
    originals = {k: prefix + k for k in params}
    for key in keys if prefix else ():
        rest = key[len(parent) :]
        if key.startswith(parent) and "." not in rest and rest.endswith("_raw"):
            originals.setdefault(rest, key)
    reparametrized = _checks.reparametrized_weights(originals, params, prefix)
    if reparametrized:
        raise ValueError("; ".join(reparametrized))
    cls, config = _params.infer_module_config(params)
    mode = _params.CLASS_MODES[cls.removesuffix("Cell")][0]  # an RNN's shapes: tanh's = relu's
    if cls.endswith("Cell"):
        expected = _params.cell_param_shapes(mode, **config)
    else:
        expected = _params.layer_param_shapes(mode, **config)
    convert.match_state_dict(cls, params, expected, strict=True)
    return RecurrentLayer(prefix, cls, config, tuple(prefix + k for k in expected))


def find_recurrent_layers(state_dict: Mapping) -> list[RecurrentLayer]:
    """Every RNN/LSTM/GRU layer and cell in a (full model's) state dict, found by key prefix.

    Keys named as torch's recurrent parameters (``<prefix>weight_ih_l0``, ``<prefix>bias_hh``,
    ...; nested mappings flattened with dots first) are grouped by prefix; each group's class and
    configuration is inferred from the names and shapes of every key under its prefix (see
    :class:`RecurrentLayer`), as :func:`recurrent_layer` reads them. A group that does not form
    a layer (a missing key, a key torch's layer does not have, a shape that fits no class) is
    returned with ``error`` set rather than raising.

    Example:
        >>> import numpy as np
        >>> sd = {'rnn.weight_ih': np.zeros((12, 3)), 'rnn.weight_hh': np.zeros((12, 3)),
        ...       'fc.weight': np.zeros((1, 3))}
        >>> [layer.describe() for layer in find_recurrent_layers(sd)]
        ['LSTMCell(3, 3, bias=False)']
    """
    _checks.check_mapping("find_recurrent_layers", "state_dict", state_dict)
    flat = convert._dotted_leaves("find_recurrent_layers", state_dict)
    prefixes = dict.fromkeys(
        parts[0] for parts in map(_params.split_recurrent_key, flat) if parts is not None
    )
    layers = []
    for prefix in prefixes:
        # every key under the prefix, as recurrent_layer takes them: a layer with more (a
        # subclass's learned h0, AWD-LSTM's weight_hh_l0_raw) is listed with the error that
        # loading it gives
        keys = [k for k in flat if k.startswith(prefix)]
        params = {k[len(prefix) :]: flat[k] for k in keys}
        try:
            layers.append(_infer(prefix, params, flat))
        except ValueError as e:
            layers.append(RecurrentLayer(prefix, None, {}, tuple(keys), str(e)))
    return layers


def module_from_state_dict(
    state_dict: Mapping, prefix: str = "", *, nonlinearity: str | None = None, rngs=None, **kwargs
):
    """A jaxrnn NNX module built from the recurrent layer under ``prefix``, its weights loaded.

    The class and sizes are inferred from the keys and shapes (:func:`recurrent_layer`); the
    parameters keep the checkpoint's dtype (float64 needs ``jax_enable_x64``, else float32 with
    a warning, as :func:`~jaxrnn.from_torch`).

    Args:
        state_dict: a mapping of arrays, e.g. from :func:`load_state_dict_file`.
        prefix: the layer's key prefix (``'encoder.lstm.'``).
        nonlinearity: for an RNN/RNNCell, ``'tanh'`` (torch's default, taken if omitted) or
            ``'relu'``: the weights cannot tell. Other classes have none: ``'relu'`` for them is
            a ``TypeError``, ``'tanh'`` is accepted (code that loads any layer may pass it).
        rngs: ``nnx.Rngs`` for the new module; ``nnx.Rngs(0)`` if omitted.
        **kwargs: other constructor arguments not stored in weights (``batch_first``,
            ``dropout``, ``dtype``, ...; ``param_dtype`` to load the weights as another dtype).

    Example:
        >>> import numpy as np
        >>> sd = {'gru.weight_ih_l0': np.ones((6, 3), np.float32),
        ...       'gru.weight_hh_l0': np.ones((6, 2), np.float32)}
        >>> gru = module_from_state_dict(sd, 'gru.', batch_first=True)
        >>> type(gru).__name__, gru.input_size, gru.hidden_size, gru.bias, gru.batch_first
        ('GRU', 3, 2, False, True)
    """
    from flax import nnx

    import jaxrnn

    nonlinearity = "tanh" if nonlinearity is None else nonlinearity
    layer = recurrent_layer(state_dict, prefix)
    _checks.check_layer_nonlinearity("module_from_state_dict", layer.cls, prefix, nonlinearity)
    args = dict(layer.config)
    if layer.cls in ("RNN", "RNNCell"):
        args["nonlinearity"] = nonlinearity
    if "param_dtype" not in kwargs:  # the checkpoint's, the widest where its arrays differ
        floats = [
            d
            for d in (convert.to_numpy(state_dict[key]).dtype for key in layer.keys)
            if np.issubdtype(d, np.floating) or d.name in _checks.ML_DTYPES
        ]
        if floats:
            dtype = functools.reduce(jnp.promote_types, floats)
            what = f"module_from_state_dict: the {layer.cls} at prefix {prefix!r}"
            args["param_dtype"] = convert.jax_param_dtype(dtype.name, what)
    args.update(kwargs)
    module = getattr(jaxrnn, layer.cls)(**args, rngs=nnx.Rngs(0) if rngs is None else rngs)
    module.load_state_dict(convert.state_dict_to_params(state_dict, prefix))
    return module
