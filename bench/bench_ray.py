"""lstm_rt on Ray: Ray Data batch inference at 1 and 2 CPUs against a plain local loop
over the same data, and the per-request latency of the Ray Serve session path at batch 1.

    python bench/bench_ray.py            # ~3 minutes (run it unpinned: Ray uses both cores)
    python bench/bench_ray.py --quick

Batch: 80 features -> LSTM 256 -> LSTM 256 -> Dense 40 with a lengths input (an acoustic
model scoring a corpus), N sequences of 10..100 frames, batches of 64 rows padded to
their longest. "local, one by one" runs Model.run per sequence; "local, batches" calls
BatchRunner on the same batches in this process (what a Ray worker does, without Ray);
"Ray Data" runs `map_batches(BatchRunner, compute=ActorPoolStrategy(size=k))` on a local
Ray with k CPUs (`ray.init(num_cpus=k)`), the input already in the object store, timed
end to end (actor start, model load, every batch, results back): median of the repeats.
Ray's fixed cost per job is a job of one batch; the overhead per row is the rest of the
difference to "local, batches" at 1 CPU, divided by N.

Serve: one session, one frame per request (batch 1), through a DeploymentHandle
(`handle.step.remote(session, frame).result()` from the driver) and over HTTP (JSON
POST to the local proxy), against `Sessions.step` and `Stream.step` in-process; then 1
and 64 sessions in flight at once (asyncio clients in the driver), 1 or 10 frames per
request: frames/s and latency.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lstm_rt  # noqa: E402
from lstm_rt.layers import LSTM, Dense  # noqa: E402
from lstm_rt.ray import BatchRunner, Sessions  # noqa: E402
from bench_step import cpu_name  # noqa: E402

FEATURES, HIDDEN, CLASSES = 80, 256, 40
BATCH = 64


def acoustic_model(rng):
    """x [B, T, 80] + lengths [B] -> LSTM 256 -> LSTM 256 -> Dense 40: y [B, T, 40]."""
    def lstm(name, I):
        k = 1 / np.sqrt(HIDDEN)
        return LSTM(name, rng.uniform(-k, k, (1, 4 * HIDDEN, I)), rng.uniform(-k, k, (1, 4 * HIDDEN, HIDDEN)),
                    rng.uniform(-k, k, (1, 8 * HIDDEN)))
    nodes = [lstm_rt.Node(lstm("lstm1", FEATURES), ["x", "lengths"], ["h1"]),
             lstm_rt.Node(lstm("lstm2", HIDDEN), ["h1", "lengths"], ["h2"]),
             lstm_rt.Node(Dense("head", rng.normal(size=(CLASSES, HIDDEN)) * 0.1), ["h2"], ["y"])]
    return lstm_rt.Model(nodes, [lstm_rt.Port("x", "x", "BTF"), lstm_rt.Port("lengths", "lengths", "B", "int32")],
                         [lstm_rt.Port("y", "y", "BTF")])


def cpu_family_model() -> str:
    """ "family 23 model 1" from /proc/cpuinfo (the model name alone may be "AMD EPYC")."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("cpu family", "model") and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        return "family ?"
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def column(rows):
    col = np.empty(len(rows), dtype=object)
    col[:] = rows
    return col


def bench_batch(path, model, seqs, repeats):
    import ray
    n = len(seqs)
    batches = [{"x": column(seqs[i:i + BATCH])} for i in range(0, n, BATCH)]
    one = median_time(lambda: [model.run({"x": x[None]}) for x in seqs], repeats)
    runner = BatchRunner(model)
    local = median_time(lambda: [runner(b) for b in batches], repeats)
    rows = [("local, one by one (Model.run per sequence)", 1, one), ("local, batches of 64 (BatchRunner)", 1, local)]
    fixed = {}
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ds = ray.data.from_items([{"id": i, "x": x} for i, x in enumerate(seqs)],
                                 override_num_blocks=4 * cpus).materialize()
        tiny = ray.data.from_items([{"id": i, "x": x} for i, x in enumerate(seqs[:BATCH])],
                                   override_num_blocks=1).materialize()

        def job(data, size):
            out = data.map_batches(BatchRunner, fn_constructor_args=(path,), batch_size=BATCH,
                                   batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size))
            return out.materialize()

        check = job(ds, cpus).take(3)       # warm-up: imports, object store
        for r in check:
            x = seqs[r["id"]]
            alone = model.run({"x": x[None], "lengths": np.array([len(x)], np.int32)})["y"][0]
            assert np.array_equal(r["y"], alone), "Ray Data output differs from local Model.run"
        fixed[cpus] = median_time(lambda: job(tiny, 1), repeats)
        rows.append((f"Ray Data, {cpus} CPU{'s' if cpus > 1 else ''}, {cpus} worker{'s' if cpus > 1 else ''}",
                     cpus, median_time(lambda: job(ds, cpus), repeats)))
        ray.shutdown()
    return rows, fixed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(times):
    a = np.array(times) * 1e3
    return float(np.median(a)), float(np.percentile(a, 99))


