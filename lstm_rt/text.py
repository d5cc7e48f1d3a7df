"""Tokenizers for the text apps: how text becomes token ids and back.

A model file carries its tokenizer in `Model.metadata["tokenizer"]` (a small JSON dict)
and its vocabulary in `Model.metadata["vocabulary"]` (a list of token strings, index =
token id), so the apps need nothing but the .lrt file.

Word tokenizer (kind "words"), the rules in full:
  - text is lowercased;
  - a word is a run of letters a-z, with inner apostrophes kept ("lord's");
    a number is a run of digits; the punctuation marks . , ; : ? ! are tokens of their own;
  - every other character (spaces, quotes, brackets, dashes, accents) only separates tokens;
  - a word missing from the vocabulary becomes the unknown token (default "<unk>");
  - a text starts as if after the `start` token (default "."), i.e. at a sentence start.
Char tokenizer (kind "chars"): one token per character; characters missing from the
vocabulary become the unknown token when there is one, else they are an error.
"""
from __future__ import annotations

import bisect
import re

import numpy as np

from .errors import LstmRtError

PUNCTUATION = ".,;:?!"
_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]+|[.,;:?!]")
_PARTIAL_RE = re.compile(r"[a-z0-9']+$")


class Tokenizer:
    """Text <-> token ids over a fixed vocabulary (index = id)."""

    def __init__(self, vocabulary, kind="words", unknown="<unk>", start="."):
        if kind not in ("words", "chars"):
            raise LstmRtError(f"tokenizer kind must be 'words' or 'chars', got {kind!r}")
        vocab = [str(w) for w in vocabulary]
        if not vocab:
            raise LstmRtError("the vocabulary is empty")
        self.kind = kind
        self.vocabulary = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        if len(self.index) != len(vocab):
            raise LstmRtError("the vocabulary has duplicate tokens")
        self.unknown = unknown if unknown in self.index else None
        self.start = start if start in self.index else None
        # ids of real words (what a keyboard may suggest), sorted by spelling so that the
        # words with a given prefix form one contiguous range
        words = [i for i, w in enumerate(vocab) if self._is_word(w)]
        words.sort(key=lambda i: vocab[i])
        self.word_ids = np.array(words, dtype=np.int64)
        self._sorted_words = [vocab[i] for i in words]

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Tokenizer":
        """The tokenizer a model file describes; a clear error when it has none."""
        vocab = metadata.get("vocabulary")
        if not isinstance(vocab, list):
            raise LstmRtError("this model stores no vocabulary (metadata['vocabulary']); "
                              "pass one, e.g. Tokenizer(words)")
        conf = metadata.get("tokenizer") or {}
        return cls(vocab, kind=conf.get("kind", "words"), unknown=conf.get("unknown", "<unk>"),
                   start=conf.get("start", "."))

    def to_metadata(self) -> dict:
        return {"vocabulary": list(self.vocabulary),
                "tokenizer": {"kind": self.kind, "unknown": self.unknown, "start": self.start}}

    def __len__(self):
        return len(self.vocabulary)

    def _is_word(self, token: str) -> bool:
        if self.kind == "chars":
            return token != self.unknown
        return bool(token) and token != self.unknown and token not in PUNCTUATION \
            and not (token.startswith("<") and token.endswith(">"))

    def split(self, text: str) -> list[str]:
        """The token strings of `text` (before the vocabulary lookup)."""
        if self.kind == "chars":
            return list(text)
        return _WORD_RE.findall(text.lower())

    def split_partial(self, text: str) -> tuple[str, str]:
        """(complete part, partial last word): "and the ear" -> ("and the ", "ear");
        a text ending in a space or punctuation has an empty partial word."""
        if self.kind == "chars":
            return text, ""
        m = _PARTIAL_RE.search(text.lower())
        return (text[:m.start()], m.group()) if m else (text, "")

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; unknown tokens map to the unknown id."""
        out = []
        for tok in self.split(text):
            i = self.index.get(tok, self.index.get(self.unknown) if self.unknown else None)
            if i is None:
                raise LstmRtError(f"{tok!r} is not in the vocabulary and it has no unknown token")
            out.append(i)
        return out

    def decode(self, ids) -> str:
        """Text of token ids: words joined by spaces, punctuation attached to the word before."""
        toks = [self.vocabulary[int(i)] for i in ids]
        if self.kind == "chars":
            return "".join(toks)
        out = ""
        for t in toks:
            out += t if (t in PUNCTUATION and t) or not out else " " + t
        return out

    def words_with_prefix(self, prefix: str) -> np.ndarray:
        """Ids of the vocabulary's words that start with `prefix` (lowercased)."""
        p = prefix.lower()
        lo = bisect.bisect_left(self._sorted_words, p)
        hi = bisect.bisect_left(self._sorted_words, p + "\U0010ffff")
        return self.word_ids[lo:hi]
