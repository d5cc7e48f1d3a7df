"""Keyboard next-word prediction over an Embedding -> RNN -> Dense model.

    p = NextWordPredictor(lstm_rt.load("nextword.lrt"))   # vocabulary read from the file
    p.set_text("and god said, let there be")                # or p.type(...), p.backspace()
    p.suggest(3)        # [("light", 0.41), ("a", 0.09), ...]: the next word, with probabilities
    p.type(" li")
    p.suggest(3)        # completions of the partly typed "li"

The predictor keeps the token ids it has fed and, for each, the recurrent state before
it, so typing computes only the new tokens and a backspace or an edit in the middle
rewinds to the last unchanged token (one step recomputes its scores) instead of
re-running the sentence. Tokenization is `lstm_rt.text.Tokenizer`'s (lowercased words,
punctuation as tokens, unknown words as "<unk>"); suggestions are words only.
"""
from __future__ import annotations

import os

import numpy as np

from . import _checks, _core
from .errors import LstmRtError
from .text import Tokenizer


def top_k(scores: np.ndarray, k: int, ids: np.ndarray | None = None) -> np.ndarray:
    """Ids of the k largest scores (best first; ties: lower id first; NaN never chosen),
    among `ids` when given: one pass in C, no sort and no softmax of the whole vector
    (~2 µs for 10,000 scores, where numpy's argpartition takes ~70).

    k : int >= 0; a k past the number of candidates (e.g. 10**12) means all of them.
    Returns int64 [min(k, candidates)].
    """
    k = _checks.count("k", k)
    s = np.ascontiguousarray(scores, dtype=np.float32)
    ids = None if ids is None else np.ascontiguousarray(ids, dtype=np.int64)
    return _core.top_k(s, min(k, s.shape[0] if ids is None else ids.shape[0]), ids)


