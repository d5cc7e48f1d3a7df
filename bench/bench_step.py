"""Streaming latency: one time step per call, batch 1, state carried; lstm_rt vs onnxruntime and PyTorch.

    taskset -c 0 python bench/bench_step.py            # the full table (~1 minute)
    taskset -c 0 python bench/bench_step.py --quick    # a smoke run

Both runtimes get the same weights (an ONNX LSTM/GRU node; lstm_rt converts it) and the
same inputs; their outputs are compared before anything is timed. onnxruntime runs
single-threaded, fed through io binding (the cheapest way to call it per step); its
state is copied from the outputs back into the bound inputs between steps.
Each figure is the median over repeats (interleaved across runtimes) of the mean step time;
p99 over single steps.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# With lstm_rt held to its avx2 level (LSTM_RT_FORCE_ISA=avx2), PyTorch's fp32 kernels are
# held to AVX2 too (oneDNN and ATen read these once, when torch first runs them; every
# benchmark imports this module before torch), so that column compares like with like.
# onnxruntime's MLAS and PyTorch's int8 (fbgemm) have no such switch: they use AVX-512
# wherever the CPU has it. peer_isas() says which.
if os.environ.get("LSTM_RT_FORCE_ISA") == "avx2":
    os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

import lstm_rt  # noqa: E402

SIZES = [(64, 128), (128, 256), (256, 512), (512, 1024)]


def peer_isas():
    """What the peers' kernels may use here, for the benchmarks' headers."""
    cap = os.environ.get("DNNL_MAX_CPU_ISA")
    return (f"peers: PyTorch fp32 capped at {cap} (DNNL_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), "
            "onnxruntime and PyTorch int8 uncapped" if cap else "peers: uncapped (the CPU's best ISA)")


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


def torch_module(cell, W, R, B):
    """nn.LSTM / nn.GRU (one layer, eval mode) holding ONNX-layout weights W [1, G*H, I],
    R [1, G*H, H], B [1, 2*G*H]."""
    import torch
    I, H = W.shape[2], R.shape[2]
    mod = getattr(torch.nn, cell)(I, H)
    order = [0, 2, 3, 1] if cell == "LSTM" else [1, 0, 2]     # ONNX iofc/zrh -> torch ifgo/rzn
    G = len(order)

    def torch_order(a):
        return np.concatenate([np.split(a, G)[g] for g in order])
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(torch_order(W[0])))
        mod.weight_hh_l0.copy_(torch.from_numpy(torch_order(R[0])))
        mod.bias_ih_l0.copy_(torch.from_numpy(torch_order(B[0, :G * H])))
        mod.bias_hh_l0.copy_(torch.from_numpy(torch_order(B[0, G * H:])))
    return mod.eval()


class TorchStepper:
    """PyTorch eager nn.LSTM / nn.GRU (or its dynamic-int8 twin), one step per call, state
    carried, one thread, no autograd."""

    def __init__(self, cell, W, R, B, int8=False):
        import torch
        torch.set_num_threads(1)
        self.torch = torch
        mod = torch_module(cell, W, R, B)
        holder = torch.nn.Module()
        holder.rnn = mod
        if int8:   # swaps the children it knows: nn.LSTM -> DynamicQuantizedLSTM, ...
            import warnings
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic
            engines = torch.backends.quantized.supported_engines
            if torch.backends.quantized.engine == "none":
                torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
            holder = quantize_dynamic(holder, {torch.nn.LSTM, torch.nn.GRU}, dtype=torch.qint8)
            self.quantized = "quantized" in type(holder.rnn).__module__
        self.rnn = holder.rnn
        self.state = None

    def step(self, x):
        with self.torch.no_grad():
            y, self.state = self.rnn(self.torch.from_numpy(x)[None], self.state)
        return y[0].numpy()


def ort_int8_model(proto, cell):
    """onnxruntime's dynamic int8 (per-channel, reduce_range): None when it leaves the cell
    in fp32 (it has no quantized GRU)."""
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
        onnx.save(proto, src)
        logging.getLogger().setLevel(logging.ERROR)   # its advice to pre-process does not apply
        quantize_dynamic(src, dst, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
        q = onnx.load(dst)
    return None if any(n.op_type == cell for n in q.graph.node) else q


class Bounds:
    """max(FLOPs / FMA peak, weight bytes / read bandwidth at that footprint), measured here;
    int8 multiply-adds at twice the fp32 rate (PEERS.md measured 98 vs 51 G MAC/s).
    The machine is shared: a probe that ran while neighbours were busy reads low, so
    `refresh` probes again and every rate keeps its best (the hardware's, not the moment's)."""

    def __init__(self):
        from lstm_rt import _core
        self._core = _core
        self.fma = _core._probe_fma_peak()       # GFLOP/s
        self.bw = {}

    def bandwidth(self, nbytes):
        key = int(nbytes)
        if key not in self.bw:
            self.bw[key] = self._core._probe_read_bandwidth(key)
        return self.bw[key]

    def refresh(self, keys=None):
        self.fma = max(self.fma, self._core._probe_fma_peak())
        for key in self.bw if keys is None else keys:
            self.bw[key] = max(self.bw[key], self._core._probe_read_bandwidth(key))

    def footprints(self, cell, I, H):
        macs = (4 if cell == "LSTM" else 3) * H * (I + H)
        return [int(macs * 4), int(macs)]

    def step_us(self, cell, I, H, weights):
        G = 4 if cell == "LSTM" else 3
        macs = G * H * (I + H)
        nbytes = macs * (4 if weights == "fp32" else 1)
        compute = 2 * macs / (self.fma * 1e3) / (1 if weights == "fp32" else 2)
        return max(compute, nbytes / (self.bandwidth(nbytes) * 1e3))


def steps_per_repeat(macs):
    """Steps per timed repeat for a model of `macs` multiply-adds a step: ~2,000 at 64/128,
    at least 200. A repeat starts after the other runtimes' repeats have pushed this one's
    weights out of the caches, and its first step pays for that (17-23 µs at 64/128 after
    PyTorch or onnxruntime, measured on Zen 5): over 200 steps of ~2.5 µs that was 4-10% of
    the mean, over ~2,000 it is under 1%; the means measure streaming, the steady state."""
    return max(200, int(2e8 / macs))


def time_steps(steppers, xs, repeats, n):
    """{name: (median over repeats of the mean step time, p99 of single steps)}, µs.
    Repeats are interleaved across the steppers (in a rotating order), so a busy moment of
    the shared machine falls on every runtime alike instead of on one. The means come from
    loops with no per-step clock reads (those cost ~0.1 µs each) timed by this thread's CPU
    time (every runtime here steps on the calling thread; time descheduled by the
    neighbours does not count); the p99 from one separately instrumented pass (wall clock)."""
    inputs = [xs[i % len(xs)] for i in range(n)]
    cpu_clock, clock = time.thread_time_ns, time.perf_counter_ns
    for step in steppers.values():
        for x in inputs[:200]:
            step(x)
    names = list(steppers)
    means = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            step = steppers[name]
            t_start = cpu_clock()
            for x in inputs:
                y = step(x)     # a loop keeps the last step's outputs while it takes the next
            means[name].append((cpu_clock() - t_start) / n)
    out = {}
    for name, step in steppers.items():
        singles = []
        for x in inputs:
            t0 = clock()
            y = step(x)
            singles.append(clock() - t0)
        out[name] = (np.median(means[name]) / 1e3, np.percentile(singles, 99) / 1e3)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="LSTM,GRU")
    ap.add_argument("--sizes", default=",".join(f"{i}x{h}" for i, h in SIZES), help="IxH,IxH,...")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "step_latency.png"),
                    help="PNG to write (needs matplotlib); '' for none")
    ap.add_argument("--quick", action="store_true", help="tiny run for smoke testing")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.repeats = sizes[:1], 2
    peers = {}
    try:
        import onnx  # noqa: F401
        import onnxruntime
        peers["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import torch
        peers["torch"] = torch.__version__
    except ImportError:
        pass
    bounds = Bounds()
    print(f"CPU: {cpu_name()}; lstm_rt kernels: {lstm_rt.cpu_isa()}; numpy {np.__version__}; "
          + "; ".join(f"{k} {v}" for k, v in peers.items()) + f"; {peer_isas()}")
    affinity = sorted(os.sched_getaffinity(0))
    print(f"pinned to cores {affinity}" if len(affinity) == 1 else
          f"not pinned (cores {affinity}): run under `taskset -c 0` for latency figures")
    print("µs per step: median of the repeats' mean step time (p99 of single steps); "
          "lstm_rt also as a multiple of its bound (fp16 against the fp32 bound)\n")
    cols = ["lstm_rt fp32", "lstm_rt fp16", "lstm_rt int8"]
    if "onnxruntime" in peers:
        cols += ["onnxruntime fp32", "onnxruntime int8"]
    if "torch" in peers:
        cols += ["PyTorch fp32", "PyTorch int8"]
    rng = np.random.default_rng(0)
    results, rows = {}, []
    for cell in args.cells.split(","):
        for I, H in sizes:
            print(f"measuring {cell} {I}x{H} ...", file=sys.stderr, flush=True)
            n = 300 if args.quick else steps_per_repeat(4 * H * (I + H))
            xs = rng.normal(size=(64, 1, I)).astype(np.float32)
            W, R, B = weights(cell, I, H, rng)
            seq = lstm_rt_model(cell, W, R, B)
            for nbytes in bounds.footprints(cell, I, H):
                bounds.bandwidth(nbytes)
            steppers = {"lstm_rt fp32": seq.stream().step, "lstm_rt fp16": seq.quantized("fp16").stream().step,
                        "lstm_rt int8": seq.quantized("int8").stream().step}
            if "onnxruntime" in peers:
                proto = onnx_model(cell, W, R, B)
                steppers["onnxruntime fp32"] = OrtStepper(proto, cell, I, H).step
                q = ort_int8_model(proto, cell)
                steppers["onnxruntime int8"] = OrtStepper(q, cell, I, H).step if q is not None else None
            if "torch" in peers:
                steppers["PyTorch fp32"] = TorchStepper(cell, W, R, B).step
                tq = TorchStepper(cell, W, R, B, int8=True)
                steppers["PyTorch int8"] = tq.step if tq.quantized else None
            # every fp32 peer computes the same numbers before anything is timed
            ref = seq.stream()
            outs = [ref.step(xs[i]) for i in range(20)]
            diff = 0.0
            for name in cols:
                if "fp32" in name and name != "lstm_rt fp32":
                    fresh = (OrtStepper(proto, cell, I, H).step if name.startswith("onnx")
                             else TorchStepper(cell, W, R, B).step)
                    diff = max(diff, max(float(np.abs(fresh(xs[i]).reshape(-1) - outs[i].reshape(-1)).max())
                                         for i in range(20)))
            timed = time_steps({name: steppers[name] for name in cols if steppers[name] is not None},
                               xs, args.repeats, n)
            for name, (mean, _) in timed.items():
                results[(cell, I, H, name)] = mean
            rows.append((cell, I, H, timed, diff))
            bounds.refresh(bounds.footprints(cell, I, H))
    bounds.refresh()
    print(f"measured here (best of the probes run through the benchmark): FMA peak {bounds.fma:.1f} GFLOP/s; "
          "read bandwidth at each footprint (GB/s): "
          + ", ".join(f"{k / 1024:.0f} KiB {v:.0f}" for k, v in sorted(bounds.bw.items())) + "\n")
    head = "| cell | I x H | bound fp32 / int8 µs | " + " | ".join(cols) + " | max abs diff fp32 |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for cell, I, H, timed, diff in rows:
        b32, b8 = bounds.step_us(cell, I, H, "fp32"), bounds.step_us(cell, I, H, "int8")
        results[(cell, I, H, "bound fp32")], results[(cell, I, H, "bound int8")] = b32, b8
        cells = []
        for name in cols:
            if name not in timed:
                cells.append("n/a")
                continue
            mean, p99 = timed[name]
            mult = f" = {mean / (b8 if 'int8' in name else b32):.2f}x" if name.startswith("lstm_rt") else ""
            cells.append(f"{mean:.2f} ({p99:.1f}){mult}")
        print(f"| {cell} | {I}x{H} | {b32:.2f} / {b8:.2f} | " + " | ".join(cells) + f" | {diff:.1e} |")
    if args.plot:
        plot(results, cols, args.plot)


def plot(results, cols, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    cells = sorted({k[0] for k in results})
    colors = dict(zip(["lstm_rt fp32", "lstm_rt fp16", "lstm_rt int8", "onnxruntime fp32", "onnxruntime int8",
                       "PyTorch fp32", "PyTorch int8"],
                      ["tab:blue", "tab:cyan", "tab:orange", "tab:green", "tab:olive", "tab:red", "tab:purple"]))
    fig, axes = plt.subplots(1, len(cells), figsize=(6 * len(cells), 4.5), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        sizes = sorted({(k[1], k[2]) for k in results if k[0] == cell}, key=lambda s: s[1])
        xs = range(len(sizes))
        for name in cols + ["bound fp32", "bound int8"]:
            ys = [results.get((cell, I, H, name)) for I, H in sizes]
            if any(y is None for y in ys):
                continue
            style = "--" if name == "bound fp32" else ":" if name == "bound int8" else \
                "o-" if name.startswith("lstm_rt") else "s-"
            ax.plot(xs, ys, style, label=name, color=colors.get(name, "k"),
                    linewidth=2.5 if name.startswith("lstm_rt") else 1.2)
        ax.set_xticks(list(xs), [f"{I}/{H}" for I, H in sizes])
        ax.set_yscale("log")
        ax.set_xlabel("input / hidden size")
        ax.set_ylabel("µs per step (batch 1, median)")
        ax.set_title(f"{cell}: streaming step latency, one core")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
