"""from_onnx on what torch.onnx.export writes for the forms of torch_forms: TorchScript
(dynamic_axes) and dynamo (dynamic_shapes, torch 2.13's default) exporters, opsets 9-22.
Each export is made once (a module-scoped cache: dynamo takes seconds per export) at batch
2 and length 5, then run at other sizes: lstm_rt equals onnxruntime and PyTorch within
1e-5, and streams with step == run where the graph is causal."""
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from converters import ConversionError, from_onnx  # noqa: E402
from onnx_cases import ort_run  # noqa: E402
from torch_forms import (I, V, EmbeddingClassifier, Heads, LanguageModel, PackedTagger,  # noqa: E402
                         TimeMajor, seeded)

ATOL = 1e-5
EXPORT_B, EXPORT_T = 2, 5
B, T = 3, 7            # the sizes the converted graphs run at: not the export's

FORMS = {
    # name: (module factory, input names, kinds ("seq" | "ids" | "lens"), batch_first)
    "heads_lstm": (lambda: seeded(Heads, "LSTM"), ["x"], ["seq"], True),
    "heads_gru": (lambda: seeded(Heads, "GRU"), ["x"], ["seq"], True),
    "embedding_classifier": (lambda: seeded(EmbeddingClassifier), ["ids"], ["ids"], True),
    "language_model": (lambda: seeded(LanguageModel), ["ids"], ["ids"], True),
    "time_major": (lambda: seeded(TimeMajor), ["x"], ["seq"], False),
    "packed_sorted": (lambda: seeded(PackedTagger, True), ["x", "lengths"], ["seq", "lens"], True),
    "packed_unsorted": (lambda: seeded(PackedTagger, False), ["x", "lengths"], ["seq", "lens"], True),
}
CAUSAL = {"heads_lstm", "heads_gru", "language_model", "time_major"}


def example(kinds, batch_first, b, t, *, sorted_lengths=True, seed=0):
    rng = np.random.default_rng(seed)
    shape = (b, t) if batch_first else (t, b)
    out = []
    for kind in kinds:
        if kind == "seq":
            out.append(rng.normal(size=shape + (I,)).astype(np.float32))
        elif kind == "ids":
            out.append(rng.integers(0, V, size=shape))
        else:
            lens = np.sort(rng.integers(1, t + 1, size=b))[::-1].copy()
            lens[0] = t
            out.append(lens if sorted_lengths else np.roll(lens, 1))
    return out


class Exports:
    """Each (form, exporter, opset) exported once per module run."""

    def __init__(self, tmp):
        self.tmp, self.cache = tmp, {}

    def get(self, form, exporter, opset=None):
        key = (form, exporter, opset)
        if key not in self.cache:
            make, names, kinds, bf = FORMS[form]
            module = make()
            args = tuple(torch.from_numpy(a) for a in example(kinds, bf, EXPORT_B, EXPORT_T,
                                                             sorted_lengths=form != "packed_unsorted"))
            path = str(self.tmp / f"{form}_{exporter}_{opset}.onnx")
            axes = {"seq": ("batch", "time"), "ids": ("batch", "time"), "lens": ("batch",)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    from torch.export import Dim
                    dims = {"batch": Dim("batch"), "time": Dim("time")}
                    shapes = tuple({i: dims[a] for i, a in enumerate(axes[k] if bf or k == "lens" else axes[k][::-1])}
                                   for k in kinds)
                    torch.onnx.export(module, args, path, dynamo=True, input_names=names, dynamic_shapes=shapes,
                                      **({"opset_version": opset} if opset else {}))
                else:
                    dyn = {n: {i: a for i, a in enumerate(axes[k] if bf or k == "lens" else axes[k][::-1])}
                           for n, k in zip(names, kinds)}
                    torch.onnx.export(module, args, path, dynamo=False, input_names=names, dynamic_axes=dyn,
                                      opset_version=opset or 17)
            self.cache[key] = (module, onnx.load(path))
        return self.cache[key]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return Exports(tmp_path_factory.mktemp("exports"))


def torch_outputs(module, args):
    with torch.no_grad():
        out = module(*(torch.from_numpy(a) for a in args))

    def flat(o):
        return [y for v in o for y in flat(v)] if isinstance(o, (tuple, list)) else [o.numpy()]
    return flat(out)


def check(exports, form, exporter, opset=None, *, ort=True):
    module, proto = exports.get(form, exporter, opset)
    _, names, kinds, bf = FORMS[form]
    m = from_onnx(proto)
    args = example(kinds, bf, B, T, sorted_lengths=form != "packed_unsorted", seed=1)
    feeds = dict(zip(names, args))
    got = m.run(feeds)
    want = torch_outputs(module, args)
    assert len(got) == len(want)
    for (k, g), w in zip(got.items(), want):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=0, err_msg=f"{k} vs PyTorch")
    if ort:
        # a dynamo export may fix the time axis at the example's length (see
        # test_dynamo_time_major_export_bakes_the_length): onnxruntime then runs only that one
        fixed = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][:2]
        at = feeds
        if any(fixed):
            at = dict(zip(names, example(kinds, bf, B, EXPORT_T, sorted_lengths=form != "packed_unsorted", seed=1)))
        mine = m.run(at)
        for k, w in ort_run(proto, at).items():
            np.testing.assert_allclose(mine[k], w, atol=ATOL, rtol=0, err_msg=f"{k} vs onnxruntime")
    return m, feeds


