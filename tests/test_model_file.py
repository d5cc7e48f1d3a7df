"""Model.save / lstm_rt.load: exact round trips, zero-copy weights, and files whose model
description lies about the weights (re-sealed, so only the model checks can catch them)."""
import os

import numpy as np
import pytest

import lstm_rt
from lstm_rt.errors import ModelFormatError
from lstm_rt.fileformat import FORMAT_VERSION
from lstm_rt.layers import Dense, Embedding
from lstm_rt.model import Model, Node, Port
from lrt_tamper import rebuild
from util import onnx_style_model, random_layer


def language_model(rng):
    return Model([Node(Embedding("emb", rng.normal(size=(20, 6))), ["ids"], ["e"]),
                  Node(random_layer("LSTM", 6, 9, rng=rng, name="l1", proj=5, peepholes=True), ["e"], ["y1"]),
                  Node(random_layer("GRU", 5, 7, rng=rng, name="l2"), ["y1"], ["y2"]),
                  Node(Dense("head", rng.normal(size=(20, 7)), rng.normal(size=20), activation="softmax"),
                       ["y2"], ["p"])],
                 [Port("ids", "ids", "BT")], [Port("probs", "p", "BTF")],
                 name="lm", metadata={"vocab": ["a", "b"]})


@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
def test_save_load_round_trip_is_exact(tmp_path, weights):
    rng = np.random.default_rng(0)
    m = language_model(rng)
    path = tmp_path / "lm.lrt"
    m.save(path, weights=weights)
    loaded = lstm_rt.load(path)
    assert loaded.name == "lm" and loaded.metadata == {"vocab": ["a", "b"]}
    assert loaded.weights == weights
    assert loaded.inputs == m.inputs and loaded.outputs == m.outputs
    ids = rng.integers(0, 20, size=(3, 11))
    want = m.quantized(weights).run(ids) if weights != "fp32" else m.run(ids)
    np.testing.assert_array_equal(loaded.run(ids), want)
    s = loaded.stream(batch=3)
    np.testing.assert_array_equal(np.stack([s.step(ids[:, t]) for t in range(11)], axis=1), want)
    assert [type(a).__name__ for a in loaded.layers] == ["Embedding", "LSTM", "GRU", "Dense"]


@pytest.mark.parametrize("kind,kw", [("LSTM", {"direction": "bidirectional", "clip": 2.0, "input_forget": True}),
                                     ("GRU", {"linear_before_reset": True, "direction": "reverse"}),
                                     ("RNN", {"activations": ["Relu"]})])
def test_onnx_style_models_round_trip(tmp_path, kind, kw):
    rng = np.random.default_rng(1)
    m = onnx_style_model(random_layer(kind, 4, 10, rng=rng, **kw), layout=1)
    m.save(tmp_path / "m.lrt")
    loaded = lstm_rt.load(tmp_path / "m.lrt")
    feeds = {"X": rng.normal(size=(2, 6, 4)).astype(np.float32), "sequence_lens": np.array([6, 3], np.int32)}
    a, b = m.run(feeds), loaded.run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_loaded_weights_are_the_mapped_file(tmp_path):
    m = language_model(np.random.default_rng(2))
    m.save(tmp_path / "lm.lrt")
    loaded = lstm_rt.load(tmp_path / "lm.lrt", mmap=True)
    w = loaded._nodes[1].packed["0.w"]
    assert not w.flags.writeable
    base = w
    while isinstance(base, np.ndarray):
        base = base.base
    assert type(getattr(base, "obj", base)).__name__ == "mmap"


def node_edit(index, fn):
    def edit(header):
        fn(header["meta"]["nodes"][index])
    return edit


