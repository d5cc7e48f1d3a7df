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

from .errors import ShapeError


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


_FORM_KINDS = {"seq": "seq", "ids": "ids", "mask": "mask", "lens": "lens", "static": "static",
               "state": "state"}


def compile_plan(graph) -> Program:
    """The plan of a checked lstm_rt.graph.Graph (its runtime nodes carry their cores)."""
    nodes, inputs, outputs = graph.nodes, graph.inputs, graph.outputs
    info, time_sources = graph.forms, graph.time_sources
    slots = [p.name for p in inputs if p.is_sequence]
    buffers, buf_of = [], {}

    def slot_of(tensor):
        src = time_sources.get(tensor) or ()
        return min(slots.index(s) for s in src) if src else -1

    def buffer(tensor, *, is_input=False):
        if tensor in buf_of:
            return buf_of[tensor]
        form = info[tensor]
        kind = _FORM_KINDS[form[0]]
        width = form[1] if kind in ("seq", "static") else form[2] if kind == "state" else 1
        dirs = form[1] if kind == "state" else 1
        buffers.append(Buffer(tensor, kind, width, dirs, slot_of(tensor) if kind in ("seq", "ids", "mask") else -1,
                              is_input, form[1] if kind == "ids" else 0))
        buf_of[tensor] = len(buffers) - 1
        return buf_of[tensor]

    for p in inputs:
        for t in p.tensors:
            buffer(t, is_input=True)

    ops, states, join_slots = [], [], []
    for n in nodes:
        ins, outs = n.inputs, n.outputs
        x = ins[0]
        if n.recurrent:
            c = n.core
            D, H, Hr = c.num_directions, c.hidden_size, c.output_size
            h_buf = _state_buffer(buffers, f"{n.name}/h", D, Hr)
            c_buf = _state_buffer(buffers, f"{n.name}/c", D, H) if c.has_cell_state else -1
            states.append((f"{n.name}/h", h_buf))
            if c_buf >= 0:
                states.append((f"{n.name}/c", c_buf))
            for t, dst, width in ((ins[2], h_buf, Hr), (ins[3], c_buf, H)):
                if t:
                    ops.append(Op("copy_state", n.name, None,
                                  {"x": buffer(t), "y": dst, "in_f": width, "ndir": D}))
            if outs[1]:
                buf_of[outs[1]] = h_buf
            if outs[2]:
                buf_of[outs[2]] = c_buf
            y = buffer(outs[0]) if outs[0] else -1
            ops.append(Op("recurrent", n.name, c, {
                "x": buffer(x), "y": y, "time": slot_of(x), "in_f": c.input_size, "out_f": D * Hr,
                "lens": buffer(ins[1]) if ins[1] else -1, "mask": buffer(ins[4]) if ins[4] else -1,
                "h": h_buf, "c": c_buf, "ndir": D}))
        elif n.kind == "Embedding":
            ops.append(Op("embed", n.name, n.core, {"x": buffer(x), "y": buffer(outs[0]), "time": slot_of(x),
                                                    "out_f": n.config["embedding_size"]}))
        elif n.kind == "Dense":
            ops.append(Op("dense", n.name, n.core, {"x": buffer(x), "y": buffer(outs[0]), "time": slot_of(x),
                                                    "in_f": n.config["in_features"],
                                                    "out_f": n.config["out_features"]}))
        elif n.kind == "Merge":
            cfg = n.config
            ops.append(Op("merge", n.name, None, {
                "x": buffer(x), "y": buffer(outs[0]), "time": slot_of(x), "in_f": cfg["features"] * cfg["parts"],
                "out_f": cfg["features"], "parts": cfg["parts"], "mode": ("sum", "mul", "ave").index(cfg["mode"])}))
        elif n.kind == "Mask":
            cfg = n.config
            if cfg["mode"] == "nonzero_ids":
                if outs[1]:
                    buf_of[outs[1]] = buffer(x)       # the ids pass through unchanged
                ops.append(Op("mask_ids", n.name, None, {"x": buffer(x), "y": buffer(outs[0]), "time": slot_of(x)}))
            else:
                ops.append(Op("mask_value", n.name, None, {
                    "x": buffer(x), "y": buffer(outs[0]), "time": slot_of(x), "in_f": cfg["features"],
                    "value": cfg["value"], "mask_out": buffer(outs[1]) if outs[1] else -1}))
        elif n.kind == "LastState":
            cfg = n.config
            ops.append(Op("last_state", n.name, None, {"x": buffer(x), "y": buffer(outs[0]), "in_f": cfg["hidden_size"],
                                                       "ndir": cfg["directions"]}))
        elif n.kind == "SelectDirection":
            cfg = n.config
            ops.append(Op("select_direction", n.name, None, {"x": buffer(x), "y": buffer(outs[0]),
                                                             "in_f": cfg["hidden_size"], "dir": cfg["direction"]}))
        elif n.kind == "ReverseTime":
            ops.append(Op("reverse_time", n.name, None, {"x": buffer(x), "y": buffer(outs[0]), "time": slot_of(x),
                                                         "in_f": n.config["features"]}))
        elif n.kind == "Join":
            cfg = n.config
            tensors = [t for t in ins if t]
            seq_slots = {slot_of(t) for t in tensors} - {-1}
            if len(seq_slots) > 1:
                join_slots.append((n.name, seq_slots))
            out_f = sum(cfg["features"]) if cfg["mode"] == "concat" else cfg["features"][0]
            ops.append(Op("join", n.name, None, {
                "y": buffer(outs[0]), "time": min(seq_slots) if seq_slots else -1, "out_f": out_f,
                "mode": ("concat", "sum", "sub", "mul", "ave", "max", "min").index(cfg["mode"]),
                "ins": [buffer(t) for t in tensors], "in_feats": list(cfg["features"])}))
        else:   # pragma: no cover - the graph check knows every kind
            raise ShapeError(f"no plan for layer kind {n.kind!r}")

    outs = [Output(p.name, p.layout, [buf_of[t] for t in p.tensors], p.groups) for p in outputs]
    seq_in = [p for p in inputs if p.is_sequence]
    step_input = buf_of[seq_in[0].tensor] if len(seq_in) == 1 else -1
    return Program(buffers, ops, slots, {p.name: [buf_of[t] for t in p.tensors] for p in inputs},
                   outs, states, join_slots, step_input)


def _state_buffer(buffers, key, dirs, width) -> int:
    buffers.append(Buffer(key, "state", width, dirs))
    return len(buffers) - 1
