"""converters.from_keras against Keras itself (KERAS_BACKEND=torch), fp32 atol 1e-5.
The converter reads the files with zipfile/json/h5py; Keras is imported only by the tests."""
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
L = keras.layers

import converters
import lstm_rt  # noqa: E402
from converters import ConversionError, from_keras  # noqa: E402

ATOL = 1e-5


def build(layers, input_shape, seed=0, int_input=False):
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, dtype="int32" if int_input else "float32")
    m = keras.Sequential([inp] + layers)
    # non-trivial biases, so a misplaced bias shows
    rng = np.random.default_rng(seed)
    for layer in m.layers:
        layer.set_weights([w + rng.normal(size=w.shape).astype(np.float32) * 0.1 for w in layer.get_weights()])
    return m


CASES = {
    "lstm-seq": lambda: [L.LSTM(7, return_sequences=True)],
    "lstm-last-dense": lambda: [L.LSTM(7), L.Dense(3, activation="softmax")],
    "gru-reset-after": lambda: [L.GRU(6, return_sequences=True)],
    "gru-reset-before": lambda: [L.GRU(6, return_sequences=True, reset_after=False)],
    "simplernn-relu": lambda: [L.SimpleRNN(5, activation="relu", return_sequences=True)],
    "stacked-timedistributed": lambda: [L.LSTM(6, return_sequences=True), L.GRU(5, return_sequences=True),
                                        L.TimeDistributed(L.Dense(4)), L.Activation("tanh")],
    "bi-concat": lambda: [L.Bidirectional(L.LSTM(5, return_sequences=True))],
    "bi-sum": lambda: [L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="sum")],
    "bi-mul": lambda: [L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="mul")],
    "bi-ave-last": lambda: [L.Bidirectional(L.SimpleRNN(4), merge_mode="ave"), L.Dense(2)],
    "bi-concat-last": lambda: [L.Bidirectional(L.GRU(4, reset_after=False)), L.Dense(2, activation="sigmoid")],
    "go-backwards-last": lambda: [L.LSTM(5, go_backwards=True)],
    "go-backwards-seq": lambda: [L.GRU(5, go_backwards=True, return_sequences=True), L.Dense(2)],
    "no-bias-hard-sigmoid": lambda: [L.LSTM(5, use_bias=False, recurrent_activation="hard_sigmoid",
                                            return_sequences=True), L.Dropout(0.5)],
    # keras.layers.RNN around a cell is the layer of that cell
    "rnn-lstmcell": lambda: [L.RNN(L.LSTMCell(5), return_sequences=True), L.RNN(L.GRUCell(4)), L.Dense(2)],
    "rnn-grucell-reset-before": lambda: [L.RNN(L.GRUCell(5, reset_after=False), return_sequences=True)],
    "rnn-simplernncell-backwards": lambda: [L.RNN(L.SimpleRNNCell(4, activation="relu"), go_backwards=True)],
    "bi-rnn-lstmcell": lambda: [L.Bidirectional(L.RNN(L.LSTMCell(4), return_sequences=True), merge_mode="sum")],
}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("case", list(CASES))
def test_sequential_models_match_keras(tmp_path, case, fmt):
    m = build(CASES[case](), (None, 4))
    x = np.random.default_rng(1).normal(size=(3, 9, 4)).astype(np.float32)
    want = np.asarray(m.predict(x, verbose=0))
    path = tmp_path / f"m.{fmt}"
    m.save(path)
    conv = converters.convert(path)
    got = conv.run(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    conv.save(tmp_path / "m.lrt")          # glue layers (merges, last states) survive the file
    np.testing.assert_array_equal(lstm_rt.load(tmp_path / "m.lrt").run(x), got)


def test_live_model_and_embedding_language_model():
    m = build([L.Embedding(30, 8), L.LSTM(10, return_sequences=True), L.Dense(30, activation="softmax")],
              (None,), int_input=True)
    ids = np.random.default_rng(2).integers(0, 30, size=(2, 12))
    want = np.asarray(m.predict(ids, verbose=0))
    conv = from_keras(m)
    np.testing.assert_allclose(conv.run(ids), want, atol=ATOL, rtol=0)
    s = conv.stream(batch=2)  # streaming parity: step by step == Keras on the whole sequence
    np.testing.assert_allclose(np.stack([s.step(ids[:, t]) for t in range(12)], axis=1), want, atol=ATOL, rtol=0)


def test_rnn_of_a_cell_streams_like_the_layer(tmp_path):
    m = build([L.RNN(L.LSTMCell(6), return_sequences=True), L.Dense(3, activation="softmax")], (None, 4))
    x = np.random.default_rng(7).normal(size=(2, 8, 4)).astype(np.float32)
    m.save(tmp_path / "cell.keras")
    conv = converters.convert(tmp_path / "cell.keras")
    assert [layer.kind for layer in conv.layers] == ["LSTM", "Dense"]
    s = conv.stream(batch=2)
    np.testing.assert_allclose(np.stack([s.step(x[:, t]) for t in range(8)], axis=1), conv.run(x), atol=ATOL, rtol=0)
    np.testing.assert_allclose(conv.run(x), np.asarray(m.predict(x, verbose=0)), atol=ATOL, rtol=0)


def test_unsupported_layers_are_one_short_message(tmp_path):
    m = build([L.Conv1D(4, 3, padding="same"), L.LayerNormalization(), L.LSTM(5, return_sequences=True),
               L.Conv1D(2, 1), L.GlobalAveragePooling1D()], (None, 4))
    m.save(tmp_path / "u.keras")
    with pytest.raises(ConversionError, match="Conv1D.*LayerNormalization.*GlobalAveragePooling1D.*recurrent") as e:
        converters.convert(tmp_path / "u.keras")
    assert len(str(e.value)) < 300, str(e.value)


def test_rnn_of_stacked_cells_is_refused_briefly(tmp_path):
    m = build([L.RNN([L.LSTMCell(4), L.LSTMCell(3)])], (None, 4))
    m.save(tmp_path / "stacked.keras")
    with pytest.raises(ConversionError, match="RNN of .*separate RNN layers") as e:
        converters.convert(tmp_path / "stacked.keras")
    assert len(str(e.value)) < 300, str(e.value)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_functional_model_with_return_state(tmp_path, fmt):
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, 3), name="frames")
    y, h, c = L.LSTM(6, return_sequences=True, return_state=True, name="enc")(inp)
    out = L.Dense(2, name="head")(L.GRU(4, return_sequences=True, name="dec")(y))
    m = keras.Model(inp, [out, h, c])
    x = np.random.default_rng(4).normal(size=(2, 5, 3)).astype(np.float32)
    want = [np.asarray(a) for a in m.predict(x, verbose=0)]
    m.save(tmp_path / f"f.{fmt}")
    conv = converters.convert(tmp_path / f"f.{fmt}")
    got = conv.run({"frames": x})
    assert list(got) == ["head", "enc/h", "enc/c"]
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_bidirectional_return_state_gives_each_direction(tmp_path, cell):
    keras.utils.set_random_seed(5)
    inp = keras.Input((None, 3), name="frames")
    outs = L.Bidirectional(getattr(L, cell)(4, return_sequences=True, return_state=True), name="bi")(inp)
    m = keras.Model(inp, list(outs))
    x = np.random.default_rng(6).normal(size=(2, 5, 3)).astype(np.float32)
    want = [np.asarray(a) for a in m.predict(x, verbose=0)]
    m.save(tmp_path / "b.keras")
    conv = converters.convert(tmp_path / "b.keras")
    conv.save(tmp_path / "b.lrt")                       # the glue layers round-trip the file
    got = lstm_rt.load(tmp_path / "b.lrt").run({"frames": x})
    keys = ["bi"] + [f"bi/{d}_{k}" for d in ("forward", "backward") for k in (("h", "c") if cell == "LSTM" else ("h",))]
    assert list(got) == keys
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


