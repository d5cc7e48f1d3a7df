"""StreamPool: batched rounds over many streams equal stepping each stream alone."""
import numpy as np
import pytest

from lstm_rt.errors import LstmRtError, ShapeError
from lstm_rt.pool import StreamPool
from util import language_model, random_layer, sequence_model

ATOL = 1e-5


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_pool_equals_separate_streams_with_ragged_chunks(kind):
    rng = np.random.default_rng(0)
    m = sequence_model(random_layer(kind, 6, 9, rng=rng))
    pool = StreamPool(m, capacity=2)          # grows while streams open
    n_streams = 7
    streams = [pool.open() for _ in range(n_streams)]
    frames = [rng.normal(size=(int(rng.integers(3, 20)), 6)).astype(np.float32) for _ in streams]
    fed = [0] * n_streams
    outs = [[] for _ in streams]
    while any(f < len(x) for f, x in zip(fed, frames)):   # chunks of any size, at any time
        for i, s in enumerate(streams):
            n = int(rng.integers(0, 4))
            s.feed(frames[i][fed[i]:fed[i] + n])
            fed[i] = min(fed[i] + n, len(frames[i]))
        pool.step()
        pool.step()
        for i, s in enumerate(streams):
            outs[i].append(s.read())
    pool.run()
    for i, s in enumerate(streams):
        got = np.concatenate(outs[i] + [s.read()])
        want = m.run(frames[i][:, None])[:, 0]
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert pool.pending == 0 and pool.streams == n_streams


def test_state_reset_close_and_reuse_of_slots():
    rng = np.random.default_rng(1)
    m = language_model(["<unk>", ".", "a", "b", "c"], E=4, H=5)
    pool = StreamPool(m, capacity=1)
    a, b = pool.open(), pool.open()
    a.feed(np.array([2, 3, 4]))
    b.feed(np.array([4]))
    assert pool.run() == 4 and pool.rounds == 3
    alone = m.stream(1)
    alone.feed(np.array([[2], [3], [4]]))
    for k, v in alone.state.items():
        np.testing.assert_allclose(a.state[k], v, atol=ATOL)
    st = a.state
    a.reset()
    assert all(not v.any() for v in a.state.values())
    a.state = st
    a.feed(np.array([2]))
    pool.run()
    np.testing.assert_allclose(a.read()[-1], alone.step(np.array([2]))[0], atol=ATOL)
    a.close()
    assert a.closed and pool.streams == 1
    with pytest.raises(LstmRtError, match="closed"):
        a.feed(np.array([2]))
    c = pool.open()                 # reuses a's slot, from zero state
    assert all(not v.any() for v in c.state.values())
    with pytest.raises(ShapeError, match=r"expected \(1, 1, 5\) float32, got \(1, 1, 2\)"):
        c.state = {k: v[:, :, :2] for k, v in st.items()}


def test_bad_frames_and_models():
    rng = np.random.default_rng(2)
    pool = StreamPool(sequence_model(random_layer("GRU", 3, 4, rng=rng)))
    s = pool.open()
    with pytest.raises(ShapeError, match=r"\[n, 3\] float32"):
        s.feed(np.zeros((2, 4), np.float32))
    with pytest.raises(ShapeError, match="float32"):
        s.feed(np.zeros((2, 3), np.float64))
    ids = StreamPool(language_model(["<unk>", ".", "a"])).open()
    with pytest.raises(ShapeError, match="integer"):
        ids.feed(np.zeros(2, np.float32))
    with pytest.raises(ShapeError, match=r"\[0, 3\)"):     # refused at feed, not mid-round
        ids.feed(np.array([1, 3]))
    assert ids.pending == 0
    with pytest.raises(Exception, match="bidirectional"):
        StreamPool(sequence_model(random_layer("GRU", 3, 4, rng=rng, direction="bidirectional")))


@pytest.mark.parametrize("capacity", [-1, 0, 10**12, None, 2.5, "3", True])
def test_a_capacity_that_is_no_sane_count_is_refused(capacity):
    """Refused before anything is allocated (10**12 slots would be 15 TiB of state)."""
    m = sequence_model(random_layer("GRU", 3, 4, rng=np.random.default_rng(0)))
    with pytest.raises(LstmRtError, match="capacity must be"):
        StreamPool(m, capacity=capacity)


