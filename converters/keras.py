"""Keras -> lstm_rt, reading the files directly (zipfile + json + h5py): Keras and
TensorFlow are never imported for a file. A live keras.Model is saved to a temporary
.keras file first, so both paths share one reader.

Keras conventions, mapped onto lstm_rt's ONNX ones:
- kernels are (in, out): W = kernel.T; LSTM gates i,f,c,o -> i,o,f,c; GRU z,r,h as ONNX;
- GRU reset_after=True is linear_before_reset=1 with bias [input; recurrent];
  reset_after=False is the original GRU, one bias;
- unit_forget_bias only initializes the bias: the stored bias is taken as it is;
- hard_sigmoid is clip(0.2x + 0.5, 0, 1) in Keras 2 and relu6(x + 3) / 6 in Keras 3:
  which one is chosen from the Keras version the file records;
- inputs are batch-major: [B, T, F] (token ids [B, T]); a layer that does not return
  sequences gives its last output [B, H].
"""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile

import numpy as np

from lstm_rt.layers import (GRU, LSTM, RNN, Dense, Embedding, Join, LastState, Mask, Merge,
                            ReverseTime, SelectDirection, activation)
from lstm_rt.model import Model, Node, Port

from . import ConversionError, _refusal

LSTM_ORDER = [0, 3, 1, 2]    # keras i,f,c,o -> onnx i,o,f,c
RECURRENT = ("LSTM", "GRU", "SimpleRNN")
CELLS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}   # inside a keras RNN
RNN_OPTIONS = ("name", "return_sequences", "return_state", "go_backwards", "stateful", "time_major",
               "zero_output_for_mask", "__initial_state__")
MERGES = {"Concatenate": "concat", "Add": "sum", "Subtract": "sub", "Multiply": "mul", "Average": "ave",
          "Maximum": "max", "Minimum": "min"}
NO_OPS = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
          "ActivityRegularization")
DENSE_ACTS = {"linear": "linear", "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax"}
KNOWN_LAYERS = set(RECURRENT) | set(MERGES) | set(NO_OPS) | {
    "InputLayer", "Embedding", "Masking", "Dense", "TimeDistributed", "Activation", "Bidirectional"}
HINT_UNKNOWN = " (lstm_rt converts recurrent layers, Dense, Embedding, masking and merge layers)"
MAX_MEMBER = 2 << 30          # refuse zip members that claim to inflate past 2 GiB
MAX_RATIO = 100               # ... or that inflate a big member more than 100x (weights don't)
MAX_WEIGHT_BYTES = 4 << 30    # the most weight data one conversion reads, all datasets together
SMALL_DATASET = 1 << 20       # datasets past 1 MiB store at least 1/MAX_RATIO of what they declare
HDF5_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
                32000: "lzf"}  # built into HDF5 / h5py: nothing is loaded from disk to decode them


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ConversionError("reading Keras files needs h5py: pip install h5py") from None
    return h5py


def _version_major(v) -> int:
    try:
        return int(str(v).split(".")[0])
    except ValueError:
        return 3


def _recurrent_activation(name, keras_major):
    """A Keras activation name as an ONNX activation (per the file's Keras version)."""
    if isinstance(name, dict):  # serialized activation object
        name = name.get("config", {}).get("name", name.get("class_name", "?"))
    name = str(name).lower()
    if name == "hard_sigmoid":
        return activation("HardSigmoid", 0.2, 0.5) if keras_major < 3 else activation("HardSigmoid", 1 / 6, 0.5)
    table = {"sigmoid": ("Sigmoid",), "tanh": ("Tanh",), "relu": ("Relu",), "linear": ("Affine", 1.0, 0.0),
             "softsign": ("Softsign",), "softplus": ("Softplus",), "elu": ("Elu", 1.0)}
    if name not in table:
        raise ConversionError(f"activation {name!r} has no lstm_rt equivalent")
    return activation(*table[name])


# ------------------------------------------------------------- file reading


