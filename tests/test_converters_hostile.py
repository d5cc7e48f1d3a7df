"""Malformed and hostile converter inputs: each raises ConversionError with the reason,
and nothing from a file executes."""
import io
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import converters
from converters import ConversionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def lstm_onnx(W_shape=(1, 16, 3), hidden=4, extra_init=()):
    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.normal(size=W_shape).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.normal(size=(1, 16, 4)).astype(np.float32), "R")
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=hidden)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, 3])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          [W, R, *extra_init])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(os.urandom(2000)), "not a readable ONNX model"),
    (lambda p: p.write_bytes(lstm_onnx().SerializeToString()[:150]), "not a readable ONNX model"),
    (lambda p: onnx.save(lstm_onnx(W_shape=(1, 12, 3)), p), "W"),
    (lambda p: onnx.save(lstm_onnx(hidden=2**40), p), "hidden_size"),
], ids=["random-bytes", "truncated", "wrong-weight-shape", "absurd-hidden-size"])
def test_malformed_onnx(tmp_path, make, match):
    p = tmp_path / "m.onnx"
    make(p)
    with pytest.raises(ConversionError, match=match):
        converters.convert(p)


@pytest.mark.parametrize("dims", [[1, 2**40, 3], [2**63 - 1, 0], [-1, 0], [-(2**63), 0], [2**62, 2**62, 0]])
def test_onnx_initializer_claiming_absurd_dims_without_data(tmp_path, dims):
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=dims)
    m = lstm_onnx()
    m.graph.initializer[0].CopyFrom(t)
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    with pytest.raises(ConversionError, match="W"):
        converters.convert(p)


def _saved(p, m):
    onnx.save(m, p)
    return p


def external_weights_onnx(tmp_path, dims=(1, 16, 3), data_type=TensorProto.FLOAT, **entries):
    """lstm_onnx() with W in w.bin beside it (the right bytes for [1, 16, 3] floats), its
    external_data entries (location, offset, length) replaced by `entries`."""
    m = lstm_onnx()
    w = m.graph.initializer[0]
    (tmp_path / "w.bin").write_bytes(numpy_helper.to_array(w).tobytes())
    w.ClearField("raw_data")
    w.ClearField("float_data")
    del w.dims[:]
    w.dims.extend(dims)
    w.data_type = data_type
    w.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "w.bin", **entries}.items():
        e = w.external_data.add()
        e.key, e.value = key, value
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    return p


def test_onnx_external_weights_honest(tmp_path):
    np.testing.assert_array_equal(converters.convert(external_weights_onnx(tmp_path)).layers[0].w,
                                  converters.convert(_saved(tmp_path / "in.onnx", lstm_onnx())).layers[0].w)


@pytest.mark.parametrize("entries, match", [
    ({"offset": "abc"}, "offset 'abc' is not a byte count"),
    ({"offset": "1e3"}, "offset '1e3' is not a byte count"),
    ({"offset": "-5"}, "offset '-5' is not a byte count"),
    ({"offset": " 0"}, "offset ' 0' is not a byte count"),
    ({"offset": "\u0661"}, "is not a byte count"),          # int() reads Arabic-Indic digits
    ({"length": "abc"}, "length 'abc' is not a byte count"),
    ({"length": "1e3"}, "length '1e3' is not a byte count"),
    ({"length": "-5"}, "length '-5' is not a byte count"),
    ({"location": "w.bin\0.txt"}, "NUL"),
], ids=["offset-abc", "offset-1e3", "offset-negative", "offset-space", "offset-arabic-digit", "length-abc",
        "length-1e3", "length-negative", "location-nul"])
def test_onnx_external_data_entries_that_are_not_a_byte_range(tmp_path, entries, match):
    with pytest.raises(ConversionError, match=f"initializer 'W'.*{match}"):
        converters.convert(external_weights_onnx(tmp_path, **entries))


@pytest.mark.parametrize("dims, data_type, match", [
    ([-1, 16, 3], TensorProto.FLOAT, "negative"),          # read() of a negative length: the whole file
    ([-1, -16, 3], TensorProto.FLOAT, "negative"),
    ([2**63 - 1, 0], TensorProto.FLOAT, "dims"),
    ([0, 2**62, 2**62], TensorProto.FLOAT, "dims"),
    ([1, 16, 3], 999, "data type 999"),
], ids=["negative", "two-negative", "huge-times-zero", "zero-times-huge", "unknown-type"])
def test_onnx_external_tensor_with_impossible_dims_or_type(tmp_path, dims, data_type, match):
    with pytest.raises(ConversionError, match=f"initializer 'W'.*{match}"):
        converters.convert(external_weights_onnx(tmp_path, dims, data_type))


