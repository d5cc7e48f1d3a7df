"""The `lstm-rt` command: convert, inspect and run models.

    lstm-rt convert model.onnx -o model.lrt [--weights int8]
    lstm-rt convert model.lrt -o model_int8.lrt --weights int8     # a model file, other weights
    lstm-rt info model.lrt
    lstm-rt run model.lrt --input x.npy --output y.npy [--stream]
    lstm-rt run model.lrt --input X=x.npy --input sequence_lens=l.npy --output out.npz
    lstm-rt demo                      # live next-word suggestions as you type
    lstm-rt demo --text "and god said, let there be"

A user's mistake (a missing or malformed file, a wrong input name, rank or dtype, a model
the converters refuse, a file too big to convert) ends in one `lstm-rt: error: ...` line
on stderr and exit code 2; a traceback means a bug in lstm_rt.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from numpy.lib import format as npy_format

from . import _core
from .errors import LstmRtError
from .model import load


def _shape(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _load_model(path):
    """load(), with running out of memory (a hostile file converted on the fly) named."""
    try:
        return load(path)
    except MemoryError as e:
        raise LstmRtError(f"{path}: out of memory while loading ({e})") from None


def cmd_info(args):
    m = _load_model(args.model)
    print(f"model    {m.name}  ({args.model}, {os.path.getsize(args.model):,} bytes)")
    print(f"weights  {m.weights}    kernels {_core.cpu_isa()}")
    for title, specs in (("inputs", m.inputs), ("outputs", m.outputs)):
        print(title)
        for s in specs:
            print(f"  {s.name:<20} {_shape(s.shape):<20} {s.dtype}")
    print("layers")
    for layer in m.layers:
        cfg = {k: v for k, v in layer.config().items() if k not in ("name", "activations")}
        print(f"  {layer.kind:<10} {layer.name:<20} " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    return 0


def _refuse_directory(path, what):
    if os.path.isdir(path):
        raise LstmRtError(f"{what} {path}: is a directory; give a file name")


def cmd_convert(args):
    _refuse_directory(args.output, "-o")
    from .progress import Progress
    with Progress(3, f"convert {os.path.basename(args.source)}") as bar:   # drawn on a terminal only
        try:
            if args.source.lower().endswith(".lrt"):    # a model file: store its weights anew
                m = load(args.source)
            else:
                import converters
                m = converters.convert(args.source)
        except MemoryError as e:
            raise LstmRtError(f"{args.source}: out of memory while converting ({e})") from None
        bar.update(1, stage="converted")
        if args.weights is not None and args.weights != m.weights:
            try:
                m = m.quantized(args.weights)    # from fp32 only: an int8 model stays int8
            except LstmRtError as e:
                raise LstmRtError(f"{args.source}: {e}") from None
        bar.update(1, stage=f"{m.weights} weights")
        m.save(args.output)
        bar.update(1, stage="saved")
    print(f"{args.source} -> {args.output}: {len(m.layers)} layers, {m.weights} weights, "
          f"{os.path.getsize(args.output):,} bytes")
    return 0


def _load_npy(path):
    """The array in a .npy file. Its header is checked against the file before anything of
    the size it claims is allocated, and arrays of Python objects (which only unpickling
    could read) are refused."""
    if os.path.isdir(path):
        raise LstmRtError(f"{path}: is a directory, not a .npy file")
    if not os.path.exists(path):
        raise LstmRtError(f"{path}: no such file")
    if not os.path.isfile(path):    # a FIFO or a device would block or never end
        raise LstmRtError(f"{path}: not a regular file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic != npy_format.MAGIC_PREFIX:
            what = ("an .npz archive; give each input as NAME=PATH to a .npy file" if magic[:2] == b"PK"
                    else "empty, not a .npy file" if not magic else "not a .npy file (no NUMPY magic)")
            raise LstmRtError(f"{path}: {what}")
        f.seek(0)
        try:
            version = npy_format.read_magic(f)
            read_header = {(1, 0): npy_format.read_array_header_1_0,
                           (2, 0): npy_format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"format version {version[0]}.{version[1]} is not read here")
            shape, _, dtype = read_header(f)
        except (ValueError, EOFError, SyntaxError, TypeError) as e:
            raise LstmRtError(f"{path}: not a readable .npy file ({e})") from None
        data = f.tell()
    if dtype.hasobject:
        raise LstmRtError(f"{path}: holds Python objects, which only unpickling could read; "
                          f"lstm-rt reads numeric arrays only")
    need = dtype.itemsize * math.prod(shape)   # Python ints: no overflow for absurd shapes
    if size - data < need:
        raise LstmRtError(f"{path}: the header says {dtype} {tuple(shape)} ({need:,} bytes) but the "
                          f"file holds {size - data:,} bytes of data (truncated?)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise LstmRtError(f"{path}: not a readable .npy file ({e})") from None


def _read_inputs(specs):
    """--input values: one PATH for a single-input model, or NAME=PATH pairs."""
    if len(specs) == 1 and "=" not in specs[0]:
        return _load_npy(specs[0])
    feeds = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            raise LstmRtError(f"--input {spec!r}: with several inputs, write NAME=PATH")
        if name in feeds:
            raise LstmRtError(f"--input {name}: given twice")
        feeds[name] = _load_npy(path)
    return feeds


def _check_stream_feeds(m, x, given):
    """What --stream needs of the feeds before it slices them into steps, checked against
    the model's public specs: known input names, each spec's rank, and at least one time
    step and one sequence. A spec with a time axis has two dynamic (None) dims, T and B; a
    bare array (`given`: the one --input) binds the model's only such input."""
    specs = {s.name: s for s in m.inputs}
    if isinstance(x, dict):
        feeds = {name: (a, f"--input {name}") for name, a in x.items()}
    else:
        seq = [s.name for s in m.inputs if s.shape.count(None) == 2]
        if len(seq) != 1:
            return    # no single sequence input to bind: run() will say so
        feeds = {seq[0]: (x, f"--input {given[0]}")}
    for name, (a, label) in feeds.items():
        if name not in specs:
            raise LstmRtError(f"{label}: the model has no input {name!r}; its inputs are "
                              f"{', '.join(specs)}")
        shape = specs[name].shape
        if a.ndim != len(shape):
            raise LstmRtError(f"{label}: input {name!r} has rank {len(shape)} {_shape(shape)}, got "
                              f"shape {a.shape}")
        if any(d is None and n == 0 for d, n in zip(shape, a.shape)):
            raise LstmRtError(f"{label}: --stream needs at least one time step and one sequence, "
                              f"got shape {a.shape}")


