"""Model and Stream: the public API over the Cython core.

A Model is a small dataflow graph: Nodes (a layer spec plus tensor names) in execution
order, and Ports that bind the model's external tensors to internal ones. Inside,
tensors have one canonical form each:

    sequence  [T, B, F] float32, time-major; a recurrent layer's directions are
              concatenated on F (token ids: [T, B] int64)
    state     [D, B, H] float32 (D = directions)
    lens      [B] int32

A Port's `layout` says how the external tensor's axes map onto that form:
"TBF"/"BTF" (sequences), "TB"/"BT" (token ids), "TDBH"/"BTDH" (ONNX Y, `groups` = D),
"DBH"/"BDH" (states), "B" (sequence lengths); for single-step cells "BF" (one time step,
no time axis) and "BH" (a one-direction state without its D axis). A state port may bind a
list of tensors, concatenated on D (PyTorch's h_n of stacked layers).

A Stream runs the same graph one chunk at a time, carrying each recurrent layer's state:
stepping, feeding chunks and running the whole sequence give the same numbers.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import _core
from .errors import LstmRtError, ModelFormatError, ShapeError, UnsupportedError
from .layers import GLUE_KINDS, Layer, layer_from_config, validate_config
from .packing import (OPTIONAL_PARTS, convert_packed, expected_packed_shapes, pack_layer,
                      repack_older_format, unpack_layer_weights)
from .quantize import WEIGHT_TYPES

SEQ_LAYOUTS = ("TBF", "BTF", "TB", "BT", "TDBH", "BTDH", "BF")
STATE_LAYOUTS = ("DBH", "BDH", "BH")
LAYOUTS = SEQ_LAYOUTS + STATE_LAYOUTS + ("B",)


class _Spec(NamedTuple):
    name: str
    shape: tuple
    dtype: str


class TensorSpec(_Spec):
    """An input or output of a model: name, shape (None = dynamic) and dtype name, and
    `axes`, one letter per axis of shape: T time steps, B batch (sequences), D directions,
    F features, H units of a recurrent layer; e.g. "BTF" for batch-first sequences, "TDBH"
    for an ONNX LSTM's Y, "DBH" for a state, "B" for sequence lengths. A step's inputs and
    outputs are the sequences' without T. The spec unpacks and compares as the 3-tuple
    (name, shape, dtype)."""

    def __new__(cls, name, shape, dtype, axes=""):
        self = super().__new__(cls, name, tuple(shape), dtype)
        self.axes = axes
        return self

    def __repr__(self):
        return f"TensorSpec(name={self.name!r}, shape={self.shape!r}, dtype={self.dtype!r}, axes={self.axes!r})"


@dataclass
class Port:
    """Binds an external tensor `name` to the internal tensor `tensor` (see module doc);
    state ports may bind a list of tensors, concatenated on the D axis."""
    name: str
    tensor: object
    layout: str
    dtype: str = "float32"
    groups: int = 1

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ShapeError(f"a port name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.tensor, (str, list, tuple)):
            raise ShapeError(f"port {self.name!r}: tensor must be a name or a list of names, got {self.tensor!r}")
        if self.dtype not in ("float32", "int32", "int64"):
            raise ShapeError(f"port {self.name!r}: dtype must be float32, int32 or int64, got {self.dtype!r}")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ShapeError(f"port {self.name!r}: groups must be a positive int, got {self.groups!r}")
        if self.layout not in LAYOUTS:
            raise ShapeError(f"port {self.name!r}: unknown layout {self.layout!r}; expected one of {LAYOUTS}")
        if self.layout in ("TB", "BT", "B"):
            self.dtype = self.dtype if self.dtype in ("int32", "int64") else "int64"
        if isinstance(self.tensor, (list, tuple)):
            if self.layout not in STATE_LAYOUTS or not self.tensor:
                raise ShapeError(f"port {self.name!r}: only state ports bind a list of tensors")
            self.tensor = [str(t) for t in self.tensor]

    @property
    def tensors(self) -> list:
        """The internal tensors this port binds (one, or a list concatenated on D)."""
        return list(self.tensor) if isinstance(self.tensor, list) else [self.tensor]

    @property
    def is_sequence(self) -> bool:
        return self.layout in SEQ_LAYOUTS

    def to_dict(self):
        return {"name": self.name, "tensor": self.tensor, "layout": self.layout,
                "dtype": self.dtype, "groups": self.groups}


@dataclass
class Node:
    """A layer and the internal tensor names it reads and writes.

    Recurrent layers: inputs [x, seq_lens, initial_h, initial_c, mask], outputs [y, h, c]
    (None where absent). Embedding and Dense: inputs [x], outputs [y]. Mask: inputs [x],
    outputs [mask, x']."""
    layer: Layer
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)


class _CompiledNode:
    """A node as the runtime holds it: kind, config, packed weights and its core object.
    The layer spec is rebuilt from the packed weights only when asked for."""

    def __init__(self, kind, config, packed, inputs, outputs, layer=None, weights="fp32"):
        self.kind, self.config, self.packed, self.weights = kind, config, packed, weights
        self.inputs = list(inputs) + [None] * (5 - len(inputs))
        self.outputs = list(outputs) + [None] * (3 - len(outputs))
        self._layer = layer
        self.recurrent = kind in ("LSTM", "GRU", "RNN")
        if self.recurrent:
            self.core = _core.RecurrentCore(kind, config, packed)
        elif kind == "Dense":
            self.core = _core.DenseCore(config, packed)
        elif kind == "Embedding":
            self.core = _core.EmbeddingCore(packed)
        else:
            self.core = None  # glue: numpy only

    @property
    def name(self):
        return self.config["name"]

    @property
    def layer(self) -> Layer:
        if self._layer is None:
            self._layer = layer_from_config(
                self.kind, self.config, unpack_layer_weights(self.kind, self.config, self.packed))
        return self._layer

    def state_shapes(self, batch):
        c = self.core
        shapes = {"h": (c.num_directions, batch, c.output_size)}
        if c.has_cell_state:
            shapes["c"] = (c.num_directions, batch, c.hidden_size)
        return shapes


