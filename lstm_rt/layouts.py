"""Layouts: how a model's external tensors map onto the internal forms (lstm_rt.graph),
the one place that knows TBF, BTDH, DBH and the rest.

A Port's `layout` names its axes, one letter each: T time steps, B batch (sequences),
D directions, F features, H units of a recurrent layer:

    sequences     "TBF" / "BTF" (time- or batch-major), "TB" / "BT" (token ids),
                  "TDBH" / "BTDH" (an ONNX Y: directions apart, `groups` = D),
                  "BF" (a single-step cell: one time step, no T axis)
    states        "DBH" / "BDH", "BH" (a one-direction state without its D axis); a state
                  port may bind a list of tensors, concatenated on D (PyTorch's h_n of
                  stacked layers)
    lengths       "B"

Inputs are brought to the internal forms here (to_internal); outputs are laid out by the
plan's executor (`_core.Executor`, codes LAYOUT_CODES) without a Python-level copy, so a
step's outputs cost no re-layout in Python. A step's arrays are the sequences' without T.
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError

SEQ_LAYOUTS = ("TBF", "BTF", "TB", "BT", "TDBH", "BTDH", "BF")
STATE_LAYOUTS = ("DBH", "BDH", "BH")
LAYOUTS = SEQ_LAYOUTS + STATE_LAYOUTS + ("B",)


def port_shape(layout: str, form: tuple, groups: int = 1) -> tuple:
    """The external shape of a port with this layout over a tensor of this form (state
    ports: the form of their tensors together); None marks the dynamic T and B."""
    T = B = None
    F = form[1] if len(form) > 1 else None
    shapes = {
        "TBF": (T, B, F), "BTF": (B, T, F), "TB": (T, B), "BT": (B, T),
        "TDBH": (T, groups, B, (F or 0) // groups), "BTDH": (B, T, groups, (F or 0) // groups),
        "DBH": (F, B, form[-1]), "BDH": (B, F, form[-1]), "BH": (B, form[-1]), "BF": (B, F),
    }
    return shapes.get(layout, (B,))


def as_array(name, value):
    if not isinstance(value, np.ndarray):
        raise ShapeError(f"input {name!r}: expected a numpy array, got {type(value).__name__}")
    return value


def native_float32(name, a):
    """a as native-order float32: float32 of either byte order is accepted (a big-endian
    .npy file holds the same numbers), any other dtype is refused."""
    if a.dtype.kind != "f" or a.dtype.itemsize != 4:
        raise ShapeError(f"input {name!r}: expected dtype float32, got {a.dtype}")
    return a if a.dtype.isnative else a.astype(np.float32)


#: the largest batch (or time steps x batch) the kernels index with 32-bit ints
MAX_ROWS = 2**31 - 1



def bind_feeds(graph, x, *, streaming: bool) -> dict:
    """The feeds of a call as a dict of input name -> array, checked against the graph's
    inputs; a bare array binds the only sequence input."""
    if isinstance(x, dict):
        feeds = dict(x)
        known = {p.name for p in graph.inputs}
        unknown = set(feeds) - known
        if unknown:
            raise ShapeError(f"unknown input(s) {sorted(unknown)}; the model's inputs are {sorted(known)}")
    else:
        seq = [p for p in graph.inputs if p.is_sequence]
        if len(seq) != 1:
            raise ShapeError(f"this model has {len(seq)} sequence inputs "
                             f"({[p.name for p in seq]}): pass a dict")
        feeds = {seq[0].name: x}
    for p in graph.inputs:
        if p.is_sequence and p.name not in feeds:
            raise ShapeError(f"missing input {p.name!r}")
        if streaming and not p.is_sequence and p.name in feeds:
            what = "set Stream.state instead" if p.layout in STATE_LAYOUTS else \
                "a stream's sequences have no fixed length"
            raise ShapeError(f"input {p.name!r} cannot be fed to a stream: {what}")
    return feeds

def to_internal(graph, feeds, *, time_axis: bool):
    """External arrays -> internal tensors (contiguous, in the graph's forms); returns
    (env: tensor -> array, B). time_axis False: the sequence inputs are one step each,
    without their time axis (Stream.step)."""
    env, T, B = {}, None, None

    def agree(name, what, have, got):
        if have is not None and have != got:
            raise ShapeError(f"input {name!r}: {what} is {got} but other inputs say {have}")
        return got

    for p in graph.inputs:
        if p.name not in feeds or not p.is_sequence:
            continue
        a = as_array(p.name, feeds[p.name])
        form = graph.forms[p.tensor]
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
                a = native_float32(p.name, a)
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
    for p in graph.inputs:
        if p.name not in feeds or p.is_sequence:
            continue
        a = as_array(p.name, feeds[p.name])
        if p.layout == "B":
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise ShapeError(f"input {p.name!r}: expected a 1-d integer array of lengths, got "
                                 f"shape {a.shape} dtype {a.dtype}")
            B = agree(p.name, "the batch size", B, a.shape[0])
            for src in sorted(graph.lens_limits.get(p.tensor, ())):
                t_src = env[graph.seq_port(src).tensor].shape[0] if src in feeds else T
                if a.size and (a.min() < 0 or a.max() > t_src):
                    raise ShapeError(f"input {p.name!r}: lengths must be in [0, {t_src}] (the "
                                     f"time steps of input {src!r}), got values in "
                                     f"[{a.min()}, {a.max()}]")
            # a copy: the kernels read the lengths after this check, and the caller's array
            # could change in between (another thread)
            env[p.tensor] = np.array(a, dtype=np.int32)
        else:
            a = native_float32(p.name, a)
            _, D, H = graph.state_form(p)
            want = {"DBH": (D, B, H), "BDH": (B, D, H), "BH": (B, H)}[p.layout]
            if a.shape != want:
                raise ShapeError(f"input {p.name!r}: expected shape {want} ({p.layout}), got {a.shape}")
            a = a[None] if p.layout == "BH" else a if p.layout == "DBH" else np.swapaxes(a, 0, 1)
            d0 = 0
            for t in p.tensors:  # a list of tensors splits on D
                d = graph.forms[t][1]
                env[t] = np.ascontiguousarray(a[d0:d0 + d])
                d0 += d
    return env, B
