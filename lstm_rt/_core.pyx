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
cimport cython
from cpython.pythread cimport (WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_free_lock, PyThread_release_lock, PyThread_type_lock)
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t
from cpython.dict cimport PyDict_CheckExact, PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.list cimport PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_INCREF, Py_REFCNT, Py_XDECREF, PyObject
from libc.string cimport memcmp, memcpy, memset

from lstm_rt._core cimport *
from lstm_rt.activations import ACTIVATIONS, DENSE_ACTIVATIONS
from lstm_rt.errors import LstmRtError, ModelFormatError, ShapeError, UnsupportedError

cnp.import_array()

cdef extern from *:
    """
    /* An array a step returned earlier may be written again only when nothing else can
     * see it: its one reference is the executor's spare slot (the caller dropped it), no
     * weak reference, its own data, and still the shape, type and layout asked for (the
     * caller may have reshaped or retyped it in place before dropping it). */
    static int lrt_spare_fits(PyObject *o, int nd, const npy_intp *dims)
    {
        if (Py_TYPE(o) != &PyArray_Type || Py_REFCNT(o) != 1) return 0;
        PyArrayObject *a = (PyArrayObject *)o;
        const int need = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_WRITEABLE | NPY_ARRAY_OWNDATA;
        if (((PyArrayObject_fields *)a)->weakreflist != NULL || PyArray_BASE(a) != NULL) return 0;
        if (PyArray_NDIM(a) != nd || PyArray_TYPE(a) != NPY_FLOAT32 || !PyArray_ISNOTSWAPPED(a)) return 0;
        if ((PyArray_FLAGS(a) & need) != need) return 0;
        for (int i = 0; i < nd; i++)
            if (PyArray_DIMS(a)[i] != dims[i]) return 0;
        return 1;
    }
    """
    bint lrt_spare_fits(PyObject *o, int nd, const cnp.npy_intp *dims)

# a step's outputs up to this size are recycled (Executor._spare); past it numpy's
# allocation is small next to the step. (A C constant: a module global costs a dict lookup.)
cdef enum:
    SPARE_MAX_BYTES = 256 * 1024


# kernel levels of this build, from its C tables: ("generic", "avx2", "avx512vnni") on x86-64,
# ("generic", "neon", "neondot") on aarch64; each needs the CPU features of those before it
ISAS = tuple([lrt_kernels_of(i).name.decode() for i in range(lrt_isa_count())])


def _select_isa():
    """Pick the kernels once, at import; LSTM_RT_FORCE_ISA=<one of ISAS> overrides detection."""
    force = os.environ.get("LSTM_RT_FORCE_ISA", "").strip().lower()
    rc = lrt_init(force.encode())
    if rc == -1:
        raise ImportError(f"LSTM_RT_FORCE_ISA={force!r}: expected one of {', '.join(map(repr, ISAS))}")
    if rc == -2:
        raise ImportError(f"LSTM_RT_FORCE_ISA={force!r}: this CPU lacks it (it has {ISAS[lrt_cpu_isa_level()]!r})")


_select_isa()

# the kernels' activation codes, from the one table (lstm_rt.activations); _kernel_enums lets
# the tests check them against lrt_kernels.h
_ACT_CODES = {name: row[0] for name, row in ACTIVATIONS.items()}
_DENSE_CODES = {name: code for code, name in enumerate(DENSE_ACTIVATIONS)}


def _kernel_enums():
    """Test hook: the C enums that Python tables mirror (activation codes, cell kinds, join
    and merge modes), by their names in lrt_kernels.h / lrt_plan.h."""
    return {"LRT_SIGMOID": LRT_SIGMOID, "LRT_TANH": LRT_TANH, "LRT_RELU": LRT_RELU,
            "LRT_AFFINE": LRT_AFFINE, "LRT_LEAKYRELU": LRT_LEAKYRELU,
            "LRT_THRESHOLDEDRELU": LRT_THRESHOLDEDRELU, "LRT_SCALEDTANH": LRT_SCALEDTANH,
            "LRT_HARDSIGMOID": LRT_HARDSIGMOID, "LRT_ELU": LRT_ELU, "LRT_SOFTSIGN": LRT_SOFTSIGN,
            "LRT_SOFTPLUS": LRT_SOFTPLUS,
            "LRT_DENSE_LINEAR": LRT_DENSE_LINEAR, "LRT_DENSE_RELU": LRT_DENSE_RELU,
            "LRT_DENSE_TANH": LRT_DENSE_TANH, "LRT_DENSE_SIGMOID": LRT_DENSE_SIGMOID,
            "LRT_DENSE_SOFTMAX": LRT_DENSE_SOFTMAX, "LRT_DENSE_LOG_SOFTMAX": LRT_DENSE_LOG_SOFTMAX,
            "LRT_CELL_LSTM": LRT_CELL_LSTM, "LRT_CELL_GRU": LRT_CELL_GRU, "LRT_CELL_RNN": LRT_CELL_RNN,
            "LRT_JOIN_CONCAT": LRT_JOIN_CONCAT, "LRT_JOIN_SUM": LRT_JOIN_SUM, "LRT_JOIN_SUB": LRT_JOIN_SUB,
            "LRT_JOIN_MUL": LRT_JOIN_MUL, "LRT_JOIN_AVE": LRT_JOIN_AVE, "LRT_JOIN_MAX": LRT_JOIN_MAX,
            "LRT_JOIN_MIN": LRT_JOIN_MIN,
            "LRT_MERGE_SUM": LRT_MERGE_SUM, "LRT_MERGE_MUL": LRT_MERGE_MUL, "LRT_MERGE_AVE": LRT_MERGE_AVE}


def cpu_isa():
    """Name of the kernels in use: "avx512vnni" (the avx2 kernels, int8 products by AVX-512
    VNNI), "avx2" (AVX2 + FMA + F16C), "neondot" (the neon kernels, int8 products by the
    ARMv8.2 dot product), "neon" (ARMv8 Advanced SIMD) or "generic" (portable C)."""
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
        raise ModelFormatError("packed weights must be C-contiguous float32")
    keep.append(arr)
    if arr.size == 0:
        return NULL
    cdef const float[::1] mv = arr.reshape(-1)
    return &mv[0]


