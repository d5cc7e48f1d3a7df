"""ONNX -> lstm_rt: graphs of LSTM / GRU / RNN nodes.

Weights (W, R, B, P) may be initializers or Constant nodes. The node's graph inputs
(X, sequence_lens, initial_h, initial_c) and outputs (Y, Y_h, Y_c) keep their names and
shapes, so `Model.run(feeds)` answers the same feeds as onnxruntime. ONNX is lstm_rt's
native semantics (gate order iofc / zrh, activations, clip, ...), so weights are taken
as they are. Every unsupported op or attribute in the graph is reported in one error.
"""
from __future__ import annotations

import os

import numpy as np

from lstm_rt.layers import GRU, LSTM, RNN, activations_from_onnx
from lstm_rt.model import Model, Node, Port

from . import ConversionError

RECURRENT = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}
COMMON_ATTRS = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                "hidden_size", "layout"}
EXTRA_ATTRS = {"LSTM": {"input_forget"}, "GRU": {"linear_before_reset"}, "RNN": set()}
# input slots of each op (ONNX order)
INPUTS = {"LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
          "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
          "RNN": ["X", "W", "R", "B", "sequence_lens", "initial_h"]}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ConversionError("converting ONNX models needs the onnx package: pip install onnx") from None
    return onnx


def _load(model):
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        return model, "<ModelProto>"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        try:
            return onnx.load(path, load_external_data=False), path
        except Exception as e:  # protobuf decode errors have no common public base class
            raise ConversionError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    raise ConversionError(f"from_onnx takes a file path or an onnx.ModelProto, got {type(model).__name__}")


def _constants(graph, where, problems):
    """Initializers and Constant-node outputs as numpy arrays."""
    onnx = _onnx()
    from onnx import numpy_helper

    def tensor(t, what):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            problems.append(f"{what} stores its data in an external file, which lstm_rt does not read")
            return None
        return numpy_helper.to_array(t)

    consts = {}
    for t in graph.initializer:
        consts[t.name] = tensor(t, f"initializer {t.name!r}")
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        attrs = {a.name: a for a in node.attribute}
        if "value" in attrs:
            value = tensor(attrs["value"].t, f"Constant node {node.name!r}")
        elif "value_float" in attrs:
            value = np.array(attrs["value_float"].f, np.float32)
        elif "value_floats" in attrs:
            value = np.array(list(attrs["value_floats"].floats), np.float32)
        elif "value_int" in attrs:
            value = np.array(attrs["value_int"].i, np.int64)
        elif "value_ints" in attrs:
            value = np.array(list(attrs["value_ints"].ints), np.int64)
        else:
            problems.append(f"attribute {sorted(attrs)} of Constant node {node.name!r}")
            continue
        consts[node.output[0]] = value
    return consts


def _attributes(node, problems):
    from onnx import helper
    op = node.op_type
    allowed = COMMON_ATTRS | EXTRA_ATTRS[op]
    out = {}
    for a in node.attribute:
        if a.name not in allowed:
            problems.append(f"attribute {a.name!r} of {op} node {node.name!r}")
            continue
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _weight(consts, name, op, node, slot, problems):
    if not name:
        return None
    if name not in consts:
        problems.append(f"input {slot} ({name!r}) of {op} node {node.name!r} must be a constant "
                        f"(initializer or Constant node)")
        return None
    a = consts[name]
    if a is None:
        return None
    if a.dtype != np.float32:
        problems.append(f"input {slot} of {op} node {node.name!r} is {a.dtype}; lstm_rt runs float32 models")
        return None
    return a


def _layer(node, name, consts, problems):
    """The lstm_rt layer spec of one recurrent node, or None (problems recorded)."""
    op = node.op_type
    attrs = _attributes(node, problems)
    slots = dict(zip(INPUTS[op], list(node.input) + [""] * 8))
    w = _weight(consts, slots["W"], op, node, "W", problems)
    r = _weight(consts, slots["R"], op, node, "R", problems)
    b = _weight(consts, slots["B"], op, node, "B", problems)
    p = _weight(consts, slots.get("P", ""), op, node, "P", problems)
    if w is None or r is None:
        if not slots["W"] or not slots["R"]:
            problems.append(f"{op} node {node.name!r} lacks its W or R input")
        return None
    if "hidden_size" not in attrs:
        problems.append(f"{op} node {node.name!r} has no hidden_size attribute")
        return None
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    H = attrs["hidden_size"]
    if w.ndim != 3 or w.shape[1] != gates * H:
        problems.append(f"{op} node {node.name!r}: W has shape {w.shape}, expected "
                        f"[num_directions, {gates} * hidden_size = {gates * H}, input_size]")
        return None
    direction = attrs.get("direction", "forward")
    D = 2 if direction == "bidirectional" else 1
    cls = RECURRENT[op]
    acts = None
    if "activations" in attrs:
        try:
            acts = activations_from_onnx(attrs["activations"], attrs.get("activation_alpha", ()),
                                         attrs.get("activation_beta", ()))
        except Exception as e:
            problems.append(f"attribute 'activations' of {op} node {node.name!r}: {e}")
            return None
        if len(acts) != cls.n_acts * D:
            problems.append(f"attribute 'activations' of {op} node {node.name!r}: expected "
                            f"{cls.n_acts * D} entries ({cls.n_acts} per direction), got {len(acts)}")
            return None
    kw = dict(direction=direction, activations=acts, clip=attrs.get("clip"), hidden_size=H)
    try:
        if op == "LSTM":
            return LSTM(name, w, r, b, p, input_forget=bool(attrs.get("input_forget", 0)), **kw)
        if op == "GRU":
            return GRU(name, w, r, b, linear_before_reset=bool(attrs.get("linear_before_reset", 0)), **kw)
        return RNN(name, w, r, b, **kw)
    except Exception as e:  # the spec's own validation names the problem
        problems.append(f"{op} node {node.name!r}: {e}")
        return None