def assert_steps_equal_runs(m, feeds, batch_first):
    (name, x), = feeds.items()
    s = m.stream(batch=x.shape[0 if batch_first else 1])
    n = x.shape[1 if batch_first else 0]
    whole = m.run(feeds)
    for t in range(n):
        xt = x[:, t] if batch_first else x[t]
        step = s.step({name: xt})
        prefix = m.run({name: x[:, :t + 1] if batch_first else x[:t + 1]})
        for spec in m.outputs:
            if len(spec.shape) == 3 and spec.shape[:2] == (None, None):   # a sequence: its step t
                want = whole[spec.name][:, t] if batch_first else whole[spec.name][t]
            else:                                                       # last outputs, states
                want = prefix[spec.name]
            np.testing.assert_allclose(step[spec.name], want, atol=ATOL, rtol=0, err_msg=f"{spec.name} at {t}")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("form", ["heads_lstm", "heads_gru", "embedding_classifier", "language_model"])
def test_exports_with_dynamic_batch_and_time(exports, form, exporter):
    """h_n[-1], y[:, -1], log_softmax / softmax heads, Embedding(padding_idx) -> bi-GRU ->
    cat(h_n[-2], h_n[-1]): converted from both exporters and run at a batch and length the
    export never saw."""
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    m, feeds = check(exports, form, exporter)
    if form in CAUSAL:
        assert_steps_equal_runs(m, feeds, FORMS[form][3])


@pytest.mark.parametrize("form", ["packed_sorted", "packed_unsorted"])
def test_packed_sequence_exports(exports, form):
    """pack_padded_sequence / pad_packed_sequence exports (TorchScript; torch.export cannot
    trace them): int64 lengths cast to int32, and with enforce_sorted=False the TopK sort,
    Gather reorder and ScatterElements inverse around the LSTM: lengths in any order."""
    m, feeds = check(exports, form, "torchscript")
    assert [(s.name, s.dtype) for s in m.inputs] == [("x", "float32"), ("lengths", "int64")]
    for dtype in (np.int32, np.uint8):
        out = m.run({"x": feeds["x"], "lengths": feeds["lengths"].astype(dtype)})
        np.testing.assert_allclose(out[m.outputs[0].name], m.run(feeds)[m.outputs[0].name], atol=0, rtol=0)


OPSET_CASES = [(form, opset) for opset in (9, 10, 11, 13, 15, 17, 20, 21, 22)
               for form in ("heads_lstm", "embedding_classifier", "packed_unsorted")
               if not (form == "packed_unsorted" and opset < 10)]   # the exporter needs opset 10 for it


@pytest.mark.parametrize("form,opset", OPSET_CASES, ids=[f"{f}-{o}" for f, o in OPSET_CASES])
def test_torchscript_exports_at_every_opset(exports, form, opset):
    """Opsets 9 and 10 write Slice with attributes (h_n[-1] is Slice + Squeeze there) and
    arange as NonZero(ConstantOfShape); onnxruntime rejects the opset-10 packed graph, so that
    one is checked against PyTorch only."""
    check(exports, form, "torchscript", opset, ort=not (form == "packed_unsorted" and opset == 10))


def test_dynamo_time_major_export_bakes_the_length(exports):
    """The dynamo export of a time-major LSTM specializes the time axis: the graph declares
    the export's length and reshapes Y to it. lstm_rt reads that Reshape as the time axis and
    runs any length, equal to PyTorch; onnxruntime refuses other lengths."""
    pytest.importorskip("onnxscript")
    module, proto = exports.get("time_major", "dynamo")
    dims = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == EXPORT_T                       # baked in by the exporter
    m = from_onnx(proto)
    x = example(["seq"], False, B, T, seed=2)[0]
    got = m.run({"x": x})
    for (k, g), w in zip(got.items(), torch_outputs(module, [x])):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=0, err_msg=k)
    with pytest.raises(Exception, match="dimensions|shape"):
        ort_run(proto, {"x": x})
    assert_steps_equal_runs(m, {"x": x}, batch_first=False)


def test_the_unrolled_refusal_is_short(exports, tmp_path):
    """A graph without recurrent nodes (the dynamo export of nn.RNN unrolls the steps) is
    refused in one short message naming the ops once."""
    pytest.importorskip("onnxscript")
    path = str(tmp_path / "rnn.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(seeded(torch.nn.RNN, I, 4, num_layers=2), (torch.randn(EXPORT_T, EXPORT_B, I),), path,
                          dynamo=True, input_names=["x"])
    with pytest.raises(ConversionError, match="unrolled the recurrence.*from_torch") as e:
        from_onnx(path)
    assert len(str(e.value)) < 300, str(e.value)
