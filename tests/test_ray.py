"""lstm_rt.ray: batch inference on Ray Data and live sessions on Ray Serve equal the local
runtime bit for bit; models and states travel as data. Ray runs locally
(`ray.init(num_cpus=2)`), started once for the module; the tests that need it skip when
Ray is absent."""
import asyncio
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import lstm_rt
from lstm_rt.errors import LstmRtError, ShapeError
from lstm_rt.ray import BatchRunner, Sessions, SessionError, SessionServer
from util import language_model, onnx_style_model, random_layer, sequence_model

try:
    import ray
except ImportError:      # the tests that need Ray skip (ray_local); the rest run without it
    ray = None


def _mixed_lengths(rng, n, I, longest=40):
    """n sequences [T_i, I] float32, T_i in [0, longest] (0 and 1 included)."""
    lens = rng.integers(0, longest + 1, size=n)
    lens[:3] = [0, 1, longest]
    return [rng.normal(size=(int(t), I)).astype(np.float32) for t in lens]


def _objects(rows):
    """A column of per-row arrays, as Ray's numpy batches hold variable-shaped tensors."""
    col = np.empty(len(rows), dtype=object)
    col[:] = rows
    return col


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray for the module (starting one takes seconds)."""
    pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield
    try:
        from ray import serve
        serve.shutdown()
    except ImportError:
        pass
    ray.shutdown()


# ------------------------------------------------------------ import, pickling


def test_import_lstm_rt_does_not_import_ray():
    code = ("import sys, lstm_rt, lstm_rt.pool, lstm_rt.ray; "
            "r = lstm_rt.ray.BatchRunner; "
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=os.path.dirname(os.path.dirname(lstm_rt.__file__)))


def test_model_and_state_pickle_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    m = onnx_style_model(random_layer("LSTM", 5, 7, rng=rng)).quantized("int8")
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.weights == "int8" and [s.name for s in m2.inputs] == [s.name for s in m.inputs]
    x = rng.normal(size=(9, 3, 5)).astype(np.float32)
    for a, b in zip(m.run({"X": x}).values(), m2.run({"X": x}).values()):
        np.testing.assert_array_equal(a, b)
    s = m.stream(3)
    s.feed(x[:4])
    state = pickle.loads(pickle.dumps(s.state))      # a dict of arrays
    s2 = m2.stream(3)
    s2.state = state
    np.testing.assert_array_equal(s.feed(x[4:])["Y"], s2.feed(x[4:])["Y"])
    with pytest.raises(LstmRtError, match="does not pickle"):
        pickle.dumps(s)
    # a tampered payload is refused on arrival like a tampered file
    data = bytearray(pickle.dumps(m))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises((lstm_rt.ModelFormatError, pickle.UnpicklingError)):
        pickle.loads(bytes(data))


# ------------------------------------------------------------ BatchRunner without Ray


@pytest.mark.parametrize("layout,max_padding", [(0, 0.2), (1, 0.2), (1, 0.0), (0, 1.0)])
def test_batch_runner_with_lengths_equals_each_row_alone(layout, max_padding):
    """Padded runs with lengths (sorted runs, or one run padded to the longest): each row's
    trimmed outputs equal Model.run of it alone (time-major and batch-major, states and
    Y alike)."""
    rng = np.random.default_rng(layout)
    m = onnx_style_model(random_layer("GRU", 4, 6, rng=rng, direction="bidirectional"), layout=layout)
    seqs = _mixed_lengths(rng, 23, 4)
    out = BatchRunner(m, max_padding=max_padding)({"X": _objects(seqs), "id": np.arange(23)})
    assert list(out["id"]) == list(range(23))
    for i, x in enumerate(seqs):
        alone = m.run({"X": x[:, None] if layout == 0 else x[None]})
        b = 2 if layout == 0 else 0
        np.testing.assert_array_equal(out["Y"][i], np.take(alone["Y"], 0, axis=b))
        np.testing.assert_array_equal(out["Y_h"][i], np.take(alone["Y_h"], 0, axis=1 - layout))


def test_batch_runner_without_lengths_groups_equal_lengths():
    """A token-id model without a lengths input: rows are grouped by length (a padded step
    would change its outputs), so each row still equals running it alone."""
    rng = np.random.default_rng(3)
    m = language_model(["<unk>", "a", "b", "c", "d"], kind="LSTM", E=4, H=6)
    rows = [rng.integers(0, 5, size=int(t)) for t in [3, 1, 3, 5, 1, 3, 0]]
    out = BatchRunner(m, columns={"ids": "tokens"})({"tokens": _objects(rows)})
    for i, ids in enumerate(rows):
        np.testing.assert_array_equal(out["scores"][i], m.run(ids[:, None])[:, 0])


def test_batch_runner_refuses_bad_rows_and_columns():
    rng = np.random.default_rng(4)
    m = onnx_style_model(random_layer("LSTM", 4, 5, rng=rng))
    runner = BatchRunner(m)
    good = rng.normal(size=(3, 4)).astype(np.float32)
    with pytest.raises(ShapeError, match=r"row 1 of the batch, column 'X' \(input 'X'\): expected \[n, 4\]"):
        runner({"X": _objects([good, good[:, :3]])})
    with pytest.raises(ShapeError, match="row 0 .* float32, got float64"):
        runner({"X": _objects([good.astype(np.float64)])})
    with pytest.raises(LstmRtError, match="no column 'X'"):
        runner({"features": _objects([good])})
    with pytest.raises(LstmRtError, match="names of the model's outputs"):
        runner({"X": _objects([good]), "Y": np.zeros(1)})
    with pytest.raises(LstmRtError, match="does not have"):
        BatchRunner(m, columns={"x": "features"})
    with pytest.raises(LstmRtError, match="must be a Model"):
        BatchRunner(3.0)
    with pytest.raises(LstmRtError, match="max_padding"):
        BatchRunner(m, max_padding=1.5)


# ------------------------------------------------------------ Ray Data


def test_ray_data_1000_mixed_lengths_equal_local_run(ray_local, tmp_path):
    """1,000 sequences of lengths 0..40 through Ray Data on two workers that map the model
    file: every row equals local Model.run of that sequence, bit for bit."""
    rng = np.random.default_rng(10)
    m = onnx_style_model(random_layer("LSTM", 8, 16, rng=rng), layout=1)
    path = tmp_path / "m.lrt"
    m.save(path)
    seqs = _mixed_lengths(rng, 1000, 8)
    ds = ray.data.from_items([{"id": i, "X": x} for i, x in enumerate(seqs)], override_num_blocks=8)
    out = ds.map_batches(BatchRunner, fn_constructor_args=(str(path),), batch_size=50,
                         batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2))
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(1000))
    for r, x in zip(rows, seqs):
        alone = m.run({"X": x[None]})
        np.testing.assert_array_equal(r["Y"], alone["Y"][0])
        np.testing.assert_array_equal(r["Y_h"], alone["Y_h"][0])
        np.testing.assert_array_equal(r["Y_c"], alone["Y_c"][0])


def _killing_runner(model, marker):
    """A BatchRunner whose worker kills its own process in the middle of its first batch
    (once: `marker` records it), as a machine lost mid-job."""

    class KillOnce(BatchRunner):
        def __call__(self, batch):
            if not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    return KillOnce


def test_worker_killed_mid_job_is_retried_and_the_result_is_complete(ray_local, tmp_path):
    """Ray Data restarts a dead map_batches actor and retries its batches (its defaults,
    max_restarts=-1 and max_task_retries=-1: passing them to map_batches is deprecated in
    Ray 2.60); every row comes back once, equal to the local run."""
    rng = np.random.default_rng(11)
    m = onnx_style_model(random_layer("GRU", 6, 10, rng=rng))
    seqs = _mixed_lengths(rng, 200, 6, longest=25)
    marker = str(tmp_path / "killed")
    ds = ray.data.from_items([{"id": i, "X": x} for i, x in enumerate(seqs)], override_num_blocks=4)
    out = ds.map_batches(_killing_runner(m, marker), fn_constructor_args=(m,), batch_size=25,
                         batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1))
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert os.path.exists(marker)                 # a worker did die
    assert [r["id"] for r in rows] == list(range(200))
    for r, x in zip(rows, seqs):
        alone = m.run({"X": x[:, None]})
        np.testing.assert_array_equal(r["Y"], alone["Y"][:, :, 0])
        np.testing.assert_array_equal(r["Y_h"], alone["Y_h"][:, 0])


# ------------------------------------------------------------ sessions without Ray


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_sessions_export_resume_with_pending_and_unread_frames():
    """A session exported with frames not yet run and outputs not yet read continues on
    another Sessions exactly as if it had never moved."""
    rng = np.random.default_rng(20)
    m = sequence_model(random_layer("LSTM", 5, 8, rng=rng))
    x = rng.normal(size=(12, 5)).astype(np.float32)
    want = m.run(x[:, None])[:, 0]
    a, b = Sessions(m), Sessions(pickle.loads(pickle.dumps(m)))
    a.open("s")
    a.open("other")
    a.step("other", x[:2])
    a.step("s", x[:3])
    a.feed("s", x[3:5])
    a.run()                                     # outputs 3..4 unread
    a.feed("s", x[5:8])                         # frames 5..7 pending
    exported = pickle.loads(pickle.dumps(a.export("s")))
    assert "s" not in a and len(exported["pending"]) == 3 and len(exported["unread"]) == 2
    b.resume(exported)
    got = np.concatenate([want[:3], b.step("s", x[8:])])
    np.testing.assert_array_equal(got, want)
    with pytest.raises(SessionError, match="already open"):
        b.resume(exported)
    with pytest.raises(SessionError, match="no session 's'"):
        a.step("s", x[:1])


def test_sessions_refuse_bad_requests():
    rng = np.random.default_rng(21)
    m = sequence_model(random_layer("GRU", 3, 4, rng=rng))
    other = sequence_model(random_layer("GRU", 3, 4, rng=rng))
    s = Sessions(m, max_sessions=2)
    s.open("a")
    with pytest.raises(ShapeError, match=r"frames must be \[n, 3\] float32"):
        s.step("a", np.zeros((2, 4), np.float32))
    with pytest.raises(LstmRtError, match="session id must be a non-empty str"):
        s.open(7)
    with pytest.raises(LstmRtError, match="session id"):
        s.open("x" * 300)
    s.open("b")
    with pytest.raises(SessionError, match="max_sessions=2"):
        s.open("c")
    exported = s.export("a")
    with pytest.raises(LstmRtError, match="exported from another model"):
        Sessions(other).resume(exported)
    with pytest.raises(ShapeError, match="state"):
        Sessions(m).resume({**exported, "state": {"gru/h": np.zeros((1, 1, 5), np.float32)}})
    with pytest.raises(LstmRtError, match="a dict from export"):
        Sessions(m).resume({"format": 99})
    with pytest.raises(LstmRtError, match="idle_timeout_s"):
        Sessions(m, idle_timeout_s=float("nan"))


def test_idle_sessions_are_closed():
    rng = np.random.default_rng(22)
    m = sequence_model(random_layer("RNN", 3, 4, rng=rng))
    clock = FakeClock()
    s = Sessions(m, idle_timeout_s=10, clock=clock)
    s.open("old")
    clock.now = 6
    s.open("new")
    clock.now = 11
    assert s.close_idle() == ["old"] and s.ids() == ["new"]
    s.step("new", np.zeros((1, 3), np.float32))      # a request keeps a session alive
    clock.now = 20
    assert s.close_idle() == [] and s.pool.streams == 1
    with pytest.raises(SessionError, match="closed after 10 s idle"):
        s.step("old", np.zeros((1, 3), np.float32))


def test_server_batches_concurrent_requests_into_rounds():
    """Requests that arrive together share rounds, and each gets its own frames' outputs."""
    rng = np.random.default_rng(23)
    m = sequence_model(random_layer("LSTM", 4, 6, rng=rng))
    xs = [rng.normal(size=(n, 4)).astype(np.float32) for n in (3, 1, 2, 2)]

    async def main():
        server = SessionServer(m, handoff=None)
        for i in range(3):
            await server.open(f"s{i}")
        # s0 sends two requests before the first is answered: they keep their order
        outs = await asyncio.gather(server.step("s0", xs[0]), server.step("s1", xs[1]),
                                    server.step("s2", xs[2]), server.step("s0", xs[3]))
        return outs, server.sessions.pool.rounds

    outs, rounds = asyncio.run(main())
    assert rounds == 5            # max frames pending per session (3 + 2), not the sum (8)
    np.testing.assert_array_equal(np.concatenate([outs[0], outs[3]]),
                                  m.run(np.concatenate([xs[0], xs[3]])[:, None])[:, 0])
    np.testing.assert_array_equal(outs[1], m.run(xs[1][:, None])[:, 0])
    np.testing.assert_array_equal(outs[2], m.run(xs[2][:, None])[:, 0])


