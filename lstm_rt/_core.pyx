# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython boundary of the C kernels: shapes, lifetimes, errors; the loops run without the GIL.

Design:
- A *Core object per layer holds borrowed pointers (lrt_cell structs) into packed weight
  arrays that it keeps referenced; those arrays may be read-only views of an mmapped file.
- Cores are immutable after construction, so one Model is safely shared by many threads.
  Everything mutable (state, scratch) belongs to the caller: a Stream or one run() call.
- Shapes are checked here, once per call, so the C kernels can trust every size.
"""
import os
import time

import numpy as np
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_free_lock, PyThread_release_lock, PyThread_type_lock)
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy, memset

from lstm_rt._core cimport *
from lstm_rt.errors import LstmRtError, ShapeError

cnp.import_array()


ISAS = ("generic", "avx2", "avx512vnni")  # kernel levels; each needs the CPU features of those before it


def _select_isa():
    """Pick the kernels once, at import; LSTM_RT_FORCE_ISA=generic|avx2|avx512vnni overrides detection."""
    force = os.environ.get("LSTM_RT_FORCE_ISA", "").strip().lower()
    rc = lrt_init(force.encode())
    if rc == -1:
        raise ImportError(f"LSTM_RT_FORCE_ISA={force!r}: expected one of {', '.join(map(repr, ISAS))}")
    if rc == -2:
        raise ImportError(f"LSTM_RT_FORCE_ISA={force!r}: this CPU lacks it (it has {ISAS[lrt_cpu_isa_level()]!r})")


_select_isa()

_ACT_CODES = {"Sigmoid": 0, "Tanh": 1, "Relu": 2, "Affine": 3, "LeakyRelu": 4,
              "ThresholdedRelu": 5, "ScaledTanh": 6, "HardSigmoid": 7, "Elu": 8,
              "Softsign": 9, "Softplus": 10}
_DENSE_CODES = {"linear": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "softmax": 4, "log_softmax": 5}


def cpu_isa():
    """Name of the kernels in use: "avx512vnni" (the avx2 kernels, int8 products by AVX-512
    VNNI), "avx2" (AVX2 + FMA + F16C) or "generic" (portable C)."""
    return lrt_isa_name().decode()


cdef class Lifetime:
    """Whether a Model is still open: shared by the model and the step paths of its streams,
    which check it on every step (one load and branch)."""
    cdef readonly bint closed
    cdef str message

    def __cinit__(self, str message):
        self.closed = False
        self.message = message

    def close(self):
        self.closed = True

    cdef int check(self) except -1:
        if self.closed:
            raise LstmRtError(self.message)
        return 0


cdef class Workspace:
    """Grow-only float32 scratch for the kernels; one per Stream or run() call."""
    cdef object _arr
    cdef float *ptr
    cdef size_t size

    def __cinit__(self):
        self._arr = None
        self.ptr = NULL
        self.size = 0

    cdef float *need(self, size_t n) except NULL:
        if n > self.size or self.ptr == NULL:
            n = max(n, 16)
            self._arr = np.empty(n, dtype=np.float32)
            self.size = n
            self.ptr = <float *> (<size_t> self._arr.ctypes.data)
        return self.ptr


cdef const float *_fptr(object arr, list keep) except? NULL:
    """Pointer to a float32 C-contiguous array's data (kept alive by `keep`); NULL for None."""
    if arr is None:
        return NULL
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        raise TypeError("packed weights must be C-contiguous float32")
    keep.append(arr)
    if arr.size == 0:
        return NULL
    cdef const float[::1] mv = arr.reshape(-1)
    return &mv[0]


