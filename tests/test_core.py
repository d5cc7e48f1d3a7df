"""The Cython core against the numpy reference, and the streaming invariants.

Tolerance: fp32 kernels vs the float64 reference, max abs error <= 1e-5."""
import threading

import numpy as np
import pytest

from lstm_rt import _core
from lstm_rt.activations import apply_activation
from lstm_rt.errors import ShapeError, UnsupportedError
from lstm_rt.layers import ACTIVATIONS, Dense, Embedding, activation
from lstm_rt.model import Model, Node, Port
from lstm_rt.packing import pack_panels
from util import onnx_style_model, random_layer, sequence_model

ATOL = 1e-5


# ------------------------------------------------------------------ kernels

ISAS = ["generic"] + (["avx2"] if _core.cpu_has_avx2() else [])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("gates", [1, 2, 3, 4])
@pytest.mark.parametrize("M,K,H", [(1, 1, 1), (1, 8, 13), (3, 7, 13), (4, 16, 8), (9, 33, 17), (5, 0, 3)])
def test_gemm_panels_matches_numpy(isa, gates, M, K, H):
    rng = np.random.default_rng(gates * 100 + M)
    a = rng.normal(size=(M, K)).astype(np.float32)
    w = rng.normal(size=(gates * H, K)).astype(np.float32)
    packed = pack_panels(w, gates)
    got = _core._gemm_panels(a, packed, gates, packed.shape[0] * gates * 8, isa)
    # column (u // 8) * G * 8 + g * 8 + u % 8 holds unit u of gate g
    want = (a.astype(np.float64) @ w.T.astype(np.float64)).reshape(M, gates, H)
    for g in range(gates):
        for u in range(H):
            col = (u // 8) * gates * 8 + g * 8 + u % 8
            np.testing.assert_allclose(got[:, col], want[:, g, u], atol=ATOL, rtol=0)


@pytest.mark.parametrize("isa", _core.cpu_isas())
def test_products_in_row_chunks_match_one_chunk(isa):
    """lrt_matmul hands the kernels A in row chunks that stay in L2 (48 rows at K = 4100):
    100 rows give numpy's result, and the same as the three chunks called one by one."""
    rng = np.random.default_rng(5)
    K, G, H = 4100, 1, 24
    w = rng.normal(size=(G * H, K)).astype(np.float32)
    a = rng.normal(size=(100, K)).astype(np.float32)
    packed = pack_panels(w, G)
    whole = _core._matmul(a, packed, None, G, H, isa)
    np.testing.assert_allclose(whole, a.astype(np.float64) @ w.T.astype(np.float64), atol=2e-4, rtol=1e-5)
    pieces = [_core._matmul(np.ascontiguousarray(a[m:m + 48]), packed, None, G, H, isa) for m in (0, 48, 96)]
    np.testing.assert_array_equal(whole, np.concatenate(pieces))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_kernel_matches_reference(name):
    x = np.concatenate([np.linspace(-30, 30, 601), [-1e-3, 0.0, 1e-3, 0.7, 1.0, 1.3]]).astype(np.float32)
    act = activation(name, 0.7, 1.3) if ACTIVATIONS[name][1] else activation(name)
    got = _core._activate(act.name, act.alpha, act.beta, x)
    want = apply_activation(act, x.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name,f", [("Sigmoid", lambda v: 1.0 / (1.0 + np.exp(-v))), ("Tanh", np.tanh)])
def test_sigmoid_tanh_accurate_over_the_float_range(name, f):
    """The vectorized sigmoid/tanh stay within 1e-6 of the exact function; NaN stays NaN."""
    x = np.concatenate([np.linspace(-100, 100, 400_001), np.linspace(-0.2, 0.2, 40_001),
                        [0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38, np.inf, -np.inf]]).astype(np.float32)
    got = _core._activate(name, 0.0, 0.0, x)
    with np.errstate(over="ignore"):
        want = f(x.astype(np.float64))
    assert np.abs(got - want).max() <= 1e-6
    nan = _core._activate(name, 0.0, 0.0, np.full(19, np.nan, np.float32))
    assert np.isnan(nan).all()


# ------------------------------------------------------- run == reference

CASES = [
    ("LSTM", {}), ("LSTM", {"direction": "reverse"}), ("LSTM", {"direction": "bidirectional"}),
    ("LSTM", {"peepholes": True}), ("LSTM", {"clip": 0.8, "peepholes": True}),
    ("LSTM", {"input_forget": True}), ("LSTM", {"proj": 5}),
    ("LSTM", {"proj": 9, "direction": "bidirectional", "peepholes": True}),
    ("LSTM", {"bias": False}),
    ("LSTM", {"activations": [activation("HardSigmoid"), activation("Softsign"), activation("Elu", 0.5)]}),
    ("GRU", {}), ("GRU", {"linear_before_reset": True}), ("GRU", {"direction": "bidirectional"}),
    ("GRU", {"linear_before_reset": True, "direction": "reverse", "clip": 1.1}),
    ("GRU", {"activations": [activation("Sigmoid"), activation("ScaledTanh", 0.8, 1.2)]}),
    ("RNN", {}), ("RNN", {"direction": "bidirectional"}),
    ("RNN", {"activations": [activation("Relu")], "clip": 2.0}),
]


@pytest.mark.parametrize("kind,kw", CASES, ids=[f"{k}-{'-'.join(map(str, v))}" for k, v in CASES])
@pytest.mark.parametrize("H", [1, 8, 13])
def test_run_matches_reference(kind, kw, H):
    rng = np.random.default_rng(H)
    I, T, B = 7, 9, 4
    layer = random_layer(kind, I, H, rng=rng, **kw)
    m = onnx_style_model(layer)
    D, Hr = layer.num_directions, layer.output_size
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    lens = np.array([T, 0, 1, 5], np.int32)
    h0 = rng.normal(size=(D, B, Hr)).astype(np.float32)
    c0 = rng.normal(size=(D, B, H)).astype(np.float32)
    feeds = {"X": x, "initial_h": h0}
    if kind == "LSTM":
        feeds["initial_c"] = c0
    for with_lens in (False, True):
        if with_lens:
            feeds["sequence_lens"] = lens
        out = m.run(feeds)
        y, h, c = layer.reference(x, lens if with_lens else None, h0, c0)
        np.testing.assert_allclose(out["Y"], y, atol=ATOL, rtol=0)
        np.testing.assert_allclose(out["Y_h"], h, atol=ATOL, rtol=0)
        if kind == "LSTM":
            np.testing.assert_allclose(out["Y_c"], c, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind,kw", [("LSTM", {}), ("LSTM", {"proj": 5}), ("GRU", {}),
                                     ("GRU", {"linear_before_reset": True})])
@pytest.mark.parametrize("H", [3, 8, 21, 40])
def test_fused_cell_kernels_equal_the_portable_cell_math(kind, kw, H):
    """Standard cells take the fused AVX2 cell update; a clip too large to bite sends the same
    cell through the portable per-gate code. Same arithmetic, so equal bit for bit (incl. a
    partial last block of units, LSTM blocks taken two at a time plus an odd one (40), and
    lengths that freeze rows)."""
    rng = np.random.default_rng(H)
    I, T, B = 6, 7, 3
    layer = random_layer(kind, I, H, rng=rng, **kw)
    ref = random_layer(kind, I, H, rng=np.random.default_rng(H), clip=1e30, **kw)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    feeds = {"X": x, "sequence_lens": np.array([T, 2, 5], np.int32)}
    for weights in ("fp32", "int8"):
        a, b = (onnx_style_model(l).quantized(weights) if weights != "fp32" else onnx_style_model(l)
                for l in (layer, ref))
        out_a, out_b = a.run(feeds), b.run(feeds)
        for key in out_a:
            np.testing.assert_array_equal(out_a[key], out_b[key])


def test_stacked_language_model_matches_reference():
    rng = np.random.default_rng(7)
    V, E, H = 50, 12, 16
    emb = Embedding("emb", rng.normal(size=(V, E)))
    l1 = random_layer("LSTM", E, H, rng=rng, name="l1")
    l2 = random_layer("GRU", H, H, rng=rng, name="l2", linear_before_reset=True)
    head = Dense("head", rng.normal(size=(V, H)), rng.normal(size=V), activation="softmax")
    m = Model([Node(emb, ["ids"], ["e"]), Node(l1, ["e"], ["y1"]), Node(l2, ["y1"], ["y2"]),
               Node(head, ["y2"], ["p"])],
              [Port("ids", "ids", "BT")], [Port("probs", "p", "BTF")])
    ids = rng.integers(0, V, size=(3, 11))
    got = m.run(ids)
    e = emb.reference(ids.T)
    y1 = l1.reference(e)[0][:, 0]
    y2 = l2.reference(y1)[0][:, 0]
    want = head.reference(y2).transpose(1, 0, 2)
    assert got.shape == (3, 11, V)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_stepping_a_language_model_token_by_token_matches_run():
    """Embedding -> LSTM -> GRU -> Dense stepped token by token (one C call per step)."""
    rng = np.random.default_rng(8)
    V = 40
    m = Model([Node(Embedding("emb", rng.normal(size=(V, 6))), ["ids"], ["e"]),
               Node(random_layer("LSTM", 6, 9, rng=rng, name="l1", proj=4), ["e"], ["y1"]),
               Node(random_layer("GRU", 4, 10, rng=rng, name="l2"), ["y1"], ["y2"]),
               Node(Dense("head", rng.normal(size=(V, 10)), activation="softmax"), ["y2"], ["p"])],
              [Port("ids", "ids", "TB")], [Port("p", "p", "TBF")])
    ids = rng.integers(0, V, size=(17, 2))
    s = m.stream(batch=2)
    stepped = np.stack([s.step(ids[t]) for t in range(17)])
    np.testing.assert_array_equal(stepped, m.run(ids))
    np.testing.assert_array_equal(s.step(ids[0].astype(np.int32)), m.stream(batch=2).feed(
        np.concatenate([ids, ids[:1]]))[-1])
    with pytest.raises(ShapeError, match="out of range"):
        s.step(np.array([0, V]))
    with pytest.raises(ShapeError, match="token ids"):
        s.step(np.array([0.0, 1.0]))


def test_fast_step_rejects_bad_inputs_and_accepts_strided_ones():
    rng = np.random.default_rng(9)
    m = sequence_model(random_layer("LSTM", 4, 5, rng=rng))
    s = m.stream(batch=2)
    for bad in (np.zeros((2, 4), np.float64), np.zeros((2, 5), np.float32),
                np.zeros((3, 4), np.float32), np.zeros(4, np.float32), [[0.0] * 4] * 2):
        with pytest.raises(ShapeError):
            s.step(bad)
    x = rng.normal(size=(4, 2)).astype(np.float32).T  # not C-contiguous
    np.testing.assert_array_equal(s.step(x), m.stream(batch=2).step(np.ascontiguousarray(x)))


@pytest.mark.parametrize("act", ["linear", "relu", "tanh", "sigmoid", "softmax", "log_softmax"])
def test_dense_activations(act):
    rng = np.random.default_rng(1)
    d = Dense("d", rng.normal(size=(19, 5)), rng.normal(size=19), activation=act)
    m = Model([Node(d, ["x"], ["y"])], [Port("x", "x", "TBF")], [Port("y", "y", "TBF")])
    x = rng.normal(size=(3, 2, 5)).astype(np.float32)
    np.testing.assert_allclose(m.run(x), d.reference(x), atol=ATOL, rtol=0)


def test_log_softmax_is_stable_for_large_scores():
    """Scores of +-1e4 (exp overflows float32): log_softmax stays finite and matches the
    float64 reference to float32 rounding of the scores themselves."""
    rng = np.random.default_rng(2)
    d = Dense("d", rng.normal(size=(40, 5)) * 2e3, activation="log_softmax")
    m = Model([Node(d, ["x"], ["y"])], [Port("x", "x", "TBF")], [Port("y", "y", "TBF")])
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    y = m.run(x)
    assert np.all(np.isfinite(y)) and np.all(y <= 0)
    np.testing.assert_allclose(y, d.reference(x), rtol=1e-5, atol=1e-5 * np.abs(y).max())


# ------------------------------------------------------ streaming invariants

STREAM_CASES = [("LSTM", {"peepholes": True, "proj": 6}), ("GRU", {}),
                ("GRU", {"linear_before_reset": True}), ("RNN", {"clip": 1.5})]


def chunkings(T):
    yield [T]
    if T:
        yield [1] * T
    if T > 2:
        yield [2, 1, T - 3]
        sizes, left = [], T
        for s in (3, 0, 5, 1, 7, 2):  # awkward sizes, including an empty chunk
            s = min(s, left)
            sizes.append(s)
            left -= s
        yield sizes + [left]


STREAM_CASES_MORE = [("LSTM", {}), ("LSTM", {"input_forget": True, "clip": 2.0})]


@pytest.mark.parametrize("kind,kw", STREAM_CASES + STREAM_CASES_MORE)
@pytest.mark.parametrize("T", [0, 1, 7, 129])
@pytest.mark.parametrize("B,weights", [(3, "fp32"), (1, "fp32"), (1, "fp16"), (2, "int8")])
def test_step_feed_and_run_agree_bit_for_bit(kind, kw, T, B, weights):
    """One plan, and kernels whose rows do not depend on how many rows a call has: a step
    (one row per sequence), a chunk and a whole sequence (T x B rows) give the same bits."""
    rng = np.random.default_rng(T)
    layer = random_layer(kind, 5, 11, rng=rng, **kw)
    m = sequence_model(layer) if weights == "fp32" else sequence_model(layer).quantized(weights)
    x = rng.normal(size=(T, B, 5)).astype(np.float32)
    whole = m.run(x)
    s = m.stream(batch=B)
    stepped = np.stack([s.step(x[t]) for t in range(T)]) if T else whole[:0]
    np.testing.assert_array_equal(stepped, whole)
    for sizes in chunkings(T):
        s = m.stream(batch=B)
        parts, t0 = [], 0
        for n in sizes:
            parts.append(s.feed(x[t0:t0 + n]))
            t0 += n
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_stream_state_outputs_follow_the_state():
    rng = np.random.default_rng(3)
    layer = random_layer("LSTM", 4, 9, rng=rng)
    m = onnx_style_model(layer)
    x = rng.normal(size=(6, 2, 4)).astype(np.float32)
    whole = m.run({"X": x})
    s = m.stream(batch=2)
    for t in range(6):
        out = s.step({"X": x[t]})
        np.testing.assert_array_equal(out["Y"], whole["Y"][t])
    np.testing.assert_array_equal(out["Y_h"], whole["Y_h"])
    np.testing.assert_array_equal(out["Y_c"], whole["Y_c"])
    st = s.state
    np.testing.assert_array_equal(st["lstm/h"], whole["Y_h"])
    assert set(st) == {"lstm/h", "lstm/c"}


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_fork_equals_replay_and_reset_equals_fresh(kind):
    rng = np.random.default_rng(11)
    m = sequence_model(random_layer(kind, 5, 7, rng=rng))
    prefix = rng.normal(size=(13, 1, 5)).astype(np.float32)
    rest = rng.normal(size=(7, 1, 5)).astype(np.float32)
    s = m.stream()
    s.feed(prefix)
    f = s.fork()
    a = f.feed(rest)
    replay = m.stream()
    replay.feed(prefix)
    np.testing.assert_array_equal(a, replay.feed(rest))
    # the fork is independent: the parent continues as if nothing happened
    np.testing.assert_array_equal(s.feed(rest), a)
    s.reset()
    np.testing.assert_array_equal(s.feed(rest), m.stream().feed(rest))


def test_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(2)
    m = sequence_model(random_layer("LSTM", 3, 5, rng=rng))
    x = rng.normal(size=(10, 2, 3)).astype(np.float32)
    s = m.stream(batch=2)
    s.feed(x[:4])
    saved = s.state
    tail = s.feed(x[4:])
    s2 = m.stream(batch=2)
    s2.state = saved
    np.testing.assert_array_equal(s2.feed(x[4:]), tail)
    saved["lstm/h"][...] = 99.0  # a returned state is a copy
    assert not np.any(s.state["lstm/h"] == 99.0)


def test_bidirectional_and_reverse_cannot_stream():
    rng = np.random.default_rng(0)
    for direction in ("bidirectional", "reverse"):
        m = sequence_model(random_layer("GRU", 3, 4, rng=rng, direction=direction))
        with pytest.raises(UnsupportedError, match="whole sequence"):
            m.stream()


def test_streams_in_threads_match_sequential():
    rng = np.random.default_rng(4)
    m = sequence_model(random_layer("LSTM", 16, 32, rng=rng))
    xs = [rng.normal(size=(50, 2, 16)).astype(np.float32) for _ in range(4)]
    want = [m.run(x) for x in xs]
    got = [None] * 4

    def work(i):
        s = m.stream(batch=2)
        got[i] = np.concatenate([s.step(x_t)[None] for x_t in xs[i]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("zero_out", [False, True])
@pytest.mark.parametrize("kind,direction", [("LSTM", "forward"), ("GRU", "bidirectional"), ("RNN", "reverse")])
def test_masked_steps_keep_the_state_and_repeat_the_output(kind, direction, zero_out):
    from lstm_rt.layers import Mask
    rng = np.random.default_rng(12)
    layer = random_layer(kind, 4, 6, rng=rng, direction=direction)
    layer.zero_output_for_mask = zero_out
    m = Model([Node(Mask("mask", "value", 0.0, features=4), ["x"], ["mk", "xm"]),
               Node(layer, ["xm", None, None, None, "mk"], ["y"])],
              [Port("x", "x", "TBF")], [Port("y", "y", "TBF")])
    x = rng.normal(size=(8, 3, 4)).astype(np.float32)
    x[5:, 0] = 0.0        # post-padding
    x[:2, 1] = 0.0        # pre-padding
    x[3, 2] = 0.0         # a hole
    mask = np.any(x != 0, axis=-1)
    y, _, _ = layer.reference(x, mask=mask)
    want = y.transpose(0, 2, 1, 3).reshape(8, 3, -1)
    np.testing.assert_allclose(m.run(x), want, atol=ATOL, rtol=0)
    if direction == "forward":
        s = m.stream(batch=3)
        np.testing.assert_allclose(np.stack([s.step(x[t]) for t in range(8)]), want, atol=ATOL, rtol=0)


def test_machine_probes_for_the_benchmark_bounds():
    """The bench's bound probes run under either kernel set and report positive, finite rates
    (how fast is the bench's business, not a test's)."""
    for rate in (_core._probe_fma_peak(0.01), _core._probe_read_bandwidth(32 << 10, 0.01),
                 _core._probe_read_bandwidth(1000, 0.01)):
        assert np.isfinite(rate) and rate > 0


@pytest.mark.parametrize("layout", ["BTF", "TBF", "BTDH", "TDBH"])
def test_steps_and_feeds_interleaved_reuse_the_buffers_safely(layout):
    """A step writes its outputs straight into the arrays it returns; a feed after it must
    not write a chunk of T steps into those one-step arrays (a buffer reused too small)."""
    rng = np.random.default_rng(21)
    m = Model([Node(random_layer("GRU", 3, 4, rng=rng), ["x"], ["y"])],
              [Port("x", "x", "TBF")], [Port("y", "y", layout, groups=1)])
    x = rng.normal(size=(12, 2, 3)).astype(np.float32)
    whole = m.run(x)
    s = m.stream(2)
    parts = [s.step(x[0])[None] if layout[0] == "T" else s.step(x[0])[:, None]]
    parts.append(s.feed(x[1:9]))
    parts.append(s.step(x[9])[None] if layout[0] == "T" else s.step(x[9])[:, None])
    parts.append(s.feed(x[10:]))
    np.testing.assert_array_equal(np.concatenate(parts, axis=0 if layout[0] == "T" else 1), whole)
