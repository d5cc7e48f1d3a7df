"""ONNX -> lstm_rt: recurrent nodes and the graphs exporters write around them.

ONNX is lstm_rt's native semantics (gate order iofc / zrh, activations, clip, ...), so a
recurrent node's weights are taken as they are. The graph is read by a small symbolic
interpreter: every value is a constant (folded: Constant, Identity, Unsqueeze, Shape of
constants, Concat, Slice, Gather, Cast, Reshape, ConstantOfShape, arithmetic, `If` on a
constant condition), a shape vector whose entries may be polynomials over the symbolic
batch and time (Sym: what exporters compute Reshape targets from), a zero tensor (initial
states), a batch permutation (the sort of enforce_sorted=False packing), or a runtime
tensor whose axes are labelled (T time, B batch, F features, D directions, H units).
Transpose, Squeeze, Unsqueeze and Reshape of runtime tensors only relabel; Gather on a
constant table becomes an Embedding, Gather of index -1 on time or of k on a state a final
state (LastState / SelectDirection), MatMul/Gemm (+ Add, + activation) a Dense,
LSTM/GRU/RNN nodes recurrent layers. Graph inputs and outputs keep their names and
layouts, so `Model.run(feeds)` answers the same feeds as onnxruntime. Unsupported ops or
attributes are reported in one short error.
"""
from __future__ import annotations

import os
import re

import numpy as np

from lstm_rt.layers import (GRU, LSTM, RNN, Dense, Embedding, Join, LastState, SelectDirection,
                            activations_from_onnx)
from lstm_rt.model import Model, Node, Port

from . import ConversionError, _refusal

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


def _check_fold_size(node, op, v):
    """Refuse to fold constants into a result past MAX_FOLDED_BYTES before making it: a
    small graph can broadcast [20000, 1] + [1, 20000] or ask Range for 10**12 values."""
    if op in ("Add", "Sub", "Mul", "Div") and all(x is not None for x in v[:2]):
        count = int(np.prod(np.broadcast_shapes(np.shape(v[0]), np.shape(v[1])), dtype=np.float64))
    elif op == "Range" and all(x is not None for x in v[:3]):
        start, limit, delta = (float(np.asarray(x).reshape(-1)[0]) for x in v[:3])
        count = max(int(np.ceil((limit - start) / delta)), 0) if delta and np.isfinite([start, limit, delta]).all() \
            else 0
    else:
        return
    if count * 8 > MAX_FOLDED_BYTES:
        raise _Unsupported(f"op {op!r} (node {node.name!r}) would fold into {count:,} values "
                           f"(more than {MAX_FOLDED_BYTES} bytes)")


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



# ------------------------------------------------------------ symbolic dims


class Sym:
    """A symbolic dimension: an integer polynomial over axis labels ("T", "B", or "?x:0", a
    graph input's axis not identified yet), as exporters compute Reshape targets from Shape
    outputs (B * T, 2 * B, ...). terms: sorted tuple of labels -> coefficient."""
    __slots__ = ("terms",)

    def __init__(self, terms):
        self.terms = {k: v for k, v in terms.items() if v}

    @classmethod
    def of(cls, label):
        return cls({(label,): 1})

    def __repr__(self):
        parts = ["*".join(([str(c)] if c != 1 or not k else []) + list(k)) for k, c in self.terms.items()]
        return " + ".join(parts) or "0"


def _terms(d):
    return dict(d.terms) if isinstance(d, Sym) else ({(): int(d)} if d else {})


def _dim(terms):
    """An int when the polynomial is constant, else a Sym."""
    terms = {k: v for k, v in terms.items() if v}
    return terms.get((), 0) if set(terms) <= {()} else Sym(terms)


def dim_add(a, b, sign=1):
    t = _terms(a)
    for k, v in _terms(b).items():
        t[k] = t.get(k, 0) + sign * v
    return _dim(t)


def dim_mul(a, b):
    t = {}
    for ka, va in _terms(a).items():
        for kb, vb in _terms(b).items():
            k = tuple(sorted(ka + kb))
            t[k] = t.get(k, 0) + va * vb
    return _dim(t)


