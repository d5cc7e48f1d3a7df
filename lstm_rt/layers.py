"""Layer kinds: what each layer computes, its attributes and weights, and every rule of its
kind, in its class.

Weights are held in ONE canonical layout, the ONNX operator layout, whatever the
source framework was (converters permute into it):

    LSTM   w [D, 4H, I]   r [D, 4H, Hr]  b [D, 8H]  (Wb then Rb)  p [D, 3H]  proj [D, Hr, H]
           gate order i, o, f, c; peepholes i, o, f; Hr = proj_size or H
    GRU    w [D, 3H, I]   r [D, 3H, H]   b [D, 6H]  gate order z, r, h
    RNN    w [D, H, I]    r [D, H, H]    b [D, 2H]
    Embedding  weight [V, E]        Dense  weight [O, F] (out, in), bias [O]

D is 1 (forward or reverse) or 2 (bidirectional). Every spec validates itself
when built, so a bad shape or attribute fails at conversion, not mid-run.

An instance is a spec (a layer with its weights); the class is the kind, and its
classmethods work on a `config()` dict alone (a model file's node), so a loaded model needs
no spec until one is asked for. Everything about a kind sits in its class:

    file         from_config, check_config, check_stored (a file's arrays, exactly)
    packed form  packed_shapes (the kernels' layout, lstm_rt.packing), pack / unpack;
                 its 3-d parts are panel matrices, the parts fp16 / int8 apply to
                 (matrix_parts, stored_shapes, convert: lstm_rt.quantize)
    graph        infer (the forms of its inputs, checked -> the forms of its outputs,
                 see lstm_rt.graph), time_inputs, cannot_stream
    plan         make_core (its _core object over the packed weights), plan (its
                 operations, see lstm_rt.plan)
    oracle       reference: the layer in float64 numpy, written from the equations

LAYER_KINDS maps a kind's name to its class; lstm_rt.graph, lstm_rt.plan and lstm_rt.model
loop over nodes and call these, never asking which kind a node is.
"""
from __future__ import annotations

import math

import numpy as np

from . import _core
from .activations import (ACTIVATIONS, DENSE_ACTIVATIONS, Activation, activation,  # noqa: F401
                          activations_from_onnx, apply_activation, apply_dense_activation)
from .errors import ModelFormatError, ShapeError, UnsupportedError
from .packing import (DENSE_LANES, LANES, aligned, nblocks, pack_bias, pack_panels, unpack_bias,
                      unpack_panels)
from .quantize import (WEIGHT_TYPES, convert_part, convert_table, panels_as_fp32, stored_panels,
                       stored_table, table_as_fp32)

DIRECTIONS = ("forward", "reverse", "bidirectional")

# ------------------------------------------------------------------- helpers


