"""Thread scaling: N threads, each stepping its own Stream of one shared Model (the GIL is
released inside every step), vs one thread doing the same work. Needs >= 2 cores; do not
pin it to one.

    python bench/bench_threads.py            # LSTM 64/128, 128/256, 256/512; fp32 and int8
    python bench/bench_threads.py --quick
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lstm_rt  # noqa: E402
from bench_step import cpu_name, lstm_rt_model, weights  # noqa: E402


def throughput(model, x, threads, steps):
    """Steps per second over all threads, and each thread's outputs."""
    outs = [None] * threads
    barrier = threading.Barrier(threads + 1)

    def work(i):
        s = model.stream()
        y = np.empty((steps, 1, model.outputs[0].shape[-1]), np.float32)
        barrier.wait()
        for t in range(steps):
            y[t] = s.step(x[t])
        outs[i] = y

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return threads * steps / (time.perf_counter() - t0), outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64x128,128x256,256x512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0, help="target duration of one measurement")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.seconds = "64x128", 2, 0.2
    print(f"CPU: {cpu_name()}; {len(os.sched_getaffinity(0))} cores available; lstm_rt kernels: "
          f"{lstm_rt.cpu_isa()}; numpy {np.__version__}; medians of {args.repeats}\n")
    print(f"| cell | I/H | weights | 1 thread steps/s | {args.threads} threads steps/s | scaling | bit-identical |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for size in args.sizes.split(","):
        I, H = map(int, size.split("x"))
        base = lstm_rt_model("LSTM", *weights("LSTM", I, H, rng))
        for w in ("fp32", "int8"):
            m = base if w == "fp32" else base.quantized("int8")
            x = rng.normal(size=(20000, 1, I)).astype(np.float32)
            rate, _ = throughput(m, x, 1, 200)
            steps = int(min(max(args.seconds * rate, 200), 20000))
            one, many, same = [], [], True
            for _ in range(args.repeats):
                r1, o1 = throughput(m, x, 1, steps)
                rn, on = throughput(m, x, args.threads, steps)
                one.append(r1)
                many.append(rn)
                same &= all(np.array_equal(o, o1[0]) for o in on)
            r1, rn = np.median(one), np.median(many)
            print(f"| LSTM | {I}/{H} | {w} | {r1:,.0f} | {rn:,.0f} | {rn / r1:.2f}x | {'yes' if same else 'NO'} |",
                  flush=True)


if __name__ == "__main__":
    main()
