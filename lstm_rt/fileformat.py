"""The .lrt model file: written once (atomically), then read into memory or memory-mapped.

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

Reading: by default the file's bytes are read once into (64-byte aligned) memory, so a
model in use never depends on the file again: replacing, truncating or overwriting the
file cannot change or crash it. With mmap=True the weights are views of a read-only
mapping instead (no copy, pages shared between processes); the file must then stay as it
is while mapped: replace a model by writing a new file and renaming it over the old one
(what write_lrt does), never by writing into it. A mapped file that changed is noticed
(LrtFile.check_unchanged) before a run, but a truncation while a step is reading the
mapping is a SIGBUS: that is the price of sharing pages.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import tempfile

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
MAX_DIM = 1 << 40                      # larger than any tensor a file of this kind can hold


def _pad(n: int) -> int:
    return -n % ALIGN


def _checksum(buf, end: int) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    view = memoryview(buf)
    for start in range(0, end, 1 << 24):
        h.update(view[start:min(end, start + (1 << 24))])
    return h.digest()


def write_lrt(path, meta: dict, tensors: dict[str, np.ndarray]) -> None:
    """Write `meta` (JSON-able) and named arrays to `path` atomically: a temporary file in
    the same folder is renamed over it, so a reader (or a model mapping the old file) never
    sees a partly written file. Deterministic: the same content gives the same bytes."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelFormatError(f"{path}: is a directory; give a file name such as model.lrt")
    entries, blobs = _layout(path, meta, tensors)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, entries, blobs, meta)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def lrt_bytes(meta: dict, tensors: dict[str, np.ndarray]) -> bytes:
    """The bytes write_lrt would write (how a Model travels to another process)."""
    import io
    entries, blobs = _layout("<bytes>", meta, tensors)
    f = io.BytesIO()
    _write(f, entries, blobs, meta)
    return f.getvalue()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _header_bytes(meta, entries) -> bytes:
    return json.dumps({"format_version": FORMAT_VERSION, "meta": meta, "tensors": entries},
                      sort_keys=True, separators=(",", ":")).encode()


def _layout(path, meta, tensors):
    """Tensor entries with their offsets, and the arrays in file order."""
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
    # offsets depend on the header's length, which depends on the offsets' digits: iterate
    # until the layout is stable (two or three rounds at most)
    for _ in range(8):
        pos = _PREFIX.size + len(_header_bytes(meta, entries))
        pos += _pad(pos)
        changed = False
        for e in entries:
            if e["offset"] != pos:
                e["offset"], changed = pos, True
            pos += e["nbytes"] + _pad(e["nbytes"])
        if not changed:
            break
    return entries, blobs


def _write(f, entries, blobs, meta):
    header = _header_bytes(meta, entries)
    h = hashlib.blake2b(digest_size=16)
    pos = 0

    def put(b):
        nonlocal pos
        f.write(b)
        h.update(b)
        pos += len(b)

    put(_PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header)))
    put(header)
    put(b"\0" * _pad(_PREFIX.size + len(header)))
    for e, a in zip(entries, blobs):
        assert pos == e["offset"]
        put(a.tobytes())
        put(b"\0" * _pad(e["nbytes"]))
    f.write(_TRAILER.pack(TRAILER_MAGIC, pos + _TRAILER.size, h.digest()))


class LrtFile:
    """A read model file: its bytes (in memory, or a read-only mapping) stay valid while
    any array made from them is referenced."""

    def __init__(self, path, buf, version, identity=None):
        self.path = path
        self.version = version      # the file's format version
        self.mapped = identity is not None
        self._buf = buf
        self._identity = identity   # (device, inode, size, mtime_ns) of a mapped file

    def check_unchanged(self):
        """Raise ModelFormatError when a mapped file was modified in place since it was
        mapped (a renamed-over file is a new inode: the mapping keeps the old one, fine)."""
        if self._identity is None or self._buf is None:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            return   # removed or renamed away: the mapping still holds the old inode
        dev, ino, size, mtime = self._identity
        if (st.st_dev, st.st_ino) == (dev, ino) and (st.st_size, st.st_mtime_ns) != (size, mtime):
            raise ModelFormatError(
                f"{self.path}: the mapped model file was modified in place after loading; "
                f"load it again (replace model files by writing a new file and renaming it)")

    def close(self):
        """Drop this handle's reference; the bytes are freed (the mapping closed) when no
        array uses them any more."""
        self._buf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _aligned_bytes(n: int) -> np.ndarray:
    """A writable uint8 buffer of n bytes at a 64-byte aligned address."""
    raw = np.empty(n + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + n]


