"""External layouts <-> internal forms (lstm_rt.layouts): port shapes, binding a call's
feeds to the inputs, and bringing them to the graph's forms (to_internal)."""
import numpy as np
import pytest

from lstm_rt.errors import ShapeError
from lstm_rt.layers import Embedding
from lstm_rt.layouts import LAYOUTS, bind_feeds, port_shape, to_internal
from lstm_rt.model import Model, Node, Port
from util import onnx_style_model, random_layer

ATOL = 1e-5


@pytest.mark.parametrize("layout,form,groups,shape", [
    ("TBF", ("seq", 5), 1, (None, None, 5)), ("BTF", ("seq", 5), 1, (None, None, 5)),
    ("BF", ("seq", 5), 1, (None, 5)), ("BF", ("static", 5), 1, (None, 5)),
    ("TB", ("ids", 9), 1, (None, None)), ("BT", ("ids", 9), 1, (None, None)),
    ("TDBH", ("seq", 8), 2, (None, 2, None, 4)), ("BTDH", ("seq", 8), 2, (None, None, 2, 4)),
    ("DBH", ("state", 2, 6), 1, (2, None, 6)), ("BDH", ("state", 2, 6), 1, (None, 2, 6)),
    ("BH", ("state", 1, 6), 1, (None, 6)), ("B", ("lens",), 1, (None,)),
])
def test_port_shapes(layout, form, groups, shape):
    assert port_shape(layout, form, groups) == shape


def test_every_layout_has_a_port_shape():
    assert set(LAYOUTS) == {"TBF", "BTF", "TB", "BT", "TDBH", "BTDH", "BF", "DBH", "BDH", "BH", "B"}


@pytest.fixture(scope="module")
def lstm_model():
    return onnx_style_model(random_layer("LSTM", 4, 6, rng=np.random.default_rng(0)))


@pytest.fixture(scope="module")
def batch_major():
    """Two sequence inputs, batch-major; a state port binding two layers' states."""
    rng = np.random.default_rng(1)
    a = random_layer("LSTM", 3, 4, rng=rng, name="a")
    b = random_layer("GRU", 2, 4, rng=rng, name="b")
    return Model([Node(a, ["X1", "L", "h0"], ["Y1"]), Node(b, ["X2", None, "h1"], ["Y2"])],
                 [Port("X1", "X1", "BTF"), Port("X2", "X2", "BTF"), Port("L", "L", "B", "int32"),
                  Port("H", ["h0", "h1"], "BDH")],
                 [Port("Y1", "Y1", "BTF"), Port("Y2", "Y2", "BTF")])


# ------------------------------------------------------------ bind_feeds


def test_a_bare_array_binds_the_only_sequence_input(lstm_model, batch_major):
    x = np.zeros((3, 2, 4), np.float32)
    assert bind_feeds(lstm_model._graph, x, streaming=False) == {"X": x}
    with pytest.raises(ShapeError, match=r"2 sequence inputs \(\['X1', 'X2'\]\): pass a dict"):
        bind_feeds(batch_major._graph, x, streaming=False)


def test_a_stream_takes_neither_states_nor_lengths(lstm_model):
    x = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ShapeError, match="set Stream.state instead"):
        bind_feeds(lstm_model._graph, {"X": x, "initial_h": np.zeros((1, 2, 6), np.float32)}, streaming=True)
    with pytest.raises(ShapeError, match="no fixed length"):
        bind_feeds(lstm_model._graph, {"X": x, "sequence_lens": np.ones(2, np.int32)}, streaming=True)
    assert set(bind_feeds(lstm_model._graph, {"X": x, "sequence_lens": np.ones(2, np.int32)},
                          streaming=False)) == {"X", "sequence_lens"}


# ------------------------------------------------------------ to_internal


def test_batch_major_inputs_become_time_major_and_states_split_on_d(batch_major):
    rng = np.random.default_rng(2)
    x1 = rng.normal(size=(2, 5, 3)).astype(np.float32)
    x2 = rng.normal(size=(2, 7, 2)).astype(np.float32)
    H = rng.normal(size=(2, 2, 4)).astype(np.float32)             # [B, D, H] over both layers
    L = np.array([5, 2], np.int64)
    env, B = to_internal(batch_major._graph, {"X1": x1, "X2": x2, "L": L, "H": H}, time_axis=True)
    assert B == 2
    np.testing.assert_array_equal(env["X1"], x1.transpose(1, 0, 2))
    np.testing.assert_array_equal(env["X2"], x2.transpose(1, 0, 2))
    np.testing.assert_array_equal(env["h0"], H[:, :1].transpose(1, 0, 2))
    np.testing.assert_array_equal(env["h1"], H[:, 1:].transpose(1, 0, 2))
    assert env["L"].dtype == np.int32 and not np.shares_memory(env["L"], L)
    assert all(a.flags.c_contiguous for a in env.values())


def test_a_step_has_no_time_axis_and_ids_become_int64():
    emb = Embedding("e", np.ones((7, 3)))
    m = Model([Node(emb, ["ids"], ["E"])], [Port("ids", "ids", "BT")], [Port("E", "E", "BTF")])
    env, B = to_internal(m._graph, {"ids": np.array([1, 6], np.uint8)}, time_axis=False)
    assert B == 2 and env["ids"].dtype == np.int64 and env["ids"].shape == (1, 2)
    with pytest.raises(ShapeError, match=r"expected rank 1 \(B\)"):
        to_internal(m._graph, {"ids": np.zeros((1, 2), np.int64)}, time_axis=False)


