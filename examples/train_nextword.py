"""Train the demo next-word model shipped in lstm_rt/data/ (word-level LSTM on the KJV Bible).

The corpus is the King James Version from Debian's `bible-kjv` package (public domain;
`apt-get install bible-kjv`, whose `bible` program prints the text); nothing is downloaded.
Every 10th chapter is held out for evaluation. The script trains Embedding -> LSTM ->
Linear in PyTorch, converts it with converters.from_torch (checked against PyTorch), stores
the vocabulary and tokenizer in the model file, evaluates fp32 and int8 on the held-out
chapters with lstm_rt itself, and saves the int8 model.

    python examples/train_nextword.py --minutes 20
    python examples/train_nextword.py --corpus kjv.txt --vocab 8000 --hidden 256

Needs torch (pip install torch==2.13.0) and the converters package (this repository).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time

import numpy as np

import lstm_rt
from lstm_rt.progress import Progress
from lstm_rt.text import PUNCTUATION, Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(ROOT, "lstm_rt", "data", "nextword_kjv.lrt")
SAMPLE_OUT = os.path.join(ROOT, "tests", "data", "kjv_heldout_sample.txt")


def read_kjv(path: str | None) -> list[str]:
    """The chapters of the KJV as plain text (no headers, no verse numbers)."""
    if path:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    else:
        try:
            raw = subprocess.run(["bible", "gen1:1-rev22:21"], check=True, capture_output=True,
                                 text=True).stdout
        except FileNotFoundError:
            sys.exit("the `bible` program is missing: apt-get install bible-kjv (or pass --corpus FILE)")
    lines = raw.split("\n")
    chapters, cur = [], []
    for i, line in enumerate(lines):
        is_header = line.strip() and (i == 0 or not lines[i - 1].strip()) and \
            (i + 1 == len(lines) or not lines[i + 1].strip())
        if is_header:  # "Genesis 1": a line alone between blank lines starts a chapter
            if cur:
                chapters.append(" ".join(cur))
            cur = []
        elif line.strip():
            s = line.strip()
            head, _, rest = s.partition(" ")
            cur.append(rest if head.isdigit() and line.startswith(" ") else s)
    if cur:
        chapters.append(" ".join(cur))
    return chapters


def build_tokenizer(tokens: list[str], size: int) -> Tokenizer:
    counts = collections.Counter(t for t in tokens if t not in PUNCTUATION)
    words = [w for w, _ in counts.most_common(size - 1 - len(PUNCTUATION))]
    return Tokenizer(["<unk>"] + list(PUNCTUATION) + words, kind="words", start=".")


def make_module(V, E, H):
    import torch
    nn = torch.nn

    class NextWordLSTM(nn.Module):
        """Embedding -> LSTM -> Linear; dropout only while training."""

        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, E)
            self.lstm = nn.LSTM(E, H)
            self.head = nn.Linear(H, V)

        def forward(self, ids, state=None):
            x = nn.functional.dropout(self.embedding(ids), 0.25, self.training)
            y, state = self.lstm(x, state)
            y = nn.functional.dropout(y, 0.25, self.training)
            return self.head(y), state

    return NextWordLSTM()


def batches(ids: np.ndarray, B: int):
    """A token stream cut into B parallel streams, [T, B] (truncated BPTT layout)."""
    T = len(ids) // B
    return ids[:T * B].reshape(B, T).T.copy()


def train(train_ids, V, args):
    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    mod = make_module(V, args.embed, args.hidden)
    opt = torch.optim.Adam(mod.parameters(), lr=args.lr)
    data = torch.from_numpy(batches(train_ids, args.batch))
    L = args.bptt
    steps = (data.shape[0] - 1) // L
    deadline = time.time() + args.minutes * 60
    for epoch in range(args.epochs):
        mod.train()
        state, total, t_epoch = None, 0.0, time.time()
        with Progress(steps, f"epoch {epoch + 1}/{args.epochs}") as bar:
            for s in range(steps):
                x, y = data[s * L:(s + 1) * L], data[s * L + 1:(s + 1) * L + 1]
                if state is not None:
                    state = tuple(t.detach() for t in state)
                logits, state = mod(x, state)
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(mod.parameters(), 1.0)
                opt.step()
                total += loss.item()
                bar.update(1, loss=f"{total / (s + 1):.3f}")
                if time.time() > deadline:
                    break
        print(f"epoch {epoch + 1}: train loss {total / (s + 1):.3f}, {s + 1} steps, "
              f"{time.time() - t_epoch:.0f} s", flush=True)
        for g in opt.param_groups:
            g["lr"] *= 0.5
        if time.time() > deadline:
            print("time budget reached", flush=True)
            break
    return mod.eval()


def token_scores(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per token [N, 3]: negative log-likelihood, target is top-1, target is in the top 3."""
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    nll = lse - logits[np.arange(len(targets)), targets]
    top3 = np.argpartition(-logits, 3, axis=1)[:, :3]
    return np.stack([nll, logits.argmax(axis=1) == targets, (top3 == targets[:, None]).any(1)], 1)


