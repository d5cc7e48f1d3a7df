"""converters.from_onnx against onnxruntime on the same ONNX models and feeds.

Tolerance: fp32, max abs error <= 1e-5 on every output. Weights are non-uniform random
normals so that a gate-order or layout mistake changes the numbers."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import converters  # noqa: E402
import lstm_rt  # noqa: E402
from converters import ConversionError, from_onnx  # noqa: E402
from lstm_rt.layers import ACTIVATIONS, activation  # noqa: E402
from onnx_cases import make_recurrent_model, ort_run  # noqa: E402

ATOL = 1e-5


def feeds_for(op, I, H, D, T, B, rng, *, seq_lens, initial, layout=0):
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    f = {"X": x if layout == 0 else np.ascontiguousarray(x.swapaxes(0, 1))}
    if seq_lens:
        lens = rng.integers(0, T + 1, size=B).astype(np.int32)
        lens[0] = T
        if B > 2:
            lens[1], lens[2] = 0, 1
        f["sequence_lens"] = lens
    if initial:
        shape = (D, B, H) if layout == 0 else (B, D, H)
        f["initial_h"] = rng.normal(size=shape).astype(np.float32)
        if op == "LSTM":
            f["initial_c"] = rng.normal(size=shape).astype(np.float32)
    return f


def check(op, I, H, *, T=7, B=3, seq_lens=False, initial=False, seed=0, **kw):
    rng = np.random.default_rng(seed)
    model, _ = make_recurrent_model(op, I, H, rng=rng, seq_lens=seq_lens, initial=initial, **kw)
    D = 2 if kw.get("direction") == "bidirectional" else 1
    feeds = feeds_for(op, I, H, D, T, B, rng, seq_lens=seq_lens, initial=initial)
    want = ort_run(model, feeds)
    got = from_onnx(model).run(feeds)
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], atol=ATOL, rtol=0, err_msg=k)


# pairwise-style matrix: each row varies several features at once
MATRIX = [
    ("LSTM", dict(direction="forward")),
    ("LSTM", dict(direction="reverse", seq_lens=True, initial=True)),
    ("LSTM", dict(direction="bidirectional", seq_lens=True, peepholes=True)),
    ("LSTM", dict(direction="forward", peepholes=True, initial=True, clip=0.9)),
    ("LSTM", dict(direction="bidirectional", input_forget=1, initial=True)),
    ("LSTM", dict(direction="forward", bias=False, seq_lens=True)),
    ("LSTM", dict(direction="reverse", clip=1.5, peepholes=True, input_forget=1, B=1)),
    ("LSTM", dict(direction="forward", weights_as="constant", seq_lens=True, initial=True)),
    ("GRU", dict(direction="forward", linear_before_reset=0)),
    ("GRU", dict(direction="forward", linear_before_reset=1, seq_lens=True, initial=True)),
    ("GRU", dict(direction="reverse", linear_before_reset=1, clip=1.2, seq_lens=True)),
    ("GRU", dict(direction="bidirectional", linear_before_reset=0, initial=True, seq_lens=True)),
    ("GRU", dict(direction="bidirectional", linear_before_reset=1, bias=False, B=1)),
    ("RNN", dict(direction="forward", seq_lens=True)),
    ("RNN", dict(direction="reverse", initial=True, clip=0.8)),
    ("RNN", dict(direction="bidirectional", seq_lens=True, initial=True, weights_as="constant")),
]


@pytest.mark.parametrize("H", [5, 13, 16])
@pytest.mark.parametrize("op,kw", MATRIX, ids=[f"{op}-{i}" for i, (op, _) in enumerate(MATRIX)])
def test_matches_onnxruntime(op, kw, H):
    kw = dict(kw)
    B = kw.pop("B", 3)
    check(op, 4, H, B=B, seed=H, **kw)


@pytest.mark.parametrize("T", [1, 7])
@pytest.mark.parametrize("opset", [7, 14, 22])
def test_opsets(T, opset):
    check("LSTM", 3, 6, T=T, opset=opset, seq_lens=True, initial=True, direction="bidirectional")
    check("GRU", 3, 6, T=T, opset=opset, linear_before_reset=1, seq_lens=True)


# the activations ORT reads without alpha/beta default to 0 there, so pass them explicitly
ACT_CASES = [(name, [0.7] if ACTIVATIONS[name][1] else [], [0.3] if ACTIVATIONS[name][2] else [])
             for name in ACTIVATIONS]


@pytest.mark.parametrize("name,alpha,beta", ACT_CASES, ids=[c[0] for c in ACT_CASES])
def test_every_activation(name, alpha, beta):
    # RNN: f; GRU: f = Sigmoid, g = name; LSTM: f = HardSigmoid, g = name, h = name
    check("RNN", 3, 5, activations=[name], activation_alpha=alpha, activation_beta=beta,
          seq_lens=True, scale=0.3)
    a = ([0.2] + alpha + alpha, [0.5] + beta + beta)
    check("LSTM", 3, 5, activations=["HardSigmoid", name, name], activation_alpha=a[0],
          activation_beta=a[1], initial=True, scale=0.3)
    check("GRU", 3, 5, activations=["Sigmoid", name], activation_alpha=alpha, activation_beta=beta,
          linear_before_reset=1, scale=0.3)


def test_bidirectional_activations_per_direction():
    check("RNN", 3, 5, direction="bidirectional", activations=["Tanh", "Relu"], seq_lens=True)


def test_default_activation_parameters_are_the_onnx_operator_defaults():
    """ThresholdedRelu without alpha means alpha = 1 (the ONNX operator's default; onnxruntime
    reads 0 there), checked against the numpy reference."""
    rng = np.random.default_rng(0)
    model, w = make_recurrent_model("RNN", 3, 5, rng=rng, activations=["ThresholdedRelu"])
    m = from_onnx(model)
    assert m.layers[0].activations == [activation("ThresholdedRelu", 1.0)]
    x = rng.normal(size=(4, 2, 3)).astype(np.float32) * 3
    y, h, _ = m.layers[0].reference(x)
    np.testing.assert_allclose(m.run({"X": x})["Y"], y, atol=ATOL)


def test_layout_1_matches_the_reference_evaluator():
    """onnxruntime rejects layout=1; onnx.reference runs it (default activations only)."""
    from onnx.reference import ReferenceEvaluator
    for op in ("LSTM", "GRU", "RNN"):
        rng = np.random.default_rng(3)
        model, _ = make_recurrent_model(op, 4, 6, rng=rng, layout=1, initial=True, direction="forward",
                                        **({"linear_before_reset": 0} if op == "GRU" else {}))
        feeds = feeds_for(op, 4, 6, 1, 5, 2, rng, seq_lens=False, initial=True, layout=1)
        want = dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, feeds)))
        got = from_onnx(model).run(feeds)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=ATOL, rtol=0, err_msg=f"{op} {k}")


def test_streaming_a_converted_model_equals_onnxruntime():
    rng = np.random.default_rng(9)
    model, _ = make_recurrent_model("LSTM", 4, 10, rng=rng, peepholes=True)
    x = rng.normal(size=(12, 2, 4)).astype(np.float32)
    want = ort_run(model, {"X": x})
    s = from_onnx(model).stream(batch=2)
    steps = [s.step({"X": x[t]}) for t in range(12)]
    np.testing.assert_allclose(np.stack([o["Y"] for o in steps]), want["Y"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(steps[-1]["Y_c"], want["Y_c"], atol=ATOL, rtol=0)


def test_convert_file_and_load_onnx_directly(tmp_path):
    rng = np.random.default_rng(4)
    model, _ = make_recurrent_model("GRU", 3, 7, rng=rng, linear_before_reset=1, seq_lens=True)
    path = tmp_path / "gru.onnx"
    onnx.save(model, str(path))
    feeds = feeds_for("GRU", 3, 7, 1, 6, 2, rng, seq_lens=True, initial=False)
    want = ort_run(model, feeds)
    for m in (converters.convert(path), lstm_rt.load(path)):
        np.testing.assert_allclose(m.run(feeds)["Y"], want["Y"], atol=ATOL, rtol=0)
    m = converters.convert(path)
    m.save(tmp_path / "gru.lrt", weights="fp32")
    np.testing.assert_array_equal(lstm_rt.load(tmp_path / "gru.lrt").run(feeds)["Y_h"], m.run(feeds)["Y_h"])
    assert [s.name for s in m.inputs] == ["X", "sequence_lens"]
    assert m.inputs[0].shape == (None, None, 3)


def test_every_unsupported_op_and_attribute_is_listed(tmp_path):
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    model, _ = make_recurrent_model("LSTM", 3, 4, rng=rng)
    g = model.graph
    g.node.append(helper.make_node("Add", ["Y", "Y"], ["Z"], name="adder"))
    g.node.append(helper.make_node("Erf", ["X"], ["E"], name="erf_node"))
    g.node.append(helper.make_node("Foo", ["Z"], ["Q"], name="mystery", domain="custom"))
    next(n for n in g.node if n.op_type == "LSTM").attribute.append(helper.make_attribute("bogus_attr", 3))
    g.output.append(helper.make_tensor_value_info("Q", TensorProto.FLOAT, None))
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConversionError) as e:
        converters.convert(path)
    msg = str(e.value)
    # one short message: the first problems in full, every other op named once, a hint
    assert len(msg) <= 300, msg
    for part in ("'bogus_attr' of LSTM node 'lstm_node'", "Erf", "Foo", str(path), "export without"):
        assert part in msg


def test_an_activation_is_not_folded_into_a_value_others_read():
    """MatMul -> Relu where the MatMul's output is also a graph output: folding the Relu into
    the Dense would change that output too; refused instead (was: both outputs relu'd)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    model, _ = make_recurrent_model("GRU", 3, 4, rng=rng)
    g = model.graph
    g.initializer.append(numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "Wd"))
    g.node.extend([helper.make_node("Squeeze", ["Y"], ["ys"], axes=[1]),
                   helper.make_node("MatMul", ["ys", "Wd"], ["logits"], name="head"),
                   helper.make_node("Relu", ["logits"], ["act"], name="relu")])
    g.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("logits", "act")])
    model.opset_import[0].version = 11   # Squeeze with an axes attribute
    with pytest.raises(ConversionError, match="other nodes read too") as e:
        from_onnx(model)
    assert len(str(e.value)) < 300


