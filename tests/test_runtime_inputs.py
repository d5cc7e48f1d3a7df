"""Run-time inputs as a host app may pass them: strided, read-only, non-finite, wrong.
Documented NaN rule: a NaN or inf in one sequence's input reaches only that sequence's
outputs and state; the other sequences of the batch are bit-identical to a run without it."""
import numpy as np
import pytest

from lstm_rt.errors import ShapeError, UnsupportedError
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