def test_onnx_constant_of_shape_declaring_absurd_size(tmp_path):
    """A 32-byte shape asking for 32 TiB of zeros: refused before allocating."""
    m = lstm_onnx()
    m.graph.initializer.append(numpy_helper.from_array(np.array([2**40, 4], np.int64), "shape"))
    m.graph.node.insert(0, helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros"))
    m.graph.node.append(helper.make_node("Add", ["Y", "zeros"], ["Y2"]))
    m.graph.output[0].name = "Y2"
    with pytest.raises(ConversionError, match="'zeros'.*4398046511104 values"):
        converters.convert(_saved(tmp_path / "m.onnx", m))


@pytest.mark.parametrize("fold", ["broadcast", "range"])
def test_onnx_constant_folds_into_absurd_sizes(tmp_path, fold):
    """Two small constants broadcast into 1.5 GiB, or a Range of 10**12 values: refused
    before folding them, not a bare MemoryError."""
    m = lstm_onnx()
    if fold == "broadcast":
        m.graph.initializer.extend([numpy_helper.from_array(np.ones((20000, 1), np.float32), "a"),
                                    numpy_helper.from_array(np.ones((1, 20000), np.float32), "b")])
        m.graph.node.insert(0, helper.make_node("Add", ["a", "b"], ["big"], name="big"))
    else:
        m.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), n)
                                    for v, n in ((0, "start"), (10**12, "limit"), (1, "delta"))])
        m.graph.node.insert(0, helper.make_node("Range", ["start", "limit", "delta"], ["big"], name="big"))
    m.graph.node.append(helper.make_node("Add", ["Y", "big"], ["Y2"]))
    m.graph.output[0].name = "Y2"
    with pytest.raises(ConversionError, match="'big'.*values"):
        converters.convert(_saved(tmp_path / "m.onnx", m))


def keras_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_keras_zip_bomb_is_refused_before_inflating(tmp_path):
    p = tmp_path / "bomb.keras"
    keras_zip(p, {"config.json": "{}", "metadata.json": "{}",
                  "model.weights.h5": b"\0" * (600 << 20)})   # 600 MiB of zeros: ~600 KiB zipped
    assert os.path.getsize(p) < 2 << 20
    with pytest.raises(ConversionError, match="claims"):
        converters.convert(p)


def test_keras_archive_whose_sizes_lie(tmp_path):
    """A member's recorded size says small, its data inflates larger: refused, not inflated."""
    p = tmp_path / "liar.keras"
    keras_zip(p, {"config.json": "{}", "metadata.json": "{}", "model.weights.h5": b"\0" * (4 << 20)})
    data = bytearray(p.read_bytes())
    name = b"model.weights.h5"
    cd = data.find(b"PK\x01\x02")          # central directory entries: name at +46
    while data[cd + 46:cd + 46 + len(name)] != name:
        cd = data.find(b"PK\x01\x02", cd + 4)
    data[cd + 24:cd + 28] = (100).to_bytes(4, "little")   # uncompressed size: 100 bytes
    assert zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("model.weights.h5").file_size == 100
    p.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match="not a readable Keras 3 archive"):
        converters.convert(p)


def empty_h5() -> bytes:
    h5py = pytest.importorskip("h5py")
    buf = io.BytesIO()
    with h5py.File(buf, "w"):
        pass
    return buf.getvalue()


@pytest.mark.parametrize("members, match", [
    ({"config.json": "not json", "metadata.json": "{}", "model.weights.h5": b""}, "not a readable Keras 3 archive"),
    ({"config.json": json.dumps({"class_name": "Sequential", "config": {"layers": 5}}),
      "metadata.json": "{}", "model.weights.h5": "EMPTY_H5"}, "m.keras"),
    ({"config.json": json.dumps([1, 2]), "metadata.json": "[]", "model.weights.h5": "EMPTY_H5"}, "m.keras"),
    ({"config.json": "{}", "metadata.json": "{}", "model.weights.h5": b"garbage"}, "not a readable Keras 3"),
    ({"metadata.json": "{}"}, "config.json"),
], ids=["config-not-json", "layers-not-a-list", "config-not-an-object", "weights-not-hdf5", "no-config"])
def test_malformed_keras_archives(tmp_path, members, match):
    p = tmp_path / "m.keras"
    keras_zip(p, {k: empty_h5() if v == "EMPTY_H5" else v for k, v in members.items()})
    with pytest.raises(ConversionError, match=match):
        converters.convert(p)