class NextWordPredictor:
    """Incremental next-word suggestions for one text field.

    model : Model (or a path) with one input of token ids and one output of V scores per
            step (logits, log-probabilities from a log_softmax Dense, which are used as they
            are, or probabilities from a softmax Dense); V = len(vocabulary)
    tokenizer : defaults to the one stored in the model file's metadata
    max_checkpoints : int >= 1, states kept for rewinding (one per token; older tokens keep
            one in 64); kept as the text grows, nothing is reserved up front
    """

    def __init__(self, model, tokenizer: Tokenizer | None = None, *, max_checkpoints: int = 4096):
        from .model import Model, load
        if isinstance(model, (str, os.PathLike)):
            model = load(model)
        if not isinstance(model, Model):
            raise LstmRtError(f"NextWordPredictor needs a Model or a model file's path, got "
                              f"{type(model).__name__}")
        self.max_checkpoints = _checks.count("max_checkpoints", max_checkpoints, minimum=1)
        self.model = model
        self.tokenizer = tokenizer or Tokenizer.from_metadata(model.metadata)
        V = len(self.tokenizer)
        ins, outs = model.inputs, model.outputs
        if len(ins) != 1 or not ins[0].dtype.startswith("int") or len(outs) != 1 or outs[0].shape[-1] != V:
            raise LstmRtError(
                f"NextWordPredictor needs a model with one input of token ids and one output of "
                f"{V} scores (the vocabulary's size); this one has inputs "
                f"{[(s.name, s.dtype) for s in ins]} and outputs {[(s.name, s.shape) for s in outs]}")
        last = model.layers[-1]
        self._outputs_probs = getattr(last, "activation", None) == "softmax"
        self._start = self.tokenizer.index.get(self.tokenizer.start) if self.tokenizer.start else None
        if self._start is None:
            raise LstmRtError("the tokenizer's start token is not in the vocabulary; "
                              "NextWordPredictor needs one to predict the first word")
        self._stream = model.stream(1)
        self.reset()

    # ------------------------------------------------------------ state

    def reset(self):
        """An empty text field (the state after the start token)."""
        self._stream.reset()
        self._inputs: list[int] = []                 # the start token, then the text's tokens
        self._checkpoints: list[dict | None] = []   # [j] = state before input j
        self._text = ""
        self._partial = ""
        self._scores = None
        self._lse = None
        self.computed = 0                            # tokens stepped so far (for inspection)
        self._append([self._start])

    @property
    def text(self) -> str:
        return self._text

    @property
    def tokens(self) -> list[str]:
        """The complete tokens of the text (not the partly typed last word)."""
        return [self.tokenizer.vocabulary[i] for i in self._inputs[1:]]

    def _append(self, ids):
        for i in ids:
            self._checkpoints.append(self._stream.state)
            self._scores = self._stream.step(np.array([i], np.int64))[0]
            self._inputs.append(int(i))
            self.computed += 1
            # thin out old checkpoints: beyond the most recent max_checkpoints, keep every 64th
            j = len(self._checkpoints) - self.max_checkpoints - 1
            if j > 0 and j % 64:
                self._checkpoints[j] = None
        self._lse = None

    def _rewind(self, n: int):
        """Keep the first n inputs; restore the state and scores after them."""
        j = n - 1  # the input whose output scores we need
        while self._checkpoints[j] is None:
            j -= 1
        redo = self._inputs[j:n]
        self._stream.state = self._checkpoints[j]
        del self._inputs[j:], self._checkpoints[j:]
        self._append(redo)

    def set_text(self, text: str) -> int:
        """Make the field hold `text`; computes only tokens after the last unchanged one.
        Returns the number of tokens computed."""
        if not isinstance(text, str):
            raise LstmRtError(f"text must be a str, got {type(text).__name__}")
        done, partial = self.tokenizer.split_partial(text)
        ids = self._inputs[:1] + self.tokenizer.encode(done)
        keep = 0
        for a, b in zip(self._inputs, ids):
            if a != b:
                break
            keep += 1
        before = self.computed
        if keep < len(self._inputs):
            self._rewind(max(keep, 1))
        self._append(ids[len(self._inputs):])
        self._text, self._partial = text, partial
        return self.computed - before

    def type(self, chars: str) -> int:
        """Append typed characters; returns the number of tokens computed."""
        if not isinstance(chars, str):
            raise LstmRtError(f"chars must be a str, got {type(chars).__name__}")
        return self.set_text(self._text + chars)

    def backspace(self, n: int = 1) -> int:
        """Delete the last n >= 0 characters (more than the text has: all of it); returns
        the number of tokens computed."""
        n = _checks.count("n", n)
        return self.set_text(self._text[:max(len(self._text) - n, 0)])

    def feed_ids(self, ids) -> int:
        """Append token ids directly (bypassing the text); returns the number computed."""
        try:
            a = np.asarray(ids)
        except (ValueError, TypeError):
            a = None
        if a is None or a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and a.size == 0):
            raise LstmRtError(f"token ids must be integers, got {ids!r:.80}")
        ids = [int(i) for i in a.reshape(-1)]
        bad = [i for i in ids if not 0 <= i < len(self.tokenizer)]
        if bad:
            raise LstmRtError(f"token ids must be in [0, {len(self.tokenizer)}), got {bad[:5]}")
        self._append(ids)
        self._text = self.tokenizer.decode(self._inputs[1:]) + " "
        self._partial = ""
        return len(ids)

    # ------------------------------------------------------------ suggestions

    def _log_scores(self):
        """(scores, log-normalizer): log p(w) = scores[w] - lse."""
        if self._lse is None:
            s = self._scores
            if self._outputs_probs:
                s = self._scores = np.log(np.maximum(s, np.float32(1e-30)))
            m = float(s.max())
            self._lse = m + float(np.log(np.exp(s - m, dtype=np.float64).sum()))
        return self._scores, self._lse

    def _ranked(self, ids, k):
        s, lse = self._log_scores()
        best = top_k(s, k, ids)
        return [(self.tokenizer.vocabulary[i], float(np.exp(s[i] - lse))) for i in best]

    def suggest(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely next words with their probabilities; when the text ends in a
        partly typed word, the k most likely completions of it. k : int >= 0; a k past the
        number of words (e.g. 10**12) gives all of them, best first."""
        if self._partial:
            return self.complete(self._partial, k)
        return self._ranked(self.tokenizer.word_ids, k)

    def complete(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely next words that start with `prefix`, with probabilities
        (k as in `suggest`)."""
        if not isinstance(prefix, str):
            raise LstmRtError(f"prefix must be a str, got {type(prefix).__name__}")
        return self._ranked(self.tokenizer.words_with_prefix(prefix), k)

    def probability(self, word: str) -> float:
        """p(next token = word) in the current context (0.0 for a word not in the vocabulary)."""
        if not isinstance(word, str):
            raise LstmRtError(f"word must be a str, got {type(word).__name__}")
        i = self.tokenizer.index.get(word.lower())
        if i is None:
            return 0.0
        s, lse = self._log_scores()
        return float(np.exp(s[i] - lse))
