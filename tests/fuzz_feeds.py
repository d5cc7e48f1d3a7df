"""Fuzzer of run-time feeds: hostile inputs to valid models with several inputs.

A model file can be trusted and its inputs still not be: lengths, time steps and batch
sizes arrive from the user per call. Each case picks one of a few multi-input graphs
(two recurrent layers over inputs of their own lengths sharing one sequence_lens, an
encoder -> decoder inside one graph, two branches joined, token ids with lengths and
initial states, a batch-major bidirectional layer) and feeds it random time steps and
batch per input, lengths anywhere in [-3, T + 3] of any dtype, missing or extra inputs,
wrong ranks, strided views and NaN; then runs it (and, where the graph can stream, feeds
and steps a stream). Only a result or an lstm_rt error may come out; a result must repeat
bit for bit on a second run (a kernel reading memory it did not write shows up here).
Under AddressSanitizer (.ci/asan) an out-of-bounds read or write stops the run.

    python tests/fuzz_feeds.py --cases 100000 --seed 3
"""
from __future__ import annotations

import argparse
import json
import random
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# this tree's lstm_rt (e.g. the AddressSanitizer build of .ci/asan), not an installed one
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from lstm_rt.errors import LstmRtError  # noqa: E402
from lstm_rt.layers import Dense, Embedding, Join  # noqa: E402
from lstm_rt.model import Model, Node, Port  # noqa: E402
from util import random_layer  # noqa: E402


def graphs() -> list[Model]:
    rng = np.random.default_rng(0)
    lay = lambda kind, I, H, name, **kw: random_layer(kind, I, H, rng=rng, name=name, **kw)  # noqa: E731
    two = Model([Node(lay("LSTM", 3, 4, "a"), ["X1", "L"], ["Y1", "H1"]),
                 Node(lay("GRU", 3, 5, "b"), ["X2", "L"], ["Y2"])],
                [Port("X1", "X1", "TBF"), Port("X2", "X2", "TBF"), Port("L", "L", "B", "int32")],
                [Port("Y1", "Y1", "TBF"), Port("Y2", "Y2", "TBF"), Port("H1", "H1", "DBH")])
    seq2seq = Model([Node(lay("LSTM", 3, 4, "enc"), ["X1"], [None, "h", "c"]),
                     Node(lay("LSTM", 2, 4, "dec"), ["X2", "L", "h", "c"], ["Y"])],
                    [Port("X1", "X1", "BTF"), Port("X2", "X2", "BTF"), Port("L", "L", "B", "int64")],
                    [Port("Y", "Y", "BTF")])
    join = Model([Node(lay("GRU", 3, 4, "g1"), ["X1", "L"], ["A"]),
                  Node(lay("RNN", 2, 4, "r2"), ["X2"], ["B"]),
                  Node(Join("j", "concat", [4, 4]), ["A", "B"], ["J"]),
                  Node(Dense("d", rng.normal(size=(3, 8))), ["J"], ["Y"])],
                 [Port("X1", "X1", "TBF"), Port("X2", "X2", "TBF"), Port("L", "L", "B", "int32")],
                 [Port("Y", "Y", "TBF")])
    ids = Model([Node(Embedding("e", rng.normal(size=(7, 3))), ["ids"], ["E"]),
                 Node(lay("LSTM", 3, 4, "l", proj=2), ["E", "L", "h0", "c0"], ["Y", "hn", "cn"]),
                 Node(Dense("d", rng.normal(size=(7, 2)), activation="softmax"), ["Y"], ["P"])],
                [Port("ids", "ids", "TB"), Port("L", "L", "B", "int32"), Port("h0", "h0", "DBH"),
                 Port("c0", "c0", "DBH")],
                [Port("P", "P", "TBF"), Port("hn", "hn", "DBH"), Port("cn", "cn", "DBH")])
    bidir = Model([Node(lay("RNN", 2, 3, "bi", direction="bidirectional"), ["X", "L", "h0"], ["Y", "hn"])],
                  [Port("X", "X", "BTF"), Port("L", "L", "B", "int32"), Port("h0", "h0", "BDH")],
                  [Port("Y", "Y", "BTDH", groups=2), Port("hn", "hn", "BDH")])
    batch_major = Model([Node(lay("GRU", 3, 4, "g", linear_before_reset=True), ["X", "L", "h0"], ["Y", "hn"])],
                        [Port("X", "X", "BTF"), Port("L", "L", "B", "int32"), Port("h0", "h0", "BDH")],
                        [Port("Y", "Y", "BTDH", groups=1), Port("hn", "hn", "BDH"), Port("Yt", "Y", "TDBH")])
    models = [two, seq2seq, join, ids, bidir, batch_major]
    return models + [m.quantized("int8") for m in models[:2]]


LENS_DTYPES = [np.int32, np.int64, np.int8, np.uint8, np.int16, np.uint32, np.uint64, np.float32, ">i4"]


