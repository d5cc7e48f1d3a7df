"""Next-word model per token: Embedding 10000x256 -> LSTM 512 -> Linear 10000 -> top-3 ids.

    taskset -c 0 python bench/bench_nextword.py [--quick]

One token per call, state carried, batch 1. lstm_rt streams the model converted from a
seeded PyTorch module (fp32 and int8) and picks the top 3 logits with argpartition (no
softmax needed for the ranking); PyTorch runs the module itself (nn.LSTM with its state),
onnxruntime the TorchScript export of one step (state in, state out, io binding).
Agreement of the top-1 / top-3 set with PyTorch fp32 is reported over the timed tokens.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lstm_rt  # noqa: E402
from bench_step import cpu_name  # noqa: E402


def top3(logits):
    idx = np.argpartition(logits, -3)[-3:]
    return idx[np.argsort(logits[idx])[::-1]]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tokens", type=int, default=2000)
    args = ap.parse_args(argv)
    import torch
    from converters import from_torch
    torch.set_num_threads(1)
    V, E, H = (1000, 64, 128) if args.quick else (10000, 256, 512)
    n = 200 if args.quick else args.tokens

    class NextWord(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(V, E)
            self.rnn = torch.nn.LSTM(E, H, batch_first=True)
            self.head = torch.nn.Linear(H, V)

        def forward(self, ids, state=None):
            y, state = self.rnn(self.embed(ids), state)
            return self.head(y), state

    torch.manual_seed(0)
    mod = NextWord().eval()
    ids = np.random.default_rng(0).integers(0, V, size=n)
    print(f"CPU: {cpu_name()}; lstm_rt kernels: {lstm_rt.cpu_isa()}; torch {torch.__version__}; "
          f"model Embedding {V}x{E} -> LSTM {H} -> Linear {V}; {n} tokens\n")

    # PyTorch fp32: the reference ranking
    ref, state = [], None
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in ids:
            logits, state = mod(torch.tensor([[t]]), state)
            ref.append(top3(logits[0, 0].numpy()))
    rows = [("PyTorch fp32 (nn.LSTM, state carried)", (time.perf_counter() - t0) / n * 1e6, ref)]

    m = from_torch(mod)
    for label, model in (("lstm_rt fp32", m), ("lstm_rt int8", m.quantized("int8"))):
        s = model.stream(batch=1)
        for t in ids[:50]:
            s.step(np.array([t]))
        s.reset()
        out = []
        t0 = time.perf_counter()
        for t in ids:
            out.append(top3(s.step(np.array([t]))[0]))
        rows.append((label, (time.perf_counter() - t0) / n * 1e6, out))

    try:
        import onnxruntime as ort
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".nextword.onnx")
        h0 = torch.zeros(1, 1, H)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, (torch.tensor([[0]]), (h0, h0)), path, dynamo=False,
                              input_names=["ids", "h0", "c0"], output_names=["logits", "h1", "c1"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        os.remove(path)
        x, h, c = np.zeros((1, 1), np.int64), np.zeros((1, 1, H), np.float32), np.zeros((1, 1, H), np.float32)
        lo, h1, c1 = np.zeros((1, 1, V), np.float32), np.zeros_like(h), np.zeros_like(c)
        b = sess.io_binding()
        b.bind_cpu_input("ids", x)
        b.bind_cpu_input("h0", h)
        b.bind_cpu_input("c0", c)
        for name, arr in (("logits", lo), ("h1", h1), ("c1", c1)):
            b.bind_output(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
        out = []
        t0 = time.perf_counter()
        for t in ids:
            x[0, 0] = t
            sess.run_with_iobinding(b)
            h[...] = h1
            c[...] = c1
            out.append(top3(lo[0, 0]))
        rows.append(("onnxruntime fp32 (io binding)", (time.perf_counter() - t0) / n * 1e6, out))
    except ImportError:
        print("onnxruntime not installed: skipped\n")

    print("| runtime | µs per token | top-1 agree | top-3 set agree |")
    print("|---|---|---|---|")
    for label, us, out in rows:
        t1 = np.mean([a[0] == b[0] for a, b in zip(out, ref)])
        t3 = np.mean([set(a) == set(b) for a, b in zip(out, ref)])
        print(f"| {label} | {us:.1f} | {t1:.3f} | {t3:.3f} |")


if __name__ == "__main__":
    main()