def _as_f32(name: str, owner: str, arr, shape: tuple[int, ...]) -> np.ndarray:
    """Validate a weight tensor: float dtype, exact shape, finite; returned as float32 C array."""
    a = np.asarray(arr)
    if a.dtype.kind != "f":
        raise ShapeError(f"{owner}: weight {name!r} must be floating point, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise ShapeError(f"{owner}: weight {name!r} must have shape {tuple(shape)}, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ShapeError(f"{owner}: weight {name!r} contains NaN or inf")
    return a


def _positive_int(owner: str, what: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) <= 0:
        raise ShapeError(f"{owner}: {what} must be a positive integer, got {v!r}")
    return int(v)


class Layer:
    """Base of every layer kind. `name` is the source model's name for the layer.

    The defaults here are those of a layer without weights (glue); kinds with weights
    override the packed-form hooks."""
    kind = "layer"
    recurrent = False
    # canonical weight names of this layer kind, in file order
    weight_names: tuple[str, ...] = ()
    # packed parts a file may leave out (named without a recurrent layer's "<d>." prefix)
    optional_parts: tuple[str, ...] = ()

    def __init__(self, name: str):
        self.name = str(name)

    def config(self) -> dict:
        """JSON-able attributes (no weights)."""
        raise NotImplementedError

    def weights(self) -> dict[str, np.ndarray]:
        """Canonical float32 weights by name (absent optional weights omitted)."""
        return {k: getattr(self, k) for k in self.weight_names if getattr(self, k) is not None}

    def __repr__(self):
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({self.name!r}, {cfg})"

    # ------------------------------------------------------------ the model file

    @classmethod
    def from_config(cls, config: dict, weights: dict[str, np.ndarray]) -> "Layer":
        """Rebuild a spec from `config()` and `weights()` (a model file's content)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, config: dict) -> None:
        """Check a config read from a file with the rules the spec applies when built (sizes
        positive, direction / activations / clip valid), without needing its weights."""
        if not isinstance(config, dict) or not isinstance(config.get("name"), str):
            raise ShapeError(f"{cls.kind}: config must be a dict with a string 'name'")
        cls._check_attributes(config, f"{cls.kind} {config['name']!r}")

    @classmethod
    def _check_attributes(cls, config: dict, owner: str) -> None:
        cls.from_config(config, {})   # a layer without weights: building it checks it

    @classmethod
    def check_stored(cls, config: dict, packed: dict, weights: str) -> None:
        """A file's packed arrays must have exactly the shapes and dtypes its config implies
        (the kernels trust every size); raises ModelFormatError."""
        owner = f"{cls.kind} {config.get('name')!r}"
        if weights not in WEIGHT_TYPES:
            raise ModelFormatError(f"{owner}: unknown weight type {weights!r}")
        cls.check_config(config)
        expected = cls.stored_shapes(config, weights)
        for part, (shape, dtype) in expected.items():
            arr = packed.get(part)
            if arr is None:
                if part in cls.optional_parts or part.split(".", 1)[-1] in cls.optional_parts:
                    continue
                raise ModelFormatError(f"{owner}: missing weights {part!r}")
            if tuple(arr.shape) != shape or arr.dtype != np.dtype(dtype):
                raise ModelFormatError(f"{owner}: weights {part!r} have shape "
                                       f"{tuple(arr.shape)} {arr.dtype}, expected {shape} {dtype}")
        extra = set(packed) - set(expected)
        if extra:
            raise ModelFormatError(f"{owner}: unexpected weights {sorted(extra)}")

    # ------------------------------------------------------------ the packed form

    @classmethod
    def packed_shapes(cls, config: dict) -> dict[str, tuple[int, ...]]:
        """The fp32 arrays `pack` makes for a layer of this config: name -> shape. 3-d
        arrays are panel matrices [nblk, K, gw] (lstm_rt.packing); 1-d ones vectors."""
        return {}

    @classmethod
    def matrix_parts(cls, config: dict) -> dict[str, int]:
        """The packed weight matrices (the parts fp16/int8 apply to), with their K."""
        return {part: shape[1] for part, shape in cls.packed_shapes(config).items() if len(shape) == 3}

    def pack(self) -> dict[str, np.ndarray]:
        """The packed fp32 arrays of this spec, each 64-byte aligned, in file order."""
        return {k: aligned(v) for k, v in self._pack().items()}

    def _pack(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def unpack(cls, config: dict, packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Canonical weights (as `weights()`) from packed arrays of any storage; biases come
        back summed (Wb + Rb: an equivalent model)."""
        mats = cls.matrix_parts(config)
        return cls._unpack(config, {**packed, **{k: panels_as_fp32(packed, k, K) for k, K in mats.items()
                                                 if k in packed}})

    @classmethod
    def _unpack(cls, config: dict, packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def stored_shapes(cls, config: dict, weights: str = "fp32") -> dict[str, tuple]:
        """Shapes and dtypes of the arrays `pack` + `convert` produce: name -> (shape, dtype
        name); a model file must match them exactly (optional parts may be absent)."""
        mats = cls.matrix_parts(config)
        out = {}
        for part, shape in cls.packed_shapes(config).items():
            if part in mats:
                out.update({part + suffix: s for suffix, s in stored_panels(shape, weights).items()})
            else:
                out[part] = (shape, "float32")
        return out

    @classmethod
    def convert(cls, config: dict, packed: dict, weights: str) -> dict[str, np.ndarray]:
        """fp32 packed arrays -> the same layer with its matrices stored as `weights`."""
        mats = cls.matrix_parts(config)
        out = {}
        for key, arr in packed.items():
            if key in mats:
                for suffix, a in convert_part(arr, weights, f"{cls.kind} {config['name']!r} {key}").items():
                    out[key + suffix] = aligned(a)
            else:
                out[key] = arr
        return out

    # ------------------------------------------------------------ graph and plan

    @classmethod
    def infer(cls, node, graph) -> list:
        """Check the forms of the node's inputs (graph.need / graph.settle, lstm_rt.graph)
        and return the forms of its outputs, in order (those of absent outputs unused)."""
        raise NotImplementedError

    @classmethod
    def time_inputs(cls, node) -> list:
        """The inputs whose time steps the node's sequence outputs have."""
        return node.inputs[:1]

    @classmethod
    def cannot_stream(cls, config: dict) -> str | None:
        """Why a layer of this config cannot run step by step (None: it can)."""
        return None

    @classmethod
    def make_core(cls, config: dict, packed: dict):
        """The _core object that holds the packed weights for the kernels (None: no weights)."""
        return None

    @classmethod
    def plan(cls, node, plan) -> None:
        """Add the node's operations to a plan being compiled (lstm_rt.plan.PlanBuilder)."""
        raise NotImplementedError


def _infer_features(node, graph, f_in: int, f_out: int) -> list:
    """Forms of a layer over the last axis: a sequence [T, B, f_in] -> [T, B, f_out], or a
    last output [B, f_in] -> [B, f_out]."""
    x = node.inputs[0]
    cur = graph.need(x, node, "input")
    if cur[0] == "static":  # a layer's last output, [B, F]
        if cur[1] != f_in:
            raise ShapeError(f"{node.kind} {node.name!r} expects {f_in} features, gets {cur[1]}")
        return [("static", f_out)]
    graph.settle(x, ("seq", f_in))
    return [("seq", f_out)]


# ----------------------------------------------------------------- recurrent


class RecurrentLayer(Layer):
    """Shared attributes and rules of LSTM, GRU and RNN (ONNX semantics).

    Node inputs [x, seq_lens, initial_h, initial_c, mask], outputs [y, h, c]. Packed arrays
    are per direction, named "<d>.<part>": input weights "w", recurrent weights "r", the
    summed bias "bias" (and what each kind adds)."""
    recurrent = True
    n_gates = 1
    n_acts = 1
    default_acts: tuple[str, ...] = ("Tanh",)
    has_cell_state = False
    cell_code = -1          # the kernels' cell kind (lrt_kernels.h LRT_CELL_*)
    optional_parts = ("bias",)

    def _init_common(self, name, input_size, hidden_size, direction, activations, clip,
                     zero_output_for_mask=False):
        self.name = str(name)
        # Keras masking: a masked step repeats the last output, or (inside Bidirectional)
        # outputs zeros
        self.zero_output_for_mask = bool(zero_output_for_mask)
        owner = f"{self.kind} {name!r}"
        self.input_size = _positive_int(owner, "input_size", input_size)
        self.hidden_size = _positive_int(owner, "hidden_size", hidden_size)
        if direction not in DIRECTIONS:
            raise ShapeError(f"{owner}: direction must be one of {DIRECTIONS}, got {direction!r}")
        self.direction = direction
        D = self.num_directions
        if activations is None:
            activations = [activation(a) for a in self.default_acts] * D
        acts = [a if isinstance(a, Activation) else
                activation(*a) if isinstance(a, (tuple, list)) else activation(a)
                for a in activations]
        if len(acts) == self.n_acts and D == 2:
            acts = acts * 2  # one set given: both directions use it
        if len(acts) != self.n_acts * D:
            raise ShapeError(f"{owner}: expected {self.n_acts * D} activations "
                             f"({self.n_acts} per direction), got {len(acts)}")
        self.activations = [activation(a.name, a.alpha, a.beta) for a in acts]
        if clip is not None:
            clip = float(clip)
            if not clip > 0 or math.isinf(clip):
                raise ShapeError(f"{owner}: clip must be a positive finite number, got {clip!r}")
        self.clip = clip
        return owner

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def output_size(self) -> int:
        """Size of h (the projection size for a projected LSTM)."""
        return self.hidden_size

    def _common_config(self) -> dict:
        return {"name": self.name, "input_size": self.input_size, "hidden_size": self.hidden_size,
                "direction": self.direction, "clip": self.clip,
                "activations": [list(a) for a in self.activations],
                "zero_output_for_mask": self.zero_output_for_mask}

    def direction_activations(self, d: int) -> list[Activation]:
        return self.activations[d * self.n_acts:(d + 1) * self.n_acts]

    @staticmethod
    def _sizes(config: dict) -> tuple[int, int, int, int]:
        """(directions D, input size I, units H, size of h Hr) of a config."""
        H = config["hidden_size"]
        return (2 if config["direction"] == "bidirectional" else 1, config["input_size"], H,
                config.get("proj_size") or H)

    @staticmethod
    def _common_kwargs(config: dict) -> dict:
        return {"direction": config["direction"], "clip": config["clip"],
                "activations": [Activation(*a) for a in config["activations"]],
                "hidden_size": config["hidden_size"],
                "zero_output_for_mask": config.get("zero_output_for_mask", False)}

    @classmethod
    def _check_attributes(cls, config, owner):
        probe = cls.__new__(cls)
        acts = config.get("activations")
        if not isinstance(acts, list) or not all(isinstance(a, list) and len(a) == 3 for a in acts):
            raise ShapeError(f"{owner}: activations must be a list of [name, alpha, beta]")
        probe._init_common(config["name"], config.get("input_size"), config.get("hidden_size"),
                           config.get("direction"), [Activation(*a) for a in acts], config.get("clip"))
        if not isinstance(config.get("zero_output_for_mask", False), bool):
            raise ShapeError(f"{owner}: zero_output_for_mask must be a boolean")
        if len(acts) != probe.n_acts * probe.num_directions:
            raise ShapeError(f"{owner}: expected {probe.n_acts * probe.num_directions} activations")

    # ------------------------------------------------------------ the packed form

    @classmethod
    def packed_shapes(cls, config):
        D, I, H, Hr = cls._sizes(config)
        return {f"{d}.{part}": shape for d in range(D)
                for part, shape in cls._direction_shapes(config, I, H, Hr, nblocks(H)).items()}

    @classmethod
    def _direction_shapes(cls, config, I, H, Hr, nb) -> dict:
        """One direction's packed shapes (nb: blocks of H units)."""
        G = cls.n_gates
        return {"w": (nb, I, G * LANES), "bias": (nb * G * LANES,), "r": (nb, Hr, G * LANES)}

    def _bias(self, d: int) -> np.ndarray:
        """Direction d's ONNX bias [2 G H] (Wb then Rb), zeros when the layer has none."""
        n = self.n_gates * self.hidden_size
        return self.b[d] if self.b is not None else np.zeros(2 * n, np.float32)

    def _pack(self):
        return {f"{d}.{part}": a for d in range(self.num_directions)
                for part, a in self._pack_direction(d).items()}

    def _pack_direction(self, d: int) -> dict:
        """One direction's packed arrays, in file order."""
        G, H = self.n_gates, self.hidden_size
        b = self._bias(d)
        return {"w": pack_panels(self.w[d], G), "r": pack_panels(self.r[d], G),
                "bias": pack_bias(b[:G * H] + b[G * H:], G)}

    @classmethod
    def _unpack(cls, config, packed):
        D = cls._sizes(config)[0]
        per = [cls._unpack_direction(config, {k.split(".", 1)[1]: v for k, v in packed.items()
                                              if k.split(".", 1)[0] == str(d)}) for d in range(D)]
        out = {}
        for name in cls.weight_names:
            arrays = [w[name] for w in per if name in w]
            if arrays:
                out[name] = np.stack(arrays)
        return out

    @classmethod
    def _unpack_direction(cls, config, p: dict) -> dict:
        """One direction's canonical weights (w, r, b, ...) from its fp32 packed arrays."""
        G, H = cls.n_gates, config["hidden_size"]
        bx = unpack_bias(p["bias"], G, H)
        return {"w": unpack_panels(p["w"], G, H), "r": unpack_panels(p["r"], G, H),
                "b": np.concatenate([bx, np.zeros_like(bx)])}

    # ------------------------------------------------------------ graph and plan

    @classmethod
    def infer(cls, node, graph):
        D, I, H, Hr = cls._sizes(node.config)
        x, lens, h0, c0, mask = node.inputs[:5]
        graph.need(x, node, "input")
        graph.settle(x, ("seq", I))
        if lens:
            graph.need(lens, node, "sequence lengths")
            graph.settle(lens, ("lens",))
        if h0:
            graph.need(h0, node, "initial h")
            graph.settle(h0, ("state", D, Hr))
        if c0:
            if not cls.has_cell_state:
                raise ShapeError(f"{node.kind} {node.name!r} has no cell state input")
            graph.need(c0, node, "initial c")
            graph.settle(c0, ("state", D, H))
        graph.link_states(node, [("h", h0), ("c", c0)])
        if mask:
            if graph.need(mask, node, "mask") != ("mask",):
                raise ShapeError(f"{node.kind} {node.name!r}: {mask!r} is not a mask")
        if node.outputs[2] and not cls.has_cell_state:
            raise ShapeError(f"{node.kind} {node.name!r} has no cell state output")
        return [("seq", D * Hr), ("state", D, Hr), ("state", D, H)]

    @classmethod
    def time_inputs(cls, node):
        return [node.inputs[0], node.inputs[4]]   # x and the mask

    @classmethod
    def cannot_stream(cls, config):
        if config["direction"] != "forward":
            return (f"{cls.kind} {config['name']!r} is {config['direction']}: its backward direction "
                    f"starts from the last time step, so it needs the whole sequence and cannot "
                    f"stream; use Model.run")
        return None

    @classmethod
    def make_core(cls, config, packed):
        return _core.RecurrentCore(cls, config, packed)

    @classmethod
    def plan(cls, node, plan):
        D, I, H, Hr = cls._sizes(node.config)
        ins, outs = node.inputs, node.outputs
        h_buf = plan.state(f"{node.name}/h", D, Hr)
        c_buf = plan.state(f"{node.name}/c", D, H) if cls.has_cell_state else -1
        # initial states: copied in when given (a stream's state carries on when not)
        for t, dst, width in ((ins[2], h_buf, Hr), (ins[3], c_buf, H)):
            if t:
                plan.op("copy_state", node, x=plan.buffer(t), y=dst, in_f=width, ndir=D)
        plan.alias(outs[1], h_buf)     # the h and c outputs are the state buffers
        plan.alias(outs[2], c_buf)
        y = plan.buffer(outs[0]) if outs[0] else -1
        x = ins[0]
        plan.op("recurrent", node, node.core, x=plan.buffer(x), y=y, time=plan.slot_of(x), in_f=I,
                out_f=D * Hr, lens=plan.buffer(ins[1]) if ins[1] else -1,
                mask=plan.buffer(ins[4]) if ins[4] else -1, h=h_buf, c=c_buf, ndir=D)

    # ------------------------------------------------------------ oracle

    def reference(self, x, seq_lens=None, h0=None, c0=None, mask=None):
        """Run the layer over x [T, B, I] in float64, one sequence at a time, the plainest
        loops (the test oracle). seq_lens [B] or None; h0 [D, B, Hr]; c0 [D, B, H];
        mask [T, B] (Keras masking, instead of seq_lens): a masked step keeps the state and
        outputs it again (or zeros, zero_output_for_mask).

        Returns y [T, D, B, Hr] (zeros past a sequence's length), h [D, B, Hr], c [D, B, H]
        (None without a cell state). A sequence's final state is its last valid step's; a
        sequence of length 0 ends in zeros (as onnxruntime does; the ONNX spec is silent)."""
        x = np.asarray(x, dtype=np.float64)
        T, B, _ = x.shape
        D, H, Hr = self.num_directions, self.hidden_size, self.output_size
        lens = np.full(B, T) if seq_lens is None else np.asarray(seq_lens)
        h0 = np.zeros((D, B, Hr)) if h0 is None else np.asarray(h0, dtype=np.float64)
        cell = self.has_cell_state
        c0 = np.zeros((D, B, H)) if (c0 is None or not cell) else np.asarray(c0, dtype=np.float64)
        y = np.zeros((T, D, B, Hr))
        h_out, c_out = h0.copy(), c0.copy()
        for d in range(D):
            reverse = self.direction == "reverse" or d == 1
            for bi in range(B):
                L = int(lens[bi])
                h, c = h0[d, bi].copy(), c0[d, bi].copy()
                for s in range(L):
                    t = L - 1 - s if reverse else s
                    if mask is not None and not mask[t, bi]:
                        y[t, d, bi] = 0.0 if self.zero_output_for_mask else h
                        continue
                    h, c = self._reference_step(d, x[t, bi], h, c)
                    y[t, d, bi] = h
                if L == 0 and seq_lens is not None:
                    h, c = 0.0, 0.0  # onnxruntime zeroes the final state of an empty sequence
                h_out[d, bi] = h
                c_out[d, bi] = c
        return y, h_out, (c_out if cell else None)

    def _reference_step(self, d: int, x, h, c):
        """One step of direction d for one sequence: x [I], h [Hr], c [H] -> (h, c)."""
        raise NotImplementedError

    def _clip(self, x):
        return np.clip(x, -self.clip, self.clip) if self.clip is not None else x

    def _reference_weights(self, d: int):
        """Direction d's W, R and bias [2 G H] in float64."""
        b = self._bias(d).astype(np.float64)
        return self.w[d].astype(np.float64), self.r[d].astype(np.float64), b


class LSTM(RecurrentLayer):
    """ONNX LSTM (gates i, o, f, c), plus peepholes, coupled input-forget and a
    PyTorch-style output projection h = proj @ (o * h(c)).

    Activations per direction: f (gates, default Sigmoid), g (cell input, Tanh), h (output, Tanh).
    Packed per direction: w, r (4 gates), bias, and "peep" [3H] and "proj" (panels of one
    gate, [nblocks(Hr), H, 8]) when the layer has them.
    """
    kind = "LSTM"
    n_gates = 4
    n_acts = 3
    default_acts = ("Sigmoid", "Tanh", "Tanh")
    weight_names = ("w", "r", "b", "p", "proj")
    has_cell_state = True
    cell_code = 0
    optional_parts = ("bias", "peep")

    def __init__(self, name, w, r, b=None, p=None, proj=None, *, direction="forward",
                 activations=None, clip=None, input_forget=False, hidden_size=None,
                 zero_output_for_mask=False):
        w = np.asarray(w)
        if w.ndim != 3:
            raise ShapeError(f"LSTM {name!r}: w must be [D, 4H, I], got shape {w.shape}")
        H = hidden_size if hidden_size is not None else w.shape[1] // 4
        owner = self._init_common(name, w.shape[2], H, direction, activations, clip, zero_output_for_mask)
        D, H, I = self.num_directions, self.hidden_size, self.input_size
        Hr = H
        if proj is not None:
            proj = np.asarray(proj)
            if proj.ndim != 3:
                raise ShapeError(f"{owner}: proj must be [D, P, H], got shape {proj.shape}")
            Hr = proj.shape[1]
            self.proj = _as_f32("proj", owner, proj, (D, Hr, H))
        else:
            self.proj = None
        self.w = _as_f32("w", owner, w, (D, 4 * H, I))
        self.r = _as_f32("r", owner, r, (D, 4 * H, Hr))
        self.b = _as_f32("b", owner, b, (D, 8 * H)) if b is not None else None
        self.p = _as_f32("p", owner, p, (D, 3 * H)) if p is not None else None
        self.input_forget = bool(input_forget)

    @property
    def output_size(self) -> int:
        return self.proj.shape[1] if self.proj is not None else self.hidden_size

    def config(self):
        return {**self._common_config(), "input_forget": self.input_forget,
                "proj_size": self.proj.shape[1] if self.proj is not None else None}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], weights["w"], weights["r"], weights.get("b"), weights.get("p"),
                   weights.get("proj"), input_forget=config["input_forget"], **cls._common_kwargs(config))

    @classmethod
    def _check_attributes(cls, config, owner):
        super()._check_attributes(config, owner)
        if config.get("proj_size") is not None:
            _positive_int(owner, "proj_size", config["proj_size"])

    @classmethod
    def _direction_shapes(cls, config, I, H, Hr, nb):
        out = {**super()._direction_shapes(config, I, H, Hr, nb), "peep": (3 * H,)}
        if config.get("proj_size"):
            out["proj"] = (nblocks(Hr), H, LANES)
        return out

    def _pack_direction(self, d):
        out = super()._pack_direction(d)
        if self.p is not None:
            out["peep"] = self.p[d]
        if self.proj is not None:
            out["proj"] = pack_panels(self.proj[d], 1)
        return out

    @classmethod
    def _unpack_direction(cls, config, p):
        out = super()._unpack_direction(config, p)
        if "peep" in p:
            out["p"] = np.array(p["peep"])
        if "proj" in p:
            out["proj"] = unpack_panels(p["proj"], 1, out["r"].shape[1])
        return out

    def _reference_step(self, d, x, h, c):
        H = self.hidden_size
        f, g, hact = self.direction_activations(d)
        W, R, b = self._reference_weights(d)
        p = self.p[d].astype(np.float64) if self.p is not None else np.zeros(3 * H)
        z = W @ x + R @ h + b[:4 * H] + b[4 * H:]
        zi, zo, zf, zc = z[:H], z[H:2 * H], z[2 * H:3 * H], z[3 * H:]
        pi, po, pf = p[:H], p[H:2 * H], p[2 * H:]
        i = apply_activation(f, self._clip(zi + pi * c))
        if self.input_forget:
            fg = 1.0 - i
        else:
            fg = apply_activation(f, self._clip(zf + pf * c))
        cc = apply_activation(g, self._clip(zc))
        c_new = fg * c + i * cc
        o = apply_activation(f, self._clip(zo + po * c_new))
        h_new = o * apply_activation(hact, c_new)
        if self.proj is not None:
            h_new = self.proj[d].astype(np.float64) @ h_new
        return h_new, c_new


