"""Whole sequences (T=100, batch 1 and 16) and batched streams (B = 1, 8, 64), lstm_rt vs
onnxruntime and PyTorch, one core.

    taskset -c 0 python bench/bench_sequence.py [--quick]

Sequences: µs per time step for the whole batch (run() on [T, B, I]). Batched streams:
one step() of B streams at once, µs per step and per stream, and the fp32 figure as a
multiple of the FMA compute bound (2 * B * MACs / peak; --peak-gflops, default 100, the
measured peak of this machine's kind in PEERS.md).
Same weights everywhere (PyTorch-like uniform init); outputs are compared before timing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lstm_rt  # noqa: E402
from bench_step import SIZES, cpu_name, lstm_rt_model, onnx_model, torch_module, weights  # noqa: E402


def best_of(fn, repeats, inner):
    """Median over repeats of the mean time of `inner` calls, in µs."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) / inner * 1e6)
    return float(np.median(ts))


def ort_sequence(cell, W, R, B, T, batch):
    """An onnxruntime session over the same node with X [T, batch, I]; returns a callable."""
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peak-gflops", type=float, default=100.0)
    args = ap.parse_args(argv)
    sizes = SIZES[:1] if args.quick else SIZES
    T = 20 if args.quick else 100
    repeats = 2 if args.quick else 5
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
          f"{'yes' if have_ort else 'not installed'}; torch {torch.__version__ if have_torch else 'not installed'}")
    print(f"\nWhole sequence, T={T}: µs per time step (whole batch)\n")
    print("| cell | I x H | batch | lstm_rt fp32 | lstm_rt int8 | onnxruntime fp32 | PyTorch fp32 | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for cell in ("LSTM", "GRU"):
        for I, H in sizes:
            W, R, B = weights(cell, I, H, rng)
            m = lstm_rt_model(cell, W, R, B)
            q = m.quantized("int8")
            for batch in (1, 16):
                x = rng.normal(size=(T, batch, I)).astype(np.float32)
                inner = max(1, int(2e6 / (T * batch * 4 * H * (I + H))))
                row = [best_of(lambda: m.run(x), repeats, inner) / T, best_of(lambda: q.run(x), repeats, inner) / T]
                ref = m.run(x)
                diff = 0.0
                for have, make in ((have_ort, lambda: ort_sequence(cell, W, R, B, T, batch)),
                                   (have_torch, lambda: torch_sequence(cell, W, R, B))):
                    if not have:
                        row.append(float("nan"))
                        continue
                    f = make()
                    diff = max(diff, float(np.abs(f(x).reshape(ref.shape) - ref).max()))
                    row.append(best_of(lambda: f(x), repeats, inner) / T)
                print(f"| {cell} | {I}x{H} | {batch} | " + " | ".join(f"{v:.1f}" for v in row) + f" | {diff:.1e} |",
                      flush=True)

    print("\nBatched streams, one step of B streams per call (LSTM 128x256)\n")
    print("| B | fp32 µs/step | fp32 µs/stream | fp32 x compute bound | int8 µs/step | int8 µs/stream |")
    print("|---|---|---|---|---|---|")
    W, R, B = weights("LSTM", 128, 256, rng)
    m = lstm_rt_model("LSTM", W, R, B)
    q = m.quantized("int8")
    macs = 4 * 256 * (128 + 256)
    for batch in (1, 8, 64):
        x = rng.normal(size=(batch, 128)).astype(np.float32)
        inner = max(10, int(3e7 / (batch * macs)))
        t32 = best_of(lambda s=m.stream(batch=batch): s.step(x), repeats, inner)
        t8 = best_of(lambda s=q.stream(batch=batch): s.step(x), repeats, inner)
        bound = 2 * batch * macs / (args.peak_gflops * 1e3)
        print(f"| {batch} | {t32:.1f} | {t32 / batch:.2f} | {t32 / bound:.2f} | {t8:.1f} | {t8 / batch:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
