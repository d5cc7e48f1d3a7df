"""ONNX -> lstm_rt: recurrent nodes and the graphs exporters write around them.

ONNX is lstm_rt's native semantics (gate order iofc / zrh, activations, clip, ...), so a
recurrent node's weights are taken as they are. The graph is read by a small symbolic
interpreter: every value is a constant (folded: Constant, Identity, Unsqueeze, Shape of
constants, Concat, Slice, Gather, Cast, Reshape, ConstantOfShape, `If` on a constant
condition), a shape vector with symbolic batch/time dims, a zero tensor (initial states),
or a runtime tensor whose axes are labelled (T time, B batch, F features, D directions,
H units). Transpose, Squeeze, Unsqueeze and Reshape of runtime tensors only relabel;
Gather on a constant table becomes an Embedding, MatMul/Gemm (+ Add, + activation) a
Dense, LSTM/GRU/RNN nodes recurrent layers. Graph inputs and outputs keep their names and
layouts, so `Model.run(feeds)` answers the same feeds as onnxruntime. Every unsupported
op or attribute in the graph is reported in one error.
"""
from __future__ import annotations

import os
import re

import numpy as np

from lstm_rt.layers import GRU, LSTM, RNN, Dense, Embedding, Join, LastState, activations_from_onnx
from lstm_rt.model import Model, Node, Port

from . import ConversionError

RECURRENT = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}
JOINS = {"Add": "sum", "Sub": "sub", "Mul": "mul", "Max": "max", "Min": "min"}   # of two runtime tensors
COMMON_ATTRS = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                "hidden_size", "layout"}
MAX_FOLDED_BYTES = 1 << 28    # the largest constant a shape read from the model may make (ConstantOfShape)
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
        if not os.path.isfile(path):   # a FIFO or device would block the read or never end
            raise ConversionError(f"{path}: not a regular file")
        try:
            return onnx.load(path, load_external_data=False), path
        except Exception as e:  # protobuf decode errors have no common public base class
            raise ConversionError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    raise ConversionError(f"from_onnx takes a file path or an onnx.ModelProto, got {type(model).__name__}")


def _byte_count(info, key, default, what):
    """An external_data offset / length: ASCII digits only (int() would also take "-5",
    " 8", "1_0" and other scripts' digits)."""
    v = info.get(key)
    if v is None:
        return default
    if not re.fullmatch("[0-9]{1,20}", v):
        raise ConversionError(f"{what}: external data {key} {v!r} is not a byte count")
    return int(v)


def _external_array(t, base_dir, what):
    """A tensor stored in an external file beside the model: the path must stay inside the
    model's folder, and offset/length inside that file."""
    from onnx import helper
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    if base_dir is None:
        raise ConversionError(f"{what} stores its data in an external file; pass the model's path")
    if "\0" in loc:
        raise ConversionError(f"{what}: external data location {loc!r} contains a NUL byte")
    if not loc or os.path.isabs(loc):
        raise ConversionError(f"{what}: external data location {loc!r} must be a relative path")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, loc))
    if os.path.commonpath([root, path]) != root:
        raise ConversionError(f"{what}: external data location {loc!r} escapes the model's folder")
    if not os.path.isfile(path):
        raise ConversionError(f"{what}: external data file {loc!r} is missing")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "biufc":
        raise ConversionError(f"{what}: external data of data type {t.data_type} (lstm_rt reads numbers)")
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise ConversionError(f"{what}: dims {dims} has a negative dim")
    count = int(np.prod(dims, dtype=object)) if dims else 1
    offset = _byte_count(info, "offset", 0, what)
    length = _byte_count(info, "length", count * dtype.itemsize, what)
    size = os.path.getsize(path)
    if length != count * dtype.itemsize or offset + length > size:
        raise ConversionError(f"{what}: external data [{offset}, {offset + length}) does not fit "
                              f"{dims} of {dtype} in {loc!r} ({size} bytes)")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    try:   # dims like [2**63 - 1, 0]: no data, and still more than numpy indexes
        return np.frombuffer(data, dtype=dtype).reshape(tuple(dims)).astype(dtype.newbyteorder("="))
    except ValueError as e:
        raise ConversionError(f"{what}: dims {dims} ({e})") from None