class _Weights:
    """Weights by layer name, from a .keras archive (model.weights.h5) or a legacy .h5 file.

    Every dataset is checked before a byte of it is read (`_read`): it must be stored in
    this file (no external storage, virtual dataset, external or soft link on its path),
    declare the shape the layer's config implies, and store about as many bytes as it
    declares; all datasets together are capped at MAX_WEIGHT_BYTES."""

    def __init__(self, h5file, legacy):
        self.f = h5file
        self.legacy = legacy
        self.keys = {}      # layer name -> group name in a .keras archive
        self.layers = {}    # layer name -> (class name, config), for the shapes it implies
        self.bytes_read = 0

    def index(self, entries):
        """A .keras archive stores a model's layers under the snake_case class name plus a
        per-class counter ("lstm", "lstm_1", ...) in model order, not under layer names."""
        seen = {}
        for cls, cfg, _ in entries:
            if cls == "InputLayer":
                continue
            base = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", cls)).lower()
            n = seen.get(base, 0)
            seen[base] = n + 1
            self.keys[cfg["name"]] = base if n == 0 else f"{base}_{n}"
            self.layers[cfg["name"]] = (cls, cfg)

    def get(self, layer_name, sub=None):
        """The layer's variables in creation order (sub: "forward_layer" / "backward_layer"
        of a Bidirectional, "layer" of a TimeDistributed), as many as its config uses."""
        shapes = _implied_shapes(*self.layers.get(layer_name, (None, {})))
        f = self.f
        if self.legacy:
            top = self._child(f, "model_weights", optional=True)
            g = self._walk(f if top is None else top, layer_name)
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
            if sub in ("forward_layer", "backward_layer"):
                key = "/forward_" if sub == "forward_layer" else "/backward_"
                names = [n for n in names if key in n]
            datasets = [self._walk(g, n) for n in names[:len(shapes) if shapes else None]]
        else:
            base = self._walk(self._walk(f, "layers"), self.keys.get(layer_name, layer_name))
            if sub:
                base = self._walk(base, sub)
            datasets = []
            for path in ("cell/vars", "vars"):
                vs = self._walk(base, path, optional=True)
                if vs is not None:
                    datasets.extend(self._walk(vs, k) for k in sorted(vs, key=int))
            datasets = datasets[:len(shapes) if shapes else None]
        return [self._read(ds, shapes[i] if shapes else None) for i, ds in enumerate(datasets)]

    def _child(self, group, name, optional=False):
        """group[name], once the link is known to be a hard link: an external link makes
        HDF5 open another file, and a soft link can lead to one. The link is read without
        following it (h5py's `in` and multi-part paths follow links)."""
        h5py = _h5py()
        try:
            link = group.get(name, getlink=True)
        except TypeError:     # a user-defined link class
            link = "a user-defined link"
        where = f"{group.name.rstrip('/')}/{name}"
        if link is None:
            if optional:
                return None
            raise KeyError(where)
        if not isinstance(link, h5py.HardLink):
            if isinstance(link, h5py.ExternalLink):
                kind = f"an external link to {link.path!r} in file {link.filename!r}"
            elif isinstance(link, h5py.SoftLink):
                kind = f"a soft link to {link.path!r}"
            else:
                kind = str(link)
            raise ConversionError(f"{where!r} is {kind}: lstm_rt reads only objects stored in the model file")
        return group[name]

    def _walk(self, group, path, optional=False):
        """group[path], one link at a time (see _child)."""
        if path.startswith("/"):
            group = group.file
        for part in path.split("/"):
            if part in ("", "."):
                continue
            group = self._child(group, part, optional)
            if group is None:
                return None
        return group

    def _read(self, ds, shape):
        """The data of dataset ds, after checking where it is stored and how big it is
        against `shape` (the layer config's, None for a dim it does not fix)."""
        h5py = _h5py()
        what = f"dataset {ds.name!r}"
        if not isinstance(ds, h5py.Dataset):
            raise ConversionError(f"{what} is not a dataset")
        try:
            plist = ds.id.get_create_plist()
            layout = plist.get_layout()
            if layout == h5py.h5d.VIRTUAL:
                files = sorted({plist.get_virtual_filename(i) for i in range(plist.get_virtual_count())})
                raise ConversionError(f"{what} is a virtual dataset whose data comes from {files}: "
                                      f"lstm_rt reads only data stored in the model file")
            if layout not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
                raise ConversionError(f"{what} has HDF5 storage layout {layout}")
            if plist.get_external_count():
                name = plist.get_external(0)[0]
                name = name.decode(errors="replace") if isinstance(name, bytes) else name
                raise ConversionError(f"{what} stores its data in external file {name!r}: "
                                      f"lstm_rt reads only data stored in the model file")
            for i in range(plist.get_nfilters()):
                code = plist.get_filter(i)[0]
                if code not in HDF5_FILTERS:   # HDF5 would look for a plugin library on disk
                    raise ConversionError(f"{what} is compressed with HDF5 filter {code} "
                                          f"(lstm_rt reads {', '.join(HDF5_FILTERS.values())})")
            dtype, have = ds.dtype, ds.shape
            stored = ds.id.get_storage_size()
        except ConversionError:
            raise
        except (OSError, TypeError, ValueError, KeyError) as e:
            raise ConversionError(f"{what}: unreadable ({type(e).__name__}: {e})") from None
        if dtype.kind not in "fiu" or dtype.shape or dtype.itemsize > 8:
            raise ConversionError(f"{what} holds {dtype}, not numbers")
        if have is None or (shape is not None and (
                len(have) != len(shape) or any(w is not None and h != w for h, w in zip(have, shape)))):
            want = "?" if shape is None else tuple("any" if w is None else w for w in shape)
            raise ConversionError(f"{what} declares shape {have}; the layer config implies {want}")
        nbytes = int(np.prod(have, dtype=object)) * dtype.itemsize
        if nbytes > MAX_RATIO * stored and (stored == 0 or nbytes > SMALL_DATASET):
            raise ConversionError(f"{what} declares {have} of {dtype} ({nbytes} bytes) but stores "
                                  f"{stored} bytes (unwritten or over-compressed data)")
        if self.bytes_read + nbytes > MAX_WEIGHT_BYTES:
            raise ConversionError(f"{what} declares {have} of {dtype} ({nbytes} bytes): the weights "
                                  f"would pass {MAX_WEIGHT_BYTES} bytes, the most a conversion reads")
        self.bytes_read += nbytes
        try:
            return ds[()]
        except (OSError, TypeError, ValueError) as e:
            raise ConversionError(f"{what}: unreadable ({type(e).__name__}: {e})") from None


