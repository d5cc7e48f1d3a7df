"""The .lrt model file: written once, then memory-mapped; the weights are never copied.

Layout (version 3, little-endian). Older versions differ only in how weights are packed,
and lstm_rt.model repacks those at load: version 1 grouped int8 panel rows by two (now
four), versions 1-2 gave Dense layers 8-wide panels (now 32):

    offset 0   magic  b"LRTMODEL"                      8 bytes
           8   format version (uint32), flags (uint32, 0)
          16   header length n (uint64)
          24   JSON header, n bytes UTF-8, then zero padding to a 64-byte boundary
          ...  tensor blobs, each at a 64-byte aligned offset, C order
      end-32   trailer: b"LRTEND\\0\\0", file length (uint64), BLAKE2b-128 of every byte
               before the trailer (16 bytes)

The JSON header is {"format_version": 3, "meta": {...}, "tensors": [{"name", "dtype",
"shape", "offset", "nbytes"}, ...]}. Every number read from a file is checked against the
file's size before it is used, so a truncated, tampered or hostile file raises
ModelFormatError instead of crashing, hanging or allocating what it asks for. No pickle.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct

import numpy as np

from .errors import ModelFormatError

MAGIC = b"LRTMODEL"
TRAILER_MAGIC = b"LRTEND\0\0"
FORMAT_VERSION = 3
ALIGN = 64
_PREFIX = struct.Struct("<8sIIQ")      # magic, version, flags, header length
_TRAILER = struct.Struct("<8sQ16s")    # magic, file length, checksum
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16",
          "int32", "uint32", "int64")
MAX_HEADER = 64 << 20                  # a header is a few KiB; refuse absurd claims early


def _pad(n: int) -> int:
    return -n % ALIGN


def _checksum(buf, end: int) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    view = memoryview(buf)
    for start in range(0, end, 1 << 24):
        h.update(view[start:min(end, start + (1 << 24))])
    return h.digest()


def write_lrt(path, meta: dict, tensors: dict[str, np.ndarray]) -> None:
    """Write `meta` (JSON-able) and named arrays to `path` (atomically: a temporary file is
    renamed over it). Deterministic: the same content gives the same bytes."""
    path = os.fspath(path)
    entries, blobs = [], []
    for name, arr in tensors.items():
        a = np.asarray(arr)
        if a.dtype.name not in DTYPES:
            raise ModelFormatError(f"{path}: tensor {name!r} has unsupported dtype {a.dtype}")
        a = a.astype(a.dtype.newbyteorder("<"), order="C", copy=False)  # keeps 0-d arrays 0-d
        entries.append({"name": str(name), "dtype": a.dtype.name, "shape": list(a.shape),
                        "offset": 0, "nbytes": int(a.nbytes)})
        blobs.append(a)
    if len({e["name"] for e in entries}) != len(entries):
        raise ModelFormatError(f"{path}: duplicate tensor names")

    def header_bytes():
        return json.dumps({"format_version": FORMAT_VERSION, "meta": meta, "tensors": entries},
                          sort_keys=True, separators=(",", ":")).encode()

    # offsets depend on the header's length, which depends on the offsets' digits: iterate
    # until the layout is stable (two or three rounds at most)
    for _ in range(8):
        header = header_bytes()
        pos = _PREFIX.size + len(header)
        pos += _pad(pos)
        changed = False
        for e in entries:
            if e["offset"] != pos:
                e["offset"], changed = pos, True
            pos += e["nbytes"] + _pad(e["nbytes"])
        if not changed:
            break
    header = header_bytes()
    tmp = path + ".tmp"
    h = hashlib.blake2b(digest_size=16)
    with open(tmp, "wb") as f:
        def put(b):
            f.write(b)
            h.update(b)
        put(_PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header)))
        put(header)
        put(b"\0" * _pad(_PREFIX.size + len(header)))
        for e, a in zip(entries, blobs):
            assert f.tell() == e["offset"]
            put(a.tobytes())
            put(b"\0" * _pad(e["nbytes"]))
        length = f.tell() + _TRAILER.size
        f.write(_TRAILER.pack(TRAILER_MAGIC, length, h.digest()))
    os.replace(tmp, path)


class LrtFile:
    """An open, mapped model file; arrays from it stay valid while they are referenced."""

    def __init__(self, path, mm, version):
        self.path = path
        self.version = version  # the file's format version
        self._mmap = mm

    def close(self):
        """Drop this handle's reference; the mapping closes when no array uses it any more."""
        self._mmap = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_lrt(path, *, verify_checksum: bool = True):
    """Map `path` and return (meta, {name: read-only array view}, LrtFile)."""
    path = os.fspath(path)

    def bad(msg):
        return ModelFormatError(f"{path}: {msg}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _PREFIX.size + _TRAILER.size:
            raise bad(f"file is {size} bytes, too short to be an lstm_rt model (truncated?)")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    magic, version, flags, header_len = _PREFIX.unpack_from(mm, 0)
    if magic != MAGIC:
        raise bad("not an lstm_rt model file (bad magic)")
    if version > FORMAT_VERSION:
        raise bad(f"made by a newer lstm_rt (format version {version}, this build reads "
                  f"<= {FORMAT_VERSION}); upgrade lstm_rt")
    if version < 1:
        raise bad(f"invalid format version {version}")
    if flags != 0:
        raise bad(f"unknown flags {flags:#x}")
    tmagic, length, digest = _TRAILER.unpack_from(mm, size - _TRAILER.size)
    if tmagic != TRAILER_MAGIC or length != size:
        raise bad(f"file is truncated or extended (trailer says {length if tmagic == TRAILER_MAGIC else '?'} "
                  f"bytes, file has {size})")
    data_end = size - _TRAILER.size
    if header_len > min(MAX_HEADER, data_end - _PREFIX.size):
        raise bad(f"header length {header_len} runs past the end of the file")
    if verify_checksum and _checksum(mm, data_end) != digest:
        raise bad("checksum mismatch: file is corrupted or was modified")
    try:
        header = json.loads(bytes(mm[_PREFIX.size:_PREFIX.size + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"header is not valid JSON ({e})") from None
    except RecursionError:
        raise bad("header nests too deeply to be a model description") from None
    if not isinstance(header, dict) or not isinstance(header.get("meta"), dict) \
            or not isinstance(header.get("tensors"), list):
        raise bad("header must hold 'meta' (object) and 'tensors' (list)")
    if header.get("format_version") != version:
        raise bad("header and prefix disagree on the format version")
    data_start = _PREFIX.size + header_len
    tensors, spans = {}, []
    for i, e in enumerate(header["tensors"]):
        if not isinstance(e, dict):
            raise bad(f"tensor entry {i} is not an object")
        name, dtype, shape = e.get("name"), e.get("dtype"), e.get("shape")
        offset, nbytes = e.get("offset"), e.get("nbytes")
        if not isinstance(name, str) or name in tensors:
            raise bad(f"tensor entry {i}: name must be a unique string, got {name!r}")
        if dtype not in DTYPES:
            raise bad(f"tensor {name!r}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise bad(f"tensor {name!r}: shape must be a list of at most 8 non-negative ints, got {shape!r}")
        for v, what in ((offset, "offset"), (nbytes, "nbytes")):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(f"tensor {name!r}: {what} must be a non-negative int, got {v!r}")
        count = 1
        for d in shape:
            count *= d          # Python ints: no overflow, checked against nbytes below
        itemsize = np.dtype(dtype).itemsize
        if count * itemsize != nbytes:
            raise bad(f"tensor {name!r}: shape {shape} of {dtype} needs {count * itemsize} bytes, "
                      f"header says {nbytes}")
        if offset % ALIGN or offset < data_start or offset + nbytes > data_end:
            raise bad(f"tensor {name!r}: bytes [{offset}, {offset + nbytes}) are misaligned or "
                      f"outside the data section [{data_start}, {data_end})")
        spans.append((offset, offset + nbytes, name))
        tensors[name] = (dtype, shape, offset, count)
    spans.sort()
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        if s1 < e0 and e0 > s0 and e1 > s1:
            raise bad(f"tensors {n0!r} and {n1!r} overlap")
    arrays = {}
    for name, (dtype, shape, offset, count) in tensors.items():
        a = np.frombuffer(mm, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset)
        arrays[name] = a.reshape(tuple(shape))
    return header["meta"], arrays, LrtFile(path, mm, version)
