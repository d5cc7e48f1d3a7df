"""Streaming step of models exactly as the converters produce them: what users step.

    taskset -c 0 python bench/bench_converted.py            # the tables (~2 minutes)
    taskset -c 0 python bench/bench_converted.py --quick    # a smoke run

Seven forms (PyTorch modules through from_torch, a torch.onnx.export through from_onnx,
Keras .keras files through converters.convert), each at I/H = 64/128 (vocabulary 1,000)
and 128/256 (vocabulary 2,000), fp32 and int8, batch 1. Each step time is set against
this machine's bound for the model: max(FLOPs / FMA peak, bytes of every layer's weights /
read bandwidth at that footprint), the rates probed in the same run (bench_step.Bounds).
The second table is the call overhead: the same forms with tiny weights (I = H = 4,
vocabulary 8), where a step is nearly all Python -> C crossing and output layout.
PyTorch eager steps the torch forms in the same run as a reference.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..")]
os.environ.setdefault("KERAS_BACKEND", "torch")

import lstm_rt  # noqa: E402
from bench_step import Bounds, cpu_name, peer_isas, steps_per_repeat, time_steps  # noqa: E402

FORMS = ["from_torch(nn.LSTM)", "from_torch(nn.GRU(batch_first))", "from_torch(nn.LSTM(num_layers=2))",
         "torch Embedding->LSTM->Linear", "torch.onnx.export(nn.LSTM) (Y, Y_h, Y_c)",
         "Keras Embedding->LSTM->Dense(softmax)", "Keras GRU(seq)->TimeDistributed(Dense)"]
DENSE_OUT = 64   # the TimeDistributed head's width


def build(form, I, H, V, tmp):
    """(lstm_rt Model as converted, PyTorch module or None, input kind "f" | "ids",
    MACs per step of every layer's weights)."""
    import torch
    from torch import nn

    from converters import convert, from_onnx, from_torch
    torch.manual_seed(0)
    if form == "from_torch(nn.LSTM)":
        mod = nn.LSTM(I, H)
        return from_torch(mod), mod, "f", 4 * H * (I + H)
    if form == "from_torch(nn.GRU(batch_first))":
        mod = nn.GRU(I, H, batch_first=True)
        return from_torch(mod), mod, "f", 3 * H * (I + H)
    if form == "from_torch(nn.LSTM(num_layers=2))":
        mod = nn.LSTM(I, H, num_layers=2)
        return from_torch(mod), mod, "f", 4 * H * (I + H) + 4 * H * 2 * H
    if form == "torch Embedding->LSTM->Linear":
        class LM(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb, self.rnn, self.fc = nn.Embedding(V, I), nn.LSTM(I, H), nn.Linear(H, V)

            def forward(self, ids):
                y, _ = self.rnn(self.emb(ids))
                return self.fc(y)
        mod = LM().eval()
        return from_torch(mod), None, "ids", 4 * H * (I + H) + H * V
    if form.startswith("torch.onnx.export"):
        mod = nn.LSTM(I, H)
        path = os.path.join(tmp, "lstm.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, (torch.zeros(5, 1, I),), path, dynamo=False, input_names=["X"],
                              output_names=["Y", "Y_h", "Y_c"], dynamic_axes={"X": {0: "T", 1: "B"}})
        return from_onnx(path), None, "f", 4 * H * (I + H)
    import keras
    keras.utils.set_random_seed(0)
    if form.startswith("Keras Embedding"):
        km = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(V, I),
                               keras.layers.LSTM(H), keras.layers.Dense(V, activation="softmax")])
        kind, macs = "ids", 4 * H * (I + H) + H * V
    else:
        km = keras.Sequential([keras.Input((None, I)), keras.layers.GRU(H, return_sequences=True),
                               keras.layers.TimeDistributed(keras.layers.Dense(DENSE_OUT))])
        kind, macs = "f", 3 * H * (I + H) + H * DENSE_OUT
    path = os.path.join(tmp, "k.keras")
    km.save(path)
    return convert(path), None, kind, macs