def _filled(shape, value, what):
    """np.full(shape, value) for a shape read from the model (ConstantOfShape), refused
    before allocating past MAX_FOLDED_BYTES."""
    if any(d < 0 for d in shape):
        raise _Unsupported(f"{what}: shape {shape} has a negative dim")
    count = int(np.prod(shape, dtype=object))
    if count * 8 > MAX_FOLDED_BYTES:
        raise _Unsupported(f"{what}: shape {shape} asks for {count} values (lstm_rt folds constants "
                           f"up to {MAX_FOLDED_BYTES} bytes)")
    return np.full(shape, value)


def _constants(graph, where, problems, base_dir=None):
    """Initializers and Constant-node outputs as numpy arrays."""
    onnx = _onnx()
    from onnx import numpy_helper

    def tensor(t, what):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            try:
                return _external_array(t, base_dir, what)
            except ConversionError as e:
                problems.append(str(e))
                return None
        try:
            return numpy_helper.to_array(t)
        except Exception as e:  # noqa: BLE001 - dims that do not match the data, unknown types
            problems.append(f"{what}: unreadable tensor ({type(e).__name__}: {e})")
            return None

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



# ------------------------------------------------------------ symbolic values


class Const:
    def __init__(self, value):
        self.value = np.asarray(value)


class ShapeVec:
    """A shape as a vector: ints, or "T"/"B" (or an unresolved axis label) for dynamic dims."""

    def __init__(self, dims):
        self.dims = list(dims)


class Zeros:
    """ConstantOfShape(0) of a (partly symbolic) shape: an all-zero initial state."""

    def __init__(self, dims):
        self.dims = list(dims)


class Tens:
    """A runtime tensor: internal name, axis labels of its ONNX view, sizes of F/H/D axes.
    kind: "seq" (internal [T, B, F]), "ids" ([T, B] ints), "state" ([D, B, H]), "lens"."""

    def __init__(self, name, labels, kind, sizes):
        self.name, self.labels, self.kind, self.sizes = name, tuple(labels), kind, dict(sizes)


class _Unsupported(Exception):
    pass


class _Downstream(Exception):
    """A node reading a value an unsupported node should have made: the root cause is
    already reported, so this one is not."""


def _ints(v, what):
    if not isinstance(v, Const):
        raise _Unsupported(f"{what} must be a constant")
    return [int(i) for i in np.asarray(v.value).reshape(-1)]