def _implied_shapes(cls, cfg):
    """The shapes of the variables a layer's config implies, in Keras's order (None for a
    dim the config does not fix, e.g. a kernel's input size), or None if it implies none."""
    def size(v):
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    if cls in ("Bidirectional", "TimeDistributed"):
        inner = cfg.get("layer")
        if not isinstance(inner, dict) or not isinstance(inner.get("config"), dict):
            return None
        cls, cfg = inner.get("class_name"), inner["config"]
    if cls == "Embedding":
        return [(size(cfg.get("input_dim")), size(cfg.get("output_dim")))]
    units = size(cfg.get("units"))
    if cls == "Dense":
        return [(None, units), (units,)] if cfg.get("use_bias", True) else [(None, units)]
    gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}.get(cls)
    if gates is None:
        return None
    GH = units and gates * units
    bias = (2, GH) if cls == "GRU" and cfg.get("reset_after", True) else (GH,)
    return [(None, GH), (units, GH), bias] if cfg.get("use_bias", True) else [(None, GH), (units, GH)]


def _open(path):
    """(config, keras version, _Weights, closer) of a .keras or .h5 file."""
    h5py = _h5py()
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(p)
    if not os.path.isfile(p):   # a FIFO or device would block the read or never end
        raise ConversionError(f"{p}: not a regular file")
    if zipfile.is_zipfile(p):
        try:
            z = zipfile.ZipFile(p)
            for info in z.infolist():
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > MAX_MEMBER or (info.file_size > 64 << 20 and ratio > MAX_RATIO):
                    raise ConversionError(
                        f"{p}: archive member {info.filename!r} claims {info.file_size} bytes from "
                        f"{info.compress_size} compressed (a zip bomb?)")
            config = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
            data = z.read("model.weights.h5")
            f = h5py.File(io.BytesIO(data), "r")
        except ConversionError:
            raise
        except (KeyError, ValueError, zipfile.BadZipFile, OSError, EOFError, RecursionError) as e:
            raise ConversionError(f"{p}: not a readable Keras 3 archive ({type(e).__name__}: {e})") from None
        if not isinstance(meta, dict):
            meta = {}
        return config, meta.get("keras_version", "3"), _Weights(f, legacy=False), f.close
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ConversionError(f"{p}: neither a .keras archive nor an HDF5 file ({e})") from None
    if "model_config" not in f.attrs:
        f.close()
        raise ConversionError(f"{p}: an HDF5 file without a Keras model_config (weights-only?)")
    cfg = f.attrs["model_config"]
    try:
        config = json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)
    except (ValueError, TypeError, RecursionError) as e:
        f.close()
        raise ConversionError(f"{p}: model_config is not valid JSON ({e})") from None
    version = f.attrs.get("keras_version", "2")
    version = version.decode() if isinstance(version, bytes) else str(version)
    return config, version, _Weights(f, legacy=True), f.close


