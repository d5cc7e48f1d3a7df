"""Pure-numpy reference of every layer, written from the ONNX operator equations.

It is the oracle of the test suite (computed in float64, one sequence at a time,
the plainest possible loops), so it must stay obviously correct rather than fast.

Shapes (time-major, as inside lstm_rt):
    x [T, B, I]; seq_lens [B] or None; h0 [D, B, Hr]; c0 [D, B, H]
    returns y [T, D, B, Hr] (zeros past a sequence's length), h [D, B, Hr], c [D, B, H]

A sequence's final state is its last valid step's; a sequence of length 0 ends in
zeros (as onnxruntime does; the ONNX spec is silent).
"""
from __future__ import annotations

import numpy as np

from .activations import apply_activation, apply_dense_activation
from .layers import GRU, LSTM, RNN, Dense, Embedding


def _clip(layer, x):
    return np.clip(x, -layer.clip, layer.clip) if layer.clip is not None else x


def _lstm_cell(layer: LSTM, d: int, x, h, c):
    """One LSTM step of direction d for one sequence: x [I], h [Hr], c [H]."""
    H = layer.hidden_size
    f, g, hact = layer.direction_activations(d)
    W, R = layer.w[d].astype(np.float64), layer.r[d].astype(np.float64)
    b = layer.b[d].astype(np.float64) if layer.b is not None else np.zeros(8 * H)
    p = layer.p[d].astype(np.float64) if layer.p is not None else np.zeros(3 * H)
    z = W @ x + R @ h + b[:4 * H] + b[4 * H:]
    zi, zo, zf, zc = z[:H], z[H:2 * H], z[2 * H:3 * H], z[3 * H:]
    pi, po, pf = p[:H], p[H:2 * H], p[2 * H:]
    i = apply_activation(f, _clip(layer, zi + pi * c))
    if layer.input_forget:
        fg = 1.0 - i
    else:
        fg = apply_activation(f, _clip(layer, zf + pf * c))
    cc = apply_activation(g, _clip(layer, zc))
    c_new = fg * c + i * cc
    o = apply_activation(f, _clip(layer, zo + po * c_new))
    h_new = o * apply_activation(hact, c_new)
    if layer.proj is not None:
        h_new = layer.proj[d].astype(np.float64) @ h_new
    return h_new, c_new


def _gru_cell(layer: GRU, d: int, x, h):
    H = layer.hidden_size
    f, g = layer.direction_activations(d)
    W, R = layer.w[d].astype(np.float64), layer.r[d].astype(np.float64)
    b = layer.b[d].astype(np.float64) if layer.b is not None else np.zeros(6 * H)
    wb, rb = b[:3 * H], b[3 * H:]
    xw = W @ x + wb
    zr = xw[:2 * H] + R[:2 * H] @ h + rb[:2 * H]
    z = apply_activation(f, _clip(layer, zr[:H]))
    r = apply_activation(f, _clip(layer, zr[H:]))
    if layer.linear_before_reset:
        n_pre = xw[2 * H:] + r * (R[2 * H:] @ h + rb[2 * H:])
    else:
        n_pre = xw[2 * H:] + R[2 * H:] @ (r * h) + rb[2 * H:]
    n = apply_activation(g, _clip(layer, n_pre))
    return (1.0 - z) * n + z * h, None


def _rnn_cell(layer: RNN, d: int, x, h):
    H = layer.hidden_size
    (f,) = layer.direction_activations(d)
    b = layer.b[d].astype(np.float64) if layer.b is not None else np.zeros(2 * H)
    pre = layer.w[d].astype(np.float64) @ x + layer.r[d].astype(np.float64) @ h + b[:H] + b[H:]
    return apply_activation(f, _clip(layer, pre)), None


def recurrent_reference(layer, x, seq_lens=None, h0=None, c0=None, mask=None):
    """Run an LSTM/GRU/RNN spec over x [T, B, I]; see the module docstring for shapes.
    mask [T, B] (Keras masking, instead of seq_lens): a masked step keeps the state and
    outputs it again."""
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    D, H, Hr = layer.num_directions, layer.hidden_size, layer.output_size
    lens = np.full(B, T) if seq_lens is None else np.asarray(seq_lens)
    h0 = np.zeros((D, B, Hr)) if h0 is None else np.asarray(h0, dtype=np.float64)
    is_lstm = isinstance(layer, LSTM)
    c0 = np.zeros((D, B, H)) if (c0 is None or not is_lstm) else np.asarray(c0, dtype=np.float64)
    y = np.zeros((T, D, B, Hr))
    h_out, c_out = h0.copy(), c0.copy()
    for d in range(D):
        reverse = layer.direction == "reverse" or d == 1
        for bi in range(B):
            L = int(lens[bi])
            h, c = h0[d, bi].copy(), c0[d, bi].copy()
            for s in range(L):
                t = L - 1 - s if reverse else s
                if mask is not None and not mask[t, bi]:
                    y[t, d, bi] = 0.0 if layer.zero_output_for_mask else h
                    continue
                if is_lstm:
                    h, c = _lstm_cell(layer, d, x[t, bi], h, c)
                elif isinstance(layer, GRU):
                    h, _ = _gru_cell(layer, d, x[t, bi], h)
                else:
                    h, _ = _rnn_cell(layer, d, x[t, bi], h)
                y[t, d, bi] = h
            if L == 0 and seq_lens is not None:
                h, c = 0.0, 0.0  # onnxruntime zeroes the final state of an empty sequence
            h_out[d, bi] = h
            c_out[d, bi] = c
    return y, h_out, (c_out if is_lstm else None)


def dense_reference(layer: Dense, x):
    """x [..., F] -> [..., O] in float64."""
    y = np.asarray(x, dtype=np.float64) @ layer.weight.T.astype(np.float64)
    if layer.bias is not None:
        y = y + layer.bias
    return apply_dense_activation(layer.activation, y)


def embedding_reference(layer: Embedding, ids):
    """ids [...] int -> [..., E]."""
    return layer.weight.astype(np.float64)[np.asarray(ids)]


def reference_for(layer):
    """The reference function of a layer spec (used by tests and the generic fallback)."""
    if isinstance(layer, (LSTM, GRU, RNN)):
        return recurrent_reference
    if isinstance(layer, Dense):
        return dense_reference
    if isinstance(layer, Embedding):
        return embedding_reference
    raise TypeError(f"no reference for {type(layer).__name__}")
