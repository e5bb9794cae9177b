"""Minimal safetensors reader/writer (numpy only; no safetensors package here).

File layout: 8-byte little-endian header length n, n bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, optional
"__metadata__": {str: str}}, then the raw little-endian data. Offsets are
relative to the first byte after the header.
"""
import json
import struct

import numpy as np

# dtype name -> (numpy dtype of the stored bytes, bytes per element)
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "BF16": np.dtype("<u2"),  # decoded to float32 on read
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
}

_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    pass


def _bf16_to_f32(raw_u16):
    return (raw_u16.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16(x):
    """Round-to-nearest-even float32 -> bf16 bits (NaN kept quiet)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + (0x7FFF + ((bits >> 16) & 1))
    out = (rounded >> 16).astype(np.uint16)
    nan = np.isnan(x)
    out[nan] = 0x7FC0
    return out


def read_header(path):
    """Returns (header dict without __metadata__, metadata dict, data start)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsError(f"{path}: file shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise SafetensorsError(f"{path}: header length {n} is implausibly large")
        text = f.read(n)
        if len(text) != n:
            raise SafetensorsError(f"{path}: header truncated")
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    return header, metadata, 8 + n


def load(path):
    """Reads every tensor. Returns {name: numpy array}; BF16 becomes float32."""
    header, _, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        blob = f.read()
    out = {}
    for name, info in header.items():
        try:
            dtype_name = info["dtype"]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r} has a malformed entry") from None
        if dtype_name not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name}")
        dt = _DTYPES[dtype_name]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if any(s < 0 for s in shape) or not (0 <= begin <= end <= len(blob)):
            raise SafetensorsError(f"{path}: tensor {name!r} lies outside the file")
        if end - begin != count * dt.itemsize:
            raise SafetensorsError(
                f"{path}: tensor {name!r} has {end - begin} bytes, shape needs {count * dt.itemsize}")
        arr = np.frombuffer(blob, dtype=dt, count=count, offset=begin).reshape(shape)
        if dtype_name == "BF16":
            arr = _bf16_to_f32(arr)
        out[name] = arr.copy()
    return out


def _dtype_name(arr, bf16):
    if arr.dtype == np.float64:
        return "F64"
    if arr.dtype == np.float32:
        return "BF16" if bf16 else "F32"
    if arr.dtype == np.int64:
        return "I64"
    if arr.dtype == np.int32:
        return "I32"
    raise SafetensorsError(f"cannot store dtype {arr.dtype}")


def save(path, tensors, metadata=None, bf16=False):
    """Writes {name: numpy array} in name order; float32 as BF16 when bf16."""
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        kind = _dtype_name(arr, bf16)
        raw = _f32_to_bf16(arr) if kind == "BF16" else np.ascontiguousarray(arr, dtype=_DTYPES[kind])
        data = raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": kind, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
