"""Compile a model's graph once into a plan: numbered buffers and a list of operations over
them, which `_core.Executor` runs in one call without the GIL (lrt_plan.c).

Model.run, Stream.step, Stream.feed and StreamPool all execute the same plan, so stepping,
feeding chunks and running whole sequences compute the same numbers by construction.

Buffers are one per tensor of the graph, except where two tensors are the same data: a
recurrent layer's h and c outputs are its state buffers, and a token mask's pass-through
output is its input. A sequence buffer belongs to a *time slot*: the sequence input whose
time steps it has (an encoder and a decoder inside one graph read inputs of different
lengths). Initial states reach a layer's state buffers through COPY_STATE operations,
which skip inputs that were not given (a stream's state then carries on).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Buffer:
    """One buffer of a plan: kind "seq" | "ids" | "mask" | "lens" | "static" | "state",
    width F (H for states), dirs D (states), time slot (sequences, ids, masks), whether a
    feed binds it (`input`), and the vocabulary size of token ids."""
    tensor: str
    kind: str
    width: int = 1
    dirs: int = 1
    slot: int = -1
    input: bool = False
    vocab: int = 0


@dataclass
class Op:
    """One operation: kind (a name of `_core.OP_KINDS`), its buffers and sizes (fields of
    lrt_op in lrt_plan.h) and the weights core it runs, for messages the node's name."""
    kind: str
    name: str
    core: object = None
    fields: dict = field(default_factory=dict)


@dataclass
class Output:
    """How an output port is built: its layout and buffers (state ports: one per tensor
    concatenated on D), the feature groups of an ONNX Y (TDBH / BTDH)."""
    name: str
    layout: str
    buffers: list
    groups: int = 1


@dataclass
class Program:
    buffers: list
    ops: list
    slots: list                 # per time slot: the name of its sequence input
    inputs: dict                # input port name -> [buffer index] (state ports: one per tensor)
    outputs: list               # [Output]
    states: list                # [(key "<layer>/h", buffer index)], the recurrent states in order
    join_slots: list            # [(layer name, {slots})]: sequences joined must agree on T
    step_input: int = -1        # the one sequence input's buffer, for Stream.step fast paths

    def state_shapes(self, batch: int) -> dict:
        return {key: (self.buffers[b].dirs, batch, self.buffers[b].width) for key, b in self.states}


def compile_plan(graph) -> Program:
    """The plan of a checked lstm_rt.graph.Graph (its runtime nodes carry their cores):
    each node's layer kind adds its operations (`Layer.plan`, lstm_rt.layers)."""
    plan = PlanBuilder(graph)
    for n in graph.nodes:
        n.layer_class.plan(n, plan)
    return plan.program()


class PlanBuilder:
    """A plan being compiled: what a layer kind's `plan` calls to name buffers and add its
    operations."""

    def __init__(self, graph):
        self.graph = graph
        self.slots = [p.name for p in graph.inputs if p.is_sequence]
        self.buffers, self.buf_of = [], {}
        self.ops, self.states, self.join_slots = [], [], []
        for p in graph.inputs:
            for t in p.tensors:
                self.buffer(t, is_input=True)

    def slot_of(self, tensor) -> int:
        """The time slot of a tensor: the first sequence input whose time steps it has (-1:
        none, no time axis)."""
        src = self.graph.time_sources.get(tensor) or ()
        return min(self.slots.index(s) for s in src) if src else -1

    def buffer(self, tensor, *, is_input=False) -> int:
        """The buffer of a tensor, made on first use from its form."""
        if tensor in self.buf_of:
            return self.buf_of[tensor]
        form = self.graph.forms[tensor]
        kind = form[0]
        width = form[1] if kind in ("seq", "static") else form[2] if kind == "state" else 1
        dirs = form[1] if kind == "state" else 1
        slot = self.slot_of(tensor) if kind in ("seq", "ids", "mask") else -1
        self.buffers.append(Buffer(tensor, kind, width, dirs, slot, is_input, form[1] if kind == "ids" else 0))
        self.buf_of[tensor] = len(self.buffers) - 1
        return self.buf_of[tensor]

    def alias(self, tensor, buf: int):
        """The tensor (if any) is the data of buffer buf: no buffer of its own."""
        if tensor:
            self.buf_of[tensor] = buf

    def state(self, key: str, dirs: int, width: int) -> int:
        """A new state buffer [dirs, B, width], "<layer>/h" or "<layer>/c": a Stream's state."""
        self.buffers.append(Buffer(key, "state", width, dirs))
        self.states.append((key, len(self.buffers) - 1))
        return len(self.buffers) - 1

    def same_time(self, node, slots: set):
        """Sequences of these time slots meet in the node: a call must give them one T."""
        if len(slots) > 1:
            self.join_slots.append((node.name, slots))

    def op(self, kind: str, node, core=None, **fields):
        """Add an operation (kind: a name of _core.OP_KINDS; fields: of lrt_op)."""
        self.ops.append(Op(kind, node.name, core, fields))

    def program(self) -> Program:
        inputs, buf_of = self.graph.inputs, self.buf_of
        outs = [Output(p.name, p.layout, [buf_of[t] for t in p.tensors], p.groups) for p in self.graph.outputs]
        seq_in = [p for p in inputs if p.is_sequence]
        step_input = buf_of[seq_in[0].tensor] if len(seq_in) == 1 else -1
        return Program(self.buffers, self.ops, self.slots, {p.name: [buf_of[t] for t in p.tensors] for p in inputs},
                       outs, self.states, self.join_slots, step_input)
