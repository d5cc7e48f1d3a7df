"""The graph check (lstm_rt.graph): every tensor produced before it is read, with consistent
forms (shape inference), the links and time sources it finds, and the TensorSpecs of ports."""
import numpy as np
import pytest

from lstm_rt.errors import ShapeError
from lstm_rt.graph import TensorSpec
from lstm_rt.layers import Dense, Embedding, Join, LastState, Mask, Merge, ReverseTime, SelectDirection
from lstm_rt.model import Model, Node, Port
from util import onnx_style_model, random_layer

RNG = np.random.default_rng(0)
LSTM34 = random_layer("LSTM", 3, 4, rng=RNG, name="l")
GRU34 = random_layer("GRU", 3, 4, rng=RNG, name="g")
BI34 = random_layer("GRU", 3, 4, rng=RNG, name="bi", direction="bidirectional")
X = [Port("x", "x", "TBF")]


def seq_out(t="y"):
    return [Port(t, t, "TBF")]


# ------------------------------------------------------------ shape inference


def test_forms_of_a_language_model_with_a_mask_and_a_last_output():
    emb = Embedding("e", RNG.normal(size=(9, 3)))
    m = Model([Node(emb, ["ids"], ["E"]),
               Node(Mask("mk", "nonzero_ids"), ["ids"], ["mask", "ids2"]),
               Node(random_layer("LSTM", 3, 6, rng=RNG, name="l", proj=2), ["E", None, None, None, "mask"],
                    ["Y", "H", "C"]),
               Node(LastState("last", 1, 2), ["H"], ["S"]),
               Node(Dense("d", RNG.normal(size=(5, 2))), ["S"], ["P"])],
              [Port("ids", "ids", "BT")], [Port("P", "P", "BF"), Port("Y", "Y", "BTF"), Port("C", "C", "BDH")])
    forms = m._graph.forms
    assert forms["ids"] == forms["ids2"] == ("ids", 9)
    assert forms["mask"] == ("mask",)
    assert forms["E"] == ("seq", 3)
    assert (forms["Y"], forms["H"], forms["C"]) == (("seq", 2), ("state", 1, 2), ("state", 1, 6))
    assert forms["S"] == ("static", 2) and forms["P"] == ("static", 5)
    assert m._graph.time_sources["Y"] == {"ids"} and "S" not in m._graph.time_sources
    assert m._graph.state_links == {}


def test_links_time_sources_and_length_limits_of_an_encoder_decoder_graph():
    enc = random_layer("LSTM", 3, 4, rng=RNG, name="enc")
    dec = random_layer("LSTM", 2, 4, rng=RNG, name="dec")
    m = Model([Node(enc, ["X1"], [None, "h", "c"]), Node(dec, ["X2", "L", "h", "c"], ["Y"])],
              [Port("X1", "X1", "BTF"), Port("X2", "X2", "BTF"), Port("L", "L", "B", "int64")],
              [Port("Y", "Y", "BTF")])
    g = m._graph
    assert g.state_links == {1: [("h", "h"), ("c", "c")]}
    assert g.time_sources["X1"] == {"X1"} and g.time_sources["Y"] == {"X2"}
    assert g.lens_limits == {"L": {"X2"}}
    assert g.forms["L"] == ("lens",)


def test_join_merge_reverse_and_select_direction_forms():
    m = Model([Node(BI34, ["x"], ["Y", "H"]),
               Node(Merge("mg", "sum", 4, 2), ["Y"], ["M"]),
               Node(ReverseTime("rev", 4), ["M"], ["R"]),
               Node(Join("j", "concat", [4, 4]), ["M", "R"], ["J"]),
               Node(SelectDirection("back", 2, 1, 4), ["H"], ["Hb"])],
              X, [Port("J", "J", "TBF"), Port("Hb", "Hb", "BH")])
    f = m._graph.forms
    assert (f["Y"], f["M"], f["R"], f["J"], f["Hb"]) == (("seq", 8), ("seq", 4), ("seq", 4), ("seq", 8),
                                                         ("state", 1, 4))
    assert m._graph.time_sources["J"] == {"x"}


def test_a_length_input_no_layer_reads_is_a_lengths_tensor():
    m = Model([Node(GRU34, ["x"], ["y"])], X + [Port("L", "L", "B")], seq_out())
    assert m._graph.forms["L"] == ("lens",)


# ------------------------------------------------------------ what the check refuses


def lstm(ins, outs=("y",)):
    return Node(LSTM34, list(ins), list(outs))


