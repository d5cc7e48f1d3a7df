"""PyTorch -> lstm_rt: nn.LSTM / GRU / RNN (stacked, bidirectional, batch_first, proj_size)
and their Cell versions as they are; any other module (Sequential, language models,
classifiers) from the dataflow of its forward(), traced with torch.fx.

PyTorch's conventions, mapped onto lstm_rt's ONNX ones:
- gate order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h; PyTorch's GRU applies r after
  R_h h (ONNX linear_before_reset=1);
- bias_ih and bias_hh are ONNX's Wb and Rb;
- batch_first changes the layout of input and output only, never of h_0/c_0/h_n/c_n,
  which stay [num_layers * D, B, H] (layer-major, then direction).
forward() may use Embedding, nn.LSTM/GRU/RNN (with pack_padded_sequence /
pad_packed_sequence: a lengths input), Linear, activations (log_softmax and softmax over
the last dim), h_n[k], y[:, -1], torch.cat / + / * of sequences or last outputs, dropout,
and zero initial states. A converted module is run once on random inputs and compared with
the conversion; a mismatch raises ConversionError instead of returning a model that
computes something else. The module is left as it was (training mode, dtype, grads).
"""
from __future__ import annotations

import os
import re
import warnings

import numpy as np

from lstm_rt.layers import GRU, LSTM, RNN, Dense, Embedding, Join, LastState, SelectDirection, activation
from lstm_rt.model import Model, Node, Port

from . import ConversionError, _refusal

LSTM_ORDER = [0, 3, 1, 2]   # torch i,f,g,o -> onnx i,o,f,c
GRU_ORDER = [1, 0, 2]       # torch r,z,n   -> onnx z,r,h


def _torch():
    try:
        import torch
    except ImportError:
        raise ConversionError("converting PyTorch models needs torch: pip install torch==2.13.0") from None
    return torch


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _gates(a: np.ndarray, order) -> np.ndarray:
    """Reorder the gate blocks of a [G*H, ...] array."""
    return np.concatenate([b for b in (np.split(a, len(order))[i] for i in order)])


def load_state_dict(module, path):
    """Load a state_dict file into `module` (torch.load with weights_only=True: no code runs)."""
    torch = _torch()
    try:
        sd = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:   # torch's own message runs to paragraphs: its first line is the cause
        why = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise ConversionError(f"{path}: not a loadable weights-only state_dict ({type(e).__name__}: {why})") from None
    if not isinstance(sd, dict):
        raise ConversionError(f"{path}: expected a state_dict (a dict of tensors), got {type(sd).__name__}")
    own = module.state_dict()
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd) \
            and not any(k.startswith("module.") for k in own):
        sd = {k[len("module."):]: v for k, v in sd.items()}   # saved from nn.DataParallel / DDP
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(v)} {what} (e.g. {v[0]!r})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if v]
        raise ConversionError(f"{path}: the state_dict does not fit {type(module).__name__}: keys "
                              f"{', '.join(parts)}; load it into the module that saved it")
    try:
        module.load_state_dict(sd)
    except Exception as e:
        why = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise ConversionError(f"{path}: the state_dict does not fit {type(module).__name__}: {why}") from None
    return module


# ------------------------------------------------------------------ recurrent


def _recurrent_layers(mod, prefix):
    """lstm_rt specs of each layer of an nn.LSTM / GRU / RNN."""
    torch = _torch()
    nn = torch.nn
    kind = type(mod).__name__ if type(mod) in (nn.LSTM, nn.GRU, nn.RNN) else None
    if kind is None:
        for base in (nn.LSTM, nn.GRU, nn.RNN):
            if isinstance(mod, base):
                kind = base.__name__
    D = 2 if mod.bidirectional else 1
    H = mod.hidden_size
    proj = getattr(mod, "proj_size", 0) or 0
    layers = []
    for k in range(mod.num_layers):
        ws, rs, bs, ps = [], [], [], []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w = _np(getattr(mod, "weight_ih" + sfx))
            r = _np(getattr(mod, "weight_hh" + sfx))
            if mod.bias:
                b = np.concatenate([_np(getattr(mod, "bias_ih" + sfx)), _np(getattr(mod, "bias_hh" + sfx))])
            else:
                b = np.zeros(2 * w.shape[0], np.float32)
            if kind in ("LSTM", "GRU"):
                order = LSTM_ORDER if kind == "LSTM" else GRU_ORDER
                w, r = _gates(w, order), _gates(r, order)
                b = np.concatenate([_gates(half, order) for half in np.split(b, 2)])
            ws.append(w)
            rs.append(r)
            bs.append(b)
            if proj:
                ps.append(_np(getattr(mod, "weight_hr" + sfx)))
        direction = "bidirectional" if D == 2 else "forward"
        name = f"{prefix}l{k}"
        if kind == "LSTM":
            layers.append(LSTM(name, np.stack(ws), np.stack(rs), np.stack(bs),
                               proj=np.stack(ps) if proj else None, direction=direction, hidden_size=H))
        elif kind == "GRU":
            layers.append(GRU(name, np.stack(ws), np.stack(rs), np.stack(bs), direction=direction,
                              linear_before_reset=True, hidden_size=H))
        else:
            act = "Relu" if mod.nonlinearity == "relu" else "Tanh"
            layers.append(RNN(name, np.stack(ws), np.stack(rs), np.stack(bs), direction=direction,
                              activations=[activation(act)] * D, hidden_size=H))
    return kind, layers