def _graph_with(extra_nodes, outputs, *, recurrent=True, opset=17, extra_inits=()):
    """A GRU over X [T, B, 3] (Y, Y_h) plus `extra_nodes`; graph outputs `outputs`."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    model, _ = make_recurrent_model("GRU", 3, 4, rng=rng, opset=opset)
    g = model.graph
    if not recurrent:
        del g.node[:]
    g.node.extend(extra_nodes)
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in extra_inits)
    del g.output[:]
    g.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs)
    return model


def _unrolled():
    from onnx import helper
    nodes, inits = [], [("w", np.ones((3, 4), np.float32))]
    for t in range(40):   # what an exporter writes for 40 steps: a Gather and a MatMul per step
        inits.append((f"t{t}", np.array(t, np.int64)))
        nodes += [helper.make_node("Gather", ["X", f"t{t}"], [f"x{t}"], name=f"/rnn/Gather_{t}"),
                  helper.make_node("MatMul", [f"x{t}", "w"], [f"h{t}"], name=f"/rnn/MatMul_{t}")]
    nodes.append(helper.make_node("Concat", [f"h{t}" for t in range(40)], ["Y"], axis=0, name="/rnn/Concat"))
    return _graph_with(nodes, ["Y"], recurrent=False, extra_inits=inits)


def _refused_graphs():
    from onnx import helper
    return {
        "unrolled": (_unrolled, "no LSTM, GRU or RNN node.*unrolled.*Gather, MatMul, Concat.*from_torch"),
        "unknown ops": (lambda: _graph_with([helper.make_node("Erf", ["Y"], ["E"], name="erf"),
                                             helper.make_node("Foo", ["E"], ["F"], name="foo", domain="x")], ["F"]),
                        "Erf.*export without"),
        "first step": (lambda: _graph_with([helper.make_node("Gather", ["Y", "zero"], ["y0"], axis=0, name="g")],
                                           ["y0"], extra_inits=[("zero", np.array(0, np.int64))]),
                       r"step 0 of a sequence.*y\[:, -1\]"),
        "softmax over time": (lambda: _graph_with([helper.make_node("Squeeze", ["Y", "one"], ["ys"]),
                                                   helper.make_node("MatMul", ["ys", "w"], ["z"]),
                                                   helper.make_node("LogSoftmax", ["z"], ["p"], axis=0, name="ls")],
                                                  ["p"], extra_inits=[("one", np.array([1], np.int64)),
                                                                      ("w", np.ones((4, 2), np.float32))]),
                              "LogSoftmax.*last"),
        "merge time and batch": (lambda: _graph_with([helper.make_node("Reshape", ["Y", "shape"], ["flat"], name="r")],
                                                     ["flat"], extra_inits=[("shape", np.array([-1, 4], np.int64))]),
                                 "Reshape.*time, batch and features apart"),
    }


@pytest.mark.parametrize("case", ["unrolled", "unknown ops", "first step", "softmax over time",
                                  "merge time and batch"])
def test_refusals_are_one_short_message(case):
    """Every refusal is one ConversionError under 300 characters naming the op and what to
    do instead (an unrolled 40-step graph gave 3,355 characters of repeated items)."""
    make, match = _refused_graphs()[case]
    with pytest.raises(ConversionError, match=match) as e:
        from_onnx(make())
    assert len(str(e.value)) < 300, str(e.value)


def test_conversion_errors():
    rng = np.random.default_rng(0)
    model, _ = make_recurrent_model("GRU", 3, 4, rng=rng)
    next(a for a in model.graph.node[-1].attribute if a.name == "hidden_size").i = 5  # disagrees with W
    with pytest.raises(ConversionError, match="hidden_size"):
        from_onnx(model)
    with pytest.raises(ConversionError, match="unknown model file type"):
        converters.convert("model.txt")
    with pytest.raises(ConversionError, match="file path or an onnx.ModelProto"):
        from_onnx(42)


# ---------------------------------------------------------------- exported graphs

class _ExportLM:
    """Embedding -> 2-layer LSTM/GRU -> Linear -> softmax, as users export language models."""

    @staticmethod
    def make(cell, bidirectional, batch_first):
        torch = pytest.importorskip("torch")

        class LM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.e = torch.nn.Embedding(20, 6)
                self.r = getattr(torch.nn, cell)(6, 8, batch_first=batch_first, num_layers=2,
                                                 bidirectional=bidirectional)
                self.h = torch.nn.Linear(16 if bidirectional else 8, 20)

            def forward(self, x):
                y, _ = self.r(self.e(x))
                return torch.softmax(self.h(y), -1)

        torch.manual_seed(0)
        return LM().eval()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("cell,bidirectional,batch_first", [
    ("LSTM", False, True), ("LSTM", True, False), ("GRU", False, False), ("GRU", True, True)])
def test_torch_onnx_export_graphs(tmp_path, exporter, cell, bidirectional, batch_first):
    import warnings
    torch = pytest.importorskip("torch")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    m = _ExportLM.make(cell, bidirectional, batch_first)
    x = torch.randint(0, 20, (2, 5) if batch_first else (5, 2))
    path = str(tmp_path / "lm.onnx")
    kw = {"dynamo": True} if exporter == "dynamo" else {
        "dynamo": False, "dynamic_axes": {"ids": {0: "a", 1: "b"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), path, input_names=["ids"], output_names=["probs"], **kw)
    conv = converters.convert(path)
    ids = x.numpy()
    want = ort_run(onnx.load(path), {"ids": ids})["probs"]
    np.testing.assert_allclose(conv.run(ids), want, atol=ATOL, rtol=0)
    with torch.no_grad():
        np.testing.assert_allclose(conv.run(ids), m(x).numpy(), atol=ATOL, rtol=0)
    if not bidirectional:  # and the converted graph streams token by token
        s = conv.stream(batch=2)
        axis = 1 if batch_first else 0
        steps = [s.step(np.take(ids, t, axis=axis)) for t in range(5)]
        np.testing.assert_allclose(np.stack(steps, axis=axis), want, atol=ATOL, rtol=0)


def test_weights_through_constant_chains_and_if(tmp_path):
    """W arrives via Constant -> Identity -> Unsqueeze; the node sits in an If whose
    condition is a constant; the initial state is ConstantOfShape(Shape(X)...) zeros."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    I, H = 3, 5
    W = rng.normal(size=(4 * H, I)).astype(np.float32)
    R = rng.normal(size=(1, 4 * H, H)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W2"], value=numpy_helper.from_array(W, "W2")),
        helper.make_node("Identity", ["W2"], ["W2i"]),
        helper.make_node("Constant", [], ["ax0"], value=numpy_helper.from_array(np.array([0], np.int64), "ax0")),
        helper.make_node("Unsqueeze", ["W2i", "ax0"], ["W"]),
        helper.make_node("Shape", ["X"], ["xs"]),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array([1], np.int64), "one")),
        helper.make_node("Gather", ["xs", "one"], ["b"], axis=0),
        helper.make_node("Constant", [], ["hsz"], value=numpy_helper.from_array(np.array([H], np.int64), "hsz")),
        helper.make_node("Concat", ["one", "b", "hsz"], ["h0shape"], axis=0),
        helper.make_node("ConstantOfShape", ["h0shape"], ["h0"]),
        helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "cond")),
    ]
    then_g = helper.make_graph([helper.make_node("LSTM", ["X", "W", "R", "", "", "h0", "h0"], ["Y"], hidden_size=H)],
                               "then", [], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Identity", ["X"], ["Y2"])], "else", [],
                               [helper.make_tensor_value_info("Y2", TensorProto.FLOAT, None)])
    nodes.append(helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(R, "R")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.normal(size=(4, 2, I)).astype(np.float32)
    np.testing.assert_allclose(from_onnx(model).run({"X": x})["out"], ort_run(model, {"X": x})["out"],
                               atol=ATOL, rtol=0)


def test_external_data_must_stay_beside_the_model(tmp_path):
    from onnx.external_data_helper import convert_model_to_external_data
    rng = np.random.default_rng(1)
    model, _ = make_recurrent_model("GRU", 3, 4, rng=rng, linear_before_reset=1)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = {"X": rng.normal(size=(5, 2, 3)).astype(np.float32)}
    np.testing.assert_allclose(converters.convert(tmp_path / "m.onnx").run(x)["Y"],
                               ort_run(onnx.load(str(tmp_path / "m.onnx")), x)["Y"], atol=ATOL)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../etc/passwd"
    (tmp_path / "evil.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ConversionError, match="escapes the model's folder"):
        converters.convert(tmp_path / "evil.onnx")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("cell,bidirectional", [("LSTM", False), ("LSTM", True), ("GRU", True)])
def test_torch_export_of_stacked_layers_with_final_states(tmp_path, exporter, cell, bidirectional):
    """h_n / c_n of a stacked module are Concats of each layer's Y_h / Y_c, and the zero
    initial states come from Expand (TorchScript): both convert, matching PyTorch."""
    import warnings
    torch = pytest.importorskip("torch")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    m = getattr(torch.nn, cell)(3, 4, num_layers=2, bidirectional=bidirectional).eval()
    x = torch.randn(5, 2, 3)
    names = ["y", "h", "c"] if cell == "LSTM" else ["y", "h"]
    path = str(tmp_path / "m.onnx")
    kw = {"dynamo": True} if exporter == "dynamo" else {"dynamo": False, "dynamic_axes": {"x": {0: "T", 1: "B"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), path, input_names=["x"], output_names=names, **kw)
    got = converters.convert(path).run(x.numpy())
    with torch.no_grad():
        y, st = m(x)
    want = [y] + (list(st) if cell == "LSTM" else [st])
    assert list(got) == names
    for k, w in zip(names, want):
        np.testing.assert_allclose(got[k], w.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torch_export_joining_two_recurrent_branches(tmp_path, exporter):
    """Runtime Concat / Add / Mul / Max of sequences (two GRUs over one input, joined),
    exported by TorchScript: converted, and equal to PyTorch and onnxruntime."""
    import warnings
    torch = pytest.importorskip("torch")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")

    class TwoBranches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.GRU(3, 4)
            self.b = torch.nn.LSTM(3, 4)
            self.head = torch.nn.Linear(12, 2)

        def forward(self, x):
            ya, _ = self.a(x)
            yb, _ = self.b(x)
            joined = torch.cat([ya + yb, ya * yb, torch.maximum(ya, yb)], dim=-1)
            return self.head(joined)

    torch.manual_seed(0)
    m = TwoBranches().eval()
    x = torch.randn(6, 2, 3)
    path = str(tmp_path / "j.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"dynamo": True} if exporter == "dynamo" else {"dynamo": False, "dynamic_axes": {"x": {0: "T", 1: "B"}}}
        torch.onnx.export(m, (x,), path, input_names=["x"], output_names=["y"], **kw)
    conv = converters.convert(path)
    assert {layer.kind for layer in conv.layers} >= {"Join", "GRU", "LSTM", "Dense"}
    with torch.no_grad():
        np.testing.assert_allclose(conv.run(x.numpy()), m(x).numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(conv.run(x.numpy()), ort_run(onnx.load(path), {"x": x.numpy()})["y"],
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_torch_rnn_exports(tmp_path, nonlinearity):
    """nn.RNN: the TorchScript exporter writes RNN nodes (converted, stacked and
    bidirectional, equal to PyTorch); the dynamo exporter unrolls the steps for the example's
    fixed shape, which is refused with that reason."""
    import warnings
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.RNN(3, 4, num_layers=2, nonlinearity=nonlinearity, bidirectional=True).eval()
    x = torch.randn(5, 2, 3)
    path = str(tmp_path / "r.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), path, dynamo=False, input_names=["x"], output_names=["y", "h"],
                          dynamic_axes={"x": {0: "T", 1: "B"}})
    got = converters.convert(path).run(x.numpy())
    with torch.no_grad():
        y, h = m(x)
    np.testing.assert_allclose(got["y"], y.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got["h"], h.numpy(), atol=ATOL, rtol=0)
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.RNN(3, 4, nonlinearity=nonlinearity).eval(), (x,), path, dynamo=True,
                          input_names=["x"], output_names=["y", "h"])
    with pytest.raises(ConversionError, match="unrolled the recurrence"):
        converters.convert(path)


def test_state_handed_from_one_node_to_the_next(tmp_path):
    """An encoder LSTM's Y_h / Y_c as a decoder LSTM's initial_h / initial_c inside one graph
    (inputs of different lengths): equal to onnxruntime."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(3)
    H = 4
    inits = []
    for tag, I in (("e", 3), ("d", 2)):
        inits += [numpy_helper.from_array((rng.normal(size=(1, 4 * H, I)) * 0.5).astype(np.float32), f"W{tag}"),
                  numpy_helper.from_array((rng.normal(size=(1, 4 * H, H)) * 0.5).astype(np.float32), f"R{tag}"),
                  numpy_helper.from_array((rng.normal(size=(1, 8 * H)) * 0.5).astype(np.float32), f"B{tag}")]
    nodes = [helper.make_node("LSTM", ["src", "We", "Re", "Be"], ["", "hN", "cN"], hidden_size=H, name="enc"),
             helper.make_node("LSTM", ["tgt", "Wd", "Rd", "Bd", "", "hN", "cN"], ["Y"], hidden_size=H, name="dec")]
    g = helper.make_graph(nodes, "s2s", [helper.make_tensor_value_info("src", TensorProto.FLOAT, ["T", "B", 3]),
                                         helper.make_tensor_value_info("tgt", TensorProto.FLOAT, ["U", "B", 2])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    feeds = {"src": rng.normal(size=(6, 2, 3)).astype(np.float32), "tgt": rng.normal(size=(4, 2, 2)).astype(np.float32)}
    conv = from_onnx(model)
    np.testing.assert_allclose(conv.run(feeds)["Y"], ort_run(model, feeds)["Y"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("cell,batch_first", [("LSTM", True), ("GRU", False)])
def test_torch_export_of_a_last_step_classifier(tmp_path, exporter, cell, batch_first):
    """`fc(y[:, -1])` exports as Gather(Y, -1) on the time axis: converted as the layer's
    final state (LastState); equal to PyTorch, and stepping gives the prefix's answer. Another
    index is refused with the reason."""
    import warnings
    torch = pytest.importorskip("torch")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")

    class Classifier(torch.nn.Module):
        def __init__(self, index=-1):
            super().__init__()
            self.index = index
            self.rnn = getattr(torch.nn, cell)(3, 4, batch_first=batch_first)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            y, _ = self.rnn(x)
            return torch.softmax(self.fc(y[:, self.index] if batch_first else y[self.index]), -1)

    torch.manual_seed(0)
    x = torch.randn((2, 5, 3) if batch_first else (5, 2, 3))
    path = str(tmp_path / "c.onnx")
    axes = {0: "B", 1: "T"} if batch_first else {0: "T", 1: "B"}
    kw = {"dynamo": True} if exporter == "dynamo" else {"dynamo": False, "dynamic_axes": {"x": axes}}
    for index in (-1, 0):
        m = Classifier(index).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (x,), path, input_names=["x"], output_names=["y"], **kw)
        if index == 0:
            with pytest.raises(ConversionError, match="last step"):
                converters.convert(path)
            continue
        conv = converters.convert(path)
        with torch.no_grad():
            np.testing.assert_allclose(conv.run(x.numpy()), m(x).numpy(), atol=ATOL, rtol=0)
        s = conv.stream(batch=2)
        for t in range(5):
            prefix = x[:, :t + 1] if batch_first else x[:t + 1]
            got = s.step(prefix.numpy()[:, t] if batch_first else prefix.numpy()[t])
            with torch.no_grad():
                np.testing.assert_allclose(got, m(prefix).numpy(), atol=ATOL, rtol=0)
