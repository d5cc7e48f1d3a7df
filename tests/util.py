"""Builders of random layer specs and one-layer models shared by the tests."""
import numpy as np

from lstm_rt.layers import GRU, LSTM, RNN
from lstm_rt.model import Model, Node, Port

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def random_layer(kind, I, H, *, direction="forward", rng, proj=None, peepholes=False,
                 clip=None, input_forget=False, linear_before_reset=False, bias=True,
                 activations=None, scale=0.5, name=None):
    """A recurrent layer spec with non-uniform random weights (a gate-order bug changes outputs)."""
    D = 2 if direction == "bidirectional" else 1
    G = GATES[kind]
    Hr = proj or H
    w = rng.normal(size=(D, G * H, I)) * scale
    r = rng.normal(size=(D, G * H, Hr if kind == "LSTM" else H)) * scale
    b = rng.normal(size=(D, 2 * G * H)) * scale if bias else None
    name = name or kind.lower()
    if kind == "LSTM":
        p = rng.normal(size=(D, 3 * H)) * scale if peepholes else None
        pr = rng.normal(size=(D, Hr, H)) * scale if proj else None
        return LSTM(name, w, r, b, p, pr, direction=direction, clip=clip,
                    input_forget=input_forget, activations=activations)
    if kind == "GRU":
        return GRU(name, w, r, b, direction=direction, clip=clip,
                   linear_before_reset=linear_before_reset, activations=activations)
    return RNN(name, w, r, b, direction=direction, clip=clip, activations=activations)


def onnx_style_model(layer, layout=0):
    """One recurrent layer exposed as an ONNX node would be: X, sequence_lens, initial_h,
    initial_c in; Y, Y_h, Y_c out (layout 0: time-major, 1: batch-major)."""
    lstm = layer.kind == "LSTM"
    D = layer.num_directions
    seq, st, y = ("TBF", "DBH", "TDBH") if layout == 0 else ("BTF", "BDH", "BTDH")
    inputs = [Port("X", "X", seq), Port("sequence_lens", "sequence_lens", "B", "int32"),
              Port("initial_h", "initial_h", st)]
    outputs = [Port("Y", "Y", y, groups=D), Port("Y_h", "Y_h", st)]
    if lstm:
        inputs.append(Port("initial_c", "initial_c", st))
        outputs.append(Port("Y_c", "Y_c", st))
    node = Node(layer, ["X", "sequence_lens", "initial_h", "initial_c" if lstm else None],
                ["Y", "Y_h", "Y_c" if lstm else None])
    return Model([node], inputs, outputs)


def sequence_model(layer):
    """x [T, B, I] -> y [T, B, D*Hr]: the layer's output sequence only."""
    return Model([Node(layer, ["x"], ["y"])], [Port("x", "x", "TBF")], [Port("y", "y", "TBF")])


def language_model(vocabulary, *, kind="LSTM", E=8, H=16, seed=0, tokenizer="words", softmax=False,
                   head=None):
    """Embedding -> recurrent -> Dense over `vocabulary` (a list of tokens), with the
    tokenizer stored in the metadata, as a trained next-word model file would have it.
    head: the Dense activation (default "softmax" if softmax else "linear").
    Weights are random but large enough that the scores differ clearly between contexts."""
    from lstm_rt.layers import Dense, Embedding
    from lstm_rt.text import Tokenizer
    rng = np.random.default_rng(seed)
    V = len(vocabulary)
    emb = Embedding("embedding", rng.normal(size=(V, E)))
    rec = random_layer(kind, E, H, rng=rng, scale=0.6)
    head = Dense("head", rng.normal(size=(V, H)) * 2.0, rng.normal(size=V),
                 activation=head or ("softmax" if softmax else "linear"))
    nodes = [Node(emb, ["ids"], ["e"]), Node(rec, ["e"], ["h"]), Node(head, ["h"], ["scores"])]
    meta = Tokenizer(vocabulary, kind=tokenizer).to_metadata()
    return Model(nodes, [Port("ids", "ids", "TB", "int64")], [Port("scores", "scores", "TBF")], metadata=meta)