class GRU(RecurrentLayer):
    """ONNX GRU (gates z, r, h). linear_before_reset=True applies r after R_h h (PyTorch,
    Keras reset_after=True); False applies it to h before R_h (the original GRU).

    Activations per direction: f (z and r, default Sigmoid), g (candidate, Tanh).
    Packed per direction: w (3 gates) and bias, and
      linear_before_reset: r (3 gates) and "bias_rh" (Rb_h alone: it stays inside
          r * (R_h h + Rb_h); Rb_z and Rb_r fold into "bias");
      otherwise: r (the z and r gates) and "r_h" (one gate): R_h multiplies r * h, a
          separate product once r is known.
    """
    kind = "GRU"
    n_gates = 3
    n_acts = 2
    default_acts = ("Sigmoid", "Tanh")
    weight_names = ("w", "r", "b")
    cell_code = 1

    def __init__(self, name, w, r, b=None, *, direction="forward", activations=None,
                 clip=None, linear_before_reset=False, hidden_size=None, zero_output_for_mask=False):
        w = np.asarray(w)
        if w.ndim != 3:
            raise ShapeError(f"GRU {name!r}: w must be [D, 3H, I], got shape {w.shape}")
        H = hidden_size if hidden_size is not None else w.shape[1] // 3
        owner = self._init_common(name, w.shape[2], H, direction, activations, clip, zero_output_for_mask)
        D, H, I = self.num_directions, self.hidden_size, self.input_size
        self.w = _as_f32("w", owner, w, (D, 3 * H, I))
        self.r = _as_f32("r", owner, r, (D, 3 * H, H))
        self.b = _as_f32("b", owner, b, (D, 6 * H)) if b is not None else None
        self.linear_before_reset = bool(linear_before_reset)

    def config(self):
        return {**self._common_config(), "linear_before_reset": self.linear_before_reset}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], weights["w"], weights["r"], weights.get("b"),
                   linear_before_reset=config["linear_before_reset"], **cls._common_kwargs(config))

    @classmethod
    def _direction_shapes(cls, config, I, H, Hr, nb):
        out = {"w": (nb, I, 3 * LANES), "bias": (nb * 3 * LANES,)}
        if config["linear_before_reset"]:
            out.update({"r": (nb, H, 3 * LANES), "bias_rh": (nb * 3 * LANES,)})
        else:
            out.update({"r": (nb, H, 2 * LANES), "r_h": (nb, H, LANES)})
        return out

    def _pack_direction(self, d):
        H = self.hidden_size
        b = self._bias(d)
        wb, rb = b[:3 * H], b[3 * H:]
        out = {"w": pack_panels(self.w[d], 3)}
        if self.linear_before_reset:
            out["bias"] = pack_bias(np.concatenate([wb[:2 * H] + rb[:2 * H], wb[2 * H:]]), 3)
            out["r"] = pack_panels(self.r[d], 3)
            out["bias_rh"] = pack_bias(np.concatenate([np.zeros(2 * H, np.float32), rb[2 * H:]]), 3)
        else:
            out["bias"] = pack_bias(wb + rb, 3)
            out["r"] = pack_panels(self.r[d][:2 * H], 2)
            out["r_h"] = pack_panels(self.r[d][2 * H:], 1)
        return out

    @classmethod
    def _unpack_direction(cls, config, p):
        H = config["hidden_size"]
        bx = unpack_bias(p["bias"], 3, H)
        if config["linear_before_reset"]:
            r = unpack_panels(p["r"], 3, H)
            rb = unpack_bias(p["bias_rh"], 3, H)
        else:
            r = np.concatenate([unpack_panels(p["r"], 2, H), unpack_panels(p["r_h"], 1, H)])
            rb = np.zeros_like(bx)
        return {"w": unpack_panels(p["w"], 3, H), "r": r, "b": np.concatenate([bx, rb])}

    def _reference_step(self, d, x, h, c):
        H = self.hidden_size
        f, g = self.direction_activations(d)
        W, R, b = self._reference_weights(d)
        wb, rb = b[:3 * H], b[3 * H:]
        xw = W @ x + wb
        zr = xw[:2 * H] + R[:2 * H] @ h + rb[:2 * H]
        z = apply_activation(f, self._clip(zr[:H]))
        r = apply_activation(f, self._clip(zr[H:]))
        if self.linear_before_reset:
            n_pre = xw[2 * H:] + r * (R[2 * H:] @ h + rb[2 * H:])
        else:
            n_pre = xw[2 * H:] + R[2 * H:] @ (r * h) + rb[2 * H:]
        n = apply_activation(g, self._clip(n_pre))
        return (1.0 - z) * n + z * h, c