@pytest.mark.parametrize("units", [0, -3, 2.5, True, "4"])
def test_keras_recurrent_units_that_are_not_a_size(tmp_path, units):
    """Found by tests/fuzz_keras.py: units 0 divided by zero while reading the weights."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    m = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4, return_sequences=True)])
    m.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][-1]["config"]["units"] = units
    members["config.json"] = json.dumps(config)
    keras_zip(tmp_path / "bad.keras", members)
    with pytest.raises(ConversionError, match="units must be a positive integer"):
        converters.convert(tmp_path / "bad.keras")


def test_garbage_h5(tmp_path):
    p = tmp_path / "m.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(5000))
    with pytest.raises(ConversionError):
        converters.convert(p)


# -------------------------------------------- Keras weight files that read outside themselves


@pytest.fixture(scope="module")
def keras_lstm_files(tmp_path_factory):
    """{"keras" | "h5": file bytes} of one model, LSTM(4) -> Dense(2) over 3 features."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4, return_sequences=True),
                          keras.layers.Dense(2)])
    tmp = tmp_path_factory.mktemp("keras_lstm")
    files = {}
    for fmt in ("keras", "h5"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "HDF5 is a legacy format"
            m.save(tmp / f"m.{fmt}")
        files[fmt] = (tmp / f"m.{fmt}").read_bytes()
    return files


def _dataset_path(f, shape):
    """The path of the (one) dataset of this shape in h5py file f."""
    import h5py
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.shape == shape
                 else None)
    assert len(found) == 1, found
    return found[0]


def edited_keras_file(tmp_path, files, fmt, edit, edit_config=None):
    """The model file in format fmt, with edit(h5py file, path of the LSTM kernel [3, 16])
    applied to its weights (the .h5 itself, or the model.weights.h5 inside the .keras) and
    edit_config(model config dict) to its config."""
    import h5py
    p = tmp_path / f"m.{fmt}"
    if fmt == "h5":
        p.write_bytes(files["h5"])
        weights_file = p
    else:
        with zipfile.ZipFile(io.BytesIO(files["keras"])) as z:
            members = {n: z.read(n) for n in z.namelist()}
        weights_file = tmp_path / "model.weights.h5"
        weights_file.write_bytes(members["model.weights.h5"])
    with h5py.File(weights_file, "a") as f:
        edit(f, _dataset_path(f, (3, 16)))
        if edit_config and fmt == "h5":
            config = json.loads(f.attrs["model_config"])
            edit_config(config)
            f.attrs["model_config"] = json.dumps(config)
    if fmt == "keras":
        members["model.weights.h5"] = weights_file.read_bytes()
        if edit_config:
            config = json.loads(members["config.json"])
            edit_config(config)
            members["config.json"] = json.dumps(config)
        keras_zip(p, members)
    return p


def _replace(f, path, **create):
    """Dataset `path` of f replaced by create_dataset(path, **create); its old data."""
    old = f[path][()]
    del f[path]
    f.create_dataset(path, **create)
    return old


def _external_storage(target):
    def edit(f, kernel, tmp_path):
        old = f[kernel][()]
        path = target if target.startswith("/") else str(tmp_path / target)
        if not target.startswith("/"):
            old.tofile(path)   # the right bytes: converting would give the model's own weights
        _replace(f, kernel, shape=old.shape, dtype=old.dtype, external=[(path, 0, old.nbytes)])
        return [kernel, "external file", target]
    return edit


def _virtual_dataset(f, kernel, tmp_path):
    import h5py
    old = f[kernel][()]
    with h5py.File(tmp_path / "source.h5", "w") as src:
        src["kernel"] = old
    layout = h5py.VirtualLayout(shape=old.shape, dtype=old.dtype)
    layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "kernel", shape=old.shape)
    del f[kernel]
    f.create_virtual_dataset(kernel, layout)
    return [kernel, "virtual dataset", "source.h5"]


def _external_link(f, kernel, tmp_path):
    import h5py
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["kernel"] = f[kernel][()]
    del f[kernel]
    f[kernel] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/kernel")
    return [kernel, "external link", "other.h5"]


def _external_link_to_layer_group(f, kernel, tmp_path):
    """The LSTM's whole group ("model_weights/lstm" / "layers/lstm") moved to another file."""
    import h5py
    group = "/".join(kernel.split("/")[:2])
    with h5py.File(tmp_path / "other.h5", "w") as other:
        f.copy(f[group], other, "moved")
    del f[group]
    f[group] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/moved")
    return [group, "external link", "other.h5"]


