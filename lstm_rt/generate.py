"""Text generation by sampling a token at a time from a language model.

    generate(model, "and god said", 20, temperature=0.8, top_k=40, seed=1)  # -> str
    generate(model, [5, 17, 2], 20, seed=1)                                 # -> list of ids

Works for word- and char-level models (the tokenizer stored in the model's metadata
says which); deterministic for a given seed.
"""
from __future__ import annotations

import os

import numpy as np

from . import _checks
from .errors import LstmRtError
from .nextword import top_k as _top_k
from .text import Tokenizer


def sample_next(scores: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, probabilities: bool = False) -> int:
    """One token id drawn from softmax(scores / temperature), restricted to the top_k
    scores when given (top_k >= V: all of them, the same draw as None); temperature 0 is
    greedy. scores: [V] logits (or probabilities)."""
    s = np.asarray(scores, np.float64)
    if top_k is not None and top_k >= s.shape[0]:
        top_k = None   # every token: sample over them in id order, as without top_k
    if probabilities:
        s = np.log(np.maximum(s, 1e-300))
    if not np.all(np.isfinite(s)):
        raise LstmRtError("the model's scores contain NaN or inf; cannot sample")
    if temperature == 0:
        return int(np.argmax(s))
    ids = _top_k(s, top_k) if top_k else np.arange(s.shape[0])
    z = s[ids] / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(ids[rng.choice(len(ids), p=p)])


def generate(model, prompt, n: int, *, temperature: float = 1.0, top_k: int | None = None,
             seed: int | None = None, tokenizer: Tokenizer | None = None, stop=None):
    """Continue `prompt` by n tokens.

    model : Model with one input of token ids and one output of V scores per step (logits;
            a log_softmax head's log-probabilities are logits too; a softmax head's
            probabilities are taken as such)
    n : int >= 0, the most tokens to generate: with `stop` an upper bound (10**12 is fine;
        tokens are produced one at a time, nothing of size n is allocated)
    prompt : str (tokenized with the model's tokenizer; the result is the continuation as
             a str) or a 1-d sequence of token ids (the result is a list of ids)
    temperature : finite number >= 0; > 0 scales the logits, 0 picks the most likely token
    top_k : int >= 1: sample only among the k most likely tokens; None, or any k >= V
            (e.g. 10**12), samples among all V tokens (the same draws for the same seed)
    seed : int >= 0 (or None: fresh entropy); seeds numpy's default_rng: the same seed
           gives the same text
    stop : token id (or token string) that ends generation early; it is included
    """
    from .model import Model, load
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    if not isinstance(model, Model):
        raise LstmRtError(f"model must be a Model or a model file's path, got {type(model).__name__}")
    n = _checks.count("n", n)
    temperature = _checks.real("temperature", temperature)
    if top_k is not None:
        top_k = _checks.count("top_k", top_k, minimum=1)
    if seed is not None:
        seed = _checks.count("seed", seed)
    outs = model.outputs
    if len(model.inputs) != 1 or not model.inputs[0].dtype.startswith("int") or len(outs) != 1:
        raise LstmRtError("generate needs a model with one input of token ids and one output of scores")
    V = outs[0].shape[-1]
    as_text = isinstance(prompt, str)
    tok = tokenizer
    if tok is None and (as_text or isinstance(stop, str)):
        tok = Tokenizer.from_metadata(model.metadata)
    if as_text:
        ids = tok.encode(prompt)
        if tok.kind == "words" and tok.start is not None:
            ids = [tok.index[tok.start]] + ids
    else:
        try:
            a = np.asarray(prompt)
        except (ValueError, TypeError):
            a = None
        if a is None or a.ndim != 1 or a.size and a.dtype.kind not in "iu":
            raise LstmRtError(f"prompt must be a str or a 1-d sequence of token ids, got {prompt!r:.80}")
        ids = [int(i) for i in a]
    if not ids:
        raise LstmRtError("the prompt is empty: give at least one token to start from")
    if isinstance(stop, str):
        if stop not in tok.index:
            raise LstmRtError(f"stop {stop!r} is not in the model's vocabulary")
        stop = tok.index[stop]
    elif stop is not None:
        stop = _checks.count("stop", stop)
        if stop >= V:
            raise LstmRtError(f"stop {stop} is not in the model's vocabulary (ids 0..{V - 1})")
    probs = getattr(model.layers[-1], "activation", None) == "softmax"
    rng = np.random.default_rng(seed)
    stream = model.stream(1)
    for i in ids:
        scores = stream.step(np.array([i], np.int64))[0]
    out = []
    for _ in range(n):
        nxt = sample_next(scores, rng, temperature, top_k, probs)
        out.append(nxt)
        if stop is not None and nxt == stop:
            break
        scores = stream.step(np.array([nxt], np.int64))[0]
    if not as_text:
        return out
    text = tok.decode(out)
    if tok.kind == "words" and out and tok.vocabulary[out[0]] not in ".,;:?!":
        text = " " + text
    return text