def test_go_backwards_sequence_with_mask_and_no_streaming(tmp_path):
    """go_backwards + return_sequences over masked (mask_zero) steps; such a model needs the
    whole sequence, so stream() refuses it."""
    m = build([L.Embedding(9, 4, mask_zero=True), L.LSTM(5, go_backwards=True, return_sequences=True),
               L.LSTM(3, return_sequences=True)], (None,), int_input=True)
    ids = np.array([[3, 4, 0, 5, 0, 0], [1, 2, 3, 4, 5, 6]])
    want = np.asarray(m.predict(ids, verbose=0))
    m.save(tmp_path / "g.keras")
    conv = converters.convert(tmp_path / "g.keras")
    np.testing.assert_allclose(conv.run(ids), want, atol=ATOL, rtol=0)
    with pytest.raises(lstm_rt.UnsupportedError, match="whole sequence"):
        conv.stream()


def test_last_output_streams_like_the_prefix():
    """A layer without return_sequences gives, after each step, the model's output on the prefix."""
    m = build([L.GRU(5), L.Dense(2)], (None, 3))
    conv = from_keras(m)
    x = np.random.default_rng(5).normal(size=(1, 6, 3)).astype(np.float32)
    s = conv.stream(batch=1)
    for t in range(6):
        step = s.step(x[:, t])
        np.testing.assert_allclose(step, np.asarray(m.predict(x[:, :t + 1], verbose=0)), atol=ATOL, rtol=0)


