"""Import trained models into lstm_rt.

    from converters import convert, from_onnx, from_torch
    m = convert("model.onnx")          # framework inferred from the file suffix
    m = from_torch(torch_module)       # nn.LSTM/GRU/RNN, cells, Sequential, LM modules
    m.save("model.lrt", weights="int8")

Each source framework has its own module (onnx.py, ...), imported lazily so that
`import converters` costs nothing and needs none of the frameworks installed.
"""
from __future__ import annotations

import os

from lstm_rt.errors import LstmRtError


class ConversionError(LstmRtError, ValueError):
    """A source model cannot be converted; one short message names the file, the
    unsupported ops, layers or attributes found (each kind once) and what to do instead."""


def _refusal(where, problems, hint="", limit=300):
    """One message of at most `limit` characters where the path and the first problem allow:
    as many problems in full as fit, then how many more and their op/layer kinds (each
    once), then the hint. problems: [(kind, text)]."""
    items = list(dict.fromkeys((kind, text) for kind, text in problems))
    head = f"{where}: cannot convert: "

    def render(k, with_kinds):
        texts = [t for _, t in items[:k]]
        rest = items[k:]
        tail = ""
        if rest:
            kinds = ", ".join(dict.fromkeys(kind or "other" for kind, _ in rest))
            tail = f"; and {len(rest)} more" + (f" ({kinds})" if with_kinds else "")
        return head + "; ".join(texts) + tail + hint

    for k in range(len(items), 0, -1):
        for with_kinds in (True, False):
            msg = render(k, with_kinds)
            if len(msg) <= limit:
                return msg
    return render(1, False)   # the first problem in full, whatever the path makes its length


def from_onnx(model, **kwargs):
    """An lstm_rt.Model from an ONNX file path or onnx.ModelProto (see converters.onnx)."""
    from .onnx import from_onnx as impl
    return impl(model, **kwargs)


def from_keras(model, **kwargs):
    """An lstm_rt.Model from a .keras / .h5 file or a keras.Model (see converters.keras)."""
    from .keras import from_keras as impl
    return impl(model, **kwargs)


def from_torch(module, **kwargs):
    """An lstm_rt.Model from a torch.nn.Module (see converters.torch)."""
    from .torch import from_torch as impl
    return impl(module, **kwargs)


def convert(path, **kwargs):
    """Convert a model file, choosing the converter by suffix (.onnx, .keras, .h5)."""
    p = os.fspath(path)
    suffix = os.path.splitext(p)[1].lower()
    if suffix == ".onnx":
        return from_onnx(p, **kwargs)
    if suffix in (".pt", ".pth"):
        raise ConversionError(f"{p}: a PyTorch file holds weights, not the architecture: call "
                              f"converters.from_torch(module, state_dict={p!r}) with the module "
                              f"that defines it, or export the model to ONNX")
    if suffix in (".keras", ".h5", ".hdf5"):
        return from_keras(p, **kwargs)
    raise ConversionError(f"{p}: unknown model file type {suffix!r}; expected .onnx, .keras or .h5")


__all__ = ["ConversionError", "convert", "from_keras", "from_onnx", "from_torch"]
