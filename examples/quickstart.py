"""lstm_rt in one page: import an ONNX LSTM, save it as .lrt, load it (mmap), run a whole
sequence, stream it step by step, and time a step.

    python examples/quickstart.py
"""
import os
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import lstm_rt
from converters import from_onnx

I, H, T = 64, 128, 50
rng = np.random.default_rng(0)

# An ONNX LSTM node (as torch.onnx.export or any ONNX tool would write one).
W = rng.uniform(-0.1, 0.1, (1, 4 * H, I)).astype(np.float32)
R = rng.uniform(-0.1, 0.1, (1, 4 * H, H)).astype(np.float32)
B = rng.uniform(-0.1, 0.1, (1, 8 * H)).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h", "Y_c"], hidden_size=H)], "lstm",
    [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1, I])],
    [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
    [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))])
onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "lstm.lrt")
    from_onnx(onnx_model).save(path)                       # convert once
    model = lstm_rt.load(path)                             # then load by mmap
    print(model)
    print("inputs: ", model.inputs)
    print("outputs:", model.outputs)

    x = rng.normal(size=(T, 1, I)).astype(np.float32)
    whole = model.run({"X": x})                            # the whole sequence at once

    stream = model.stream(batch=1)                         # one step at a time
    steps = [stream.step({"X": x[t]})["Y"] for t in range(T)]
    diff = np.abs(np.stack(steps) - whole["Y"]).max()
    print(f"streamed == run: max abs difference {diff:.1e}")

    step = model.stream(batch=1).step
    xt = {"X": x[0]}
    for _ in range(200):
        step(xt)
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        step(xt)
    print(f"one {I}x{H} LSTM step: {(time.perf_counter() - t0) / n * 1e6:.1f} us "
          f"(kernels: {lstm_rt.cpu_isa()})")