# ------------------------------------------------------------- layer graph


def _refs(v):
    """Keras input_layers / output_layers: [name, node, index] or a list of them ->
    [(name, index)]."""
    if not v:
        return []
    if not isinstance(v[0], list):
        v = [v]
    return [(x[0], x[2] if len(x) > 2 else 0) for x in v]


def _layers_and_links(config):
    """[(class_name, config, input layer name or None)] in order, and the model's inputs /
    outputs (layer names). Sequential and single-path Functional models."""
    cls = config.get("class_name")
    cfg = config.get("config", {})
    layers = cfg.get("layers", [])
    if cls == "Sequential":
        out, prev = [], None
        for layer in layers:
            c = layer["config"]
            out.append((layer["class_name"], c, prev))
            prev = c["name"]
        if not out or out[0][0] != "InputLayer":
            shape = layers[0]["config"].get("batch_input_shape") or layers[0]["config"].get("batch_shape")
            if shape is None:
                raise ConversionError("a Sequential model without an input shape")
            out.insert(0, ("InputLayer", {"name": "input", "batch_shape": shape,
                                          "dtype": layers[0]["config"].get("dtype", "float32")}, None))
            out[1] = (out[1][0], out[1][1], "input")
        return out, [out[0][1]["name"]], [(out[-1][1]["name"], 0)]
    if cls in ("Functional", "Model"):
        out = []
        for layer in layers:
            inbound = layer.get("inbound_nodes") or []
            src, states = None, []
            if len(inbound) > 1:
                raise ConversionError(f"layer {layer['name']!r} is called more than once (shared layers)")
            if inbound:
                node = inbound[0]
                if isinstance(node, dict):      # Keras 3: {"args": [tensor or list], "kwargs": {...}}
                    args = node.get("args", [])
                    arg = args[0] if args else None
                    refs = [a["config"]["keras_history"] for a in (arg if isinstance(arg, list) else [arg])
                            if isinstance(a, dict)]
                    init = (node.get("kwargs") or {}).get("initial_state") or []
                    states = [a["config"]["keras_history"] for a in (init if isinstance(init, list) else [init])
                              if isinstance(a, dict)]
                    if (node.get("kwargs") or {}).get("mask") is not None:
                        raise ConversionError(f"layer {layer['name']!r} is called with an explicit mask")
                else:                            # Keras 2: [[name, node, tensor, kwargs], ...]
                    refs = [r[:3] for r in node]
                    if layer["class_name"] in RECURRENT + ("Bidirectional", "RNN") and len(refs) > 1:
                        refs, states = refs[:1], refs[1:]   # the extra inputs are initial states
                for ref in refs:
                    if len(ref) > 2 and ref[2]:
                        raise ConversionError(f"layer {layer['name']!r} reads output {ref[2]} of "
                                              f"{ref[0]!r} (a returned state) as its input")
                names = [ref[0] for ref in refs]
                src = names if len(names) > 1 else (names[0] if names else None)
            layer_cfg = dict(layer["config"])
            if states:   # [(layer, output index)] of the initial states, for _convert
                layer_cfg["__initial_state__"] = [(r[0], r[2] if len(r) > 2 else 0) for r in states]
            out.append((layer["class_name"], layer_cfg, src))
        return out, [n for n, _ in _refs(cfg.get("input_layers"))], _refs(cfg.get("output_layers"))
    raise ConversionError(f"model class {cls!r} is not supported (Sequential and Functional are)")


