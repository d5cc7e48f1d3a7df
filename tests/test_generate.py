"""generate(): deterministic per seed; every sampled token is legal under top_k and the
temperature; greedy decoding equals argmax of whole-sequence runs."""
import numpy as np
import pytest

from lstm_rt.errors import LstmRtError
from lstm_rt.generate import generate, sample_next
from lstm_rt.text import Tokenizer
from util import language_model

CHARS = list("abcdefgh .")
WORDS = ["<unk>", ".", ",", "and", "the", "lord", "said", "let", "there", "be", "light", "day", "night"]


def scores_after(model, ids):
    return model.run(np.array(ids, np.int64)[:, None])[-1, 0]


def test_greedy_equals_argmax_of_whole_runs():
    m = language_model(CHARS, tokenizer="chars", kind="GRU")
    out = generate(m, [0, 1, 2], 12, temperature=0)
    ids = [0, 1, 2]
    for tok in out:
        assert tok == int(np.argmax(scores_after(m, ids)))
        ids.append(tok)


@pytest.mark.parametrize("top_k", [None, 3])
def test_seeded_sampling_is_deterministic_and_within_top_k(top_k):
    m = language_model(CHARS, tokenizer="chars")
    a = generate(m, "abc", 30, temperature=1.3, top_k=top_k, seed=7)
    b = generate(m, "abc", 30, temperature=1.3, top_k=top_k, seed=7)
    c = generate(m, "abc", 30, temperature=1.3, top_k=top_k, seed=8)
    assert isinstance(a, str) and len(a) == 30 and a == b and a != c
    if top_k:
        tok = Tokenizer(CHARS, kind="chars")
        ids = tok.encode("abc")
        for t in tok.encode(a):
            s = scores_after(m, ids)
            assert t in np.argsort(-s)[:top_k]
            ids.append(t)


def test_sampling_follows_the_softmax():
    """Empirical frequencies of sample_next match softmax(scores / T) (chi-square-free check:
    each probability within 4 standard errors over 20000 draws)."""
    s = np.array([1.0, 0.2, -0.5, 2.0], np.float32)
    rng = np.random.default_rng(0)
    for T in (0.5, 1.0, 2.0):
        p = np.exp(s / T) / np.exp(s / T).sum()
        draws = np.bincount([sample_next(s, rng, T) for _ in range(20000)], minlength=4) / 20000
        assert np.all(np.abs(draws - p) <= 4 * np.sqrt(p * (1 - p) / 20000) + 1e-9)


def test_word_level_text_and_stop_token():
    m = language_model(WORDS)
    text = generate(m, "And the lord said", 15, seed=3, top_k=5)
    assert text.startswith((" ", ".", ",")) and len(Tokenizer(WORDS).split(text)) == 15
    out = generate(m, "the", 200, seed=1, stop=".")
    assert len(out) < 200 * 6 and (out.endswith(".") or len(Tokenizer(WORDS).split(out)) == 200)


def test_bad_arguments():
    m = language_model(CHARS, tokenizer="chars")
    for kw, msg in [(dict(temperature=-1), "temperature"), (dict(top_k=0), "top_k")]:
        with pytest.raises(LstmRtError, match=msg):
            generate(m, "ab", 3, **kw)
    with pytest.raises(LstmRtError, match="n must be"):
        generate(m, "ab", -1)
    with pytest.raises(LstmRtError, match="empty"):
        generate(m, "", 3)
    with pytest.raises(LstmRtError, match="NaN"):
        sample_next(np.array([np.nan, 1.0]), np.random.default_rng(0))
