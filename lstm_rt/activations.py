"""Activation functions: the one table of their names, kernel codes and parameters, and
their numpy definitions (the reference the kernels are tested against).

The kernel codes here are the source: `_core` builds its name -> code maps from these
tables, and tests/test_layers.py checks that the C enums (lrt_kernels.h LRT_SIGMOID...,
LRT_DENSE_*) agree. (A module of its own so that _core can import it: lstm_rt.layers,
which re-exports every name, imports _core.)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import UnsupportedError


class Activation(NamedTuple):
    """One activation function of a recurrent cell, with its ONNX alpha/beta."""
    name: str
    alpha: float = 0.0
    beta: float = 0.0


#: ONNX activation names -> (kernel code, uses alpha, uses beta, default alpha, default beta).
#: Defaults are those of the ONNX operators of the same name (LeakyRelu 0.01,
#: ThresholdedRelu 1.0, HardSigmoid 0.2/0.5, Elu 1.0) and of the former ONNX
#: experimental ops (Affine 1.0/0.0, ScaledTanh 1.0/1.0).
ACTIVATIONS = {
    "Sigmoid":         (0, False, False, 0.0, 0.0),
    "Tanh":            (1, False, False, 0.0, 0.0),
    "Relu":            (2, False, False, 0.0, 0.0),
    "Affine":          (3, True, True, 1.0, 0.0),
    "LeakyRelu":       (4, True, False, 0.01, 0.0),
    "ThresholdedRelu": (5, True, False, 1.0, 0.0),
    "ScaledTanh":      (6, True, True, 1.0, 1.0),
    "HardSigmoid":     (7, True, True, 0.2, 0.5),
    "Elu":             (8, True, False, 1.0, 0.0),
    "Softsign":        (9, False, False, 0.0, 0.0),
    "Softplus":        (10, False, False, 0.0, 0.0),
}
_ACT_BY_LOWER = {k.lower(): k for k in ACTIVATIONS}

#: Dense layer activations; a name's kernel code is its index (LRT_DENSE_*).
DENSE_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softmax", "log_softmax")


def activation(name: str, alpha: float | None = None, beta: float | None = None) -> Activation:
    """An Activation by (case-insensitive) ONNX name; missing alpha/beta take the defaults."""
    canon = _ACT_BY_LOWER.get(str(name).lower())
    if canon is None:
        raise UnsupportedError(
            f"activation {name!r} is not supported; expected one of {', '.join(ACTIVATIONS)}")
    _, _, _, da, db = ACTIVATIONS[canon]
    return Activation(canon, float(da if alpha is None else alpha), float(db if beta is None else beta))


def activations_from_onnx(names, alphas=(), betas=()) -> list[Activation]:
    """Resolve an ONNX `activations` list, consuming `activation_alpha`/`activation_beta`
    in order, one value per activation that uses it (as the ONNX spec describes)."""
    alphas, betas = list(alphas or ()), list(betas or ())
    out = []
    for name in names:
        canon = activation(name).name
        _, use_a, use_b, _, _ = ACTIVATIONS[canon]
        a = alphas.pop(0) if use_a and alphas else None
        b = betas.pop(0) if use_b and betas else None
        out.append(activation(canon, a, b))
    return out


# ------------------------------------------------------ numpy definitions (float64 oracle)


def apply_activation(act: Activation, x: np.ndarray) -> np.ndarray:
    """ONNX activation functions (see the LSTM/GRU/RNN operator docs)."""
    n, a, b = act
    if n == "Sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if n == "Tanh":
        return np.tanh(x)
    if n == "Relu":
        return np.maximum(x, 0.0)
    if n == "Affine":
        return a * x + b
    if n == "LeakyRelu":
        return np.where(x >= 0, x, a * x)
    if n == "ThresholdedRelu":
        return np.where(x > a, x, 0.0)
    if n == "ScaledTanh":
        return a * np.tanh(b * x)
    if n == "HardSigmoid":
        return np.clip(a * x + b, 0.0, 1.0)
    if n == "Elu":
        return np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0.0)) - 1.0))
    if n == "Softsign":
        return x / (1.0 + np.abs(x))
    if n == "Softplus":
        return np.logaddexp(0.0, x)
    raise ValueError(f"unknown activation {n!r}")


def apply_dense_activation(name: str, y: np.ndarray) -> np.ndarray:
    """A Dense activation over the last axis of y."""
    if name == "relu":
        return np.maximum(y, 0.0)
    if name == "tanh":
        return np.tanh(y)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    if name == "softmax":
        e = np.exp(y - y.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "log_softmax":
        z = y - y.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return y