def _stream_run(model, x):
    """Feed x step by step through a stream and stack the outputs, as run() lays them out.
    Each spec's `axes` says where its time axis is (a step's arrays are the same without it);
    outputs without one (states) are the final step's, as run() returns them."""
    m = model
    ins = {spec.name: spec for spec in m.inputs}
    feeds = x if isinstance(x, dict) else {next(s.name for s in m.inputs if "T" in s.axes): x}
    for name in feeds:
        if "T" not in ins[name].axes:
            raise ValueError(f"--stream feeds sequences only; input {name!r} cannot be streamed")
    t_axis = {n: ins[n].axes.index("T") for n in feeds}
    b_axis = {n: ins[n].axes.replace("T", "").index("B") for n in feeds}
    first = next(iter(feeds))
    T = feeds[first].shape[t_axis[first]]
    B = np.take(feeds[first], 0, axis=t_axis[first]).shape[b_axis[first]] if T else 0
    s = m.stream(batch=B)
    steps = []
    for t in range(T):
        step_in = {n: np.take(a, t, axis=t_axis[n]) for n, a in feeds.items()}
        steps.append(s.step(step_in if isinstance(x, dict) else step_in[first]))
    outs = {spec.name: spec for spec in m.outputs}

    def stack(name, parts):
        axes = outs[name].axes
        return np.stack(parts, axis=axes.index("T")) if "T" in axes else parts[-1]

    if isinstance(steps[0], dict):
        return {k: stack(k, [st[k] for st in steps]) for k in steps[0]}
    return stack(m.outputs[0].name, steps)


def _output_path(path, several):
    """(file to write, as .npz?): the suffix picks the format. .npz: every output by name;
    .npy: the one output; no suffix: .npy or .npz appended (np.save/np.savez would append
    it silently), so the message can name the file really written."""
    _refuse_directory(path, "--output")
    if path.endswith(".npz"):
        return path, True
    if path.endswith(".npy"):
        if several:
            raise LstmRtError(f"--output {path}: this model has several outputs; write them to an .npz file")
        return path, False
    return path + (".npz" if several else ".npy"), several


def cmd_run(args):
    m = _load_model(args.model)
    out, as_npz = _output_path(args.output, len(m.outputs) > 1)
    x = _read_inputs(args.input)
    if args.stream:
        _check_stream_feeds(m, x, args.input)
        y = _stream_run(m, x)
    else:
        y = m.run(x)
    if not isinstance(y, dict):
        y = {m.outputs[0].name: y}
    if as_npz:
        np.savez(out, **y)
        print(f"wrote {', '.join(f'{k} {v.shape}' for k, v in y.items())} to {out}")
    else:
        (y,) = y.values()
        np.save(out, y)
        print(f"wrote {y.shape} {y.dtype} to {out}")
    return 0