def test_keras2_hard_sigmoid_is_chosen_by_the_recorded_version(tmp_path):
    """Keras 2 files mean clip(0.2x + 0.5); Keras 3 files relu6(x + 3) / 6."""
    import h5py
    m = build([L.SimpleRNN(4, return_sequences=True), L.GRU(4, recurrent_activation="hard_sigmoid",
                                                             return_sequences=True)], (None, 3))
    m.save(tmp_path / "k3.h5")
    k3 = converters.convert(tmp_path / "k3.h5")
    assert k3.layers[1].activations[0].alpha == pytest.approx(1 / 6)
    with h5py.File(tmp_path / "k3.h5", "a") as f:
        f.attrs["keras_version"] = "2.15.0"
    k2 = converters.convert(tmp_path / "k3.h5")
    assert k2.layers[1].activations[0].alpha == pytest.approx(0.2)
    assert k2.metadata["keras_version"] == "2.15.0"


def test_unsupported_layers_are_all_named(tmp_path):
    m = build([L.Conv1D(4, 3), L.LSTM(3, return_sequences=True), L.LayerNormalization()], (None, 5))
    m.save(tmp_path / "bad.keras")
    with pytest.raises(ConversionError) as e:
        converters.convert(tmp_path / "bad.keras")
    msg = str(e.value)
    assert "Conv1D" in msg and "LayerNormalization" in msg and "bad.keras" in msg


@pytest.mark.parametrize("layers", [
    lambda: [L.Embedding(10, 4, mask_zero=True), L.LSTM(3, return_sequences=True), L.GRU(4), L.Dense(2)],
    lambda: [L.Embedding(10, 4, mask_zero=True), L.Bidirectional(L.LSTM(3, return_sequences=True)),
             L.TimeDistributed(L.Dense(2))],
], ids=["embedding-stack", "embedding-bidirectional"])
def test_mask_zero_carries_state_and_output(tmp_path, layers):
    m = build(layers(), (None,), int_input=True)
    ids = np.random.default_rng(7).integers(1, 10, size=(3, 8))
    ids[0, 5:] = 0   # post-padding
    ids[1, :3] = 0   # pre-padding
    ids[2, 4] = 0    # a hole
    want = np.asarray(m.predict(ids, verbose=0))
    m.save(tmp_path / "mask.keras")
    np.testing.assert_allclose(converters.convert(tmp_path / "mask.keras").run(ids), want, atol=ATOL, rtol=0)


def test_masking_layer(tmp_path):
    m = build([L.Masking(mask_value=0.0), L.SimpleRNN(5, return_sequences=True), L.LSTM(3)], (None, 4))
    x = np.random.default_rng(8).normal(size=(2, 7, 4)).astype(np.float32)
    x[0, 4:] = 0.0
    x[1, 2] = 0.0
    want = np.asarray(m.predict(x, verbose=0))
    m.save(tmp_path / "masking.h5")
    np.testing.assert_allclose(converters.convert(tmp_path / "masking.h5").run(x), want, atol=ATOL, rtol=0)


def test_not_a_keras_file(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ConversionError):
        converters.convert(tmp_path / "x.h5")


def test_unit_forget_bias_is_not_added_again():
    """unit_forget_bias=True only initializes the forget bias to 1; the stored bias is used as is."""
    m = build([L.LSTM(4, unit_forget_bias=True, return_sequences=True)], (None, 3))
    conv = from_keras(m)
    keras_bias = m.layers[0].get_weights()[2]
    H = 4
    # ONNX gate order i, o, f, c; Keras i, f, c, o: the forget block must be Keras' verbatim
    np.testing.assert_array_equal(conv.layers[0].b[0, 2 * H:3 * H], keras_bias[H:2 * H])
    x = np.random.default_rng(9).normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(conv.run(x), np.asarray(m.predict(x, verbose=0)), atol=ATOL, rtol=0)


