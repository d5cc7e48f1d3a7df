"""A model's dataflow graph: its types (Node, Port, TensorSpec) and the check that every
tensor is produced before it is read, with consistent sizes (shape inference).

A Model is a small dataflow graph: Nodes (a layer plus tensor names) in execution order,
and Ports that bind the model's external tensors to internal ones. Inside, tensors have
one canonical form each (`Graph.forms`):

    ("seq", F)      a sequence [T, B, F] float32, time-major; a recurrent layer's
                    directions are concatenated on F
    ("ids", V)      token ids [T, B] int64 in [0, V)
    ("mask", )      which steps count [T, B] uint8 (Keras masking)
    ("static", F)   a layer's last output [B, F] (no time axis)
    ("state", D, H) a recurrent state [D, B, H] float32 (D = directions)
    ("lens", )      sequence lengths [B] int32

How external tensors map onto these forms is lstm_rt.layouts' business.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .errors import ShapeError
from .layers import Layer
from .layouts import LAYOUTS, SEQ_LAYOUTS, STATE_LAYOUTS, port_shape


class _Spec(NamedTuple):
    name: str
    shape: tuple
    dtype: str


class TensorSpec(_Spec):
    """An input or output of a model: name, shape (None = dynamic) and dtype name, and
    `axes`, one letter per axis of shape: T time steps, B batch (sequences), D directions,
    F features, H units of a recurrent layer; e.g. "BTF" for batch-first sequences, "TDBH"
    for an ONNX LSTM's Y, "DBH" for a state, "B" for sequence lengths. A step's inputs and
    outputs are the sequences' without T. Token id inputs have `vocab`: ids must be in
    [0, vocab). The spec unpacks and compares as the 3-tuple (name, shape, dtype)."""

    def __new__(cls, name, shape, dtype, axes="", vocab=None):
        self = super().__new__(cls, name, tuple(shape), dtype)
        self.axes = axes
        self.vocab = vocab
        return self

    def __repr__(self):
        extra = f", vocab={self.vocab}" if self.vocab is not None else ""
        return (f"TensorSpec(name={self.name!r}, shape={self.shape!r}, dtype={self.dtype!r}, "
                f"axes={self.axes!r}{extra})")


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
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or not 1 <= self.groups < 2**31:
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


class Graph:
    """The checked graph of a model: its runtime nodes (kind, layer_class, config, core,
    inputs, outputs) and ports, with what the check finds out. Each node's layer kind checks
    its own inputs and gives the forms of its outputs (`Layer.infer`, which calls need,
    settle and link_states below); the rest is the same for every kind.

    forms         tensor -> form (see the module doc)
    state_links   node index -> [(state key, tensor)]: initial states another layer computes
                  (an encoder -> decoder inside one graph)
    time_sources  tensor -> names of the sequence inputs whose time steps it has
    lens_limits   lengths tensor -> names of the sequence inputs its layers walk
    """

    def __init__(self, nodes, inputs, outputs):
        self.nodes, self.inputs, self.outputs = nodes, inputs, outputs
        self._check()

    def _check(self):
        info = {}
        names = set()
        for p in self.inputs:
            if p.name in names:
                raise ShapeError(f"duplicate input name {p.name!r}")
            names.add(p.name)
            for t in p.tensors:
                info[t] = ("pending", p)
        self.forms = info
        seq_inputs = [p for p in self.inputs if p.is_sequence]
        if not seq_inputs:
            raise ShapeError("a model needs at least one sequence input")
        self._graph_inputs = {t for p in self.inputs for t in p.tensors}
        # initial states that an earlier layer computes (the seq2seq handoff inside one graph):
        # node index -> [(state key, tensor)], applied when the node runs
        self.state_links = {}
        recurrent_names = [n.name for n in self.nodes if n.recurrent]
        if len(set(recurrent_names)) != len(recurrent_names):
            raise ShapeError(f"recurrent layers need unique names (they key Stream.state), got {recurrent_names}")
        for n in self.nodes:
            forms = n.layer_class.infer(n, self)
            for t, form in zip(n.outputs, forms):
                if t:
                    info[t] = form
        self.time_sources = self._sequences_and_their_inputs()
        self.lens_limits = {}
        for n in self.nodes:
            if n.recurrent and n.inputs[1]:
                self.lens_limits.setdefault(n.inputs[1], set()).update(self.time_sources.get(n.inputs[0], ()))
        for p in self.inputs:
            for t in p.tensors:
                if info[t][0] == "pending":
                    if p.layout == "B":
                        info[t] = ("lens",)
                    else:
                        raise ShapeError(f"input {p.name!r} is not used by any layer")
        for p in self.outputs:
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

    # what a layer kind's `infer` uses (lstm_rt.layers) while the check walks the nodes

    def need(self, tensor, node, what: str):
        """The form of a tensor the node reads (("pending", port) for an input port that no
        layer has read yet); the tensor must be an input or an earlier layer's output."""
        if tensor not in self.forms:
            raise ShapeError(f"{node.kind} {node.name!r}: its {what} {tensor!r} is not produced "
                             f"by any earlier layer or input")
        return self.forms[tensor]

    def settle(self, tensor, form):
        """The tensor must have this form: an input port read for the first time takes it
        (if its layout fits), any other tensor must already have it."""
        cur = self.forms.get(tensor)
        if cur and cur[0] == "pending":
            port = cur[1]
            if form[0] in ("seq", "ids") and port.layout not in (("TB", "BT") if form[0] == "ids" else ("TBF", "BTF", "BF")):
                raise ShapeError(f"input {port.name!r}: layout {port.layout} does not fit a {form[0]} tensor")
            if form[0] == "state" and port.layout not in STATE_LAYOUTS:
                raise ShapeError(f"input {port.name!r}: layout {port.layout} does not fit a state")
            if form[0] == "state" and port.layout == "BH" and form[1] != 1:
                raise ShapeError(f"input {port.name!r}: layout BH needs a one-direction state")
            self.forms[tensor] = form
        elif cur != form:
            raise ShapeError(f"tensor {tensor!r}: used as {form} but it is {cur}")

    def link_states(self, node, states):
        """Record the node's initial states [(key, tensor or None)] that another layer
        computes (not the model's inputs) in state_links."""
        links = [(k, t) for k, t in states if t and t not in self._graph_inputs]
        if links:
            self.state_links[self.nodes.index(node)] = links

    def _sequences_and_their_inputs(self) -> dict:
        """tensor -> names of the sequence inputs whose time steps it has (sequence inputs may
        differ in length: an encoder's and a decoder's). The lengths a recurrent layer reads
        must fit each of its input's (a length past a layer's own input would be read as a
        loop bound)."""
        sources = {p.tensor: {p.name} for p in self.inputs if p.is_sequence}
        for n in self.nodes:
            src = set().union(*(sources.get(t, set()) for t in n.layer_class.time_inputs(n) if t))
            for t in n.outputs:
                if t and self.forms.get(t, ("",))[0] in ("seq", "ids", "mask"):
                    sources[t] = src
        return sources

    def state_form(self, p: Port):
        """("state", D summed over the port's tensors, H)."""
        forms = [self.forms[t] for t in p.tensors]
        return ("state", sum(f[1] for f in forms), forms[0][2])

    def spec(self, p: Port) -> TensorSpec:
        form = self.state_form(p) if p.layout in STATE_LAYOUTS else self.forms[p.tensor]
        vocab = form[1] if form[0] == "ids" else None
        return TensorSpec(p.name, port_shape(p.layout, form, p.groups), p.dtype, p.layout, vocab)

    def seq_port(self, name) -> Port:
        return next(p for p in self.inputs if p.name == name)
