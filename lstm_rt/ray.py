"""Scaling out on Ray: batch inference with Ray Data, many live streams with Ray Serve.

    import ray, lstm_rt.ray
    ds = ray.data.from_items([{"X": seq} for seq in sequences])   # seq [T_i, F] float32
    out = ds.map_batches(lstm_rt.ray.BatchRunner, fn_constructor_args=("model.lrt",),
                         batch_size=64, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=2))

    from ray import serve
    handle = serve.run(lstm_rt.ray.deployment(num_replicas=2).bind("model.lrt"))
    await handle.open.remote("mic-1")
    y = await handle.step.remote("mic-1", frames)      # [n, F] -> [n, O]

Ray is the scheduler: this module only says what a worker or a replica does, and
imports Ray only in `deployment()` and `SessionRouter` (nothing else here needs it), so
`import lstm_rt` never imports Ray and BatchRunner / SessionServer run without it.

Models travel as data: a Model pickles as its .lrt bytes (checked on arrival like a
file, no code), or a path is passed and each worker maps the file (`load(path,
mmap=True)`: the pages are shared by the workers of a machine). A session travels as
`SessionServer.export()`: its state dict, the frames not yet run and the outputs not yet
read, plus a fingerprint of the model it belongs to.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import time

import numpy as np

from . import _checks
from .errors import LstmRtError, ShapeError
from .model import Model, load, load_bytes
from .pool import StreamPool

__all__ = ["BatchRunner", "Sessions", "SessionServer", "SessionError",
           "deployment", "load_model"]

#: the format of SessionServer.export()'s dict; resume() refuses any other
EXPORT_FORMAT = 1
#: the Ray namespace of SessionServer's handoff actor (replicas of any job find it)
HANDOFF_NAMESPACE = "lstm_rt"
#: the longest session id accepted (ids are keys in memory and in logs)
MAX_SESSION_ID = 256


class SessionError(LstmRtError, KeyError):
    """A request names a session that is not on this replica, or one that already is."""

    def __str__(self):   # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def load_model(model) -> Model:
    """A Model from what a worker was given: a Model (it arrived as its .lrt bytes and
    was checked like a file), the bytes of a .lrt file, or a path (mapped, not copied)."""
    if isinstance(model, Model):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        return load_bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return load(model, mmap=os.fspath(model).lower().endswith(".lrt"))
    raise LstmRtError(f"model must be a Model, the bytes of a .lrt file or a path, "
                      f"got {type(model).__name__}")


# ---------------------------------------------------------------- batch inference


class BatchRunner:
    """A callable class for `ray.data.Dataset.map_batches`: runs a model over batches of
    variable-length sequences, one sequence per row. Ray builds one per worker, so the
    model is loaded once per worker.

    model : a Model, the bytes of a .lrt file, or a path (see load_model)
    columns : optional {input name: column name}; by default each input is read from the
              column of its own name
    Rows: each sequence input's value is one sequence, with the input's axes less B
    ([T, F] for "BTF" or "TBF", [T] token ids for "TB"/"BT"); state inputs ([D, H] per
    row) are optional columns (zeros when absent); a lengths input (axes "B") is not a
    column: it comes from the rows. A batch is a dict of columns (batch_format="numpy",
    Ray's default).
    Returns a dict of columns: every column that is not an input, unchanged (ids pass
    through), and one column per model output, named as the output: per row an array
    with the output's axes less B, sequences trimmed to the row's length.

    How rows are batched:
    - a model with a lengths input: the batch's rows are sorted by length and cut into
      runs of rows at least (1 - max_padding) times as long as the run's longest; each run
      is padded with zeros to its longest and runs as one batch with the lengths. Outputs
      past a length are zero and final states are the last valid step's, so each row's
      trimmed outputs equal running it alone, bit for bit (the kernels sum each row the
      same way at any batch). Padded steps cost as much as real ones: one run padded to
      the batch's longest (max_padding=1) took 1.8x the time of the sorted runs on mixed
      lengths 10..100 (bench/bench_ray.py's model); 0.1-0.3 were within 7% of each other.
    - a model without one: padded steps would run through the recurrence and change the
      final states, last outputs and anything a backward direction reads, so rows are
      grouped by length and each group runs as one batch: exact for every model, but
      all-different lengths run one by one. Sort or bucket the dataset by length (e.g.
      `ds.sort("length")`) to make the groups big.
    """

    def __init__(self, model, columns: dict | None = None, max_padding: float = 0.2):
        self.model = load_model(model)
        self.max_padding = _checks.real("max_padding", max_padding)
        if self.max_padding > 1:
            raise LstmRtError(f"max_padding must be in [0, 1], got {max_padding!r}")
        columns = dict(columns or {})
        names = {spec.name for spec in self.model.inputs}
        unknown = set(columns) - names
        if unknown:
            raise LstmRtError(f"columns names inputs {sorted(unknown)} that the model does not have; "
                              f"its inputs are {sorted(names)}")
        self._lengths = [s for s in self.model.inputs if s.axes == "B"]
        self._states = [s for s in self.model.inputs if "H" in s.axes]
        self._sequences = [s for s in self.model.inputs
                           if s not in self._lengths and s not in self._states]
        self._columns = {s.name: columns.get(s.name, s.name) for s in self.model.inputs
                         if s not in self._lengths}

    def __call__(self, batch) -> dict:
        cols = _columns_of(batch)
        missing = [f"{c!r} (input {n!r})" for n, c in self._columns.items()
                   if c not in cols and any(s.name == n for s in self._sequences)]
        if missing:
            raise LstmRtError(f"the batch has no column {', '.join(missing)}; its columns are "
                              f"{sorted(cols)} (map inputs to columns with columns={{input: column}})")
        n = len(next(iter(cols.values()))) if cols else 0
        feeds = {}          # input name -> list of per-row arrays
        for spec in self._sequences + self._states:
            col = self._columns[spec.name]
            if col in cols:
                feeds[spec.name] = [self._row(spec, col, i, v) for i, v in enumerate(cols[col])]
        steps = {}          # sequence input name -> time steps of each row
        for spec in self._sequences:
            t = _row_axes(spec).find("T")
            steps[spec.name] = [a.shape[t] if t >= 0 else None for a in feeds[spec.name]]
        groups = self._groups(n, steps)
        outs = {spec.name: [None] * n for spec in self.model.outputs}
        for rows, lengths in groups:
            result = self.model.run(self._stack(feeds, rows, lengths))
            for spec in self.model.outputs:
                y, b = result[spec.name], spec.axes.index("B")
                t = _row_axes(spec).find("T")
                for k, r in enumerate(rows):
                    row = np.take(y, k, axis=b)
                    if t >= 0 and lengths is not None:
                        row = row[(slice(None),) * t + (slice(0, lengths[k]),)]
                    outs[spec.name][r] = row
        keep = {c: v for c, v in cols.items() if c not in self._columns.values()}
        clash = sorted(set(keep) & set(outs))
        if clash:
            raise LstmRtError(f"the batch's columns {clash} have the names of the model's outputs; "
                              f"rename them (ds.rename_columns) so the outputs do not replace them")
        keep.update({name: _column(rows) for name, rows in outs.items()})
        return keep

    def _row(self, spec, col, i, value) -> np.ndarray:
        """Row i of a column as the array of one sequence, checked: rank, fixed sizes, dtype."""
        a = value if isinstance(value, np.ndarray) else np.asarray(value)
        axes = _row_axes(spec)
        want = [d for j, d in enumerate(spec.shape) if spec.axes[j] != "B"]
        ids = spec.dtype.startswith("int")
        ok_dtype = a.dtype.kind in "iu" if ids else a.dtype == np.float32
        if a.ndim != len(axes) or any(w is not None and w != g for w, g in zip(want, a.shape)) \
                or not ok_dtype:
            shape = ", ".join("n" if w is None else str(w) for w in want)
            kind = "integer token ids" if ids else "float32"
            raise ShapeError(f"row {i} of the batch, column {col!r} (input {spec.name!r}): expected "
                             f"[{shape}] ({axes}) {kind}, got {a.dtype} {a.shape}")
        return a

    def _groups(self, n, steps):
        """[(rows, lengths or None)]: the runs one batch makes."""
        if not n:
            return []
        per_row = list(zip(*steps.values())) if steps else [()] * n
        if not self._lengths or not steps or per_row[0][0] is None:
            groups: dict = {}
            for i, ts in enumerate(per_row):
                groups.setdefault(ts, []).append(i)
            return [(rows, None) for rows in groups.values()]
        for i, ts in enumerate(per_row):
            if len(set(ts)) > 1:
                raise ShapeError(f"row {i} of the batch: its sequences differ in length "
                                 f"{dict(zip(steps, ts))}, but the model's lengths input "
                                 f"{self._lengths[0].name!r} gives one length per row")
        # longest first; a run takes the rows within max_padding of its longest, so padded
        # steps (which the kernels compute like real ones) stay a bounded share of the work
        order = sorted(range(n), key=lambda i: -per_row[i][0])
        runs, k = [], 0
        while k < n:
            longest = per_row[order[k]][0]
            j = k + 1
            while j < n and per_row[order[j]][0] >= (1.0 - self.max_padding) * longest:
                j += 1
            rows = order[k:j]
            runs.append((rows, [per_row[r][0] for r in rows]))
            k = j
        return runs

    def _stack(self, feeds, rows, lengths) -> dict:
        """The feeds of one run: rows padded with zeros to the longest and stacked on B."""
        x = {}
        for spec in self._sequences + self._states:
            if spec.name not in feeds:
                continue
            arrays = [feeds[spec.name][r] for r in rows]
            axes = _row_axes(spec)
            if "T" in axes and lengths is not None:
                t = axes.index("T")
                longest = max(lengths)
                shape = list(arrays[0].shape)
                shape[t] = longest
                padded = []
                for a in arrays:
                    if a.shape[t] != longest:
                        p = np.zeros(shape, a.dtype)
                        p[(slice(None),) * t + (slice(0, a.shape[t]),)] = a
                        a = p
                    padded.append(a)
                arrays = padded
            x[spec.name] = np.stack(arrays, axis=spec.axes.index("B"))
        for spec in self._lengths:
            x[spec.name] = np.asarray(lengths if lengths is not None else [], np.int64).astype(
                np.int32 if spec.dtype == "int32" else np.int64)
        return x


def _row_axes(spec) -> str:
    """The axes of one row (one sequence) of an input or output: the spec's less B."""
    return spec.axes.replace("B", "")


def _columns_of(batch) -> dict:
    """A batch as {column: array of rows} (Ray's numpy batches)."""
    if isinstance(batch, dict):
        return dict(batch)
    raise LstmRtError(f"a batch must be a dict of columns: map_batches(..., batch_format='numpy'), "
                      f"got {type(batch).__name__}")


def _column(rows: list) -> np.ndarray:
    """Per-row arrays as one column: stacked when they have one shape, else an object
    array of them (Ray stores it as a variable-shaped tensor column)."""
    if rows and all(r.shape == rows[0].shape for r in rows):
        return np.stack(rows)
    col = np.empty(len(rows), dtype=object)
    col[:] = rows
    return col


# ---------------------------------------------------------------- live sessions


class _Session:
    __slots__ = ("stream", "used", "unread")

    def __init__(self, stream, used):
        self.stream = stream        # PooledStream
        self.used = used            # clock() of the last request
        self.unread = []            # outputs carried over by resume(), read before the stream's


class Sessions:
    """Live streams of one model keyed by session id, batched by a StreamPool; each can
    be exported and resumed elsewhere. Plain Python, driven by one thread (SessionServer
    serves it from Ray Serve).

    model : a Model, .lrt bytes or a path (see load_model)
    idle_timeout_s : a session not used for this long is closed by close_idle() (its
                     state is dropped)
    max_sessions : open sessions at most (each holds its state: 8*H bytes per LSTM layer)
    capacity : the pool's initial slots (it doubles as sessions open)
    clock : seconds, monotonic (tests pass a fake one)
    """

    def __init__(self, model, *, idle_timeout_s: float = 600.0, max_sessions: int = 100_000,
                 capacity: int = 16, clock=time.monotonic):
        self.model = load_model(model)
        self.pool = StreamPool(self.model, capacity=capacity)
        self.idle_timeout_s = _checks.real("idle_timeout_s", idle_timeout_s)
        self.max_sessions = _checks.count("max_sessions", max_sessions, minimum=1)
        self._clock = clock
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        # which model an export belongs to: resuming it under other weights would be garbage.
        # The bytes of a model read from a file are canonical; one built in Python may order
        # its tensors otherwise, so it is hashed as it reads back
        data = self.model.to_bytes()
        data = load_bytes(data).to_bytes()
        self.fingerprint = hashlib.blake2b(data, digest_size=16).hexdigest()

    def __len__(self):
        return len(self._sessions)

    def __contains__(self, session):
        return session in self._sessions

    def ids(self) -> list:
        """The open sessions' ids, least recently used first."""
        return list(self._sessions)

    def _get(self, session) -> _Session:
        s = self._sessions.get(_session_id(session))
        if s is None:
            raise SessionError(
                f"no session {session!r} on this replica: open it first (a session is closed "
                f"after {self.idle_timeout_s:g} s idle, and moves away when exported)")
        s.used = self._clock()
        self._sessions.move_to_end(session)
        return s

    def open(self, session) -> None:
        """Start a session from zero state."""
        self._add(_session_id(session))

    def _add(self, session) -> _Session:
        if session in self._sessions:
            raise SessionError(f"session {session!r} is already open on this replica")
        self.close_idle()
        if len(self._sessions) >= self.max_sessions:
            raise SessionError(f"this replica holds max_sessions={self.max_sessions} sessions; "
                               f"close some, or add replicas")
        s = self._sessions[session] = _Session(self.pool.open(), self._clock())
        return s

    def feed(self, session, frames) -> int:
        """Queue frames [n, I] float32 (token ids: [n]) for the next run(); returns n."""
        s = self._get(session)
        before = s.stream.pending
        s.stream.feed(frames)            # checks shape and dtype (ShapeError)
        return s.stream.pending - before

    def run(self) -> int:
        """Run every pending frame of every session, batched; returns the frames run."""
        return self.pool.run()

    def read(self, session):
        """The outputs of the session's frames run since the last read, [n, O] (a dict by
        output name when the model has several per-step outputs)."""
        s = self._get(session)
        out = s.stream.read()
        if s.unread:
            carried, s.unread = s.unread, []
            if isinstance(out, dict):
                out = {k: np.concatenate([c[k] for c in carried] + [v]) for k, v in out.items()}
            else:
                out = np.concatenate(carried + [out])
        return out

    def step(self, session, frames):
        """feed + run + read: the outputs of these frames."""
        self.feed(session, frames)
        self.run()
        return self.read(session)

    def export(self, session) -> dict:
        """Close the session here and return all it holds, to resume() elsewhere:
        {"format", "session", "model" (fingerprint), "state" {key: [D, 1, H] float32},
        "pending" [n, I] frames not yet run, "unread": outputs run but not yet read}."""
        s = self._get(session)
        exported = {"format": EXPORT_FORMAT, "session": session, "model": self.fingerprint,
                    "state": s.stream.state, "pending": s.stream.take_pending(),
                    "unread": self.read(session)}
        self.close(session)
        return exported

    def resume(self, exported) -> str:
        """Open the session that `exported` (from export()) describes; it continues exactly
        where it stopped. Returns its id."""
        if not isinstance(exported, dict) or exported.get("format") != EXPORT_FORMAT:
            got = exported.get("format") if isinstance(exported, dict) else type(exported).__name__
            raise LstmRtError(f"resume needs a dict from export() (format {EXPORT_FORMAT}), got {got!r}")
        missing = {"session", "model", "state", "pending", "unread"} - set(exported)
        if missing:
            raise LstmRtError(f"the exported session lacks {sorted(missing)}")
        if exported["model"] != self.fingerprint:
            raise LstmRtError(f"session {exported['session']!r} was exported from another model "
                              f"({exported['model']}); this replica serves {self.fingerprint}")
        session = _session_id(exported["session"])
        unread = exported["unread"]
        if not isinstance(unread, (np.ndarray, dict)):
            raise LstmRtError(f"the exported session's unread outputs must be an array or a dict "
                              f"of them, got {type(unread).__name__}")
        s = self._add(session)
        try:
            s.stream.state = exported["state"]      # checks keys, shapes, dtype (ShapeError)
            s.stream.feed(exported["pending"])
        except Exception:
            self.close(session)
            raise
        if (len(unread) if isinstance(unread, np.ndarray) else len(next(iter(unread.values()), []))):
            s.unread = [unread]
        return session

    def close(self, session) -> None:
        """End a session and free its slot (unknown ids: SessionError)."""
        s = self._sessions.pop(_session_id(session), None)
        if s is None:
            raise SessionError(f"no session {session!r} on this replica")
        s.stream.close()

    def close_idle(self) -> list:
        """Close the sessions not used for idle_timeout_s; returns their ids."""
        now, closed = self._clock(), []
        while self._sessions:
            session, s = next(iter(self._sessions.items()))
            if now - s.used < self.idle_timeout_s:
                break
            self._sessions.popitem(last=False)
            s.stream.close()
            closed.append(session)
        return closed


def _session_id(session) -> str:
    if not isinstance(session, str) or not 0 < len(session) <= MAX_SESSION_ID:
        raise LstmRtError(f"a session id must be a non-empty str of at most {MAX_SESSION_ID} "
                          f"characters, got {type(session).__name__} {session!r:.80}")
    return session


# ---------------------------------------------------------------- Ray Serve


class SessionServer:
    """A Ray Serve replica serving live sessions (see `deployment()`); the methods are
    what a DeploymentHandle calls:

        await handle.open.remote(session)
        await handle.step.remote(session, frames)      # [n, I] -> [n, O] (dict: several outputs)
        exported = await handle.export.remote(session) # closes it here ...
        await other.resume.remote(exported)            # ... and it goes on there, bit for bit
        await handle.close.remote(session)

    Requests that arrive together run as one batched step per frame (a StreamPool round);
    `batch_wait_s` > 0 waits that long for more before a round (throughput for latency).
    Everything runs on the replica's event loop, one thing at a time: the pool is never
    shared between threads. Sessions idle for `idle_timeout_s` are closed. Errors reach
    the caller as lstm_rt errors naming the problem: SessionError (an unknown or
    duplicate session), ShapeError (frames of the wrong shape or dtype), LstmRtError.

    handoff : the name of a Ray actor (namespace "lstm_rt", made by the first replica
              that needs it, detached) keeping exported sessions while replicas come and
              go: a replica that Serve stops exports its sessions there, and a replica
              asked for a session it does not hold resumes it from there. Give each
              application its own name; None (or no Ray running): no handoff.
    handoff_wait_s : how long a request for a session this replica does not hold waits
              for it to arrive in the handoff (a stopping replica exports its sessions
              after its last requests finish) before it fails with SessionError
    HTTP: POST a JSON body {"op": "step", "session": id, "frames": [[...], ...]} (op also
    "open", "close"); the reply is {"outputs": [[...]]}, or {"error": message} with
    status 400 (404: unknown session).
    """

    def __init__(self, model, *, idle_timeout_s: float = 600.0, max_sessions: int = 100_000,
                 capacity: int = 16, batch_wait_s: float = 0.0,
                 handoff: str | None = "lstm_rt_handoff", handoff_wait_s: float = 5.0):
        self.sessions = Sessions(model, idle_timeout_s=idle_timeout_s, max_sessions=max_sessions,
                                 capacity=capacity)
        self.batch_wait_s = _checks.real("batch_wait_s", batch_wait_s)
        self._handoff_name = handoff
        self.handoff_wait_s = _checks.real("handoff_wait_s", handoff_wait_s)
        self._handoff = None         # the actor, found (or made) on first use
        self._waiting = []           # (session, frames fed, future) of the next round
        self._scheduled = None       # the next round's timer
        self._sweeper = None         # the task closing idle sessions

    # -- requests

    async def open(self, session) -> None:
        self._start()
        self.sessions.open(session)
        await self._forget_handoff(session)

    async def step(self, session, frames):
        """The outputs of `frames` [n, I] of this session (run with the other sessions'
        frames that arrive meanwhile)."""
        self._start()
        await self._hold(session)
        n = self.sessions.feed(session, frames)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((session, n, future))
        if self._scheduled is None:
            self._scheduled = loop.call_later(self.batch_wait_s, self._round) if self.batch_wait_s \
                else loop.call_soon(self._round)
        return await future

    async def export(self, session) -> dict:
        """Close the session here and return all it holds (Sessions.export)."""
        await self._hold(session)
        self._flush()
        return self.sessions.export(session)

    async def resume(self, exported) -> str:
        """Continue a session exported from another replica; returns its id."""
        self._start()
        session = self.sessions.resume(exported)
        await self._forget_handoff(session)
        return session

    async def close(self, session) -> None:
        self._flush()
        if session not in self.sessions:
            await self._hold(session)    # it may wait in the handoff: close it there too
        self.sessions.close(session)

    async def ids(self) -> list:
        """The ids of the sessions on this replica."""
        self.sessions.close_idle()
        return self.sessions.ids()

    async def drain(self) -> int:
        """Export every session to the handoff (what a replica does when Serve stops it);
        returns how many."""
        exported = self._export_all()
        if exported:
            await self._store().put.remote(exported)
        return len(exported)

    def _export_all(self) -> dict:
        """Every session exported, keyed for the handoff ({} without a handoff)."""
        self._flush()
        if not len(self.sessions) or self._store() is None:
            return {}
        return {self._key(s): self.sessions.export(s) for s in self.sessions.ids()}

    def __del__(self):
        # Serve calls this when it stops the replica (scale down, redeploy), on the
        # replica's event loop thread, so no session is lost on the way out. Synchronous
        # (a blocking put) because Python also calls __del__ on garbage collection, where
        # a coroutine would never run; without a handoff or sessions it does nothing.
        try:
            exported = self._export_all()
            if exported:
                import ray
                ray.get(self._store().put.remote(exported), timeout=30)
        except Exception:   # the cluster may be going down too
            pass

    async def __call__(self, request):
        """HTTP: see the class docstring."""
        from starlette.responses import JSONResponse
        try:
            body = await request.json()
        except ValueError as e:
            return JSONResponse({"error": f"the body must be JSON: {e}"}, status_code=400)
        try:
            if not isinstance(body, dict):
                raise LstmRtError(f"the body must be a JSON object, got {type(body).__name__}")
            op, session = body.get("op", "step"), body.get("session")
            if op == "open":
                await self.open(session)
                return {"session": session}
            if op == "close":
                await self.close(session)
                return {"session": session}
            if op != "step":
                raise LstmRtError(f"op must be 'step', 'open' or 'close', got {op!r:.40}")
            out = await self.step(session, self._frames_from_json(body.get("frames")))
            return {"outputs": {k: v.tolist() for k, v in out.items()} if isinstance(out, dict)
                    else out.tolist()}
        except SessionError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        except LstmRtError as e:
            return JSONResponse({"error": str(e)}, status_code=400)

    def _frames_from_json(self, frames) -> np.ndarray:
        """JSON numbers as the model's frames: float32 (exact for numbers that came from
        float32), or integer token ids."""
        spec = next(s for s in self.sessions.model.inputs if "T" in s.axes)
        ids = spec.dtype.startswith("int")
        try:
            a = np.asarray(frames)
            if a.dtype.kind not in ("iu" if ids else "iuf"):
                raise TypeError
            return a.astype(np.int64 if ids else np.float32)
        except (TypeError, ValueError):
            want = "a list of token ids" if ids else "a list of frames (lists of numbers)"
            raise ShapeError(f"frames must be {want}, got {frames!r:.60}") from None

    # -- rounds

    def _round(self):
        """Run every pending frame (one batched step per frame index) and answer the
        requests that fed them, each with its own frames' outputs."""
        self._scheduled = None
        waiting, self._waiting = self._waiting, []
        try:
            self.sessions.run()
        except Exception as e:   # frames were checked on arrival: this is a bug, say so to all
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(e)
            return
        outs = {}
        for session, n, future in waiting:
            if session not in outs:
                outs[session] = [self.sessions.read(session), 0]
            out, at = outs[session]
            outs[session][1] = at + n
            if not future.done():    # a caller that went away
                future.set_result({k: v[at:at + n] for k, v in out.items()} if isinstance(out, dict)
                                  else out[at:at + n])

    def _flush(self):
        """Answer the requests waiting for a round now (before a session leaves)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._round()

    def _start(self):
        """The idle sweep, started on the first request (the event loop runs by then)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self):
        period = min(max(self.sessions.idle_timeout_s / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(period)
            self._flush()
            self.sessions.close_idle()

    # -- handoff

    def _store(self):
        """The handoff actor, or None (no handoff, or Ray not running: a plain object)."""
        if self._handoff is None and self._handoff_name is not None:
            import ray
            if not ray.is_initialized():
                self._handoff_name = None
                return None
            self._handoff = ray.remote(num_cpus=0)(_Handoff).options(
                name=self._handoff_name, namespace=HANDOFF_NAMESPACE, get_if_exists=True,
                lifetime="detached").remote()
        return self._handoff

    def _key(self, session):
        return f"{self.sessions.fingerprint}/{session}"

    async def _hold(self, session):
        """Make sure this replica holds the session: resume it from the handoff if a
        replica that stopped left it there."""
        if session in self.sessions or self._store() is None:
            return
        _session_id(session)
        # a stopping replica leaves the routers before it exports (Serve lets its requests
        # in flight finish first), so a session's next request may arrive here before the
        # session does: wait for it a little before calling the session unknown
        deadline = time.monotonic() + self.handoff_wait_s
        delay = 0.01
        while True:
            exported = await self._store().take.remote(self._key(session))
            if exported is not None or session in self.sessions or time.monotonic() > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        if exported is not None and session not in self.sessions:
            self.sessions.resume(exported)

    async def _forget_handoff(self, session):
        """A session opened or resumed here supersedes a stale copy in the handoff."""
        if self._store() is not None:
            await self._store().take.remote(self._key(session))


class _Handoff:
    """A Ray actor holding exported sessions between a replica that stops and the one that
    gets the session's next request."""

    def __init__(self):
        self._sessions = {}

    def put(self, exported: dict) -> None:
        self._sessions.update(exported)

    def take(self, session):
        return self._sessions.pop(session, None)

    def count(self) -> int:
        return len(self._sessions)


def _routing_key(pending_request):
    """The session a request is for: the multiplexed model id if the caller set one
    (HTTP: the `serve_multiplexed_model_id` header), else the first argument if it is a str."""
    meta = getattr(pending_request, "metadata", None)
    key = getattr(meta, "multiplexed_model_id", None)
    if key:
        return key
    args = getattr(pending_request, "args", None) or ()
    if args and isinstance(args[0], str):
        return args[0]
    if args and isinstance(args[0], dict) and isinstance(args[0].get("session"), str):
        return args[0]["session"]     # resume(exported)
    return None


def _rendezvous(key: str, replica: str) -> int:
    """Highest-random-weight hashing: every router ranks the replicas of a session alike,
    and removing a replica moves only the sessions it held."""
    return int.from_bytes(hashlib.blake2b(f"{key}\0{replica}".encode(), digest_size=8).digest(), "big")


def _session_router_class():
    """SessionRouter, built on first use: its base class is Ray Serve's."""
    from ray.serve.request_router import RequestRouter

    class SessionRouter(RequestRouter):
        """Sends every request of a session to the replica that holds it: the replica a
        router first chose (kept while it lives), else the top of a rendezvous hash over
        the running replicas, which every router computes alike. Requests without a
        session id go to any replica."""

        def initialize_state(self, max_sticky: int = 1_000_000, **kwargs):
            self._owner = collections.OrderedDict()   # session -> replica id
            self._max_sticky = max_sticky

        async def choose_replicas(self, candidate_replicas, pending_request=None):
            key = _routing_key(pending_request)
            if key is None or not candidate_replicas:
                return [candidate_replicas]
            by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
            owner = getattr(self, "_owner", None)
            if owner is None:
                self.initialize_state()
                owner = self._owner
            chosen = by_id.get(owner.get(key))
            if chosen is None:
                chosen = by_id[max(by_id, key=lambda rid: _rendezvous(key, rid))]
                owner[key] = chosen.replica_id.unique_id
                if len(owner) > self._max_sticky:
                    owner.popitem(last=False)
            else:
                owner.move_to_end(key)
            return [[chosen]]

    return SessionRouter


def __getattr__(name):
    if name == "SessionRouter":    # lstm_rt.ray.SessionRouter: imports Ray on first use
        cls = _session_router_class()
        cls.__module__, cls.__qualname__ = __name__, "SessionRouter"
        globals()["SessionRouter"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def deployment(*, name: str = "lstm_rt_sessions", **options):
    """A Ray Serve deployment of SessionServer, routed by session (SessionRouter):

        app = lstm_rt.ray.deployment(num_replicas=2).bind("model.lrt", idle_timeout_s=300)
        handle = serve.run(app)

    options : serve.deployment's (num_replicas, autoscaling_config, ray_actor_options,
              max_ongoing_requests, ...); bind() takes SessionServer's arguments.
    """
    try:
        from ray import serve
    except ImportError:
        raise LstmRtError("lstm_rt.ray.deployment needs Ray Serve: pip install 'lstm_rt[ray]'") from None
    options.setdefault("request_router_config", {"request_router_class": "lstm_rt.ray.SessionRouter"})
    options.setdefault("max_ongoing_requests", 1000)    # requests wait in the replica's rounds
    return serve.deployment(SessionServer, name=name, **options)