def _recurrent_model(mod, name):
    """nn.LSTM/GRU/RNN as PyTorch calls it: input (+ h_0, c_0) -> output, h_n (, c_n)."""
    kind, layers = _recurrent_layers(mod, "")
    seq = "BTF" if mod.batch_first else "TBF"
    nodes, x = [], "input"
    lstm = kind == "LSTM"
    for L in layers:
        k = L.name
        nodes.append(Node(L, [x, None, f"{k}/h0", f"{k}/c0" if lstm else None],
                          [f"{k}/y", f"{k}/hn", f"{k}/cn" if lstm else None]))
        x = f"{k}/y"
    ks = [L.name for L in layers]
    inputs = [Port("input", "input", seq), Port("h_0", [f"{k}/h0" for k in ks], "DBH")]
    outputs = [Port("output", x, seq), Port("h_n", [f"{k}/hn" for k in ks], "DBH")]
    if lstm:
        inputs.append(Port("c_0", [f"{k}/c0" for k in ks], "DBH"))
        outputs.append(Port("c_n", [f"{k}/cn" for k in ks], "DBH"))
    return Model(nodes, inputs, outputs, name=name, metadata={"source": "torch", "class": type(mod).__name__})


def _cell_model(mod, name):
    """nn.LSTMCell / GRUCell / RNNCell: input [B, I], hx [B, H] (, cx) -> h' (, c')."""
    torch = _torch()
    nn = torch.nn
    w, r = _np(mod.weight_ih)[None], _np(mod.weight_hh)[None]
    b = (np.concatenate([_np(mod.bias_ih), _np(mod.bias_hh)])[None] if mod.bias
         else np.zeros((1, 2 * w.shape[1]), np.float32))
    if isinstance(mod, nn.LSTMCell):
        w, r = _gates(w[0], LSTM_ORDER)[None], _gates(r[0], LSTM_ORDER)[None]
        b = np.concatenate([_gates(h, LSTM_ORDER) for h in np.split(b[0], 2)])[None]
        layer = LSTM("cell", w, r, b)
    elif isinstance(mod, nn.GRUCell):
        w, r = _gates(w[0], GRU_ORDER)[None], _gates(r[0], GRU_ORDER)[None]
        b = np.concatenate([_gates(h, GRU_ORDER) for h in np.split(b[0], 2)])[None]
        layer = GRU("cell", w, r, b, linear_before_reset=True)
    else:
        layer = RNN("cell", w, r, b, activations=[activation("Relu" if mod.nonlinearity == "relu" else "Tanh")])
    lstm = isinstance(mod, nn.LSTMCell)
    node = Node(layer, ["input", None, "hx", "cx" if lstm else None], ["y", "h", "c" if lstm else None])
    inputs = [Port("input", "input", "BF"), Port("hx", "hx", "BH")] + ([Port("cx", "cx", "BH")] if lstm else [])
    outputs = [Port("h", "h", "BH")] + ([Port("c", "c", "BH")] if lstm else [])
    return Model([node], inputs, outputs, name=name, metadata={"source": "torch", "class": type(mod).__name__})


# ------------------------------------------------------------ forward() as a graph
#
# A module that is not one of the known classes is read from what its forward() does:
# torch.fx traces forward() symbolically with the torch.nn modules as leaves (the
# recurrent layers, Embedding, Linear, activations stay single calls) and the packing
# functions wrapped, so the graph is the real dataflow, whatever order the children were
# declared in. The graph is then interpreted over symbolic values: input and internal
# tensors (with their role: token ids, a sequence, lengths, a state, a last output),
# packed sequences, zero states and plain Python values (sizes, devices).

PACKING = ("pack_padded_sequence", "pad_packed_sequence")
IDENTITY_METHODS = ("contiguous", "cpu", "cuda", "to", "detach", "clone", "float", "long", "int",
                    "type_as", "requires_grad_")
ACT_FUNCS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax",
             "log_softmax": "log_softmax"}
ACT_MODULES = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax",
               "LogSoftmax": "log_softmax"}
JOIN_FUNCS = {"add": "sum", "sub": "sub", "mul": "mul", "maximum": "max", "minimum": "min"}
HINT = "or export the module to ONNX"
HINT_UNKNOWN = " (lstm_rt converts nn.LSTM/GRU/RNN, Embedding, Linear, activations and the glue between them)"


class _Problem(Exception):
    """One op of forward() lstm_rt cannot compute (message: the op and what to do)."""


class _Specialize(Exception):
    """An argument with a default that can only be read as that default (an LSTM's
    `state=None`): trace again with it fixed."""


class _Axes:
    """The batch/time order of a sequence, shared by the tensors derived from it step by
    step; bf None until a recurrent layer or pack_padded_sequence says."""

    def __init__(self, bf=None):
        self.bf = bf