def _as_array(name, value):
    if not isinstance(value, np.ndarray):
        raise ShapeError(f"input {name!r}: expected a numpy array, got {type(value).__name__}")
    return value


def _native_float32(name, a):
    """a as native-order float32: float32 of either byte order is accepted (a big-endian
    .npy file holds the same numbers), any other dtype is refused."""
    if a.dtype.kind != "f" or a.dtype.itemsize != 4:
        raise ShapeError(f"input {name!r}: expected dtype float32, got {a.dtype}")
    return a if a.dtype.isnative else a.astype(np.float32)


#: the largest batch (or time steps x batch) the kernels index with 32-bit ints
MAX_ROWS = 2**31 - 1


class Model:
    """A runnable network: `run` whole sequences, `stream` step by step, `save` to .lrt.

    Parameters
    ----------
    nodes : list of Node, in execution order
    inputs, outputs : list of Port
    name : str
    metadata : dict, JSON-able, stored in the model file (e.g. a vocabulary)
    """

    def __init__(self, nodes, inputs, outputs, name="model", metadata=None):
        compiled = [_CompiledNode(n.layer.kind, n.layer.config(), pack_layer(n.layer),
                                  n.inputs, n.outputs, n.layer) for n in nodes]
        self._init(compiled, list(inputs), list(outputs), name, metadata)

    def _init(self, nodes, inputs, outputs, name, metadata):
        self._nodes = nodes
        self._inputs = inputs
        self._outputs = outputs
        self.name = str(name)
        self.metadata = dict(metadata or {})
        self._closed = False
        self._life = _core.Lifetime(f"model {self.name!r} is closed")
        self._check_graph()

    # ------------------------------------------------------------ graph checks

    def _check_graph(self):
        """Every tensor is produced before it is read, with consistent sizes; fills
        self._info: tensor -> ("seq", F) | ("ids", V) | ("state", D, H) | ("lens",)."""
        info = {}
        names = set()
        for p in self._inputs:
            if p.name in names:
                raise ShapeError(f"duplicate input name {p.name!r}")
            names.add(p.name)
            for t in p.tensors:
                info[t] = ("pending", p)
        self._info = info
        seq_inputs = [p for p in self._inputs if p.is_sequence]
        if not seq_inputs:
            raise ShapeError("a model needs at least one sequence input")

        def need(tensor, node, what):
            if tensor not in info:
                raise ShapeError(f"{node.kind} {node.name!r}: its {what} {tensor!r} is not produced "
                                 f"by any earlier layer or input")
            return info[tensor]

        def settle(tensor, form):
            cur = info.get(tensor)
            if cur and cur[0] == "pending":
                port = cur[1]
                if form[0] in ("seq", "ids") and port.layout not in (("TB", "BT") if form[0] == "ids" else ("TBF", "BTF", "BF")):
                    raise ShapeError(f"input {port.name!r}: layout {port.layout} does not fit a {form[0]} tensor")
                if form[0] == "state" and port.layout not in STATE_LAYOUTS:
                    raise ShapeError(f"input {port.name!r}: layout {port.layout} does not fit a state")
                if form[0] == "state" and port.layout == "BH" and form[1] != 1:
                    raise ShapeError(f"input {port.name!r}: layout BH needs a one-direction state")
                info[tensor] = form
            elif cur != form:
                raise ShapeError(f"tensor {tensor!r}: used as {form} but it is {cur}")

        graph_inputs = {t for p in self._inputs for t in p.tensors}
        # initial states that an earlier layer computes (the seq2seq handoff inside one graph):
        # node index -> [(state key, tensor)], applied when the node runs
        self._state_links = {}
        recurrent_names = [n.name for n in self._nodes if n.recurrent]
        if len(set(recurrent_names)) != len(recurrent_names):
            raise ShapeError(f"recurrent layers need unique names (they key Stream.state), got {recurrent_names}")
        for n in self._nodes:
            x = n.inputs[0]
            if n.kind == "Embedding":
                need(x, n, "input")
                settle(x, ("ids", n.config["vocab_size"]))
                info[n.outputs[0]] = ("seq", n.config["embedding_size"])
            elif n.kind in ("Dense", "Merge"):
                need(x, n, "input")
                f_in = n.config["in_features"] if n.kind == "Dense" else n.config["features"] * n.config["parts"]
                f_out = n.config["out_features"] if n.kind == "Dense" else n.config["features"]
                cur = info[x]
                if cur[0] == "static":  # a layer's last output, [B, F]
                    if cur[1] != f_in:
                        raise ShapeError(f"{n.kind} {n.name!r} expects {f_in} features, gets {cur[1]}")
                    info[n.outputs[0]] = ("static", f_out)
                else:
                    settle(x, ("seq", f_in))
                    info[n.outputs[0]] = ("seq", f_out)
            elif n.kind == "Mask":
                need(x, n, "input")
                if n.config["mode"] == "nonzero_ids":
                    if info[x][0] != "ids":  # (an Embedding earlier in the list settles the ids)
                        raise ShapeError(f"Mask {n.name!r} expects token ids, gets {info[x]}")
                else:
                    settle(x, ("seq", n.config["features"]))
                info[n.outputs[0]] = ("mask",)
                if n.outputs[1]:
                    info[n.outputs[1]] = info[x]
            elif n.kind in ("LastState", "SelectDirection"):
                need(x, n, "input")
                D, H = n.config["directions"], n.config["hidden_size"]
                if info[x] != ("state", D, H):
                    raise ShapeError(f"{n.kind} {n.name!r} expects a state ({D}, B, {H}), gets {info[x]}")
                info[n.outputs[0]] = ("static", D * H) if n.kind == "LastState" else ("state", 1, H)
            elif n.kind == "Join":
                ins = [t for t in n.inputs if t]
                feats = n.config["features"]
                if len(ins) != len(feats):
                    raise ShapeError(f"Join {n.name!r} has {len(ins)} inputs for {len(feats)} sizes")
                kinds = set()
                for t, f in zip(ins, feats):
                    need(t, n, "input")
                    if info[t][0] == "static":
                        if info[t][1] != f:
                            raise ShapeError(f"Join {n.name!r} expects {f} features from {t!r}, gets {info[t][1]}")
                    else:
                        settle(t, ("seq", f))
                    kinds.add(info[t][0])
                if len(kinds) != 1:
                    raise ShapeError(f"Join {n.name!r} cannot join sequences with last outputs")
                out_f = sum(feats) if n.config["mode"] == "concat" else feats[0]
                info[n.outputs[0]] = (kinds.pop(), out_f)
            elif n.kind == "ReverseTime":
                need(x, n, "input")
                settle(x, ("seq", n.config["features"]))
                info[n.outputs[0]] = info[x]
            else:
                c = n.core
                D, H, Hr = c.num_directions, c.hidden_size, c.output_size
                need(x, n, "input")
                settle(x, ("seq", c.input_size))
                if n.inputs[1]:
                    need(n.inputs[1], n, "sequence lengths")
                    settle(n.inputs[1], ("lens",))
                if n.inputs[2]:
                    need(n.inputs[2], n, "initial h")
                    settle(n.inputs[2], ("state", D, Hr))
                if n.inputs[3]:
                    if not c.has_cell_state:
                        raise ShapeError(f"{n.kind} {n.name!r} has no cell state input")
                    need(n.inputs[3], n, "initial c")
                    settle(n.inputs[3], ("state", D, H))
                links = [(k, t) for k, t in (("h", n.inputs[2]), ("c", n.inputs[3]))
                         if t and t not in graph_inputs]
                if links:
                    self._state_links[self._nodes.index(n)] = links
                if n.inputs[4]:
                    if need(n.inputs[4], n, "mask") != ("mask",):
                        raise ShapeError(f"{n.kind} {n.name!r}: {n.inputs[4]!r} is not a mask")
                if n.outputs[2] and not c.has_cell_state:
                    raise ShapeError(f"{n.kind} {n.name!r} has no cell state output")
                forms = [("seq", D * Hr), ("state", D, Hr), ("state", D, H)]
                for t, form in zip(n.outputs, forms):
                    if t:
                        info[t] = form
        self._lens_limits = self._lengths_and_their_inputs()
        for p in self._inputs:
            for t in p.tensors:
                if info[t][0] == "pending":
                    if p.layout == "B":
                        info[t] = ("lens",)
                    else:
                        raise ShapeError(f"input {p.name!r} is not used by any layer")
        for p in self._outputs:
            for t in p.tensors:
                if t not in info:
                    raise ShapeError(f"output {p.name!r}: tensor {t!r} is not produced by any layer")
            forms = [info[t] for t in p.tensors]
            form = forms[0]
            ok = {"seq": ("TBF", "BTF", "TDBH", "BTDH", "BF"), "state": STATE_LAYOUTS,
                  "static": ("BF",)}.get(form[0], ())
            if p.layout not in ok:
                raise ShapeError(f"output {p.name!r}: layout {p.layout} does not fit a {form[0]} tensor")
            if len(forms) > 1 and any(f[0] != "state" or f[2] != form[2] for f in forms):
                raise ShapeError(f"output {p.name!r}: concatenated states must share their size")
            if p.layout == "BH" and form[1] != 1:
                raise ShapeError(f"output {p.name!r}: layout BH needs a one-direction state")
            if p.layout in ("TDBH", "BTDH") and form[1] % p.groups:
                raise ShapeError(f"output {p.name!r}: {form[1]} features do not split into {p.groups} groups")

    def _lengths_and_their_inputs(self) -> dict:
        """lengths tensor -> names of the sequence inputs whose time steps the recurrent layers
        reading those lengths walk: each length must fit every one of them (sequence inputs may
        differ in length, and a length past a layer's own input would be read as a loop bound)."""
        sources = {p.tensor: {p.name} for p in self._inputs if p.is_sequence}
        limits = {}
        for n in self._nodes:
            if n.kind in ("LastState", "SelectDirection"):
                continue   # their outputs are states or last outputs: no time axis
            src = set().union(*(sources.get(t, set()) for t in n.inputs if t))
            for t in n.outputs:
                if t:
                    sources[t] = src
            if n.recurrent and n.inputs[1]:
                limits.setdefault(n.inputs[1], set()).update(sources.get(n.inputs[0], set()))
        return limits

    # ------------------------------------------------------------- public info

    def _check_open(self):
        if self._closed:
            raise LstmRtError(f"model {self.name!r} is closed")

    @property
    def layers(self) -> list[Layer]:
        """The layer specs, in execution order."""
        self._check_open()
        return [n.layer for n in self._nodes]

    def _state_form(self, p: Port):
        """("state", D summed over the port's tensors, H)."""
        forms = [self._info[t] for t in p.tensors]
        return ("state", sum(f[1] for f in forms), forms[0][2])

    def _spec(self, p: Port) -> TensorSpec:
        form = self._state_form(p) if p.layout in STATE_LAYOUTS else self._info[p.tensor]
        T, B = None, None
        if p.layout == "TBF":
            shape = (T, B, form[1])
        elif p.layout == "BTF":
            shape = (B, T, form[1])
        elif p.layout in ("TB", "BT"):
            shape = (T, B) if p.layout == "TB" else (B, T)
        elif p.layout == "TDBH":
            shape = (T, p.groups, B, form[1] // p.groups)
        elif p.layout == "BTDH":
            shape = (B, T, p.groups, form[1] // p.groups)
        elif p.layout == "DBH":
            shape = (form[1], B, form[2])
        elif p.layout == "BDH":
            shape = (B, form[1], form[2])
        elif p.layout == "BH":
            shape = (B, form[2])
        elif p.layout == "BF":
            shape = (B, form[1])
        else:
            shape = (B,)
        return TensorSpec(p.name, shape, p.dtype, p.layout)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [self._spec(p) for p in self._inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [self._spec(p) for p in self._outputs]

    def __repr__(self):
        kinds = " -> ".join(f"{n.kind}({n.name})" for n in self._nodes)
        return f"<lstm_rt.Model {self.name!r}: {kinds}>"

    # ------------------------------------------------------------ feeds

    def _bind_feeds(self, x, *, streaming: bool):
        """dict of external name -> array, validated; a bare array binds the only sequence input."""
        self._check_open()
        f = getattr(self, "_file", None)
        if f is not None:
            f.check_unchanged()
        if isinstance(x, dict):
            feeds = dict(x)
            known = {p.name for p in self._inputs}
            unknown = set(feeds) - known
            if unknown:
                raise ShapeError(f"unknown input(s) {sorted(unknown)}; the model's inputs are {sorted(known)}")
        else:
            seq = [p for p in self._inputs if p.is_sequence]
            if len(seq) != 1:
                raise ShapeError(f"this model has {len(seq)} sequence inputs "
                                 f"({[p.name for p in seq]}): pass a dict")
            feeds = {seq[0].name: x}
        for p in self._inputs:
            if p.is_sequence and p.name not in feeds:
                raise ShapeError(f"missing input {p.name!r}")
            if streaming and not p.is_sequence and p.name in feeds:
                what = "set Stream.state instead" if p.layout in STATE_LAYOUTS else \
                    "a stream's sequences have no fixed length"
                raise ShapeError(f"input {p.name!r} cannot be fed to a stream: {what}")
        return feeds

    def _to_internal(self, feeds, *, time_axis: bool):
        """External arrays -> internal tensors; returns (env, T, B)."""
        env, T, B = {}, None, None

        def agree(name, what, have, got):
            if have is not None and have != got:
                raise ShapeError(f"input {name!r}: {what} is {got} but other inputs say {have}")
            return got

        for p in self._inputs:
            if p.name not in feeds or not p.is_sequence:
                continue
            a = _as_array(p.name, feeds[p.name])
            form = self._info[p.tensor]
            if p.layout in ("TBF", "BTF", "TB", "BT", "BF"):
                ids = form[0] == "ids"
                step = not time_axis or p.layout == "BF"
                rank = (2 if ids else 3) - (1 if step else 0)
                if a.ndim != rank:
                    expect = p.layout if time_axis else p.layout.replace("T", "")
                    raise ShapeError(f"input {p.name!r}: expected rank {rank} ({expect}), got shape {a.shape}")
                if ids:
                    if a.dtype.kind not in "iu":
                        raise ShapeError(f"input {p.name!r}: token ids must be integers, got dtype {a.dtype}")
                    if a.size and (a.min() < 0 or a.max() >= form[1]):
                        raise ShapeError(f"input {p.name!r}: token ids must be in [0, {form[1]}), "
                                         f"got values in [{a.min()}, {a.max()}]")
                    a = a.astype(np.int64, copy=False)
                else:
                    a = _native_float32(p.name, a)
                    if a.shape[-1] != form[1]:
                        raise ShapeError(f"input {p.name!r}: expected {form[1]} features on the last axis, "
                                         f"got shape {a.shape}")
                if step:
                    a = a[None]
                elif p.layout[0] == "B":
                    a = np.swapaxes(a, 0, 1)
                # sequence inputs may differ in length (an encoder's and a decoder's inputs);
                # T, used to check lengths, is the longest
                T = a.shape[0] if T is None else max(T, a.shape[0])
                B = agree(p.name, "the batch size", B, a.shape[1])
                env[p.tensor] = np.ascontiguousarray(a)
        if T is not None and T * B > MAX_ROWS:
            raise ShapeError(f"{T} time steps x {B} sequences is more rows than the kernels index "
                             f"({MAX_ROWS}); run the sequences in several calls")
        for p in self._inputs:
            if p.name not in feeds or p.is_sequence:
                continue
            a = _as_array(p.name, feeds[p.name])
            if p.layout == "B":
                if a.ndim != 1 or a.dtype.kind not in "iu":
                    raise ShapeError(f"input {p.name!r}: expected a 1-d integer array of lengths, got "
                                     f"shape {a.shape} dtype {a.dtype}")
                B = agree(p.name, "the batch size", B, a.shape[0])
                for src in sorted(self._lens_limits.get(p.tensor, ())):
                    t_src = env[self._seq_port(src).tensor].shape[0] if src in feeds else T
                    if a.size and (a.min() < 0 or a.max() > t_src):
                        raise ShapeError(f"input {p.name!r}: lengths must be in [0, {t_src}] (the "
                                         f"time steps of input {src!r}), got values in "
                                         f"[{a.min()}, {a.max()}]")
                # a copy: the kernels read the lengths after this check, and the caller's array
                # could change in between (another thread)
                env[p.tensor] = np.array(a, dtype=np.int32)
            else:
                a = _native_float32(p.name, a)
                _, D, H = self._state_form(p)
                want = {"DBH": (D, B, H), "BDH": (B, D, H), "BH": (B, H)}[p.layout]
                if a.shape != want:
                    raise ShapeError(f"input {p.name!r}: expected shape {want} ({p.layout}), got {a.shape}")
                a = a[None] if p.layout == "BH" else a if p.layout == "DBH" else np.swapaxes(a, 0, 1)
                d0 = 0
                for t in p.tensors:  # a list of tensors splits on D
                    d = self._info[t][1]
                    env[t] = np.ascontiguousarray(a[d0:d0 + d])
                    d0 += d
        return env, T, B

    def _seq_port(self, name) -> Port:
        return next(p for p in self._inputs if p.name == name)

    def _to_external(self, env, *, time_axis: bool, single: bool):
        out = {}
        for p in self._outputs:
            a = env[p.tensor] if not isinstance(p.tensor, list) else np.concatenate([env[t] for t in p.tensor])
            if p.layout == "BF" and self._info[p.tensors[0]][0] == "static":
                pass
            elif p.layout == "BF":
                if a.shape[0] != 1:
                    raise ShapeError(f"output {p.name!r} is a single step but {a.shape[0]} steps were run")
                a = a[0]
            elif p.layout == "BH":
                a = a[0]
            elif p.layout in ("TBF", "BTF", "TDBH", "BTDH"):
                T, B, F = a.shape
                if p.layout == "TDBH":
                    a = a.reshape(T, B, p.groups, F // p.groups).transpose(0, 2, 1, 3)
                elif p.layout == "BTDH":
                    a = a.reshape(T, B, p.groups, F // p.groups)
                # a's axis 0 is time here
                if not time_axis:
                    a = a[0]
                elif p.layout[0] == "B":
                    a = np.swapaxes(a, 0, 1)
            elif p.layout == "BDH":
                a = np.swapaxes(a, 0, 1)
            out[p.name] = np.ascontiguousarray(a)
        if single and len(out) == 1:
            return next(iter(out.values()))
        return out

    # ------------------------------------------------------------ execution

    def _execute(self, nodes, env, T, B, states, ws):
        """Run every node (`nodes`: this model's, read once by the caller, so a close()
        during the run does not pull them away). states: node index -> {"h": [D,B,Hr],
        "c": ...}, updated in place."""
        for i, n in enumerate(nodes):
            x = env[n.inputs[0]]
            if n.kind == "Embedding":
                env[n.outputs[0]] = n.core.lookup(x.reshape(-1)).reshape(
                    x.shape[0], x.shape[1], n.config["embedding_size"])
            elif n.kind == "Dense":
                lead = x.shape[:-1]  # (T, B) for sequences, (B,) for last outputs
                y = np.empty(lead + (n.core.out_features,), np.float32)
                n.core.run(np.ascontiguousarray(x).reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), ws)
                env[n.outputs[0]] = y
            elif n.kind == "Merge":
                parts = np.split(x, n.config["parts"], axis=-1)
                mode = n.config["mode"]
                y = parts[0].copy()
                for part in parts[1:]:
                    y = y * part if mode == "mul" else y + part
                env[n.outputs[0]] = y / n.config["parts"] if mode == "ave" else y
            elif n.kind == "Mask":
                if n.config["mode"] == "nonzero_ids":
                    env[n.outputs[0]] = np.ascontiguousarray(x != 0, dtype=np.uint8)
                    if n.outputs[1]:
                        env[n.outputs[1]] = x
                else:
                    keep = np.any(x != n.config["value"], axis=-1)
                    env[n.outputs[0]] = np.ascontiguousarray(keep, dtype=np.uint8)
                    if n.outputs[1]:
                        env[n.outputs[1]] = np.ascontiguousarray(x * keep[..., None], dtype=np.float32)
            elif n.kind == "LastState":
                env[n.outputs[0]] = np.ascontiguousarray(np.concatenate(list(x), axis=-1))
            elif n.kind == "SelectDirection":
                d = n.config["direction"]
                env[n.outputs[0]] = np.ascontiguousarray(x[d:d + 1])
            elif n.kind == "ReverseTime":
                env[n.outputs[0]] = np.ascontiguousarray(x[::-1])
            elif n.kind == "Join":
                xs = [env[t] for t in n.inputs if t]
                if len({a.shape[:-1] for a in xs}) != 1:
                    raise ShapeError(f"Join {n.name!r}: its inputs differ in time steps or batch: "
                                     f"{[a.shape[:-1] for a in xs]}")
                mode = n.config["mode"]
                if mode == "concat":
                    y = np.concatenate(xs, axis=-1)
                elif mode == "sub":
                    y = xs[0] - xs[1]
                else:
                    f = {"sum": np.add, "ave": np.add, "mul": np.multiply, "max": np.maximum,
                         "min": np.minimum}[mode]
                    y = functools.reduce(f, xs)
                    if mode == "ave":
                        y = y / np.float32(len(xs))
                env[n.outputs[0]] = np.ascontiguousarray(y, dtype=np.float32)
            else:
                st = states[i]
                for key, t in self._state_links.get(i, ()):
                    st[key][...] = env[t]
                lens = env.get(n.inputs[1]) if n.inputs[1] else None
                c = n.core
                y = np.empty((x.shape[0], B, c.num_directions * c.output_size), np.float32) \
                    if n.outputs[0] else None
                mask = env[n.inputs[4]] if n.inputs[4] else None
                c.run(x, lens, st["h"], st.get("c"), y, ws, mask)
                for t, key in ((n.outputs[0], None), (n.outputs[1], "h"), (n.outputs[2], "c")):
                    if t:
                        env[t] = y if key is None else st[key].copy()
        return env

    def _initial_states(self, env, B, nodes=None):
        states = {}
        for i, n in enumerate(self._nodes if nodes is None else nodes):
            if not n.recurrent:
                continue
            st = {k: np.zeros(s, np.float32) for k, s in n.state_shapes(B).items()}
            for key, t in (("h", n.inputs[2]), ("c", n.inputs[3])):
                if t and t in env:
                    st[key][...] = env[t]
            states[i] = st
        return states

    def run(self, x):
        """Run whole sequences.

        x : array (the model's only sequence input, e.g. [T, B, I] float32) or a dict of
            arrays keyed by input name. Optional inputs (lengths, initial states) may be
            left out: lengths default to the full T, states to zeros.
        Returns one array when the model has one output, else a dict keyed by output name.
        """
        nodes = self._nodes
        feeds = self._bind_feeds(x, streaming=False)
        env, T, B = self._to_internal(feeds, time_axis=True)
        states = self._initial_states(env, B, nodes)
        self._execute(nodes, env, T, B, states, _core.Workspace())
        return self._to_external(env, time_axis=True, single=not isinstance(x, dict))

    def stream(self, batch: int = 1) -> "Stream":
        """A Stream of `batch` independent sequences, starting from zero state."""
        self._check_open()
        f = getattr(self, "_file", None)
        if f is not None:
            f.check_unchanged()
        return Stream(self, batch)

    # ------------------------------------------------------------ files

    @property
    def weights(self) -> str:
        """How the weight matrices are stored: "fp32", "fp16", "int8" (or "mixed")."""
        self._check_open()
        kinds = {n.weights for n in self._nodes}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def quantized(self, weights: str = "int8") -> "Model":
        """The same model with its weight matrices and embedding tables stored as fp16 or
        int8 (int8: symmetric, one scale per output row / embedding row; activations meet
        int8 weights as int16, quantized per row inside the kernels). Biases and peepholes
        stay fp32."""
        self._check_open()
        if weights not in WEIGHT_TYPES:
            raise ShapeError(f"weights must be one of {WEIGHT_TYPES}, got {weights!r}")
        nodes = []
        for n in self._nodes:
            if n.weights != "fp32" and weights != n.weights:
                raise UnsupportedError(f"{n.kind} {n.name!r} is already {n.weights}; "
                                       f"quantize from the fp32 model")
            packed = convert_packed(n.kind, n.config, n.packed, weights) if n.weights == "fp32" else n.packed
            nodes.append(_CompiledNode(n.kind, n.config, packed, n.inputs, n.outputs, weights=weights))
        m = Model.__new__(Model)
        m._init(nodes, list(self._inputs), list(self._outputs), self.name, self.metadata)
        return m

    def close(self):
        """Release the model: every method of it and of its Streams raises LstmRtError from
        now on, and its memory (or file mapping) is freed once no call in flight uses it."""
        self._closed = True
        self._life.close()     # streams' C step paths check this flag
        self._nodes = []       # rebinding, not clearing: a run in flight keeps its own list
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def save(self, path, weights: str | None = None):
        """Write the model to a .lrt file. weights: None keeps the model's storage; "fp32",
        "fp16" or "int8" converts first (from an fp32 model)."""
        self._check_open()
        model = self if weights is None or weights == self.weights else self.quantized(weights)
        model._save(path)

    def _save(self, path):
        from .fileformat import write_lrt
        write_lrt(os.fspath(path), *self._file_content())

    def to_bytes(self) -> bytes:
        """The model as the bytes of a .lrt file (what `save` writes); `lstm_rt.load_bytes`
        reads them back. This is how a Model pickles: as data, checked on arrival like a
        file, never as code."""
        from .fileformat import lrt_bytes
        self._check_open()
        return lrt_bytes(*self._file_content())

    def __reduce__(self):
        return (load_bytes, (self.to_bytes(),))

    def _file_content(self):
        """(meta, tensors) of the model file."""
        tensors, nodes = {}, []
        for i, n in enumerate(self._nodes):
            parts = {}
            for part, arr in n.packed.items():
                key = f"{i}/{part}"
                tensors[key] = arr
                parts[part] = key
            nodes.append({"kind": n.kind, "config": n.config, "weights": n.weights,
                          "inputs": n.inputs, "outputs": n.outputs, "tensors": parts})
        meta = {"name": self.name, "metadata": self.metadata, "nodes": nodes,
                "inputs": [p.to_dict() for p in self._inputs],
                "outputs": [p.to_dict() for p in self._outputs]}
        return meta, tensors

    @classmethod
    def _from_file(cls, path, mmap=False) -> "Model":
        from .fileformat import read_lrt
        return cls._from_content(os.fspath(path), *read_lrt(os.fspath(path), mmap=mmap))

    @classmethod
    def _from_content(cls, path, meta, tensors, handle) -> "Model":
        try:
            nodes = []
            for rec in meta["nodes"]:
                kind, config = rec["kind"], rec["config"]
                packed = {part: tensors[key] for part, key in rec["tensors"].items()}
                weights = rec.get("weights", "fp32")
                packed = repack_older_format(kind, config, weights, packed, handle.version)
                _check_packed(kind, config, packed, weights)
                nodes.append(_CompiledNode(kind, config, packed, rec["inputs"], rec["outputs"],
                                           weights=weights))
            ports = [[Port(**p) for p in meta[k]] for k in ("inputs", "outputs")]
            model = cls.__new__(cls)
            model._init(nodes, ports[0], ports[1], meta["name"], meta["metadata"])
        except LstmRtError as e:
            raise ModelFormatError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise ModelFormatError(f"{path}: malformed model description ({type(e).__name__}: {e})") from None
        model._file = handle
        return model


def _check_packed(kind, config, packed, weights):
    """A file's packed arrays must have exactly the shapes and dtypes its config implies."""
    if kind not in ("LSTM", "GRU", "RNN", "Dense", "Embedding") + GLUE_KINDS:
        raise ModelFormatError(f"unknown layer kind {kind!r}")
    if weights not in WEIGHT_TYPES:
        raise ModelFormatError(f"{kind} {config.get('name')!r}: unknown weight type {weights!r}")
    validate_config(kind, config)
    expected = expected_packed_shapes(kind, config, weights)
    for part, (shape, dtype) in expected.items():
        arr = packed.get(part)
        if arr is None:
            if part in OPTIONAL_PARTS or part.split(".", 1)[-1] in OPTIONAL_PARTS:
                continue
            raise ModelFormatError(f"{kind} {config.get('name')!r}: missing weights {part!r}")
        if tuple(arr.shape) != shape or arr.dtype != np.dtype(dtype):
            raise ModelFormatError(f"{kind} {config.get('name')!r}: weights {part!r} have shape "
                                   f"{tuple(arr.shape)} {arr.dtype}, expected {shape} {dtype}")
    extra = set(packed) - set(expected)
    if extra:
        raise ModelFormatError(f"{kind} {config.get('name')!r}: unexpected weights {sorted(extra)}")


class Stream:
    """Step-by-step inference over `batch` sequences, carrying the recurrent state.

    step(x_t) takes the inputs of exactly one time step (the sequence inputs without
    their time axis, e.g. [B, I]); feed(xs) takes a chunk with its time axis. Both return
    what `Model.run` returns for those steps; state outputs (e.g. Y_h) are the state
    after the call. Stepping, feeding in any chunks and running the whole sequence agree.

    A Stream may be shared between threads: its calls are serialized by a lock, so each
    step is atomic (the order of steps from different threads is whatever the threads make
    it). For parallel work, give each thread its own Stream of the shared Model.
    """

    def __init__(self, model: Model, batch: int = 1):
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 1 <= batch <= MAX_ROWS:
            raise ShapeError(f"batch must be a positive integer <= {MAX_ROWS}, got {batch!r}")
        model._check_open()
        nodes = model._nodes
        for n in nodes:
            if n.recurrent and n.config["direction"] != "forward":
                raise UnsupportedError(
                    f"{n.kind} {n.name!r} is {n.config['direction']}: its backward direction starts "
                    f"from the last time step, so it needs the whole sequence and cannot stream; "
                    f"use Model.run")
            if n.kind == "ReverseTime":
                raise UnsupportedError(f"ReverseTime {n.name!r} reorders the whole sequence: it "
                                       f"cannot stream; use Model.run")
        if model._state_links:
            names = [model._nodes[i].name for i in model._state_links]
            raise UnsupportedError(
                f"layers {names} start from states that other layers compute over a whole sequence "
                f"(an encoder -> decoder graph), so the graph cannot stream as one: use Model.run, or "
                f"stream the encoder and the decoder as two models and hand the state over with "
                f"Stream.take_state")
        self.model = model
        self.batch = int(batch)
        self._nodes = nodes
        self._ws = _core.Workspace()
        try:
            self._states = model._initial_states({}, self.batch, nodes)
        except MemoryError:
            raise LstmRtError(f"batch {batch}: not enough memory for the state of "
                              f"{self.batch} streams") from None
        self._bind_chain()

    def _check_open(self):
        self.model._check_open()

    def __reduce__(self):
        raise LstmRtError("a Stream does not pickle: send the Model (it pickles as its .lrt "
                          "bytes) and the stream's state (Stream.state, a dict of arrays), then "
                          "`s = model.stream(batch); s.state = state` on the other side")

    def _bind_chain(self):
        """(Re)build the one-call step path over the current state arrays. One lock
        serializes steps and state access; a chain carries its own (a C lock)."""
        self._chain = self._chain_step()
        self._lock = self._chain if self._chain is not None else threading.Lock()
        self.__dict__.pop("step", None)
        if self._chain is not None and self._chain_plain:
            # the hot path without a Python frame: an array goes straight to the chain,
            # anything else (a dict of inputs, a wrong type) through Stream.step below
            self._chain.fallback = functools.partial(Stream.step, self)
            self.step = self._chain.locked_step

    def _chain_step(self):
        """The one-call step path (_core.ChainStep) when the model is a plain chain: one
        sequence input, each layer reading the previous one's sequence output; outputs are
        the last sequence output and/or the chain's recurrent states (an ONNX node's Y, Y_h,
        Y_c). Other graphs take the general path. Sets self._chain_out: per output port,
        None (the step's result) or (node index, "h" | "c")."""
        m = self.model
        seq_in = [p for p in m._inputs if p.is_sequence]
        if len(seq_in) != 1:
            return None
        cores, states, tensor, state_of = [], [], seq_in[0].tensor, {}
        for i, n in enumerate(self._nodes):
            if n.inputs[0] != tensor or any(n.inputs[1:]) or (n.kind == "Embedding" and i) \
                    or n.kind not in ("LSTM", "GRU", "RNN", "Dense", "Embedding"):
                return None
            tensor = n.outputs[0]
            if n.recurrent:
                for key, t in zip(("h", "c"), n.outputs[1:3]):
                    if t:
                        state_of[t] = (i, key)
                states.append((self._states[i]["h"], self._states[i].get("c")))
            else:
                states.append(None)
            cores.append(n.core)
        self._chain_out = []
        for p in m._outputs:
            if p.tensor == tensor and p.layout in ("TBF", "BTF", "BF", "TDBH", "BTDH"):
                self._chain_out.append(None)
            elif not isinstance(p.tensor, list) and p.tensor in state_of and p.layout in STATE_LAYOUTS:
                self._chain_out.append(state_of[p.tensor])
            else:
                return None
        self._chain_seq = seq_in[0].name
        # the common case, one output that is the step's result as is: no re-layout at all
        self._chain_plain = self._chain_out == [None] and m._outputs[0].layout not in ("TDBH", "BTDH")
        in_f = m._info[seq_in[0].tensor][1]
        return _core.ChainStep(cores, states, self.batch, in_f, m._life)

    def _chain_result(self, y, dict_in):
        """The ChainStep's y [B, F] and the states, laid out as the model's outputs."""
        m, out = self.model, {}
        for p, src in zip(m._outputs, self._chain_out):
            if src is None:
                a = y if p.layout not in ("TDBH", "BTDH") else y.reshape(self.batch, p.groups, -1)
                if p.layout == "TDBH":
                    a = np.ascontiguousarray(a.transpose(1, 0, 2))
            else:
                a = self._states[src[0]][src[1]].copy()
                a = a[0] if p.layout == "BH" else np.ascontiguousarray(np.swapaxes(a, 0, 1)) \
                    if p.layout == "BDH" else a
            out[p.name] = a
        if not dict_in and len(out) == 1:
            return next(iter(out.values()))
        return out

    def reset(self):
        """Back to zero state, as a fresh stream."""
        self._check_open()
        with self._lock:
            for st in self._states.values():
                for a in st.values():
                    a.fill(0.0)

    def _run(self, x, time_axis):
        m = self.model
        feeds = m._bind_feeds(x, streaming=True)
        env, T, B = m._to_internal(feeds, time_axis=time_axis)
        if B != self.batch:
            raise ShapeError(f"this stream has batch {self.batch}, got inputs with batch {B}")
        with self._lock:
            m._execute(self._nodes, env, T, B, self._states, self._ws)
        return m._to_external(env, time_axis=time_axis, single=not isinstance(x, dict))

    def step(self, x_t):
        """One time step: x_t [B, I] (or a dict). Returns the outputs of that step."""
        self._check_open()
        if self._chain is not None:
            if not isinstance(x_t, dict):
                with self._lock:
                    if self._chain_plain:
                        return self._chain.step(x_t)
                    return self._chain_result(self._chain.step(x_t), False)
            if len(x_t) == 1 and self._chain_seq in x_t:
                with self._lock:
                    return self._chain_result(self._chain.step(x_t[self._chain_seq]), True)
        return self._run(x_t, time_axis=False)

    def feed(self, xs):
        """A chunk of time steps, laid out as for Model.run (e.g. [T, B, I])."""
        return self._run(xs, time_axis=True)

    @property
    def state(self) -> dict:
        """A copy of the recurrent state: {"<layer>/h": [D, B, Hr], "<layer>/c": [D, B, H]}."""
        self._check_open()
        out = {}
        with self._lock:
            for i, st in self._states.items():
                for k, v in st.items():
                    out[f"{self._nodes[i].name}/{k}"] = v.copy()
        return out

    @state.setter
    def state(self, value: dict):
        current = self.state
        if not isinstance(value, dict) or set(value) != set(current):
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise ShapeError(f"state must be a dict with keys {sorted(current)}, got {got}")
        value = {key: _native_float32(f"state {key}", np.asarray(arr)) for key, arr in value.items()}
        for key, arr in value.items():
            if arr.shape != current[key].shape:
                raise ShapeError(f"state {key!r}: expected {current[key].shape} float32, "
                                 f"got {arr.shape} {arr.dtype}")
        with self._lock:
            for i, st in self._states.items():
                for k in st:
                    st[k][...] = value[f"{self._nodes[i].name}/{k}"]

    def take_state(self, other: "Stream"):
        """Continue from another stream's state (the seq2seq handoff: an encoder's final
        state becomes the decoder's initial state). The two models' recurrent layers pair up
        in order and must have the same state shapes; this stream's state is overwritten."""
        if not isinstance(other, Stream):
            raise ShapeError(f"take_state needs a Stream, got {type(other).__name__}")
        self._check_open()
        if other is self:
            return
        mine, theirs = list(self._states.items()), list(other._states.items())
        names = lambda s, items: [s._nodes[i].name for i, _ in items]  # noqa: E731
        if len(mine) != len(theirs):
            raise ShapeError(f"take_state: this stream has {len(mine)} recurrent layers "
                             f"{names(self, mine)}, the other {len(theirs)} {names(other, theirs)}")
        for (i, st), (j, src) in zip(mine, theirs):
            a, b = self._nodes[i], other._nodes[j]
            shapes = {k: v.shape for k, v in st.items()}
            if shapes != {k: v.shape for k, v in src.items()}:
                raise ShapeError(f"take_state: {a.kind} {a.name!r} has state {shapes}, but {b.kind} "
                                 f"{b.name!r} has { {k: v.shape for k, v in src.items()} }")
        # a snapshot under the other stream's lock, then a write under ours: never both
        # locks at once, so a.take_state(b) and b.take_state(a) in two threads cannot deadlock
        snapshot = list(other.state.values())
        with self._lock:
            for dst, src in zip((a for _, st in mine for a in st.values()), snapshot):
                dst[...] = src

    def fork(self) -> "Stream":
        """An independent copy of this stream, state included."""
        s = Stream(self.model, self.batch)
        s.state = self.state
        return s


def load(path, *, mmap: bool = False) -> Model:
    """Load a model. A .lrt file is read into memory once (default), so the model never
    depends on the file again: replacing or truncating the file while the model is in use
    is safe. mmap=True maps the file instead (no copy; pages shared between processes):
    the file must then not be modified in place while the model is alive (write a new file
    and rename it over the old one, as Model.save does). .onnx, .keras, .h5 and .pt files
    are converted on the fly when the converters' dependencies are installed."""
    p = os.fspath(path)
    if p.lower().endswith(".lrt"):
        return Model._from_file(p, mmap=bool(mmap))
    if not os.path.exists(p):
        raise FileNotFoundError(p)
    try:
        import converters
    except ImportError:
        raise LstmRtError(f"{p}: converting this file needs the converters package "
                          f"(pip install 'lstm_rt[onnx]')") from None
    return converters.convert(p)


def load_bytes(data) -> Model:
    """A Model from the bytes of a .lrt file (Model.to_bytes), checked exactly like a file:
    magic, version, checksum, every offset and shape."""
    from .fileformat import read_lrt_bytes
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelFormatError(f"load_bytes needs bytes, got {type(data).__name__}")
    return Model._from_content("<bytes>", *read_lrt_bytes(data))