# ------------------------------------------------------------ Ray Serve


def test_session_moved_between_replicas_continues_bit_identically(ray_local):
    """Two replicas (two applications of one replica each, so the test picks the replica):
    a session exported from one and resumed on the other gives the same outputs as the
    same session left where it was."""
    from ray import serve
    rng = np.random.default_rng(30)
    m = language_model([f"w{i}" for i in range(50)], kind="GRU", E=8, H=16)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    dep = lstm_rt.ray.deployment(ray_actor_options={"num_cpus": 0.25})
    a = serve.run(dep.bind(m, handoff=None), name="a", route_prefix="/a")
    b = serve.run(dep.bind(m, handoff=None), name="b", route_prefix="/b")
    ids = rng.integers(0, 50, size=30)
    try:
        a.open.remote("moved").result()
        a.open.remote("stays").result()
        head = [a.step.remote(s, ids[:10]).result() for s in ("moved", "stays")]
        np.testing.assert_array_equal(head[0], head[1])
        exported = a.export.remote("moved").result()
        b.resume.remote(exported).result()
        assert a.ids.remote().result() == ["stays"] and b.ids.remote().result() == ["moved"]
        moved = [b.step.remote("moved", ids[k:k + 5]).result() for k in range(10, 30, 5)]
        stays = [a.step.remote("stays", ids[k:k + 5]).result() for k in range(10, 30, 5)]
        np.testing.assert_array_equal(np.concatenate(moved), np.concatenate(stays))
        np.testing.assert_array_equal(np.concatenate(head[:1] + moved), m.run(ids[:, None])[:, 0])
        with pytest.raises(SessionError, match="no session 'moved'"):
            a.step.remote("moved", ids[:1]).result()
        with pytest.raises(ShapeError, match="token ids must be in"):
            b.step.remote("moved", np.array([99])).result()
        # the same over HTTP (JSON): outputs equal the handle's, bad requests are 4xx
        url = f"http://127.0.0.1:{port}/a"
        assert _post(url, {"op": "open", "session": "web"}) == (200, {"session": "web"})
        status, body = _post(url, {"session": "web", "frames": ids[:10].tolist()})
        assert status == 200
        np.testing.assert_array_equal(np.asarray(body["outputs"], np.float32), head[0])
        status, body = _post(url, {"session": "nobody", "frames": [1]})
        assert status == 404 and "no session 'nobody'" in body["error"]
        status, body = _post(url, {"session": "web", "frames": [[1.5, "x"]]})
        assert status == 400 and "frames must be a list of token ids" in body["error"]
    finally:
        serve.delete("a")
        serve.delete("b")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    """POST JSON to the local Serve proxy: (status, decoded JSON reply)."""
    import json
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_scale_down_keeps_every_conversation(ray_local):
    """Two replicas routed by session; scaled down to one, the stopped replica hands its
    sessions over and every conversation goes on as if nothing happened."""
    from ray import serve
    rng = np.random.default_rng(31)
    m = sequence_model(random_layer("LSTM", 4, 8, rng=rng))
    # 24 sessions: each lands on either replica by a hash of the (random) replica ids, so
    # all of them on one replica has odds 2**-23 (with 8 it was 1 in 128: a flaky check)
    xs = {f"mic{i}": rng.normal(size=(12, 4)).astype(np.float32) for i in range(24)}
    opts = dict(ray_actor_options={"num_cpus": 0.25})
    h = serve.run(lstm_rt.ray.deployment(num_replicas=2, **opts).bind(m, handoff="test_handoff"),
                  name="scale", route_prefix="/scale")
    try:
        got = {k: [] for k in xs}
        for k in xs:
            h.open.remote(k).result()
            got[k].append(h.step.remote(k, xs[k][:6]).result())
        held = [len(h.ids.remote().result()) for _ in range(6)]
        h = serve.run(lstm_rt.ray.deployment(num_replicas=1, **opts).bind(m, handoff="test_handoff"),
                      name="scale", route_prefix="/scale")
        for k in xs:
            got[k].append(h.step.remote(k, xs[k][6:]).result())
        for k, x in xs.items():
            np.testing.assert_array_equal(np.concatenate(got[k]), m.run(x[:, None])[:, 0])
        assert sorted(h.ids.remote().result()) == sorted(xs)
        assert 0 < min(held) < len(xs)    # the sessions were spread over both replicas
    finally:
        serve.delete("scale")