cdef int _mat(lrt_mat *m, object arr, object scale, int K, int gw, list keep) except -1:
    """Describe a packed weight matrix (fp32 / fp16 / int8 panels, see lrt_kernels.h)."""
    memset(m, 0, sizeof(lrt_mat))
    if arr is None:
        return 0
    if not arr.flags.c_contiguous:
        raise TypeError("packed weights must be C-contiguous")
    m.K = K
    m.gw = gw
    m.nblk = arr.shape[0]
    if arr.dtype == np.float32:
        m.dtype = LRT_F32
        want = (m.nblk, K, gw)
    elif arr.dtype == np.float16:
        m.dtype = LRT_F16
        want = (m.nblk, K, gw)
    elif arr.dtype == np.int8:
        m.dtype = LRT_I8
        want = (m.nblk, (K + 3) // 4, gw, 4)
        if scale is None or scale.dtype != np.float32 or scale.shape != (m.nblk * gw,):
            raise TypeError("int8 weights need a float32 scale per output column")
        m.scale = _fptr(scale, keep)
    else:
        raise TypeError(f"unsupported weight dtype {arr.dtype}")
    if tuple(arr.shape) != want:
        raise ValueError(f"packed weights have shape {tuple(arr.shape)}, expected {want}")
    keep.append(arr)
    m.data = <const void *> (<size_t> arr.ctypes.data) if arr.size else NULL
    if m.dtype == LRT_I8:
        colsum = np.zeros(m.nblk * gw, np.int32)
        keep.append(colsum)
        m.colsum = <const int32_t *> (<size_t> colsum.ctypes.data)
        if arr.size:
            lrt_i8_colsums(m, <int32_t *> m.colsum)
    return 0


cdef class RecurrentCore:
    """One LSTM/GRU/RNN layer (all its directions) over packed weights."""
    cdef lrt_cell cells[2]
    cdef int reverse[2]
    cdef readonly int num_directions, input_size, hidden_size, output_size
    cdef readonly bint has_cell_state
    cdef list _keep

    def __init__(self, str kind, dict config, dict packed):
        cdef int d, k
        cdef lrt_cell *cl
        self._keep = []
        D = 2 if config["direction"] == "bidirectional" else 1
        self.num_directions = D
        self.input_size = config["input_size"]
        self.hidden_size = config["hidden_size"]
        self.has_cell_state = kind == "LSTM"
        H = self.hidden_size
        acts = config["activations"]
        n_acts = {"LSTM": 3, "GRU": 2, "RNN": 1}[kind]
        for d in range(D):
            cl = &self.cells[d]
            memset(cl, 0, sizeof(lrt_cell))
            cl.kind = {"LSTM": LRT_CELL_LSTM, "GRU": LRT_CELL_GRU, "RNN": LRT_CELL_RNN}[kind]
            cl.gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
            cl.in_size = self.input_size
            cl.H = H
            cl.nblk = (H + LRT_LANES - 1) // LRT_LANES
            proj = packed.get(f"{d}.proj")
            cl.Hr = (config.get("proj_size") or H) if proj is not None else H
            split = kind == "GRU" and not config.get("linear_before_reset")
            _mat(&cl.w, packed[f"{d}.w"], packed.get(f"{d}.w.scale"), self.input_size, cl.gates * 8, self._keep)
            _mat(&cl.r, packed[f"{d}.r"], packed.get(f"{d}.r.scale"), H if split else cl.Hr,
                 16 if split else cl.gates * 8, self._keep)
            _mat(&cl.r_h, packed.get(f"{d}.r_h"), packed.get(f"{d}.r_h.scale"), H, 8, self._keep)
            _mat(&cl.proj, proj, packed.get(f"{d}.proj.scale"), H, 8, self._keep)
            if split and cl.r_h.data == NULL:
                raise ValueError("a GRU without linear_before_reset needs its r_h weights")
            if cl.w.nblk != cl.nblk or cl.r.nblk != cl.nblk or (split and cl.r_h.nblk != cl.nblk) \
                    or (proj is not None and cl.proj.nblk != (cl.Hr + LRT_LANES - 1) // LRT_LANES):
                raise ValueError("packed weights disagree with hidden_size / proj_size")
            cl.bias = _fptr(packed.get(f"{d}.bias"), self._keep)
            cl.bias_rh = _fptr(packed.get(f"{d}.bias_rh"), self._keep)
            cl.peep = _fptr(packed.get(f"{d}.peep"), self._keep)
            for k in range(n_acts):
                name, alpha, beta = acts[d * n_acts + k]
                cl.act[k].kind = _ACT_CODES[name]
                cl.act[k].alpha = alpha
                cl.act[k].beta = beta
            cl.clip = config["clip"] if config.get("clip") is not None else 0.0
            cl.input_forget = bool(config.get("input_forget", False))
            cl.linear_before_reset = bool(config.get("linear_before_reset", False))
            cl.zero_masked_output = bool(config.get("zero_output_for_mask", False))
            self.reverse[d] = 1 if (config["direction"] == "reverse" or d == 1) else 0
        self.output_size = self.cells[0].Hr

    def workspace_floats(self, int T, int B):
        return max(lrt_workspace_floats(&self.cells[d], T, B) for d in range(self.num_directions))

    def run(self, const float[:, :, ::1] x, object lens, float[:, :, ::1] h, object c,
            object y, Workspace ws, object mask=None):
        """Run every direction over x [T, B, I] (IN), updating h [D, B, Hr] and c [D, B, H]
        (IN/OUT, c None for GRU/RNN) and writing y [T, B, D*Hr] (OUT, or None).
        lens: int32 [B] (each <= T) or None; mask: uint8 [T, B] or None (Keras masking)."""
        cdef int T = x.shape[0], B = x.shape[1], D = self.num_directions, Hr = self.output_size
        cdef int d, b, rc = 0
        cdef const int32_t[::1] lens_mv
        cdef float[:, :, ::1] c_mv
        cdef float[:, :, ::1] y_mv
        cdef const int32_t *lens_p = NULL
        cdef const uint8_t[:, ::1] mask_mv
        cdef const uint8_t *mask_p = NULL
        cdef const float *x_p = NULL
        cdef float *c_p = NULL
        cdef float *y_p = NULL
        cdef float *h_p
        cdef float *ws_p
        if x.shape[2] != self.input_size:
            raise ValueError(f"expected {self.input_size} input features, got {x.shape[2]}")
        if h.shape[0] != D or h.shape[1] != B or h.shape[2] != Hr:
            raise ValueError(f"state h must be {(D, B, Hr)}, got {tuple(h.shape)[:3]}")
        if self.has_cell_state:
            c_mv = c
            if c_mv.shape[0] != D or c_mv.shape[1] != B or c_mv.shape[2] != self.hidden_size:
                raise ValueError(f"state c must be {(D, B, self.hidden_size)}, got {tuple(c_mv.shape)[:3]}")
        if y is not None:
            y_mv = y
            if y_mv.shape[0] != T or y_mv.shape[1] != B or y_mv.shape[2] != D * Hr:
                raise ValueError(f"y must be {(T, B, D * Hr)}, got {tuple(y_mv.shape)[:3]}")
        if lens is not None:
            lens_mv = lens
            if lens_mv.shape[0] != B:
                raise ValueError(f"lens must have {B} entries, got {lens_mv.shape[0]}")
            for b in range(B):
                if lens_mv[b] < 0 or lens_mv[b] > T:
                    raise ShapeError(f"sequence length {lens_mv[b]} is outside [0, {T}] (the "
                                     f"{T} time steps of this layer's input)")
            if B > 0:
                lens_p = &lens_mv[0]
        if mask is not None:
            mask_mv = mask
            if mask_mv.shape[0] != T or mask_mv.shape[1] != B:
                raise ValueError(f"mask must be {(T, B)}, got {tuple(mask_mv.shape)[:2]}")
            if T > 0 and B > 0:
                mask_p = &mask_mv[0, 0]
        if B == 0:
            return
        if T > 0:
            x_p = &x[0, 0, 0]
            if y is not None:
                y_p = &y_mv[0, 0, 0]
        ws_p = ws.need(self.workspace_floats(T, B))
        for d in range(D):
            h_p = &h[d, 0, 0]
            c_p = &c_mv[d, 0, 0] if self.has_cell_state else NULL
            with nogil:
                rc = lrt_recurrent_sequence(&self.cells[d], T, B, x_p, self.input_size, lens_p, mask_p,
                                            self.reverse[d], h_p, c_p,
                                            (y_p + d * Hr) if y_p != NULL else NULL, D * Hr, ws_p)
            if rc != LRT_OK:  # the kernel's own check (lens is read-only here, so unreachable)
                raise ShapeError(f"sequence lengths outside [0, {T}]")


cdef class DenseCore:
    """A Dense layer over packed weights: y [M, O] = act(x [M, F] @ W^T + b)."""
    cdef lrt_mat w
    cdef const float *b
    cdef int act
    cdef readonly int in_features, out_features
    cdef list _keep

    def __init__(self, dict config, dict packed):
        self._keep = []
        self.in_features = config["in_features"]
        self.out_features = config["out_features"]
        # 32-wide panels (packing.DENSE_LANES)
        _mat(&self.w, packed["weight"], packed.get("weight.scale"), self.in_features, 32, self._keep)
        if self.w.nblk != (self.out_features + 31) // 32:
            raise ValueError("packed weights disagree with out_features")
        self.b = _fptr(packed.get("bias"), self._keep)
        self.act = _DENSE_CODES[config["activation"]]

    def run(self, const float[:, ::1] x, float[:, ::1] y, Workspace ws):
        cdef int M = x.shape[0]
        cdef float *scratch
        if x.shape[1] != self.in_features:
            raise ValueError(f"expected {self.in_features} input features, got {x.shape[1]}")
        if y.shape[0] != M or y.shape[1] != self.out_features:
            raise ValueError(f"y must be {(M, self.out_features)}, got {tuple(y.shape)[:2]}")
        if M == 0:
            return
        scratch = ws.need(lrt_matmul_scratch_floats(M, self.in_features))
        with nogil:
            lrt_dense(M, self.out_features, &x[0, 0], self.in_features, &self.w, self.b,
                      self.act, &y[0, 0], self.out_features, scratch)


cdef class EmbeddingCore:
    """Row lookup in an embedding table stored as fp32, fp16 or int8 (+ a scale per row)."""
    cdef int dtype
    cdef const void *table
    cdef const float *scale
    cdef readonly int vocab_size, embedding_size
    cdef list _keep

    def __init__(self, dict packed):
        t = packed["weight"]
        if t.ndim != 2 or not t.flags.c_contiguous:
            raise TypeError("an embedding table must be a C-contiguous [V, E] array")
        self._keep = [t]
        self.vocab_size, self.embedding_size = t.shape[0], t.shape[1]
        self.scale = NULL
        if t.dtype == np.float32:
            self.dtype = LRT_F32
        elif t.dtype == np.float16:
            self.dtype = LRT_F16
        elif t.dtype == np.int8:
            self.dtype = LRT_I8
            sc = packed.get("weight.scale")
            if sc is None or sc.dtype != np.float32 or sc.shape != (t.shape[0],):
                raise TypeError("an int8 embedding table needs a float32 scale per row")
            self.scale = _fptr(sc, self._keep)
        else:
            raise TypeError(f"unsupported embedding dtype {t.dtype}")
        self.table = <const void *> (<size_t> t.ctypes.data)

    def lookup(self, const int64_t[::1] ids):
        """ids [N] int64, each in [0, V) (checked by the caller) -> float32 [N, E]."""
        cdef int n = ids.shape[0]
        out = np.empty((n, self.embedding_size), np.float32)
        cdef float[:, ::1] o = out
        if n:
            with nogil:
                lrt_embed(self.dtype, self.table, self.scale, self.embedding_size, &ids[0], n,
                          &o[0, 0], self.embedding_size)
        return out


cdef enum:
    NODE_RECURRENT = 0
    NODE_DENSE = 1
    NODE_EMBEDDING = 2

ctypedef struct chain_node:
    int kind
    int in_f, out_f
    lrt_cell cell          # NODE_RECURRENT (forward direction only)
    float *h
    float *c
    lrt_mat mat            # NODE_DENSE weights
    const void *table      # NODE_EMBEDDING table [V, E] as `mat.dtype`, int8 scales in `b`
    const float *b
    int act


cdef class ChainStep:
    """One time step of a chain model (one sequence input -> layers -> one sequence output)
    in a single call: the layers run back to back in C without the GIL, so a step costs
    one Python call plus the kernels (the general graph path costs ~4 us more per step).

    Built by Stream for models of that shape; states are the Stream's arrays, updated in place."""
    cdef chain_node *nodes
    cdef int n, B, max_f
    cdef Lifetime life
    cdef list _keep
    cdef Workspace ws
    cdef object _buf
    cdef float *buf
    cdef PyThread_type_lock lock
    cdef public object fallback  # what locked_step does with inputs that are not arrays

    def __cinit__(self):
        self.nodes = NULL
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.nodes)
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef int _acquire(self) except -1:
        # wait without the GIL: the holder may be in a kernel and need the GIL to finish
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)
        return 0

    def __enter__(self):
        """The chain is also its Stream's lock (`with stream._lock:`)."""
        self._acquire()
        return self

    def __exit__(self, *exc):
        PyThread_release_lock(self.lock)
        return False

    def locked_step(self, object x):
        """step(x) holding the lock: Stream.step itself for plain chains (a Python wrapper
        with a threading.Lock cost ~0.25 us a step). Non-array inputs go to self.fallback."""
        if not cnp.PyArray_Check(x) and self.fallback is not None:
            return self.fallback(x)
        self._acquire()
        try:
            return self._step(x)
        finally:
            PyThread_release_lock(self.lock)

    def __init__(self, list cores, list states, int batch, int in_features, Lifetime life):
        """cores: per node a RecurrentCore, a DenseCore or an EmbeddingCore (first only);
        states: per node (h [1, B, Hr], c [1, B, H] or None) or None; life: the model's."""
        cdef int i
        cdef chain_node *nd
        cdef RecurrentCore rc
        cdef DenseCore dc
        cdef EmbeddingCore ec
        if not cores or self.nodes != NULL:
            raise ValueError("a chain needs at least one node (and is built once)")
        self.nodes = <chain_node *> PyMem_Malloc(len(cores) * sizeof(chain_node))
        if self.nodes == NULL:
            raise MemoryError()
        self.life = life
        self._keep = [cores, states]
        self.n = len(cores)
        self.B = batch
        self.ws = Workspace()
        f = in_features
        self.max_f = f
        for i in range(self.n):
            nd = &self.nodes[i]
            memset(nd, 0, sizeof(chain_node))
            core = cores[i]
            if isinstance(core, RecurrentCore):
                rc = core
                nd.kind = NODE_RECURRENT
                nd.cell = rc.cells[0]
                nd.in_f, nd.out_f = rc.input_size, rc.output_size
                h, c = states[i]
                nd.h = <float *> (<size_t> h.ctypes.data)
                nd.c = <float *> (<size_t> c.ctypes.data) if c is not None else NULL
            elif isinstance(core, DenseCore):
                dc = core
                nd.kind = NODE_DENSE
                nd.in_f, nd.out_f = dc.in_features, dc.out_features
                nd.mat, nd.b, nd.act = dc.w, dc.b, dc.act
            else:
                ec = core
                if i != 0:
                    raise ValueError("an embedding must be the first node of a chain")
                nd.kind = NODE_EMBEDDING
                nd.in_f, nd.out_f = ec.vocab_size, ec.embedding_size
                nd.table, nd.b, nd.mat.dtype = ec.table, ec.scale, ec.dtype
            if nd.in_f != f:
                raise ValueError(f"node {i} expects {nd.in_f} features, gets {f}")
            f = nd.out_f
            self.max_f = max(self.max_f, f)
        self._buf = np.empty(2 * batch * self.max_f + 16, np.float32)
        self.buf = <float *> (<size_t> self._buf.ctypes.data)
        # size the workspace once: a step never allocates
        need = 1
        for i in range(self.n):
            if self.nodes[i].kind == NODE_RECURRENT:
                need = max(need, lrt_workspace_floats(&self.nodes[i].cell, 1, batch))
            elif self.nodes[i].kind == NODE_DENSE:
                need = max(need, lrt_matmul_scratch_floats(batch, self.nodes[i].in_f))
        self.ws.need(need)

    def step(self, object x):
        """x: float32 [B, F] (or integer ids [B] when the chain starts with an Embedding).
        Returns float32 [B, F_out]. The caller holds the lock."""
        return self._step(x)

    cdef object _step(self, object x):
        cdef cnp.ndarray arr
        cdef int B = self.B, i, b, kind0 = self.nodes[0].kind
        cdef cnp.npy_intp dims[2]
        cdef const float *src
        cdef float *dst
        cdef float *ws
        cdef chain_node *nd
        cdef int64_t tok
        self.life.check()
        if not cnp.PyArray_Check(x):
            raise ShapeError(f"expected a numpy array, got {type(x).__name__}")
        arr = <cnp.ndarray> x
        if kind0 == NODE_EMBEDDING:
            # any integer dtype and byte order, as Model.run takes them; uint64 ids past the
            # int64 range wrap negative and fail the range check below
            if arr.ndim != 1 or arr.shape[0] != B or not cnp.PyArray_ISINTEGER(arr):
                raise ShapeError(f"expected integer token ids of shape ({B},), got {x.dtype} {x.shape}")
            if cnp.PyArray_TYPE(arr) != cnp.NPY_INT64 or not cnp.PyArray_ISNOTSWAPPED(arr) \
                    or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
                arr = np.ascontiguousarray(arr).astype(np.int64, casting="unsafe")
            nd = &self.nodes[0]
            for b in range(B):
                tok = (<int64_t *> cnp.PyArray_DATA(arr))[b]
                if tok < 0 or tok >= nd.in_f:
                    raise ShapeError(f"token id {tok} is out of range [0, {nd.in_f})")
            lrt_embed(nd.mat.dtype, nd.table, nd.b, nd.out_f, <const int64_t *> cnp.PyArray_DATA(arr), B,
                      self.buf + B * self.max_f, nd.out_f)
            src = self.buf + B * self.max_f
            i = 1
        else:
            if arr.ndim != 2 or arr.shape[0] != B or arr.shape[1] != self.nodes[0].in_f \
                    or cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32:
                raise ShapeError(f"expected float32 of shape ({B}, {self.nodes[0].in_f}), "
                                 f"got {x.dtype} {x.shape}")
            if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISNOTSWAPPED(arr):
                arr = np.ascontiguousarray(arr, dtype=np.float32)   # native byte order
            src = <const float *> cnp.PyArray_DATA(arr)
            i = 0
        dims[0] = B
        dims[1] = self.nodes[self.n - 1].out_f
        out = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        cdef float *out_p = <float *> cnp.PyArray_DATA(<cnp.ndarray> out)
        cdef int start = i
        ws = self.ws.ptr
        with nogil:
            for i in range(start, self.n):
                nd = &self.nodes[i]
                # ping-pong between the two halves of buf; the last node writes the result
                dst = out_p if i == self.n - 1 else self.buf + ((i + 1) % 2) * B * self.max_f
                if nd.kind == NODE_RECURRENT:
                    lrt_recurrent_sequence(&nd.cell, 1, B, src, nd.in_f, NULL, NULL, 0, nd.h, nd.c,
                                           dst, nd.out_f, ws)
                else:
                    lrt_dense(B, nd.out_f, src, nd.in_f, &nd.mat, nd.b, nd.act, dst, nd.out_f, ws)
                src = dst
        return out