@pytest.mark.parametrize("fn,match", [
    (lambda n: n["config"].update(hidden_size=64), "expected"),
    (lambda n: n["config"].update(input_size=0), "positive integer"),
    (lambda n: n["config"].update(direction="sideways"), "direction"),
    (lambda n: n["config"].update(activations=[["Swish", 0, 0]] * 3), "Swish"),
    (lambda n: n["config"].update(proj_size=None), "unexpected weights|expected"),
    (lambda n: n["tensors"].pop("0.r"), "missing weights"),
    (lambda n: n["tensors"].update({"0.r": n["tensors"]["0.w"]}), "expected"),
    (lambda n: n.update(kind="Conv"), "unknown layer kind"),
    (lambda n: n.update(weights="int3"), "unknown weight type"),
    (lambda n: n["tensors"].update({"0.w": "nope"}), "malformed"),
    (lambda n: n.update(inputs=["nowhere"]), "not produced"),
])
def test_model_descriptions_that_lie_are_refused(tmp_path, fn, match):
    m = language_model(np.random.default_rng(3))
    m.save(tmp_path / "lm.lrt")
    data = rebuild((tmp_path / "lm.lrt").read_bytes(), node_edit(1, fn))
    (tmp_path / "bad.lrt").write_bytes(data)
    with pytest.raises(ModelFormatError, match=match):
        lstm_rt.load(tmp_path / "bad.lrt")


def test_quantized_file_with_wrong_scale_shape_is_refused(tmp_path):
    m = language_model(np.random.default_rng(4))
    m.save(tmp_path / "q.lrt", weights="int8")

    def swap(header):
        t = header["meta"]["nodes"][1]["tensors"]
        t["0.w.scale"] = t["0.peep"]
    (tmp_path / "bad.lrt").write_bytes(rebuild((tmp_path / "q.lrt").read_bytes(), swap))
    with pytest.raises(ModelFormatError, match="scale"):
        lstm_rt.load(tmp_path / "bad.lrt")


def test_load_errors_for_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        lstm_rt.load(tmp_path / "absent.lrt")
    (tmp_path / "x.lrt").write_bytes(b"hello world, I am not a model" * 10)
    with pytest.raises(ModelFormatError, match="not an lstm_rt model"):
        lstm_rt.load(tmp_path / "x.lrt")


@pytest.mark.parametrize("name,version,weights", [
    ("format_v1_int8_model", 1, "int8"), ("format_v2_dense_fp32", 2, "fp32"),
    ("format_v2_dense_fp16", 2, "fp16"), ("format_v2_dense_int8", 2, "int8")])
def test_older_format_versions_load_repacked_and_resave(tmp_path, name, version, weights):
    """Files saved by earlier builds, with the outputs that build computed (tests/data):
    format_v1_int8_model (a seeded PyTorch LSTM x2 -> GRU -> Linear; int8 panel rows grouped
    by two) and format_v2_dense_* (Embedding -> LSTM -> Dense 37 + softmax; Dense in 8-wide
    panels). Loading repacks them; the results stay the same, and a re-saved copy is the
    current version and maps without a copy."""
    data = os.path.join(os.path.dirname(__file__), "data")
    if name.startswith("format_v1"):
        want = np.load(os.path.join(data, "format_v1_int8_model_expected.npz"))
        x, y_want = want["x"], want["y"]
    else:
        want = np.load(os.path.join(data, "format_v2_dense_expected.npz"))
        x, y_want = want["ids"], want[weights]
    m = lstm_rt.load(os.path.join(data, name + ".lrt"))
    assert m._file.version == version and m.weights == weights
    y = m.run(x)
    # int8: the files' outputs were computed before the recurrent products met 8-bit
    # activations (issue 14); that moves them by <= 1.2e-3 (a repacking error moves them by O(1))
    np.testing.assert_allclose(y, y_want, rtol=0, atol=2e-3 if weights == "int8" else 1e-6)
    m.save(tmp_path / "now.lrt")
    m2 = lstm_rt.load(tmp_path / "now.lrt")
    assert m2._file.version == FORMAT_VERSION
    np.testing.assert_array_equal(m2.run(x), y)
    head = m2._nodes[-1].packed["weight"]
    assert head.shape[2] == 32 and not head.flags.owndata


def _two_models(tmp_path):
    """Two different models; the second one's file is smaller than the first's."""
    rng = np.random.default_rng(11)
    big, small = language_model(rng), onnx_style_model(random_layer("GRU", 3, 4, rng=rng))
    path, other = tmp_path / "m.lrt", tmp_path / "other.lrt"
    big.save(path)
    small.save(other)
    assert os.path.getsize(other) < os.path.getsize(path)
    return big, path, other


