"""fp16 and int8 weights: kernels against numpy, and quantized models against fp32."""
import numpy as np
import pytest

from lstm_rt import _core
from lstm_rt.errors import ModelFormatError, ShapeError, UnsupportedError
from lstm_rt.layers import LSTM, Dense
from lstm_rt.model import Model, Node, Port
from lstm_rt.packing import pack_panels
from lstm_rt.quantize import dequantize_int8, quantize_int8, to_fp16, ungroup_rows
from util import random_layer, sequence_model

ISAS = list(_core.cpu_isas())


@pytest.mark.parametrize("K,H,G", [(1, 1, 1), (7, 13, 4), (64, 40, 3), (33, 17, 2), (16, 8, 1)])
def test_int8_round_trip_error_is_half_a_step(K, H, G):
    rng = np.random.default_rng(K)
    p = pack_panels(rng.normal(size=(G * H, K)).astype(np.float32), G)
    q, s = quantize_int8(p)
    assert q.dtype == np.int8 and q.shape == (p.shape[0], (K + 3) // 4, G * 8, 4)
    err = np.abs(dequantize_int8(q, s, K) - p)
    assert (err <= s.reshape(p.shape[0], 1, -1) / 2 + 1e-7).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("M,K,H,G", [(1, 7, 13, 4), (3, 64, 128, 4), (5, 33, 17, 3), (2, 16, 8, 1), (4, 9, 16, 2),
                                     (1, 21, 75, 1), (1, 8, 32, 1)])
def test_int8_and_fp16_matmul_match_numpy(isa, M, K, H, G):
    rng = np.random.default_rng(M * K)
    w = rng.normal(size=(G * H, K)).astype(np.float32)
    a = rng.normal(size=(M, K)).astype(np.float32)
    p = pack_panels(w, G)
    ncols = p.shape[0] * G * 8
    q, s = quantize_int8(p)
    deq = np.ascontiguousarray(dequantize_int8(q, s, K))
    want8 = a.astype(np.float64) @ deq.transpose(1, 0, 2).reshape(K, -1).astype(np.float64)
    for act8, qmax in ((False, 2047), (True, 64)):
        got8 = _core._matmul(a, q, s, G, ncols, isa, act8)
        # per-row error <= sum_k |w_k| * amax / (2 qmax): qmax 2047 (12 bits) or 64 (act8)
        bound = np.abs(deq).sum(axis=1).reshape(-1) * np.abs(a).max(axis=1, keepdims=True) / (2 * qmax)
        assert (np.abs(got8 - want8) <= bound * 1.001 + 1e-5).all()
    h = p.astype(np.float16)
    want16 = a.astype(np.float64) @ h.astype(np.float64).transpose(1, 0, 2).reshape(K, -1)
    np.testing.assert_allclose(_core._matmul(a, h, None, G, ncols, isa), want16, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act8", [False, True])
@pytest.mark.parametrize("M,K,H,G", [(3, 50, 32, 3), (1, 13, 70, 1), (1, 40, 33, 4), (2, 9, 16, 2),
                                     (5, 1537, 24, 4), (1, 700, 130, 1),
                                     (9, 300, 40, 4), (12, 1100, 24, 3), (10, 1100, 37, 1), (16, 64, 33, 2)])
def test_int8_kernels_agree_across_isas(M, K, H, G, act8):
    """Every kernel level computes the same exact integer sums and the same float epilogue,
    so their outputs are equal bit for bit (a row of 8 panels, ragged column counts, odd K,
    a long row; batches of 8 rows or more, which the avx2 level runs on int16-widened
    weights in K chunks, with a ragged last panel)."""
    if len(ISAS) < 2:
        pytest.skip("this CPU has only the generic kernels")
    rng = np.random.default_rng(K)
    p = pack_panels(rng.normal(size=(G * H, K)).astype(np.float32), G)
    q, s = quantize_int8(p)
    a = rng.normal(size=(M, K)).astype(np.float32)
    ncols = G * H if G == 1 else p.shape[0] * G * 8
    got = {isa: _core._matmul(a, q, s, G, ncols, isa, act8) for isa in ISAS}
    for isa in ISAS[1:]:
        np.testing.assert_array_equal(got[isa], got["generic"])


def documented_int8_product(a, q, s, K, ncols, qmax):
    """The sums lrt_kernels.h documents, in numpy: q_k = rint(a_k * (float)(qmax / amax)),
    exact integer sums, then (float)sum * (amax / qmax * scale) + 0."""
    a = np.asarray(a, np.float32)
    amax = np.abs(a).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(amax > 0, (qmax / amax.astype(np.float64)).astype(np.float32), np.float32(0))
        ascale = np.where(amax > 0, (amax.astype(np.float64) / qmax).astype(np.float32), np.float32(0))
    qa = np.rint(a * inv).astype(np.int64)          # float32 product, ties to even
    w = ungroup_rows(q)[:, :K].astype(np.int64)      # [nblk, K, gw]
    w = w.transpose(1, 0, 2).reshape(K, -1)[:, :ncols]
    sums = qa @ w
    return (sums.astype(np.float32) * (ascale * s[:ncols])).astype(np.float32) + np.float32(0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act8", [False, True])
@pytest.mark.parametrize("G,H", [(4, 13), (3, 17), (2, 9), (1, 70), (4, 64)])
def test_int8_kernels_compute_the_documented_sums(isa, act8, G, H):
    """Bit for bit the documented quantization and sums, for M = 1..70 rows (the row kernel,
    the 2-row tiles, odd batches, row chunks) and K not a multiple of 4, 8 or 16."""
    rng = np.random.default_rng(G * 100 + H)
    for K in (1, 3, 5, 13, 30, 131):
        p = pack_panels(rng.normal(size=(G * H, K)).astype(np.float32), G)
        q, s = quantize_int8(p)
        ncols = G * H if G == 1 else p.shape[0] * G * 8
        for M in (1, 2, 3, 4, 7, 16, 33, 70):
            a = (rng.normal(size=(M, K)) * rng.uniform(0.01, 100, size=(M, 1))).astype(np.float32)
            a[M // 2] = 0.0                          # an all-zero row: scale 0
            want = documented_int8_product(a, q, s, K, ncols, _core._act_qmax(K, act8))
            np.testing.assert_array_equal(_core._matmul(a, q, s, G, ncols, isa, act8), want,
                                          err_msg=f"M={M} K={K}")


def test_activation_ranges_are_the_documented_ones():
    assert _core._act_qmax(512, False) == 2047 and _core._act_qmax(512, True) == 64
    assert _core._act_qmax(8260, False) == 2047                     # the int32 cap binds past 8,260
    assert _core._act_qmax(8264, False) == np.floor((2**31 - 1) / (127 * 8264))
    assert _core._act_qmax(300_000, True) == np.floor((2**31 - 1) / (127 * 300_000))  # int32 still safe


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act8", [True, False])
@pytest.mark.parametrize("pattern", ["same", "alternating", "pairs"])
def test_byte_kernel_sums_at_the_int16_bound_are_exact(isa, act8, pattern):
    """Weights at +-127 against activations at +-amax, the largest lanes of the AVX2 byte
    kernels: act8 (q = +-64) puts 2 * 64 * 127 in a vpmaddubsw lane and two quad-rows add to
    32512; 12-bit (q = 2047, both 6-bit planes of q + 2048 at 63) 2 * 63 * 127 per lane and
    32004 for two. Sign patterns that make the products all agree (the worst case) or cancel."""
    K, G = 1030, 4
    k = np.arange(K)
    sign = {"same": np.ones(K), "alternating": np.where(k % 2, -1.0, 1.0),
            "pairs": np.where((k // 4) % 2, -1.0, 1.0)}[pattern]
    w = np.repeat(sign[None], G * 8, axis=0).astype(np.float32)      # [G*8, K]
    w[::2] *= -1                                                       # columns of both signs
    p = pack_panels(w, G)
    q, s = quantize_int8(p)
    assert np.abs(ungroup_rows(q)[:, :K]).min() == 127
    a = np.stack([sign, -sign, np.ones(K), sign * np.where(k % 3, 1.0, 0.5)]).astype(np.float32) * 3.0
    got = _core._matmul(a, q, s, G, G * 8, isa, act8)
    want = documented_int8_product(a, q, s, K, G * 8, 64 if act8 else 2047)
    np.testing.assert_array_equal(got, want)
    exact = a.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(got[:2], exact[:2], rtol=1e-6)          # |q| = 64 exactly: no rounding


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act8", [False, True])
def test_int8_rows_with_nan_or_inf_give_nan_only_there(isa, act8):
    rng = np.random.default_rng(9)
    K, G, H = 37, 4, 20
    p = pack_panels(rng.normal(size=(G * H, K)).astype(np.float32), G)
    q, s = quantize_int8(p)
    a = rng.normal(size=(6, K)).astype(np.float32)
    a[1, 5], a[3, 36], a[4, 0] = np.nan, np.inf, -np.inf
    got = _core._matmul(a, q, s, G, p.shape[0] * G * 8, isa, act8)
    assert np.isnan(got[[1, 3, 4]]).all() and np.isfinite(got[[0, 2, 5]]).all()
    clean = _core._matmul(np.ascontiguousarray(a[[0, 2, 5]]), q, s, G, p.shape[0] * G * 8, isa, act8)
    np.testing.assert_array_equal(got[[0, 2, 5]], clean)


def test_int8_weights_of_minus_128_are_refused():
    """quantize_int8 never writes -128; a file that holds one (edited by hand) is refused
    at load, since the AVX2 byte kernel needs |w| <= 127 for its int16 bound."""
    p = pack_panels(np.ones((8, 8), np.float32), 1)
    q, s = quantize_int8(p)
    q = q.copy()
    q[0, 1, 3, 2] = -128
    with pytest.raises(ModelFormatError, match=r"\[-127, 127\]"):
        _core._matmul(np.ones((1, 8), np.float32), q, s, 1, 8)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("sign", [1, -1])
def test_int8_sums_at_the_int32_limit_are_exact(isa, sign):
    """All weights 127 (or -127) against a row at +-amax: each sum is K * 127 * qmax, as close
    to 2^31 as lrt_matmul lets it get; neither the VNNI split (256 * hi + lo) nor the AVX2
    planes of q + 2048 (whose offset sums wrap around int32 before the offset comes off)
    must lose it."""
    K, G = 8264, 4
    p = np.full((1, K, G * 8), sign, np.float32)
    q, s = quantize_int8(p)
    assert (q[:, :K // 4] == 127 * sign).all()
    a = np.where(np.arange(K) % 3 == 0, -2.0, 2.0).astype(np.float32)[None].repeat(2, 0)
    a[1] = 2.0
    want = a.astype(np.float64) @ (np.full((K, G * 8), sign, np.float64))
    np.testing.assert_allclose(_core._matmul(a, q, s, G, G * 8, isa), want, rtol=1e-6, atol=1e-6)


def torch_like_lstm(I, H, rng):
    """Weights drawn as PyTorch initializes them: U(-1/sqrt(H), 1/sqrt(H))."""
    k = 1 / np.sqrt(H)
    u = lambda *shape: rng.uniform(-k, k, size=shape)  # noqa: E731
    return LSTM("lstm", u(1, 4 * H, I), u(1, 4 * H, H), u(1, 8 * H))


@pytest.mark.parametrize("weights,tol", [("int8", 0.005), ("fp16", 5e-4)])
def test_quantized_lstm_stays_close_over_1000_steps(weights, tol):
    rng = np.random.default_rng(0)
    m = sequence_model(torch_like_lstm(64, 128, rng))
    x = rng.normal(size=(1000, 1, 64)).astype(np.float32)
    q = m.quantized(weights)
    assert q.weights == weights
    err = np.abs(q.run(x) - m.run(x)).max()
    assert err <= tol


@pytest.mark.parametrize("weights", ["int8", "fp16"])
@pytest.mark.parametrize("kind,kw", [("LSTM", {"proj": 5, "peepholes": True}), ("GRU", {}),
                                     ("GRU", {"linear_before_reset": True}), ("RNN", {})])
def test_quantized_models_stream_exactly_like_they_run(weights, kind, kw):
    rng = np.random.default_rng(3)
    head = Dense("head", rng.normal(size=(6, 7 if kind != "LSTM" else 5)) * 0.3, rng.normal(size=6))
    layer = random_layer(kind, 4, 7, rng=rng, **kw)
    m = Model([Node(layer, ["x"], ["h"]), Node(head, ["h"], ["y"])],
              [Port("x", "x", "TBF")], [Port("y", "y", "TBF")]).quantized(weights)
    x = rng.normal(size=(9, 2, 4)).astype(np.float32)
    whole = m.run(x)
    s = m.stream(batch=2)
    np.testing.assert_array_equal(np.stack([s.step(x[t]) for t in range(9)]), whole)
    s = m.stream(batch=2)
    np.testing.assert_array_equal(np.concatenate([s.feed(x[:4]), s.feed(x[4:])]), whole)


def test_int8_nan_in_nan_out():
    rng = np.random.default_rng(4)
    m = sequence_model(random_layer("GRU", 4, 9, rng=rng)).quantized("int8")
    x = rng.normal(size=(3, 2, 4)).astype(np.float32)
    x[1, 0, 2] = np.nan
    y = m.run(x)
    assert np.isnan(y[1:, 0]).all() and np.isfinite(y[0]).all() and np.isfinite(y[:, 1]).all()


def test_quantize_errors():
    m = sequence_model(random_layer("RNN", 3, 4, rng=np.random.default_rng(0)))
    with pytest.raises(ShapeError, match="weights must be one of"):
        m.quantized("int4")
    with pytest.raises(UnsupportedError, match="already int8"):
        m.quantized("int8").quantized("fp16")
    with pytest.raises(ShapeError, match="fp16"):
        to_fp16(np.array([1e6], np.float32))


@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
def test_quantized_language_model_embedding_and_head(weights):
    from lstm_rt.layers import Embedding
    rng = np.random.default_rng(6)
    V, E, H = 30, 8, 12
    m = Model([Node(Embedding("emb", rng.normal(size=(V, E))), ["ids"], ["e"]),
               Node(torch_like_lstm(E, H, rng), ["e"], ["h"]),
               Node(Dense("head", rng.normal(size=(V, H)) * 0.3, activation="softmax"), ["h"], ["p"])],
              [Port("ids", "ids", "BT")], [Port("p", "p", "BTF")])
    q = m.quantized(weights)
    ids = rng.integers(0, V, size=(2, 15))
    whole = q.run(ids)
    s = q.stream(batch=2)
    np.testing.assert_array_equal(np.stack([s.step(ids[:, t]) for t in range(15)], axis=1), whole)
    assert np.abs(whole - m.run(ids)).max() <= {"fp32": 0, "fp16": 1e-3, "int8": 2e-2}[weights]
    # the specs come back (dequantized) from the packed weights
    emb = q.layers[0]
    assert np.abs(emb.weight - m.layers[0].weight).max() <= np.abs(m.layers[0].weight).max() / 127