cdef int _mat(lrt_mat *m, object arr, object scale, int K, int gw, list keep, bint act8=False) except -1:
    """Describe a packed weight matrix (fp32 / fp16 / int8 panels, see lrt_kernels.h).
    act8: int8 weights meet 8-bit activations (the recurrent products, whose operands are
    bounded states); other products quantize activations to 12 bits."""
    memset(m, 0, sizeof(lrt_mat))
    if arr is None:
        return 0
    if not arr.flags.c_contiguous:
        raise ModelFormatError("packed weights must be C-contiguous")
    m.K = K
    m.gw = gw
    m.act8 = act8
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
            raise ModelFormatError("int8 weights need a float32 scale per output column")
        m.scale = _fptr(scale, keep)
    else:
        raise ModelFormatError(f"unsupported weight dtype {arr.dtype}")
    if tuple(arr.shape) != want:
        raise ModelFormatError(f"packed weights have shape {tuple(arr.shape)}, expected {want}")
    keep.append(arr)
    m.data = <const void *> (<size_t> arr.ctypes.data) if arr.size else NULL
    if m.dtype == LRT_I8:
        colsum = np.zeros(m.nblk * gw, np.int32)
        keep.append(colsum)
        m.colsum = <const int32_t *> (<size_t> colsum.ctypes.data)
        if arr.size and lrt_i8_colsums(m, <int32_t *> m.colsum):
            # quantize_int8 never writes -128; the byte kernels need |w| <= 127
            raise ModelFormatError("int8 weights must lie in [-127, 127]; found -128")
    return 0


cdef class RecurrentCore:
    """One LSTM/GRU/RNN layer (all its directions) over packed weights."""
    cdef lrt_cell cells[2]
    cdef int reverse[2]
    cdef readonly int num_directions, input_size, hidden_size, output_size
    cdef readonly bint has_cell_state
    cdef list _keep

    def __init__(self, kind, dict config, dict packed):
        """kind: the layer's class (lstm_rt.layers.LSTM, GRU or RNN), which says its cell
        code, gates, activations per direction, whether it has a cell state, and the
        packed shapes [nblk, K, gw] of its matrices "<d>.w", "<d>.r", "<d>.r_h", "<d>.proj"."""
        cdef int d, k
        cdef lrt_cell *cl
        cdef lrt_mat *m
        self._keep = []
        D = 2 if config["direction"] == "bidirectional" else 1
        self.num_directions = D
        self.input_size = config["input_size"]
        self.hidden_size = config["hidden_size"]
        self.has_cell_state = kind.has_cell_state
        H = self.hidden_size
        acts = config["activations"]
        n_acts = kind.n_acts
        shapes = kind.packed_shapes(config)
        for d in range(D):
            cl = &self.cells[d]
            memset(cl, 0, sizeof(lrt_cell))
            cl.kind = kind.cell_code
            cl.gates = kind.n_gates
            cl.in_size = self.input_size
            cl.H = H
            cl.nblk = (H + LRT_LANES - 1) // LRT_LANES
            cl.Hr = config.get("proj_size") or H
            for part in ("w", "r", "r_h", "proj"):
                key = f"{d}.{part}"
                if key not in shapes:
                    continue     # the kind has no such matrix: left empty
                if packed.get(key) is None:
                    raise ModelFormatError(f"{kind.kind} {config['name']!r} needs its {key!r} weights")
                m = &cl.w if part == "w" else &cl.r if part == "r" else &cl.r_h if part == "r_h" else &cl.proj
                nblk, K, gw = shapes[key]
                # the recurrent products meet states (h, r * h, o * g(c)): 8-bit activations
                _mat(m, packed[key], packed.get(key + ".scale"), K, gw, self._keep, part != "w")
                if m.nblk != nblk:
                    raise ModelFormatError("packed weights disagree with hidden_size / proj_size")
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
            raise ModelFormatError("packed weights disagree with out_features")
        self.b = _fptr(packed.get("bias"), self._keep)
        self.act = _DENSE_CODES[config["activation"]]


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
            raise ModelFormatError("an embedding table must be a C-contiguous [V, E] array")
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
                raise ModelFormatError("an int8 embedding table needs a float32 scale per row")
            self.scale = _fptr(sc, self._keep)
        else:
            raise ModelFormatError(f"unsupported embedding dtype {t.dtype}")
        self.table = <const void *> (<size_t> t.ctypes.data)


# ------------------------------------------------------------------ the plan executor

OP_KINDS = {"embed": LRT_OP_EMBED, "recurrent": LRT_OP_RECURRENT, "dense": LRT_OP_DENSE,
            "merge": LRT_OP_MERGE, "mask_ids": LRT_OP_MASK_IDS, "mask_value": LRT_OP_MASK_VALUE,
            "last_state": LRT_OP_LAST_STATE, "select_direction": LRT_OP_SELECT_DIRECTION,
            "copy_state": LRT_OP_COPY_STATE, "reverse_time": LRT_OP_REVERSE_TIME, "join": LRT_OP_JOIN}
# below this many multiply-adds per call the kernels run with the GIL held (releasing it
# costs more than they take)
cdef enum:
    GIL_FREE_WORK = 4096
_BUFFER_DTYPES = {"seq": np.float32, "static": np.float32, "state": np.float32, "ids": np.int64,
                  "mask": np.uint8, "lens": np.int32}
_LAYOUT_CODES = {"TBF": 0, "BTF": 1, "BF": 2, "TDBH": 3, "BTDH": 4, "DBH": 5, "BDH": 6, "BH": 7}
cdef enum:
    L_TBF = 0
    L_BTF = 1
    L_BF = 2
    L_TDBH = 3
    L_BTDH = 4
    L_DBH = 5
    L_BDH = 6
    L_BH = 7

ctypedef struct out_desc:
    int layout        # L_*
    int buf           # the (first) buffer
    int slot          # its time slot, -1: none (static, state)
    int width, groups
    int direct        # a step (or a time-major feed) may bind buf to the result array itself
    int first, nbufs  # state ports: their buffers are sbufs[first:first + nbufs]
    int dirs          # state ports: directions in all
    int step_nd       # a step's array: step_nd dims, step_dims with the batch at b_axis
    int b_axis
    cnp.npy_intp step_dims[4]


