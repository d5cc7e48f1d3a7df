"""fp32 panels -> fp16 / int8 panels, and back (for inspection and tests).

int8 is symmetric with one scale per output column of the panel (= one per output row of
the original weight matrix): scale = max|w| / 127, q = round(w / scale). Panel rows are
grouped by four ([nblk, K4, gw, 4], K padded to a multiple of 4), the operand order of the
kernels' 4-way byte dot product (and of two 16-bit pairwise multiply-adds).
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError

WEIGHT_TYPES = ("fp32", "fp16", "int8")
FP16_MAX = 65504.0


def quantize_int8(panels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[nblk, K, gw] float32 -> (int8 [nblk, ceil(K/4), gw, 4], scale float32 [nblk*gw])."""
    nb, K, gw = panels.shape
    amax = np.abs(panels).max(axis=1) if K else np.zeros((nb, gw), np.float32)  # [nb, gw]
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(panels / scale[:, None, :]), -127, 127).astype(np.int8)
    return group_rows_by_4(q), np.ascontiguousarray(scale.reshape(-1))


def group_rows_by_4(q: np.ndarray) -> np.ndarray:
    """int8 panels [nblk, K, gw] -> [nblk, ceil(K/4), gw, 4], zero padded."""
    nb, K, gw = q.shape
    K4 = (K + 3) // 4
    q = np.concatenate([q, np.zeros((nb, K4 * 4 - K, gw), np.int8)], axis=1)
    return np.ascontiguousarray(q.reshape(nb, K4, 4, gw).transpose(0, 1, 3, 2))


def ungroup_rows(q: np.ndarray) -> np.ndarray:
    """int8 panels grouped n rows at a time [nblk, Kn, gw, n] -> [nblk, Kn * n, gw]."""
    nb, Kn, gw, n = q.shape
    return np.asarray(q).transpose(0, 1, 3, 2).reshape(nb, Kn * n, gw)


def dequantize_int8(q: np.ndarray, scale: np.ndarray, K: int) -> np.ndarray:
    """Inverse of quantize_int8 up to rounding: float32 [nblk, K, gw]."""
    nb, _, gw, _ = q.shape
    return ungroup_rows(q)[:, :K].astype(np.float32) * np.asarray(scale).reshape(nb, 1, gw)


def to_fp16(panels: np.ndarray, what: str = "weights") -> np.ndarray:
    if panels.size and np.abs(panels).max() > FP16_MAX:
        raise ShapeError(f"{what}: values beyond +-{FP16_MAX:g} do not fit fp16; keep fp32 or use int8")
    return np.ascontiguousarray(panels.astype(np.float16))


def convert_part(arr: np.ndarray, weights: str, what: str) -> dict[str, np.ndarray]:
    """One fp32 panel matrix as `weights` storage: {"": data} or, for int8, also {".scale": s}."""
    if weights == "fp32":
        return {"": arr}
    if weights == "fp16":
        return {"": to_fp16(arr, what)}
    if weights == "int8":
        q, s = quantize_int8(arr)
        return {"": q, ".scale": s}
    raise ShapeError(f"weights must be one of {WEIGHT_TYPES}, got {weights!r}")


def stored_panels(shape: tuple, weights: str) -> dict[str, tuple]:
    """What convert_part makes of fp32 panels of this shape [nblk, K, gw]: suffix ->
    (shape, dtype name)."""
    if weights == "int8":
        nb, K, gw = shape
        return {"": ((nb, (K + 3) // 4, gw, 4), "int8"), ".scale": ((nb * gw,), "float32")}
    return {"": (tuple(shape), "float16" if weights == "fp16" else "float32")}


def panels_as_fp32(packed: dict, key: str, K: int) -> np.ndarray:
    """The fp32 panels of matrix `key`, whatever its storage."""
    a = packed[key]
    if a.dtype == np.int8:
        return dequantize_int8(a, packed[key + ".scale"], K)
    return np.asarray(a, dtype=np.float32)


def quantize_rows_int8(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An embedding table [V, E] -> (int8 [V, E], scale float32 [V]), one scale per row."""
    amax = np.abs(table).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q), scale


def convert_table(table: np.ndarray, weights: str, what: str) -> dict[str, np.ndarray]:
    """An embedding table as `weights` storage: {"": data} (+ {".scale": s} for int8)."""
    if weights == "int8":
        q, s = quantize_rows_int8(table)
        return {"": q, ".scale": s}
    return convert_part(table, weights, what)


def stored_table(shape: tuple, weights: str) -> dict[str, tuple]:
    """What convert_table makes of an fp32 table [V, E]: suffix -> (shape, dtype name)."""
    if weights == "int8":
        return {"": (tuple(shape), "int8"), ".scale": ((shape[0],), "float32")}
    return {"": (tuple(shape), "float16" if weights == "fp16" else "float32")}


def table_as_fp32(packed: dict, key: str) -> np.ndarray:
    a = packed[key]
    if a.dtype == np.int8:
        return a.astype(np.float32) * packed[key + ".scale"][:, None]
    return np.asarray(a, dtype=np.float32)
