"""The kernels' weight layout, defined in this one place.

A matrix M [G*H, K] of G gates with H units each is packed into panels
[nblk, K, G*8] (nblk = ceil(H/8)): for each 8-unit block, every k holds the 8
weights of each gate side by side, so a kernel streams a block's weights once and
ends holding all gates of 8 units. Gate-blocked vectors (biases) use [nblk, G, 8].
Units past H in the last block are zero padding. Dense layers (no gates to keep together)
use 32-wide panels [ceil(O/32), K, 32]: a streamed row then reads each panel as one
contiguous stream, which the prefetchers serve better than four 8-wide ones.

Each layer kind (lstm_rt.layers) says which named arrays it packs, of which shapes, and
builds them with these primitives from its canonical (ONNX layout) weights; the packed
arrays are what the .lrt file stores and what the Cython core reads in place.
"""
from __future__ import annotations

import numpy as np

from .quantize import group_rows_by_4, ungroup_rows

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