DEMO_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "nextword_kjv.lrt")


def _format_suggestions(sugg):
    return "  ".join(f"{w} {p * 100:.1f}%" for w, p in sugg) or "(no word in the vocabulary fits)"


def _demo_interactive(pred, k):
    """Raw terminal: suggestions redrawn after every keystroke; Tab accepts the first one."""
    import termios
    import time
    import tty
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    print("Type; suggestions follow each keystroke. Tab accepts the first, Enter starts a new "
          "sentence, Ctrl-C or Ctrl-D quits.")
    try:
        tty.setcbreak(fd)
        took = 0.0
        while True:
            sugg = pred.suggest(k)
            shown = pred.text[-50:]
            sys.stdout.write(f"\r\033[K> {shown}\033[s   [{_format_suggestions(sugg)}]  "
                             f"{took * 1e6:.0f} us\033[u")
            sys.stdout.flush()
            ch = sys.stdin.read(1)
            t0 = time.perf_counter()
            if ch in ("", "\x04", "\x03"):
                break
            if ch in ("\x7f", "\b"):
                pred.backspace()
            elif ch == "\t" and sugg:
                done, _ = pred.tokenizer.split_partial(pred.text)
                pred.set_text(done + sugg[0][0] + " ")
            elif ch in ("\r", "\n"):
                sys.stdout.write("\n")
                pred.reset()
            elif ch.isprintable():
                pred.type(ch)
            took = time.perf_counter() - t0
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        sys.stdout.write("\n")
    return 0


def cmd_demo(args):
    import time
    from .nextword import NextWordPredictor
    model = _load_model(args.model)
    pred = NextWordPredictor(model)
    if args.text is None and sys.stdin.isatty():
        return _demo_interactive(pred, args.k)
    texts = [args.text] if args.text is not None else [line.rstrip("\n") for line in sys.stdin]
    print(f"model {os.path.basename(args.model)}: {model.metadata.get('architecture', model)}, "
          f"{model.weights} weights, kernels {_core.cpu_isa()}")
    for text in texts:
        pred.reset()
        t0 = time.perf_counter()
        n = pred.set_text(text)
        sugg = pred.suggest(args.k)
        took = time.perf_counter() - t0
        _, partial = pred.tokenizer.split_partial(text)
        what = f"completions of {partial!r}" if partial else "next word"
        print(f"> {text}")
        print(f"  {what}: {_format_suggestions(sugg)}   ({n} tokens in {took * 1e3:.2f} ms)")
    return 0


class _Parser(argparse.ArgumentParser):
    """A usage error is one `lstm-rt: error: ...` line too (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"lstm-rt: error: {message} (see {self.prog} --help)\n")


def build_parser():
    p = _Parser(prog="lstm-rt", description="Run trained LSTM/GRU/RNN models on CPU.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert an ONNX or Keras model (or a .lrt file, to other "
                                       "weights) to a .lrt file")
    c.add_argument("source")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--weights", choices=["fp32", "fp16", "int8"], default=None,
                   help="weight storage (default: the source's; converted models are fp32)")
    c.set_defaults(func=cmd_convert)
    i = sub.add_parser("info", help="describe a model")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)
    r = sub.add_parser("run", help="run a model on .npy inputs")
    r.add_argument("model")
    r.add_argument("--input", action="append", required=True,
                   help="x.npy, or NAME=x.npy (repeat for several inputs)")
    r.add_argument("--output", required=True,
                   help="y.npy (one output) or out.npz (every output, by name); without a suffix "
                        ".npy or .npz is appended")
    r.add_argument("--stream", action="store_true", help="feed the sequence one step at a time")
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("demo", help="next-word suggestions from the bundled model, as you type")
    d.add_argument("--text", help="print suggestions for this text instead of reading the keyboard "
                                  "(without a terminal, each line of stdin is a text)")
    d.add_argument("--model", default=DEMO_MODEL, help="a next-word model with a vocabulary")
    d.add_argument("-k", type=int, default=3, help="number of suggestions")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    """The command line; returns the exit code: 0, or 2 after one `lstm-rt: error: ...` line."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:    # --help (0), or a usage error already printed in one line (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except MemoryError as e:
        message = f"out of memory ({e})"
    except (LstmRtError, ValueError, OSError) as e:   # ConversionError is an LstmRtError
        message = str(e)
    message = " ".join(message.split())    # one line, whatever the error's text holds
    print(f"lstm-rt: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
