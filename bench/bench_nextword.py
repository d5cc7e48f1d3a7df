"""Next-word model per token: Embedding 10000x256 -> LSTM 512 -> Linear 10000 -> top-3 ids.

    taskset -c 0 python bench/bench_nextword.py [--quick]

One token per call, state carried, batch 1. lstm_rt streams the model converted from a
seeded PyTorch module (fp32 and int8); every runtime's top 3 logits are picked by the same
one-pass top-k (no softmax needed for the ranking); PyTorch runs the module itself (nn.LSTM with its state) and
its dynamic-int8 twin; onnxruntime the TorchScript export of one step (state in, state out,
io binding) and that export after quantize_dynamic (per-channel, reduce_range). Bounds:
max(FLOPs / FMA peak, weight bytes / read bandwidth at that footprint), measured here.
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
from lstm_rt.nextword import top_k  # noqa: E402
from bench_step import Bounds, cpu_name, peer_isas  # noqa: E402


def top3(logits):
    """The top-3 ids, best first, by lstm_rt's one-pass top-k (the same for every runtime, so
    the table compares the models' steps; numpy's argpartition would add ~70 µs per token)."""
    return top_k(logits, 3)


def ort_tokens(path, ids, H, V):
    """onnxruntime over the exported one-step graph (state in, state out, io binding):
    (µs per token, top-3 per token)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
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
    return (time.perf_counter() - t0) / len(ids) * 1e6, out


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
          f"model Embedding {V}x{E} -> LSTM {H} -> Linear {V}; {n} tokens; {peer_isas()}\n")

    def torch_tokens(module):
        """(µs per token, top-3 per token) of a module stepped one token at a time."""
        out, state = [], None
        t0 = time.perf_counter()
        with torch.no_grad():
            for t in ids:
                logits, state = module(torch.tensor([[t]]), state)
                out.append(top3(logits[0, 0].numpy()))
        return (time.perf_counter() - t0) / n * 1e6, out

    us, ref = torch_tokens(mod)   # PyTorch fp32: the reference ranking
    rows = [("PyTorch fp32 (nn.LSTM, state carried)", us, ref)]
    bound = {}

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

    # PyTorch dynamic int8 (LSTM and Linear quantized, weights qint8)
    from torch.ao.quantization import quantize_dynamic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if torch.backends.quantized.engine == "none":
            torch.backends.quantized.engine = "x86"
        qmod = quantize_dynamic(mod, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
    rows.append(("PyTorch int8 (dynamic quantization)", *torch_tokens(qmod)))

    try:
        import onnxruntime  # noqa: F401
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".nextword.onnx")
        h0 = torch.zeros(1, 1, H)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, (torch.tensor([[0]]), (h0, h0)), path, dynamo=False,
                              input_names=["ids", "h0", "c0"], output_names=["logits", "h1", "c1"])
        rows.append(("onnxruntime fp32 (io binding)", *ort_tokens(path, ids, H, V)))
        import logging
        from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize
        logging.getLogger().setLevel(logging.ERROR)
        qpath = path.replace(".onnx", ".int8.onnx")
        ort_quantize(path, qpath, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
        rows.append(("onnxruntime int8 (quantize_dynamic)", *ort_tokens(qpath, ids, H, V)))
        for f in (path, qpath):
            os.remove(f)
    except ImportError:
        print("onnxruntime not installed: skipped\n")

    bounds = Bounds()
    macs = 4 * H * (E + H) + H * V
    footprint = {"fp32": 4 * macs + 4 * E, "int8": macs + E}
    for nbytes in footprint.values():
        bounds.bandwidth(nbytes)
    for _ in range(2):   # the machine is shared: each rate keeps its best probe
        bounds.refresh()
    for w, nbytes in footprint.items():
        compute = 2 * macs / (bounds.fma * 1e3) / (1 if w == "fp32" else 2)
        bound[w] = max(compute, nbytes / (bounds.bandwidth(nbytes) * 1e3))
    print(f"bounds (best of 3 probes: FMA peak {bounds.fma:.1f} GFLOP/s; read bandwidth "
          + ", ".join(f"{bounds.bandwidth(n):.0f} GB/s at {n / 2**20:.1f} MiB" for n in footprint.values())
          + f"): fp32 {bound['fp32']:.1f} µs, int8 {bound['int8']:.1f} µs per token\n")
    print("| runtime | µs per token | x bound | top-1 agree | top-3 set agree |")
    print("|---|---|---|---|---|")
    for label, us, out in rows:
        t1 = np.mean([a[0] == b[0] for a, b in zip(out, ref)])
        t3 = np.mean([set(a) == set(b) for a, b in zip(out, ref)])
        mult = f"{us / bound['int8' if 'int8' in label else 'fp32']:.2f}x"
        print(f"| {label} | {us:.1f} | {mult} | {t1:.3f} | {t3:.3f} |")


if __name__ == "__main__":
    main()
