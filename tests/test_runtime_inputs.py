"""Run-time inputs as a host app may pass them: strided, read-only, non-finite, wrong.
Documented NaN rule: a NaN or inf in one sequence's input reaches only that sequence's
outputs and state; the other sequences of the batch are bit-identical to a run without it."""
import numpy as np
import pytest

from lstm_rt.errors import ShapeError, UnsupportedError
from lstm_rt.model import Model, Node, Port
from util import language_model, random_layer, sequence_model


@pytest.fixture(params=["fp32", "fp16", "int8"])
def model(request):
    m = sequence_model(random_layer("LSTM", 5, 7, rng=np.random.default_rng(0)))
    return m if request.param == "fp32" else m.quantized(request.param)


def test_strided_and_read_only_inputs_equal_contiguous(model):
    rng = np.random.default_rng(1)
    big = rng.normal(size=(6, 3, 10)).astype(np.float32)
    strided = big[:, :, ::2]                       # non-contiguous view
    ro = np.ascontiguousarray(strided)
    ro.flags.writeable = False
    want = model.run(np.ascontiguousarray(strided))
    np.testing.assert_array_equal(model.run(strided), want)
    np.testing.assert_array_equal(model.run(ro), want)
    s = model.stream(batch=3)
    np.testing.assert_array_equal(np.stack([s.step(strided[t]) for t in range(6)]), want)
    assert strided.base is big and not ro.flags.writeable     # inputs are never written


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_stays_in_its_own_sequence(model, bad):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 3, 5)).astype(np.float32)
    clean = model.run(x)
    x[2, 1, 3] = bad
    got = model.run(x)
    np.testing.assert_array_equal(got[:, [0, 2]], clean[:, [0, 2]])   # other sequences untouched
    np.testing.assert_array_equal(got[:2], clean[:2])                # earlier steps untouched
    if np.isnan(bad):
        assert np.isnan(got[2:, 1]).all()                            # NaN reaches every later output


def test_stream_input_errors_say_expected_and_got():
    m = sequence_model(random_layer("GRU", 5, 7, rng=np.random.default_rng(3)))
    s = m.stream(batch=2)
    cases = [(np.zeros((3, 5), np.float32), r"expected float32 of shape \(2, 5\), got float32 \(3, 5\)"),
             (np.zeros((2, 4), np.float32), r"5"),
             (np.zeros((2, 5), np.float64), r"float32"),
             (np.zeros((1, 2, 5), np.float32), r"rank|shape"),
             ([[0.0] * 5] * 2, r"numpy array|float32")]
    for x, match in cases:
        with pytest.raises(ShapeError, match=match):
            s.step(x)
    lm = language_model(["<unk>", ".", "a"])
    with pytest.raises(ShapeError, match=r"out of range|\[0, 3\)"):
        lm.stream().step(np.array([3]))
    with pytest.raises(ShapeError, match="integer"):
        lm.run(np.zeros((2, 1), np.float32))
    bi = sequence_model(random_layer("LSTM", 5, 7, rng=np.random.default_rng(4), direction="bidirectional"))
    with pytest.raises(UnsupportedError, match="whole sequence"):
        bi.stream()


def two_input_model(kind="LSTM"):
    """Two recurrent layers over inputs X1 and X2 of their own lengths, sharing one
    sequence_lens input (the graph that turned lengths into out-of-bounds loop counts)."""
    rng = np.random.default_rng(5)
    a = random_layer(kind, 3, 4, rng=rng, name="a")
    b = random_layer(kind, 3, 4, rng=rng, name="b")
    return Model([Node(a, ["X1", "L"], ["Y1"]), Node(b, ["X2", "L"], ["Y2"])],
                 [Port("X1", "X1", "TBF"), Port("X2", "X2", "TBF"), Port("L", "L", "B", "int32")],
                 [Port("Y1", "Y1", "TBF"), Port("Y2", "Y2", "TBF")])


@pytest.mark.parametrize("T1,T2,L", [(5, 4, 5), (500, 2, 500), (3, 8, 4), (6, 6, 7), (4, 4, -1)])
def test_lengths_must_fit_every_input_their_layers_read(T1, T2, L):
    m = two_input_model()
    feeds = {"X1": np.ones((T1, 1, 3), np.float32), "X2": np.ones((T2, 1, 3), np.float32),
             "L": np.array([L], np.int32)}
    with pytest.raises(ShapeError, match=r"lengths must be in \[0, \d+\] \(the time steps of input 'X\d'\)"):
        m.run(feeds)
    feeds["L"] = np.array([min(T1, T2)], np.int32)
    out = m.run(feeds)
    assert out["Y1"].shape == (T1, 1, 4) and out["Y2"].shape == (T2, 1, 4)