class RNN(RecurrentLayer):
    """ONNX RNN: h = f(W x + R h + Wb + Rb), f default Tanh. Packed per direction: w, r
    (one gate) and bias."""
    kind = "RNN"
    n_gates = 1
    n_acts = 1
    default_acts = ("Tanh",)
    weight_names = ("w", "r", "b")
    cell_code = 2

    def __init__(self, name, w, r, b=None, *, direction="forward", activations=None,
                 clip=None, hidden_size=None, zero_output_for_mask=False):
        w = np.asarray(w)
        if w.ndim != 3:
            raise ShapeError(f"RNN {name!r}: w must be [D, H, I], got shape {w.shape}")
        H = hidden_size if hidden_size is not None else w.shape[1]
        owner = self._init_common(name, w.shape[2], H, direction, activations, clip, zero_output_for_mask)
        D, H, I = self.num_directions, self.hidden_size, self.input_size
        self.w = _as_f32("w", owner, w, (D, H, I))
        self.r = _as_f32("r", owner, r, (D, H, H))
        self.b = _as_f32("b", owner, b, (D, 2 * H)) if b is not None else None

    def config(self):
        return self._common_config()

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], weights["w"], weights["r"], weights.get("b"), **cls._common_kwargs(config))

    def _reference_step(self, d, x, h, c):
        H = self.hidden_size
        (f,) = self.direction_activations(d)
        W, R, b = self._reference_weights(d)
        return apply_activation(f, self._clip(W @ x + R @ h + b[:H] + b[H:])), c


