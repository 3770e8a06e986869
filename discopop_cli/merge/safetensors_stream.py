"""Write safetensors files a block of rows at a time, so a checkpoint never has to be whole in memory.

`safetensors.torch.save_file` needs every tensor of a file in memory at once. The format itself does not: an 8-byte
little-endian header length, a JSON header naming each tensor's dtype, shape and byte range, then the raw
little-endian bytes of the tensors back to back with no holes. Everything in the header is known before the first
byte of data (`discopop merge` plans every tensor first), so the header goes out first and the data follows as it is
computed. Reading stays with the official `safe_open`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# safetensors dtype names <-> torch dtype attribute names.
_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
_HEADER_ALIGNMENT = 8


def torch_dtype(safetensors_name: str) -> torch.dtype:
    import torch

    try:
        return getattr(torch, _DTYPE_NAMES[safetensors_name])
    except (KeyError, AttributeError):
        raise ValueError(f"unsupported safetensors dtype {safetensors_name}") from None


def safetensors_name(dtype: torch.dtype) -> str:
    wanted = str(dtype).removeprefix("torch.")
    for name, torch_name in _DTYPE_NAMES.items():
        if torch_name == wanted:
            return name
    raise ValueError(f"unsupported dtype {dtype}")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as it will be written: its name, dtype and shape."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * self.dtype.itemsize


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB' or a plain byte count -> bytes (decimal units like transformers, binary with 'i')."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*", text.upper())
    if not match:
        raise ValueError(f"not a size: {text!r} (try 5GB or 500MB)")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(unit or " "))


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Group tensors, in order, into files of at most `max_shard_bytes` (a bigger tensor gets a file of its own)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return [shard for shard in shards if shard]


def shard_file_names(count: int) -> list[str]:
    """transformers' names: model.safetensors alone, else model-0000i-of-0000n.safetensors beside an index."""
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_order(specs: list[TensorSpec]) -> list[TensorSpec]:
    """Widest dtypes first, as safetensors itself lays files out, so every tensor starts at a multiple of its item size."""
    return sorted(specs, key=lambda spec: -spec.dtype.itemsize)


class ShardWriter:
    """Writes one safetensors file: the header on open, then each tensor's bytes in `write_order`, block by block."""

    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self.specs = write_order(specs)
        header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for spec in self.specs:
            header[spec.name] = {
                "dtype": safetensors_name(spec.dtype),
                "shape": list(spec.shape),
                "data_offsets": [offset, offset + spec.nbytes],
            }
            offset += spec.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-(8 + len(encoded)) % _HEADER_ALIGNMENT)
        self._handle = path.open("wb")
        self._handle.write(len(encoded).to_bytes(8, "little"))
        self._handle.write(encoded)
        self._position = 0  # index into self.specs of the tensor being written
        self._written = 0  # bytes of that tensor written so far

    def write(self, name: str, block: torch.Tensor) -> None:
        """Append rows of tensor `name`; tensors must come in `self.specs` order, each complete before the next."""
        spec = self.specs[self._position] if self._position < len(self.specs) else None
        if spec is None or spec.name != name:
            expected = spec.name if spec else "nothing more"
            raise RuntimeError(f"{self.path.name}: got {name}, expected {expected}")
        if block.dtype != spec.dtype:
            raise RuntimeError(f"{name}: block is {block.dtype}, the header says {spec.dtype}")
        raw = block.detach().contiguous().reshape(-1).view(_byte_dtype()).numpy()
        if self._written + raw.nbytes > spec.nbytes:
            raise RuntimeError(f"{name}: more data than its shape {spec.shape} holds")
        self._handle.write(raw)
        self._written += raw.nbytes
        if self._written == spec.nbytes:
            self._position += 1
            self._written = 0

    def close(self) -> None:
        self._handle.close()
        if self._position != len(self.specs):
            raise RuntimeError(f"{self.path.name}: closed before {self.specs[self._position].name} was complete")

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._handle.close()


def _byte_dtype() -> torch.dtype:
    import torch

    return torch.uint8


def write_index(folder: Path, weight_map: dict[str, str], total_size: int) -> Path:
    """model.safetensors.index.json in transformers' form: total byte size and which file holds each tensor."""
    path = folder / "model.safetensors.index.json"
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return path
