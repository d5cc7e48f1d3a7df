"""Helpers that rewrite a valid .lrt file into a specific kind of broken one, re-sealing
length and checksum so that the check under test is the one that fires."""
import hashlib
import json
import struct

from lstm_rt.fileformat import _PREFIX, _TRAILER, ALIGN, TRAILER_MAGIC


def split(data: bytes):
    magic, version, flags, n = _PREFIX.unpack_from(data, 0)
    header = json.loads(data[_PREFIX.size:_PREFIX.size + n])
    return (magic, version, flags), header, data[_PREFIX.size + n:len(data) - _TRAILER.size]


def seal(body: bytes) -> bytes:
    """Append a trailer that matches body."""
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return body + _TRAILER.pack(TRAILER_MAGIC, len(body) + _TRAILER.size, digest)


def rebuild(data: bytes, edit_header=None, version=None, flags=None) -> bytes:
    """Re-emit a file with an edited JSON header, keeping every blob at its old offset
    (the header's padding absorbs small changes in its length)."""
    (magic, v, f), header, rest = split(data)
    old_n = _PREFIX.unpack_from(data, 0)[3]
    data_start = _PREFIX.size + old_n
    data_start += -data_start % ALIGN
    if edit_header:
        edit_header(header)
    hb = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = _PREFIX.pack(magic, v if version is None else version, f if flags is None else flags, len(hb)) + hb
    if len(body) > data_start:
        raise ValueError("edited header no longer fits before the data")
    body += b"\0" * (data_start - len(body)) + data[data_start:len(data) - _TRAILER.size]
    return seal(body)


def raw_header(data: bytes, header_bytes: bytes) -> bytes:
    """Replace the JSON header by arbitrary bytes of the same length, re-sealed."""
    n = _PREFIX.unpack_from(data, 0)[3]
    assert len(header_bytes) == n
    body = data[:_PREFIX.size] + header_bytes + data[_PREFIX.size + n:len(data) - _TRAILER.size]
    return seal(body)


def patch_u32(data: bytes, offset: int, value: int) -> bytes:
    body = bytearray(data[:len(data) - _TRAILER.size])
    struct.pack_into("<I", body, offset, value)
    return seal(bytes(body))