# -------------------------------------------------------------- feed-forward


class Embedding(Layer):
    """Token ids [..] (int) -> vectors [.., E]: row lookup in weight [V, E]. Packed: the
    table itself, "weight" [V, E]; fp16 / int8 store it as a table (int8: one scale per row)."""
    kind = "Embedding"
    weight_names = ("weight",)

    def __init__(self, name, weight):
        super().__init__(name)
        weight = np.asarray(weight)
        if weight.ndim != 2 or 0 in weight.shape:
            raise ShapeError(f"Embedding {name!r}: weight must be a non-empty [V, E] matrix, "
                             f"got shape {weight.shape}")
        self.weight = _as_f32("weight", f"Embedding {name!r}", weight, weight.shape)

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    @property
    def output_size(self) -> int:
        return self.weight.shape[1]

    def config(self):
        return {"name": self.name, "vocab_size": self.vocab_size, "embedding_size": self.output_size}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], weights["weight"])

    @classmethod
    def _check_attributes(cls, config, owner):
        _positive_int(owner, "vocab_size", config.get("vocab_size"))
        _positive_int(owner, "embedding_size", config.get("embedding_size"))

    @classmethod
    def packed_shapes(cls, config):
        return {"weight": (config["vocab_size"], config["embedding_size"])}

    @classmethod
    def matrix_parts(cls, config):
        return {}   # a table, not panels: stored by rows (below)

    def _pack(self):
        return {"weight": self.weight}

    @classmethod
    def unpack(cls, config, packed):
        return {"weight": table_as_fp32(packed, "weight")}

    @classmethod
    def stored_shapes(cls, config, weights="fp32"):
        shape = cls.packed_shapes(config)["weight"]
        return {"weight" + suffix: s for suffix, s in stored_table(shape, weights).items()}

    @classmethod
    def convert(cls, config, packed, weights):
        return {"weight" + k: aligned(v) for k, v in
                convert_table(packed["weight"], weights, f"Embedding {config['name']!r}").items()}

    @classmethod
    def infer(cls, node, graph):
        x = node.inputs[0]
        graph.need(x, node, "input")
        graph.settle(x, ("ids", node.config["vocab_size"]))
        return [("seq", node.config["embedding_size"])]

    @classmethod
    def make_core(cls, config, packed):
        return _core.EmbeddingCore(packed)

    @classmethod
    def plan(cls, node, plan):
        x = node.inputs[0]
        plan.op("embed", node, node.core, x=plan.buffer(x), y=plan.buffer(node.outputs[0]),
                time=plan.slot_of(x), out_f=node.config["embedding_size"])

    def reference(self, ids):
        """ids [...] int -> [..., E] float64."""
        return self.weight.astype(np.float64)[np.asarray(ids)]