def cpu_has_avx2():
    return bool(lrt_cpu_has_avx2_fma())


def cpu_isas():
    """The kernel levels this CPU can run, e.g. ("generic", "avx2")."""
    return ISAS[:lrt_cpu_isa_level() + 1]


def _gemm_panels(const float[:, ::1] a, packed, int gates, int ncols, str isa="auto"):
    """Test hook: a [M, K] @ unpacked(packed)^T -> [M, ncols] via lrt_gemm_panels
    (isa "auto": the dispatched kernel; "generic" or "avx2": that one)."""
    if isa == "avx2" and not lrt_cpu_has_avx2_fma():
        raise RuntimeError("this CPU lacks AVX2/FMA")
    cdef list keep = []
    cdef const float *wp = _fptr(packed, keep)
    cdef int M = a.shape[0], K = a.shape[1], nblk = packed.shape[0]
    cdef int which
    out = np.zeros((M, ncols), np.float32)
    cdef float[:, ::1] o = out
    if M and ncols:
        which = {"generic": 0, "avx2": 1}.get(isa, 2)
        with nogil:
            if which == 0:
                lrt_gemm_panels_generic(M, K, &a[0, 0], K, wp, nblk, gates * LRT_LANES, NULL, &o[0, 0], ncols, ncols)
            elif which == 1:
                lrt_gemm_panels_avx2(M, K, &a[0, 0], K, wp, nblk, gates * LRT_LANES, NULL, &o[0, 0], ncols, ncols)
            else:
                lrt_gemm_panels(M, K, &a[0, 0], K, wp, nblk, gates * LRT_LANES, NULL, &o[0, 0], ncols, ncols)
    return out