class _T:
    """A runtime tensor. kind: "?" (an input not used yet), "seq" ([.., F] per step),
    "ids" (token ids), "lens" (lengths [B]), "state" ([L*D, B, H]: parts = [(tensor, D)]),
    "static" ([B, F], no time axis). size: F, or H of a state. last: for a recurrent
    layer's output sequence, (its last layer's node, forward?, lengths tensor or None)."""

    def __init__(self, name, kind, size=None, axes=None, parts=None, last=None, lens=None):
        self.name, self.kind, self.size, self.axes = name, kind, size, axes
        self.parts, self.last, self.lens = parts, last, lens
        self.dense = None   # the Dense node that computed it (activations fuse into it)


class _Packed:
    def __init__(self, seq, lens):
        self.seq, self.lens = seq, lens


class _Zeros:
    """torch.zeros(...) and friends: as an initial state, the default."""


class _Py:
    """A plain value: a constant, a size, a device, a parameter tensor."""

    def __init__(self, value=None):
        self.value = value


class _Poison:
    """The result of an op that was refused: its uses are not reported again."""


def _leaf_types(nn):
    """Modules traced as one call (subclasses too: the check run catches an overridden forward)."""
    return (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell, nn.Embedding, nn.Linear,
            nn.Dropout, nn.Dropout1d, nn.AlphaDropout, nn.Identity)


def _fx_name(target):
    return getattr(target, "__name__", str(target))


def _proxying(fn):
    """fn as a single graph call when any argument is a Proxy (as torch.fx.wrap does for
    functions reached through a module attribute, which fx cannot patch)."""
    import functools

    import torch.fx as fx

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        found = []
        fx.node.map_aggregate((args, kwargs), lambda a: found.append(a) if isinstance(a, fx.Proxy) else None)
        if found:
            return found[0].tracer.create_proxy("call_function", fn, args, kwargs)
        return fn(*args, **kwargs)
    wrapper.__lstm_rt_wraps__ = fn
    return wrapper


def _trace(module, concrete):
    """torch.fx graph of module.forward, torch.nn modules as leaves, packing as calls."""
    torch = _torch()
    import torch.fx as fx
    import torch.nn.utils.rnn as rnn_utils
    originals = {n: getattr(rnn_utils, n) for n in PACKING}
    wrapped = {n: _proxying(f) for n, f in originals.items()}
    patched = []   # (namespace dict, key, old value): module attributes and forward globals

    def patch(ns, key, value):
        patched.append((ns, key, ns[key]))
        ns[key] = value

    try:
        for n in PACKING:
            patch(rnn_utils.__dict__, n, wrapped[n])
        for m in module.modules():
            g = getattr(type(m).forward, "__globals__", None)
            if g is None or g is rnn_utils.__dict__:
                continue
            for key, value in list(g.items()):
                for n, f in originals.items():
                    if value is f:
                        patch(g, key, wrapped[n])
        leaves = _leaf_types(torch.nn)

        class Tracer(fx.Tracer):
            def is_leaf_module(self, m, qualname):
                return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

        return Tracer().trace(module, concrete_args=concrete or None)
    finally:
        for ns, key, old in reversed(patched):
            ns[key] = old