class _Interpreter:
    def __init__(self, proto, where):
        self.where = where
        self.problems: list[str] = []
        self.vals: dict[str, object] = {}
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.inputs: dict[str, dict] = {}   # graph input -> {"labels": [...], "role": ...}
        self.bind: dict[str, str] = {}      # unresolved axis label -> "T" / "B"
        self.counter = 0
        self.proto = proto

    # ---- helpers
    def fresh(self, base):
        self.counter += 1
        return f"{base}#{self.counter}"

    def label(self, lab):
        while lab in self.bind:
            lab = self.bind[lab]
        return lab

    def labels(self, t):
        return tuple(self.label(lb) for lb in t.labels)

    def unify(self, t, want, node):
        """Require t's labels to be `want` (T/B/F/D/H), binding unresolved input axes."""
        have = self.labels(t)
        if len(have) != len(want):
            raise _Unsupported(f"node {node.name!r}: input has axes {have}, expected {tuple(want)}")
        for h, w in zip(have, want):
            if h == w:
                continue
            if h.startswith("?"):
                self.bind[h] = w
            else:
                raise _Unsupported(f"node {node.name!r}: input has axes {have}, expected {tuple(want)}")

    def const_of(self, name):
        v = self.vals.get(name)
        return v.value if isinstance(v, Const) else None

    # ---- graph
    def run_graph(self, graph, consts):
        for k, v in consts.items():
            if v is not None:
                self.vals[k] = Const(v)
        for vi in graph.input:
            if vi.name in self.vals:
                continue
            tt = vi.type.tensor_type
            rank = len(tt.shape.dim)
            ints = tt.elem_type in (6, 7)  # INT32, INT64
            floats = tt.elem_type == 1
            labels = [f"?{vi.name}:{i}" for i in range(rank)]
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            self.inputs[vi.name] = {"labels": labels, "ints": ints, "floats": floats, "dims": dims,
                                    "elem": tt.elem_type, "role": None}
            sizes = {}
            if floats and rank and dims[-1]:
                sizes["F"] = dims[-1]
            self.vals[vi.name] = Tens(vi.name, labels, "ids" if ints else "seq", sizes)
        self.run_nodes(graph.node)

    def run_nodes(self, nodes):
        """Interpret nodes in order, recording each root-cause problem."""
        for node in nodes:
            try:
                self.op(node)
            except _Downstream:
                pass
            except _Unsupported as e:
                self.problems.append(str(e))
            except (ValueError, IndexError, KeyError, TypeError) as e:
                self.problems.append(f"node {node.name!r} ({node.op_type}): {type(e).__name__}: {e}")

    def op(self, node):
        op = node.op_type
        ins = [self.vals.get(n) if n else None for n in node.input]
        if node.domain not in ("", "ai.onnx"):
            raise _Unsupported(f"op {op!r} (node {node.name!r}, domain {node.domain!r})")
        for n, v in zip(node.input, ins):
            if n and v is None:
                if self.problems:
                    raise _Downstream()
                raise _Unsupported(f"op {op!r} (node {node.name!r}) reads {n!r}, which nothing produces")
        attrs = {a.name: a for a in node.attribute}

        def out(v, i=0):
            if i < len(node.output) and node.output[i]:
                self.vals[node.output[i]] = v

        fold = all(isinstance(v, Const) or v is None for v in ins)
        if op == "Constant":
            return  # collected with the initializers
        if op in RECURRENT:
            return self.recurrent(node, ins)
        if op == "If":
            return self.if_(node, ins)
        if op == "Identity" or (op in ("Cast",) and isinstance(ins[0], (Tens, ShapeVec))):
            return out(ins[0])
        if op == "Shape":
            return out(self.shape_of(ins[0], node, attrs))
        if op == "ConstantOfShape":
            value = onnx_value(attrs)
            if isinstance(ins[0], Const):
                return out(Const(_filled(_ints(ins[0], "shape"), value, f"ConstantOfShape {node.name!r}")))
            if isinstance(ins[0], ShapeVec) and value == 0:
                return out(Zeros(ins[0].dims))
            raise _Unsupported(f"ConstantOfShape (node {node.name!r}) of a non-constant shape")
        if op == "Expand" and isinstance(ins[0], Const) and not np.any(ins[0].value):
            return out(self.expand_zeros(ins[0].value.shape, ins[1]))
        if op == "Concat" and len(ins) > 1 and all(isinstance(v, Tens) for v in ins):
            if all(v.kind == "state" for v in ins):
                return out(self.concat_states(node, ins, attrs))
            return out(self.join(node, ins, "concat", attrs["axis"].i))
        if op in JOINS and len(ins) > 1 and all(isinstance(v, Tens) for v in ins):
            return out(self.join(node, ins, JOINS[op], -1))
        if isinstance(ins[0], Zeros):
            return out(self.zeros_op(node, ins, attrs))
        if any(isinstance(v, ShapeVec) for v in ins):
            return out(self.shape_op(node, ins, attrs))
        if fold:
            return out(self.fold(node, ins, attrs))
        t = ins[0] if isinstance(ins[0], Tens) else None
        if op == "Gather" and isinstance(ins[0], Const) and isinstance(ins[1], Tens):
            return out(self.embedding(node, ins, attrs))
        if op == "Gather" and isinstance(ins[0], Tens) and isinstance(ins[1], Const):
            return out(self.last_step(node, ins[0], ins[1], attrs))
        if op == "Add" and len(ins) == 2 and any(isinstance(v, Const) for v in ins):
            return out(self.add_bias(node, ins))
        if t is None:
            raise _Unsupported(f"op {op!r} (node {node.name!r}) on these inputs")
        if op == "Transpose":
            perm = list(attrs["perm"].ints) if "perm" in attrs else list(range(len(t.labels)))[::-1]
            return out(Tens(t.name, [t.labels[i] for i in perm], t.kind, t.sizes))
        if op in ("Squeeze", "Unsqueeze"):
            axes = _ints(ins[1], "axes") if len(ins) > 1 and ins[1] is not None else \
                list(attrs["axes"].ints) if "axes" in attrs else None
            return out(self.squeeze(node, t, axes, op == "Unsqueeze"))
        if op == "Reshape":
            return out(self.reshape(node, t, _ints(ins[1], "shape")))
        if op in ("MatMul", "Gemm"):
            return out(self.dense(node, t, ins, attrs))
        if op in ("Relu", "Tanh", "Sigmoid", "Softmax"):
            return out(self.activation(node, t, attrs))
        raise _Unsupported(f"op {op!r} (node {node.name!r})")

    # ---- folding
    def fold(self, node, ins, attrs):
        op = node.op_type
        v = [i.value if i is not None else None for i in ins]
        if op == "Unsqueeze":
            axes = [int(a) for a in (v[1] if len(v) > 1 and v[1] is not None else attrs["axes"].ints)]
            r = v[0]
            for a in sorted(a % (r.ndim + len(axes)) for a in axes):
                r = np.expand_dims(r, a)
            return Const(r)
        if op == "Squeeze":
            axes = v[1] if len(v) > 1 and v[1] is not None else (list(attrs["axes"].ints) if "axes" in attrs else None)
            return Const(np.squeeze(v[0], axis=tuple(int(a) for a in axes) if axes is not None else None))
        if op == "Concat":
            return Const(np.concatenate([x for x in v if x is not None], axis=attrs["axis"].i))
        if op == "Reshape":
            shape = [int(d) for d in v[1]]
            shape = [v[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
            return Const(v[0].reshape(shape))
        if op == "Transpose":
            perm = list(attrs["perm"].ints) if "perm" in attrs else None
            return Const(np.transpose(v[0], perm))
        if op == "Cast":
            from onnx import helper
            return Const(v[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"].i)))
        if op == "Gather":
            return Const(np.take(v[0], v[1], axis=attrs["axis"].i if "axis" in attrs else 0))
        if op == "Slice":
            return Const(_slice(v[0], *[x for x in v[1:]]))
        if op in ("Add", "Sub", "Mul", "Div"):
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            return Const(f(v[0], v[1]).astype(np.result_type(v[0], v[1])))
        if op == "Shape":
            return Const(np.array(v[0].shape, np.int64))
        raise _Unsupported(f"op {op!r} (node {node.name!r}) on constants")

    def shape_of(self, v, node, attrs):
        if isinstance(v, Const):
            return Const(np.array(v.value.shape, np.int64))
        if isinstance(v, Tens):
            dims = [v.sizes.get(lb, lb) if lb in ("F", "H", "D") else self.label(lb) for lb in v.labels]
            return ShapeVec(dims)
        if isinstance(v, Zeros):
            return ShapeVec(v.dims)
        raise _Unsupported(f"Shape (node {node.name!r}) of this value")

    def shape_op(self, node, ins, attrs):
        op = node.op_type
        if op == "Gather":
            idx = _ints(ins[1], "index")
            dims = [ins[0].dims[i] for i in idx]
            return ShapeVec(dims) if np.asarray(ins[1].value).ndim else ShapeVec(dims[:1])
        if op == "Unsqueeze" or op == "Cast":
            return ins[0]
        if op == "Concat":
            dims = []
            for v in ins:
                dims += v.dims if isinstance(v, ShapeVec) else [int(x) for x in np.asarray(v.value).reshape(-1)]
            return ShapeVec(dims)
        if op == "Slice":
            starts, ends = _ints(ins[1], "starts"), _ints(ins[2], "ends")
            return ShapeVec(ins[0].dims[slice(starts[0], min(ends[0], len(ins[0].dims)))])
        raise _Unsupported(f"op {op!r} (node {node.name!r}) on a shape")

    @staticmethod
    def expand_zeros(src_shape, shape):
        """Expand(zeros, shape): zeros of the broadcast shape (an initial state, as exporters
        write `torch.zeros(L, B, H)`)."""
        dims = shape.dims if isinstance(shape, ShapeVec) else [int(d) for d in np.asarray(shape.value).reshape(-1)]
        src = list(src_shape)
        n = max(len(src), len(dims))
        src, dims = [1] * (n - len(src)) + src, [1] * (n - len(dims)) + list(dims)
        return Zeros([s if isinstance(d, int) and d == 1 else d for s, d in zip(src, dims)])

    def concat_states(self, node, ins, attrs):
        """Concat of recurrent states on their direction axis (PyTorch's h_n of stacked
        layers): one state value bound to the list of the layers' state tensors."""
        labels = [self.labels(v) for v in ins]
        axis = attrs["axis"].i % len(labels[0])
        ok = all(v.kind == "state" for v in ins) and all(lb == labels[0] for lb in labels) \
            and labels[0][axis] == "D" and len({v.sizes.get("H") for v in ins}) == 1
        if not ok:
            raise _Unsupported(f"Concat (node {node.name!r}) of runtime tensors: lstm_rt concatenates "
                               f"recurrent states on their direction axis only")
        names = [n for v in ins for n in (v.name if isinstance(v.name, list) else [v.name])]
        return Tens(names, ins[0].labels, "state", {"D": sum(v.sizes.get("D", 1) for v in ins),
                                                    "H": ins[0].sizes.get("H")})

    def join(self, node, ins, mode, axis):
        """Sequences [.., F] combined on their feature axis (Concat) or elementwise (Add,
        Sub, Mul, Max, Min of equal shapes): a Join layer."""
        labels = [self.labels(v) for v in ins]
        ok = all(v.kind == "seq" and lb == labels[0] for v, lb in zip(ins, labels)) \
            and "D" not in labels[0] and labels[0][-1] in ("F", "H") and axis % len(labels[0]) == len(labels[0]) - 1
        if not ok:
            raise _Unsupported(f"{node.op_type} (node {node.name!r}) of runtime tensors other than "
                               f"sequences on their feature axis (axes {labels})")
        # features: a Dense's F, or a recurrent output's directions merged into it (D * H)
        feats = [v.sizes.get("F") or v.sizes.get("D", 1) * v.sizes["H"] for v in ins]
        name = self.unique(node.name or mode)
        layer = Join(name, mode, feats)
        self.add_node(layer, [v.name for v in ins], [name])
        return Tens(name, labels[0][:-1] + ("F",), "seq", {"F": layer.output_size})

    def zeros_op(self, node, ins, attrs):
        op = node.op_type
        if op in ("Identity", "Cast"):
            return ins[0]
        if op == "Slice":
            starts, ends = _ints(ins[1], "starts"), _ints(ins[2], "ends")
            axes = _ints(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
            dims = list(ins[0].dims)
            for a, s0, e0 in zip(axes, starts, ends):
                if isinstance(dims[a], int):
                    dims[a] = len(range(dims[a])[slice(s0, e0)])
            return Zeros(dims)
        if op in ("Squeeze", "Unsqueeze", "Reshape", "Transpose", "Expand"):
            return ins[0]  # zeros stay zeros; the consumer only needs "no initial state"
        raise _Unsupported(f"op {op!r} (node {node.name!r}) on a zero tensor")

    # ---- relabelling
    def squeeze(self, node, t, axes, unsqueeze):
        labels = list(t.labels)
        if unsqueeze:
            for a in sorted(axes):
                labels.insert(a % (len(labels) + 1), "1")
            return Tens(t.name, labels, t.kind, t.sizes)
        axes = [a % len(labels) for a in axes] if axes is not None else \
            [i for i, lb in enumerate(labels) if lb == "1" or (lb == "D" and t.sizes.get("D") == 1)]
        for a in axes:
            if not (labels[a] == "1" or (labels[a] == "D" and t.sizes.get("D") == 1)):
                raise _Unsupported(f"Squeeze (node {node.name!r}) of axis {labels[a]} that may not be 1")
        kept = [lb for i, lb in enumerate(labels) if i not in axes]
        if t.kind == "seq" and "D" in t.labels and "D" not in kept:
            kept = ["F" if lb == "H" else lb for lb in kept]
        return Tens(t.name, kept, t.kind, t.sizes)

    def reshape(self, node, t, shape):
        labels = self.labels(t)
        # merge the directions into the features: (.., D, H) or (.., D, B?, ..) patterns
        if "D" in labels and "H" in labels and len(shape) == len(labels) - 1:
            i, j = labels.index("D"), labels.index("H")
            if j == i + 1:
                kept = [lb for lb in labels if lb != "D"]
                return Tens(t.name, ["F" if lb == "H" else lb for lb in kept], t.kind, t.sizes)
        if len(shape) == len(labels) and all(
                d in (0, -1) or lb not in t.sizes or d == t.sizes[lb] for d, lb in zip(shape, labels)):
            return t  # same rank, known sizes kept: exporters restating the shape (batch/time may be baked in)
        raise _Unsupported(f"Reshape (node {node.name!r}) of axes {labels} to {shape}")

    # ---- compute nodes
    def add_node(self, layer, inputs, outputs):
        self.nodes.append(Node(layer, inputs, outputs))

    def unique(self, base):
        n = base or "layer"
        while n in self.names:
            n += "_"
        self.names.add(n)
        return n

    def embedding(self, node, ins, attrs):
        table, ids = ins[0].value, ins[1]
        if attrs.get("axis") is not None and attrs["axis"].i != 0 or table.ndim != 2:
            raise _Unsupported(f"Gather (node {node.name!r}) that is not an embedding lookup")
        if ids.kind != "ids" or len(ids.labels) != 2:
            raise _Unsupported(f"Gather (node {node.name!r}) on a {ids.kind} tensor")
        name = self.unique(node.name or "embedding")
        self.add_node(Embedding(name, table.astype(np.float32)), [ids.name], [name])
        return Tens(name, list(ids.labels) + ["F"], "seq", {"F": table.shape[1]})

    def last_step(self, node, t, index, attrs):
        """Gather(Y, -1) on the time axis of a forward recurrent layer's output (a classifier
        reading the last step, `y[:, -1]`): that is the layer's final h, as a LastState."""
        labels = self.labels(t)
        axis = (attrs["axis"].i if "axis" in attrs else 0) % len(labels)
        idx = np.asarray(index.value)
        prod = self.producer(t)
        ok = t.kind == "seq" and labels[axis] == "T" and idx.ndim == 0 and int(idx) == -1 \
            and prod is not None and prod.layer.kind in RECURRENT and prod.layer.direction == "forward" \
            and not any(prod.inputs[1:]) and "D" not in labels   # no lengths, masks or initial states
        if not ok:
            raise _Unsupported(f"Gather (node {node.name!r}) other than the last step (index -1) of a "
                               f"forward recurrent layer's output")
        if not prod.outputs[1]:
            prod.outputs[1] = self.fresh(f"{prod.layer.name}/Y_h")
        name = self.unique(node.name or "last")
        H = prod.layer.output_size
        self.add_node(LastState(name, 1, H), [prod.outputs[1]], [name])
        return Tens(name, [lb for i, lb in enumerate(labels) if i != axis][:-1] + ["F"], "static", {"F": H})

    def dense(self, node, t, ins, attrs):
        if t.kind == "seq" and self.labels(t)[-1].startswith("?"):
            self.bind[self.labels(t)[-1]] = "F"
        if t.kind not in ("seq", "static") or self.labels(t)[-1] not in ("F", "H"):
            raise _Unsupported(f"{node.op_type} (node {node.name!r}) on axes {self.labels(t)}")
        w = self.const_of(node.input[1])
        if w is None or w.ndim != 2:
            raise _Unsupported(f"{node.op_type} (node {node.name!r}) with a non-constant weight")
        bias = None
        if node.op_type == "Gemm":
            g = {k: a for k, a in attrs.items()}
            if g.get("transA") and g["transA"].i:
                raise _Unsupported(f"Gemm (node {node.name!r}) with transA")
            alpha = g["alpha"].f if "alpha" in g else 1.0
            beta = g["beta"].f if "beta" in g else 1.0
            w = w.T if g.get("transB") and g["transB"].i else w
            w = w * alpha
            if len(ins) > 2 and ins[2] is not None:
                bias = np.broadcast_to(np.asarray(ins[2].value) * beta, (w.shape[1],))
        name = self.unique(node.name or "dense")
        layer = Dense(name, w.T.astype(np.float32), None if bias is None else bias.astype(np.float32))
        self.add_node(layer, [t.name], [name])
        return Tens(name, self.labels(t)[:-1] + ("F",), t.kind, {"F": w.shape[1]})

    def producer(self, t):
        return next((n for n in self.nodes if n.outputs and n.outputs[0] == t.name), None)

    def add_bias(self, node, ins):
        t, c = (ins[0], ins[1]) if isinstance(ins[0], Tens) else (ins[1], ins[0])
        prod = self.producer(t)
        b = np.asarray(c.value, np.float32).reshape(-1)
        if prod is None or not isinstance(prod.layer, Dense) or prod.layer.bias is not None \
                or prod.layer.activation != "linear" or b.size != prod.layer.output_size:
            raise _Unsupported(f"Add (node {node.name!r}) that is not a bias after MatMul")
        d = prod.layer
        prod.layer = Dense(d.name, d.weight, b)
        return t

    def activation(self, node, t, attrs):
        prod = self.producer(t)
        act = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax"}[node.op_type]
        if node.op_type == "Softmax" and "axis" in attrs and attrs["axis"].i not in (-1, len(t.labels) - 1):
            raise _Unsupported(f"Softmax (node {node.name!r}) over axis {attrs['axis'].i}")
        if prod is None or not isinstance(prod.layer, Dense) or prod.layer.activation != "linear":
            raise _Unsupported(f"{node.op_type} (node {node.name!r}) not directly after a MatMul/Gemm")
        d = prod.layer
        prod.layer = Dense(d.name, d.weight, d.bias, activation=act)
        return t

    def recurrent(self, node, ins):
        op = node.op_type
        name = self.unique(node.name or op.lower())
        layer = _layer(node, name, {k: v.value for k, v in self.vals.items() if isinstance(v, Const)},
                       self.problems)
        if layer is None:
            return
        layout = _attributes(node, []).get("layout", 0)
        slots = dict(zip(INPUTS[op], list(node.input) + [""] * 8))
        x = self.vals[slots["X"]]
        if not isinstance(x, Tens) or x.kind != "seq":
            raise _Unsupported(f"input X of {op} node {node.name!r} is not a runtime sequence")
        self.unify(x, ("T", "B", "F") if layout == 0 else ("B", "T", "F"), node)
        self.role(x, "seq")
        bound = [x.name, None, None, None]
        for k, slot in ((1, "sequence_lens"), (2, "initial_h"), (3, "initial_c")):
            v = self.vals.get(slots.get(slot, "")) if slots.get(slot) else None
            if v is None or isinstance(v, Zeros) or (isinstance(v, Const) and not np.any(v.value)):
                continue  # absent, or zeros: the default
            if not isinstance(v, Tens) or isinstance(v.name, list):
                raise _Unsupported(f"input {slot} of {op} node {node.name!r} must be a graph input, a "
                                   f"layer's state or zeros")
            if slot == "sequence_lens":
                self.role(v, "lens")
            else:
                self.unify(v, ("D", "B", "H") if layout == 0 else ("B", "D", "H"), node)
                self.role(v, "state", "DBH" if layout == 0 else "BDH")
            bound[k] = v.name
        D, H, Hr = layer.num_directions, layer.hidden_size, layer.output_size
        outs = [self.fresh(f"{name}/Y"), self.fresh(f"{name}/Y_h"), self.fresh(f"{name}/Y_c") if op == "LSTM" else None]
        self.add_node(layer, bound, outs)
        ylab = ("T", "D", "B", "H") if layout == 0 else ("B", "T", "D", "H")
        slab = ("D", "B", "H") if layout == 0 else ("B", "D", "H")
        sizes = {"D": D, "H": Hr}
        vals = [Tens(outs[0], ylab, "seq", sizes), Tens(outs[1], slab, "state", sizes)]
        if op == "LSTM":
            vals.append(Tens(outs[2], slab, "state", {"D": D, "H": H}))
        for o, v in zip(node.output, vals):
            if o:
                self.vals[o] = v

    def role(self, t, role, layout=None):
        if t.name in self.inputs:
            info = self.inputs[t.name]
            info["role"] = role
            info["layout"] = layout

    def if_(self, node, ins):
        cond = ins[0]
        if not isinstance(cond, Const):
            raise _Unsupported(f"If (node {node.name!r}) whose condition is not a constant")
        attrs = {a.name: a for a in node.attribute}
        branch = attrs["then_branch" if bool(np.asarray(cond.value).reshape(-1)[0]) else "else_branch"].g
        consts = _constants(branch, self.where, self.problems,
                            os.path.dirname(os.path.abspath(self.where)) if self.where != "<ModelProto>" else None)
        for k, v in consts.items():
            if v is not None:
                self.vals[k] = Const(v)
        self.run_nodes(branch.node)
        for o, bo in zip(node.output, branch.output):
            if bo.name in self.vals:
                self.vals[o] = self.vals[bo.name]

    # ---- ports
    def ports(self, graph):
        inputs = []
        for name, info in self.inputs.items():
            t = self.vals[name]
            labels = self.labels(t)
            role = info["role"]
            if role is None:
                if any(n.inputs and name in n.inputs for n in self.nodes):
                    role = "ids" if info["ints"] else "seq"
                else:
                    continue  # an input nothing reads (onnxruntime also ignores it)
            if role == "lens":
                if info["elem"] != 6:
                    self.problems.append(f"graph input {name!r} (sequence_lens) must be int32")
                inputs.append(Port(name, name, "B", "int32"))
            elif role == "state":
                if not info["floats"]:
                    self.problems.append(f"graph input {name!r} must be float32")
                inputs.append(Port(name, name, info["layout"]))
            else:
                lay = "".join(labels)
                want = ("TB", "BT") if info["ints"] else ("TBF", "BTF")
                if lay not in want:
                    self.problems.append(f"graph input {name!r}: could not tell its time and batch axes "
                                         f"(axes {labels})")
                    continue
                if not info["ints"] and not info["floats"]:
                    self.problems.append(f"graph input {name!r} must be float32")
                inputs.append(Port(name, name, lay, "int64" if info["ints"] else "float32"))
        outputs = []
        for vi in graph.output:
            v = self.vals.get(vi.name)
            if not isinstance(v, Tens):
                self.problems.append(f"graph output {vi.name!r} is not computed by supported nodes")
                continue
            lay = "".join(self.labels(v)).replace("H", "F") if v.kind == "seq" and "D" not in v.labels \
                else "".join(self.labels(v))
            if v.kind == "state":
                ok = lay in ("DBH", "BDH")
            elif v.kind == "static":
                ok = lay == "BF"
            else:
                ok = lay in ("TBF", "BTF", "TDBH", "BTDH")
            if not ok:
                self.problems.append(f"graph output {vi.name!r} has axes {self.labels(v)}, which lstm_rt "
                                     f"cannot lay out")
                continue
            outputs.append(Port(vi.name, v.name, lay, groups=v.sizes.get("D", 1) if "D" in lay and v.kind == "seq" else 1))
        return inputs, outputs


def _all_nodes(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.g.node:
                yield from _all_nodes(a.g)


def onnx_value(attrs):
    """The fill value of ConstantOfShape (default 0)."""
    if "value" not in attrs:
        return 0.0
    from onnx import numpy_helper
    return float(numpy_helper.to_array(attrs["value"].t).reshape(-1)[0])


def _slice(data, starts, ends, axes=None, steps=None):
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    idx = [slice(None)] * data.ndim
    for a, s0, e0, st in zip(axes, starts, ends, steps):
        idx[a] = slice(int(s0), int(e0), st)
    return data[tuple(idx)]


def from_onnx(model, *, name: str | None = None) -> Model:
    """An lstm_rt.Model from an ONNX file path or onnx.ModelProto.

    Reads graphs of LSTM, GRU and RNN nodes (opsets 7..22) as exporters write them: weights
    as initializers, Constant nodes or folded chains, initial states as graph inputs or
    zeros, embeddings (Gather), dense heads (MatMul/Gemm + Add + activation) and the axis
    glue around them. Raises ConversionError naming every unsupported op or attribute."""
    proto, where = _load(model)
    graph = proto.graph
    it = _Interpreter(proto, where)
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > 22:
            it.problems.append(f"opset {imp.version} (lstm_rt knows up to 22)")
    base_dir = os.path.dirname(os.path.abspath(where)) if where != "<ModelProto>" else None
    consts = _constants(graph, where, it.problems, base_dir)
    it.run_graph(graph, consts)
    inputs, outputs = it.ports(graph) if not it.problems else ([], [])
    if it.problems:
        hint = ""
        if not any(n.op_type in RECURRENT for n in _all_nodes(graph)):
            hint = (" (the graph has no LSTM, GRU or RNN node: its exporter unrolled the recurrence "
                    "for a fixed length, as Keras 3 on the torch backend and PyTorch's dynamo exporter "
                    "for nn.RNN do; convert the source model instead: from_keras / from_torch)")
        raise ConversionError(f"{where}: cannot convert: " + "; ".join(dict.fromkeys(it.problems)) + hint)
    if not it.nodes:
        raise ConversionError(f"{where}: the graph computes nothing lstm_rt runs (no LSTM, GRU, RNN, "
                              f"embedding or dense layer)")
    try:
        return Model(it.nodes, inputs, outputs, name=name or graph.name or "onnx_model",
                     metadata={"source": "onnx", "producer": proto.producer_name})
    except Exception as e:
        raise ConversionError(f"{where}: {e}") from None