def test_float32_of_either_byte_order_is_accepted(lstm_model):
    x = np.random.default_rng(3).normal(size=(3, 2, 4)).astype(np.float32)
    np.testing.assert_array_equal(lstm_model.run({"X": x.astype(">f4")})["Y"], lstm_model.run({"X": x})["Y"])


def test_lengths_are_checked_against_each_input_their_layers_walk(batch_major):
    feeds = {"X1": np.zeros((2, 3, 3), np.float32), "X2": np.zeros((2, 5, 2), np.float32),
             "L": np.array([4, 1], np.int32)}
    with pytest.raises(ShapeError, match=r"lengths must be in \[0, 3\] \(the time steps of input 'X1'\)"):
        to_internal(batch_major._graph, feeds, time_axis=True)


@pytest.mark.parametrize("feeds,match", [
    ({"X": np.zeros((3, 2, 4), np.float64)}, "float32"),
    ({"X": np.zeros((3, 4), np.float32)}, "rank 3"),
    ({"X": np.zeros((3, 2, 5), np.float32)}, "4 features"),
    ({"X": np.zeros((3, 2, 4), np.float32), "sequence_lens": np.array([1, 4], np.int32)}, r"\[0, 3\]"),
    ({"X": np.zeros((3, 2, 4), np.float32), "sequence_lens": np.array([1, 2, 3], np.int32)}, "batch size"),
    ({"X": np.zeros((3, 2, 4), np.float32), "sequence_lens": np.array([1.0, 2.0])}, "integer array of lengths"),
    ({"X": np.zeros((3, 2, 4), np.float32), "initial_h": np.zeros((1, 3, 6), np.float32)}, r"\(1, 2, 6\)"),
    ({"X": np.zeros((3, 2, 4), np.float32), "bogus": np.zeros(1)}, "unknown input"),
    ({"sequence_lens": np.array([1], np.int32)}, "missing input 'X'"),
    ({"X": [[[0.0] * 4]]}, "numpy array"),
])
def test_bad_run_inputs_raise_clear_errors(lstm_model, feeds, match):
    with pytest.raises(ShapeError, match=match):
        lstm_model.run(feeds)


def test_bad_stream_inputs_raise_clear_errors(lstm_model):
    s = lstm_model.stream(batch=2)
    with pytest.raises(ShapeError, match="batch 2"):
        s.step({"X": np.zeros((3, 4), np.float32)})
    with pytest.raises(ShapeError, match="rank 2"):
        s.step({"X": np.zeros((1, 2, 4), np.float32)})
    with pytest.raises(ShapeError, match="Stream.state"):
        s.feed({"X": np.zeros((1, 2, 4), np.float32), "initial_h": np.zeros((1, 2, 6), np.float32)})
    with pytest.raises(ShapeError, match="no fixed length"):
        s.feed({"X": np.zeros((1, 2, 4), np.float32), "sequence_lens": np.ones(2, np.int32)})
    with pytest.raises(ShapeError, match="keys"):
        s.state = {"nope": np.zeros(1)}
    with pytest.raises(ShapeError, match="positive integer"):
        lstm_model.stream(batch=0)


def test_token_ids_out_of_range():
    emb = Embedding("emb", np.ones((5, 2)))
    m = Model([Node(emb, ["ids"], ["e"])], [Port("ids", "ids", "TB")], [Port("e", "e", "TBF")])
    with pytest.raises(ShapeError, match=r"\[0, 5\)"):
        m.run(np.array([[5]]))
    with pytest.raises(ShapeError, match="integers"):
        m.run(np.array([[1.0]]))


# ------------------------------------------------------------ outputs: laid out as the ports say


def test_layout_1_is_the_batch_major_twin():
    rng = np.random.default_rng(5)
    layer = random_layer("LSTM", 4, 6, rng=rng, direction="bidirectional")
    x = rng.normal(size=(7, 3, 4)).astype(np.float32)
    lens = np.array([7, 2, 4], np.int32)
    a = onnx_style_model(layer, 0).run({"X": x, "sequence_lens": lens})
    b = onnx_style_model(layer, 1).run({"X": np.swapaxes(x, 0, 1).copy(), "sequence_lens": lens})
    np.testing.assert_array_equal(b["Y"], a["Y"].transpose(2, 0, 1, 3))
    np.testing.assert_array_equal(b["Y_h"], a["Y_h"].transpose(1, 0, 2))
    assert onnx_style_model(layer, 1).inputs[0].shape == (None, None, 4)
    assert onnx_style_model(layer, 1).outputs[0].shape == (None, None, 2, 6)


def test_batch_major_graph_runs_like_its_layers(batch_major):
    """The outputs of the two-input graph equal each layer's reference on the same feeds."""
    rng = np.random.default_rng(6)
    x1 = rng.normal(size=(2, 5, 3)).astype(np.float32)
    x2 = rng.normal(size=(2, 7, 2)).astype(np.float32)
    H = rng.normal(size=(2, 2, 4)).astype(np.float32)
    L = np.array([5, 2], np.int32)
    out = batch_major.run({"X1": x1, "X2": x2, "L": L, "H": H})
    a, b = batch_major.layers
    ya = a.reference(x1.transpose(1, 0, 2), L, H[:, :1].transpose(1, 0, 2))[0][:, 0]
    yb = b.reference(x2.transpose(1, 0, 2), None, H[:, 1:].transpose(1, 0, 2))[0][:, 0]
    np.testing.assert_allclose(out["Y1"], ya.transpose(1, 0, 2), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["Y2"], yb.transpose(1, 0, 2), atol=ATOL, rtol=0)
