"""PyTorch -> lstm_rt: nn.LSTM / GRU / RNN (stacked, bidirectional, batch_first, proj_size),
their Cell versions, Embedding, Linear (+ activation), Sequential, and the usual
language-model module Embedding -> LSTM/GRU/RNN -> Linear.

PyTorch's conventions, mapped onto lstm_rt's ONNX ones:
- gate order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h; PyTorch's GRU applies r after
  R_h h (ONNX linear_before_reset=1);
- bias_ih and bias_hh are ONNX's Wb and Rb;
- batch_first changes the layout of input and output only, never of h_0/c_0/h_n/c_n,
  which stay [num_layers * D, B, H] (layer-major, then direction).
A module converted from its children (rather than a known class) is run once on a random
input and compared with the conversion; a mismatch raises ConversionError instead of
returning a model that computes something else.
"""
from __future__ import annotations

import os

import numpy as np

from lstm_rt.layers import GRU, LSTM, RNN, Dense, Embedding, activation
from lstm_rt.model import Model, Node, Port

from . import ConversionError

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
    except Exception as e:
        raise ConversionError(f"{path}: not a loadable weights-only state_dict ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict):
        raise ConversionError(f"{path}: expected a state_dict (a dict of tensors), got {type(sd).__name__}")
    try:
        module.load_state_dict(sd)
    except Exception as e:
        raise ConversionError(f"{path}: the state_dict does not fit {type(module).__name__}: {e}") from None
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


# ------------------------------------------------------------- feed-forward

_ACTS = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}


def _flatten(mods):
    """Children of nested Sequentials, in order; Dropout and Identity vanish (no-ops at inference)."""
    nn = _torch().nn
    out = []
    for m in mods:
        if isinstance(m, nn.Sequential):
            out.extend(_flatten(list(m.children())))
        elif not isinstance(m, (nn.Dropout, nn.Identity)):
            out.append(m)
    return out


def _chain(mods, where, problems):
    """A list of modules -> [(kind, spec-or-module)] with activations folded into the Linear
    before them; unknown modules are recorded in problems."""
    nn = _torch().nn
    steps = []
    for i, m in enumerate(mods):
        cls = type(m).__name__
        if isinstance(m, nn.Embedding):
            if m.max_norm is not None:
                problems.append(f"Embedding with max_norm (module {i} of {where})")
            steps.append(("emb", Embedding(f"embedding{i}", _np(m.weight))))
        elif isinstance(m, nn.Linear):
            steps.append(("dense", Dense(f"linear{i}", _np(m.weight),
                                         _np(m.bias) if m.bias is not None else None)))
        elif cls in _ACTS or isinstance(m, nn.Softmax):
            act = "softmax" if isinstance(m, nn.Softmax) else _ACTS[cls]
            if isinstance(m, nn.Softmax) and m.dim not in (-1, 2, None):
                problems.append(f"Softmax over dim {m.dim} (module {i} of {where}); only the last axis")
            elif steps and steps[-1][0] == "dense" and steps[-1][1].activation == "linear":
                d = steps[-1][1]
                steps[-1] = ("dense", Dense(d.name, d.weight, d.bias, activation=act))
            else:
                problems.append(f"{cls} not directly after a Linear (module {i} of {where})")
        elif isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
            steps.append(("rnn", m))
        else:
            problems.append(f"module {cls} (child {i} of {where})")
    return steps


def _chain_model(steps, name, batch_first):
    """Embedding? -> (recurrent | Dense)* as one model: input -> output (sequence)."""
    nodes, x, first = [], "input", None
    for k, (kind, spec) in enumerate(steps):
        if kind == "rnn":
            _, layers = _recurrent_layers(spec, f"rnn{k}_")
            for L in layers:
                nodes.append(Node(L, [x], [f"{L.name}/y"]))
                x = f"{L.name}/y"
        else:
            nodes.append(Node(spec, [x], [f"{spec.name}/y"]))
            x = f"{spec.name}/y"
        first = first or kind
    seq = "BTF" if batch_first else "TBF"
    in_layout = ("BT" if batch_first else "TB") if first == "emb" else seq
    return Model(nodes, [Port("input", "input", in_layout)], [Port("output", x, seq)], name=name,
                 metadata={"source": "torch"})


def _verify(module, model, batch_first, where):
    """Run the module and the conversion on one random input; they must agree."""
    torch = _torch()
    spec = model.inputs[0]
    rng = np.random.default_rng(0)
    T, B = 5, 2
    shape = tuple(T if (d is None and i == (1 if batch_first else 0)) else B if d is None else d
                  for i, d in enumerate(spec.shape))
    if spec.dtype.startswith("int"):
        vocab = model.layers[0].vocab_size
        x = rng.integers(0, vocab, size=shape)
    else:
        x = rng.normal(size=shape).astype(np.float32)
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    if isinstance(out, (tuple, list)):
        out = out[0]
    want = out.detach().cpu().numpy()
    got = model.run(x)
    if got.shape != want.shape or not np.allclose(got, want, atol=1e-4, rtol=1e-4):
        raise ConversionError(
            f"{where}: its children suggest {' -> '.join(type(L).__name__ for L in model.layers)}, but "
            f"its forward() computes something else (output {want.shape} vs {got.shape}); convert its "
            f"parts separately or export it to ONNX")


def from_torch(module, *, state_dict=None, name=None, verify=True) -> Model:
    """An lstm_rt.Model from a PyTorch module (optionally loading a state_dict file first).

    nn.LSTM / GRU / RNN give a model with inputs input (+ h_0, c_0) and outputs output,
    h_n (, c_n), exactly as the module's forward; Cells take input [B, I], hx, cx;
    Sequential and Embedding -> RNN -> Linear modules give input -> output.
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise ConversionError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    if state_dict is not None:
        load_state_dict(module, state_dict)
    module = module.eval()
    cls = type(module).__name__
    name = name or cls
    where = f"{cls} module"
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        return _recurrent_model(module, name)
    if isinstance(module, (nn.LSTMCell, nn.GRUCell, nn.RNNCell)):
        return _cell_model(module, name)
    problems: list[str] = []
    children = _flatten([module] if isinstance(module, nn.Sequential) else list(module.children()))
    if not children:
        problems.append(f"{cls} has no convertible children")
    steps = _chain(children, where, problems)
    rnns = [s for k, s in steps if k == "rnn"]
    if any(k == "emb" for k, _ in steps[1:]):
        problems.append("an Embedding that is not the first layer")
    if problems:
        raise ConversionError(f"{where}: cannot convert: " + "; ".join(problems))
    batch_first = bool(rnns and rnns[0].batch_first)
    if any(r.batch_first != batch_first for r in rnns):
        raise ConversionError(f"{where}: its recurrent layers disagree on batch_first")
    model = _chain_model(steps, name, batch_first)
    if verify and not isinstance(module, nn.Sequential):
        _verify(module, model, batch_first, where)
    return model
