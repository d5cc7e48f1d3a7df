"""Many concurrent streams served by batched steps (one stream per user or microphone).

    pool = StreamPool(model)
    mic_a, mic_b = pool.open(), pool.open()
    mic_a.feed(frames_a)          # [n, I] frames, any n, whenever they arrive
    mic_b.feed(frames_b)
    pool.run()                    # steps until no frame is pending
    mic_a.read()                  # [n, O] outputs for a's frames, in order

Each round of `run` takes the next pending frame of every stream that has one and runs
them as one batched step (the weights are read once for the whole batch), so the cost of
a step is shared by all the streams that are talking. Every stream's state lives in the
pool, in rows of [D, capacity, H] arrays; a round gathers the rows of the streams in it,
steps, and scatters them back. The results equal stepping each stream on its own.

A pool is driven by one thread (e.g. the audio server's loop): it is not thread-safe.
"""
from __future__ import annotations

import numpy as np

from . import _checks
from .errors import LstmRtError, ShapeError

# the most state memory a pool reserves at construction: `capacity` is where the pool
# starts (it doubles as streams open), so a bigger start is a mistake, not a plan
MAX_INITIAL_STATE_BYTES = 1 << 30


class PooledStream:
    """One stream of a StreamPool: feed frames, read outputs."""

    def __init__(self, pool: "StreamPool", slot: int):
        self._pool = pool
        self._slot = slot
        self._chunks: list = []     # fed arrays [n, ...] not yet fully run
        self._head = 0              # frames of _chunks[0] already run
        self._pending = 0
        self._outputs: list = []    # one row per frame run

    @property
    def closed(self) -> bool:
        return self._slot is None

    def _check_open(self):
        if self._slot is None:
            raise LstmRtError("this stream is closed")

    def feed(self, frames) -> None:
        """Queue frames [n, *frame_shape] (any n >= 0); they run at the pool's next run()."""
        self._check_open()
        a = self._pool._check_frames(frames)
        if len(a):
            self._chunks.append(a)
            self._pending += len(a)

    @property
    def pending(self) -> int:
        """Frames fed and not yet run."""
        return self._pending

    def read(self) -> np.ndarray:
        """The outputs of the frames run since the last read, [n, *output_shape]."""
        out = self._outputs
        self._outputs = []
        if len(out) == 1:   # the common case of a live stream: one frame per read
            return out[0][None]
        if not out:
            return np.empty((0,) + self._pool._out_shape, np.float32)
        return np.stack(out)

    @property
    def state(self) -> dict:
        """A copy of this stream's state, keyed as Stream.state (batch 1)."""
        self._check_open()
        return self._pool._get_state(self._slot)

    @state.setter
    def state(self, value: dict):
        self._check_open()
        self._pool._set_state(self._slot, value)

    def reset(self):
        """Zero state; drops pending frames and unread outputs."""
        self._check_open()
        self._chunks, self._head, self._pending, self._outputs = [], 0, 0, []
        self._pool._zero(self._slot)

    def close(self):
        """Give the stream's slot back to the pool."""
        if self._slot is not None:
            self._pool._release(self)
            self._slot = None


