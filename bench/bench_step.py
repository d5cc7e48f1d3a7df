"""Streaming latency: one time step per call, batch 1, state carried; lstm_rt vs onnxruntime.

    taskset -c 0 python bench/bench_step.py            # the full table (~1 minute)
    taskset -c 0 python bench/bench_step.py --quick    # a smoke run

Both runtimes get the same weights (an ONNX LSTM/GRU node; lstm_rt converts it) and the
same inputs; their outputs are compared before anything is timed. onnxruntime runs
single-threaded, fed through io binding (the cheapest way to call it per step); its
state is copied from the outputs back into the bound inputs between steps.
Each figure is the median over repeats of the mean step time; p99 over single steps.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lstm_rt  # noqa: E402

SIZES = [(64, 128), (128, 256), (256, 512), (512, 1024)]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def weights(cell, I, H, rng):
    """PyTorch-like uniform weights in the ONNX layout: W [1, G*H, I], R [1, G*H, H], B [1, 2*G*H]."""
    G = 4 if cell == "LSTM" else 3
    k = 1 / np.sqrt(H)
    return (rng.uniform(-k, k, size=(1, G * H, I)).astype(np.float32),
            rng.uniform(-k, k, size=(1, G * H, H)).astype(np.float32),
            rng.uniform(-k, k, size=(1, 2 * G * H)).astype(np.float32))


def lstm_rt_model(cell, W, R, B):
    """x [T, B, I] -> h [T, B, H]; GRU with linear_before_reset like PyTorch."""
    from lstm_rt.layers import GRU, LSTM
    layer = LSTM("cell", W, R, B) if cell == "LSTM" else GRU("cell", W, R, B, linear_before_reset=True)
    return lstm_rt.Model([lstm_rt.Node(layer, ["x"], ["y"])], [lstm_rt.Port("x", "x", "TBF")],
                         [lstm_rt.Port("y", "y", "TBF")])


def onnx_model(cell, W, R, B):
    """The same cell as one ONNX node: X [1, 1, I] and states in, states out."""
    from onnx import TensorProto, helper, numpy_helper
    H = R.shape[2]
    I = W.shape[2]
    inits = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))]
    ins = ["X", "W", "R", "B", "", "h0"] + (["c0"] if cell == "LSTM" else [])
    outs = ["", "h1"] + (["c1"] if cell == "LSTM" else [])
    attrs = {"hidden_size": H}
    if cell == "GRU":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(cell, ins, outs, **attrs)
    vin = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, I]),
           helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, H])]
    vout = [helper.make_tensor_value_info("h1", TensorProto.FLOAT, [1, 1, H])]
    if cell == "LSTM":
        vin.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 1, H]))
        vout.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, 1, H]))
    graph = helper.make_graph([node], "cell", vin, vout, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


class OrtStepper:
    """onnxruntime, one step per call through io binding, state copied back each step."""

    def __init__(self, model, cell, I, H):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.x = np.zeros((1, 1, I), np.float32)
        self.state_names = ["h"] + (["c"] if cell == "LSTM" else [])
        self.ins = {s: np.zeros((1, 1, H), np.float32) for s in self.state_names}
        self.outs = {s: np.zeros((1, 1, H), np.float32) for s in self.state_names}
        b = self.binding = self.sess.io_binding()
        b.bind_cpu_input("X", self.x)
        for s in self.state_names:
            b.bind_cpu_input(f"{s}0", self.ins[s])
            b.bind_output(f"{s}1", "cpu", 0, np.float32, [1, 1, H], self.outs[s].ctypes.data)

    def step(self, x):
        self.x[0] = x
        self.sess.run_with_iobinding(self.binding)
        for s in self.state_names:
            self.ins[s][...] = self.outs[s]
        return self.outs["h"][0]


def time_steps(step, xs, repeats, n):
    """(median over repeats of the mean step time, p99 of single steps), microseconds.
    The means come from loops with no per-step clock reads (those cost ~0.1 µs each);
    the p99 from one separately instrumented pass."""
    inputs = [xs[i % len(xs)] for i in range(n)]
    for x in inputs[:200]:
        step(x)
    clock = time.perf_counter_ns
    means = []
    for _ in range(repeats):
        t_start = clock()
        for x in inputs:
            step(x)
        means.append((clock() - t_start) / n)
    singles = []
    for x in inputs:
        t0 = clock()
        step(x)
        singles.append(clock() - t0)
    return np.median(means) / 1e3, np.percentile(singles, 99) / 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="LSTM,GRU")
    ap.add_argument("--sizes", default=",".join(f"{i}x{h}" for i, h in SIZES), help="IxH,IxH,...")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny run for smoke testing")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.repeats = sizes[:1], 2
    try:
        import onnx  # noqa: F401
        import onnxruntime
        have_ort = True
    except ImportError:
        have_ort = False
    print(f"CPU: {cpu_name()}; lstm_rt kernels: {lstm_rt.cpu_isa()}; numpy {np.__version__}"
          + (f"; onnxruntime {onnxruntime.__version__}" if have_ort else "; onnxruntime not installed"))
    try:
        affinity = sorted(os.sched_getaffinity(0))
        print(f"pinned to cores {affinity}" if len(affinity) == 1 else
              f"not pinned (cores {affinity}): run under `taskset -c 0` for latency figures")
    except AttributeError:
        pass
    print()
    head = "| cell | I x H | lstm_rt fp32 µs (p99) | lstm_rt int8 µs (p99) |"
    head += " onnxruntime fp32 µs (p99) | fp32 ratio | max abs diff |" if have_ort else ""
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rng = np.random.default_rng(0)
    for cell in args.cells.split(","):
        for I, H in sizes:
            n = 300 if args.quick else max(200, int(3e6 / (4 * H * (I + H))))
            xs = rng.normal(size=(64, 1, I)).astype(np.float32)
            W, R, B = weights(cell, I, H, rng)
            seq = lstm_rt_model(cell, W, R, B)
            q = seq.quantized("int8")
            cells = []
            for model in (seq, q):
                s = model.stream(batch=1)
                cells.append(time_steps(s.step, xs, args.repeats, n))
            row = f"| {cell} | {I}x{H} | " + " | ".join(f"{a:.2f} ({b:.1f})" for a, b in cells) + " |"
            if have_ort:
                proto = onnx_model(cell, W, R, B)
                ort_s, ours = OrtStepper(proto, cell, I, H), seq.stream(batch=1)
                diff = max(float(np.abs(ort_s.step(xs[i]) - ours.step(xs[i])).max()) for i in range(50))
                ort_t = time_steps(OrtStepper(proto, cell, I, H).step, xs, args.repeats, n)
                row += f" {ort_t[0]:.2f} ({ort_t[1]:.1f}) | {cells[0][0] / ort_t[0]:.2f} | {diff:.1e} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
