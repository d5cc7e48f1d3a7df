"""Threads and resources: one Stream shared by threads never corrupts; 10^6 steps and
10^4 load/close cycles leave the resident set flat. (Throughput scaling with threads is a
speed figure: bench/bench_threads.py.)"""
import gc
import os
import threading

import numpy as np
import pytest

import lstm_rt
from lstm_rt.errors import LstmRtError
from util import language_model, random_layer, sequence_model


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_one_stream_shared_by_threads_steps_atomically():
    """Every thread steps the same input (two by step, two by feeding one-step chunks), so
    any interleaving of whole steps gives the state of 4 x 200 sequential steps; a torn step
    (two threads in the kernels at once, which let the GIL go) would not."""
    rng = np.random.default_rng(0)
    m = sequence_model(random_layer("LSTM", 32, 64, rng=rng, scale=0.2))
    x = rng.normal(size=(1, 32)).astype(np.float32)
    shared = m.stream()
    errors = []

    def work(i):
        try:
            for _ in range(200):
                if i % 2:
                    shared.feed(x[None])
                else:
                    shared.step(x)
                shared.state
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = m.stream()
    for _ in range(800):
        alone.step(x)
    assert not errors
    for k, v in alone.state.items():
        np.testing.assert_array_equal(shared.state[k], v)


def test_steps_wait_for_a_holder_that_let_the_gil_go():
    """A thread holding a stream (here inside `with`, asleep without the GIL) makes every
    other thread's step wait for it; the waiters then all run, one whole step each."""
    import time
    rng = np.random.default_rng(3)
    m = sequence_model(random_layer("GRU", 3, 4, rng=rng))
    x = rng.normal(size=(1, 3)).astype(np.float32)
    s = m.stream()
    order, entered, errors = [], threading.Event(), []

    def holder():
        with s._lock:
            entered.set()
            time.sleep(0.3)
            order.append("holder")

    def stepper():
        try:
            s.step(x)
            order.append("step")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    h = threading.Thread(target=holder)
    h.start()
    entered.wait()
    steppers = [threading.Thread(target=stepper) for _ in range(3)]
    for t in steppers:
        t.start()
    for t in [h] + steppers:
        t.join()
    assert not errors
    assert order == ["holder", "step", "step", "step"]
    alone = m.stream()
    for _ in range(3):
        alone.step(x)
    for k, v in alone.state.items():
        np.testing.assert_array_equal(s.state[k], v)


def test_million_steps_keep_rss_flat():
    m = language_model(["<unk>", ".", "a", "b", "c"], E=4, H=8)
    s = m.stream()
    ids = [np.array([i % 5]) for i in range(5)]
    for i in range(20000):          # warm up allocator pools
        s.step(ids[i % 5])
    gc.collect()
    before = rss_mb()
    for i in range(1_000_000):
        s.step(ids[i % 5])
    gc.collect()
    assert rss_mb() - before < 8, f"RSS grew by {rss_mb() - before:.1f} MiB over 10^6 steps"


def test_ten_thousand_load_close_cycles_keep_rss_flat(tmp_path):
    path = tmp_path / "m.lrt"
    language_model(["<unk>", ".", "a", "b"], kind="GRU", E=4, H=8).quantized("int8").save(path)
    x = np.array([[1], [2]])

    def cycle():
        m = lstm_rt.load(path)
        m.run(x)
        m.close()

    for _ in range(500):
        cycle()
    gc.collect()
    before = rss_mb()
    for _ in range(10_000):
        cycle()
    gc.collect()
    assert rss_mb() - before < 8, f"RSS grew by {rss_mb() - before:.1f} MiB over 10^4 load/close cycles"
    with open("/proc/self/maps") as f:
        assert str(path) not in f.read()      # every mapping of the file is gone
    m = lstm_rt.load(path)
    m.close()
    with pytest.raises(LstmRtError, match="closed"):
        m.run(x)
    with pytest.raises(LstmRtError, match="closed"):
        m.stream()


def test_crossed_take_state_in_two_threads_does_not_deadlock():
    m = sequence_model(random_layer("LSTM", 3, 4, rng=np.random.default_rng(1)))
    a, b = m.stream(), m.stream()
    a.step(np.ones((1, 3), np.float32))
    errors = []

    def swap(dst, src):
        try:
            for _ in range(2000):
                dst.take_state(src)
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=swap, args=(a, b), daemon=True),
               threading.Thread(target=swap, args=(b, a), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "take_state deadlocked"
    assert not errors


def test_a_closed_model_and_its_streams_refuse_everything(tmp_path):
    path = tmp_path / "m.lrt"
    lm = language_model(["<unk>", ".", "a", "b"], kind="GRU")
    lm.save(path)
    with lstm_rt.load(path) as m:
        plain = m.stream()                     # a plain chain: steps in C
        plain.step(np.array([1]))
        general = m.stream()
    before = path.read_bytes()
    calls = [lambda: m.save(path), lambda: m.save(tmp_path / "other.lrt"), lambda: m.quantized("int8"),
             lambda: m.run(np.array([[1]])), lambda: m.stream(), lambda: m.layers, lambda: m.weights,
             lambda: m.to_bytes()]
    for s in (plain, general):
        calls += [lambda s=s: s.step(np.array([1])), lambda s=s: s.step({"ids": np.array([1])}),
                  lambda s=s: s.feed(np.array([[1]])), lambda s=s: s.state, lambda s=s: s.fork(),
                  lambda s=s: s.reset(), lambda s=s: setattr(s, "state", {}),
                  lambda s=s: lm.stream().take_state(s), lambda s=s: s.take_state(lm.stream())]
    for call in calls:
        with pytest.raises(LstmRtError, match="is closed"):
            call()
    assert path.read_bytes() == before       # save over the file wrote nothing
    assert not (tmp_path / "other.lrt").exists()


def test_a_run_racing_close_finishes_or_says_closed():
    lm = language_model(["<unk>", ".", "a", "b"], H=64)
    x = np.ones((300, 4), np.int64)
    for _ in range(20):
        m = lstm_rt.load_bytes(lm.to_bytes())
        results = []

        def run():
            try:
                results.append(m.run(x).shape)
            except LstmRtError as e:
                results.append(str(e))

        t = threading.Thread(target=run)
        t.start()
        m.close()
        t.join()
        assert results[0] == (300, 4, 4) or "is closed" in results[0], results
