"""Structure-aware fuzzer for .lrt model files.

Each case mutates a valid seed file (several layer kinds and weight types) and loads it;
the loader must either return a model that then runs on a small input, or raise an
lstm_rt error. Anything else (another exception, a crash, a hang, a huge allocation)
is a finding: the case's bytes are written to --save-dir so that they become a regression
test (tests/data/fuzz_corpus/).

Most mutations re-seal the file's length and checksum, so that they reach the parser and
the validators behind the checksum instead of stopping at it:
  truncate / extend      cut or grow the file (not re-sealed: the trailer check fires)
  flip                   random bit flips anywhere (half of them re-sealed)
  header value           a random JSON leaf replaced by a hostile value (huge or negative
                         ints, wrong types, long strings, deep nesting), a key deleted,
                         or a tensor entry duplicated (overlapping tensors)
  header bytes           random bytes written into the JSON text
  tensor bytes           random bytes over a tensor's data (weights, scales, NaN/inf)

    python tests/fuzz_lrt.py --cases 1000000 --seed 7      # a long run
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import resource
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# this tree's lstm_rt (e.g. the AddressSanitizer build of .ci/asan), not an installed one
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import lstm_rt  # noqa: E402
from lrt_tamper import _PREFIX, _TRAILER, rebuild, seal, split  # noqa: E402
from lstm_rt.errors import LstmRtError  # noqa: E402
from util import language_model, random_layer, sequence_model  # noqa: E402

HOSTILE = [0, -1, 1, 2**31, 2**63, -2**63, 10**30, 1.5, float("inf"), True, None, "", "x" * 5000,
           [], [1] * 9, {}, {"a": 1}, "int8", "float16", "LSTM", "bidirectional", [[[[[[]]]]]]]


def seeds(tmp) -> list[bytes]:
    rng = np.random.default_rng(0)
    models = [
        sequence_model(random_layer("LSTM", 3, 4, rng=rng, peepholes=True, proj=2)),
        sequence_model(random_layer("GRU", 3, 4, rng=rng, linear_before_reset=True)),
        sequence_model(random_layer("RNN", 2, 3, rng=rng, direction="bidirectional")),
        language_model(["<unk>", ".", "a", "b", "c"], E=3, H=4),
        language_model(["<unk>", ".", "a", "b"], kind="GRU", E=3, H=4).quantized("int8"),
        sequence_model(random_layer("LSTM", 3, 5, rng=rng)).quantized("fp16"),
    ]
    out = []
    for i, m in enumerate(models):
        p = os.path.join(tmp, f"seed{i}.lrt")
        m.save(p)
        with open(p, "rb") as f:
            out.append(f.read())
    # files of older format versions, whose weights the loader repacks
    for name in ("format_v1_int8_model.lrt", "format_v2_dense_fp32.lrt", "format_v2_dense_int8.lrt"):
        with open(os.path.join(HERE, "data", name), "rb") as f:
            out.append(f.read())
    return out


def _leaves(obj, path=()):
    """Every (path, value) in a JSON tree, containers included."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))


def _set(obj, path, value, delete=False):
    for k in path[:-1]:
        obj = obj[k]
    if delete and isinstance(obj, dict):
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


def hostile_value(r: random.Random, old):
    if isinstance(old, int) and not isinstance(old, bool) and r.random() < 0.5:
        return r.choice([old + r.choice([-64, -1, 1, 8, 64, 4096]), old * r.choice([2, 1000, 2**20]), -old])
    if r.random() < 0.1:   # deep nesting (built without recursion)
        v: list = []
        for _ in range(5000):
            v = [v]
        return v
    return r.choice(HOSTILE)


