"""Whole sequences (T=100, batch 1 and 16) and batched streams (B = 1, 8, 64), lstm_rt vs
onnxruntime and PyTorch, one core.

    taskset -c 0 python bench/bench_sequence.py [--quick]

Sequences: µs per time step for the whole batch (run() on [T, B, I]) of the model as
`converters.from_torch(nn.LSTM / nn.GRU)` produces it (the hand-built one-node model when
torch is missing), fp32 and int8, against onnxruntime fp32 and its int8 (`quantize_dynamic`,
per-channel, reduce_range; it has no quantized GRU) and PyTorch fp32. Batched streams: one
step() of B streams at once, µs per step, for the hand-built chain (the kernels' speed) and
the converted model (what a user steps today). Every figure is the median over repeats
interleaved across the runtimes (a busy moment of the shared machine falls on all alike) of
this thread's CPU time per call (time spent descheduled does not count; every runtime here
runs on the calling thread). Same weights everywhere (PyTorch-like uniform init); outputs are
compared before timing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lstm_rt  # noqa: E402
from bench_step import SIZES, cpu_name, lstm_rt_model, onnx_model, peer_isas, torch_module, weights  # noqa: E402,F401


def interleaved(fns, repeats, inner):
    """{name: median over repeats of the CPU time per call, µs}; repeats rotate the order."""
    names = [n for n, f in fns.items() if f is not None]
    for n in names:
        fns[n]()
    ts = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            f = fns[n]
            t0 = time.thread_time()
            for _ in range(inner):
                f()
            ts[n].append((time.thread_time() - t0) / inner * 1e6)
    return {n: float(np.median(v)) for n, v in ts.items()}


def ort_sequence(cell, W, R, B, T, batch, int8=False):
    """An onnxruntime session over the same node with X [T, batch, I] (int8: after
    quantize_dynamic; None when that leaves the cell in fp32); returns a callable."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    H, I = R.shape[2], W.shape[2]
    node = helper.make_node(cell, ["X", "W", "R", "B"], ["Y"], hidden_size=H,
                            **({"linear_before_reset": 1} if cell == "GRU" else {}))
    g = helper.make_graph([node], "seq", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, batch, I])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    if int8:
        from bench_step import ort_int8_model
        m = ort_int8_model(m, cell)
        if m is None:
            return None
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda x: s.run(None, {"X": x})[0][:, 0]


def torch_sequence(cell, W, R, B):
    import torch
    torch.set_num_threads(1)
    mod = torch_module(cell, W, R, B)

    def run(x):
        with torch.no_grad():
            return mod(torch.from_numpy(x))[0].numpy()
    return run


def converted(cell, W, R, B):
    """The model as converters.from_torch gives it (None without torch)."""
    try:
        from converters import from_torch
        return from_torch(torch_module(cell, W, R, B))
    except ImportError:
        return None


def output_of(y):
    return y["output"] if isinstance(y, dict) else y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    sizes = SIZES[:1] if args.quick else SIZES
    T = 20 if args.quick else 100
    repeats = 2 if args.quick else args.repeats
    try:
        import onnxruntime  # noqa: F401
        have_ort = True
    except ImportError:
        have_ort = False
    try:
        import torch
        have_torch = True
    except ImportError:
        have_torch = False
    print(f"CPU: {cpu_name()}; lstm_rt kernels: {lstm_rt.cpu_isa()}; onnxruntime "
          f"{'yes' if have_ort else 'not installed'}; torch {torch.__version__ if have_torch else 'not installed'}; "
          f"{peer_isas()}")
    print(f"\nWhole sequence, T={T}: µs per time step (whole batch), model "
          f"{'from_torch(nn.LSTM / nn.GRU)' if have_torch else 'hand-built'}\n")
    print("| cell | I x H | batch | lstm_rt fp32 | lstm_rt int8 | int8 speedup | onnxruntime fp32 | "
          "onnxruntime int8 | PyTorch fp32 | lstm_rt fp32 / onnxruntime fp32 | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for cell in ("LSTM", "GRU"):
        for I, H in sizes:
            W, R, B = weights(cell, I, H, rng)
            m = converted(cell, W, R, B) or lstm_rt_model(cell, W, R, B)
            q = m.quantized("int8")
            for batch in (1, 16):
                x = rng.normal(size=(T, batch, I)).astype(np.float32)
                inner = max(1, int(2e6 / (T * batch * 4 * H * (I + H))))
                fns = {"fp32": lambda: m.run(x), "int8": lambda: q.run(x)}
                ref = output_of(m.run(x))
                diff = 0.0
                if have_ort:
                    f = ort_sequence(cell, W, R, B, T, batch)
                    diff = max(diff, float(np.abs(f(x).reshape(ref.shape) - ref).max()))
                    fns["ort fp32"] = lambda f=f: f(x)
                    f8 = ort_sequence(cell, W, R, B, T, batch, int8=True)
                    fns["ort int8"] = (lambda f8=f8: f8(x)) if f8 is not None else None
                if have_torch:
                    f = torch_sequence(cell, W, R, B)
                    diff = max(diff, float(np.abs(f(x).reshape(ref.shape) - ref).max()))
                    fns["torch fp32"] = lambda f=f: f(x)
                t = {k: v / T for k, v in interleaved(fns, repeats, inner).items()}
                cells = [f"{t['fp32']:.1f}", f"{t['int8']:.1f}", f"{t['fp32'] / t['int8']:.2f}x"]
                cells += [f"{t[k]:.1f}" if k in t else "n/a" for k in ("ort fp32", "ort int8", "torch fp32")]
                cells.append(f"{t['fp32'] / t['ort fp32']:.2f}" if "ort fp32" in t else "n/a")
                print(f"| {cell} | {I}x{H} | {batch} | " + " | ".join(cells) + f" | {diff:.1e} |", flush=True)

    print("\nBatched streams, one step of B streams per call (LSTM 128x256): µs per step\n")
    print("| B | chain fp32 | chain int8 | int8 speedup | converted fp32 | converted int8 | int8 speedup |")
    print("|---|---|---|---|---|---|---|")
    W, R, B = weights("LSTM", 128, 256, rng)
    models = {"chain": lstm_rt_model("LSTM", W, R, B), "converted": converted("LSTM", W, R, B)}
    macs = 4 * 256 * (128 + 256)
    for batch in (1, 8, 64):
        x = rng.normal(size=(batch, 128)).astype(np.float32)
        inner = max(10, int(3e7 / (batch * macs)))
        fns = {}
        for kind, m in models.items():
            if m is None:
                continue
            for w, mm in (("fp32", m), ("int8", m.quantized("int8"))):
                s = mm.stream(batch=batch)
                fns[f"{kind} {w}"] = lambda s=s: s.step(x)
        t = interleaved(fns, repeats, inner)
        cells = []
        for kind in models:
            if f"{kind} fp32" in t:
                a, b = t[f"{kind} fp32"], t[f"{kind} int8"]
                cells += [f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x"]
            else:
                cells += ["n/a"] * 3
        print(f"| {batch} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