# final: its cdef methods are called directly, not through a method table, and the C
# compiler may inline them (a tiny step calls ~15)
@cython.final
cdef class Executor:
    """A compiled plan (lstm_rt.plan.Program) with buffers for up to `bcap` sequences and
    tcap[slot] time steps: what a Stream (or one Model.run call) computes with.

    Buffers of the plan's inputs are bound per call (bind) to the caller's arrays, never
    copied; state buffers persist between calls (a Stream's state); every other buffer is
    owned here and reused. execute() runs every operation in one C call without the GIL.
    An Executor doubles as its Stream's lock (`with executor:`); locked_step is Stream.step
    for arrays, without a Python frame."""
    cdef lrt_op *ops
    cdef int nops, nbufs, nslots
    cdef readonly int bcap
    cdef void **bufs
    cdef int *T
    cdef int *tcap
    cdef int *ws_T          # the T and B of the last workspace size asked (a step asks the same)
    cdef int ws_B
    cdef size_t ws_floats
    cdef readonly object program
    cdef list own           # per buffer: the array allocated for it, None for inputs
    cdef list held          # per buffer: the array bufs[i] points into during a call
    cdef list _keep
    cdef Workspace ws
    cdef Lifetime life
    cdef bint busy          # a call holds this executor (read and written under the GIL)
    cdef int waiters        # threads waiting for it, each on `wake`
    cdef PyThread_type_lock wake
    cdef public object fallback   # what locked_step does with inputs that are not arrays
    cdef int step_in, step_ids, step_f, step_vocab
    cdef out_desc *outs
    cdef int nouts
    cdef int *sbufs         # buffers of state output ports, concatenated
    cdef int *sdirs         # and their directions
    cdef tuple out_names
    cdef list results       # per output: the array a direct output is bound to during a call
    cdef list typenums      # per buffer: the numpy type number its arrays have
    cdef long long macs_per_row   # multiply-adds of one row and step through every weight
    cdef list scratch       # per state buffer: rows gathered for a step of some rows (or None)
    cdef object seen        # uint8 [bcap]: duplicate check of those rows
    cdef list spares        # one output: two arrays earlier steps returned (or None)
    cdef int newest_array   # which of them was handed out last
    cdef list spare_dicts   # several outputs: two dicts earlier steps returned (or None)
    cdef object step_dict   # during a step: the spare dict whose arrays it may reuse, or None
    cdef int dict_slot      # and its index in spare_dicts (-1: none)
    cdef PyObject *dict_vals[64]    # and its values, in the outputs' order (borrowed)
    cdef int newest_dict    # which spare dict was handed out last
    cdef PyObject **step_arrs       # during a step: per output the array it returns (owned)

    def __cinit__(self):
        self.outs = NULL
        self.step_arrs = NULL
        self.sbufs = NULL
        self.sdirs = NULL
        self.ops = NULL
        self.bufs = NULL
        self.T = NULL
        self.tcap = NULL
        self.ws_T = NULL
        self.ws_B = -1
        self.busy, self.waiters = False, 0
        # held from the start: a release lets one waiter look again (a semaphore, as CPython's
        # locks are here, so a release before the waiter sleeps is not lost)
        self.wake = PyThread_allocate_lock()
        if self.wake == NULL:
            raise MemoryError()
        PyThread_acquire_lock(self.wake, WAIT_LOCK)

    def __dealloc__(self):
        PyMem_Free(self.outs)
        PyMem_Free(self.step_arrs)
        PyMem_Free(self.sbufs)
        PyMem_Free(self.sdirs)
        PyMem_Free(self.ops)
        PyMem_Free(self.bufs)
        PyMem_Free(self.T)
        PyMem_Free(self.tcap)
        PyMem_Free(self.ws_T)
        if self.wake != NULL:
            PyThread_free_lock(self.wake)

    def __init__(self, program, tcaps, int bcap, Lifetime life):
        cdef int i
        cdef lrt_op *op
        cdef RecurrentCore rc
        cdef DenseCore dc
        cdef EmbeddingCore ec
        if self.ops != NULL:
            raise LstmRtError("an Executor is built once")
        self.program = program
        self.life = life
        self.nops, self.nbufs, self.nslots = len(program.ops), len(program.buffers), len(program.slots)
        self.bcap = bcap
        self.ops = <lrt_op *> PyMem_Malloc(max(self.nops, 1) * sizeof(lrt_op))
        self.bufs = <void **> PyMem_Malloc(max(self.nbufs, 1) * sizeof(void *))
        self.T = <int *> PyMem_Malloc(max(self.nslots, 1) * sizeof(int))
        self.tcap = <int *> PyMem_Malloc(max(self.nslots, 1) * sizeof(int))
        self.ws_T = <int *> PyMem_Malloc(max(self.nslots, 1) * sizeof(int))
        if self.ops == NULL or self.bufs == NULL or self.T == NULL or self.tcap == NULL or self.ws_T == NULL:
            raise MemoryError()
        self._keep = []
        for i in range(self.nops):
            spec = program.ops[i]
            op = &self.ops[i]
            memset(op, 0, sizeof(lrt_op))
            op.kind = OP_KINDS[spec.kind]
            f = spec.fields
            op.time = f.get("time", -1)
            op.x, op.y = f.get("x", -1), f.get("y", -1)
            op.in_f, op.out_f = f.get("in_f", 0), f.get("out_f", 0)
            op.lens, op.mask, op.h, op.c = f.get("lens", -1), f.get("mask", -1), f.get("h", -1), f.get("c", -1)
            op.ndir, op.dir = f.get("ndir", 1), f.get("dir", 0)
            op.mode, op.parts = f.get("mode", 0), f.get("parts", 1)
            op.value = f.get("value", 0.0)
            op.mask_out = f.get("mask_out", -1)
            if spec.kind == "recurrent":
                rc = spec.core
                self._keep.append(rc)
                op.cells = &rc.cells[0]
                op.reverse = &rc.reverse[0]
            elif spec.kind == "dense":
                dc = spec.core
                self._keep.append(dc)
                op.mat, op.bias, op.act = &dc.w, dc.b, dc.act
            elif spec.kind == "embed":
                ec = spec.core
                self._keep.append(ec)
                op.dtype, op.table, op.scale = ec.dtype, ec.table, ec.scale
            elif spec.kind == "join":
                ins = np.array(f["ins"], np.intc)
                feats = np.array(f["in_feats"], np.intc)
                self._keep += [ins, feats]
                op.n_in = len(ins)
                op.ins = <const int *> (<size_t> ins.ctypes.data)
                op.in_feats = <const int *> (<size_t> feats.ctypes.data)
        self.macs_per_row = 0
        for i in range(self.nops):
            op = &self.ops[i]
            if op.kind == LRT_OP_RECURRENT:
                self.macs_per_row += op.ndir * op.cells[0].gates * op.cells[0].H * (op.in_f + op.cells[0].Hr)
            elif op.kind == LRT_OP_DENSE:
                self.macs_per_row += op.in_f * op.out_f
        self.own = [None] * self.nbufs
        self.held = [None] * self.nbufs
        self.typenums = [np.dtype(_BUFFER_DTYPES[b.kind]).num for b in program.buffers]
        for i in range(self.nbufs):
            self.bufs[i] = NULL
        for s in range(self.nslots):
            self.tcap[s] = 0
        self.ws = Workspace()
        self.scratch = [None] * self.nbufs
        self.seen = None
        self.reserve(tcaps)
        # the Stream.step fast path: one sequence input, given as an array
        self.step_in = program.step_input
        self.step_ids = self.step_f = self.step_vocab = 0
        if self.step_in >= 0:
            b = program.buffers[self.step_in]
            self.step_ids = b.kind == "ids"
            self.step_f = b.width
            self.step_vocab = b.vocab
        self._describe_outputs()

    cdef int _describe_outputs(self) except -1:
        """The outputs as C descriptors, so a step lays them out without Python."""
        cdef int i, k, n = 0
        cdef out_desc *d
        prog = self.program
        self.nouts = len(prog.outputs)
        self.out_names = tuple(o.name for o in prog.outputs)
        self.results = [None] * self.nouts
        self.spares = [None, None]
        self.newest_array = 0
        self.spare_dicts = [None, None]
        self.step_dict = None
        self.dict_slot = -1
        self.newest_dict = 0
        nstate = sum(len(o.buffers) for o in prog.outputs)
        self.outs = <out_desc *> PyMem_Malloc(max(self.nouts, 1) * sizeof(out_desc))
        self.step_arrs = <PyObject **> PyMem_Malloc(max(self.nouts, 1) * sizeof(PyObject *))
        self.sbufs = <int *> PyMem_Malloc(max(nstate, 1) * sizeof(int))
        self.sdirs = <int *> PyMem_Malloc(max(nstate, 1) * sizeof(int))
        if self.outs == NULL or self.step_arrs == NULL or self.sbufs == NULL or self.sdirs == NULL:
            raise MemoryError()
        memset(self.step_arrs, 0, max(self.nouts, 1) * sizeof(PyObject *))
        seen = set()
        for i in range(self.nouts):
            o = prog.outputs[i]
            d = &self.outs[i]
            buf = prog.buffers[o.buffers[0]]
            d.layout = _LAYOUT_CODES[o.layout]
            d.buf, d.slot, d.width, d.groups = o.buffers[0], buf.slot, buf.width, o.groups
            d.direct = (buf.kind in ("seq", "static") and not buf.input and d.buf not in seen
                        and o.layout in ("TBF", "BTF", "BF", "BTDH"))
            seen.add(d.buf)
            d.first, d.nbufs, d.dirs = n, len(o.buffers), 0
            for k in o.buffers:
                self.sbufs[n] = k
                self.sdirs[n] = prog.buffers[k].dirs
                d.dirs += self.sdirs[n]
                n += 1
            # a single step's shape (the batch at b_axis): [D, B, H], [B, D, H], [B, H] for
            # state ports, [G, B, F/G], [B, G, F/G] or [B, F] for the others
            shape = {L_DBH: (d.dirs, -1, d.width), L_BDH: (-1, d.dirs, d.width), L_BH: (-1, d.width),
                     L_TDBH: (d.groups, -1, d.width // d.groups),
                     L_BTDH: (-1, d.groups, d.width // d.groups)}.get(d.layout, (-1, d.width))
            d.step_nd, d.b_axis = len(shape), shape.index(-1)
            for k in range(d.step_nd):
                d.step_dims[k] = shape[k]
        return 0

    def reserve(self, tcaps):
        """Buffers for up to tcaps[slot] time steps (grown, never shrunk; states kept)."""
        cdef int i, s
        grow = False
        for s in range(self.nslots):
            if tcaps[s] > self.tcap[s]:
                self.tcap[s] = tcaps[s]
                grow = True
        for i in range(self.nbufs):
            b = self.program.buffers[i]
            if b.input or (self.own[i] is not None and not (grow and b.slot >= 0)):
                continue
            rows = self.bcap * (self.tcap[b.slot] if b.slot >= 0 else 1)
            if b.kind == "state":
                a = np.zeros(b.dirs * self.bcap * b.width, np.float32)
            else:
                a = np.empty(max(rows * b.width, 1), _BUFFER_DTYPES[b.kind])
            self.own[i] = a
            self.held[i] = a
            self.bufs[i] = <void *> (<size_t> a.ctypes.data)
        self.ws.need(lrt_plan_workspace_floats(self.ops, self.nops, self.tcap, self.bcap))

    def state_array(self, int i):
        """The state buffer i as [D, bcap, H] (a view: writes change the state)."""
        b = self.program.buffers[i]
        return self.own[i].reshape(b.dirs, self.bcap, b.width)

    def bind(self, int i, object arr):
        """Point input buffer i at arr (C-contiguous, the buffer's dtype and internal layout;
        kept alive until the next bind) or at nothing (None: an input not given)."""
        if i < 0 or i >= self.nbufs or self.own[i] is not None:
            raise LstmRtError(f"buffer {i} is not an input of this plan")
        if arr is None:
            self.bufs[i] = NULL
        else:
            if not cnp.PyArray_Check(arr) or cnp.PyArray_TYPE(<cnp.ndarray> arr) != self.typenums[i] \
                    or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> arr) \
                    or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray> arr):
                b = self.program.buffers[i]
                raise LstmRtError(f"input buffer {b.tensor!r} needs a C-contiguous "
                                  f"{np.dtype(_BUFFER_DTYPES[b.kind]).name} array")
            self.bufs[i] = cnp.PyArray_DATA(<cnp.ndarray> arr)
        self.held[i] = arr

    def zero_states(self):
        """Every state buffer back to zeros (an Executor reused for another run)."""
        for _, k in self.program.states:
            self.own[k].fill(0.0)

    @property
    def nbytes(self):
        """Bytes of the buffers this Executor owns."""
        return sum(a.nbytes for a in self.own if a is not None)

    def unbind_inputs(self):
        cdef int i
        for i in range(self.nbufs):
            if self.program.buffers[i].input:
                self.bufs[i] = NULL
                self.held[i] = None

    cdef int _run(self, int B, int bcap) except -1:
        """Run every op over B rows with self.T; the inputs are bound; state buffers hold
        bcap rows per direction."""
        cdef int rc, failed = -1, s
        cdef float *ws
        for s in range(self.nslots):
            if self.T[s] > self.tcap[s]:
                raise LstmRtError("time steps past the executor's capacity")
        if B > self.bcap or B < 0:
            raise LstmRtError(f"batch {B} past the executor's {self.bcap}")
        cdef long long work = self.macs_per_row * B
        for s in range(self.nslots):
            work *= max(self.T[s], 1)
        ws = self.ws.need(self._workspace_floats(B))
        # the GIL is released around the kernels, unless they are over before releasing and
        # taking it back would be (~0.15 us): tiny steps keep it
        if work >= GIL_FREE_WORK:
            with nogil:
                rc = lrt_plan_run(self.ops, self.nops, self.bufs, self.T, B, bcap, ws, &failed)
        else:
            rc = lrt_plan_run(self.ops, self.nops, self.bufs, self.T, B, bcap, ws, &failed)
        if rc != 0:
            name = self.program.ops[failed].name if 0 <= failed < self.nops else "?"
            raise ShapeError(f"layer {name!r}: sequence lengths outside [0, T] (the kernel refused them)")
        return 0

    cdef size_t _workspace_floats(self, int B):
        """lrt_plan_workspace_floats for self.T and B, remembered for the next call (every
        op's sizes are asked for: ~5% of a small step)."""
        cdef int s
        if B == self.ws_B and memcmp(self.ws_T, self.T, self.nslots * sizeof(int)) == 0:
            return self.ws_floats
        self.ws_floats = lrt_plan_workspace_floats(self.ops, self.nops, self.T, B)
        self.ws_B = B
        for s in range(self.nslots):
            self.ws_T[s] = self.T[s]
        return self.ws_floats

    def execute(self, Ts, int B, bint time_axis=True, bint fresh=False):
        """Run with Ts[slot] time steps and B rows over the bound inputs; returns the
        outputs, laid out as the model's ports (time_axis False: a step's, without T).
        fresh: the outputs may be this call's own buffers (no copy; the Executor is not
        used again), else every output is a new array."""
        cdef int s
        for s in range(self.nslots):
            self.T[s] = Ts[s]
        if not fresh:
            self._bind_outputs(B, time_axis)
        self._run(B, self.bcap)
        return [self._output(s, B, time_axis, fresh) for s in range(self.nouts)]

    cdef int _bind_outputs(self, int B, bint time_axis) except -1:
        """Point the buffers of outputs laid out like the internal form at fresh arrays in
        their final shape, so the ops write the results in place (no copy)."""
        cdef int i
        cdef out_desc *d
        cdef cnp.npy_intp dims[4]
        cdef int nd
        for i in range(self.nouts):
            d = &self.outs[i]
            self.results[i] = None
            if not d.direct:
                continue
            # back to the buffer's own array first: the last call may have pointed it at a
            # result array sized for that call only
            self.bufs[d.buf] = cnp.PyArray_DATA(<cnp.ndarray> self.own[d.buf])
            self.held[d.buf] = self.own[d.buf]
            if time_axis and d.slot >= 0 and d.layout != L_BF:
                if d.layout != L_TBF:
                    continue
                dims[0], dims[1], dims[2], nd = self.T[d.slot], B, d.width, 3
            else:
                nd = self._step_shape(d, B, dims)
            a = cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)
            self.bufs[d.buf] = cnp.PyArray_DATA(<cnp.ndarray> a)
            self.held[d.buf] = a
            self.results[i] = a
        return 0

    cdef int _step_shape(self, out_desc *d, int B, cnp.npy_intp *dims) noexcept:
        """dims = the shape of output d for one step of B rows; returns its ndim."""
        cdef int k
        for k in range(d.step_nd):
            dims[k] = d.step_dims[k]
        dims[d.b_axis] = B
        return d.step_nd

    cdef object _new(self, int nd, cnp.npy_intp a0, cnp.npy_intp a1, cnp.npy_intp a2, cnp.npy_intp a3):
        cdef cnp.npy_intp dims[4]
        dims[0], dims[1], dims[2], dims[3] = a0, a1, a2, a3
        return cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)

    cdef object _spare(self, int i, int nd, cnp.npy_intp *dims):
        """A float32 array of shape dims for output i of a step: one this output returned
        before if nobody holds it any more (a streaming loop keeps the last step's outputs,
        and drops those of the step before), else a new one. numpy's allocation and release
        of a small array cost ~700 instructions, a third of a small step's call with three
        outputs. One output: two spare arrays, the older replaced by a new one. Several: the
        arrays of a spare dict (_pick_dict), replaced in it when they cannot be reused."""
        cdef int k
        cdef Py_ssize_t n = 4
        cdef PyObject *p
        for k in range(nd):
            n *= dims[k]
        if i >= 64 or n > SPARE_MAX_BYTES:
            return cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)
        if self.nouts > 1:
            if self.step_dict is not None and lrt_spare_fits(self.dict_vals[i], nd, dims):
                return <object> self.dict_vals[i]
            return cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)
        for k in range(2):
            p = PyList_GET_ITEM(self.spares, k)    # borrowed: the list's is the one reference
            if lrt_spare_fits(p, nd, dims):
                self.newest_array = k
                return <object> p
        a = cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)
        k = 1 - self.newest_array
        self.spares[k] = a
        self.newest_array = k
        return a

    cdef int _pick_dict(self) except -1:
        """Before a step of several outputs: step_dict = a dict an earlier step returned
        that nobody holds any more (its one reference is spare_dicts') and whose keys are
        still the outputs' names in order, else None. Its arrays may then be reused, and the
        dict itself is the step's result (_step_result): in a loop that keeps only the last
        step's result, a step allocates nothing (not even a GC-counted object)."""
        cdef int k, i
        cdef PyObject *p
        cdef PyObject *key
        cdef PyObject *val
        cdef Py_ssize_t pos
        self.step_dict, self.dict_slot = None, -1
        if self.nouts > 64:
            return 0
        for k in range(2):
            p = PyList_GET_ITEM(self.spare_dicts, k)
            if not PyDict_CheckExact(<object> p) or Py_REFCNT(<object> p) != 1 \
                    or PyDict_Size(<object> p) != self.nouts:
                continue
            pos, i = 0, 0
            while PyDict_Next(<object> p, &pos, &key, &val):
                if key != PyTuple_GET_ITEM(self.out_names, i):
                    break
                self.dict_vals[i] = val
                i += 1
            if i == self.nouts:
                self.step_dict, self.dict_slot = <object> p, k
                return 0
        return 0

    cdef int _step_arrays(self, int B) except -1:
        """Before a step's run: step_arrs[i] = the array output i returns (a spare nobody
        holds any more, else a new one); outputs laid out like their buffer get it bound as
        that buffer, so the ops write into it (no copy). _end_step lets them go."""
        cdef int i
        cdef out_desc *d
        cdef cnp.npy_intp dims[4]
        cdef object a
        for i in range(self.nouts):
            d = &self.outs[i]
            a = self._spare(i, self._step_shape(d, B, dims), dims)
            Py_INCREF(a)
            self.step_arrs[i] = <PyObject *> a
            if d.direct:
                self.bufs[d.buf] = cnp.PyArray_DATA(<cnp.ndarray> a)
        return 0

    cdef object _step_result(self, int B, int bcap):
        """After a step's run: the other outputs copied into their arrays (state buffers
        hold bcap rows per direction); the array (one output) or {name: array}, in
        step_dict when there is one (only the values that changed are set), else a new
        dict kept as a spare."""
        cdef int i, k
        cdef object d
        for i in range(self.nouts):
            if not self.outs[i].direct:
                self._copy_step(i, B, bcap, <char *> cnp.PyArray_DATA(<cnp.ndarray> <object> self.step_arrs[i]))
        if self.nouts == 1:
            return <object> self.step_arrs[0]
        d = self.step_dict
        if d is not None:
            for i in range(self.nouts):
                if self.step_arrs[i] != self.dict_vals[i]:
                    PyDict_SetItem(d, <object> PyTuple_GET_ITEM(self.out_names, i), <object> self.step_arrs[i])
            self.newest_dict = self.dict_slot
            return d
        d = {}
        for i in range(self.nouts):
            PyDict_SetItem(d, <object> PyTuple_GET_ITEM(self.out_names, i), <object> self.step_arrs[i])
        k = 1 - self.newest_dict
        self.spare_dicts[k] = d
        self.newest_dict = k
        return d

    cdef void _end_step(self):
        """After a step, failed or not: its arrays let go, outputs' buffers back to their own."""
        cdef int i
        cdef out_desc *d
        cdef PyObject *a
        for i in range(self.nouts):
            d = &self.outs[i]
            if d.direct:
                self.bufs[d.buf] = cnp.PyArray_DATA(<cnp.ndarray> <object> PyList_GET_ITEM(self.own, d.buf))
            a = self.step_arrs[i]
            self.step_arrs[i] = NULL
            Py_XDECREF(a)
        self.step_dict = None

    cdef int _copy_step(self, int i, int B, int bcap, char *dst) except -1:
        """Output i of one step (its shape: _step_shape) from the buffers into dst; state
        buffers hold bcap rows per direction."""
        cdef out_desc *d = &self.outs[i]
        cdef int F = d.width, G = d.groups, Hg = d.width // d.groups, g, r, dd = 0, k, j, D = d.dirs
        cdef char *src
        cdef size_t f4 = sizeof(float), bc = bcap
        if d.layout >= L_DBH:       # state ports: [D, B, H], [B, D, H] or [B, H]
            for j in range(d.first, d.first + d.nbufs):
                src = <char *> self.bufs[self.sbufs[j]]
                if src == NULL:
                    raise ShapeError(f"output {self.out_names[i]!r} is an input that was not given")
                for k in range(self.sdirs[j]):
                    if d.layout == L_BDH:
                        for r in range(B):
                            memcpy(dst + ((r * D + dd) * F) * f4, src + ((k * bc + r) * F) * f4, F * f4)
                    else:
                        memcpy(dst + (dd * B * F) * f4, src + (k * bc * F) * f4, B * F * f4)
                    dd += 1
            return 0
        src = <char *> self.bufs[d.buf]
        if src == NULL:
            raise ShapeError(f"output {self.out_names[i]!r} is an input that was not given")
        if d.slot >= 0 and self.T[d.slot] != 1:
            raise ShapeError(f"output {self.out_names[i]!r} is a single step but {self.T[d.slot]} steps were run")
        if d.layout == L_TDBH:
            for g in range(G):
                for r in range(B):
                    memcpy(dst + ((g * B + r) * Hg) * f4, src + (r * F + g * Hg) * f4, Hg * f4)
        else:
            memcpy(dst, src, B * F * f4)
        return 0

    cdef object _output(self, int i, int B, bint time_axis, bint fresh):
        """Output i laid out as its port says, from the buffers of the call just run."""
        cdef out_desc *d = &self.outs[i]
        cdef int T = 1, F = d.width, G = d.groups, Hg = d.width // d.groups, t, g, r
        cdef char *src
        cdef char *dst
        cdef size_t f4 = sizeof(float)
        cdef cnp.npy_intp dims[4]
        cdef object res = self.results[i]
        if res is not None:
            self.results[i] = None
            return res
        if d.layout >= L_DBH or d.slot < 0 or not time_axis or d.layout == L_BF:
            res = cnp.PyArray_EMPTY(self._step_shape(d, B, dims), dims, cnp.NPY_FLOAT32, 0)
            self._copy_step(i, B, self.bcap, <char *> cnp.PyArray_DATA(<cnp.ndarray> res))
            return res
        T = self.T[d.slot]
        src = <char *> self.bufs[d.buf]
        if src == NULL:
            raise ShapeError(f"output {self.out_names[i]!r} is an input that was not given")
        if d.layout == L_TBF:
            if fresh and self.own[d.buf] is not None:
                return self.own[d.buf][:T * B * F].reshape(T, B, F)
            res = self._new(3, T, B, F, 0)
            memcpy(cnp.PyArray_DATA(<cnp.ndarray> res), src, T * B * F * f4)
            return res
        if d.layout == L_BTF or d.layout == L_BTDH:
            res = self._new(3, B, T, F, 0) if d.layout == L_BTF else self._new(4, B, T, G, Hg)
            dst = <char *> cnp.PyArray_DATA(<cnp.ndarray> res)
            for r in range(B):
                for t in range(T):
                    memcpy(dst + ((r * T + t) * F) * f4, src + ((t * B + r) * F) * f4, F * f4)
            return res
        res = self._new(4, T, G, B, Hg)     # TDBH: [T, G, B, F/G]
        dst = <char *> cnp.PyArray_DATA(<cnp.ndarray> res)
        for t in range(T):
            for g in range(G):
                for r in range(B):
                    memcpy(dst + (((t * G + g) * B + r) * Hg) * f4, src + ((t * B + r) * F + g * Hg) * f4, Hg * f4)
        return res

    # ---------------------------------------------------------- Stream.step without Python

    cdef int _acquire(self) except -1:
        # The GIL guards `busy`: taking a free executor is a flag flip (a CPython lock costs a
        # clock read and two semaphore calls, ~8% of a small step). A busy one was taken by a
        # thread that let the GIL go (a kernel without it, or Python code in between): wait
        # for its release without the GIL.
        if not self.busy:
            self.busy = True
            return 0
        self.waiters += 1
        try:
            while self.busy:
                with nogil:
                    PyThread_acquire_lock(self.wake, WAIT_LOCK)
        finally:
            self.waiters -= 1
        self.busy = True
        return 0

    cdef void _release(self):
        self.busy = False
        if self.waiters:
            PyThread_release_lock(self.wake)

    def __enter__(self):
        self._acquire()
        return self

    def __exit__(self, *exc):
        self._release()
        return False

    def locked_step(self, object x, object rows=None):
        """Stream.step(x, rows) for an array x: the one sequence input's step [B, F] (or
        token ids [B]); anything else goes to self.fallback. rows: step only these rows of
        the batch (x has one row each), the others keep their state. Returns the model's
        outputs."""
        if not cnp.PyArray_Check(x) and self.fallback is not None:
            return self.fallback(x) if rows is None else self.fallback(x, rows)
        self._acquire()
        try:
            return self._step(x, rows)
        finally:
            self._release()

    cdef object _check_rows(self, object rows):
        """rows as a C intp array of distinct rows in [0, bcap); None when they are 0..n-1
        (stepped in place, no gather)."""
        cdef cnp.ndarray r
        cdef Py_ssize_t i, n
        cdef cnp.npy_intp v
        cdef unsigned char *seen
        r = np.ascontiguousarray(rows)
        if r.ndim != 1 or not (cnp.PyArray_ISINTEGER(r) or r.size == 0):
            raise ShapeError(f"rows must be a 1-d array of row indices, got {r.dtype} {(<object> r).shape}")
        r = r.astype(np.intp, copy=False)
        n = r.shape[0]
        if self.seen is None:
            self.seen = np.zeros(self.bcap, np.uint8)
        seen = <unsigned char *> cnp.PyArray_DATA(<cnp.ndarray> self.seen)
        prefix = True
        try:
            for i in range(n):
                v = (<cnp.npy_intp *> cnp.PyArray_DATA(r))[i]
                if v < 0 or v >= self.bcap:
                    raise ShapeError(f"row {v} is out of range [0, {self.bcap})")
                if seen[v]:
                    raise ShapeError(f"row {v} is given twice")
                seen[v] = 1
                prefix = prefix and v == i
        finally:
            memset(seen, 0, self.bcap)
        return None if prefix else r

    cdef int _move_rows(self, cnp.ndarray rows, bint gather) except -1:
        """Copy the given rows of every state buffer into its scratch rows 0..n-1 (gather)
        or back (scatter)."""
        cdef Py_ssize_t i, n = rows.shape[0]
        cdef int d, k, W
        cdef char *own
        cdef char *tmp
        cdef const cnp.npy_intp *r = <const cnp.npy_intp *> cnp.PyArray_DATA(rows)
        cdef size_t f4 = sizeof(float)
        for _, k in self.program.states:
            b = self.program.buffers[k]
            W = b.width
            if self.scratch[k] is None:
                self.scratch[k] = np.empty(b.dirs * self.bcap * W, np.float32)
            own = <char *> cnp.PyArray_DATA(<cnp.ndarray> self.own[k])
            tmp = <char *> cnp.PyArray_DATA(<cnp.ndarray> self.scratch[k])
            for d in range(b.dirs):
                for i in range(n):
                    if gather:
                        memcpy(tmp + ((d * n + i) * W) * f4, own + ((d * self.bcap + r[i]) * W) * f4, W * f4)
                    else:
                        memcpy(own + ((d * self.bcap + r[i]) * W) * f4, tmp + ((d * n + i) * W) * f4, W * f4)
            self.bufs[k] = <void *> tmp if gather else <void *> own
        return 0

    cdef object _step(self, object x, object rows):
        cdef cnp.ndarray arr
        cdef int B = self.bcap, s, b
        cdef int64_t tok
        cdef const int64_t *ids
        cdef object picked = None
        self.life.check()
        if self.step_in < 0:
            raise ShapeError("this model has several sequence inputs: pass a dict")
        if rows is not None:
            picked = self._check_rows(rows)
            B = len(rows)
        if not cnp.PyArray_Check(x):
            raise ShapeError(f"expected a numpy array, got {type(x).__name__}")
        arr = <cnp.ndarray> x
        if self.step_ids:
            # any integer dtype and byte order, as Model.run takes them; uint64 ids past the
            # int64 range wrap negative and fail the range check below
            if arr.ndim != 1 or arr.shape[0] != B or not cnp.PyArray_ISINTEGER(arr):
                raise ShapeError(f"expected integer token ids of shape ({B},), got {x.dtype} {x.shape}")
            if cnp.PyArray_TYPE(arr) != cnp.NPY_INT64 or not cnp.PyArray_ISNOTSWAPPED(arr) \
                    or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
                arr = np.ascontiguousarray(arr).astype(np.int64, casting="unsafe")
            ids = <const int64_t *> cnp.PyArray_DATA(arr)
            for b in range(B):
                tok = ids[b]
                if tok < 0 or tok >= self.step_vocab:
                    raise ShapeError(f"token id {tok} is out of range [0, {self.step_vocab})")
        else:
            if arr.ndim != 2 or arr.shape[0] != B or arr.shape[1] != self.step_f \
                    or cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32:
                raise ShapeError(f"expected float32 of shape ({B}, {self.step_f}), got {x.dtype} {x.shape}")
            if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISNOTSWAPPED(arr):
                arr = np.ascontiguousarray(arr, dtype=np.float32)   # native byte order
        self.bufs[self.step_in] = cnp.PyArray_DATA(arr)    # arr, a local, keeps it alive
        for s in range(self.nslots):
            self.T[s] = 1
        try:
            if self.nouts > 1:
                self._pick_dict()
            self._step_arrays(B)
            if picked is None:
                self._run(B, self.bcap)
                return self._step_result(B, self.bcap)
            self._move_rows(picked, True)
            try:
                self._run(B, B)
                # the state outputs from the gathered rows (B per direction, in rows' order),
                # before they go back to their places
                res = self._step_result(B, B)
                self._move_rows(picked, False)
                return res
            finally:
                for _, s in self.program.states:
                    self.bufs[s] = <void *> (<size_t> self.own[s].ctypes.data)
        finally:
            self._end_step()
            self.bufs[self.step_in] = NULL