def bench_serve(model, requests):
    import ray
    from ray import serve
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(requests, 1, FEATURES)).astype(np.float32)
    streaming = stream_model(model)
    out = {}
    s = streaming.stream(1)
    t = []
    for f in frames:
        t0 = time.perf_counter()
        s.step(f)
        t.append(time.perf_counter() - t0)
    out["Stream.step, in-process"] = percentiles(t)
    sessions = Sessions(streaming)
    sessions.open("a")
    t = []
    for f in frames:
        t0 = time.perf_counter()
        sessions.step("a", f)
        t.append(time.perf_counter() - t0)
    out["Sessions.step, in-process"] = percentiles(t)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(lstm_rt.ray.deployment(ray_actor_options={"num_cpus": 1}).bind(streaming, handoff=None),
                       name="bench", route_prefix="/bench")
    handle.open.remote("mic").result()
    for f in frames[:50]:
        handle.step.remote("mic", f).result()
    t = []
    for f in frames:
        t0 = time.perf_counter()
        y = handle.step.remote("mic", f).result()
        t.append(time.perf_counter() - t0)
    assert y.shape == (1, CLASSES)
    out["Ray Serve, DeploymentHandle"] = percentiles(t)
    out["concurrent"] = asyncio.run(concurrent_sessions(handle, requests=max(requests // 12, 5)))
    url = f"http://127.0.0.1:{port}/bench"
    post(url, {"op": "open", "session": "web"})
    t = []
    for f in frames:
        body = {"session": "web", "frames": f.tolist()}
        t0 = time.perf_counter()
        post(url, body)
        t.append(time.perf_counter() - t0)
    out["Ray Serve, HTTP (JSON, urllib, new connection per request)"] = percentiles(t[10:])
    serve.shutdown()
    ray.shutdown()
    return out


async def concurrent_sessions(handle, requests):
    """Sessions in flight at once from this driver (asyncio), each sending `requests`
    requests of n frames one after the other: [(sessions, n, frames/s, median ms, p99 ms)]."""
    rows = []
    for sessions in (1, 64):
        for n in (1, 10):
            frames = np.zeros((n, FEATURES), np.float32)
            lat = []

            async def client(sid):
                await handle.open.remote(sid)
                for _ in range(requests):
                    t0 = time.perf_counter()
                    await handle.step.remote(sid, frames)
                    lat.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*[client(f"c{sessions}_{n}_{i}") for i in range(sessions)])
            wall = time.perf_counter() - t0
            rows.append((sessions, n, sessions * requests * n / wall) + percentiles(lat))
    return rows


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def stream_model(model):
    """The batch model without its lengths input (a StreamPool serves one sequence input)."""
    nodes = [lstm_rt.Node(layer, [src], [dst]) for layer, src, dst in
             zip(model.layers, ["x", "h1", "h2"], ["h1", "h2", "y"])]
    return lstm_rt.Model(nodes, [lstm_rt.Port("x", "x", "BTF")], [lstm_rt.Port("y", "y", "BTF")])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequences", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.sequences, args.repeats, args.requests = 256, 1, 50
    import ray
    rng = np.random.default_rng(0)
    model = acoustic_model(rng)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench_ray_{os.getpid()}.lrt")
    model.save(path)
    model = lstm_rt.load(path, mmap=True)
    seqs = [rng.normal(size=(int(t), FEATURES)).astype(np.float32)
            for t in rng.integers(10, 101, size=args.sequences)]
    frames = sum(len(x) for x in seqs)
    print(f"CPU: {cpu_name()}, {cpu_family_model()} ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}); "
          f"lstm_rt kernels: {lstm_rt.cpu_isa()}; ray {ray.__version__}; numpy {np.__version__}")
    print(f"\nBatch inference: {args.sequences} sequences of 10..100 frames ({frames:,} frames), "
          f"80 -> LSTM 256 -> LSTM 256 -> Dense 40, fp32, batches of {BATCH}; median of {args.repeats}\n")
    try:
        rows, fixed = bench_batch(path, model, seqs, args.repeats)
    finally:
        os.unlink(path)
    local = rows[1][2]
    print("| run | CPUs | seconds | rows/s | frames/s | vs local batches |")
    print("|---|---|---|---|---|---|")
    for name, cpus, t in rows:
        print(f"| {name} | {cpus} | {t:.2f} | {args.sequences / t:,.0f} | {frames / t:,.0f} | {local / t:.2f}x |")
    r1, r2 = rows[2][2], rows[3][2]
    print(f"\nRay Data 2 CPUs vs 1 CPU: {r1 / r2:.2f}x. Ray's fixed cost per job (one batch of 64 rows, "
          f"1 worker): {fixed[1]:.2f} s at 1 CPU, {fixed[2]:.2f} s at 2. Overhead per row at 1 CPU beyond "
          f"that: {(r1 - fixed[1] - local) / args.sequences * 1e6:,.0f} µs "
          f"(local batches: {local / args.sequences * 1e6:,.0f} µs per row; below 0: within the noise).")

    print(f"\nServe: one session, one frame per request (batch 1), {args.requests} requests\n")
    lat = bench_serve(model, args.requests)
    concurrent = lat.pop("concurrent")
    print("| path | median ms | p99 ms |")
    print("|---|---|---|")
    for name, (p50, p99) in lat.items():
        print(f"| {name} | {p50:.3f} | {p99:.3f} |")
    print("\nSessions in flight at once through one DeploymentHandle (one replica, asyncio clients):\n")
    print("| sessions | frames per request | frames/s | median ms | p99 ms |")
    print("|---|---|---|---|---|")
    for sessions, n, rate, p50, p99 in concurrent:
        print(f"| {sessions} | {n} | {rate:,.0f} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