def _soft_link_to_external_link(f, kernel, tmp_path):
    import h5py
    _external_link(f, kernel, tmp_path)
    del f[kernel]
    f["elsewhere"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/kernel")
    f[kernel] = h5py.SoftLink("/elsewhere")
    return [kernel, "soft link"]


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("edit", [_external_storage("weights.bin"), _external_storage("/dev/zero"),
                                  _virtual_dataset, _external_link, _external_link_to_layer_group,
                                  _soft_link_to_external_link],
                         ids=["external-storage-beside", "external-storage-dev-zero", "virtual-dataset",
                              "external-link", "external-link-to-group", "soft-link-to-external-link"])
def test_keras_weights_stored_outside_the_model_file_are_refused(tmp_path, keras_lstm_files, fmt, edit):
    """HDF5 reads a dataset from another file when the dataset says so (external storage,
    virtual datasets, external links): refused, naming the dataset, before anything is read.
    The other file holds the model's own weights, so only a refusal shows it was not used."""
    named = []
    p = edited_keras_file(tmp_path, keras_lstm_files, fmt, lambda f, k: named.extend(edit(f, k, tmp_path)))
    with pytest.raises(ConversionError) as e:
        converters.convert(p)
    for name in named:
        assert name in str(e.value)


def _plugin_filter(f, kernel):
    """The kernel compressed with filter 32013, which is no filter HDF5 or h5py has built in:
    reading its chunk makes HDF5 dlopen every library in its plugin folder to find one."""
    old = f[kernel][()]
    _replace(f, kernel, shape=old.shape, dtype=old.dtype, chunks=old.shape, compression=32013,
             allow_unknown_filter=True)
    f[kernel].id.write_direct_chunk((0, 0), old.tobytes(), filter_mask=0)   # mask 0: "filtered"


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_weights_behind_a_filter_plugin_are_refused(tmp_path, keras_lstm_files, fmt):
    p = edited_keras_file(tmp_path, keras_lstm_files, fmt, _plugin_filter)
    with pytest.raises(ConversionError, match="(lstm_cell/kernel|cell/vars/0).* HDF5 filter 32013"):
        converters.convert(p)


def test_keras_files_as_saved_still_convert(tmp_path, keras_lstm_files):
    for fmt, data in keras_lstm_files.items():
        (tmp_path / f"m.{fmt}").write_bytes(data)
        assert converters.convert(tmp_path / f"m.{fmt}").outputs[0].shape[-1] == 2


def test_keras_weights_past_the_conversion_cap(tmp_path, keras_lstm_files, monkeypatch):
    """The most weight data one conversion reads: the LSTM's 512 bytes pass a 500-byte cap."""
    import converters.keras as keras_converter
    monkeypatch.setattr(keras_converter, "MAX_WEIGHT_BYTES", 500)
    (tmp_path / "m.h5").write_bytes(keras_lstm_files["h5"])
    with pytest.raises(ConversionError, match="lstm_cell/bias.*500 bytes, the most a conversion reads"):
        converters.convert(tmp_path / "m.h5")


# A child process with 1.5 GiB of address space converts each file; its outcomes and peak RSS.
CONVERT_UNDER_LIMIT = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
import converters
out = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        converters.convert(path)
        out[name] = "converted"
    except converters.ConversionError as e:
        out[name] = f"ConversionError: {e}"
    except BaseException as e:
        out[name] = f"{type(e).__name__}: {e}"
with open("/proc/self/status") as f:   # VmHWM: ru_maxrss would count the parent's RSS at fork
    out["peak MiB"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
print(json.dumps(out))
"""


def _declare(shape, **create):
    """An edit replacing the LSTM kernel by a dataset of that shape that stores (almost) nothing."""
    def edit(f, kernel):
        _replace(f, kernel, shape=shape, dtype="float32", **create)
        if create.get("chunks"):
            f[kernel][(0,) * len(shape)] = 0.5   # one chunk written: compressed data, not only a fill value
    return edit


def _dense_of_1_gib(f, kernel):
    dense = _dataset_path(f, (4, 2))   # the Dense kernel; the config below says 2**26 units
    bias = _dataset_path(f, (2,))
    _replace(f, dense, shape=(4, 2**26), dtype="float32")
    _replace(f, bias, shape=(2**26,), dtype="float32")


def _dense_units(config):
    config["config"]["layers"][-1]["config"]["units"] = 2**26


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_huge_declared_datasets_fail_fast(tmp_path, keras_lstm_files, fmt):
    """Datasets that declare 1 GiB ... 512 GiB in a small file are refused from their
    declared shape and stored size, before any allocation: in 1.5 GiB of address space, with
    the peak RSS of a conversion of the honest file."""
    cases = {  # name -> (edit, edit_config, dataset named in the refusal, reason)
        "fill-only-1GiB": (_declare((2**24, 16)), None, "lstm_cell/kernel|cell/vars/0", "stores 0 bytes"),
        "chunked-gzip-1GiB": (_declare((2**24, 16), chunks=(4096, 16), compression="gzip"), None,
                              "lstm_cell/kernel|cell/vars/0", "over-compressed"),
        "chunked-gzip-512GiB": (_declare((2**33, 16), chunks=(2**16, 16), compression="gzip"), None,
                                "lstm_cell/kernel|cell/vars/0", "over-compressed"),
        "not-the-config-shape-3GiB": (_declare((3, 2**28), chunks=(3, 2**16), compression="gzip"), None,
                                      "lstm_cell/kernel|cell/vars/0", r"the layer config implies \('any', 16\)"),
        "config-implies-1GiB": (_dense_of_1_gib, _dense_units, "dense/kernel|dense/vars/0", "stores 0 bytes"),
        "honest": (lambda f, k: None, None, None, None),
    }
    paths = {}
    for name, (edit, edit_config, _, _) in cases.items():
        (tmp_path / name).mkdir()
        paths[name] = str(edited_keras_file(tmp_path / name, keras_lstm_files, fmt, edit, edit_config))
        assert os.path.getsize(paths[name]) < 100_000
    run = subprocess.run([sys.executable, "-c", CONVERT_UNDER_LIMIT, json.dumps(paths)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out.pop("honest") == "converted"
    for name, (_, _, dataset, reason) in cases.items():
        if dataset:
            assert re.match(f"ConversionError: .*({dataset}).*{reason}", out[name]), (name, out[name][:500])
    assert out["peak MiB"] < 400, out


@pytest.mark.parametrize("suffix", ["onnx", "keras", "h5"])
def test_model_path_that_is_not_a_regular_file(tmp_path, suffix):
    """A FIFO blocks the first read forever: refused from its type, in a child process so
    that a hang fails the test instead of stopping the suite."""
    fifo = tmp_path / f"m.{suffix}"
    os.mkfifo(fifo)
    run = subprocess.run([sys.executable, "-c", "import sys, converters; converters.convert(sys.argv[1])",
                          str(fifo)], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert "ConversionError" in run.stderr and "not a regular file" in run.stderr, run.stderr[-1000:]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))   # would create the marker file if unpickled


def test_pickled_payloads_never_run(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"weight": _Payload(str(marker))}, p, pickle_protocol=2)
    with pytest.raises(ConversionError, match="weights-only"):
        converters.from_torch(torch.nn.LSTM(3, 4), state_dict=p)
    raw = tmp_path / "evil.pkl.pt"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ConversionError), warnings.catch_warnings():
        warnings.simplefilter("ignore")    # torch notes the raw pickle's protocol before refusing it
        converters.from_torch(torch.nn.LSTM(3, 4), state_dict=raw)
    with pytest.raises(ConversionError, match="from_torch"):
        converters.convert(p)               # a .pt file alone is never unpickled
    assert not marker.exists()


def test_fuzzed_onnx_graphs_convert_or_refuse_cleanly():
    """2,000 mutated ONNX graphs (tests/fuzz_onnx.py: attributes, dims, dtypes, truncated
    tensor bytes, rewired inputs, op types, graph shapes, raw bytes): each converts and runs,
    or raises ConversionError; nothing else escapes. 10,000 more cases ran clean by hand."""
    from fuzz_onnx import run
    res = run(2000, seed=5)
    assert res["findings"] == []
    assert res["outcomes"]["converted"] > 200 and res["outcomes"]["refused"] > 200


def test_fuzzed_keras_files_convert_or_refuse_cleanly():
    """500 Keras files (.keras and .h5) with hostile values in their model config or a cut
    weight file (tests/fuzz_keras.py): each converts and runs, or raises ConversionError.
    8,000 more cases ran clean by hand."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("keras")
    pytest.importorskip("h5py")
    from fuzz_keras import run
    res = run(500, seed=11)
    assert res["findings"] == []
    assert res["outcomes"]["converted"] > 50 and res["outcomes"]["refused"] > 50