def mutate(r: random.Random, data: bytes) -> bytes:
    kind = r.random()
    body = data[:len(data) - _TRAILER.size]
    if kind < 0.08:
        return data[:r.randrange(len(data))]
    if kind < 0.1:
        return data + bytes(r.randrange(1, 100))
    if kind < 0.25:
        b = bytearray(data if r.random() < 0.5 else body)
        for _ in range(r.randrange(1, 8)):
            i = r.randrange(len(b))
            b[i] ^= 1 << r.randrange(8)
        return bytes(b) if len(b) == len(data) else seal(bytes(b))
    if kind < 0.75:
        def edit(header):
            for _ in range(r.randrange(1, 3)):
                items = list(_leaves(header))[1:]
                path, old = r.choice(items)
                if r.random() < 0.15 and path[0] == "tensors" and len(path) == 2:
                    header["tensors"].append(dict(header["tensors"][path[1]]))
                    header["tensors"][-1]["name"] += "_dup"
                else:
                    _set(header, path, hostile_value(r, old), delete=r.random() < 0.15)
        try:
            return rebuild(data, edit, version=r.choice([None, None, None, 0, 2]),
                           flags=r.choice([None] * 9 + [1]))
        except Exception:   # noqa: BLE001 - the edit did not apply or fit: a shortened body instead
            return seal(body[:-8])
    if kind < 0.8:   # the header's text replaced outright, the data left where it was
        magic, version, flags, n = _PREFIX.unpack_from(data, 0)
        text = r.choice([
            "[" * 3000 + "]" * 3000, '{"meta": ' * 3000, '{"a": 1e999999, "b": NaN, "c": -Infinity}',
            '{"meta": {}, "tensors": [], "format_version": 1, "format_version": 2}',
            '{"meta": {"nodes": [], "inputs": [], "outputs": []}, "tensors": [], "format_version": 1}',
            "\udcff\x00\xff" * 10, '{"meta": {"name": "' + "\\u0000" * 500 + '"}}', "",
            json.dumps(split(data)[1])[:r.randrange(1, n)]])
        hb = text.encode("utf-8", "surrogatepass")
        start = _PREFIX.size + n
        return seal(_PREFIX.pack(magic, version, flags, len(hb)) + hb + body[start:])
    if kind < 0.85:
        n = _PREFIX.unpack_from(data, 0)[3]
        b = bytearray(body)
        for _ in range(r.randrange(1, 4)):
            i = _PREFIX.size + r.randrange(n)
            b[i] = r.choice(b'{}[]",:0123456789-e.\\ \x00\xff')
        return seal(bytes(b))
    _, header, _ = split(data)
    t = r.choice(header["tensors"])
    b = bytearray(body)
    lo, hi = t["offset"], t["offset"] + t["nbytes"]
    if hi > lo:
        for _ in range(r.randrange(1, 16)):
            i = r.randrange(lo, hi)
            b[i] = r.choice([0x00, 0xff, 0x7f, 0x80, r.randrange(256)])
    return seal(bytes(b))


def _kind_of(e: LstmRtError) -> str:
    """The check that fired, without the case's numbers: 'tensor ...: shape ... needs'."""
    msg = str(e).split(": ", 1)[-1]
    return " ".join(w for w in msg.split()[:6] if not any(c.isdigit() for c in w))


def sample_input(spec) -> np.ndarray:
    """A small array fitting an input spec: dynamic dims 2; token ids 1, floats 0.5."""
    shape = tuple(2 if d is None else d for d in spec.shape)
    return np.ones(shape, np.int64) if spec.dtype.startswith("int") else np.full(shape, 0.5, np.float32)


def convert_and_run(path: str, outcomes: dict, findings: list) -> None:
    """For the converter fuzzers: converters.convert(path), then a run on sample inputs;
    only lstm_rt errors may come out. Counts "converted" / "refused" in outcomes and appends
    anything else to findings."""
    import converters
    try:
        m = converters.convert(path)
    except LstmRtError:
        outcomes["refused"] += 1
        return
    except Exception as e:  # noqa: BLE001 - a finding, whatever it is
        findings.append(f"convert: {type(e).__name__}: {e}"[:300])
        return
    outcomes["converted"] += 1
    try:
        m.run({spec.name: sample_input(spec) for spec in m.inputs})
    except LstmRtError:
        pass
    except Exception as e:  # noqa: BLE001
        findings.append(f"run: {type(e).__name__}: {e}"[:300])


