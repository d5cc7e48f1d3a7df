"""Layer specs: what each layer computes, its attributes and its weights.

Weights are held in ONE canonical layout, the ONNX operator layout, whatever the
source framework was (converters permute into it):

    LSTM   w [D, 4H, I]   r [D, 4H, Hr]  b [D, 8H]  (Wb then Rb)  p [D, 3H]  proj [D, Hr, H]
           gate order i, o, f, c; peepholes i, o, f; Hr = proj_size or H
    GRU    w [D, 3H, I]   r [D, 3H, H]   b [D, 6H]  gate order z, r, h
    RNN    w [D, H, I]    r [D, H, H]    b [D, 2H]
    Embedding  weight [V, E]        Dense  weight [O, F] (out, in), bias [O]

D is 1 (forward or reverse) or 2 (bidirectional). Every spec validates itself
when built, so a bad shape or attribute fails at conversion, not mid-run.
"""
from __future__ import annotations

import math

import numpy as np

from .activations import (ACTIVATIONS, DENSE_ACTIVATIONS, Activation, activation,  # noqa: F401
                          activations_from_onnx)
from .errors import ShapeError, UnsupportedError

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
    """Base of every layer spec. `name` is the source model's name for the layer."""
    kind = "layer"
    recurrent = False
    # canonical weight names of this layer kind, in file order
    weight_names: tuple[str, ...] = ()

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


# ----------------------------------------------------------------- recurrent


class RecurrentLayer(Layer):
    """Shared attributes of LSTM, GRU and RNN (ONNX semantics)."""
    recurrent = True
    n_gates = 1
    n_acts = 1
    default_acts: tuple[str, ...] = ("Tanh",)

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

    @property
    def has_cell_state(self) -> bool:
        return False

    def _common_config(self) -> dict:
        return {"name": self.name, "input_size": self.input_size, "hidden_size": self.hidden_size,
                "direction": self.direction, "clip": self.clip,
                "activations": [list(a) for a in self.activations],
                "zero_output_for_mask": self.zero_output_for_mask}

    def direction_activations(self, d: int) -> list[Activation]:
        return self.activations[d * self.n_acts:(d + 1) * self.n_acts]


class LSTM(RecurrentLayer):
    """ONNX LSTM (gates i, o, f, c), plus peepholes, coupled input-forget and a
    PyTorch-style output projection h = proj @ (o * h(c)).

    Activations per direction: f (gates, default Sigmoid), g (cell input, Tanh), h (output, Tanh).
    """
    kind = "LSTM"
    n_gates = 4
    n_acts = 3
    default_acts = ("Sigmoid", "Tanh", "Tanh")
    weight_names = ("w", "r", "b", "p", "proj")

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

    @property
    def has_cell_state(self) -> bool:
        return True

    def config(self):
        return {**self._common_config(), "input_forget": self.input_forget,
                "proj_size": self.proj.shape[1] if self.proj is not None else None}


class GRU(RecurrentLayer):
    """ONNX GRU (gates z, r, h). linear_before_reset=True applies r after R_h h (PyTorch,
    Keras reset_after=True); False applies it to h before R_h (the original GRU).

    Activations per direction: f (z and r, default Sigmoid), g (candidate, Tanh).
    """
    kind = "GRU"
    n_gates = 3
    n_acts = 2
    default_acts = ("Sigmoid", "Tanh")
    weight_names = ("w", "r", "b")

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


class RNN(RecurrentLayer):
    """ONNX RNN: h = f(W x + R h + Wb + Rb), f default Tanh."""
    kind = "RNN"
    n_gates = 1
    n_acts = 1
    default_acts = ("Tanh",)
    weight_names = ("w", "r", "b")

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


# -------------------------------------------------------------- feed-forward


class Embedding(Layer):
    """Token ids [..] (int) -> vectors [.., E]: row lookup in weight [V, E]."""
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


class Dense(Layer):
    """y = act(x @ weight.T + bias) over the last axis; weight [O, F], bias [O]."""
    kind = "Dense"
    weight_names = ("weight", "bias")

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


# ------------------------------------------------------------------ glue


class Merge(Layer):
    """Combine the `parts` equal slices of the last axis: sum, mul or ave (Keras
    Bidirectional merge modes; concat needs no layer). [.., parts*F] -> [.., F]."""
    kind = "Merge"
    MODES = ("sum", "mul", "ave")

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