class TorchEager:
    """A PyTorch recurrent module stepped one time step per call, state carried, one thread."""

    def __init__(self, mod, batch_first):
        import torch
        torch.set_num_threads(1)
        self.torch, self.mod, self.bf, self.state = torch, mod.eval(), batch_first, None

    def step(self, x):
        with self.torch.no_grad():
            t = self.torch.from_numpy(x)
            y, self.state = self.mod(t[:, None] if self.bf else t[None], self.state)
        return y


def bound_us(bounds, macs, weights):
    nbytes = macs * (4 if weights == "fp32" else 1)
    compute = 2 * macs / (bounds.fma * 1e3) / (1 if weights == "fp32" else 2)
    return max(compute, nbytes / (bounds.bandwidth(nbytes) * 1e3))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64x128x1000,128x256x2000", help="IxHxV,...")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.repeats = sizes[:1], 2
    print(f"CPU: {cpu_name()}; lstm_rt kernels: {lstm_rt.cpu_isa()}; {peer_isas()}")
    affinity = sorted(os.sched_getaffinity(0))
    print(f"pinned to cores {affinity}" if len(affinity) == 1 else
          f"not pinned (cores {affinity}): run under `taskset -c 0` for latency figures")
    bounds = Bounds()
    rng = np.random.default_rng(0)
    rows, tiny = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for I, H, V in sizes + [(4, 4, 8)]:
            for form in FORMS:
                print(f"measuring {form} {I}/{H} ...", file=sys.stderr, flush=True)
                m, mod, kind, macs = build(form, I, H, V, tmp)
                xs = [rng.integers(0, V, size=1) if kind == "ids" else rng.normal(size=(1, I)).astype(np.float32)
                      for _ in range(64)]
                steppers = {"fp32": m.stream().step, "int8": m.quantized("int8").stream().step}
                if mod is not None:
                    steppers["PyTorch eager fp32"] = TorchEager(mod, getattr(mod, "batch_first", False)).step
                n = 2000 if (I, H) == (4, 4) else steps_per_repeat(macs)
                timed = time_steps(steppers, xs, args.repeats, 200 if args.quick else n)
                if (I, H) == (4, 4):
                    tiny.append((form, timed))
                else:
                    for w in ("fp32", "int8"):
                        bounds.bandwidth(macs * (4 if w == "fp32" else 1))
                    rows.append((form, I, H, V, macs, timed))
            bounds.refresh()
    print(f"\nFMA peak {bounds.fma:.1f} GFLOP/s; read bandwidth (GB/s): "
          + ", ".join(f"{k / 1024:.0f} KiB {v:.0f}" for k, v in sorted(bounds.bw.items())))
    print("\nµs per step, batch 1: median of the repeats' mean (p99); lstm_rt as a multiple of its bound\n")
    print("| model as converted | I/H, V | bound fp32 / int8 µs | lstm_rt fp32 | lstm_rt int8 | PyTorch eager fp32 |")
    print("|---|---|---|---|---|---|")
    for form, I, H, V, macs, timed in rows:
        b32, b8 = bound_us(bounds, macs, "fp32"), bound_us(bounds, macs, "int8")
        cells = []
        for name, b in (("fp32", b32), ("int8", b8)):
            mean, p99 = timed[name]
            cells.append(f"{mean:.1f} ({p99:.0f}) = {mean / b:.2f}x, {(mean - 1) / b:.2f}x + 1 µs")
        eager = timed.get("PyTorch eager fp32")
        cells.append(f"{eager[0]:.1f}" if eager else "-")
        print(f"| {form} | {I}/{H}, {V} | {b32:.1f} / {b8:.1f} | " + " | ".join(cells) + " |")
    print("\ncall overhead: the same forms with I = H = 4 (vocabulary 8), µs per step\n")
    print("| model as converted | lstm_rt fp32 | lstm_rt int8 | PyTorch eager fp32 |")
    print("|---|---|---|---|")
    for form, timed in tiny:
        eager = timed.get("PyTorch eager fp32")
        print(f"| {form} | {timed['fp32'][0]:.2f} | {timed['int8'][0]:.2f} | "
              + (f"{eager[0]:.1f}" if eager else "-") + " |")


if __name__ == "__main__":
    main()