def read_lrt(path, *, mmap: bool = False, verify_checksum: bool = True):
    """Read `path` and return (meta, {name: read-only array}, LrtFile).

    mmap=False (default): the file is read into memory once; the model never touches the
    file again. mmap=True: the arrays are views of a read-only mapping of the file."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)   # O_NONBLOCK: opening a FIFO must not wait for a writer
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file but a device, FIFO or socket"
        raise ModelFormatError(f"{path}: is {what}, not a model file")
    with os.fdopen(fd, "rb", buffering=0) as f:
        size = st.st_size
        if size < _PREFIX.size + _TRAILER.size:
            raise ModelFormatError(f"{path}: file is {size} bytes, too short to be an lstm_rt "
                                   f"model (truncated?)")
        if mmap:
            import mmap as _mmap  # (the parameter shadows the module)
            buf = _mmap.mmap(fd, 0, access=_mmap.ACCESS_READ)
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        else:
            buf, identity = _aligned_bytes(size), None
            view, got = memoryview(buf), 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    raise ModelFormatError(f"{path}: file shrank while it was read ({got} of "
                                           f"{size} bytes)")
                got += n
    meta, arrays, version = _parse(path, buf, size, verify_checksum)
    return meta, arrays, LrtFile(path, buf, version, identity)


def read_lrt_bytes(data, *, name: str = "<bytes>"):
    """(meta, arrays, LrtFile) from the bytes of a model file, checked like a file."""
    size = len(data)
    if size < _PREFIX.size + _TRAILER.size:
        raise ModelFormatError(f"{name}: {size} bytes, too short to be an lstm_rt model")
    buf = _aligned_bytes(size)
    buf[:] = np.frombuffer(data, np.uint8)
    meta, arrays, version = _parse(name, buf, size, True)
    return meta, arrays, LrtFile(name, buf, version)


def _parse(path, buf, size, verify_checksum):
    """Check the bytes of a model file and cut them into read-only arrays (no copy)."""
    def bad(msg):
        return ModelFormatError(f"{path}: {msg}")

    magic, version, flags, header_len = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise bad("not an lstm_rt model file (bad magic)")
    if version > FORMAT_VERSION:
        raise bad(f"made by a newer lstm_rt (format version {version}, this build reads "
                  f"<= {FORMAT_VERSION}); upgrade lstm_rt")
    if version < 1:
        raise bad(f"invalid format version {version}")
    if flags != 0:
        raise bad(f"unknown flags {flags:#x}")
    tmagic, length, digest = _TRAILER.unpack_from(buf, size - _TRAILER.size)
    if tmagic != TRAILER_MAGIC or length != size:
        raise bad(f"file is truncated or extended (trailer says {length if tmagic == TRAILER_MAGIC else '?'} "
                  f"bytes, file has {size})")
    data_end = size - _TRAILER.size
    if header_len > min(MAX_HEADER, data_end - _PREFIX.size):
        raise bad(f"header length {header_len} runs past the end of the file")
    if verify_checksum and _checksum(buf, data_end) != digest:
        raise bad("checksum mismatch: file is corrupted or was modified")
    try:
        header = json.loads(bytes(buf[_PREFIX.size:_PREFIX.size + header_len]).decode("utf-8"))
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
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape):
            raise bad(f"tensor {name!r}: shape must be a list of at most 8 non-negative ints (each <= 2**40), "
                      f"got {str(shape)[:100]}")
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
        a = np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset)
        try:
            a = a.reshape(tuple(shape))
        except ValueError as e:   # e.g. a dimension numpy cannot index next to a zero one
            raise bad(f"tensor {name!r}: shape {shape} is not addressable ({e})") from None
        a.flags.writeable = False
        arrays[name] = a
    return header["meta"], arrays, version