def _unwrap_cell(cls, cfg):
    """RNN(LSTMCell(...)) computes what LSTM(...) does: (the layer class it equals, the
    cell's config with the wrapper's sequence options); other layers as they are."""
    if cls != "RNN":
        return cls, cfg
    cell = cfg.get("cell")
    kind = CELLS.get(cell.get("class_name")) if isinstance(cell, dict) else None
    if kind is None:
        what = cell.get("class_name") if isinstance(cell, dict) else "a list of cells"
        raise ConversionError(f"RNN of {what}: lstm_rt converts RNN(LSTMCell | GRUCell | SimpleRNNCell); "
                              f"stack cells as separate RNN layers")
    merged = dict(cell.get("config") or {})
    merged.update({k: cfg[k] for k in RNN_OPTIONS if k in cfg})
    return kind, merged


def _recurrent(kind, cfg, weights, name, keras_major, direction="forward"):
    """One Keras LSTM/GRU/SimpleRNN (weights: per direction [kernel, recurrent_kernel, bias?])."""
    H = cfg["units"]
    if isinstance(H, bool) or not isinstance(H, int) or H <= 0:
        raise ConversionError(f"units must be a positive integer, got {H!r}")
    acts = {"LSTM": ["recurrent_activation", "activation", "activation"],
            "GRU": ["recurrent_activation", "activation"], "SimpleRNN": ["activation"]}[kind]
    act = [_recurrent_activation(cfg.get(a, "sigmoid" if a == "recurrent_activation" else "tanh"), keras_major)
           for a in acts]
    ws, rs, bs = [], [], []
    for vs in weights:
        kernel, rec = vs[0], vs[1]
        G = kernel.shape[1] // H
        bias = vs[2] if cfg.get("use_bias", True) and len(vs) > 2 else None
        w, r = kernel.T, rec.T
        if kind == "LSTM":
            w = np.concatenate([np.split(w, 4)[i] for i in LSTM_ORDER])
            r = np.concatenate([np.split(r, 4)[i] for i in LSTM_ORDER])
            b = np.zeros(4 * H) if bias is None else np.concatenate([np.split(bias, 4)[i] for i in LSTM_ORDER])
            b = np.concatenate([b, np.zeros(4 * H)])
        elif kind == "GRU" and cfg.get("reset_after", True):
            b = np.zeros(6 * H) if bias is None else np.asarray(bias).reshape(-1)
        else:
            b = np.zeros(2 * G * H) if bias is None else np.concatenate([bias, np.zeros(G * H)])
        ws.append(w)
        rs.append(r)
        bs.append(b)
    D = len(weights)
    kw = dict(direction=direction, activations=act * D, hidden_size=H,
              zero_output_for_mask=bool(cfg.get("zero_output_for_mask", False)))
    if kind == "LSTM":
        return LSTM(name, np.stack(ws), np.stack(rs), np.stack(bs), **kw)
    if kind == "GRU":
        return GRU(name, np.stack(ws), np.stack(rs), np.stack(bs),
                   linear_before_reset=cfg.get("reset_after", True), **kw)
    return RNN(name, np.stack(ws), np.stack(rs), np.stack(bs), **kw)