def _matmul(const float[:, ::1] a, packed, scale, int gates, int ncols, str isa="auto"):
    """Test hook: a [M, K] @ W via lrt_matmul for panels of any storage (fp32 / fp16 /
    int8 + scale); isa (one of cpu_isas()) forces that implementation for this call."""
    cdef list keep = []
    cdef lrt_mat m
    cdef int M = a.shape[0], K = a.shape[1]
    _mat(&m, packed, scale, K, gates * LRT_LANES, keep)
    out = np.zeros((M, ncols), np.float32)
    cdef float[:, ::1] o = out
    cdef Workspace ws = Workspace()
    cdef float *scratch = ws.need(lrt_matmul_scratch_floats(M, K))
    cdef int level = lrt_isa_level()
    if isa != "auto":
        if isa not in cpu_isas():
            raise RuntimeError(f"this CPU cannot run {isa!r} kernels")
        lrt_matmul_select(ISAS.index(isa))
    try:
        if M and ncols:
            with nogil:
                lrt_matmul(M, &a[0, 0], K, &m, NULL, &o[0, 0], ncols, ncols, scratch)
    finally:
        lrt_matmul_select(level)
    return out


def _time_matmul(const float[:, ::1] a, packed, scale, int gates, int ncols, int reps):
    """Benchmark hook: seconds per lrt_matmul call (the dispatched kernels), best of 5 runs
    of `reps` calls; the weights are described once, outside the timing."""
    cdef list keep = []
    cdef lrt_mat m
    cdef int M = a.shape[0], K = a.shape[1], i, r
    _mat(&m, packed, scale, K, gates * LRT_LANES, keep)
    out = np.zeros((M, ncols), np.float32)
    cdef float[:, ::1] o = out
    cdef Workspace ws = Workspace()
    cdef float *scratch = ws.need(lrt_matmul_scratch_floats(M, K))
    best = float("inf")
    for r in range(5):
        t = time.perf_counter()
        with nogil:
            for i in range(reps):
                lrt_matmul(M, &a[0, 0], K, &m, NULL, &o[0, 0], ncols, ncols, scratch)
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def _activate(str name, float alpha, float beta, const float[::1] x):
    """Test hook: one ONNX activation over x via lrt_activate."""
    cdef lrt_act act
    act.kind = _ACT_CODES[name]
    act.alpha = alpha
    act.beta = beta
    out = np.array(x, dtype=np.float32)
    cdef float[::1] o = out
    if o.shape[0]:
        with nogil:
            lrt_activate(act, &o[0], o.shape[0])
    return out


