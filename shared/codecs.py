"""Binary encoding of stage values: arrays, bytes, JSON and dicts/lists of them.

Never pickle, never JSON lists for tensors. An array travels as its dtype, shape and raw
bytes. Every encoded value starts with a one-byte tag:

  J  JSON text (a value holding no arrays or bytes)
  A  array: dtype (u8 length + ascii), ndim (u8), shape (ndim x u64), raw C-order bytes
  B  raw bytes
  D  dict: u32 count, then per entry u16 key length, key (utf-8), u64 value length, value
  L  list: u32 count, then per entry u64 value length, value
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

ALLOWED_DTYPES = frozenset(
    [
        "bool",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "int64",
        "float16",
        "float32",
        "float64",
    ]
)

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class CodecError(ValueError):
    """Bytes that are not a valid encoded value, or a value that cannot be encoded."""


def _holds_binary(value: Any) -> bool:
    if isinstance(value, (np.ndarray, bytes, bytearray, memoryview)):
        return True
    if isinstance(value, dict):
        return any(_holds_binary(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_binary(v) for v in value)
    return False


def encode_array(array: np.ndarray) -> bytes:
    dtype = array.dtype.name
    if dtype not in ALLOWED_DTYPES:
        raise CodecError(f"cannot encode arrays of dtype {dtype!r}")
    data = np.ascontiguousarray(array)
    dtype_raw = dtype.encode("ascii")
    header = [b"A", _U8.pack(len(dtype_raw)), dtype_raw, _U8.pack(data.ndim)]
    header.extend(_U64.pack(dim) for dim in data.shape)
    return b"".join(header) + data.tobytes()


def decode_array(blob: bytes | memoryview) -> np.ndarray:
    view = memoryview(blob)
    if len(view) < 3 or view[0:1] != b"A":
        raise CodecError("not an encoded array")
    try:
        (dtype_len,) = _U8.unpack_from(view, 1)
        dtype = bytes(view[2 : 2 + dtype_len]).decode("ascii")
        offset = 2 + dtype_len
        (ndim,) = _U8.unpack_from(view, offset)
        offset += 1
        shape = tuple(_U64.unpack_from(view, offset + 8 * i)[0] for i in range(ndim))
        offset += 8 * ndim
    except (struct.error, UnicodeDecodeError) as exc:
        raise CodecError(f"truncated array header: {exc}") from exc
    if dtype not in ALLOWED_DTYPES:
        raise CodecError(f"array dtype {dtype!r} is not allowed")
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(view) - offset != expected:
        raise CodecError(f"array payload is {len(view) - offset} bytes, shape {shape} needs {expected}")
    return np.frombuffer(view[offset:], dtype=dtype).reshape(shape)


def encode(value: Any) -> bytes:
    """Encode a stage value (see the module doc for what can be encoded)."""
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"B" + bytes(value)
    if isinstance(value, dict) and _holds_binary(value):
        parts = [b"D", _U32.pack(len(value))]
        for key, item in value.items():
            if not isinstance(key, str):
                raise CodecError(f"dict keys must be strings, got {type(key).__name__}")
            key_raw = key.encode("utf-8")
            blob = encode(item)
            parts += [_U16.pack(len(key_raw)), key_raw, _U64.pack(len(blob)), blob]
        return b"".join(parts)
    if isinstance(value, (list, tuple)) and _holds_binary(value):
        parts = [b"L", _U32.pack(len(value))]
        for item in value:
            blob = encode(item)
            parts += [_U64.pack(len(blob)), blob]
        return b"".join(parts)
    try:
        return b"J" + json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode value of type {type(value).__name__}: {exc}") from exc


def decode(blob: bytes | memoryview) -> Any:
    view = memoryview(blob)
    if len(view) == 0:
        raise CodecError("empty value")
    tag = bytes(view[0:1])
    try:
        if tag == b"J":
            return json.loads(bytes(view[1:]))
        if tag == b"A":
            return decode_array(view)
        if tag == b"B":
            return bytes(view[1:])
        if tag == b"D":
            return _decode_dict(view)
        if tag == b"L":
            return _decode_list(view)
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"corrupt {tag!r} value: {exc}") from exc
    raise CodecError(f"unknown value tag {tag!r}")


def _decode_dict(view: memoryview) -> dict[str, Any]:
    (count,) = _U32.unpack_from(view, 1)
    offset, out = 5, {}
    for _ in range(count):
        (key_len,) = _U16.unpack_from(view, offset)
        key = bytes(view[offset + 2 : offset + 2 + key_len]).decode("utf-8")
        offset += 2 + key_len
        (size,) = _U64.unpack_from(view, offset)
        offset += 8
        if offset + size > len(view):
            raise CodecError("dict entry runs past the end of the value")
        out[key] = decode(view[offset : offset + size])
        offset += size
    if offset != len(view):
        raise CodecError("trailing bytes after dict")
    return out


def _decode_list(view: memoryview) -> list[Any]:
    (count,) = _U32.unpack_from(view, 1)
    offset, out = 5, []
    for _ in range(count):
        (size,) = _U64.unpack_from(view, offset)
        offset += 8
        if offset + size > len(view):
            raise CodecError("list entry runs past the end of the value")
        out.append(decode(view[offset : offset + size]))
        offset += size
    if offset != len(view):
        raise CodecError("trailing bytes after list")
    return out


# -- Redis replies -------------------------------------------------------------------------


def text(value: Any) -> str:
    """A Redis reply as text: bytes decoded (UTF-8), anything else as str()."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_or_none(value: Any) -> str | None:
    """As text(), with None (a missing field) kept as None."""
    return None if value is None else text(value)