def test_keras2_hard_sigmoid_numbers(tmp_path):
    """The converted Keras 2 file computes with clip(0.2x + 0.5, 0, 1), checked against a
    numpy GRU written here from the Keras 2 equations (reset_after=False)."""
    import h5py
    m = build([L.GRU(3, recurrent_activation="hard_sigmoid", reset_after=False, return_sequences=True)], (None, 2))
    m.save(tmp_path / "k.h5")
    with h5py.File(tmp_path / "k.h5", "a") as f:
        f.attrs["keras_version"] = "2.15.0"
    kernel, rec, bias = m.layers[0].get_weights()
    x = np.random.default_rng(10).normal(size=(1, 6, 2)).astype(np.float32) * 3

    def hs(v):
        return np.clip(0.2 * v + 0.5, 0, 1)
    h, ys = np.zeros(3), []
    for t in range(6):
        xz, xr, xh = np.split(x[0, t] @ kernel + bias, 3)
        rz, rr, rh = np.split(rec, 3, axis=1)
        z, r = hs(xz + h @ rz), hs(xr + h @ rr)
        hh = np.tanh(xh + (r * h) @ rh)
        h = z * h + (1 - z) * hh
        ys.append(h)
    np.testing.assert_allclose(converters.convert(tmp_path / "k.h5").run(x)[0], np.array(ys), atol=ATOL, rtol=0)


def test_stateful_layer_streams_across_calls():
    keras.utils.set_random_seed(11)
    m = keras.Sequential([keras.Input(batch_shape=(1, None, 3)), L.LSTM(4, stateful=True, return_sequences=True)])
    x = np.random.default_rng(11).normal(size=(1, 9, 3)).astype(np.float32)
    want = np.concatenate([np.asarray(m.predict(x[:, :4], verbose=0)), np.asarray(m.predict(x[:, 4:], verbose=0))],
                          axis=1)
    s = from_keras(m).stream(batch=1)
    got = np.concatenate([s.feed(x[:, :4]), s.feed(x[:, 4:])], axis=1)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_old_config_keys_are_read_anyway(tmp_path):
    """Configs written by older Keras carry keys (time_major, implementation) newer Keras rejects."""
    import json
    import h5py
    m = build([L.LSTM(4, return_sequences=True)], (None, 3))
    m.save(tmp_path / "old.h5")
    with h5py.File(tmp_path / "old.h5", "a") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"][1]["config"].update(time_major=False, implementation=2)
        f.attrs["model_config"] = json.dumps(cfg)
    x = np.random.default_rng(12).normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(converters.convert(tmp_path / "old.h5").run(x), np.asarray(m.predict(x, verbose=0)),
                               atol=ATOL, rtol=0)
    with h5py.File(tmp_path / "old.h5", "a") as f:   # time_major=True changes the layout: refused
        cfg["config"]["layers"][1]["config"]["time_major"] = True
        f.attrs["model_config"] = json.dumps(cfg)
    with pytest.raises(ConversionError, match="time_major=True"):
        converters.convert(tmp_path / "old.h5")