class Dense(Layer):
    """y = act(x @ weight.T + bias) over the last axis; weight [O, F], bias [O]. Packed:
    "weight" as 32-wide panels [ceil(O/32), F, 32] (no gates to keep together: a streamed
    row reads each panel as one contiguous stream) and "bias" [ceil(O/32) * 32]."""
    kind = "Dense"
    weight_names = ("weight", "bias")
    optional_parts = ("bias",)

    def __init__(self, name, weight, bias=None, *, activation="linear"):
        super().__init__(name)
        owner = f"Dense {name!r}"
        weight = np.asarray(weight)
        if weight.ndim != 2 or 0 in weight.shape:
            raise ShapeError(f"{owner}: weight must be a non-empty [out, in] matrix, got shape {weight.shape}")
        self.weight = _as_f32("weight", owner, weight, weight.shape)
        self.bias = _as_f32("bias", owner, bias, (weight.shape[0],)) if bias is not None else None
        if activation not in DENSE_ACTIVATIONS:
            raise UnsupportedError(f"{owner}: activation {activation!r} is not supported; "
                                   f"expected one of {DENSE_ACTIVATIONS}")
        self.activation = activation

    @property
    def input_size(self) -> int:
        return self.weight.shape[1]

    @property
    def output_size(self) -> int:
        return self.weight.shape[0]

    def config(self):
        return {"name": self.name, "in_features": self.input_size,
                "out_features": self.output_size, "activation": self.activation}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], weights["weight"], weights.get("bias"), activation=config["activation"])

    @classmethod
    def _check_attributes(cls, config, owner):
        _positive_int(owner, "in_features", config.get("in_features"))
        _positive_int(owner, "out_features", config.get("out_features"))
        if config.get("activation") not in DENSE_ACTIVATIONS:
            raise UnsupportedError(f"{owner}: activation {config.get('activation')!r} is not supported")

    @classmethod
    def packed_shapes(cls, config):
        nb = nblocks(config["out_features"], DENSE_LANES)
        return {"weight": (nb, config["in_features"], DENSE_LANES), "bias": (nb * DENSE_LANES,)}

    def _pack(self):
        out = {"weight": pack_panels(self.weight, 1, DENSE_LANES)}
        if self.bias is not None:
            out["bias"] = pack_bias(self.bias, 1, DENSE_LANES)
        return out

    @classmethod
    def _unpack(cls, config, packed):
        O = config["out_features"]
        out = {"weight": unpack_panels(packed["weight"], 1, O, DENSE_LANES)}
        if "bias" in packed:
            out["bias"] = unpack_bias(packed["bias"], 1, O, DENSE_LANES)
        return out

    @classmethod
    def infer(cls, node, graph):
        return _infer_features(node, graph, node.config["in_features"], node.config["out_features"])

    @classmethod
    def make_core(cls, config, packed):
        return _core.DenseCore(config, packed)

    @classmethod
    def plan(cls, node, plan):
        x = node.inputs[0]
        plan.op("dense", node, node.core, x=plan.buffer(x), y=plan.buffer(node.outputs[0]),
                time=plan.slot_of(x), in_f=node.config["in_features"], out_f=node.config["out_features"])

    def reference(self, x):
        """x [..., F] -> [..., O] in float64."""
        y = np.asarray(x, dtype=np.float64) @ self.weight.T.astype(np.float64)
        if self.bias is not None:
            y = y + self.bias
        return apply_dense_activation(self.activation, y)