def fuzz_converter(cases: int, seed: int, tmp: str, make_case) -> dict:
    """The converter fuzzers' loop: make_case(random) -> (file suffix, bytes) of a mutated
    model, written into tmp and given to convert_and_run; returns the report."""
    r = random.Random(seed)
    findings, outcomes = [], {"converted": 0, "refused": 0}
    for _ in range(cases):
        suffix, data = make_case(r)
        path = os.path.join(tmp, f"case.{suffix}")
        with open(path, "wb") as f:
            f.write(data)
        convert_and_run(path, outcomes, findings)
    return {"cases": cases, "outcomes": outcomes, "findings": findings}


def check_case(path: str) -> str:
    """Load and, when that works, run; only lstm_rt errors may come out.
    Returns the outcome: 'ran' or the kind of rejection."""
    try:
        m = lstm_rt.load(path)
    except LstmRtError as e:
        return "rejected: " + _kind_of(e)
    try:
        for spec in m.inputs:
            if None not in spec.shape[2:] and spec.name == m.inputs[0].name:
                x = sample_input(spec)
                m.run(x)
                try:
                    s = m.stream(2)
                except LstmRtError:
                    continue
                s.feed(x)
    except LstmRtError as e:
        return "loaded, input refused: " + _kind_of(e)
    return "loaded and ran"


def run(cases: int, seed: int, save_dir: str | None, time_limit: float = 1e9) -> dict:
    tmp = tempfile.mkdtemp(prefix="lrt_fuzz_")
    base = seeds(tmp)
    r = random.Random(seed)
    path = os.path.join(tmp, "case.lrt")
    findings, t0, outcomes = [], time.time(), collections.Counter()
    done = 0
    for done in range(1, cases + 1):
        data = mutate(r, r.choice(base))
        with open(path, "wb") as f:
            f.write(data)
        t = time.perf_counter()
        try:
            outcomes[check_case(path)] += 1
        except Exception as e:   # noqa: BLE001 - a finding, whatever it is
            findings.append((data, f"{type(e).__name__}: {e}"[:300]))
        if time.perf_counter() - t > 2.0:
            findings.append((data, "slow: a single case took over 2 s"))
        if time.time() - t0 > time_limit:
            break
    if save_dir and findings:
        os.makedirs(save_dir, exist_ok=True)
        for data, why in findings:
            name = f"seed{seed}_{hashlib.sha1(data).hexdigest()[:10]}"
            with open(os.path.join(save_dir, name + ".lrt"), "wb") as f:
                f.write(data)
            with open(os.path.join(save_dir, name + ".txt"), "w") as f:
                f.write(why + "\n")
    return {"cases": done, "findings": [why for _, why in findings], "seconds": time.time() - t0,
            "outcomes": dict(outcomes.most_common())}


def converter_fuzz_main(run, doc: str, default_cases: int, argv=None) -> int:
    """The command line of the converter fuzzers (fuzz_onnx.py, fuzz_keras.py): run(cases,
    seed) -> report; prints it, exits 1 on findings."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--cases", type=int, default=default_cases)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = run(args.cases, args.seed)
    print(json.dumps(res, indent=1))
    return 1 if res["findings"] else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-dir", default=None, help="write findings here")
    ap.add_argument("--memory-mb", type=int, default=2048,
                    help="address-space limit of this process (0: none, e.g. under AddressSanitizer)")
    args = ap.parse_args(argv)
    # an allocation the file asks for beyond this limit fails loudly (MemoryError = a finding)
    if args.memory_mb:
        limit = args.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    res = run(args.cases, args.seed, args.save_dir)
    print(json.dumps(res, indent=1))
    return 1 if res["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