class _ForwardReader:
    """Interprets a traced forward() into lstm_rt nodes and ports."""

    def __init__(self, module, graph, where, concrete):
        self.torch = _torch()
        self.concrete = concrete
        self.module, self.graph, self.where = module, graph, where
        self.mods = dict(module.named_modules())
        self.nodes: list[Node] = []
        self.problems: list[tuple] = []
        self.placeholders: dict[str, _T] = {}
        self.defaults: dict[str, object] = {}
        self.env: dict = {}
        self.users: dict = {}
        self.names: set[str] = set()
        self.sorted_lengths = False   # some pack_padded_sequence enforces sorted lengths
        self.vocab = None             # the smallest vocabulary an ids input feeds
        self.state_sizes: dict[str, tuple] = {}   # state input -> (L*D, H) for the check run

    # ---- helpers
    def unique(self, base):
        n = base.replace(".", "_") or "layer"
        while n in self.names:
            n += "_"
        self.names.add(n)
        return n

    def add(self, layer, inputs, outputs):
        self.nodes.append(Node(layer, inputs, outputs))

    def claim(self, t, kind, what):
        """t must be (or, for an input not used yet, becomes) a tensor of this kind."""
        if not isinstance(t, _T):
            raise _Problem(f"{what} reads {type(t).__name__.strip('_').lower()} where lstm_rt needs a tensor")
        if t.kind == "?":
            t.kind = kind
            if kind in ("seq", "ids") and t.axes is None:
                t.axes = _Axes()
        elif t.kind != kind:
            raise _Problem(f"{what} reads a {t.kind} tensor where lstm_rt needs a {kind}")
        return t

    def bind(self, axes, bf, what):
        if axes.bf is None:
            axes.bf = bool(bf)
        elif axes.bf != bool(bf):
            raise _Problem(f"{what}: the sequence is {'batch' if axes.bf else 'time'}-major, the layer "
                           f"{'batch' if bf else 'time'}-major")

    def value(self, a):
        import torch.fx as fx
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, (tuple, list)):
            return tuple(self.value(x) for x in a)
        if isinstance(a, dict):
            return {k: self.value(v) for k, v in a.items()}
        return _Py(a)

    # ---- the graph
    def run(self):
        import inspect
        params = inspect.signature(self.module.forward).parameters
        for n in self.graph.nodes:
            for a in n.all_input_nodes:
                self.users[a] = self.users.get(a, 0) + 1
        for n in self.graph.nodes:
            try:
                if n.op == "placeholder":
                    p = params.get(n.target)
                    base = re.sub(r"_\d+$", "", n.target)
                    if p is None and base in self.concrete:   # fx renames an argument fixed to its default
                        self.env[n] = _Py(self.concrete[base])
                        continue
                    if p is not None and p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                        raise _Problem(f"forward(*{n.target}) / **kwargs: give forward() named arguments")
                    if p is not None and p.default is not p.empty:
                        self.defaults[n.target] = p.default
                    self.env[n] = self.placeholders.setdefault(n.target, _T(n.target, "?"))
                elif n.op == "output":
                    self.result = self.value(n.args[0])
                else:
                    args, kwargs = self.value(n.args), self.value(n.kwargs)
                    if any(isinstance(v, _Poison) for v in _flat((args, kwargs))):
                        self.env[n] = _Poison()
                        if n.op == "call_module" and not self.known_module(self.mods[n.target]):
                            self.op_module(n, args, kwargs)   # still named: every unknown module at once
                        continue
                    self.env[n] = getattr(self, "op_" + n.op.replace("call_", ""))(n, args, kwargs)
            except _Problem as e:
                op = type(self.mods[n.target]).__name__ if n.op == "call_module" else \
                    n.target if isinstance(n.target, str) else _fx_name(n.target)
                self.problems.append((op, str(e)))
                self.env[n] = _Poison()
        return self

    def op_get_attr(self, n, args, kwargs):
        obj = self.module
        for part in n.target.split("."):
            obj = getattr(obj, part)
        return _Py(obj)

    def known_module(self, mod):
        nn = self.torch.nn
        return isinstance(mod, _leaf_types(nn)) or type(mod).__name__ in ACT_MODULES

    def op_module(self, n, args, kwargs):
        nn = self.torch.nn
        mod = self.mods[n.target]
        cls = type(mod).__name__
        what = f"{cls} {n.target!r}"
        if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.AlphaDropout, nn.Identity)):
            return args[0]
        if isinstance(mod, (nn.LSTM, nn.GRU, nn.RNN)):
            return self.recurrent(n, mod, args, kwargs, what)
        if isinstance(mod, nn.Embedding):
            return self.embedding(n, mod, args[0], what)
        if isinstance(mod, nn.Linear):
            w = mod.weight
            return self.linear(n, args[0], w, mod.bias, what)
        if cls in ACT_MODULES:
            dim = getattr(mod, "dim", -1) if cls in ("Softmax", "LogSoftmax") else -1
            return self.activation(n, args[0], ACT_MODULES[cls], dim, what)
        if isinstance(mod, (nn.LSTMCell, nn.GRUCell, nn.RNNCell)):
            raise _Problem(f"{what} called in forward(): a Python loop over time steps; use nn."
                           f"{cls[:-4]} over the sequence (or convert the cell on its own)")
        raise _Problem(f"module {what}")

    def op_method(self, n, args, kwargs, name=None):
        name = name or n.target
        x = args[0]
        if name in ("new_zeros", "zero_"):
            return _Zeros()
        if name in IDENTITY_METHODS:
            dt = [a.value for a in args[1:] + tuple(kwargs.values()) if isinstance(a, _Py)]
            if any(d in (self.torch.float64, self.torch.float16, self.torch.bfloat16) for d in dt):
                raise _Problem(f".{name}() to another float type: lstm_rt computes in float32")
            return x
        if name in ("size", "dim") or isinstance(x, _Py):
            return _Py()
        if name in ACT_FUNCS:
            return self.activation(n, x, ACT_FUNCS[name], _softmax_dim(name, args, kwargs), f".{name}()")
        if name == "squeeze" and isinstance(x, _T) and x.kind == "state":
            dim = args[1].value if len(args) > 1 else kwargs.get("dim", _Py(None)).value
            if dim in (0, None) and sum(d for _, d in x.parts) == 1:
                return self.state_index(n, x, 0, scalar=True)
        raise _Problem(f"op .{name}() (node {n.name!r})")

    def op_function(self, n, args, kwargs):
        name = _fx_name(getattr(n.target, "__lstm_rt_wraps__", n.target))
        if name == "getitem":
            import torch.fx as fx
            index = n.args[1]
            if isinstance(index, fx.Node) or (isinstance(index, tuple) and any(isinstance(i, fx.Node) for i in index)):
                raise _Problem(f"indexing with a computed index (node {n.name!r}): lstm_rt reads h_n[k] or "
                               f"y[:, -1] with constant k")
            return self.getitem(n, args[0], index)
        if name in ("getattr",):
            return _Py()
        if name in ("dropout", "alpha_dropout", "feature_alpha_dropout", "contiguous"):
            return args[0]
        if name in ("zeros", "zeros_like", "new_zeros"):
            return _Zeros()
        if name == "squeeze" and isinstance(args[0], _T):   # torch.squeeze(h_n, 0)
            return self.op_method(n, args, kwargs, "squeeze")
        if name == "_assert_is_none":
            return _Py()
        if name in ACT_FUNCS:
            return self.activation(n, args[0], ACT_FUNCS[name], _softmax_dim(name, args, kwargs), f"{name}()")
        if name == "linear":
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            b = args[2] if len(args) > 2 else kwargs.get("bias", _Py(None))
            if not isinstance(w, _Py) or not isinstance(b, _Py):
                raise _Problem("linear() with computed weights: lstm_rt needs them constant")
            return self.linear(n, args[0], w.value, b.value, "linear()")
        if name == "pack_padded_sequence":
            return self.pack(n, args, kwargs)
        if name == "pad_packed_sequence":
            return self.pad(n, args, kwargs)
        if name == "cat":
            dim = args[1].value if len(args) > 1 else kwargs.get("dim", _Py(0)).value
            return self.cat(n, list(args[0]), dim)
        if name in JOIN_FUNCS and len(args) == 2 and all(isinstance(a, _T) for a in args):
            return self.join(n, list(args), JOIN_FUNCS[name], f"{name}()")
        if all(isinstance(a, _Py) for a in _flat((args, kwargs))):
            return _Py()   # arithmetic on sizes
        raise _Problem(f"op {name}() (node {n.name!r})")

    # ---- layers
    def recurrent(self, n, mod, args, kwargs, what):
        x = args[0]
        hx = args[1] if len(args) > 1 else kwargs.get("hx", _Py(None))
        packed = isinstance(x, _Packed)
        seq = self.claim(x.seq if packed else x, "seq", what)
        if not packed:
            self.bind(seq.axes, mod.batch_first, what)
        if seq.size is not None and seq.size != mod.input_size:
            raise _Problem(f"{what} takes {mod.input_size} features, gets {seq.size}")
        seq.size = mod.input_size
        kind, layers = _recurrent_layers(mod, self.unique(n.target) + "_")
        lstm = kind == "LSTM"
        D = 2 if mod.bidirectional else 1
        Hr, H = layers[0].output_size, layers[0].hidden_size
        if isinstance(hx, _Py) and hx.value is None or isinstance(hx, _Zeros):
            h0 = c0 = None
        elif lstm and isinstance(hx, tuple) and len(hx) == 2:
            h0, c0 = hx
        elif lstm:
            if isinstance(hx, _T) and hx.kind == "?" and hx.name in self.defaults:
                raise _Specialize(hx.name)
            raise _Problem(f"{what}: hx must be (h_0, c_0)")
        else:
            h0, c0 = hx, None
        h0s = self.initial(h0, layers, D, Hr, what, "h_0")
        c0s = self.initial(c0, layers, D, H, what, "c_0") if lstm else [None] * len(layers)
        lens = x.lens.name if packed else None
        cur = seq.name
        hs, cs = [], []
        for k, L in enumerate(layers):
            outs = [f"{L.name}/y", f"{L.name}/h", f"{L.name}/c" if lstm else None]
            self.add(L, [cur, lens, h0s[k], c0s[k]], outs)
            cur = outs[0]
            hs.append((outs[1], D))
            cs.append((outs[2], D))
        y = _T(cur, "seq", D * Hr, _Axes(mod.batch_first), last=(self.nodes[-1], D == 1, lens), lens=lens)
        if packed:
            y = _Packed(y, x.lens)
        h_n = _T(None, "state", Hr, parts=hs)
        if lstm:
            return (y, (h_n, _T(None, "state", H, parts=cs)))
        return (y, h_n)

    def initial(self, v, layers, D, H, what, slot):
        """Per layer, the tensor its initial state is read from (None: zeros)."""
        if v is None or isinstance(v, _Zeros) or (isinstance(v, _Py) and v.value is None):
            return [None] * len(layers)
        t = self.claim(v, "state", f"{what} {slot}")
        if t.parts is None:   # an input: one tensor per layer, bound together by its port
            t.parts = [(f"{t.name}/{L.name}", D) for L in layers]
            t.size = H
            self.state_sizes[t.name] = (len(layers) * D, H)
        if [d for _, d in t.parts] != [D] * len(layers) or t.size != H:
            raise _Problem(f"{what}: {slot} does not match its {len(layers)} layers of {D} x {H}")
        return [name for name, _ in t.parts]

    def embedding(self, n, mod, x, what):
        ids = self.claim(x, "ids", what)
        if mod.max_norm is not None:
            raise _Problem(f"{what} with max_norm (it renormalizes rows at lookup): renormalize the "
                           f"weights once and drop max_norm")
        if ids.name not in self.placeholders:
            raise _Problem(f"{what} reads computed ids: lstm_rt looks up the model's input ids")
        name = self.unique(n.target)
        self.add(Embedding(name, _np(mod.weight)), [ids.name], [name])
        self.vocab = min(self.vocab or mod.num_embeddings, mod.num_embeddings)
        return _T(name, "seq", mod.embedding_dim, ids.axes)

    def linear(self, n, x, weight, bias, what):
        if isinstance(x, _T) and x.kind == "?":
            self.claim(x, "seq", what)
        if not isinstance(x, _T) or x.kind not in ("seq", "static"):
            raise _Problem(f"{what} on a {getattr(x, 'kind', type(x).__name__)} value: lstm_rt applies "
                           f"Linear to sequences or last outputs (h_n[k], y[:, -1])")
        if x.size is not None and x.size != weight.shape[1]:
            raise _Problem(f"{what} takes {weight.shape[1]} features, gets {x.size}")
        x.size = weight.shape[1]
        name = self.unique(n.target if isinstance(n.target, str) and n.op == "call_module" else n.name)
        layer = Dense(name, _np(weight), _np(bias) if bias is not None else None)
        self.add(layer, [x.name], [name])
        out = _T(name, x.kind, layer.output_size, x.axes)
        out.dense = (self.nodes[-1], self.users.get(n, 0))
        return out

    def activation(self, n, x, act, dim, what):
        if not isinstance(x, _T) or x.dense is None or x.dense[0].layer.activation != "linear":
            raise _Problem(f"{what} not directly after a Linear: lstm_rt applies activations in Dense heads")
        rank = 3 if x.kind == "seq" else 2
        if dim is None or not -rank <= dim < rank or dim % rank != rank - 1:
            raise _Problem(f"{what} over dim {dim}: lstm_rt normalizes over the last (features) dim; "
                           f"pass dim=-1")
        node, users = x.dense
        if users != 1:
            raise _Problem(f"{what} of a Linear output that is also used elsewhere")
        d = node.layer
        node.layer = Dense(d.name, d.weight, d.bias, activation=act)
        out = _T(x.name, x.kind, x.size, x.axes)
        out.dense = (node, self.users.get(n, 0))
        return out

    def pack(self, n, args, kwargs):
        names = ("input", "lengths", "batch_first", "enforce_sorted")
        a = dict(zip(names, args)) | kwargs
        x, lens = a["input"], a["lengths"]
        bf = a.get("batch_first", _Py(False)).value
        seq = self.claim(x, "seq", "pack_padded_sequence")
        self.bind(seq.axes, bf, "pack_padded_sequence")
        lens = self.claim(lens, "lens", "pack_padded_sequence lengths")
        if lens.name not in self.placeholders:
            raise _Problem("pack_padded_sequence of computed lengths: pass the lengths as an argument of forward()")
        if a.get("enforce_sorted", _Py(True)).value:
            self.sorted_lengths = True
        return _Packed(seq, lens)

    def pad(self, n, args, kwargs):
        names = ("sequence", "batch_first", "padding_value", "total_length")
        a = dict(zip(names, args)) | kwargs
        p = a["sequence"]
        if not isinstance(p, _Packed):
            raise _Problem("pad_packed_sequence of something other than a recurrent layer's packed output")
        if a.get("padding_value", _Py(0.0)).value not in (0, 0.0):
            raise _Problem("pad_packed_sequence with a padding_value other than 0: lstm_rt pads with zeros")
        y = p.seq
        return (_T(y.name, "seq", y.size, _Axes(bool(a.get("batch_first", _Py(False)).value)), last=y.last,
                   lens=y.lens), p.lens)

    def getitem(self, n, x, index):
        if isinstance(x, tuple):
            return x[index]
        if isinstance(x, _Py):
            return _Py()
        if not isinstance(x, _T):
            raise _Problem(f"indexing a {type(x).__name__.strip('_').lower()}")
        if x.kind == "?":
            raise _Problem(f"indexing the argument {x.name!r} itself: lstm_rt reads whole sequences")
        idx = index if isinstance(index, tuple) else (index,)
        if x.kind == "state" and len(idx) == 1 and isinstance(idx[0], int):
            return self.state_index(n, x, idx[0], scalar=True)
        if x.kind == "seq":
            return self.last_step(n, x, idx)
        raise _Problem(f"indexing a {x.kind} tensor with {index!r}: lstm_rt reads h_n[k] or y[:, -1]")

    def state_index(self, n, t, k, scalar):
        """h_n[k]: layer k // D's direction k % D, as [B, H] features."""
        if t.parts is None:
            raise _Problem(f"indexing the state argument {t.name!r}: pass the state to the recurrent layer")
        total = sum(d for _, d in t.parts)
        if not -total <= k < total:
            raise _Problem(f"h_n[{k}] of {total} states")
        k %= total
        for src, D in t.parts:
            if k < D:
                break
            k -= D
        base = self.unique(n.name)
        if D > 1:
            sel = f"{base}/direction{k}"
            self.add(SelectDirection(sel, D, k, t.size), [src], [sel])
            src = sel
        self.add(LastState(base, 1, t.size), [src], [base])
        return _T(base, "static", t.size)

    def last_step(self, n, y, idx):
        """y[:, -1] (batch-major) / y[-1] (time-major): a forward layer's final state."""
        if y.axes is None or y.axes.bf is None:
            raise _Problem("indexing a sequence whose batch/time order is not known yet")
        full = (slice(None), slice(None), slice(None))
        idx = tuple(idx) + full[len(idx):] if Ellipsis not in idx else tuple(idx[:idx.index(Ellipsis)])
        t_axis = 1 if y.axes.bf else 0
        ok = len(idx) == 3 and idx[t_axis] == -1 and all(
            i == t_axis or s == slice(None) for i, s in enumerate(idx))
        if not ok:
            raise _Problem(f"y[{', '.join(map(_index_str, idx))}]: lstm_rt reads the last step (y[:, -1] "
                           f"batch-major, y[-1] time-major) or h_n[k]")
        if y.last is None:
            raise _Problem("y[:, -1] of a value other than a recurrent layer's output: index before the "
                           "Linear, or read h_n[-1]")
        if not y.last[1]:
            raise _Problem("y[:, -1] of a bidirectional layer (its backward half is not a final state): "
                           "read h_n[-2] and h_n[-1]")
        node, _, lens = y.last
        if lens is not None:
            raise _Problem("y[:, -1] of a packed sequence is 0 past each length: read h_n[-1] instead")
        name = self.unique(n.name)
        self.add(LastState(name, 1, node.layer.output_size), [node.outputs[1]], [name])
        return _T(name, "static", node.layer.output_size)

    def cat(self, n, parts, dim):
        if not parts or not all(isinstance(p, _T) for p in parts):
            raise _Problem("cat() of values lstm_rt does not compute")
        kinds = {p.kind for p in parts}
        if kinds == {"state"} and dim == 0:
            out = _T(None, "state", parts[0].size, parts=[q for p in parts for q in p.parts])
            if len({p.size for p in parts}) != 1:
                raise _Problem("cat() of states of different sizes")
            return out
        rank = 3 if kinds == {"seq"} else 2
        if len(kinds) != 1 or kinds.pop() not in ("seq", "static") or dim % rank != rank - 1:
            raise _Problem(f"cat() on dim {dim}: lstm_rt concatenates features (dim=-1) of sequences or of "
                           f"last outputs")
        return self.join(n, parts, "concat", "cat()")

    def join(self, n, parts, mode, what):
        kinds = {p.kind for p in parts}
        if len(kinds) != 1 or kinds.pop() not in ("seq", "static") or any(p.size is None for p in parts):
            raise _Problem(f"{what} of {[p.kind for p in parts]}: lstm_rt joins sequences or last outputs")
        if parts[0].kind == "seq":
            a = {p.axes.bf for p in parts if p.axes is not None} - {None}
            if len(a) > 1:
                raise _Problem(f"{what} of batch-major and time-major sequences")
        name = self.unique(n.name)
        layer = Join(name, mode, [p.size for p in parts])
        self.add(layer, [p.name for p in parts], [name])
        axes = next((p.axes for p in parts if p.axes is not None and p.axes.bf is not None), parts[0].axes)
        return _T(name, parts[0].kind, layer.output_size, axes)

    # ---- ports
    def ports(self):
        inputs = []
        for name, t in self.placeholders.items():
            if t.kind == "?":
                if name not in self.defaults and not self.problems:
                    self.problems.append((name, f"argument {name!r} of forward() reaches nothing lstm_rt "
                                                f"computes"))
                continue
            if t.kind == "seq":
                inputs.append(Port(name, name, "BTF" if t.axes.bf else "TBF"))
            elif t.kind == "ids":
                inputs.append(Port(name, name, "BT" if t.axes.bf else "TB", "int64"))
            elif t.kind == "lens":
                inputs.append(Port(name, name, "B", "int64"))
            elif t.kind == "state":
                inputs.append(Port(name, [p for p, _ in t.parts], "DBH"))
        outs = list(self.result) if isinstance(self.result, tuple) else [self.result]
        index = [i for i, v in enumerate(outs) if isinstance(v, _T) and v.kind in ("seq", "static", "state")]
        if any(outs[i].kind != "state" for i in index):   # returned states are what a Stream carries
            index = [i for i in index if outs[i].kind != "state"]
        self.out_index = index
        tensors = [outs[i] for i in index]
        if not tensors and not any(isinstance(v, _Poison) for v in _flat(self.result)):
            self.problems.append(("output", "forward() returns nothing lstm_rt computes (a sequence, h_n[k] "
                                            "or y[:, -1])"))
        outputs = []
        for i, v in enumerate(tensors):
            port = "output" if i == 0 else f"output_{i}"
            if v.kind == "seq":
                outputs.append(Port(port, v.name, "BTF" if v.axes and v.axes.bf else "TBF"))
            elif v.kind == "static":
                outputs.append(Port(port, v.name, "BF"))
            else:
                outputs.append(Port(port, [p for p, _ in v.parts], "DBH"))
        return inputs, outputs