# ------------------------------------------------------------------ glue
# layers without weights that only move or combine tensors (the plan's own operations)


class Merge(Layer):
    """Combine the `parts` equal slices of the last axis: sum, mul or ave (Keras
    Bidirectional merge modes; concat needs no layer). [.., parts*F] -> [.., F]."""
    kind = "Merge"
    MODES = ("sum", "mul", "ave")     # index: the kernels' code (lrt_plan.h LRT_MERGE_*)

    def __init__(self, name, mode, features, parts=2):
        super().__init__(name)
        if mode not in self.MODES:
            raise UnsupportedError(f"Merge {name!r}: mode {mode!r} is not one of {self.MODES}")
        self.mode = mode
        self.features = _positive_int(f"Merge {name!r}", "features", features)
        self.parts = _positive_int(f"Merge {name!r}", "parts", parts)

    @property
    def output_size(self):
        return self.features

    def config(self):
        return {"name": self.name, "mode": self.mode, "features": self.features, "parts": self.parts}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], config["mode"], config["features"], config["parts"])

    @classmethod
    def infer(cls, node, graph):
        cfg = node.config
        return _infer_features(node, graph, cfg["features"] * cfg["parts"], cfg["features"])

    @classmethod
    def plan(cls, node, plan):
        cfg, x = node.config, node.inputs[0]
        plan.op("merge", node, x=plan.buffer(x), y=plan.buffer(node.outputs[0]), time=plan.slot_of(x),
                in_f=cfg["features"] * cfg["parts"], out_f=cfg["features"], parts=cfg["parts"],
                mode=cls.MODES.index(cfg["mode"]))


class LastState(Layer):
    """A recurrent layer's final state [D, B, H] as features [B, D*H] (directions
    concatenated): the "last output" of a layer that does not return sequences."""
    kind = "LastState"

    def __init__(self, name, directions, hidden_size):
        super().__init__(name)
        self.directions = _positive_int(f"LastState {name!r}", "directions", directions)
        self.hidden_size = _positive_int(f"LastState {name!r}", "hidden_size", hidden_size)

    @property
    def output_size(self):
        return self.directions * self.hidden_size

    def config(self):
        return {"name": self.name, "directions": self.directions, "hidden_size": self.hidden_size}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], config["directions"], config["hidden_size"])

    @classmethod
    def infer(cls, node, graph):
        D, H = _need_state(node, graph)
        return [("static", D * H)]

    @classmethod
    def time_inputs(cls, node):
        return []   # its output is a last output: no time axis

    @classmethod
    def plan(cls, node, plan):
        cfg = node.config
        plan.op("last_state", node, x=plan.buffer(node.inputs[0]), y=plan.buffer(node.outputs[0]),
                in_f=cfg["hidden_size"], ndir=cfg["directions"])


def _need_state(node, graph) -> tuple[int, int]:
    """Check that a LastState / SelectDirection reads a state of its config's size: (D, H)."""
    x = node.inputs[0]
    graph.need(x, node, "input")
    D, H = node.config["directions"], node.config["hidden_size"]
    if graph.forms[x] != ("state", D, H):
        raise ShapeError(f"{node.kind} {node.name!r} expects a state ({D}, B, {H}), gets {graph.forms[x]}")
    return D, H


class Mask(Layer):
    """Keras masking: which time steps count. mode "nonzero_ids": token id != 0 (Embedding
    mask_zero); mode "value": any feature != value (the Masking layer, whose masked steps'
    features also become 0). Outputs [mask [T, B] uint8, x (masked for "value")]."""
    kind = "Mask"
    MODES = ("nonzero_ids", "value")

    def __init__(self, name, mode, value=0.0, features=None):
        super().__init__(name)
        if mode not in self.MODES:
            raise UnsupportedError(f"Mask {name!r}: mode {mode!r} is not one of {self.MODES}")
        self.mode, self.value = mode, float(value)
        self.features = None if features is None else _positive_int(f"Mask {name!r}", "features", features)
        if mode == "value" and self.features is None:
            raise ShapeError(f"Mask {name!r}: mode 'value' needs the number of features")

    def config(self):
        return {"name": self.name, "mode": self.mode, "value": self.value, "features": self.features}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], config["mode"], config["value"], config["features"])

    @classmethod
    def infer(cls, node, graph):
        x = node.inputs[0]
        graph.need(x, node, "input")
        if node.config["mode"] == "nonzero_ids":
            if graph.forms[x][0] != "ids":  # (an Embedding earlier in the list settles the ids)
                raise ShapeError(f"Mask {node.name!r} expects token ids, gets {graph.forms[x]}")
        else:
            graph.settle(x, ("seq", node.config["features"]))
        return [("mask",), graph.forms[x]]

    @classmethod
    def plan(cls, node, plan):
        cfg, x, outs = node.config, node.inputs[0], node.outputs
        if cfg["mode"] == "nonzero_ids":
            plan.alias(outs[1], plan.buffer(x))       # the ids pass through unchanged
            plan.op("mask_ids", node, x=plan.buffer(x), y=plan.buffer(outs[0]), time=plan.slot_of(x))
        else:
            plan.op("mask_value", node, x=plan.buffer(x), y=plan.buffer(outs[0]), time=plan.slot_of(x),
                    in_f=cfg["features"], value=cfg["value"], mask_out=plan.buffer(outs[1]) if outs[1] else -1)