def test_a_capacity_past_the_memory_cap_names_the_bytes():
    m = sequence_model(random_layer("LSTM", 3, 4, rng=np.random.default_rng(0)))   # 32 bytes per stream
    with pytest.raises(LstmRtError, match=r"capacity=2147483648 .* 64 GiB"):
        StreamPool(m, capacity=2**31)
    assert StreamPool(m, capacity=1000).open() is not None


def test_feeding_things_that_are_no_frames():
    pool = StreamPool(sequence_model(random_layer("GRU", 3, 4, rng=np.random.default_rng(0))))
    s = pool.open()
    for frames in (None, "abc", [[1.0, 2.0], [3.0]], [[None, None, None]], np.zeros((2, 3, 1), np.float32),
                   np.zeros(3, np.float32), {"x": 1}):
        with pytest.raises(ShapeError, match=r"frames must be"):
            s.feed(frames)
    assert s.pending == 0
    with pytest.raises(LstmRtError, match="StreamPool needs a Model"):
        StreamPool(None)


def _pool_run(m, frames):
    """Each stream's frames through one StreamPool in ragged rounds; returns what each read."""
    pool = StreamPool(m, capacity=1)
    streams = [pool.open() for _ in frames]
    for i, s in enumerate(streams):
        s.feed(frames[i][:2])
    pool.step()
    for i, s in enumerate(streams):
        s.feed(frames[i][2:])
    pool.run()
    return [s.read() for s in streams]


@pytest.mark.parametrize("form", ["gru", "lstm2", "heads", "packed"])
def test_pool_serves_converted_pytorch_forms(form):
    """Forms with optional state/length inputs, state outputs and several per-step outputs:
    a stream's reads equal stepping that stream alone (state outputs are its .state)."""
    torch = pytest.importorskip("torch")
    from converters import from_torch
    from torch_forms import Heads, PackedTagger, seeded
    torch.manual_seed(0)
    module = {"gru": lambda: torch.nn.GRU(3, 4), "lstm2": lambda: torch.nn.LSTM(3, 4, num_layers=2),
              "heads": lambda: seeded(Heads), "packed": lambda: seeded(PackedTagger)}[form]()
    m = from_torch(module)
    rng = np.random.default_rng(3)
    frames = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in (5, 3, 7)]
    got = _pool_run(m, frames)
    for f, g in zip(frames, got):
        s = m.stream(1)
        steps = [s.step(f[t:t + 1]) for t in range(len(f))]
        if isinstance(g, dict):
            for name, a in g.items():
                np.testing.assert_array_equal(a, np.concatenate([st[name] for st in steps]))
        else:
            want = [st if not isinstance(st, dict) else st[next(iter(st))] for st in steps]
            np.testing.assert_array_equal(g, np.concatenate(want))


def test_take_pending_returns_the_frames_not_yet_run():
    """take_pending + state + read is all a stream holds: moved to a fresh pool, the stream
    continues exactly as if it had stayed."""
    rng = np.random.default_rng(7)
    m = sequence_model(random_layer("LSTM", 3, 5, rng=rng))
    x = rng.normal(size=(9, 3)).astype(np.float32)
    pool = StreamPool(m)
    s = pool.open()
    s.feed(x[:2])
    pool.step()                       # frame 0 run, frame 1 pending
    s.feed(x[2:4])
    s.feed(x[4:6])
    pending = s.take_pending()
    np.testing.assert_array_equal(pending, x[1:6])
    assert s.pending == 0 and pool.run() == 0
    assert s.take_pending().shape == (0, 3)
    other = StreamPool(m).open()
    other.state = s.state
    other.feed(pending)
    other.feed(x[6:])
    other._pool.run()
    np.testing.assert_array_equal(np.concatenate([s.read(), other.read()]), m.run(x[:, None])[:, 0])
    s.close()
    with pytest.raises(LstmRtError, match="closed"):
        s.take_pending()
