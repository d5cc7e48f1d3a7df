"""The `lstm-rt` command: convert, inspect and run models.

    lstm-rt convert model.onnx -o model.lrt [--weights int8]
    lstm-rt info model.lrt
    lstm-rt run model.lrt --input x.npy --output y.npy [--stream]
    lstm-rt run model.lrt --input X=x.npy --input sequence_lens=l.npy --output out.npz
    lstm-rt demo                      # live next-word suggestions as you type
    lstm-rt demo --text "and god said, let there be"
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from . import _core
from .errors import LstmRtError
from .model import load


def _shape(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def cmd_info(args):
    m = load(args.model)
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


def cmd_convert(args):
    import converters
    from .progress import Progress
    with Progress(3, f"convert {os.path.basename(args.source)}") as bar:   # drawn on a terminal only
        m = converters.convert(args.source)
        bar.update(1, stage="converted")
        if args.weights != m.weights:
            m = m.quantized(args.weights)
        bar.update(1, stage=f"{args.weights} weights")
        m.save(args.output)
        bar.update(1, stage="saved")
    print(f"{args.source} -> {args.output}: {len(m.layers)} layers, {args.weights} weights, "
          f"{os.path.getsize(args.output):,} bytes")
    return 0


def _read_inputs(specs):
    """--input values: one PATH for a single-input model, or NAME=PATH pairs."""
    if len(specs) == 1 and "=" not in specs[0]:
        return np.load(specs[0], allow_pickle=False)
    feeds = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ValueError(f"--input {spec!r}: with several inputs, write NAME=PATH")
        feeds[name] = np.load(path, allow_pickle=False)
    return feeds


def _stream_run(model, x):
    """Feed x step by step through a stream and stack the outputs, as run() lays them out."""
    m = model
    ports = {p.name: p for p in m._inputs}
    feeds = x if isinstance(x, dict) else {next(p.name for p in m._inputs if p.is_sequence): x}
    for name in feeds:
        if not ports[name].is_sequence:
            raise ValueError(f"--stream feeds sequences only; input {name!r} cannot be streamed")
    axis = {n: (1 if ports[n].layout[0] == "B" else 0) for n in feeds}
    first = next(iter(feeds))
    T, B = feeds[first].shape[axis[first]], feeds[first].shape[1 - axis[first]]
    s = m.stream(batch=B)
    steps = []
    for t in range(T):
        step_in = {n: np.take(a, t, axis=axis[n]) for n, a in feeds.items()}
        steps.append(s.step(step_in if isinstance(x, dict) else step_in[first]))
    out_axis = {p.name: (1 if p.layout[0] == "B" else 0) for p in m._outputs}

    def stack(name, parts):
        if m._info[next(p for p in m._outputs if p.name == name).tensor][0] == "seq":
            return np.stack(parts, axis=out_axis[name])
        return parts[-1]  # states: the final one, as run() returns

    if isinstance(steps[0], dict):
        return {k: stack(k, [st[k] for st in steps]) for k in steps[0]}
    return stack(m._outputs[0].name, steps)


def cmd_run(args):
    m = load(args.model)
    x = _read_inputs(args.input)
    y = _stream_run(m, x) if args.stream else m.run(x)
    if isinstance(y, dict):
        out = args.output if args.output.endswith(".npz") else args.output + ".npz"
        np.savez(out, **y)
        print(f"wrote {', '.join(f'{k} {v.shape}' for k, v in y.items())} to {out}")
    else:
        np.save(args.output, y)
        print(f"wrote {y.shape} {y.dtype} to {args.output}")
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
    model = load(args.model)
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


def build_parser():
    p = argparse.ArgumentParser(prog="lstm-rt", description="Run trained LSTM/GRU/RNN models on CPU.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert an ONNX, Keras or PyTorch model to a .lrt file")
    c.add_argument("source")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--weights", choices=["fp32", "fp16", "int8"], default="fp32")
    c.set_defaults(func=cmd_convert)
    i = sub.add_parser("info", help="describe a model")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)
    r = sub.add_parser("run", help="run a model on .npy inputs")
    r.add_argument("model")
    r.add_argument("--input", action="append", required=True,
                   help="x.npy, or NAME=x.npy (repeat for several inputs)")
    r.add_argument("--output", required=True, help="y.npy (one output) or out.npz (several)")
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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LstmRtError, FileNotFoundError, ValueError, OSError) as e:
        print(f"lstm-rt: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