def _convert(config, version, weights, where):
    keras_major = _version_major(version)
    entries, input_names, output_names = _layers_and_links(config)
    weights.index(entries)
    problems, nodes, inputs, outputs = [], [], [], []
    unknown = False
    # keras layer name -> (internal tensor, form "seq" | "static", mask tensor or None, features)
    tensor = {}
    extra_outputs = {}   # layer name -> [(port suffix, tensor, layout)] for return_state
    for cls, cfg, src in entries:
        name = cfg["name"]
        try:
            cls, cfg = _unwrap_cell(cls, cfg)
            if cls == "InputLayer":
                shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
                ids = str(cfg.get("dtype", "float32")).startswith("int") or (shape and len(shape) == 2)
                if not shape or len(shape) not in (2, 3):
                    problems.append(f"InputLayer {name!r} with shape {shape} (expected [batch, time(, features)])")
                    continue
                inputs.append(Port(name, name, "BT" if ids else "BTF"))
                tensor[name] = (name, "seq", None, None if ids else shape[-1])
                continue
            srcs = src if isinstance(src, list) else [src]
            missing = [x for x in srcs if x not in tensor]
            if missing:
                if cls not in KNOWN_LAYERS:   # named too: every unknown layer at once
                    problems.append(f"layer {cls} {name!r}")
                    unknown = True
                elif not problems:   # else a consequence of a problem already reported
                    problems.append(f"layer {cls} {name!r}: its input {missing[0]!r} was not converted")
                continue
            if cls in MERGES:
                vals = [tensor[x] for x in srcs]
                if len(vals) < 2 or any(v[3] is None for v in vals):
                    problems.append(f"{cls} {name!r} needs two or more float inputs")
                    continue
                if len({v[1] for v in vals}) != 1 or len({v[2] for v in vals}) != 1:
                    problems.append(f"{cls} {name!r} joins sequences with last outputs, or sequences "
                                    f"with different masks")
                    continue
                if cls == "Concatenate" and cfg.get("axis", -1) not in (-1, 2 if vals[0][1] == "seq" else 1):
                    problems.append(f"Concatenate {name!r} on axis {cfg.get('axis')} (only the last axis)")
                    continue
                join = Join(name, MERGES[cls], [v[3] for v in vals])
                nodes.append(Node(join, [v[0] for v in vals], [name]))
                tensor[name] = (name, vals[0][1], vals[0][2], join.output_size)
                continue
            if len(srcs) > 1:
                problems.append(f"layer {cls} {name!r} takes several inputs")
                continue
            x, form, mask, feats = tensor[src]
            if cls in NO_OPS or cls == "InputLayer":
                tensor[name] = (x, form, mask, feats)
            elif cls == "Embedding":
                (table,) = weights.get(name)[:1]
                nodes.append(Node(Embedding(name, table), [x], [name]))
                if cfg.get("mask_zero"):  # id 0 is padding: masked steps carry the state
                    mask = f"{name}/mask"
                    nodes.append(Node(Mask(mask, "nonzero_ids"), [x], [mask, None]))
                tensor[name] = (name, "seq", mask, table.shape[1])
            elif cls == "Masking":
                if feats is None:
                    problems.append(f"Masking {name!r}: the number of features is not known")
                    continue
                nodes.append(Node(Mask(name, "value", cfg.get("mask_value", 0.0), features=feats), [x],
                                  [f"{name}/mask", name]))
                tensor[name] = (name, "seq", f"{name}/mask", feats)
            elif cls in ("Dense", "TimeDistributed"):
                inner = cfg
                if cls == "TimeDistributed":
                    inner = cfg["layer"]["config"]
                    if cfg["layer"]["class_name"] != "Dense":
                        problems.append(f"TimeDistributed({cfg['layer']['class_name']}) {name!r}")
                        continue
                act = inner.get("activation", "linear")
                act = act if isinstance(act, str) else act.get("config", {}).get("name", "?")
                if act not in DENSE_ACTS:
                    problems.append(f"Dense {name!r} activation {act!r}")
                    continue
                vs = weights.get(name, "layer" if cls == "TimeDistributed" and not weights.legacy else None)
                kernel = vs[0]
                bias = vs[1] if inner.get("use_bias", True) and len(vs) > 1 else None
                nodes.append(Node(Dense(name, kernel.T, bias, activation=DENSE_ACTS[act]), [x], [name]))
                tensor[name] = (name, form, mask, kernel.shape[1])
            elif cls == "Activation":
                act = cfg.get("activation")
                prev = nodes[-1] if nodes else None
                if act in DENSE_ACTS and prev is not None and isinstance(prev.layer, Dense) \
                        and prev.outputs[0] == x and prev.layer.activation == "linear":
                    d = prev.layer
                    prev.layer = Dense(d.name, d.weight, d.bias, activation=DENSE_ACTS[act])
                    tensor[name] = (x, form, mask, feats)
                else:
                    problems.append(f"Activation {name!r} ({act}) not directly after a linear Dense")
            elif cls in RECURRENT or cls == "Bidirectional":
                if form != "seq":
                    problems.append(f"{cls} {name!r} needs a sequence input")
                    continue
                bi = cls == "Bidirectional"
                inner_cls, inner = (_unwrap_cell(cfg["layer"]["class_name"], cfg["layer"]["config"]) if bi
                                    else (cls, cfg))
                if inner_cls not in RECURRENT:
                    problems.append(f"{cls} of {inner_cls} ({name!r})")
                    continue
                if bi:
                    back = cfg.get("backward_layer")
                    if back:   # allowed only as the mirror of `layer` (its config is read for both)
                        keys = ("units", "activation", "recurrent_activation", "use_bias", "reset_after",
                                "return_sequences", "return_state", "time_major", "stateful")
                        back_cls, bc = _unwrap_cell(back.get("class_name"), back.get("config", {}))
                        if back_cls != inner_cls or any(bc.get(k) != inner.get(k) for k in keys):
                            problems.append(f"Bidirectional {name!r} with a backward_layer configured "
                                            f"differently from its forward layer")
                            continue
                    per_dir = [weights.get(name, "forward_layer"), weights.get(name, "backward_layer")]
                    direction = "bidirectional"
                else:
                    per_dir = [weights.get(name)]
                    direction = "reverse" if inner.get("go_backwards") else "forward"
                if inner.get("time_major"):   # an old Keras option: [T, B, F] inputs and outputs
                    problems.append(f"{cls} {name!r} with time_major=True (lstm_rt reads Keras models "
                                    f"batch-major)")
                    continue
                ret_seq = inner.get("return_sequences", False)
                ret_state = inner.get("return_state", False)
                layer = _recurrent(inner_cls, inner, per_dir, name, keras_major, direction)
                lstm = inner_cls == "LSTM"
                outs = [f"{name}/y", f"{name}/h", f"{name}/c" if lstm else None]
                init = [None, None]
                refs = cfg.get("__initial_state__", [])
                if refs:   # the seq2seq handoff: states returned by another layer (return_state)
                    if bi or len(refs) != (2 if lstm else 1):
                        problems.append(f"{cls} {name!r} with initial_state {refs} (lstm_rt takes the "
                                        f"h{', c' if lstm else ''} a one-direction layer returned)")
                        continue
                    for k, (src_layer, index) in enumerate(refs):
                        found = extra_outputs.get(src_layer, [])
                        if 1 <= index <= len(found):
                            init[k] = found[index - 1][1]
                    if None in init[:len(refs)]:
                        problems.append(f"{cls} {name!r}: initial_state {refs} is not the states a "
                                        f"layer returned (return_state)")
                        continue
                nodes.append(Node(layer, [x, None, init[0], init[1], mask], outs))
                D, H = layer.num_directions, layer.hidden_size
                merge = cfg.get("merge_mode", "concat") if bi else "concat"
                if ret_seq and direction == "reverse":   # Keras: outputs in processing order
                    nodes.append(Node(ReverseTime(f"{name}/reversed", H), [f"{name}/y"], [f"{name}/reversed"]))
                    y, yform = f"{name}/reversed", "seq"
                elif ret_seq:
                    y, yform = f"{name}/y", "seq"
                else:
                    nodes.append(Node(LastState(f"{name}/last", D, H), [f"{name}/h"], [f"{name}/last"]))
                    y, yform = f"{name}/last", "static"
                if bi and merge in ("sum", "mul", "ave"):
                    nodes.append(Node(Merge(f"{name}/merge", merge, H), [y], [f"{name}/merged"]))
                    y = f"{name}/merged"
                elif bi and merge != "concat":
                    problems.append(f"Bidirectional {name!r} merge_mode {merge!r}")
                    continue
                out_f = H if bi and merge in ("sum", "mul", "ave") else D * H
                tensor[name] = (y, yform, mask if ret_seq else None, out_f)
                if ret_state:
                    # Keras order: h, c (LSTM) of the forward, then of the backward direction
                    extra_outputs[name] = []
                    for d, tag in enumerate(("forward", "backward") if bi else ("",)):
                        for key in ("h", "c") if lstm else ("h",):
                            t = f"{name}/{key}"
                            if bi:
                                t = f"{name}/{tag}_{key}"
                                nodes.append(Node(SelectDirection(t, 2, d, H), [f"{name}/{key}"], [t]))
                            extra_outputs[name].append((f"{tag}_{key}" if bi else key, t))
            else:
                problems.append(f"layer {cls} {name!r}")
                unknown = True
        except ConversionError as e:
            problems.append(f"layer {cls} {name!r}: {e}")
        except (KeyError, IndexError, ValueError) as e:
            problems.append(f"layer {cls} {name!r}: unexpected config or weights ({type(e).__name__}: {e})")
    if problems:
        # one short message: the first problems in full, the other layers' classes once each
        named = [(p.split()[1] if p.startswith("layer ") else p.split()[0], p) for p in problems]
        raise ConversionError(_refusal(where, named, HINT_UNKNOWN if unknown else ""))
    for o, index in output_names:
        if o not in tensor:
            raise ConversionError(f"{where}: output layer {o!r} was not converted")
        if index == 0:
            t, form = tensor[o][:2]
            outputs.append(Port(o, t, "BTF" if form == "seq" else "BF"))
        elif index - 1 < len(extra_outputs.get(o, [])):
            suffix, st = extra_outputs[o][index - 1]
            outputs.append(Port(f"{o}/{suffix}", st, "BH"))
        else:
            raise ConversionError(f"{where}: output {index} of layer {o!r} is not supported")
    try:
        return Model(nodes, inputs, outputs, name=config.get("config", {}).get("name", "keras_model"),
                     metadata={"source": "keras", "keras_version": str(version)})
    except Exception as e:
        raise ConversionError(f"{where}: {e}") from None


def from_keras(model) -> Model:
    """An lstm_rt.Model from a .keras / .h5 file path or a live keras.Model."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        config, version, weights, close = _open(path)
        try:
            return _convert(config, version, weights, path)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            if isinstance(e, ConversionError):
                raise
            raise ConversionError(f"{path}: malformed Keras model config "
                                  f"({type(e).__name__}: {e})") from None
        finally:
            close()
    if hasattr(model, "save") and hasattr(model, "get_config"):
        with tempfile.TemporaryDirectory() as tmp:
            p = os.path.join(tmp, "model.keras")
            model.save(p)
            return from_keras(p)
    raise ConversionError(f"from_keras takes a .keras/.h5 path or a keras.Model, got {type(model).__name__}")