class Join(Layer):
    """Combine several tensors of the same form (sequences [T, B, F_i] or last outputs
    [B, F_i]): concat on the last axis, or elementwise sum/sub/mul/ave/max/min (Keras
    Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum). Inputs: the tensors."""
    kind = "Join"
    MODES = ("concat", "sum", "sub", "mul", "ave", "max", "min")   # index: LRT_JOIN_*

    def __init__(self, name, mode, features):
        super().__init__(name)
        owner = f"Join {name!r}"
        if mode not in self.MODES:
            raise UnsupportedError(f"{owner}: mode {mode!r} is not one of {self.MODES}")
        if not isinstance(features, (list, tuple)) or len(features) < 2:
            raise ShapeError(f"{owner}: needs a list of at least two input sizes, got {features!r}")
        self.mode = mode
        self.features = [_positive_int(owner, "features", f) for f in features]
        if mode != "concat" and len(set(self.features)) != 1:
            raise ShapeError(f"{owner}: {mode} needs inputs of one size, got {self.features}")
        if mode == "sub" and len(self.features) != 2:
            raise ShapeError(f"{owner}: sub takes exactly two inputs")

    @property
    def output_size(self):
        return sum(self.features) if self.mode == "concat" else self.features[0]

    def config(self):
        return {"name": self.name, "mode": self.mode, "features": list(self.features)}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], config["mode"], config["features"])

    @staticmethod
    def _out_features(config) -> int:
        return sum(config["features"]) if config["mode"] == "concat" else config["features"][0]

    @classmethod
    def infer(cls, node, graph):
        ins = [t for t in node.inputs if t]
        feats = node.config["features"]
        if len(ins) != len(feats):
            raise ShapeError(f"Join {node.name!r} has {len(ins)} inputs for {len(feats)} sizes")
        kinds = set()
        for t, f in zip(ins, feats):
            graph.need(t, node, "input")
            if graph.forms[t][0] == "static":
                if graph.forms[t][1] != f:
                    raise ShapeError(f"Join {node.name!r} expects {f} features from {t!r}, "
                                     f"gets {graph.forms[t][1]}")
            else:
                graph.settle(t, ("seq", f))
            kinds.add(graph.forms[t][0])
        if len(kinds) != 1:
            raise ShapeError(f"Join {node.name!r} cannot join sequences with last outputs")
        return [(kinds.pop(), cls._out_features(node.config))]

    @classmethod
    def time_inputs(cls, node):
        return node.inputs

    @classmethod
    def plan(cls, node, plan):
        cfg = node.config
        tensors = [t for t in node.inputs if t]
        slots = {plan.slot_of(t) for t in tensors} - {-1}
        plan.same_time(node, slots)
        plan.op("join", node, y=plan.buffer(node.outputs[0]), time=min(slots) if slots else -1,
                out_f=cls._out_features(cfg), mode=cls.MODES.index(cfg["mode"]),
                ins=[plan.buffer(t) for t in tensors], in_feats=list(cfg["features"]))


class ReverseTime(Layer):
    """A sequence [T, B, F] in reverse time order: Keras returns a go_backwards layer's
    output sequence in the order it processed the steps (last input step first)."""
    kind = "ReverseTime"

    def __init__(self, name, features):
        super().__init__(name)
        self.features = _positive_int(f"ReverseTime {name!r}", "features", features)

    def config(self):
        return {"name": self.name, "features": self.features}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], config["features"])

    @classmethod
    def infer(cls, node, graph):
        x = node.inputs[0]
        graph.need(x, node, "input")
        graph.settle(x, ("seq", node.config["features"]))
        return [graph.forms[x]]

    @classmethod
    def cannot_stream(cls, config):
        return (f"ReverseTime {config['name']!r} reorders the whole sequence: it cannot stream; "
                f"use Model.run")

    @classmethod
    def plan(cls, node, plan):
        x = node.inputs[0]
        plan.op("reverse_time", node, x=plan.buffer(x), y=plan.buffer(node.outputs[0]), time=plan.slot_of(x),
                in_f=node.config["features"])


class SelectDirection(Layer):
    """One direction of a state [D, B, H] as a one-direction state [1, B, H] (Keras
    Bidirectional return_state gives each direction's final state on its own)."""
    kind = "SelectDirection"

    def __init__(self, name, directions, direction, hidden_size):
        super().__init__(name)
        owner = f"SelectDirection {name!r}"
        self.directions = _positive_int(owner, "directions", directions)
        self.hidden_size = _positive_int(owner, "hidden_size", hidden_size)
        if isinstance(direction, bool) or not isinstance(direction, int) or not 0 <= direction < directions:
            raise ShapeError(f"{owner}: direction must be in [0, {directions}), got {direction!r}")
        self.direction = direction

    def config(self):
        return {"name": self.name, "directions": self.directions, "direction": self.direction,
                "hidden_size": self.hidden_size}

    @classmethod
    def from_config(cls, config, weights):
        return cls(config["name"], config["directions"], config["direction"], config["hidden_size"])

    @classmethod
    def infer(cls, node, graph):
        _, H = _need_state(node, graph)
        return [("state", 1, H)]

    @classmethod
    def time_inputs(cls, node):
        return []   # its output is a state: no time axis

    @classmethod
    def plan(cls, node, plan):
        cfg = node.config
        plan.op("select_direction", node, x=plan.buffer(node.inputs[0]), y=plan.buffer(node.outputs[0]),
                in_f=cfg["hidden_size"], dir=cfg["direction"])


#: every layer kind by name: what the generic code (graph, plan, model, file checks) loops over
LAYER_KINDS = {cls.kind: cls for cls in (LSTM, GRU, RNN, Embedding, Dense, Merge, LastState, Mask,
                                         ReverseTime, SelectDirection, Join)}
