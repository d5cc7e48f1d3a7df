"""Structure-aware fuzzer for converters.from_keras: Keras files (.keras and .h5) whose
model config has one to three leaves replaced by hostile values, deleted, or whose weight
file is cut short. Each case must convert (and then run) or raise ConversionError.

    python tests/fuzz_keras.py --cases 3000 --seed 1
"""
from __future__ import annotations

import io
import json
import os
import random
import sys
import tempfile
import zipfile


HERE = os.path.dirname(os.path.abspath(__file__))
# this tree's lstm_rt (e.g. the AddressSanitizer build of .ci/asan), not an installed one
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from fuzz_lrt import _leaves, _set, converter_fuzz_main, fuzz_converter, hostile_value  # noqa: E402


def seeds(tmp):
    """(.keras bytes, .h5 bytes) of a few small models, made with Keras (torch backend)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    L = keras.layers
    keras.utils.set_random_seed(0)
    models = [keras.Sequential([keras.Input((None, 3)), L.LSTM(4, return_sequences=True), L.Dense(2)]),
              keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(7, 3, mask_zero=True),
                                L.Bidirectional(L.GRU(3, return_sequences=True)), L.Dense(2)])]
    a = keras.Input((None, 3), name="a")
    y, h, c = L.LSTM(4, return_sequences=True, return_state=True, name="enc")(a)
    models.append(keras.Model(a, [L.Concatenate()([y, L.SimpleRNN(2, return_sequences=True)(a)]), h]))
    out = []
    for i, m in enumerate(models):
        for fmt in ("keras", "h5"):
            p = os.path.join(tmp, f"s{i}.{fmt}")
            m.save(p)
            with open(p, "rb") as f:
                out.append((fmt, f.read()))
    return out


def mutate(r: random.Random, fmt: str, data: bytes) -> bytes:
    import h5py
    if fmt == "keras":
        zin = zipfile.ZipFile(io.BytesIO(data))
        members = {n: zin.read(n) for n in zin.namelist()}
        config = json.loads(members["config.json"])
    else:
        buf = io.BytesIO(data)
        with h5py.File(buf, "r") as f:
            cfg = f.attrs["model_config"]
        config = json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)
    for _ in range(r.randrange(1, 4)):
        try:
            items = list(_leaves(config))[1:]
        except RecursionError:   # an earlier edit nested a value deeply: enough edits
            break
        if not items:
            break
        path, old = r.choice(items)
        try:
            _set(config, path, hostile_value(r, old) if r.random() < 0.9 else None, delete=r.random() < 0.15)
        except (TypeError, KeyError, IndexError):
            pass
    try:
        text = json.dumps(config)
    except (ValueError, RecursionError):
        text = "{}"
    if fmt == "keras":
        members["config.json"] = text.encode()
        if r.random() < 0.1:
            members["model.weights.h5"] = members["model.weights.h5"][:r.randrange(1, 4000)]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
        return out.getvalue()
    buf = io.BytesIO(data)
    with h5py.File(buf, "a") as f:
        f.attrs["model_config"] = text
    return buf.getvalue()


def run(cases: int, seed: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="keras_fuzz_")
    base = seeds(tmp)

    def case(r):
        fmt, data = r.choice(base)
        return fmt, mutate(r, fmt, data)
    return fuzz_converter(cases, seed, tmp, case)


def main(argv=None):
    return converter_fuzz_main(run, __doc__, 1000, argv)


if __name__ == "__main__":
    sys.exit(main())
