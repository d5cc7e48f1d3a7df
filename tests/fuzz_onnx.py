"""Structure-aware fuzzer for converters.from_onnx: valid exported-style graphs with one
field mutated (an attribute's value, a tensor's dims or dtype, a node's inputs or op type,
a graph input's shape, an initializer's bytes). Each case must convert (and then run) or
raise ConversionError; anything else is a finding.

    python tests/fuzz_onnx.py --cases 20000 --seed 3
"""
from __future__ import annotations

import os
import random
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# this tree's lstm_rt (e.g. the AddressSanitizer build of .ci/asan), not an installed one
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from fuzz_lrt import converter_fuzz_main, fuzz_converter  # noqa: E402

HOSTILE_INTS = [0, -1, 1, 2, 3, 7, 2**31 - 1, -2**31, 2**40, 10**9]


def seeds():
    import onnx
    from onnx_cases import make_recurrent_model
    rng = np.random.default_rng(0)
    out = []
    for op, kw in [("LSTM", dict(peepholes=True, seq_lens=True, initial=True)),
                   ("GRU", dict(direction="bidirectional", linear_before_reset=1)),
                   ("RNN", dict(layout=1, activations=["Relu"])),
                   ("LSTM", dict(weights_as="constant", input_forget=1, clip=3.0))]:
        m, _ = make_recurrent_model(op, 3, 4, rng=rng, **kw)
        out.append(m.SerializeToString())
    return out, onnx


def mutate(r: random.Random, data: bytes, onnx):
    from onnx import TensorProto
    m = onnx.ModelProto()
    m.ParseFromString(data)
    g = m.graph
    kind = r.random()
    if kind < 0.25 and g.node:
        n = r.choice(g.node)
        if n.attribute:
            a = r.choice(n.attribute)
            if a.type == onnx.AttributeProto.INT:
                a.i = r.choice(HOSTILE_INTS)
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = r.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
            elif a.type == onnx.AttributeProto.STRING:
                a.s = r.choice([b"", b"forward", b"reverse", b"bogus", b"bidirectional"])
            elif a.type == onnx.AttributeProto.STRINGS:
                del a.strings[:]
                a.strings.extend([r.choice([b"Tanh", b"Sigmoid", b"Nope", b""])
                                  for _ in range(r.randrange(0, 7))])
            elif a.type == onnx.AttributeProto.FLOATS:
                del a.floats[:]
                a.floats.extend([r.choice([0.0, 1.0, float("nan")]) for _ in range(r.randrange(0, 7))])
        else:
            n.attribute.add().CopyFrom(onnx.helper.make_attribute("hidden_size", r.choice(HOSTILE_INTS)))
    elif kind < 0.45 and g.initializer:
        t = r.choice(g.initializer)
        choice = r.random()
        if choice < 0.4 and t.dims:
            t.dims[r.randrange(len(t.dims))] = r.choice([0, 1, 2, 5, 2**33, -1])
        elif choice < 0.6:
            t.data_type = r.choice([TensorProto.FLOAT16, TensorProto.INT64, TensorProto.STRING, 0, 999])
        elif choice < 0.8 and t.raw_data:
            b = bytearray(t.raw_data)
            cut = r.randrange(len(b))
            t.raw_data = bytes(b[:cut]) if r.random() < 0.5 else bytes(b[:cut]) + os.urandom(7)
        else:
            del t.dims[:]
    elif kind < 0.65 and g.node:
        n = r.choice(g.node)
        if r.random() < 0.5 and n.input:
            n.input[r.randrange(len(n.input))] = r.choice(["", "X", "W", "Y", "nope", n.output[0]])
        else:
            n.op_type = r.choice(["LSTM", "GRU", "RNN", "Gather", "MatMul", "Concat", "Loop", "Scan"])
    elif kind < 0.8 and g.input:
        vi = r.choice(g.input)
        dims = vi.type.tensor_type.shape.dim
        if dims and r.random() < 0.7:
            d = dims[r.randrange(len(dims))]
            d.dim_value = r.choice([0, 1, 3, 4, 2**40])
        else:
            vi.type.tensor_type.elem_type = r.choice([TensorProto.INT64, TensorProto.DOUBLE, 0])
    elif kind < 0.9 and g.output:
        g.output[r.randrange(len(g.output))].name = r.choice(["X", "nope", "W"])
    else:
        b = bytearray(data)
        for _ in range(r.randrange(1, 10)):
            b[r.randrange(len(b))] = r.randrange(256)
        return bytes(b)
    return m.SerializeToString()


def run(cases: int, seed: int) -> dict:
    base, onnx = seeds()
    return fuzz_converter(cases, seed, tempfile.mkdtemp(prefix="onnx_fuzz_"),
                          lambda r: ("onnx", mutate(r, r.choice(base), onnx)))


def main(argv=None):
    return converter_fuzz_main(run, __doc__, 2000, argv)


if __name__ == "__main__":
    sys.exit(main())
