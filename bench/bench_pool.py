"""Many concurrent audio streams: StreamPool (one batched step per round) vs stepping
each stream on its own Stream, same model, same frames, same run.

    taskset -c 0 python bench/bench_pool.py           # streams 1..256 (~1 minute)
    taskset -c 0 python bench/bench_pool.py --quick

The model is a typical streaming acoustic model: 80 log-mel features per 10 ms frame ->
LSTM 256 -> LSTM 256 -> Dense 40. Every round, each stream receives one new frame and the
pool runs it; the per-frame latency is the time from the frame's arrival to its output
(one round). A stream needs its round to finish within 10 ms to keep up in real time.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lstm_rt  # noqa: E402
from lstm_rt.layers import LSTM, Dense  # noqa: E402
from lstm_rt.pool import StreamPool  # noqa: E402
from lstm_rt.progress import Progress  # noqa: E402
from bench_step import cpu_name  # noqa: E402

FEATURES, HIDDEN, CLASSES = 80, 256, 40


def acoustic_model(rng, weights="fp32"):
    def lstm(name, I):
        k = 1 / np.sqrt(HIDDEN)
        return LSTM(name, rng.uniform(-k, k, (1, 4 * HIDDEN, I)), rng.uniform(-k, k, (1, 4 * HIDDEN, HIDDEN)),
                    rng.uniform(-k, k, (1, 8 * HIDDEN)))
    nodes = [lstm_rt.Node(lstm("lstm1", FEATURES), ["x"], ["h1"]),
             lstm_rt.Node(lstm("lstm2", HIDDEN), ["h1"], ["h2"]),
             lstm_rt.Node(Dense("head", rng.normal(size=(CLASSES, HIDDEN)) * 0.1), ["h2"], ["y"])]
    m = lstm_rt.Model(nodes, [lstm_rt.Port("x", "x", "TBF")], [lstm_rt.Port("y", "y", "TBF")])
    return m if weights == "fp32" else m.quantized(weights)


def bench(model, n, rounds, rng):
    frames = rng.normal(size=(rounds, n, FEATURES)).astype(np.float32)
    pool = StreamPool(model, capacity=n)
    streams = [pool.open() for _ in range(n)]
    lat = []
    for r in range(rounds):
        t0 = time.perf_counter()
        for i, s in enumerate(streams):
            s.feed(frames[r, i:i + 1])
        pool.run()
        lat.append(time.perf_counter() - t0)
    got = np.stack([s.read() for s in streams])          # [n, rounds, C]
    alone = [model.stream() for _ in range(n)]
    sep = []
    want = np.empty_like(got)
    for r in range(rounds):
        t0 = time.perf_counter()
        for i, s in enumerate(alone):
            want[i, r] = s.step(frames[r, i:i + 1])[0]
        sep.append(time.perf_counter() - t0)
    err = float(np.abs(got - want).max())
    return np.array(lat[1:]), np.array(sep[1:]), err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,2,4,8,16,32,64,128,256")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--weights", default="fp32,int8")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    counts = [int(s) for s in args.streams.split(",")]
    if args.quick:
        counts, args.rounds = [1, 4, 16], 6
    rng = np.random.default_rng(0)
    affinity = sorted(os.sched_getaffinity(0))
    print(f"CPU: {cpu_name()}; lstm_rt kernels: {lstm_rt.cpu_isa()}; numpy {np.__version__}; "
          f"{'pinned to core ' + str(affinity[0]) if len(affinity) == 1 else f'{len(affinity)} cores (not pinned)'}")
    print(f"model: {FEATURES} features -> LSTM {HIDDEN} -> LSTM {HIDDEN} -> Dense {CLASSES}; "
          f"one frame per stream per round; {args.rounds} rounds; medians (p99)\n")
    print("| weights | streams | pool frames/s | separate frames/s | pool speedup | "
          "per-frame latency ms | real-time streams (10 ms frames) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for w in args.weights.split(","):
        model = acoustic_model(np.random.default_rng(1), w)
        with Progress(len(counts), f"{w}", file=sys.stderr) as bar:
            for n in counts:
                lat, sep, err = bench(model, n, args.rounds, rng)
                fps, fps_sep = n / np.median(lat), n / np.median(sep)
                realtime = int(n * 0.010 / np.median(lat)) if np.median(lat) > 0 else 0
                print(f"| {w} | {n} | {fps:,.0f} | {fps_sep:,.0f} | {fps / fps_sep:.2f}x | "
                      f"{np.median(lat) * 1e3:.3f} ({np.percentile(lat, 99) * 1e3:.3f}) | "
                      f"{'yes' if np.median(lat) < 0.010 else 'no'} (~{realtime:,} at this load) | {err:.1e} |",
                      flush=True)
                bar.update(1)


if __name__ == "__main__":
    main()