def _softmax_dim(name, args, kwargs):
    """The dim an activation call normalizes over (None: softmax's implicit dim, refused)."""
    if len(args) > 1:
        return args[1].value
    return kwargs.get("dim", _Py(None if name in ("softmax", "log_softmax") else -1)).value


def _flat(x):
    if isinstance(x, (tuple, list)):
        return [y for v in x for y in _flat(v)]
    if isinstance(x, dict):
        return [y for v in x.values() for y in _flat(v)]
    return [x]


def _index_str(s):
    if isinstance(s, slice):
        return ":" if s == slice(None) else f"{s.start or ''}:{s.stop or ''}"
    return "..." if s is Ellipsis else repr(s)


def _check_run(module, model, reader, where, dtype):
    """Run forward() and the conversion on the same random inputs: they must agree."""
    torch = _torch()
    rng = np.random.default_rng(0)
    T, B = 5, 3
    feeds, args = {}, {}
    for name, t in reader.placeholders.items():
        if t.kind == "?":
            continue
        seq = (B, T) if t.axes is not None and t.axes.bf else (T, B)
        if t.kind == "seq":
            a = rng.normal(size=seq + (t.size,)).astype(np.float32)
            args[name] = torch.from_numpy(a).to(dtype)
        elif t.kind == "ids":
            a = rng.integers(0, reader.vocab, size=seq)
            args[name] = torch.from_numpy(a)
        elif t.kind == "lens":
            a = np.array([T, T - 2, 1][:B])
            if not reader.sorted_lengths:
                a = a[[1, 0, 2]]
            args[name] = torch.from_numpy(a)
        else:
            a = rng.normal(size=(reader.state_sizes[name][0], B, reader.state_sizes[name][1])).astype(np.float32)
            args[name] = torch.from_numpy(a).to(dtype)
        feeds[name] = a
    with torch.no_grad():
        out = module(**args)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    want = [outs[i] for i in reader.out_index]
    got = model.run(feeds)
    for port, w in zip(model.outputs, want):
        w = w.detach().cpu().double().numpy()
        g = got[port.name]
        if g.shape != w.shape or not np.allclose(g, w, atol=1e-4, rtol=1e-4):
            err = f"max error {np.abs(g - w).max():.2g}" if g.shape == w.shape else f"shape {w.shape} vs {g.shape}"
            raise ConversionError(f"{where}: the conversion computes something else than forward() (output "
                                  f"{port.name!r}: {err}); convert its parts separately {HINT}")