def dim_div(a, b):
    """a / b when b divides a exactly (b an integer or one monomial), else None; integers
    divide as ONNX does (truncating)."""
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        return None if not b else (abs(a) // abs(b)) * (1 if (a >= 0) == (b > 0) else -1)
    tb = _terms(b)
    if len(tb) != 1:
        return 1 if _terms(a) == tb else None
    ((mono, coef),) = tb.items()
    out = {}
    for ka, va in _terms(a).items():
        rest = list(ka)
        for lab in mono:
            if lab not in rest:
                return None
            rest.remove(lab)
        if va % coef:
            return None
        out[tuple(rest)] = va // coef
    return _dim(out)


def dim_prod(dims):
    p = 1
    for d in dims:
        p = dim_mul(p, d)
    return p


# ------------------------------------------------------------ symbolic values


class Const:
    def __init__(self, value):
        self.value = np.asarray(value)


class ShapeVec:
    """A shape as a vector whose entries are ints or Syms (scalar: a rank-0 value, one dim)."""

    def __init__(self, dims, scalar=False):
        self.dims, self.scalar = list(dims), scalar


class Zeros:
    """An all-zero tensor of a (partly symbolic) shape: ConstantOfShape(0), Expand(0), an
    initial state that is the default."""

    def __init__(self, dims):
        self.dims = list(dims)


class Perm:
    """A permutation of the batch: the order TopK sorted the sequence lengths into (power 1),
    or its inverse (power -1). `dim` is the batch size."""

    def __init__(self, power, dim):
        self.power, self.dim = power, dim


class Iota:
    """Range(0, n, 1) over a symbolic n."""

    def __init__(self, n):
        self.n = n


class Fill:
    """ConstantOfShape(value) of a symbolic 1-D shape (exporters build arange from it)."""

    def __init__(self, dims, value):
        self.dims, self.value = list(dims), value


class Tens:
    """A runtime tensor: internal name, axis labels of its ONNX view, sizes of F/H/D axes.
    kind: "seq" (internal [T, B, F]), "ids" ([T, B] ints), "state" ([D, B, H]), "static"
    ([B, F], a layer's last output). parts: a state's tensors and their directions (a
    Concat of layers' states); perm: the power of the batch permutation applied to it."""

    def __init__(self, name, labels, kind, sizes, parts=None, perm=0):
        self.name, self.labels, self.kind, self.sizes = name, tuple(labels), kind, dict(sizes)
        self.parts = parts if parts is not None else [(name, self.sizes.get("D", 1))]
        self.perm = perm

    def but(self, **changes):
        """A copy with some fields changed (the same runtime tensor seen another way)."""
        kw = dict(name=self.name, labels=self.labels, kind=self.kind, sizes=self.sizes,
                  parts=self.parts, perm=self.perm)
        kw.update(changes)
        return Tens(**kw)


class _Unsupported(Exception):
    pass


class _Downstream(Exception):
    """A node reading a value an unsupported node should have made: the root cause is
    already reported, so this one is not."""


def _ints(v, what):
    if isinstance(v, ShapeVec) and all(isinstance(d, int) for d in v.dims):
        return list(v.dims)
    if not isinstance(v, Const):
        raise _Unsupported(f"{what} must be a constant")
    return [int(i) for i in np.asarray(v.value).reshape(-1)]


def _axis(attrs, default=0):
    return attrs["axis"].i if "axis" in attrs else default


# what each refused op would need instead (kept short: refusals stay under 300 characters)
HINT_UNKNOWN = "lstm_rt runs recurrent layers, embeddings and Dense heads: export without the rest"


class _Interpreter:
    def __init__(self, proto, where):
        self.where = where
        self.problems: list[tuple] = []     # (op type or None, text)
        self.vals: dict[str, object] = {}
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.inputs: dict[str, dict] = {}   # graph input -> {"labels": [...], "role": ...}
        self.bind: dict[str, str] = {}      # unresolved axis label -> "T" / "B"
        self.examples: dict[str, int] = {}  # unresolved axis label -> the size the graph declares
        self.counter = 0
        self.proto = proto
        self.opset = max([i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")] or [1])

    # ---- helpers
    def fresh(self, base):
        self.counter += 1
        return f"{base}#{self.counter}"

    def problem(self, text, op=None):
        self.problems.append((op, text))

    def label(self, lab):
        seen = 0
        while lab in self.bind and seen < 64:
            lab, seen = self.bind[lab], seen + 1
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

    def canon(self, d):
        """A dim with its labels resolved (so B from two inputs compares equal)."""
        if not isinstance(d, Sym):
            return d
        t = {}
        for k, v in d.terms.items():
            key = tuple(sorted(self.label(lb) for lb in k))
            t[key] = t.get(key, 0) + v
        return _dim(t)

    def same(self, a, b):
        return _terms(self.canon(a)) == _terms(self.canon(b))

    def example(self, d):
        """The size a graph input declares for the one axis d stands for (None if unknown)."""
        d = self.canon(d)
        if not isinstance(d, Sym) or list(d.terms.values()) != [1] or len(next(iter(d.terms))) != 1:
            return None
        lab = next(iter(d.terms))[0]
        return next((v for raw, v in self.examples.items() if self.label(raw) == lab), None)

    def const_of(self, name):
        v = self.vals.get(name)
        return v.value if isinstance(v, Const) else None

    def vec(self, dims, scalar=False):
        """A shape value: a Const when every dim is known, else a ShapeVec."""
        if all(isinstance(d, int) for d in dims):
            a = np.array(dims, np.int64)
            return Const(a.reshape(()) if scalar and a.size == 1 else a)
        return ShapeVec(dims, scalar)

    def axis_sizes(self, t):
        """The size of each axis of a runtime tensor: ints for F/H/D, Syms for T/B."""
        out = []
        for lb in t.labels:
            r = self.label(lb)
            if r == "F":
                out.append(t.sizes.get("F") or t.sizes.get("D", 1) * t.sizes.get("H", 0) or Sym.of(f"F:{t.name}"))
            elif r in ("H", "D"):
                out.append(t.sizes[r])
            elif r == "1":
                out.append(1)
            else:
                out.append(Sym.of(lb))
        return out

    # ---- graph
    def run_graph(self, graph, consts):
        self.readers = {}
        for n in _all_nodes(graph):
            for name in n.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        for o in graph.output:
            self.readers[o.name] = self.readers.get(o.name, 0) + 1
        for k, v in consts.items():
            if v is not None:
                self.vals[k] = Const(v)
        for vi in graph.input:
            if vi.name in self.vals:
                continue
            tt = vi.type.tensor_type
            rank = len(tt.shape.dim)
            ints = tt.elem_type in (2, 3, 4, 5, 6, 7, 12, 13)  # (u)int8/16/32/64
            floats = tt.elem_type == 1
            labels = [f"?{vi.name}:{i}" for i in range(rank)]
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            self.inputs[vi.name] = {"labels": labels, "ints": ints, "floats": floats, "dims": dims,
                                    "elem": tt.elem_type, "role": None}
            for lab, d in zip(labels, dims):
                if d:
                    self.examples[lab] = d
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
                self.problem(str(e), node.op_type)
            except (ValueError, IndexError, KeyError, TypeError, AttributeError, ArithmeticError) as e:
                self.problem(f"node {node.name!r} ({node.op_type}): {type(e).__name__}: {e}", node.op_type)
            except MemoryError:
                self.problem(f"node {node.name!r} ({node.op_type}): its constant result does not fit in memory",
                             node.op_type)

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
        if op == "Identity" or (op == "Cast" and isinstance(ins[0], (Tens, ShapeVec, Perm, Iota))):
            return out(ins[0])
        if op == "Shape":
            return out(self.shape_of(ins[0], node, attrs))
        if op == "ConstantOfShape":
            value = onnx_value(attrs)
            if isinstance(ins[0], Const):
                return out(Const(_filled(_ints(ins[0], "shape"), value, f"ConstantOfShape {node.name!r}")))
            if isinstance(ins[0], ShapeVec) and value == 0:
                return out(Zeros(ins[0].dims))
            if isinstance(ins[0], ShapeVec) and len(ins[0].dims) == 1:
                return out(Fill(ins[0].dims, value))
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
        if op == "NonZero" and isinstance(ins[0], Fill) and ins[0].value:
            return out(Iota(ins[0].dims[0]))   # nonzero(ones(n)) = 0 .. n-1: arange before opset 11
        if isinstance(ins[0], Iota):
            return out(self.iota_op(node, ins))
        if any(isinstance(v, (ShapeVec, Iota)) for v in ins) and not isinstance(ins[0], Tens):
            return out(self.shape_op(node, ins, attrs))
        if fold:
            return out(self.fold(node, ins, attrs))
        t = ins[0] if isinstance(ins[0], Tens) else None
        if op == "Gather" and isinstance(ins[0], Const) and isinstance(ins[1], Tens):
            return out(self.embedding(node, ins, attrs))
        if op == "Gather" and t is not None and isinstance(ins[1], Perm):
            return out(self.permute(node, t, ins[1], attrs))
        if op == "Gather" and t is not None and isinstance(ins[1], Const):
            if t.kind == "state" and self.labels(t)[_axis(attrs) % len(t.labels)] == "D":
                return out(self.state_index(node, t, ins[1].value, _axis(attrs)))
            return out(self.last_step(node, t, ins[1].value, _axis(attrs)))
        if op == "TopK" and t is not None:
            values, indices = self.topk(node, t, ins, attrs)
            out(values, 0)
            return out(indices, 1)
        if op == "Add" and len(ins) == 2 and any(isinstance(v, Const) for v in ins):
            return out(self.add_bias(node, ins))
        if t is None:
            raise _Unsupported(f"op {op!r} (node {node.name!r}) on these inputs")
        if op == "Transpose":
            perm = list(attrs["perm"].ints) if "perm" in attrs else list(range(len(t.labels)))[::-1]
            return out(t.but(labels=[t.labels[i] for i in perm]))
        if op in ("Squeeze", "Unsqueeze"):
            axes = _ints(ins[1], "axes") if len(ins) > 1 and ins[1] is not None else \
                list(attrs["axes"].ints) if "axes" in attrs else None
            return out(self.squeeze(node, t, axes, op == "Unsqueeze"))
        if op == "Reshape":
            target = ins[1].dims if isinstance(ins[1], ShapeVec) else _ints(ins[1], "shape")
            allowzero = attrs["allowzero"].i if "allowzero" in attrs else 0
            return out(self.reshape(node, t, target, allowzero))
        if op in ("MatMul", "Gemm"):
            return out(self.dense(node, t, ins, attrs))
        if op in ACTIVATION_OPS:
            return out(self.activation(node, t, attrs))
        if op == "Slice":
            return out(self.slice_tensor(node, t, ins, attrs))
        raise _Unsupported(f"op {op!r} (node {node.name!r})")

    # ---- folding
    def slice_params(self, node, ins, attrs):
        """(starts, ends, axes, steps): inputs since opset 10, attributes before."""
        if len(ins) > 1:
            starts, ends = _ints(ins[1], "starts"), _ints(ins[2], "ends")
            axes = _ints(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else None
            steps = _ints(ins[4], "steps") if len(ins) > 4 and ins[4] is not None else None
        else:
            if "starts" not in attrs or "ends" not in attrs:
                raise _Unsupported(f"Slice (node {node.name!r}) without starts/ends")
            starts, ends = list(attrs["starts"].ints), list(attrs["ends"].ints)
            axes = list(attrs["axes"].ints) if "axes" in attrs else None
            steps = None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
            raise _Unsupported(f"Slice (node {node.name!r}) with inconsistent starts/ends/axes/steps")
        return starts, ends, axes, steps

    def fold(self, node, ins, attrs):
        op = node.op_type
        v = [i.value if i is not None else None for i in ins]
        _check_fold_size(node, op, v)
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
            return Const(np.take(v[0], v[1], axis=_axis(attrs)))
        if op == "Slice":
            return Const(_slice(v[0], *self.slice_params(node, ins, attrs)))
        if op in ("Add", "Sub", "Mul", "Div"):
            if op == "Div" and v[0].dtype.kind in "iu" and v[1].dtype.kind in "iu":
                return Const(np.trunc(v[0] / v[1]).astype(np.result_type(v[0], v[1])))
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            return Const(f(v[0], v[1]).astype(np.result_type(v[0], v[1])))
        if op == "Shape":
            return Const(np.array(v[0].shape, np.int64))
        if op == "Range":
            return Const(np.arange(v[0], v[1], v[2]).astype(np.result_type(v[0], v[1], v[2])))
        if op == "ReduceProd":
            keep = attrs["keepdims"].i if "keepdims" in attrs else 1
            return Const(np.prod(v[0], keepdims=bool(keep)))
        raise _Unsupported(f"op {op!r} (node {node.name!r}) on constants")

    def shape_of(self, v, node, attrs):
        start = attrs["start"].i if "start" in attrs else 0
        end = attrs["end"].i if "end" in attrs else None
        if isinstance(v, Const):
            return Const(np.array(v.value.shape[start:end], np.int64))
        if isinstance(v, Tens):
            return self.vec(self.axis_sizes(v)[start:end])
        if isinstance(v, Zeros):
            return self.vec(v.dims[start:end])
        if isinstance(v, Perm):
            return self.vec([v.dim][start:end])
        if isinstance(v, ShapeVec):
            return Const(np.array([] if v.scalar else [len(v.dims)], np.int64)[start:end])
        raise _Unsupported(f"Shape (node {node.name!r}) of this value")

    def shape_op(self, node, ins, attrs):
        """Arithmetic on shape vectors with symbolic entries (Reshape targets and the like)."""
        op = node.op_type

        def dims(v):
            if isinstance(v, ShapeVec):
                return list(v.dims)
            if isinstance(v, Const):
                return [int(i) for i in np.asarray(v.value).reshape(-1)]
            raise _Unsupported(f"op {op!r} (node {node.name!r}) mixing a shape with a runtime tensor")

        def scalar(v):
            return v.scalar if isinstance(v, ShapeVec) else np.asarray(v.value).ndim == 0

        x = ins[0]
        if op == "Gather":
            idx = np.asarray(ins[1].value) if isinstance(ins[1], Const) else None
            if idx is None or _axis(attrs) != 0:
                raise _Unsupported(f"Gather (node {node.name!r}) of a shape with a non-constant index")
            d = dims(x)
            picked = [d[int(i)] for i in idx.reshape(-1)]
            return self.vec(picked, scalar=idx.ndim == 0)
        if op == "Unsqueeze":
            return self.vec(dims(x))
        if op == "Squeeze":
            d = dims(x)
            return self.vec(d, scalar=len(d) == 1)
        if op == "Concat":
            return self.vec([d for v in ins if v is not None for d in dims(v)])
        if op == "Slice":
            starts, ends, axes, steps = self.slice_params(node, ins, attrs)
            d = dims(x)
            if axes != [0] and axes != [-1]:
                raise _Unsupported(f"Slice (node {node.name!r}) of a shape on axis {axes}")
            return self.vec(d[slice(starts[0], ends[0], steps[0])])
        if op == "Reshape":
            target = _ints(ins[1], "shape")
            return self.vec(dims(x), scalar=not target)
        if op in ("Add", "Sub", "Mul", "Div"):
            a, b = dims(ins[0]), dims(ins[1])
            if len(a) != len(b) and 1 not in (len(a), len(b)):
                raise _Unsupported(f"{op} (node {node.name!r}) of shapes of lengths {len(a)} and {len(b)}")
            n = max(len(a), len(b))
            a, b = a * n if len(a) == 1 else a, b * n if len(b) == 1 else b
            f = {"Add": dim_add, "Sub": lambda p, q: dim_add(p, q, -1), "Mul": dim_mul, "Div": dim_div}[op]
            r = [f(p, q) for p, q in zip(a, b)]
            if any(d is None for d in r):
                raise _Unsupported(f"Div (node {node.name!r}) of shapes that do not divide: {a} / {b}")
            return self.vec(r, scalar=scalar(ins[0]) and scalar(ins[1]))
        if op == "ReduceProd":
            keep = attrs["keepdims"].i if "keepdims" in attrs else 1
            return self.vec([dim_prod(dims(x))], scalar=not keep)
        if op == "Range":
            start, limit, delta = ins
            if not (isinstance(start, Const) and isinstance(delta, Const) and int(start.value) == 0
                    and int(delta.value) == 1 and isinstance(limit, ShapeVec)):
                raise _Unsupported(f"Range (node {node.name!r}) other than 0 .. n")
            return Iota(limit.dims[0])
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

    def zeros_op(self, node, ins, attrs):
        op = node.op_type
        if op in ("Identity", "Cast"):
            return ins[0]
        if op == "Slice":
            starts, ends, axes, steps = self.slice_params(node, ins, attrs)
            dims = list(ins[0].dims)
            for a, s0, e0, st in zip(axes, starts, ends, steps):
                if isinstance(dims[a], int):
                    dims[a] = len(range(dims[a])[slice(s0, e0, st)])
            return Zeros(dims)
        if op in ("ScatterElements", "Scatter") and len(ins) == 3 and isinstance(ins[1], Perm) \
                and isinstance(ins[2], Iota) and _axis(attrs) == 0:
            return Perm(-ins[1].power, ins[1].dim)   # inv[perm[i]] = i: the inverse permutation
        if op in ("Squeeze", "Unsqueeze", "Reshape", "Transpose", "Expand"):
            return ins[0]  # zeros stay zeros; the consumer only needs "no initial state"
        raise _Unsupported(f"op {op!r} (node {node.name!r}) on a zero tensor")

    def iota_op(self, node, ins):
        """0 .. n-1 stays itself through the casts, reshapes and + 0 exporters wrap it in."""
        op = node.op_type
        if op in ("Identity", "Cast", "Transpose", "Squeeze", "Unsqueeze"):
            return ins[0]
        if op in ("Add", "Sub") and isinstance(ins[1], Const) and not np.any(ins[1].value):
            return ins[0]
        raise _Unsupported(f"op {op!r} (node {node.name!r}) on a range")

    # ---- batch permutations (pack_padded_sequence with enforce_sorted=False)
    def topk(self, node, t, ins, attrs):
        """TopK over the sequence lengths (the sort enforce_sorted=False exports): lstm_rt
        takes lengths in any order, so the sorted lengths are the lengths seen through a
        batch permutation, and the indices that permutation."""
        labels = self.labels(t)
        largest = attrs["largest"].i if "largest" in attrs else 1
        ok = t.kind == "ids" and len(labels) == 1 and _axis(attrs, -1) in (0, -1) and largest == 1 and t.perm == 0
        k = ins[1] if len(ins) > 1 else None
        if ok and k is not None:
            kd = k.dims if isinstance(k, ShapeVec) else None
            ok = kd is not None and len(kd) == 1 and self.same(kd[0], Sym.of(t.labels[0]))
        if not ok:
            raise _Unsupported(f"TopK (node {node.name!r}) other than sorting the sequence lengths")
        dim = Sym.of(t.labels[0])
        return t.but(perm=1), Perm(1, dim)

    def permute(self, node, t, perm, attrs):
        """Gather(x, perm) along the batch axis: the same tensor, batch-permuted."""
        axis = _axis(attrs) % len(t.labels)
        lab = self.label(t.labels[axis])
        if lab.startswith("?"):
            self.bind[lab] = "B"
        elif lab != "B":
            raise _Unsupported(f"Gather (node {node.name!r}) permuting axis {lab}, not the batch")
        return t.but(perm=t.perm + perm.power)

    def same_perm(self, node, vals):
        perms = {v.perm for v in vals if isinstance(v, Tens)}
        if len(perms) > 1:
            raise _Unsupported(f"node {node.name!r} combines tensors in different batch orders")
        return perms.pop() if perms else 0

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
        parts = [p for v in ins for p in v.parts]
        return Tens([n for n, _ in parts], ins[0].labels, "state",
                    {"D": sum(d for _, d in parts), "H": ins[0].sizes.get("H")}, parts=parts,
                    perm=self.same_perm(node, ins))

    def join(self, node, ins, mode, axis):
        """Sequences [.., F] combined on their feature axis (Concat) or elementwise (Add,
        Sub, Mul, Max, Min of equal shapes): a Join layer."""
        labels = [self.labels(v) for v in ins]
        ok = all(v.kind in ("seq", "static") and v.kind == ins[0].kind and lb == labels[0]
                 for v, lb in zip(ins, labels)) \
            and "D" not in labels[0] and labels[0][-1] in ("F", "H") and axis % len(labels[0]) == len(labels[0]) - 1
        if not ok:
            raise _Unsupported(f"{node.op_type} (node {node.name!r}) of {labels}: lstm_rt joins sequences "
                               f"or last outputs on their features")
        # features: a Dense's F, or a recurrent output's directions merged into it (D * H)
        feats = [v.sizes.get("F") or v.sizes.get("D", 1) * v.sizes["H"] for v in ins]
        name = self.unique(node.name or mode)
        layer = Join(name, mode, feats)
        self.add_node(layer, [v.name for v in ins], [name])
        return Tens(name, labels[0][:-1] + ("F",), ins[0].kind, {"F": layer.output_size},
                    perm=self.same_perm(node, ins))

    # ---- relabelling
    def squeeze(self, node, t, axes, unsqueeze):
        labels = list(t.labels)
        if unsqueeze:
            for a in sorted(axes):
                labels.insert(a % (len(labels) + 1), "1")
            return t.but(labels=labels)
        axes = [a % len(labels) for a in axes] if axes is not None else \
            [i for i, lb in enumerate(labels) if lb == "1" or (lb == "D" and t.sizes.get("D") == 1)]
        for a in axes:
            if not (labels[a] == "1" or (labels[a] == "D" and t.sizes.get("D") == 1)):
                raise _Unsupported(f"Squeeze (node {node.name!r}) of axis {labels[a]} that may not be 1")
        kept = [lb for i, lb in enumerate(labels) if i not in axes]
        if t.kind == "state" and "D" in t.labels and "D" not in kept:
            # one direction's state without its D axis (h_n.squeeze(0)): [B, H] features
            name = self.unique(node.name or "state")
            self.add_node(LastState(name, 1, t.sizes["H"]), [t.parts[0][0]], [name])
            return Tens(name, ["F" if lb == "H" else lb for lb in kept], "static", {"F": t.sizes["H"]}, perm=t.perm)
        if t.kind == "seq" and "D" in t.labels and "D" not in kept:
            kept = ["F" if lb == "H" else lb for lb in kept]
        return t.but(labels=kept)

    def slice_tensor(self, node, t, ins, attrs):
        """Slice of a runtime tensor, as opsets < 11 export indexing: states [a:b] on the
        direction axis (h_n[-1:]), and the last step y[:, -1:] of a sequence."""
        starts, ends, axes, steps = self.slice_params(node, ins, attrs)
        labels = self.labels(t)
        if len(axes) == 1 and steps[0] == 1:
            axis = axes[0] % len(labels)
            s0, e0 = starts[0], ends[0]
            if t.kind == "state" and labels[axis] == "D":
                total = sum(d for _, d in t.parts)
                picked = list(range(total))[slice(s0, e0)]
                if len(picked) == 1:
                    return self.state_index(node, t, [picked[0]], axis)
                if picked and picked == list(range(picked[0], picked[-1] + 1)):
                    parts, k = [], 0
                    for name, D in t.parts:
                        if k >= picked[0] and k + D <= picked[-1] + 1:
                            parts.append((name, D))
                        elif k <= picked[-1] and k + D > picked[0]:
                            break   # part of a bidirectional layer's pair
                        k += D
                    else:
                        return Tens([n for n, _ in parts], t.labels, "state",
                                    {"D": len(picked), "H": t.sizes["H"]}, parts=parts, perm=t.perm)
            if t.kind == "seq" and labels[axis] == "T" and s0 == -1 and e0 >= 2 ** 31 - 1:
                last = self.last_step(node, t, -1, axis)
                return last.but(labels=last.labels[:axis] + ("1",) + last.labels[axis:])
        raise _Unsupported(f"Slice (node {node.name!r}) of axes {labels}: lstm_rt reads the last step "
                           f"(y[:, -1]) or final states (h_n[k])")

    def reshape(self, node, t, target, allowzero=0):
        """Reshape of a runtime tensor: each target dim must be a run of the source's axes
        (unit axes come and go; a direction axis may merge into the features after it).
        Sizes are compared symbolically; when that fails, a target that states a batch or
        time axis as the number the exporter saw (dynamo bakes the example's length into
        time-major reshapes) is read as that axis, so lstm_rt runs any length."""
        labels = self.labels(t)
        src = self.axis_sizes(t)
        tgt = []
        for j, d in enumerate(target):
            if isinstance(d, int) and d == 0 and not allowzero and j < len(src):
                d = src[j]
            tgt.append(d)
        holes = [j for j, d in enumerate(tgt) if isinstance(d, int) and d == -1]
        if len(holes) > 1:
            raise _Unsupported(f"Reshape (node {node.name!r}) with several -1 dims")
        if holes:
            known = dim_prod([d for j, d in enumerate(tgt) if j != holes[0]])
            tgt[holes[0]] = dim_div(self.canon(dim_prod(src)), self.canon(known))   # None: not exact
        groups = self.match(src, tgt, strict=True) or self.match(src, tgt, strict=False)
        if groups is None:
            raise _Unsupported(f"Reshape (node {node.name!r}) of axes {labels} to {list(target)}: lstm_rt keeps "
                               f"time, batch and features apart")
        new, sizes = [], dict(t.sizes)
        for g in groups:
            members = [i for i in g if not (isinstance(src[i], int) and src[i] == 1)]
            if len(g) == 1:
                new.append(labels[g[0]])
            elif not members:
                new.append("1")
            elif len(members) == 1:
                new.append(labels[members[0]])
            elif [labels[i] for i in members] == ["D", "H"] and t.kind == "seq":
                new.append("F")
                sizes["F"] = t.sizes["D"] * t.sizes["H"]
            else:
                raise _Unsupported(f"Reshape (node {node.name!r}) merging axes "
                                   f"{[labels[i] for i in members]}: lstm_rt keeps time, batch and features apart")
        if t.kind == "seq" and "D" in labels and "D" not in new:
            new = ["F" if lb == "H" else lb for lb in new]
        return t.but(labels=new, sizes=sizes)

    def match(self, src, tgt, strict):
        """Groups of consecutive source axes, one per target dim (None = any), whose sizes
        multiply to it; None when there are none."""
        n, m = len(src), len(tgt)

        def one(d):
            return isinstance(d, int) and d == 1

        def fits(i, k, d):
            if d is None:
                return True
            if self.same(dim_prod(src[i:k]), d):
                return True
            if strict or not isinstance(d, int) or d <= 1:
                return False
            real = [s for s in src[i:k] if not one(s)]
            if len(real) != 1 or not isinstance(real[0], Sym):
                return False
            ex = self.example(real[0])
            return ex is None or ex == d

        def rec(i, j):
            if j == m:
                return [] if all(one(s) for s in src[i:]) else None
            for k in list(range(i + 1, n + 1)) + [i]:
                if k == i and not (tgt[j] is None or one(tgt[j])):
                    continue
                if fits(i, k, tgt[j]):
                    rest = rec(k, j + 1)
                    if rest is not None:
                        return [list(range(i, k))] + rest
            return None

        return rec(0, 0)

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
        return Tens(name, list(ids.labels) + ["F"], "seq", {"F": table.shape[1]}, perm=ids.perm)

    def last_step(self, node, t, idx, axis):
        """Gather(Y, -1) on the time axis of a forward recurrent layer's output (a classifier
        reading the last step, `y[:, -1]`): that is the layer's final h, as a LastState
        (with lengths or a mask the last step is not the final state: refused)."""
        labels = self.labels(t)
        axis %= len(labels)
        idx = np.asarray(idx)
        prod = self.producer(t)
        ok = t.kind == "seq" and labels[axis] == "T" and idx.ndim == 0 and int(idx) == -1 \
            and prod is not None and prod.layer.kind in RECURRENT and prod.layer.direction == "forward" \
            and not prod.inputs[1] and not (len(prod.inputs) > 4 and prod.inputs[4]) and "D" not in labels
        if not ok:
            what = f"step {idx.tolist()} of a sequence" if t.kind == "seq" and labels[axis] == "T" else \
                f"axis {labels[axis]} of a {t.kind} tensor"
            raise _Unsupported(f"{node.op_type} (node {node.name!r}) of {what}: lstm_rt reads the last step "
                               f"y[:, -1] of a forward layer without lengths, or a state h_n[k]")
        if not prod.outputs[1]:
            prod.outputs[1] = self.fresh(f"{prod.layer.name}/Y_h")
        name = self.unique(node.name or "last")
        H = prod.layer.output_size
        self.add_node(LastState(name, 1, H), [prod.outputs[1]], [name])
        return Tens(name, [lb for i, lb in enumerate(labels) if i != axis][:-1] + ["F"], "static", {"F": H},
                    perm=t.perm)

    def state_index(self, node, t, idx, axis):
        """Gather(h_n, k) on the direction axis of a (concatenated) state: layer k // D's
        direction k % D (h_n[-1]: the last layer's last direction). A scalar index gives its
        [B, H] features (LastState), a one-element list its one-direction state."""
        labels = self.labels(t)
        axis %= len(labels)
        idx = np.asarray(idx)
        total = sum(d for _, d in t.parts)
        if idx.size != 1 or not -total <= int(idx.reshape(-1)[0]) < total:
            raise _Unsupported(f"Gather (node {node.name!r}) of states {idx.tolist()} of {total}: lstm_rt picks "
                               f"one state (h_n[k])")
        k = int(idx.reshape(-1)[0]) % total
        for src, D in t.parts:
            if k < D:
                break
            k -= D
        H = t.sizes["H"]
        base = node.name or "state"
        if D > 1:
            sel = self.unique(f"{base}/direction{k}")
            self.add_node(SelectDirection(sel, D, k, H), [src], [sel])
            src = sel
        if idx.ndim:
            return Tens(src, labels, "state", {"D": 1, "H": H}, parts=[(src, 1)], perm=t.perm)
        name = self.unique(base)
        self.add_node(LastState(name, 1, H), [src], [name])
        rest = ["F" if lb == "H" else lb for i, lb in enumerate(labels) if i != axis]
        return Tens(name, rest, "static", {"F": H}, perm=t.perm)

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
        return Tens(name, self.labels(t)[:-1] + ("F",), t.kind, {"F": w.shape[1]}, perm=t.perm)

    def producer(self, t):
        return next((n for n in self.nodes if n.outputs and n.outputs[0] == t.name), None)

    def sole_reader(self, node, value):
        """Folding node into the layer that made `value` changes that value for every other
        reader: only when node is its one reader."""
        if self.readers.get(value, 0) > 1:
            raise _Unsupported(f"{node.op_type} (node {node.name!r}) of {value!r}, which other nodes read too: "
                               f"lstm_rt folds it into the layer before it")

    def add_bias(self, node, ins):
        t, c = (ins[0], ins[1]) if isinstance(ins[0], Tens) else (ins[1], ins[0])
        self.sole_reader(node, node.input[0] if isinstance(ins[0], Tens) else node.input[1])
        prod = self.producer(t)
        b = np.asarray(c.value, np.float32).reshape(-1)
        if prod is None or not isinstance(prod.layer, Dense) or prod.layer.bias is not None \
                or prod.layer.activation != "linear" or b.size != prod.layer.output_size:
            raise _Unsupported(f"Add (node {node.name!r}) that is not a bias after MatMul")
        d = prod.layer
        prod.layer = Dense(d.name, d.weight, b)
        return t

    def activation(self, node, t, attrs):
        self.sole_reader(node, node.input[0])
        prod = self.producer(t)
        op = node.op_type
        act = ACTIVATION_OPS[op]
        if op in ("Softmax", "LogSoftmax"):
            # opsets < 13 flatten the input to 2-D at `axis` (default 1): the last axis alone
            # only when axis is the last one
            rank = len(t.labels)
            axis = _axis(attrs, -1 if self.opset >= 13 else 1) % rank
            if axis != rank - 1:
                raise _Unsupported(f"{op} (node {node.name!r}) over axis {axis} of {rank}: lstm_rt normalizes "
                                   f"over the last (features) axis")
        if prod is None or not isinstance(prod.layer, Dense) or prod.layer.activation != "linear":
            raise _Unsupported(f"{op} (node {node.name!r}) not directly after a MatMul/Gemm: lstm_rt applies "
                               f"activations in Dense heads")
        d = prod.layer
        prod.layer = Dense(d.name, d.weight, d.bias, activation=act)
        return t

    def recurrent(self, node, ins):
        op = node.op_type
        name = self.unique(node.name or op.lower())
        consts = {k: v.value for k, v in self.vals.items() if isinstance(v, Const)}
        problems = []
        layer = _layer(node, name, consts, problems)
        for p in problems:
            self.problem(p, op)
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
        used = [x]
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
            used.append(v)
        perm = self.same_perm(node, used)
        D, H, Hr = layer.num_directions, layer.hidden_size, layer.output_size
        outs = [self.fresh(f"{name}/Y"), self.fresh(f"{name}/Y_h"), self.fresh(f"{name}/Y_c") if op == "LSTM" else None]
        self.add_node(layer, bound, outs)
        ylab = ("T", "D", "B", "H") if layout == 0 else ("B", "T", "D", "H")
        slab = ("D", "B", "H") if layout == 0 else ("B", "D", "H")
        sizes = {"D": D, "H": Hr}
        vals = [Tens(outs[0], ylab, "seq", sizes, perm=perm), Tens(outs[1], slab, "state", sizes, perm=perm)]
        if op == "LSTM":
            vals.append(Tens(outs[2], slab, "state", {"D": D, "H": H}, perm=perm))
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
        problems = []
        consts = _constants(branch, self.where, problems,
                            os.path.dirname(os.path.abspath(self.where)) if self.where != "<ModelProto>" else None)
        for p in problems:
            self.problem(p)
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
                if not info["ints"]:
                    self.problem(f"graph input {name!r} (sequence lengths) must be integers")
                inputs.append(Port(name, name, "B", "int32" if info["elem"] == 6 else "int64"))
            elif role == "state":
                if not info["floats"]:
                    self.problem(f"graph input {name!r} must be float32")
                inputs.append(Port(name, name, info["layout"]))
            else:
                lay = "".join(labels)
                want = ("TB", "BT") if info["ints"] else ("TBF", "BTF")
                if lay not in want:
                    self.problem(f"graph input {name!r}: could not tell its time and batch axes (axes {labels})")
                    continue
                if not info["ints"] and not info["floats"]:
                    self.problem(f"graph input {name!r} must be float32")
                inputs.append(Port(name, name, lay, "int64" if info["ints"] else "float32"))
        outputs = []
        for vi in graph.output:
            v = self.vals.get(vi.name)
            if not isinstance(v, Tens):
                self.problem(f"graph output {vi.name!r} is not computed by supported nodes")
                continue
            if v.perm:
                self.problem(f"graph output {vi.name!r} is left in the batch order TopK sorted it into")
                continue
            lay = "".join(self.labels(v)).replace("H", "F") if v.kind == "seq" and "D" not in v.labels \
                else "".join(self.labels(v))
            if v.kind == "state":
                ok = lay in ("DBH", "BDH") or (lay == "BH" and v.sizes.get("D") == 1)
            elif v.kind == "static":
                ok = lay == "BF"
            else:
                ok = lay in ("TBF", "BTF", "TDBH", "BTDH")
            if not ok:
                self.problem(f"graph output {vi.name!r} has axes {self.labels(v)}, which lstm_rt cannot lay out")
                continue
            outputs.append(Port(vi.name, v.name, lay, groups=v.sizes.get("D", 1) if "D" in lay and v.kind == "seq" else 1))
        return inputs, outputs


ACTIVATION_OPS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax",
                  "LogSoftmax": "log_softmax"}


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
    zeros, embeddings (Gather), dense heads (MatMul/Gemm + Add + activation), the axis
    glue around them and the shape arithmetic that computes it (symbolic batch and time),
    final states read as h_n[k] or y[:, -1], lengths in any integer type and in any order.
    Raises one ConversionError naming the unsupported ops or attributes."""
    proto, where = _load(model)
    graph = proto.graph
    it = _Interpreter(proto, where)
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > 22:
            it.problem(f"opset {imp.version} (lstm_rt knows up to 22): export with opset_version=22 or lower")
    base_dir = os.path.dirname(os.path.abspath(where)) if where != "<ModelProto>" else None
    found: list[str] = []
    consts = _constants(graph, where, found, base_dir)
    for p in found:
        it.problem(p)
    it.run_graph(graph, consts)
    inputs, outputs = it.ports(graph) if not it.problems else ([], [])
    if it.problems:
        if not any(n.op_type in RECURRENT for n in _all_nodes(graph)):
            ops = list(dict.fromkeys(n.op_type for n in _all_nodes(graph) if n.op_type != "Constant"))[:5]
            raise ConversionError(
                f"{where}: the graph has no LSTM, GRU or RNN node (its exporter unrolled the recurrence into "
                f"{', '.join(ops) or 'other ops'}): convert the source model instead (from_torch / from_keras)")
        unknown = any(t.startswith("op ") for _, t in it.problems)
        raise ConversionError(_refusal(where, it.problems, f" ({HINT_UNKNOWN})" if unknown else ""))
    if not it.nodes:
        raise ConversionError(f"{where}: the graph computes nothing lstm_rt runs (no LSTM, GRU, RNN, "
                              f"embedding or dense layer)")
    try:
        return Model(it.nodes, inputs, outputs, name=name or graph.name or "onnx_model",
                     metadata={"source": "onnx", "producer": proto.producer_name})
    except Exception as e:
        raise ConversionError(f"{where}: {e}") from None