class StreamPool:
    """Serves many streams of one model with batched steps.

    model : a Model with one sequence input and one output that can stream
    capacity : int >= 1, the initial number of slots; the pool grows when more streams are
               open. Refused when the slots' state would take more than 1 GiB
               (MAX_INITIAL_STATE_BYTES) up front.
    """

    def __init__(self, model, capacity: int = 16):
        from .model import Model
        if not isinstance(model, Model):
            raise LstmRtError(f"StreamPool needs a Model, got {type(model).__name__}")
        capacity = _checks.count("capacity", capacity, minimum=1)
        seq = [p for p in model._inputs if p.is_sequence]
        if len(seq) != 1 or len(model.outputs) != 1:
            raise LstmRtError(f"StreamPool needs a model with one sequence input and one output; "
                              f"this one has inputs {[s.name for s in model.inputs]} and outputs "
                              f"{[s.name for s in model.outputs]}")
        self.model = model
        per_stream = sum(a.nbytes for a in model.stream(1).state.values())   # raises for models
        if capacity * per_stream > MAX_INITIAL_STATE_BYTES:                  # that cannot stream
            raise LstmRtError(
                f"capacity must be at most {MAX_INITIAL_STATE_BYTES // max(per_stream, 1):,} for this "
                f"model: capacity={capacity} would reserve {_bytes(capacity * per_stream)} of state "
                f"({per_stream} bytes per stream) up front; start small, the pool grows as streams open")
        spec = model.inputs[[p.name for p in model._inputs].index(seq[0].name)]
        self._ids = spec.dtype.startswith("int")
        self._dtype = np.dtype(np.int64 if self._ids else np.float32)
        self._frame_shape = () if self._ids else (spec.shape[-1],)
        self._vocab = model._info[seq[0].tensor][1] if self._ids else None
        self._out_shape = tuple(model.outputs[0].shape[-1:])
        self._capacity, self._states, self._free = 0, {}, []
        self._slots: list[PooledStream | None] = []
        self._grow(capacity)
        self._steppers: dict[int, object] = {}   # batch size -> Stream over gathered rows
        self._views: dict[int, object] = {}      # n -> Stream whose states are rows 0..n-1
        self.rounds = 0                          # batched steps run so far

    def _grow(self, capacity):
        new = self.model._initial_states({}, capacity)
        for i, st in self._states.items():
            for k, a in st.items():
                new[i][k][:, :self._capacity] = a
        self._free += range(capacity - 1, self._capacity - 1, -1)   # pop() takes the lowest
        self._slots += [None] * (capacity - self._capacity)
        self._states, self._capacity, self._views = new, capacity, {}

    def _check_frames(self, frames) -> np.ndarray:
        want = "[n] integer token ids" if self._ids else f"[n, {self._frame_shape[0]}] float32"
        try:
            a = frames if type(frames) is np.ndarray else np.asarray(frames)
        except (ValueError, TypeError):   # ragged nested lists, objects numpy cannot hold
            raise ShapeError(f"frames must be {want}, got {type(frames).__name__} {frames!r:.60}") from None
        if a.shape[1:] == self._frame_shape and a.ndim == 1 + len(self._frame_shape) and \
                a.dtype == self._dtype:
            if self._ids and a.size and (a.min() < 0 or a.max() >= self._vocab):
                raise ShapeError(f"token ids must be in [0, {self._vocab}), got values in "
                                 f"[{a.min()}, {a.max()}]")
            return a.copy()   # the caller may reuse its buffer
        if a.ndim != 1 + len(self._frame_shape) or a.shape[1:] != self._frame_shape:
            raise ShapeError(f"frames must be {want}, got shape {a.shape}")
        if self._ids and a.dtype.kind not in "iu":
            raise ShapeError(f"frames must be {want}, got dtype {a.dtype}")
        if not self._ids and a.dtype != np.float32:
            raise ShapeError(f"frames must be {want}, got dtype {a.dtype}")
        return self._check_frames(a.astype(self._dtype))

    def open(self) -> PooledStream:
        """A new stream from zero state."""
        if not self._free:
            self._grow(self._capacity * 2)
        slot = self._free.pop()
        s = self._slots[slot] = PooledStream(self, slot)
        return s

    def _release(self, s: PooledStream):
        self._zero(s._slot)
        self._slots[s._slot] = None
        self._free.append(s._slot)

    def _zero(self, slot):
        for st in self._states.values():
            for a in st.values():
                a[:, slot] = 0.0

    def _get_state(self, slot) -> dict:
        return {f"{self.model._nodes[i].name}/{k}": a[:, slot:slot + 1].copy()
                for i, st in self._states.items() for k, a in st.items()}

    def _set_state(self, slot, value):
        probe = self._stepper(1)
        probe.state = value   # validates keys, shapes and dtypes
        for i, st in self._states.items():
            for k, a in st.items():
                a[:, slot:slot + 1] = probe._states[i][k]

    def _stepper(self, n):
        s = self._steppers.get(n)
        if s is None:
            s = self._steppers[n] = self.model.stream(n)
        return s

    def _view(self, n):
        """A Stream of batch n stepping the pool's rows 0..n-1 in place (no gather/scatter):
        states are [1, capacity, H], so their first n rows are one contiguous block."""
        s = self._views.get(n)
        if s is None:
            s = self.model.stream(n)
            for i, st in self._states.items():
                for k, a in st.items():
                    s._states[i][k] = a[:, :n]
            s._bind_chain()
            self._views[n] = s
        return s

    @property
    def streams(self) -> int:
        """Number of open streams."""
        return sum(s is not None for s in self._slots)

    @property
    def pending(self) -> int:
        return sum(s._pending for s in self._slots if s is not None)

    def step(self) -> int:
        """One batched step over every stream with a pending frame; returns how many ran."""
        active = [s for s in self._slots if s is not None and s._pending]
        n = len(active)
        if not n:
            return 0
        x = np.empty((n,) + self._frame_shape, self._dtype)
        for r, s in enumerate(active):
            c = s._chunks[0]
            x[r] = c[s._head]
            s._head += 1
            s._pending -= 1
            if s._head == len(c):
                del s._chunks[0]
                s._head = 0
        if active[-1]._slot == n - 1:   # rows 0..n-1: step them in place
            y = self._view(n).step(x)
        else:
            rows = np.fromiter((s._slot for s in active), np.intp, n)
            st = self._stepper(n)
            for i, pool_st in self._states.items():
                for k, a in pool_st.items():
                    np.take(a, rows, axis=1, out=st._states[i][k])
            y = st.step(x)
            for i, pool_st in self._states.items():
                for k, a in pool_st.items():
                    a[:, rows] = st._states[i][k]
        for s, row in zip(active, y):
            s._outputs.append(row)
        self.rounds += 1
        return n

    def run(self) -> int:
        """Step until no frame is pending; returns the number of frames run."""
        total = 0
        while True:
            n = self.step()
            if not n:
                return total
            total += n



def _bytes(n: float) -> str:
    """1536 -> "2 KiB": sizes in error messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:,.0f} TiB"
