"""The kernels' weight layout, defined in this one place.

A matrix M [G*H, K] of G gates with H units each is packed into panels
[nblk, K, G*8] (nblk = ceil(H/8)): for each 8-unit block, every k holds the 8
weights of each gate side by side, so a kernel streams a block's weights once and
ends holding all gates of 8 units. Gate-blocked vectors (biases) use [nblk, G, 8].
Units past H in the last block are zero padding. Dense layers (no gates to keep together)
use 32-wide panels [ceil(O/32), K, 32]: a streamed row then reads each panel as one
contiguous stream, which the prefetchers serve better than four 8-wide ones.

pack_* turn a layer spec (canonical ONNX layout) into named packed arrays; these are
what the .lrt file stores and what the Cython core reads in place. unpack_* invert
them (biases come back summed: Wb + Rb, an equivalent model).
"""
from __future__ import annotations

import numpy as np

from .layers import GLUE_KINDS, GRU, LSTM, RNN, Dense, Embedding, Layer
from .quantize import (convert_part, convert_table, group_rows_by_4, panels_as_fp32, table_as_fp32,
                       ungroup_rows)

LANES = 8
DENSE_LANES = 32  # the panel width of Dense weights (lstm_rt/_core.pyx DenseCore agrees)


def aligned(a: np.ndarray, align: int = 64) -> np.ndarray:
    """a as a C-contiguous array at a 64-byte aligned address (a itself when it is one), as
    tensors sit in a mapped .lrt file: the kernels' 32-byte loads never straddle a cache line
    (numpy's 16-byte alignment cost int8 kernels 3-5% and small fp32 ones up to 15%)."""
    a = np.ascontiguousarray(a)
    if a.ctypes.data % align == 0:
        return a
    buf = np.empty(a.nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def nblocks(units: int, lanes: int = LANES) -> int:
    return -(-units // lanes)


def pack_panels(m: np.ndarray, gates: int, lanes: int = LANES) -> np.ndarray:
    """[G*H, K] -> [nblk, K, G*lanes] float32."""
    GH, K = m.shape
    H = GH // gates
    nb = nblocks(H, lanes)
    t = np.zeros((gates, nb * lanes, K), np.float32)
    t[:, :H] = m.reshape(gates, H, K)
    return np.ascontiguousarray(
        t.reshape(gates, nb, lanes, K).transpose(1, 3, 0, 2).reshape(nb, K, gates * lanes))


def unpack_panels(p: np.ndarray, gates: int, units: int, lanes: int = LANES) -> np.ndarray:
    """[nblk, K, G*lanes] -> [G*H, K] (inverse of pack_panels)."""
    nb, K, _ = p.shape
    t = np.asarray(p).reshape(nb, K, gates, lanes).transpose(2, 0, 3, 1).reshape(gates, nb * lanes, K)
    return np.ascontiguousarray(t[:, :units].reshape(gates * units, K))


def pack_bias(v: np.ndarray, gates: int, lanes: int = LANES) -> np.ndarray:
    """[G*H] -> [nblk*G*lanes] float32, gate-blocked."""
    H = v.shape[0] // gates
    nb = nblocks(H, lanes)
    t = np.zeros((gates, nb * lanes), np.float32)
    t[:, :H] = v.reshape(gates, H)
    return np.ascontiguousarray(t.reshape(gates, nb, lanes).transpose(1, 0, 2).reshape(-1))


def unpack_bias(p: np.ndarray, gates: int, units: int, lanes: int = LANES) -> np.ndarray:
    nb = p.shape[0] // (gates * lanes)
    t = np.asarray(p).reshape(nb, gates, lanes).transpose(1, 0, 2).reshape(gates, nb * lanes)
    return np.ascontiguousarray(t[:, :units].reshape(-1))


def repack_older_format(kind: str, config: dict, weights: str, packed: dict, version: int) -> dict:
    """A layer's arrays as a file of format `version` stored them -> today's layout (a copy;
    re-save the model to map it again). Version 1 grouped int8 panel rows by two (now four);
    versions 1-2 gave Dense layers 8-wide panels (now 32). Arrays that are not what the
    old layout implies pass through unchanged: the shape check reports them."""
    if version < 2 and weights == "int8":
        packed = {part: group_rows_by_4(ungroup_rows(a)) if a.dtype == np.int8 and a.ndim == 4 and a.shape[-1] == 2
                  else a for part, a in packed.items()}
    if version < 3 and kind == "Dense" and "weight" in packed:
        packed = _widen_dense_panels(packed, config["out_features"])
    return packed


def _widen_dense_panels(packed: dict, out_features: int) -> dict:
    """8-wide Dense panels -> 32-wide: the same columns in the same order, zero padded."""
    per = DENSE_LANES // LANES   # 8-wide panels per 32-wide one
    nb8 = nblocks(out_features)
    nb = nblocks(out_features, DENSE_LANES)
    out = dict(packed)
    w = np.asarray(packed["weight"])
    if w.shape[:1] != (nb8,) or w.shape[2:3] != (LANES,):
        return out
    pad = np.zeros((nb * per - nb8,) + w.shape[1:], w.dtype)
    w = np.concatenate([w, pad]).reshape((nb, per) + w.shape[1:])
    out["weight"] = aligned(np.swapaxes(w, 1, 2).reshape((nb, w.shape[2], DENSE_LANES) + w.shape[4:]))
    for part, fill in (("weight.scale", 1.0), ("bias", 0.0)):
        if part in packed:
            v = np.asarray(packed[part])
            out[part] = aligned(np.concatenate([v, np.full(nb * DENSE_LANES - v.shape[0], fill, v.dtype)]))
    return out


def _bias(layer, d: int, n: int) -> np.ndarray:
    """Direction d's ONNX bias [2n] (Wb then Rb), zeros when the layer has none."""
    return layer.b[d] if layer.b is not None else np.zeros(2 * n, np.float32)


def pack_layer(layer: Layer) -> dict[str, np.ndarray]:
    """Packed arrays of a layer spec, named "<direction>.<part>" for recurrent layers."""
    out: dict[str, np.ndarray] = {}
    if not layer.weight_names:
        pass  # glue layers have no weights
    elif isinstance(layer, Embedding):
        out["weight"] = layer.weight
    elif isinstance(layer, Dense):
        out["weight"] = pack_panels(layer.weight, 1, DENSE_LANES)
        if layer.bias is not None:
            out["bias"] = pack_bias(layer.bias, 1, DENSE_LANES)
    elif isinstance(layer, LSTM):
        H = layer.hidden_size
        for d in range(layer.num_directions):
            b = _bias(layer, d, 4 * H)
            out[f"{d}.w"] = pack_panels(layer.w[d], 4)
            out[f"{d}.r"] = pack_panels(layer.r[d], 4)
            out[f"{d}.bias"] = pack_bias(b[:4 * H] + b[4 * H:], 4)
            if layer.p is not None:
                out[f"{d}.peep"] = layer.p[d]
            if layer.proj is not None:
                out[f"{d}.proj"] = pack_panels(layer.proj[d], 1)
    elif isinstance(layer, GRU):
        H = layer.hidden_size
        for d in range(layer.num_directions):
            b = _bias(layer, d, 3 * H)
            wb, rb = b[:3 * H], b[3 * H:]
            out[f"{d}.w"] = pack_panels(layer.w[d], 3)
            if layer.linear_before_reset:
                # Rb_h must stay inside r * (R_h h + Rb_h); Rb_z, Rb_r fold into the input bias
                out[f"{d}.bias"] = pack_bias(np.concatenate([wb[:2 * H] + rb[:2 * H], wb[2 * H:]]), 3)
                out[f"{d}.r"] = pack_panels(layer.r[d], 3)
                out[f"{d}.bias_rh"] = pack_bias(
                    np.concatenate([np.zeros(2 * H, np.float32), rb[2 * H:]]), 3)
            else:
                # h-gate: R_h multiplies r * h, so it is a separate product after r is known
                out[f"{d}.bias"] = pack_bias(wb + rb, 3)
                out[f"{d}.r"] = pack_panels(layer.r[d][:2 * H], 2)
                out[f"{d}.r_h"] = pack_panels(layer.r[d][2 * H:], 1)
    elif isinstance(layer, RNN):
        H = layer.hidden_size
        for d in range(layer.num_directions):
            b = _bias(layer, d, H)
            out[f"{d}.w"] = pack_panels(layer.w[d], 1)
            out[f"{d}.r"] = pack_panels(layer.r[d], 1)
            out[f"{d}.bias"] = pack_bias(b[:H] + b[H:], 1)
    else:
        raise TypeError(f"cannot pack {type(layer).__name__}")
    return {k: aligned(v) for k, v in out.items()}


def unpack_layer_weights(kind: str, config: dict, packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical weights (as `Layer.weights()`) from packed arrays; biases come back summed."""
    if kind in GLUE_KINDS:
        return {}
    if kind == "Embedding":
        return {"weight": table_as_fp32(packed, "weight")}
    mats = matrix_parts(kind, config)
    packed = {**packed, **{k: panels_as_fp32(packed, k, K) for k, K in mats.items() if k in packed}}
    if kind == "Dense":
        O = config["out_features"]
        w = {"weight": unpack_panels(packed["weight"], 1, O, DENSE_LANES)}
        if "bias" in packed:
            w["bias"] = unpack_bias(packed["bias"], 1, O, DENSE_LANES)
        return w
    H = config["hidden_size"]
    D = 2 if config["direction"] == "bidirectional" else 1
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    ws, rs, bs, ps, projs = [], [], [], [], []
    for d in range(D):
        ws.append(unpack_panels(packed[f"{d}.w"], G, H))
        bx = unpack_bias(packed[f"{d}.bias"], G, H)
        if kind == "GRU" and not config["linear_before_reset"]:
            rs.append(np.concatenate([unpack_panels(packed[f"{d}.r"], 2, H),
                                      unpack_panels(packed[f"{d}.r_h"], 1, H)]))
            rb = np.zeros_like(bx)
        elif kind == "GRU":
            rs.append(unpack_panels(packed[f"{d}.r"], 3, H))
            rb = unpack_bias(packed[f"{d}.bias_rh"], 3, H)
        else:
            rs.append(unpack_panels(packed[f"{d}.r"], G, H))
            rb = np.zeros_like(bx)
        bs.append(np.concatenate([bx, rb]))
        if kind == "LSTM" and f"{d}.peep" in packed:
            ps.append(np.array(packed[f"{d}.peep"]))
        if kind == "LSTM" and f"{d}.proj" in packed:
            projs.append(unpack_panels(packed[f"{d}.proj"], 1, rs[-1].shape[1]))
    out = {"w": np.stack(ws), "r": np.stack(rs), "b": np.stack(bs)}
    if ps:
        out["p"] = np.stack(ps)
    if projs:
        out["proj"] = np.stack(projs)
    return out


def matrix_parts(kind: str, config: dict) -> dict[str, int]:
    """The packed weight matrices of a layer (the parts fp16/int8 apply to), with their K."""
    if kind == "Embedding" or kind in GLUE_KINDS:
        return {}
    if kind == "Dense":
        return {"weight": config["in_features"]}
    H, I = config["hidden_size"], config["input_size"]
    Hr = config.get("proj_size") or H
    out = {}
    for d in range(2 if config["direction"] == "bidirectional" else 1):
        out[f"{d}.w"] = I
        if kind == "GRU" and not config["linear_before_reset"]:
            out[f"{d}.r"] = H
            out[f"{d}.r_h"] = H
        else:
            out[f"{d}.r"] = Hr
        if kind == "LSTM" and config.get("proj_size"):
            out[f"{d}.proj"] = H
    return out


def convert_packed(kind: str, config: dict, packed: dict, weights: str) -> dict[str, np.ndarray]:
    """fp32 packed arrays -> the same layer with its matrices stored as `weights`."""
    mats = matrix_parts(kind, config)
    if kind in GLUE_KINDS:
        return {}
    if kind == "Embedding":
        return {"weight" + k: aligned(v) for k, v in
                convert_table(packed["weight"], weights, f"Embedding {config['name']!r}").items()}
    out = {}
    for key, arr in packed.items():
        if key in mats:
            for suffix, a in convert_part(arr, weights, f"{kind} {config['name']!r} {key}").items():
                out[key + suffix] = aligned(a)
        else:
            out[key] = arr
    return out


def expected_packed_shapes(kind: str, config: dict, weights: str = "fp32") -> dict[str, tuple]:
    """Shapes (and dtypes) pack_layer + convert_packed produce for a layer of this config;
    a model file must match them exactly (optional parts may be absent), since the kernels
    trust every size. Returns key -> (shape, dtype name)."""
    shapes = _fp32_shapes(kind, config)
    if kind == "Embedding":
        shape = shapes["weight"]
        if weights == "int8":
            return {"weight": (shape, "int8"), "weight.scale": ((shape[0],), "float32")}
        return {"weight": (shape, "float16" if weights == "fp16" else "float32")}
    out = {}
    for key, shape in shapes.items():
        if key in matrix_parts(kind, config) and weights == "int8":
            nb, K, gw = shape
            out[key] = ((nb, (K + 3) // 4, gw, 4), "int8")
            out[key + ".scale"] = ((nb * gw,), "float32")
        elif key in matrix_parts(kind, config) and weights == "fp16":
            out[key] = (shape, "float16")
        else:
            out[key] = (shape, "float32")
    return out


def _fp32_shapes(kind: str, config: dict) -> dict[str, tuple[int, ...]]:
    if kind in GLUE_KINDS:
        return {}
    if kind == "Embedding":
        return {"weight": (config["vocab_size"], config["embedding_size"])}
    if kind == "Dense":
        nb = nblocks(config["out_features"], DENSE_LANES)
        return {"weight": (nb, config["in_features"], DENSE_LANES), "bias": (nb * DENSE_LANES,)}
    H, I = config["hidden_size"], config["input_size"]
    Hr = config.get("proj_size") or H
    nb = nblocks(H)
    D = 2 if config["direction"] == "bidirectional" else 1
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    out = {}
    for d in range(D):
        out[f"{d}.w"] = (nb, I, G * LANES)
        out[f"{d}.bias"] = (nb * G * LANES,)
        if kind == "GRU" and not config["linear_before_reset"]:
            out[f"{d}.r"] = (nb, H, 2 * LANES)
            out[f"{d}.r_h"] = (nb, H, LANES)
        else:
            out[f"{d}.r"] = (nb, Hr, G * LANES)
        if kind == "GRU" and config["linear_before_reset"]:
            out[f"{d}.bias_rh"] = (nb * G * LANES,)
        if kind == "LSTM":
            out[f"{d}.peep"] = (3 * H,)
            if config.get("proj_size"):
                out[f"{d}.proj"] = (nblocks(Hr), H, LANES)
    return out


#: parts a packed layer may omit: a Dense layer's "bias", an LSTM's "<d>.peep"
OPTIONAL_PARTS = ("bias", "peep")
