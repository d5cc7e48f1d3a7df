"""Many concurrent streams served by batched steps (one stream per user or microphone).

    pool = StreamPool(model)
    mic_a, mic_b = pool.open(), pool.open()
    mic_a.feed(frames_a)          # [n, I] frames, any n, whenever they arrive
    mic_b.feed(frames_b)
    pool.run()                    # steps until no frame is pending
    mic_a.read()                  # [n, O] outputs for a's frames, in order

Each round of `run` takes the next pending frame of every stream that has one and runs
them as one batched step (the weights are read once for the whole batch), so the cost of
a step is shared by all the streams that are talking. The pool is one Stream whose batch
rows are the slots: a round steps the rows of the streams in it (`Stream.step(x, rows=)`:
rows 0..n-1 in place, others gathered and scattered in C). The results equal stepping
each stream on its own. Models with one sequence input serve; a stream's outputs are the
model's per-step outputs (sequences and last outputs); state outputs are in `state`.

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

    def take_pending(self):
        """Remove and return the frames fed and not yet run, [n, *frame_shape] in order
        (to move the stream elsewhere: with `state` and `read()`, all a stream holds)."""
        self._check_open()
        pool = self._pool
        if not self._pending:
            return np.empty((0,) + pool._frame_shape, pool._dtype)
        first = self._chunks[0][self._head:]
        frames = np.concatenate([first] + self._chunks[1:]) if len(self._chunks) > 1 else first.copy()
        self._chunks, self._head, self._pending = [], 0, 0
        return frames

    def read(self):
        """The outputs of the frames run since the last read, [n, *output_shape] (a dict of
        them by name when the model has several per-step outputs)."""
        out = self._outputs
        self._outputs = []
        pool = self._pool
        if len(pool._outs) == 1:
            if len(out) == 1:   # the common case of a live stream: one frame per read
                return out[0][None]
            if not out:
                return np.empty((0,) + pool._outs[0][2], np.float32)
            return np.stack(out)
        return {name: np.stack([o[k] for o in out]) if out else np.empty((0,) + shape, np.float32)
                for k, (name, _, shape) in enumerate(pool._outs)}

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
        seq = [spec for spec in model.inputs if "T" in spec.axes]
        # per-step outputs: sequences (a step's row) and last outputs; states are in .state
        outs = [spec for spec in model.outputs if spec.axes not in ("DBH", "BDH", "BH")]
        if len(seq) != 1 or not outs:
            raise LstmRtError(f"StreamPool needs a model with one sequence input and a per-step "
                              f"output; this one has inputs {[s.name for s in model.inputs]} and "
                              f"outputs {[s.name for s in model.outputs]}")
        self.model = model
        per_stream = sum(a.nbytes for a in model.stream(1).state.values())   # raises for models
        if capacity * per_stream > MAX_INITIAL_STATE_BYTES:                  # that cannot stream
            raise LstmRtError(
                f"capacity must be at most {MAX_INITIAL_STATE_BYTES // max(per_stream, 1):,} for this "
                f"model: capacity={capacity} would reserve {_bytes(capacity * per_stream)} of state "
                f"({per_stream} bytes per stream) up front; start small, the pool grows as streams open")
        spec = seq[0]
        self._ids = spec.dtype.startswith("int")
        self._dtype = np.dtype(np.int64 if self._ids else np.float32)
        self._frame_shape = () if self._ids else (spec.shape[-1],)
        self._vocab = spec.vocab
        # per output: (name, batch axis of a step's array, shape of one stream's row)
        self._outs = []
        for o in outs:
            step_axes = o.axes.replace("T", "")
            step_shape = [d for d, a in zip(o.shape, o.axes) if a != "T"]
            b = step_axes.index("B")
            self._outs.append((o.name, b, tuple(step_shape[:b] + step_shape[b + 1:])))
        self._capacity, self._stream, self._free = 0, None, []
        self._slots: list[PooledStream | None] = []
        self._grow(capacity)
        self.rounds = 0                          # batched steps run so far

    def _grow(self, capacity):
        new = self.model.stream(capacity)
        if self._stream is not None:
            new.set_state(self._stream.state, rows=np.arange(self._capacity))
        self._free += range(capacity - 1, self._capacity - 1, -1)   # pop() takes the lowest
        self._slots += [None] * (capacity - self._capacity)
        self._stream, self._capacity = new, capacity

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
        self._stream.reset(rows=[slot])

    def _get_state(self, slot) -> dict:
        return self._stream.get_state(rows=[slot])

    def _set_state(self, slot, value):
        self._stream.set_state(value, rows=[slot])   # validates keys, shapes and dtypes

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
        rows = np.fromiter((s._slot for s in active), np.intp, n)
        y = self._stream.step(x, rows=rows)   # one array, or a dict when the model has several outputs
        per = [np.moveaxis(y[name] if isinstance(y, dict) else y, b, 0) for name, b, _ in self._outs]
        if len(per) == 1:
            for s, row in zip(active, per[0]):
                s._outputs.append(row)
        else:
            for r, s in enumerate(active):
                s._outputs.append([p[r] for p in per])
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