def test_lengths_are_copied_before_the_kernels_read_them():
    m = two_input_model("GRU")
    L = np.array([2, 1], np.int32)
    feeds = {"X1": np.ones((2, 2, 3), np.float32), "X2": np.ones((2, 2, 3), np.float32), "L": L}
    want = m.run(feeds)
    env, _ = m._feeds(feeds, streaming=False, time_axis=True)
    assert not np.shares_memory(env["L"], L)
    np.testing.assert_array_equal(m.run(feeds)["Y1"], want["Y1"])


def test_time_steps_times_batch_past_the_kernels_int_range_is_refused():
    m = sequence_model(random_layer("RNN", 1, 2, rng=np.random.default_rng(7)))
    x = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (2**16, 2**15 + 1, 1), (0, 0, 0))
    with pytest.raises(ShapeError, match="more rows than the kernels index"):
        m.run(x)


def test_step_accepts_what_run_accepts():
    """Big-endian float32 (a .npy written on another machine) and every integer dtype of
    token ids mean the same numbers in step, feed and run."""
    m = sequence_model(random_layer("LSTM", 3, 4, rng=np.random.default_rng(8)))
    x = np.random.default_rng(9).normal(size=(4, 2, 3)).astype(np.float32)
    want = m.run(x)
    big = x.astype(">f4")
    np.testing.assert_array_equal(m.run(big), want)
    np.testing.assert_array_equal(m.stream(2).feed(big), want)
    s = m.stream(2)
    np.testing.assert_array_equal(np.stack([s.step(big[t]) for t in range(4)]), want)
    lm = language_model(["<unk>", ".", "a", "b", "c"])
    ids = np.array([[1, 2], [3, 4], [0, 1]])
    want = lm.run(ids)
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, ">i8", "<i4"):
        s = lm.stream(2)
        np.testing.assert_array_equal(np.stack([s.step(ids[t].astype(dt)) for t in range(3)]), want)
        np.testing.assert_array_equal(lm.run(ids.astype(dt)), want)
    with pytest.raises(ShapeError, match="out of range|\\[0, 5\\)"):
        lm.stream().step(np.array([2**64 - 1], np.uint64))
    with pytest.raises(ShapeError, match="integer"):
        lm.stream().step(np.array([True]))


@pytest.mark.parametrize("shape", [(0, 2), (3, 0), (0, 0)])
def test_no_time_steps_or_no_sequences_on_an_embedding_model(shape):
    lm = language_model(["<unk>", ".", "a"])
    y = lm.run(np.zeros(shape, np.int64))
    assert y.shape == shape + (3,)
    if shape[1]:
        assert lm.stream(shape[1]).feed(np.zeros(shape, np.int64)).shape == shape + (3,)


@pytest.mark.parametrize("batch", [0, -1, 2**31, 2**63, 2.0, True, None, "2"])
def test_absurd_stream_batches_are_refused(batch):
    m = language_model(["<unk>", ".", "a"])
    with pytest.raises(ShapeError, match="batch must be a positive integer"):
        m.stream(batch=batch)


def test_chains_of_any_length_stream():
    rng = np.random.default_rng(10)
    layers = [random_layer("GRU", 3, 3, rng=rng, name=f"g{i}", scale=0.3) for i in range(40)]
    nodes = [Node(layer, [f"t{i}"], [f"t{i + 1}"]) for i, layer in enumerate(layers)]
    m = Model(nodes, [Port("x", "t0", "TBF")], [Port("y", "t40", "TBF")])
    x = rng.normal(size=(5, 2, 3)).astype(np.float32)
    s = m.stream(2)
    np.testing.assert_allclose(np.stack([s.step(x[t]) for t in range(5)]), m.run(x), atol=1e-6)


def test_fuzzed_feeds_to_multi_input_graphs_run_or_refuse_cleanly():
    """tests/fuzz_feeds.py: random time steps, batch and lengths per input of graphs with
    several inputs; .ci/asan runs it under AddressSanitizer too."""
    import fuzz_feeds
    res = fuzz_feeds.run(4000, seed=2)
    assert not res["findings"], res["findings"][:5]
    assert res["outcomes"].get("refused", 0) > 500 and res["outcomes"].get("ran and streamed", 0) > 250
