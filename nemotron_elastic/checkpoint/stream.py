# SPDX-License-Identifier: Apache-2.0
"""A safetensors file written one tensor at a time, and an FSDP model's weights gathered into one that way.

safetensors' own `save_file` needs every tensor in memory at once: for the final checkpoint of a sharded
12B run that is a whole float32 model (49 GB) on rank 0. The format allows streaming instead: the header
(names, dtypes, shapes, byte offsets) depends on shapes only, so it is written first, then each tensor's
bytes as it is gathered. Layout (the safetensors specification):

    8 bytes   little-endian u64: header length N
    N bytes   JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
              padded with spaces to a multiple of 8
    ...       the tensors' bytes, back to back, offsets relative to the end of the header
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


class SafetensorsStream:
    """Write the tensors of `layout` ([(name, shape, dtype)], in file order) one `write` at a time.

    Raises (ValueError) on a tensor out of order or of another shape or dtype, and on `close` before every
    tensor was written; the caller removes the incomplete file (it is written into a temporary folder).
    """

    def __init__(self, path: str | os.PathLike, layout: list[tuple[str, tuple[int, ...], torch.dtype]],
                 metadata: dict[str, str] | None = None):
        header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
        offset = 0
        for name, shape, dtype in layout:
            if dtype not in DTYPES:
                raise ValueError(f"{name}: dtype {dtype} has no safetensors name")
            size = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self._pending = list(reversed(layout))
        self._file = open(path, "wb")  # noqa: SIM115 -- closed by close()
        self._file.write(struct.pack("<Q", len(text)) + text)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected, shape, dtype = self._pending.pop() if self._pending else (None, None, None)
        if (name, tuple(tensor.shape), tensor.dtype) != (expected, tuple(shape or ()), dtype):
            raise ValueError(f"stream: got {name} {tuple(tensor.shape)} {tensor.dtype}, expected {expected} "
                             f"{shape} {dtype}")
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)  # any dtype as raw bytes
        self._file.write(data.numpy().tobytes())

    def close(self) -> None:
        if self._pending:
            self._file.close()
            raise ValueError(f"stream: {len(self._pending)} tensors never written (first: {self._pending[-1][0]})")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def write_gathered(model: torch.nn.Module, path: Path | None, skip: Callable[[str], bool] = lambda _: False) -> None:
    """Write `model.state_dict()` to the safetensors file `path` one tensor at a time, gathering each FSDP
    shard (`DTensor.full_tensor`, a collective) just before it is written; every rank calls it, the rank that
    passes a `path` writes. At most one whole tensor is in memory on any rank.

    skip: names to leave out (a tied lm_head)."""
    state = [(k, v) for k, v in model.state_dict().items() if not skip(k)]
    stream, error = None, None
    if path is not None:
        stream = SafetensorsStream(path, [(k, tuple(v.shape), v.dtype) for k, v in state], {"format": "pt"})
    for name, value in state:
        full = value.full_tensor() if isinstance(value, DTensor) else value
        if stream is not None and error is None:
            try:
                stream.write(name, full)
            except Exception as e:  # noqa: BLE001 -- keep taking part in the gathers, raise at the end
                error = e
        del full
    if stream is not None:
        if error is not None:
            stream._file.close()
            raise error
        stream.close()


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, streamed: save_file first serialises every tensor into one bytes buffer
    (a second copy of the whole model in memory); this writes one tensor's bytes at a time."""
    stream = SafetensorsStream(path, [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], metadata)
    try:
        for name, value in tensors.items():
            stream.write(name, value)
    finally:
        stream.close()