@pytest.mark.parametrize("replace", ["truncate", "cp_smaller", "same_size_overwrite"])
def test_a_loaded_model_survives_its_file_being_replaced_in_place(tmp_path, replace):
    """The default load reads the file once: redeploying by overwriting the file (cp,
    truncation, writing into it) can neither crash (SIGBUS) nor silently change a model
    in use."""
    big, path, other = _two_models(tmp_path)
    ids = np.array([[1, 2, 3]])
    m = lstm_rt.load(path)
    s = m.stream()
    want, want_step = m.run(ids), s.step(np.array([4]))
    if replace == "truncate":
        with open(path, "r+b") as f:
            f.truncate(100)
    elif replace == "cp_smaller":
        with open(path, "wb") as f:                 # what `cp other.lrt m.lrt` does
            f.write(other.read_bytes())
    else:
        data = bytearray(path.read_bytes())
        data[-200:-40] = bytes(160)                 # same size, weights overwritten
        with open(path, "r+b") as f:
            f.write(data)
    np.testing.assert_array_equal(m.run(ids), want)
    s.reset()
    np.testing.assert_array_equal(s.step(np.array([4])), want_step)
    np.testing.assert_array_equal(m.stream().step(np.array([4])), want_step)


def test_a_mapped_model_notices_an_in_place_change_and_survives_a_rename(tmp_path):
    big, path, other = _two_models(tmp_path)
    ids = np.array([[1, 2, 3]])
    m = lstm_rt.load(path, mmap=True)
    want = m.run(ids)
    big.save(path)                  # a new file renamed over the old: the mapping keeps the old inode
    np.testing.assert_array_equal(m.run(ids), want)
    m2 = lstm_rt.load(path, mmap=True)
    with open(path, "r+b") as f:    # written in place: noticed before the next run or stream
        f.write(b"X")
    with pytest.raises(ModelFormatError, match="modified in place"):
        m2.run(ids)
    with pytest.raises(ModelFormatError, match="modified in place"):
        m2.stream()


def test_non_regular_files_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.lrt"
    os.mkfifo(fifo)
    with pytest.raises(ModelFormatError, match="FIFO"):
        lstm_rt.load(fifo)                  # opening a FIFO must not wait for a writer
    folder = tmp_path / "folder.lrt"
    folder.mkdir()
    with pytest.raises(ModelFormatError, match="is a directory"):
        lstm_rt.load(folder)
    device = tmp_path / "zero.lrt"
    device.symlink_to("/dev/zero")
    with pytest.raises(ModelFormatError, match="device"):
        lstm_rt.load(device)


def test_save_to_a_directory_is_refused_and_leaves_nothing_behind(tmp_path):
    m = onnx_style_model(random_layer("RNN", 2, 3, rng=np.random.default_rng(12)))
    d = tmp_path / "out"
    d.mkdir()
    with pytest.raises(ModelFormatError, match="is a directory"):
        m.save(d)
    with pytest.raises(OSError):
        m.save(tmp_path / "missing_folder" / "m.lrt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert list(d.iterdir()) == []


def test_models_pickle_as_their_file_bytes_and_streams_say_how_to_ship_state():
    import pickle
    m = language_model(np.random.default_rng(13)).quantized("int8")
    data = pickle.dumps(m)
    assert len(data) < len(m.to_bytes()) + 200         # the .lrt bytes and a call, nothing else
    m2 = pickle.loads(data)
    ids = np.array([[1, 5, 7]])
    np.testing.assert_array_equal(m2.run(ids), m.run(ids))
    assert m2.weights == "int8" and m2.metadata == m.metadata
    s = m.stream()
    with pytest.raises(lstm_rt.LstmRtError, match="Stream.state"):
        pickle.dumps(s)
    s.step(np.array([3]))
    s2 = m2.stream()
    s2.state = pickle.loads(pickle.dumps(s.state))
    np.testing.assert_array_equal(s2.step(np.array([4])), s.step(np.array([4])))


def test_load_bytes_checks_like_a_file():
    raw = bytearray(onnx_style_model(random_layer("LSTM", 2, 3, rng=np.random.default_rng(14))).to_bytes())
    raw[len(raw) // 2] ^= 1
    with pytest.raises(ModelFormatError, match="checksum"):
        lstm_rt.load_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="too short"):
        lstm_rt.load_bytes(b"LRTMODEL")
    with pytest.raises(ModelFormatError, match="needs bytes"):
        lstm_rt.load_bytes("model.lrt")
