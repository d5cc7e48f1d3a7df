"""The .lrt container: round trips, zero-copy mapping, and every way a file can be broken."""
import os

import numpy as np
import pytest

from lstm_rt.errors import ModelFormatError
from lstm_rt.fileformat import ALIGN, FORMAT_VERSION, read_lrt, write_lrt
from lrt_tamper import patch_u32, raw_header, rebuild, seal, split

HERE = os.path.dirname(__file__)


def sample_tensors():
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=(3, 5, 32)).astype(np.float32),
            "h": rng.normal(size=17).astype(np.float16),
            "q": rng.integers(-127, 128, size=(4, 2, 8, 2)).astype(np.int8),
            "ids": np.arange(7, dtype=np.int64),
            "empty": np.zeros((0, 4), np.float32),
            "scalar": np.array(2.5, np.float32)}


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "m.lrt"
    write_lrt(p, {"name": "x", "nested": {"a": [1, 2]}}, sample_tensors())
    return p


@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip_is_zero_copy_and_read_only(good, mmap):
    """Arrays are read-only views of one buffer: the mapping (mmap=True) or the one copy of
    the file's bytes in memory (the default), never a copy per tensor."""
    meta, arrays, handle = read_lrt(good, mmap=mmap)
    assert meta == {"name": "x", "nested": {"a": [1, 2]}}
    want = sample_tensors()
    assert set(arrays) == set(want)
    for k, v in want.items():
        assert arrays[k].dtype == v.dtype and arrays[k].shape == v.shape
        np.testing.assert_array_equal(arrays[k], v)
        assert not arrays[k].flags.writeable
        assert arrays[k].ctypes.data % ALIGN == 0
    bases = set()
    for a in arrays.values():
        base = a
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        if isinstance(base, memoryview):
            base = base.obj
        bases.add(id(base))
        assert (type(base).__name__ == "mmap") == mmap
    assert len(bases) == 1
    assert handle.mapped == mmap
    handle.close()
    np.testing.assert_array_equal(arrays["w"], want["w"])  # arrays keep their bytes alive


def test_offsets_are_aligned_and_output_is_deterministic(good, tmp_path):
    _, header, _ = split(good.read_bytes())
    assert all(e["offset"] % ALIGN == 0 for e in header["tensors"])
    again = tmp_path / "again.lrt"
    write_lrt(again, {"name": "x", "nested": {"a": [1, 2]}}, sample_tensors())
    assert again.read_bytes() == good.read_bytes()


def test_unsupported_dtype_is_refused(tmp_path):
    with pytest.raises(ModelFormatError, match="unsupported dtype"):
        write_lrt(tmp_path / "b.lrt", {}, {"b": np.zeros(2, bool)})


def expect(path, data, match, **kw):
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match=match) as e:
        read_lrt(path, **kw)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("cut", [0, 1, 23, 24, 100, -33, -1])
def test_truncated_files(good, tmp_path, cut):
    data = good.read_bytes()
    expect(tmp_path / "t.lrt", data[:cut] if cut > 0 else data[:len(data) + cut] if cut else b"",
           "too short|truncated|past the end")


def test_extended_file(good, tmp_path):
    expect(tmp_path / "t.lrt", good.read_bytes() + b"\0" * 64, "truncated or extended")


@pytest.mark.parametrize("where", ["header", "data", "trailer-checksum"])
def test_flipped_bits_fail_the_checksum(good, tmp_path, where):
    data = bytearray(good.read_bytes())
    pos = {"header": 40, "data": len(data) - 100, "trailer-checksum": len(data) - 3}[where]
    data[pos] ^= 0x10
    expect(tmp_path / "t.lrt", bytes(data), "checksum mismatch")


def test_wrong_magic_newer_version_and_flags(good, tmp_path):
    data = good.read_bytes()
    expect(tmp_path / "a.lrt", seal(b"NOTMODEL" + data[8:-32]), "not an lstm_rt model")
    expect(tmp_path / "b.lrt", patch_u32(data, 8, FORMAT_VERSION + 1), "newer lstm_rt.*upgrade")
    expect(tmp_path / "c.lrt", patch_u32(data, 8, 0), "invalid format version")
    expect(tmp_path / "d.lrt", patch_u32(data, 12, 4), "unknown flags")


def test_bad_json(good, tmp_path):
    data = good.read_bytes()
    n = len(split(data)[1] and data[24:24 + int.from_bytes(data[16:24], "little")])
    expect(tmp_path / "a.lrt", raw_header(data, b"{" * n), "not valid JSON")
    expect(tmp_path / "b.lrt", raw_header(data, b"\xff" * n), "not valid JSON")
    expect(tmp_path / "c.lrt", raw_header(data, (b"[1" + b" " * (n - 3) + b"]")), "must hold")


def edit_tensor(target, **changes):
    def edit(h):
        for e in h["tensors"]:
            if e["name"] == target:
                e.update(changes)
    return edit


@pytest.mark.parametrize("changes,match", [
    ({"dtype": "object"}, "unsupported dtype"),
    ({"shape": [2 ** 40, 2 ** 40]}, "needs .* bytes"),
    ({"shape": [2 ** 40, 2 ** 40], "nbytes": 4 * 2 ** 80}, "outside the data section"),
    ({"shape": [-1]}, "non-negative"),
    ({"shape": "12"}, "shape must be"),
    ({"offset": 10 ** 12}, "outside the data section"),
    ({"offset": 65}, "misaligned or outside"),
    ({"offset": 0}, "outside the data section"),
    ({"nbytes": True}, "nbytes must be"),
    ({"name": 5}, "unique string"),
])
def test_tampered_tensor_entries(good, tmp_path, changes, match):
    data = rebuild(good.read_bytes(), edit_tensor("w", **changes))
    expect(tmp_path / "t.lrt", data, match)
    expect(tmp_path / "u.lrt", data, match, verify_checksum=False)


def test_overlapping_and_duplicate_tensors(good, tmp_path):
    data = good.read_bytes()
    _, header, _ = split(data)
    w = next(e for e in header["tensors"] if e["name"] == "w")
    h_entry = next(e for e in header["tensors"] if e["name"] == "h")
    expect(tmp_path / "a.lrt", rebuild(data, edit_tensor("h", offset=w["offset"])), "overlap")
    expect(tmp_path / "b.lrt", rebuild(data, edit_tensor("h", name="w")), "unique string")
    assert h_entry["offset"] != w["offset"]


def test_header_length_past_the_end(good, tmp_path):
    data = bytearray(good.read_bytes()[:-32])
    data[16:24] = (10 ** 9).to_bytes(8, "little")
    expect(tmp_path / "t.lrt", seal(bytes(data)), "past the end")


def test_golden_v1_file_still_loads():
    """tests/data/format_v1_small.lrt was written by tests/data/make_format_golden.py with
    format version 1; every later build must read it."""
    meta, arrays, _ = read_lrt(os.path.join(HERE, "data", "format_v1_small.lrt"))
    assert meta == {"purpose": "golden file, format version 1"}
    np.testing.assert_array_equal(arrays["a"], np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8)
    np.testing.assert_array_equal(arrays["b"], np.arange(-5, 5, dtype=np.int8))
    np.testing.assert_array_equal(arrays["c"], (np.arange(6, dtype=np.float16) - 2.5).reshape(3, 2))
