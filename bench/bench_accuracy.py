"""Accuracy of int8 and fp16 weights against fp32: max abs error of h over 1000 steps
(and at step 1000) for LSTM and GRU at the benchmark sizes, PyTorch-like uniform weights,
N(0, 1) inputs, next to the floor the int8 weights alone set (the same int8 weights, dequantized,
run in fp32: what any kernel computing with them exactly would show) and the int8 kernels'
distance from that run (what their activation quantization adds); then the bundled next-word
model's held-out agreement as measured by
examples/train_nextword.py (stored in the model file), and the same model's int8 kernels
against an fp32 run of its own (dequantized) weights on the held-out sample in tests/data:
what the kernels' activation quantization alone changes, with the kernels of this build.

    python bench/bench_accuracy.py [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lstm_rt  # noqa: E402
from bench_step import SIZES, lstm_rt_model, weights  # noqa: E402
from lstm_rt.cli import DEMO_MODEL  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="weight/input draws per size (the worst is shown)")
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args(argv)
    print(f"lstm_rt kernels: {lstm_rt.cpu_isa()}; {args.steps} steps, batch 1, worst of {args.seeds} seeds\n")
    print("| cell | I x H | int8 max err (all steps) | int8 err at last step | int8 weights in fp32 math, max err "
          "| int8 kernels vs those fp32 runs, max diff | fp16 max err (all steps) |")
    print("|---|---|---|---|---|---|---|")
    for cell in ("LSTM", "GRU"):
        for I, H in SIZES:
            e8, e8_last, floor, kern, e16 = 0.0, 0.0, 0.0, 0.0, 0.0
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                m = lstm_rt_model(cell, *weights(cell, I, H, rng))
                x = rng.normal(size=(args.steps, 1, I)).astype(np.float32)
                y = m.run(x)
                q = m.quantized("int8")
                y8, y8w = q.run(x), fp32_twin(q).run(x)
                d8 = np.abs(y8 - y)
                e8, e8_last = max(e8, float(d8.max())), max(e8_last, float(d8[-1].max()))
                floor = max(floor, float(np.abs(y8w - y).max()))
                kern = max(kern, float(np.abs(y8 - y8w).max()))
                e16 = max(e16, float(np.abs(m.quantized("fp16").run(x) - y).max()))
            print(f"| {cell} | {I}x{H} | {e8:.4f} | {e8_last:.4f} | {floor:.4f} | {kern:.4f} | {e16:.5f} |", flush=True)
    held = lstm_rt.load(DEMO_MODEL).metadata.get("heldout")
    if held:
        print(f"\nbundled next-word model, held-out text ({held['fp32']['tokens']:,} tokens):")
        print(json.dumps(held, indent=1))
    demo_kernel_agreement()


def fp32_twin(q):
    """A one-layer model x -> y with q's layer rebuilt in fp32 from its (dequantized) weights."""
    return lstm_rt.Model([lstm_rt.Node(q.layers[0], ["x"], ["y"])], [lstm_rt.Port("x", "x", "TBF")],
                         [lstm_rt.Port("y", "y", "TBF")])


def demo_kernel_agreement():
    """Top-1 / top-3 agreement of the demo model's int8 kernels with an fp32 run of the same
    weights (dequantized), over the held-out sample."""
    from lstm_rt.text import Tokenizer
    sample = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "kjv_heldout_sample.txt")
    q = lstm_rt.load(DEMO_MODEL)
    tok = Tokenizer.from_metadata(q.metadata)
    with open(sample, encoding="utf-8") as f:
        ids = np.array([tok.index["."]] + tok.encode(f.read()))[:, None]
    names = ["ids"] + [f"t{i}" for i in range(len(q.layers) - 1)] + ["y"]
    fp32 = lstm_rt.Model([lstm_rt.Node(layer, [names[i]], [names[i + 1]]) for i, layer in enumerate(q.layers)],
                         [lstm_rt.Port("ids", "ids", "TB")], [lstm_rt.Port("y", "y", "TBF")])
    want, got = fp32.run(ids)[:, 0], q.run(ids)[:, 0]
    top1 = float(np.mean(want.argmax(1) == got.argmax(1)))
    top3 = float(np.mean([set(np.argsort(-a)[:3]) == set(np.argsort(-b)[:3]) for a, b in zip(want, got)]))
    print(f"\nint8 kernels ({lstm_rt.cpu_isa()}) vs fp32 on the demo model's own weights, held-out sample "
          f"({len(ids):,} tokens): top-1 {top1:.4f}, top-3 set {top3:.4f}, "
          f"max abs logit error {float(np.abs(want - got).max()):.4f}")


if __name__ == "__main__":
    main()