@pytest.mark.parametrize("build,match", [
    (lambda: Model([lstm(["nope"])], X, seq_out()), "its input 'nope' is not produced"),
    (lambda: Model([lstm(["x"])], X + [Port("x", "z", "TBF")], seq_out()), "duplicate input name"),
    (lambda: Model([lstm(["x"])], [Port("h", "h", "DBH")], seq_out()), "at least one sequence input"),
    (lambda: Model([lstm(["x"])], X + [Port("x2", "x2", "TBF")], seq_out()), "'x2' is not used"),
    (lambda: Model([lstm(["x", None, "x"])], X, seq_out()), r"used as \('state'"),
    (lambda: Model([lstm(["x", None, "h0"])], X + [Port("h0", "h0", "TBF")], seq_out()),
     "layout TBF does not fit a state"),
    (lambda: Model([lstm(["x"])], [Port("x", "x", "TB")], seq_out()), "layout TB does not fit a seq"),
    (lambda: Model([Node(BI34, ["x", None, "h0"], ["y"])], X + [Port("h0", "h0", "BH")], seq_out()),
     "BH needs a one-direction state"),
    (lambda: Model([lstm(["x"]), lstm(["y"], ["z"])], X, seq_out("z")), "unique names"),
    (lambda: Model([Node(GRU34, ["x", None, None, "c0"], ["y"])], X + [Port("c0", "c0", "DBH")], seq_out()),
     "has no cell state input"),
    (lambda: Model([Node(GRU34, ["x"], ["y", "h", "c"])], X, seq_out()), "has no cell state output"),
    (lambda: Model([Node(Dense("d", np.ones((3, 3))), ["x"], ["m"]), lstm(["x", None, None, None, "m"])],
                   X, seq_out()), "'m' is not a mask"),
    (lambda: Model([lstm(["x"], ["y", "h"]), Node(Dense("d", np.ones((2, 5))), ["h"], ["z"])], X, seq_out("z")),
     r"used as \('seq', 5\)"),
    (lambda: Model([lstm(["x"], ["y", "h"]), Node(LastState("s", 1, 4), ["h"], ["s"]),
                    Node(Dense("d", np.ones((2, 5))), ["s"], ["z"])], X, [Port("z", "z", "BF")]),
     "expects 5 features, gets 4"),
    (lambda: Model([lstm(["x"]), Node(LastState("s", 2, 4), ["y"], ["s"])], X, [Port("s", "s", "BF")]),
     r"expects a state \(2, B, 4\)"),
    (lambda: Model([Node(Mask("mk", "nonzero_ids"), ["x"], ["m", "x2"]), lstm(["x"])], X, seq_out()),
     "expects token ids"),
    (lambda: Model([lstm(["x"]), Node(Join("j", "concat", [4, 4]), ["y"], ["z"])], X, seq_out("z")),
     "has 1 inputs for 2 sizes"),
    (lambda: Model([lstm(["x"], ["y", "h"]), Node(LastState("s", 1, 4), ["h"], ["s"]),
                    Node(Join("j", "sum", [4, 4]), ["y", "s"], ["z"])], X, seq_out("z")),
     "cannot join sequences with last outputs"),
    (lambda: Model([lstm(["x"])], X, seq_out("nope")), "output 'nope': tensor 'nope' is not produced"),
    (lambda: Model([lstm(["x"], ["y", "h"])], X, [Port("h", "h", "TBF")]), "layout TBF does not fit a state"),
    (lambda: Model([lstm(["x"], ["y", "h"])], X, [Port("h", ["h", "y"], "DBH")]),
     "concatenated states must share"),
    (lambda: Model([Node(BI34, ["x"], ["y", "h"])], X, [Port("h", "h", "BH")]), "BH needs a one-direction"),
    (lambda: Model([lstm(["x"])], X, [Port("y", "y", "TDBH", groups=3)]), "do not split into 3 groups"),
])
def test_graph_errors_name_the_problem(build, match):
    with pytest.raises(ShapeError, match=match):
        build()


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "", "tensor": "x", "layout": "TBF"}, "non-empty string"),
    ({"name": "x", "tensor": 3, "layout": "TBF"}, "tensor must be a name"),
    ({"name": "x", "tensor": "x", "layout": "XYZ"}, "unknown layout"),
    ({"name": "x", "tensor": "x", "layout": "TBF", "dtype": "float16"}, "dtype must be"),
    ({"name": "x", "tensor": "x", "layout": "TBF", "groups": 0}, "groups must be"),
    ({"name": "x", "tensor": ["a", "b"], "layout": "TBF"}, "only state ports bind a list"),
])
def test_bad_ports_raise(kwargs, match):
    with pytest.raises(ShapeError, match=match):
        Port(**kwargs)


# ------------------------------------------------------------ TensorSpec


def test_specs_of_an_onnx_style_model_name_their_axes():
    m = onnx_style_model(random_layer("LSTM", 3, 5, rng=RNG, direction="bidirectional"))
    ins = {s.name: s for s in m.inputs}
    outs = {s.name: s for s in m.outputs}
    assert ins["X"] == ("X", (None, None, 3), "float32") and ins["X"].axes == "TBF"
    assert ins["sequence_lens"] == ("sequence_lens", (None,), "int32") and ins["sequence_lens"].axes == "B"
    assert ins["initial_h"].shape == (2, None, 5) and ins["initial_h"].axes == "DBH"
    assert outs["Y"].shape == (None, 2, None, 5) and outs["Y"].axes == "TDBH"
    assert outs["Y_c"].shape == (2, None, 5)
    assert all(s.vocab is None for s in m.inputs + m.outputs)


def test_token_id_specs_carry_their_vocabulary():
    m = Model([Node(Embedding("e", np.ones((11, 3))), ["ids"], ["E"]), Node(LSTM34, ["E"], ["y", "h"])],
              [Port("ids", "ids", "BT")], [Port("y", "y", "BTF"), Port("h", "h", "BH")])
    (ids,) = m.inputs
    assert ids == ("ids", (None, None), "int64") and ids.vocab == 11 and ids.axes == "BT"
    assert "vocab=11" in repr(ids)
    y, h = m.outputs
    assert (y.shape, y.axes, h.shape, h.axes) == ((None, None, 4), "BTF", (None, 4), "BH")


def test_a_tensor_spec_is_the_three_tuple_it_unpacks_to():
    s = TensorSpec("x", [None, 3], "float32", "BF")
    name, shape, dtype = s
    assert (name, shape, dtype) == ("x", (None, 3), "float32") and s == ("x", (None, 3), "float32")
    assert s.axes == "BF" and s.vocab is None
    assert repr(s) == "TensorSpec(name='x', shape=(None, 3), dtype='float32', axes='BF')"