def _from_forward(module, name, verify, dtype):
    torch = _torch()
    cls = type(module).__name__
    where = f"{cls}.forward"
    concrete = {}
    for _ in range(16):
        try:
            graph = _trace(module, concrete)
        except Exception as e:  # noqa: BLE001 - fx raises TraceError, TypeError, ... from user code
            why = str(e).splitlines()[0][:90] if str(e) else ""
            raise ConversionError(f"{where} cannot be traced with torch.fx ({type(e).__name__}: {why}): keep "
                                  f"Python control flow off tensors, {HINT}") from None
        reader = _ForwardReader(module, graph, where, concrete)
        try:
            reader.run()
        except _Specialize as s:
            concrete[s.args[0]] = reader.defaults[s.args[0]]
            continue
        break
    inputs, outputs = reader.ports()
    if reader.problems:
        unknown = any(t.startswith(("module ", "op ")) for _, t in reader.problems)
        raise ConversionError(_refusal(where, reader.problems, HINT_UNKNOWN if unknown else ""))
    try:
        model = Model(reader.nodes, inputs, outputs, name=name,
                      metadata={"source": "torch", "class": cls} | ({"source_dtype": str(dtype).replace("torch.", "")}
                                                                     if dtype != torch.float32 else {}))
    except Exception as e:   # the graph checks name the inconsistency
        raise ConversionError(f"{where}: {e}") from None
    if verify:
        _check_run(module, model, reader, where, dtype)
    return model


