"""Model and Stream: the public API.

A Model is a checked graph (lstm_rt.graph) of layers whose weights sit packed for the
kernels, compiled once into a plan (lstm_rt.plan) that `_core.Executor` runs: Model.run
over whole sequences, Stream.step / Stream.feed one step or chunk at a time carrying the
recurrent state. All of them execute the same plan, so they agree bit for bit. Feeds
are checked and brought to the internal forms by lstm_rt.layouts.
"""
from __future__ import annotations

import functools
import os
import threading

import numpy as np

from . import _core
from .errors import LstmRtError, ModelFormatError, ShapeError, UnsupportedError
from .graph import Graph, Node, Port, TensorSpec
from .layers import LAYER_KINDS, Layer
from .layouts import MAX_ROWS, bind_feeds, native_float32, to_internal
from .packing import repack_older_format
from .plan import compile_plan
from .quantize import WEIGHT_TYPES

#: run() keeps up to a few Executors whose buffers are at most this big, for the next call
IDLE_EXECUTOR_BYTES = 16 << 20

__all__ = ["Model", "Stream", "Node", "Port", "TensorSpec", "load", "load_bytes"]


class _CompiledNode:
    """A node as the runtime holds it: kind (and its class in lstm_rt.layers, which knows
    every rule of the kind), config, packed weights and its core object (None for glue:
    the plan's own operations). The layer spec is rebuilt from the packed weights only
    when asked for."""

    def __init__(self, kind, config, packed, inputs, outputs, layer=None, weights="fp32"):
        self.kind, self.config, self.packed, self.weights = kind, config, packed, weights
        self.inputs = list(inputs) + [None] * (5 - len(inputs))
        self.outputs = list(outputs) + [None] * (3 - len(outputs))
        self._layer = layer
        self.layer_class = LAYER_KINDS[kind]
        self.recurrent = self.layer_class.recurrent
        self.core = self.layer_class.make_core(config, packed)

    @property
    def name(self):
        return self.config["name"]

    @property
    def layer(self) -> Layer:
        if self._layer is None:
            cls = self.layer_class
            self._layer = cls.from_config(self.config, cls.unpack(self.config, self.packed))
        return self._layer


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
        compiled = [_CompiledNode(n.layer.kind, n.layer.config(), n.layer.pack(),
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
        self._graph = Graph(nodes, inputs, outputs)
        self._program = compile_plan(self._graph)
        self._slot_tensors = [self._graph.seq_port(name).tensor for name in self._program.slots]
        self._input_buffers = [(t, buf) for p in inputs for t, buf in zip(p.tensors, self._program.inputs[p.name])]
        self._idle, self._idle_lock = {}, threading.Lock()   # run()'s Executors, by batch size

    # ------------------------------------------------------------- public info

    def _check_open(self):
        if self._closed:
            raise LstmRtError(f"model {self.name!r} is closed")

    @property
    def layers(self) -> list[Layer]:
        """The layer specs, in execution order."""
        self._check_open()
        return [n.layer for n in self._nodes]

    @property
    def inputs(self) -> list[TensorSpec]:
        return [self._graph.spec(p) for p in self._inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [self._graph.spec(p) for p in self._outputs]

    def __repr__(self):
        kinds = " -> ".join(f"{n.kind}({n.name})" for n in self._nodes)
        return f"<lstm_rt.Model {self.name!r}: {kinds}>"

    # ------------------------------------------------------------ feeds

    def _feeds(self, x, *, streaming: bool, time_axis: bool):
        """The internal arrays of a call's feeds (layouts.to_internal), after checking the
        model is open and its mapped file unchanged: (env, B)."""
        self._check_open()
        f = getattr(self, "_file", None)
        if f is not None:
            f.check_unchanged()
        return to_internal(self._graph, bind_feeds(self._graph, x, streaming=streaming), time_axis=time_axis)

    def _slot_times(self, env) -> list:
        """Time steps per time slot (sequence input) of the plan, from the internal feeds;
        sequences that a Join combines must agree."""
        prog = self._program
        Ts = [env[t].shape[0] for t in self._slot_tensors]
        for layer, slots in prog.join_slots:
            if len({Ts[s] for s in slots}) > 1:
                raise ShapeError(f"Join {layer!r}: its inputs differ in time steps or batch: "
                                 f"{sorted(Ts[s] for s in slots)} time steps")
        return Ts

    def _bind(self, ex, env):
        """Point the executor's input buffers at the internal feeds (absent: not given)."""
        for t, buf in self._input_buffers:
            ex.bind(buf, env.get(t))

    def _executor(self, Ts, B):
        """An Executor for B sequences of Ts[slot] steps: a reused one of this batch size when
        one is idle (building one costs ~25 us, more than a short run), else a new one."""
        with self._idle_lock:
            idle = self._idle.get(B)
            ex = idle.pop() if idle else None
        if ex is None:
            return _core.Executor(self._program, Ts, max(B, 1), self._life)
        ex.reserve(Ts)
        ex.zero_states()
        return ex

    def _release(self, ex, B):
        """Keep an Executor for the next run of this batch size, unless its buffers are large
        (then they go back to the allocator) or enough are kept already."""
        ex.unbind_inputs()
        if ex.nbytes <= IDLE_EXECUTOR_BYTES:
            with self._idle_lock:
                idle = self._idle.setdefault(B, [])
                if len(idle) < 4 and len(self._idle) <= 8:
                    idle.append(ex)

    def _result(self, outs, single: bool):
        if single and len(outs) == 1:
            return outs[0]
        return {p.name: a for p, a in zip(self._outputs, outs)}

    def run(self, x):
        """Run whole sequences.

        x : array (the model's only sequence input, e.g. [T, B, I] float32) or a dict of
            arrays keyed by input name. Optional inputs (lengths, initial states) may be
            left out: lengths default to the full T, states to zeros.
        Returns one array when the model has one output, else a dict keyed by output name.
        """
        env, B = self._feeds(x, streaming=False, time_axis=True)
        Ts = self._slot_times(env)
        ex = self._executor(Ts, B)
        try:
            self._bind(ex, env)
            outs = ex.execute(Ts, B, True, False)
        finally:
            self._release(ex, B)
        return self._result(outs, single=not isinstance(x, dict))

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
        int8 (int8: symmetric, one scale per output row / embedding row; activations are
        quantized per row inside the kernels, to 8 bits for the recurrent products and to
        12 bits for the others). Biases and peepholes stay fp32."""
        self._check_open()
        if weights not in WEIGHT_TYPES:
            raise ShapeError(f"weights must be one of {WEIGHT_TYPES}, got {weights!r}")
        nodes = []
        for n in self._nodes:
            if n.weights != "fp32" and weights != n.weights:
                raise UnsupportedError(f"{n.kind} {n.name!r} is already {n.weights}; "
                                       f"quantize from the fp32 model")
            packed = n.layer_class.convert(n.config, n.packed, weights) if n.weights == "fp32" else n.packed
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
        with self._idle_lock:
            self._idle = {}    # idle Executors hold the weights' cores
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
                if not isinstance(kind, str) or kind not in LAYER_KINDS:
                    raise ModelFormatError(f"unknown layer kind {kind!r}")
                # the kernels trust every size: the arrays must be exactly what the config implies
                LAYER_KINDS[kind].check_stored(config, packed, weights)
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


class Stream:
    """Step-by-step inference over `batch` sequences, carrying the recurrent state.

    step(x_t) takes the inputs of exactly one time step (the sequence inputs without
    their time axis, e.g. [B, I]); feed(xs) takes a chunk with its time axis. Both return
    what `Model.run` returns for those steps; state outputs (e.g. Y_h) are the state
    after the call. Stepping, feeding in any chunks and running the whole sequence execute
    the same plan: they agree bit for bit.

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
            why = n.layer_class.cannot_stream(n.config)
            if why:
                raise UnsupportedError(why)
        if model._graph.state_links:
            names = [model._nodes[i].name for i in model._graph.state_links]
            raise UnsupportedError(
                f"layers {names} start from states that other layers compute over a whole sequence "
                f"(an encoder -> decoder graph), so the graph cannot stream as one: use Model.run, or "
                f"stream the encoder and the decoder as two models and hand the state over with "
                f"Stream.take_state")
        self.model = model
        self.batch = int(batch)
        self._nodes = nodes
        prog = model._program
        try:
            self._ex = _core.Executor(prog, [1] * len(prog.slots), self.batch, model._life)
        except MemoryError:
            raise LstmRtError(f"batch {batch}: not enough memory for the state of "
                              f"{self.batch} streams") from None
        self._lock = self._ex
        self._states = {key: self._ex.state_array(buf) for key, buf in prog.states}
        # the hot path without a Python frame: an array goes straight to the executor,
        # anything else (a dict of inputs, a wrong type) through Stream.step below
        self._ex.fallback = functools.partial(Stream.step, self)
        self.step = self._ex.locked_step

    def _check_open(self):
        self.model._check_open()

    def __reduce__(self):
        raise LstmRtError("a Stream does not pickle: send the Model (it pickles as its .lrt "
                          "bytes) and the stream's state (Stream.state, a dict of arrays), then "
                          "`s = model.stream(batch); s.state = state` on the other side")

    def reset(self, rows=None):
        """Back to zero state, as a fresh stream (rows: only these sequences of the batch)."""
        self._check_open()
        sel = self._rows(rows)
        with self._lock:
            for a in self._states.values():
                a[:, sel] = 0.0

    def _rows(self, rows):
        """rows as an index into the batch axis: all (None), or distinct row indices."""
        if rows is None:
            return slice(None)
        r = np.asarray(rows)
        if r.ndim != 1 or (r.dtype.kind not in "iu" and r.size):
            raise ShapeError(f"rows must be a 1-d array of row indices, got {r.dtype} {r.shape}")
        r = r.astype(np.intp)
        if r.size and (r.min() < 0 or r.max() >= self.batch):
            raise ShapeError(f"rows must be in [0, {self.batch}), got values in [{r.min()}, {r.max()}]")
        if len(np.unique(r)) != len(r):
            raise ShapeError("rows must be distinct")
        return r

    def _run(self, x, time_axis):
        m = self.model
        env, B = m._feeds(x, streaming=True, time_axis=time_axis)
        if B != self.batch:
            raise ShapeError(f"this stream has batch {self.batch}, got inputs with batch {B}")
        Ts = m._slot_times(env)
        with self._lock:
            self._check_open()
            self._ex.reserve(Ts)
            m._bind(self._ex, env)
            try:
                outs = self._ex.execute(Ts, B, time_axis, False)
            finally:
                self._ex.unbind_inputs()
        return m._result(outs, single=not isinstance(x, dict))

    def step(self, x_t, rows=None):
        """One time step: x_t [B, I] (token ids: [B]), or a dict of the sequence inputs'
        steps. Returns the outputs of that step.

        rows : optional distinct row indices of this stream's batch; x_t then has one row
               per index and only those sequences step (the others keep their state), as
               a server does for the streams that have a new frame."""
        self._check_open()
        if isinstance(x_t, dict):
            if rows is not None:
                raise ShapeError("rows= takes an array step of the one sequence input, not a dict")
            return self._run(x_t, time_axis=False)
        if not isinstance(x_t, np.ndarray):
            raise ShapeError(f"expected a numpy array (or a dict of them), got {type(x_t).__name__}")
        return self._ex.locked_step(x_t, rows)

    def feed(self, xs):
        """A chunk of time steps, laid out as for Model.run (e.g. [T, B, I])."""
        return self._run(xs, time_axis=True)

    @property
    def state(self) -> dict:
        """A copy of the recurrent state: {"<layer>/h": [D, B, Hr], "<layer>/c": [D, B, H]}."""
        return self.get_state()

    @state.setter
    def state(self, value: dict):
        self.set_state(value)

    def get_state(self, rows=None) -> dict:
        """A copy of the state, as `state`; rows: only these sequences ([D, len(rows), H])."""
        self._check_open()
        sel = self._rows(rows)
        with self._lock:
            return {key: a[:, sel].copy() for key, a in self._states.items()}

    def set_state(self, value: dict, rows=None):
        """Overwrite the state with `value` (keys and shapes as get_state(rows) gives)."""
        self._check_open()
        sel = self._rows(rows)
        n = self.batch if rows is None else len(sel)
        shapes = {key: (a.shape[0], n, a.shape[2]) for key, a in self._states.items()}
        if not isinstance(value, dict) or set(value) != set(shapes):
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise ShapeError(f"state must be a dict with keys {sorted(shapes)}, got {got}")
        value = {key: native_float32(f"state {key}", np.asarray(arr)) for key, arr in value.items()}
        for key, arr in value.items():
            if arr.shape != shapes[key]:
                raise ShapeError(f"state {key!r}: expected {shapes[key]} float32, "
                                 f"got {arr.shape} {arr.dtype}")
        with self._lock:
            for key, a in self._states.items():
                a[:, sel] = value[key]

    def take_state(self, other: "Stream"):
        """Continue from another stream's state (the seq2seq handoff: an encoder's final
        state becomes the decoder's initial state). The two models' recurrent layers pair up
        in order and must have the same state shapes; this stream's state is overwritten."""
        if not isinstance(other, Stream):
            raise ShapeError(f"take_state needs a Stream, got {type(other).__name__}")
        self._check_open()
        if other is self:
            return
        mine, theirs = self._layer_states(), other._layer_states()
        names = lambda items: [n.name for n, _ in items]  # noqa: E731
        if len(mine) != len(theirs):
            raise ShapeError(f"take_state: this stream has {len(mine)} recurrent layers "
                             f"{names(mine)}, the other {len(theirs)} {names(theirs)}")
        for (a, sa), (b, sb) in zip(mine, theirs):
            if sa != sb:
                raise ShapeError(f"take_state: {a.kind} {a.name!r} has state {sa}, but {b.kind} "
                                 f"{b.name!r} has {sb}")
        # a snapshot under the other stream's lock, then a write under ours: never both
        # locks at once, so a.take_state(b) and b.take_state(a) in two threads cannot deadlock
        snapshot = list(other.state.values())
        with self._lock:
            for dst, src in zip(self._states.values(), snapshot):
                dst[...] = src

    def _layer_states(self):
        """[(node, {"h": shape, "c": shape})] of the recurrent layers, in order."""
        out = []
        for n in self._nodes:
            if n.recurrent:
                out.append((n, {k: self._states[f"{n.name}/{k}"].shape for k in ("h", "c")
                                if f"{n.name}/{k}" in self._states}))
        return out

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