# ------------------------------------------------------------------ top-k

def top_k(const float[::1] scores, int k, const int64_t[::1] ids=None):
    """Ids of the k largest scores, best first (ties: lower index first; NaN never chosen),
    among `ids` when given; one pass, no sort of the whole vector. int64 [min(k, n)]."""
    cdef int n = scores.shape[0] if ids is None else ids.shape[0]
    cdef int i, got
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if ids is not None:
        for i in range(n):
            if ids[i] < 0 or ids[i] >= scores.shape[0]:
                raise IndexError(f"id {ids[i]} is out of range [0, {scores.shape[0]})")
    k = min(k, n)
    out = np.empty(k, np.int64)
    best = np.empty(k, np.float32)
    cdef int64_t[::1] o = out
    cdef float[::1] b = best
    if k == 0:
        return out
    with nogil:
        got = lrt_top_k(&scores[0], n, &ids[0] if ids is not None else NULL, k, &o[0], &b[0])
    return out[:got]


# ------------------------------------------------------------------ machine probes

def _best_rate(run, double seconds):
    """Doubles k until run(k) takes >= seconds/4, then the best of three run(k)/time rates
    (run returns the work it did: bytes, FLOPs)."""
    import time
    k = 1
    while True:
        t0 = time.perf_counter()
        run(k)
        if time.perf_counter() - t0 >= seconds / 4 or k > 1 << 24:
            break
        k *= 2
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        work = run(k)
        best = max(best, work / (time.perf_counter() - t0))
    return best


def _probe_read_bandwidth(size_t nbytes, double seconds=0.1):
    """Read bandwidth (GB/s) over a buffer of nbytes that stays resident at its level of the
    cache hierarchy: repeated passes, best of three timings of >= `seconds` each."""
    cdef size_t n = max(nbytes - nbytes % 128, 128)
    raw = np.random.default_rng(0).integers(0, 256, n + 64, dtype=np.uint8)
    cdef size_t addr = <size_t> raw.ctypes.data
    cdef const void *buf = <const void *> (addr + (-addr % 64))

    def run(int passes):
        cdef uint64_t sink
        with nogil:
            sink = lrt_probe_read(buf, n, passes)
        return float(n) * passes

    run(2)   # warm the caches
    return _best_rate(run, seconds) / 1e9


def _probe_fma_peak(double seconds=0.1):
    """FP32 FMA throughput of one core (GFLOP/s) with the kernels' instruction set."""
    def run(long k):
        cdef double flops
        with nogil:
            flops = lrt_probe_fma(k << 16)
        return flops

    return _best_rate(run, seconds) / 1e9