def _array(r: random.Random, shape, dtype, rng):
    if dtype == "ids":
        a = rng.integers(-1 if r.random() < 0.05 else 0, 8 if r.random() < 0.05 else 7, size=shape)
        return a.astype(r.choice([np.int64, np.int32, np.uint8, np.int16]))
    a = rng.normal(size=shape).astype(np.float32)
    if a.size and r.random() < 0.1:
        a.flat[r.randrange(a.size)] = r.choice([np.nan, np.inf])
    if r.random() < 0.05:
        a = a.astype(r.choice([np.float64, ">f4", np.float16]))
    if r.random() < 0.1 and a.ndim >= 2 and a.shape[-1] > 1:
        a = np.repeat(a, 2, axis=-1)[..., ::2]     # strided view of the same numbers
    return a


def feeds(r: random.Random, m: Model, rng) -> dict:
    """Random feeds for every input of m, shaped by its layout (T, B, D, F/H axes): mostly
    consistent, often not."""
    B = r.choice([0, 1, 1, 2, 3])
    T_all = r.choice([0, 1, 2, 3, 5, 8])
    out, times = {}, []
    for port, spec in zip(m._inputs, m.inputs):
        if r.random() < 0.05:
            continue                                    # a missing input
        b = B if r.random() < 0.9 else r.choice([0, 1, 4])
        if port.layout == "B":                          # lengths
            hi = max(times + [0]) + 3
            lens = [r.randint(-3, hi) if r.random() < 0.3 else r.randint(0, min(times + [hi]))
                    for _ in range(b)]
            out[spec.name] = np.array(lens).astype(r.choice(LENS_DTYPES), casting="unsafe")
            continue
        T = T_all if r.random() < 0.7 else r.choice([0, 1, 2, 3, 5, 8])
        if "T" in port.layout:
            times.append(T)
        shape = []
        for axis, d in zip(port.layout, spec.shape):
            if axis == "T":
                shape.append(T)
            elif axis == "B":
                shape.append(b)
            else:
                shape.append(d if r.random() < 0.95 else d + r.choice([-1, 1]))
        if r.random() < 0.03:
            shape = shape[:-1] if len(shape) > 1 else shape + [1]          # wrong rank
        out[spec.name] = _array(r, tuple(shape), "ids" if spec.dtype.startswith("int") else "f", rng)
    if r.random() < 0.02:
        out["extra"] = np.zeros(1, np.float32)
    return out


def check(r: random.Random, m: Model, rng) -> str:
    f = feeds(r, m, rng)
    if r.random() < 0.5:        # only the sequences: what a stream can be fed
        f = {p.name: f[p.name] for p in m._inputs if p.is_sequence and p.name in f}
    try:
        y = m.run(f)
    except LstmRtError:
        return "refused"
    again = m.run(f)
    for k in y:
        if not np.array_equal(y[k], again[k], equal_nan=True):
            raise AssertionError(f"output {k!r} differs between two runs of the same feeds")
    seq = {p.name: f[p.name] for p in m._inputs if p.is_sequence and p.name in f}
    B = next(iter(y.values())).shape[m.outputs[0].axes.index("B")] if y else 0
    Ts = {a.shape[p.layout.index("T")] for p in m._inputs if p.name in seq for a in [seq[p.name]]}
    try:
        s = m.stream(max(B, 1))
    except LstmRtError:
        return "ran"
    if B == 0 or len(seq) != len(f) or len(Ts) != 1 or 0 in Ts:
        return "ran"        # fed lengths or states, or inputs of different lengths: not a stream's feed
    # chunks of random sizes, a one-step chunk as step() or feed(): the same bits as run()
    T, t0, got = Ts.pop(), 0, []
    while t0 < T:
        n = min(T - t0, r.choice([1, 1, 2, 3, 5]))
        chunk = {p.name: np.take(seq[p.name], range(t0, t0 + n), axis=p.layout.index("T")) for p in m._inputs
                 if p.name in seq}
        if n == 1 and r.random() < 0.6:
            step = {k: np.take(v, 0, axis=next(p for p in m._inputs if p.name == k).layout.index("T"))
                    for k, v in chunk.items()}
            out = s.step(step)
            out = {spec.name: np.expand_dims(out[spec.name], spec.axes.index("T")) if "T" in spec.axes
                   else out[spec.name] for spec in m.outputs}
        else:
            out = s.feed(chunk)
        got.append(out)
        t0 += n
    for spec in m.outputs:
        want = y[spec.name]
        have = (np.concatenate([o[spec.name] for o in got], axis=spec.axes.index("T")) if "T" in spec.axes
                else got[-1][spec.name])
        if not np.array_equal(have, want, equal_nan=True):
            raise AssertionError(f"output {spec.name!r}: stepping and feeding chunks differ from run")
    return "ran and streamed"


def run(cases: int, seed: int) -> dict:
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    models = graphs()
    outcomes, findings = {}, []
    for _ in range(cases):
        m = r.choice(models)
        try:
            o = check(r, m, rng)
            outcomes[o] = outcomes.get(o, 0) + 1
        except Exception as e:  # noqa: BLE001 - a finding, whatever it is
            findings.append(f"{m.name} {[n.name for n in m._nodes]}: {type(e).__name__}: {e}"[:300])
    return {"cases": cases, "outcomes": outcomes, "findings": findings}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = run(args.cases, args.seed)
    print(json.dumps(res, indent=1))
    return 1 if res["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
