"""Safetensors in, GGUF tensor data out, a slab of rows at a time.

The safetensors files are parsed here (an 8-byte header length, a JSON header, then the raw data) and read a slab
of rows at a time, so nothing is loaded whole: each tensor is converted and written in chunks of about
`CHUNK_ELEMENTS` values and the peak memory stays near one chunk, whatever the model's size. numpy has no bfloat16,
so bf16 data is widened to float32 by a 16-bit shift, which is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from discopop_cli.core.errors import UserError

CHUNK_ELEMENTS = 1 << 22
"""Values converted per step: 16 MB as float32."""

F16_MAX = 65504.0

_STORED_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}

# (rows, first row index) -> rows: a row-local change made while streaming (Gemma's norm offset, Llama's q/k order).
RowTransform = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class SourceTensor:
    """One tensor of a safetensors file: where its bytes are, read a slab of rows at a time."""

    name: str
    dtype: str  # the safetensors dtype name: F32, F16, BF16, F64
    shape: tuple[int, ...]
    path: Path
    offset: int  # of the first byte, from the start of the file

    @property
    def n_rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    def raw_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as stored (bf16 as uint16); the whole tensor for 1-D ones."""
        stored = np.dtype(_STORED_DTYPES[self.dtype])
        if len(self.shape) <= 1:
            start, stop, row_shape = 0, 1, self.shape
        else:
            row_shape = self.shape[1:]
        row_values = math.prod(row_shape)
        rows = np.empty((stop - start) * row_values, dtype=stored)
        # Plain reads, not a memory map: mapped pages of the whole model would count in the process's memory.
        with self.path.open("rb") as handle:
            handle.seek(self.offset + start * row_values * stored.itemsize)
            if handle.readinto(memoryview(rows).cast("B")) != rows.nbytes:
                raise UserError(f"{self.path} ends inside tensor {self.name}; the file is truncated")
        return rows.reshape((stop - start, *row_shape) if len(self.shape) > 1 else self.shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32."""
        raw = self.raw_rows(start, stop)
        if self.dtype == "BF16":
            widened = raw.astype(np.uint32)
            widened <<= 16  # bfloat16 is the top half of a float32
            return widened.view(np.float32)
        return raw.astype(np.float32, copy=False)


@dataclass
class ArrayTensor:
    """A tensor the exporter makes itself (e.g. Llama 3's RoPE frequency factors)."""

    name: str
    data: np.ndarray
    dtype: str = "F32"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def n_rows(self) -> int:
        return self.data.shape[0] if self.data.ndim > 1 else 1

    def raw_rows(self, start: int, stop: int) -> np.ndarray:
        return self.data if self.data.ndim <= 1 else self.data[start:stop]

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.raw_rows(start, stop).astype(np.float32)


Tensor = SourceTensor | ArrayTensor


def read_safetensors(model_dir: Path) -> dict[str, SourceTensor]:
    """Every tensor of the model's safetensors files (one file or an indexed set of shards), nothing read yet."""
    from discopop_cli.core.weights import read_folder, safetensors_files

    if not safetensors_files(model_dir):
        pickled = [p.name for p in model_dir.glob("*.bin")] + [p.name for p in model_dir.glob("*.pt")]
        hint = " (it has pickled weights; re-save it with save_pretrained(safe_serialization=True))" if pickled else ""
        raise UserError(f"{model_dir} has no .safetensors weights{hint}")
    tensors: dict[str, SourceTensor] = {}
    for name, info in read_folder(model_dir).items():
        if info.dtype not in _STORED_DTYPES:
            raise UserError(
                f"tensor {name} in {info.file.name} is {info.dtype}; only float tensors can be exported to GGUF"
            )
        tensors[name] = SourceTensor(name=name, dtype=info.dtype, shape=info.shape, path=info.file, offset=info.offset)
    return tensors


@dataclass
class PlannedTensor:
    """A GGUF tensor: its name, where its values come from, its type and the row-local change to make."""

    gguf_name: str
    source: Tensor
    ggml_type: str  # a gguf.GGMLQuantizationType member name
    transform: RowTransform | None = None
    row_group: int = 1  # chunks start at multiples of this many rows (whole attention heads for a q/k reorder)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    def nbytes(self) -> int:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[self.ggml_type]]
        return math.prod(self.shape) // block_size * type_size

    def _copies_raw(self) -> bool:
        return self.transform is None and self.source.dtype == self.ggml_type

    def chunks(self) -> Iterator[np.ndarray]:
        """The tensor's GGUF bytes, a slab of whole rows at a time."""
        n_rows = self.source.n_rows
        row_size = max(1, math.prod(self.shape[1:])) if len(self.shape) > 1 else math.prod(self.shape)
        step = max(self.row_group, CHUNK_ELEMENTS // row_size // self.row_group * self.row_group)
        for start in range(0, n_rows, step):
            stop = min(n_rows, start + step)
            if self._copies_raw():
                yield self.source.raw_rows(start, stop)
                continue
            values = self.source.rows(start, stop)
            if self.transform is not None:
                values = self.transform(values, start)
            yield self._encode(values)

    def _encode(self, values: np.ndarray) -> np.ndarray:
        if self.ggml_type == "F32":
            return values.astype(np.float32, copy=False)
        if self.ggml_type == "F16":
            peak = float(np.max(np.abs(values))) if values.size else 0.0
            if not math.isfinite(peak) or peak > F16_MAX:
                raise UserError(
                    f"tensor {self.gguf_name} holds values beyond float16's range ({peak:g}); "
                    "export with --quant bf16 or --quant f32 instead"
                )
            return values.astype(np.float16)
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize

        return quantize(values, GGMLQuantizationType[self.ggml_type])


def fits_blocks(shape: tuple[int, ...], ggml_type: str) -> bool:
    """Whether rows of this shape split into whole blocks of the type (k-quants: 256 values, q8_0: 32)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block_size, _ = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    return shape[-1] % block_size == 0


def write_tensor_data(
    handle: IO[bytes], planned: list[PlannedTensor], alignment: int, on_tensor: Callable[[PlannedTensor], None]
) -> None:
    """Append every tensor's data, each aligned as the GGUF tensor-info offsets promise."""
    _pad(handle, handle.tell(), alignment)
    for tensor in planned:
        written = 0
        for chunk in tensor.chunks():
            data = np.ascontiguousarray(chunk)
            handle.write(data.data)
            written += data.nbytes
        if written != tensor.nbytes():
            raise RuntimeError(f"{tensor.gguf_name}: wrote {written} bytes, the header promised {tensor.nbytes()}")
        _pad(handle, written, alignment)
        on_tensor(tensor)


def _pad(handle: IO[bytes], size: int, alignment: int) -> None:
    padding = -size % alignment
    if padding:
        handle.write(b"\0" * padding)