def summarize(scores) -> dict:
    s = np.concatenate(scores)
    return {"top1": float(s[:, 1].mean()), "top3": float(s[:, 2].mean()),
            "perplexity": float(np.exp(s[:, 0].mean())), "tokens": int(len(s))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", help="KJV text as printed by `bible gen1:1-rev22:21` (default: run it)")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--embed", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=30, help="stop training after this long")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", default=DEFAULT_OUT, help="int8 model file")
    ap.add_argument("--fp32-out", help="also save the fp32 model here")
    args = ap.parse_args(argv)

    import converters

    chapters = read_kjv(args.corpus)
    held = [c for i, c in enumerate(chapters) if i % 10 == 9]
    train_text = [c for i, c in enumerate(chapters) if i % 10 != 9]
    probe = Tokenizer(["<unk>"])
    tokens = [t for c in train_text for t in probe.split(c)]
    tok = build_tokenizer(tokens, args.vocab)
    V = len(tok)
    train_ids = np.array([tok.index.get(t, 0) for t in tokens], np.int64)
    held_ids = np.array([i for c in held for i in tok.encode(c)], np.int64)
    print(f"{len(chapters)} chapters; train {len(train_ids)} tokens, held-out {len(held_ids)} tokens; "
          f"vocabulary {V} (unknown rate held-out {np.mean(held_ids == 0):.4f})", flush=True)

    mod = train(train_ids, V, args)

    model = converters.from_torch(mod, name="nextword_kjv")
    model.metadata = {**tok.to_metadata(), "corpus": "King James Version (Debian bible-kjv-text), "
                      "every 10th chapter held out", "architecture": f"Embedding {V}x{args.embed} -> "
                      f"LSTM {args.hidden} -> Linear {V}"}
    int8 = model.quantized("int8")

    # held-out evaluation: 16 contiguous streams from zero state, fed in chunks (the logits of
    # the whole held-out text would not fit in memory three times)
    import torch
    cols = batches(held_ids, 16)
    s32, s8, state = model.stream(16), int8.stream(16), None
    parts = collections.defaultdict(list)
    for t0 in range(0, len(cols) - 1, 200):
        x, y = cols[t0:t0 + 200], cols[t0 + 1:t0 + 201]
        x = x[:len(y)]
        with torch.no_grad():
            want, state = mod(torch.from_numpy(x), state)
        want = want.numpy().reshape(-1, V)
        got32, got8 = s32.feed(x).reshape(-1, V), s8.feed(x).reshape(-1, V)
        y = y.reshape(-1)
        parts["err_torch"].append(np.abs(got32 - want).max())
        parts["err_int8"].append(np.abs(got32 - got8).max())
        for key, logits in (("fp32", got32), ("int8", got8)):
            parts[key].append(token_scores(logits, y))
        parts["agree1"].append(got32.argmax(1) == got8.argmax(1))
        t3 = [np.sort(np.argpartition(-g, 3, axis=1)[:, :3], axis=1) for g in (got32, got8)]
        parts["agree3"].append((t3[0] == t3[1]).all(1))
    print(f"lstm_rt fp32 vs PyTorch: max abs logit error {max(parts['err_torch']):.2e}")
    res = {k: summarize(parts[k]) for k in ("fp32", "int8")}
    res["int8_vs_fp32"] = {"top1_agreement": float(np.concatenate(parts["agree1"]).mean()),
                           "top3_set_agreement": float(np.concatenate(parts["agree3"]).mean()),
                           "max_abs_logit_error": float(max(parts["err_int8"]))}
    print(json.dumps(res, indent=2))
    model.metadata["heldout"] = res
    int8.metadata = model.metadata
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    int8.save(args.out)
    print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB, int8)")
    if args.fp32_out:
        model.save(args.fp32_out)
        print(f"saved {args.fp32_out} ({os.path.getsize(args.fp32_out) / 1e6:.2f} MB, fp32)")
    os.makedirs(os.path.dirname(SAMPLE_OUT), exist_ok=True)
    with open(SAMPLE_OUT, "w", encoding="utf-8") as f:  # a held-out excerpt for the tests
        f.write("\n".join(held[:4]) + "\n")
    print(f"saved {SAMPLE_OUT}")


if __name__ == "__main__":
    main()