def from_torch(module, *, state_dict=None, name=None, verify=True) -> Model:
    """An lstm_rt.Model from a PyTorch module (optionally loading a state_dict file first).

    nn.LSTM / GRU / RNN give a model with inputs input (+ h_0, c_0) and outputs output,
    h_n (, c_n), exactly as the module's forward; Cells take input [B, I], hx, cx. Any
    other module is read from its forward(): its arguments become the inputs (token ids,
    sequences, lengths for pack_padded_sequence, initial states), what it returns the
    outputs ("output", "output_1", ...; returned states are left out: a Stream carries
    them). float64 modules convert with their weights cast to float32 (with a warning).
    The module itself is left as it was.
    """
    torch = _torch()
    nn = torch.nn
    if isinstance(module, torch.jit.ScriptModule):
        raise ConversionError(f"{getattr(module, 'original_name', type(module).__name__)} is a torch.jit "
                              f"script/trace module: lstm_rt reads the Python nn.Module; pass the module before "
                              f"scripting, or torch.onnx.export it and use from_onnx")
    if not isinstance(module, nn.Module):
        raise ConversionError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        module = module.module
    if state_dict is not None:
        load_state_dict(module, state_dict)
    cls = type(module).__name__
    name = name or cls
    dtypes = {p.dtype for p in module.parameters()} | {b.dtype for b in module.buffers() if b.is_floating_point()}
    if dtypes - {torch.float32, torch.float64}:
        raise ConversionError(f"{cls} has {sorted(str(d) for d in dtypes)} weights: lstm_rt computes in float32; "
                              f"call module.float() first")
    dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    if dtype == torch.float64:
        warnings.warn(f"{cls}: float64 weights are cast to float32 (lstm_rt computes in float32)", stacklevel=2)
    training = {m: m.training for m in module.modules()}
    try:
        module.eval()
        if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
            return _recurrent_model(module, name)
        if isinstance(module, (nn.LSTMCell, nn.GRUCell, nn.RNNCell)):
            return _cell_model(module, name)
        return _from_forward(module, name, verify, dtype)
    finally:
        for m, mode in training.items():
            m.training = mode