def from_onnx(model, *, name: str | None = None) -> Model:
    """An lstm_rt.Model from an ONNX file path or onnx.ModelProto.

    Supports graphs made of LSTM, GRU and RNN nodes (any opset up to 22) whose weights
    are constants and whose X / sequence_lens / initial states are graph inputs.
    Raises ConversionError naming every unsupported op or attribute (and the file).
    """
    onnx = _onnx()
    proto, where = _load(model)
    graph = proto.graph
    problems: list[str] = []
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > 22:
            problems.append(f"opset {imp.version} (lstm_rt knows up to 22)")
    consts = _constants(graph, where, problems)
    graph_inputs = {vi.name: vi for vi in graph.input if vi.name not in consts}
    graph_outputs = [vi.name for vi in graph.output]

    nodes, inputs, used_names = [], {}, set()
    elem = onnx.TensorProto
    for i, node in enumerate(graph.node):
        op = node.op_type
        if op == "Constant":
            continue
        if op not in RECURRENT or node.domain not in ("", "ai.onnx"):
            problems.append(f"op {op!r} (node {node.name!r})")
            continue
        lname = node.name or f"{op.lower()}_{i}"
        while lname in used_names:
            lname += "_"
        used_names.add(lname)
        layer = _layer(node, lname, consts, problems)
        layout = _attributes(node, []).get("layout", 0)
        if layout not in (0, 1):
            problems.append(f"attribute 'layout' = {layout} of {op} node {node.name!r}")
            continue
        seq, state, ylay = ("TBF", "DBH", "TDBH") if layout == 0 else ("BTF", "BDH", "BTDH")
        slots = dict(zip(INPUTS[op], list(node.input) + [""] * 8))
        bound = {}
        for slot, lay, dtype in (("X", seq, elem.FLOAT), ("sequence_lens", "B", elem.INT32),
                                 ("initial_h", state, elem.FLOAT), ("initial_c", state, elem.FLOAT)):
            tname = slots.get(slot, "")
            if not tname:
                continue
            if tname not in graph_inputs:
                problems.append(f"input {slot} ({tname!r}) of {op} node {node.name!r} must be a graph "
                                f"input (computed or constant {slot} is not supported yet)")
                continue
            t = graph_inputs[tname].type.tensor_type.elem_type
            if t != dtype:
                problems.append(f"graph input {tname!r} has element type "
                                f"{elem.DataType.Name(t)}, expected {elem.DataType.Name(dtype)}")
                continue
            bound[slot] = tname
            if tname not in inputs:
                inputs[tname] = Port(tname, tname, lay, "int32" if slot == "sequence_lens" else "float32")
        if layer is None or "X" not in bound:
            continue
        outs = list(node.output) + ["", "", ""]
        nodes.append((Node(layer, [bound.get("X"), bound.get("sequence_lens"), bound.get("initial_h"),
                                   bound.get("initial_c")],
                           [outs[0] or None, outs[1] or None, (outs[2] or None) if op == "LSTM" else None]),
                      (ylay, state, layer.num_directions)))
    produced = {}
    for n, (ylay, state, D) in nodes:
        for t, lay in zip(n.outputs, (ylay, state, state)):
            if t:
                produced[t] = (lay, D)
    outputs = []
    for o in graph_outputs:
        if o in produced:
            lay, D = produced[o]
            outputs.append(Port(o, o, lay, groups=D if lay in ("TDBH", "BTDH") else 1))
        elif o in graph_inputs:
            problems.append(f"graph output {o!r} is a graph input (pass-through outputs are not supported)")
        else:
            problems.append(f"graph output {o!r} is not produced by a recurrent node")
    if problems:
        raise ConversionError(f"{where}: cannot convert: " + "; ".join(problems))
    if not nodes:
        raise ConversionError(f"{where}: the graph has no LSTM, GRU or RNN node")
    try:
        return Model([n for n, _ in nodes], list(inputs.values()), outputs,
                     name=name or graph.name or "onnx_model",
                     metadata={"source": "onnx", "producer": proto.producer_name})
    except Exception as e:
        raise ConversionError(f"{where}: {e}") from None
