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
    """Every thread steps the same input, so any interleaving of whole steps gives the state
    of 4 x 200 sequential steps; a torn step (two threads in the kernels at once) would not."""
    rng = np.random.default_rng(0)
    m = sequence_model(random_layer("LSTM", 32, 64, rng=rng, scale=0.2))
    x = rng.normal(size=(1, 32)).astype(np.float32)
    shared = m.stream()
    errors = []

    def work():
        try:
            for _ in range(200):
                shared.step(x)
                shared.state
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
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
