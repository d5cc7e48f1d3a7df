"""Text generation by sampling a token at a time from a language model.

    generate(model, "and god said", 20, temperature=0.8, top_k=40, seed=1)  # -> str
    generate(model, [5, 17, 2], 20, seed=1)                                 # -> list of ids

Works for word- and char-level models (the tokenizer stored in the model's metadata
says which); deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np

from .errors import LstmRtError
from .nextword import top_k as _top_k
from .text import Tokenizer


def sample_next(scores: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, probabilities: bool = False) -> int:
    """One token id drawn from softmax(scores / temperature), restricted to the top_k
    scores when given; temperature 0 is greedy. scores: [V] logits (or probabilities)."""
    s = np.asarray(scores, np.float64)
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

    model : Model with one input of token ids and one output of V scores per step
    prompt : str (tokenized with the model's tokenizer; the result is the continuation as
             a str) or a sequence of token ids (the result is a list of ids)
    temperature : > 0 scales the logits; 0 picks the most likely token every time
    top_k : sample only among the k most likely tokens
    seed : seeds numpy's default_rng: the same seed gives the same text
    stop : token id (or token string) that ends generation early; it is included
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise LstmRtError(f"n must be a non-negative integer, got {n!r}")
    if temperature < 0 or not np.isfinite(temperature):
        raise LstmRtError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise LstmRtError(f"top_k must be a positive integer or None, got {top_k!r}")
    as_text = isinstance(prompt, str)
    if as_text:
        tok = tokenizer or Tokenizer.from_metadata(model.metadata)
        ids = tok.encode(prompt)
        if tok.kind == "words" and tok.start is not None:
            ids = [tok.index[tok.start]] + ids
        if isinstance(stop, str):
            stop = tok.index.get(stop)
    else:
        ids = [int(i) for i in np.asarray(prompt, np.int64).reshape(-1)]
    if not ids:
        raise LstmRtError("the prompt is empty: give at least one token to start from")
    outs = model.outputs
    if len(model.inputs) != 1 or not model.inputs[0].dtype.startswith("int") or len(outs) != 1:
        raise LstmRtError("generate needs a model with one input of token ids and one output of scores")
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