def test_server_closes_idle_sessions_by_itself():
    rng = np.random.default_rng(24)
    m = sequence_model(random_layer("GRU", 3, 4, rng=rng))

    async def main():
        server = SessionServer(m, idle_timeout_s=0.1, handoff=None)
        await server.open("quiet")
        await server.step("quiet", np.zeros((2, 3), np.float32))
        before = await server.ids()
        await asyncio.sleep(0.4)           # no request meanwhile: the sweep closes it
        return before, server.sessions.ids(), server.sessions.pool.streams

    assert asyncio.run(main()) == (["quiet"], [], 0)


def test_rendezvous_ranking_moves_only_the_sessions_of_a_removed_replica():
    """SessionRouter's choice: every router ranks a session's replicas alike, the sessions
    spread over the replicas, and removing one replica moves only the sessions it held."""
    from lstm_rt.ray import _rendezvous
    replicas = ["r1", "r2", "r3", "r4"]
    sessions = [f"mic{i}" for i in range(2000)]

    def owner(s, rs):
        return max(rs, key=lambda r: _rendezvous(s, r))

    before = {s: owner(s, replicas) for s in sessions}
    counts = [list(before.values()).count(r) for r in replicas]
    assert min(counts) > 400                       # ~500 each
    after = {s: owner(s, replicas[:2] + replicas[3:]) for s in sessions}
    moved = [s for s in sessions if before[s] != after[s]]
    assert moved and all(before[s] == "r3" for s in moved)