def cpu_has_avx2():
    return bool(lrt_cpu_has_avx2_fma())


def cpu_isas():
    """The kernel levels this CPU can run, e.g. ("generic", "avx2") or ("generic", "neon")."""
    return ISAS[:lrt_cpu_isa_level() + 1]


def _gemm_panels(const float[:, ::1] a, packed, int gates, int ncols, str isa="auto"):
    """Test hook: a [M, K] @ unpacked(packed)^T -> [M, ncols] via lrt_gemm_panels
    (isa "auto": the dispatched kernel; "generic" or "avx2": that one)."""
    if isa == "avx2" and not lrt_cpu_has_avx2_fma():
        raise UnsupportedError("this CPU lacks AVX2/FMA")
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


def _matmul(const float[:, ::1] a, packed, scale, int gates, int ncols, str isa="auto", bint act8=False):
    """Test hook: a [M, K] @ W via lrt_matmul for panels of any storage (fp32 / fp16 /
    int8 + scale); isa (one of cpu_isas()) runs that level's kernels for this call; act8:
    describe int8 weights as a recurrent product's (8-bit activations)."""
    cdef list keep = []
    cdef lrt_mat m
    cdef int M = a.shape[0], K = a.shape[1]
    cdef const lrt_kernels *k = NULL
    _mat(&m, packed, scale, K, gates * LRT_LANES, keep, act8)
    out = np.zeros((M, ncols), np.float32)
    cdef float[:, ::1] o = out
    cdef Workspace ws = Workspace()
    cdef float *scratch = ws.need(lrt_matmul_scratch_floats(M, K))
    if isa != "auto":
        if isa not in cpu_isas():
            raise UnsupportedError(f"this CPU cannot run {isa!r} kernels")
        k = lrt_kernels_of(ISAS.index(isa))
    else:
        k = lrt_kernels_of(lrt_isa_level())
    if M and ncols:
        with nogil:
            lrt_matmul_with(k, M, &a[0, 0], K, &m, NULL, &o[0, 0], ncols, ncols, scratch)
    return out