def test_keras3_onnx_export_is_refused_with_the_reason(tmp_path):
    """Keras 3 on the torch backend traces the model for the example's length: an LSTM with
    a dynamic time axis exports as one unrolled step (onnxruntime then returns one step
    whatever T is). from_onnx refuses it and says to convert the .keras file instead."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m = build([L.LSTM(5, return_sequences=True)], (None, 4))
    m.predict(np.zeros((1, 3, 4), np.float32), verbose=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the exporter's own tracer warnings say what the test shows
            m.export(str(tmp_path / "k.onnx"), format="onnx", verbose=False)
    except Exception as e:  # noqa: BLE001 - an exporter that is not installed
        pytest.skip(f"Keras ONNX export unavailable: {e}")
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "k.onnx"))
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape[1] != 3   # the exported graph is wrong
    with pytest.raises(ConversionError, match="unrolled the recurrence.*from_keras"):
        converters.convert(tmp_path / "k.onnx")


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_functional_models_with_two_inputs_branches_and_merges(tmp_path, fmt):
    """Two inputs, a branch, and every merge layer: as Keras computes them, through a file."""
    keras.utils.set_random_seed(7)
    a = keras.Input((None, 3), name="audio")
    b = keras.Input((None, 2), name="extra")
    ha = L.LSTM(4, return_sequences=True, name="la")(a)
    hb = L.GRU(4, return_sequences=True, name="gb")(b)
    hc = L.SimpleRNN(4, return_sequences=True, name="rc")(a)          # a second branch from `a`
    joined = [L.Add(name="add")([ha, hb]), L.Subtract(name="sub")([ha, hb]),
              L.Multiply(name="mul")([ha, hb, hc]), L.Average(name="avg")([ha, hb, hc]),
              L.Maximum(name="max")([ha, hc]), L.Minimum(name="min")([hb, hc])]
    cat = L.Concatenate(name="cat")(joined + [b])
    seq = L.Dense(3, name="head")(cat)
    last = L.Concatenate(name="last")([L.LSTM(2, name="s1")(cat), L.GRU(3, name="s2")(b)])
    m = keras.Model([a, b], [seq, last])
    rng = np.random.default_rng(8)
    feeds = {"audio": rng.normal(size=(2, 6, 3)).astype(np.float32),
             "extra": rng.normal(size=(2, 6, 2)).astype(np.float32)}
    want = m.predict([feeds["audio"], feeds["extra"]], verbose=0)
    m.save(tmp_path / f"m.{fmt}")
    conv = converters.convert(tmp_path / f"m.{fmt}")
    conv.save(tmp_path / "m.lrt")
    got = lstm_rt.load(tmp_path / "m.lrt").run(feeds)
    assert list(got) == ["head", "last"]
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(g, np.asarray(w), atol=ATOL, rtol=0)
    s = conv.stream()                          # and step by step, both inputs per step
    steps = [s.step({"audio": feeds["audio"][:1, t], "extra": feeds["extra"][:1, t]})["head"] for t in range(6)]
    np.testing.assert_allclose(np.stack(steps, axis=1), np.asarray(want[0])[:1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_encoder_decoder_with_initial_state(tmp_path, fmt, cell):
    """The Keras seq2seq pattern: the decoder starts from the encoder's returned states
    (initial_state=...), with inputs of different lengths; also streamed: the encoder's
    states handed to a decoder stream give the decoder's outputs step by step."""
    keras.utils.set_random_seed(9)
    src, tgt = keras.Input((None, 3), name="src"), keras.Input((None, 2), name="tgt")
    enc = getattr(L, cell)(4, return_state=True, name="enc")(src)
    states = list(enc[1:])
    dec = getattr(L, cell)(4, return_sequences=True, name="dec")(tgt, initial_state=states)
    m = keras.Model([src, tgt], L.Dense(2, name="head")(dec))
    rng = np.random.default_rng(10)
    x_src = rng.normal(size=(2, 6, 3)).astype(np.float32)
    x_tgt = rng.normal(size=(2, 4, 2)).astype(np.float32)
    want = np.asarray(m.predict([x_src, x_tgt], verbose=0))
    m.save(tmp_path / f"s2s.{fmt}")
    conv = converters.convert(tmp_path / f"s2s.{fmt}")
    np.testing.assert_allclose(conv.run({"src": x_src, "tgt": x_tgt})["head"], want, atol=ATOL, rtol=0)
    with pytest.raises(lstm_rt.UnsupportedError, match="take_state"):
        conv.stream()     # one graph can't stream both halves; two models + take_state can


def test_initial_state_from_something_else_is_refused(tmp_path):
    keras.utils.set_random_seed(9)
    src, tgt = keras.Input((None, 3), name="src"), keras.Input((None, 2), name="tgt")
    h = L.Dense(4, name="h0")(L.LSTM(3, name="enc")(src))          # a Dense output as the state
    dec = L.GRU(4, return_sequences=True, name="dec")(tgt, initial_state=[h])
    keras.Model([src, tgt], dec).save(tmp_path / "bad.keras")
    with pytest.raises(ConversionError, match="dec.*initial_state"):
        converters.convert(tmp_path / "bad.keras")


def test_bidirectional_backward_layer(tmp_path):
    """A backward_layer that mirrors the forward one converts; one configured differently
    (here its recurrent activation) is refused instead of being converted with the wrong math."""
    x = np.random.default_rng(11).normal(size=(2, 5, 3)).astype(np.float32)
    mirror = build([L.Bidirectional(L.LSTM(4, return_sequences=True),
                                    backward_layer=L.LSTM(4, return_sequences=True, go_backwards=True))], (None, 3))
    mirror.save(tmp_path / "ok.keras")
    np.testing.assert_allclose(converters.convert(tmp_path / "ok.keras").run(x),
                               np.asarray(mirror.predict(x, verbose=0)), atol=ATOL, rtol=0)
    other = build([L.Bidirectional(L.LSTM(4, return_sequences=True),
                                   backward_layer=L.LSTM(4, return_sequences=True, go_backwards=True,
                                                         recurrent_activation="tanh"))], (None, 3))
    other.save(tmp_path / "bad.keras")
    with pytest.raises(ConversionError, match="backward_layer configured differently"):
        converters.convert(tmp_path / "bad.keras")
