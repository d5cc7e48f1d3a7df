"""Builders of single-node ONNX recurrent models (onnx.helper) for the converter tests."""
import numpy as np

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def make_recurrent_model(op, I, H, *, rng, direction="forward", bias=True, peepholes=False,
                         seq_lens=False, initial=False, layout=0, opset=22, weights_as="initializer",
                         T=None, B=None, scale=0.5, **attrs):
    """(ModelProto, weights dict). Inputs: X (+ sequence_lens, initial_h, initial_c);
    outputs: Y, Y_h (+ Y_c). Weights are non-uniform random normals."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    w = {"W": (rng.normal(size=(D, G * H, I)) * scale).astype(np.float32),
         "R": (rng.normal(size=(D, G * H, H)) * scale).astype(np.float32)}
    if bias:
        w["B"] = (rng.normal(size=(D, 2 * G * H)) * scale).astype(np.float32)
    if peepholes:
        w["P"] = (rng.normal(size=(D, 3 * H)) * scale).astype(np.float32)
    names = {"X": "X", "W": "W", "R": "R", "B": "B" if bias else "",
             "sequence_lens": "sequence_lens" if seq_lens else "",
             "initial_h": "initial_h" if initial else "", "initial_c": "initial_c" if initial else "",
             "P": "P" if peepholes else ""}
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h"] + (["initial_c", "P"] if op == "LSTM" else [])
    ins = [names[k] for k in order]
    while ins and not ins[-1]:
        ins.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    nodes, inits = [], []
    for k, v in w.items():
        if weights_as == "constant":
            nodes.append(helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k),
                                          name=f"const_{k}"))
        else:
            inits.append(numpy_helper.from_array(v, k))
    attrs = {k: v for k, v in attrs.items() if not (isinstance(v, list) and not v)}
    if layout:
        attrs["layout"] = 1
    nodes.append(helper.make_node(op, ins, outs, name=f"{op.lower()}_node", hidden_size=H,
                                  direction=direction, **attrs))
    seq = [T, B, I] if layout == 0 else [B, T, I]
    st = [D, B, H] if layout == 0 else [B, D, H]
    gin = [helper.make_tensor_value_info("X", TensorProto.FLOAT, seq)]
    if seq_lens:
        gin.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
    if initial:
        gin.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, st))
        if op == "LSTM":
            gin.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, st))
    gout = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    graph = helper.make_graph(nodes, "g", gin, gout, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model, w


def ort_run(model, feeds):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))