def _act_qmax(int K, bint act8):
    """Test hook: the activation range lrt_matmul uses for int8 weights with K inputs."""
    cdef lrt_mat m
    memset(&m, 0, sizeof(lrt_mat))
    m.K = K
    m.act8 = act8
    return lrt_act_qmax(&m)


def _time_matmul(const float[:, ::1] a, packed, scale, int gates, int ncols, int reps, bint act8=False):
    """Benchmark hook: seconds per lrt_matmul call (the dispatched kernels), best of 5 runs
    of `reps` calls; the weights are described once, outside the timing. The clock is this
    thread's CPU time: on a shared core, time spent descheduled does not count."""
    cdef list keep = []
    cdef lrt_mat m
    cdef int M = a.shape[0], K = a.shape[1], i, r
    _mat(&m, packed, scale, K, gates * LRT_LANES, keep, act8)
    out = np.zeros((M, ncols), np.float32)
    cdef float[:, ::1] o = out
    cdef Workspace ws = Workspace()
    cdef float *scratch = ws.need(lrt_matmul_scratch_floats(M, K))
    best = float("inf")
    for r in range(5):
        t = time.thread_time()
        with nogil:
            for i in range(reps):
                lrt_matmul(M, &a[0, 0], K, &m, NULL, &o[0, 0], ncols, ncols, scratch)
        best = min(best, (time.thread_time() - t) / reps)
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
        raise ShapeError(f"k must be >= 0, got {k}")
    if ids is not None:
        for i in range(n):
            if ids[i] < 0 or ids[i] >= scores.shape[0]:
                raise ShapeError(f"id {ids[i]} is out of range [0, {scores.shape[0]})")
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
