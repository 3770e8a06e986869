"""The one safetensors reader: every command that reads weights (merge, export, eval, training) checks them here.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and
byte range in the data that follows, then the data. Nothing in the header is trusted: its length must fit the file,
every tensor's range must lie inside the data and match its dtype and shape, the ranges must tile the data without
overlapping (as the safetensors library itself requires), and an index must name shards that exist inside the
folder and hold the tensors it says. Any fault is one line naming the file and the tensor. Only the header is read.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from discopop_cli.core.errors import UserError, first_line
from discopop_cli.core.json_files import read_json

# The safetensors library's own cap on the header.
MAX_HEADER_BYTES = 100_000_000
# Bits per element of every dtype the format defines.
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as its header describes it, checked against the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int  # of its first byte, from the start of the file
    nbytes: int


def _bad(path: Path, problem: str, fix: str) -> UserError:
    return UserError(f"{path} {problem}; {fix}")


def read_header(path: Path, what: str = "model") -> dict[str, TensorInfo]:
    """Every tensor of one safetensors file, its header checked against the file; `what` names whose copy to restore."""
    fix = f"re-save or restore the {what}'s copy of it"
    try:
        # stat before open: opening a FIFO would wait for a writer forever.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise _bad(path, "is not a regular file", fix)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 8:
                raise _bad(path, f"is {size} bytes, too short to be a safetensors file", fix)
            length = int.from_bytes(handle.read(8), "little")
            if length > size - 8 or length > MAX_HEADER_BYTES:
                raise _bad(path, f"declares a header of {length} bytes, but the file holds {size - 8} after it", fix)
            raw = handle.read(length)
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror or first_line(exc)})", fix) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad(path, "has a header that is not JSON: the file is damaged or not safetensors", fix) from None
    if not isinstance(header, dict):
        raise _bad(path, "has a header that is not a JSON object", fix)
    data_start, data_size = 8 + length, size - 8 - length
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor(path, name, entry, data_start, data_size, fix)
    _check_layout(path, sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes)), data_start, data_size, fix)
    return tensors


def _tensor(path: Path, name: str, entry: object, data_start: int, data_size: int, fix: str) -> TensorInfo:
    where = f"tensor {name!r} of {path}"
    if not isinstance(entry, dict):
        raise UserError(f"{where} has no dtype, shape and data_offsets; {fix}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise UserError(f"{where} has an unknown dtype {str(dtype)[:40]!r}; {fix}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise UserError(f"{where} has a shape that is not a list of sizes ({str(shape)[:60]}); {fix}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise UserError(f"{where} has data_offsets that are not [begin, end] ({str(offsets)[:60]}); {fix}")
    begin, end = offsets
    needed = math.prod(shape) * DTYPE_BITS[dtype]
    if needed % 8 or needed // 8 != end - begin:
        raise UserError(
            f"{where} is {dtype} {shape}, {needed / 8:g} bytes, but its data_offsets span {end - begin} bytes; {fix}"
        )
    if end > data_size:
        raise UserError(f"{where} ends at byte {end} of the data, which holds {data_size} bytes; {fix}")
    return TensorInfo(name, dtype, tuple(shape), path, data_start + begin, end - begin)


def _check_layout(path: Path, ordered: list[TensorInfo], data_start: int, data_size: int, fix: str) -> None:
    """The tensors' ranges tile the data: no overlap, no gap, nothing after the last."""
    position, before = 0, None
    for tensor in ordered:
        begin = tensor.offset - data_start
        if begin < position:
            raise UserError(f"tensors {before!r} and {tensor.name!r} of {path} overlap (at byte {begin}); {fix}")
        if begin > position:
            raise UserError(f"{path} has {begin - position} bytes no tensor owns, before {tensor.name!r}; {fix}")
        position, before = begin + tensor.nbytes, tensor.name
    if position != data_size:
        raise UserError(f"{path} holds {data_size - position} bytes after its last tensor that no tensor owns; {fix}")


def safetensors_files(folder: Path, what: str = "model", index_name: str = INDEX) -> list[Path]:
    """The weight files of a model folder: the shards its index names (each inside the folder, each present), else
    every *.safetensors file."""
    index = folder / index_name
    if not index.exists() and not index.is_symlink():
        return sorted(folder.glob("*.safetensors"))
    weight_map = read_json(index, what).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UserError(f"{index} has no weight_map of tensor names to files; restore the {what}'s copy of it")
    files = []
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard or shard in (".", ".."):
            raise UserError(f"{index} names {shard!r}, a file outside {folder}; restore the {what}'s copy of the index")
        if not (folder / shard).exists():
            raise UserError(f"{index} lists {shard}, which is missing from {folder}; restore the {what}'s copy of it")
        files.append(folder / shard)
    return files


def read_folder(folder: Path, what: str = "model", index_name: str = INDEX) -> dict[str, TensorInfo]:
    """Every tensor of a model folder's safetensors (one file, or the shards of an index), headers checked."""
    files = safetensors_files(folder, what, index_name)
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        for name, tensor in read_header(file, what).items():
            if name in tensors:
                raise UserError(
                    f"tensor {name!r} is in both {tensors[name].file.name} and {file.name} of {folder}; "
                    f"restore the {what}'s copy"
                )
            tensors[name] = tensor
    index = folder / index_name
    if index.is_file():
        for name, shard in read_json(index, what)["weight_map"].items():
            if name not in tensors or tensors[name].file.name != shard:
                raise UserError(
                    f"{index} puts {name!r} in {shard}, which has no such tensor; restore the {what}'s copy"
                )
    return tensors