class Join(Layer):
    """Combine several tensors of the same form (sequences [T, B, F_i] or last outputs
    [B, F_i]): concat on the last axis, or elementwise sum/sub/mul/ave/max/min (Keras
    Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum). Inputs: the tensors."""
    kind = "Join"
    MODES = ("concat", "sum", "sub", "mul", "ave", "max", "min")

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


class ReverseTime(Layer):
    """A sequence [T, B, F] in reverse time order: Keras returns a go_backwards layer's
    output sequence in the order it processed the steps (last input step first)."""
    kind = "ReverseTime"

    def __init__(self, name, features):
        super().__init__(name)
        self.features = _positive_int(f"ReverseTime {name!r}", "features", features)

    def config(self):
        return {"name": self.name, "features": self.features}


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


# layers without weights that only move or combine tensors (numpy in model.py)
GLUE = (Merge, LastState, Mask, ReverseTime, SelectDirection, Join)
GLUE_KINDS = tuple(cls.kind for cls in GLUE)
LAYER_KINDS = {cls.kind: cls for cls in (LSTM, GRU, RNN, Embedding, Dense) + GLUE}


def layer_from_config(kind: str, config: dict, weights: dict[str, np.ndarray]) -> Layer:
    """Rebuild a layer spec from `config()` and `weights()` (the model file's content)."""
    cls = LAYER_KINDS.get(kind)
    if cls is None:
        raise UnsupportedError(f"unknown layer kind {kind!r}")
    cfg = dict(config)
    name = cfg.pop("name")
    if cls is Embedding:
        return Embedding(name, weights["weight"])
    if cls is Merge:
        return Merge(name, cfg["mode"], cfg["features"], cfg["parts"])
    if cls is LastState:
        return LastState(name, cfg["directions"], cfg["hidden_size"])
    if cls is Mask:
        return Mask(name, cfg["mode"], cfg["value"], cfg["features"])
    if cls is ReverseTime:
        return ReverseTime(name, cfg["features"])
    if cls is Join:
        return Join(name, cfg["mode"], cfg["features"])
    if cls is SelectDirection:
        return SelectDirection(name, cfg["directions"], cfg["direction"], cfg["hidden_size"])
    if cls is Dense:
        return Dense(name, weights["weight"], weights.get("bias"), activation=cfg["activation"])
    kw = {"direction": cfg["direction"], "clip": cfg["clip"],
          "activations": [Activation(*a) for a in cfg["activations"]],
          "hidden_size": cfg["hidden_size"], "zero_output_for_mask": cfg.get("zero_output_for_mask", False)}
    if cls is LSTM:
        return LSTM(name, weights["w"], weights["r"], weights.get("b"), weights.get("p"),
                    weights.get("proj"), input_forget=cfg["input_forget"], **kw)
    if cls is GRU:
        return GRU(name, weights["w"], weights["r"], weights.get("b"),
                   linear_before_reset=cfg["linear_before_reset"], **kw)
    return RNN(name, weights["w"], weights["r"], weights.get("b"), **kw)


def validate_config(kind: str, config: dict) -> None:
    """Check a layer config read from a file with the same rules the specs apply when built
    (sizes positive, direction/activations/clip valid), without needing its weights."""
    cls = LAYER_KINDS.get(kind)
    if cls is None:
        raise UnsupportedError(f"unknown layer kind {kind!r}")
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise ShapeError(f"{kind}: config must be a dict with a string 'name'")
    owner = f"{kind} {config['name']!r}"
    if cls in GLUE:
        layer_from_config(kind, config, {})
    elif cls is Embedding:
        _positive_int(owner, "vocab_size", config.get("vocab_size"))
        _positive_int(owner, "embedding_size", config.get("embedding_size"))
    elif cls is Dense:
        _positive_int(owner, "in_features", config.get("in_features"))
        _positive_int(owner, "out_features", config.get("out_features"))
        if config.get("activation") not in DENSE_ACTIVATIONS:
            raise UnsupportedError(f"{owner}: activation {config.get('activation')!r} is not supported")
    else:
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
        if kind == "LSTM" and config.get("proj_size") is not None:
            _positive_int(owner, "proj_size", config["proj_size"])
