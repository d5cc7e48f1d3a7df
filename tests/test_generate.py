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


def test_log_softmax_heads_sample_like_logits():
    """log-probabilities are logits that are already normalized: the same seed gives the
    same text with a log_softmax head as with the plain logits head."""
    a = generate(language_model(CHARS, tokenizer="chars"), "abc", 25, temperature=0.9, top_k=4, seed=2)
    b = generate(language_model(CHARS, tokenizer="chars", head="log_softmax"), "abc", 25, temperature=0.9,
                 top_k=4, seed=2)
    assert a == b


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


@pytest.mark.parametrize("kw, name", [
    (dict(seed=-1), "seed"), (dict(seed="x"), "seed"), (dict(seed=2.5), "seed"), (dict(seed=True), "seed"),
    (dict(temperature=None), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(temperature="1"), "temperature"), (dict(temperature=True), "temperature"),
    (dict(top_k=2.5), "top_k"), (dict(top_k="3"), "top_k"), (dict(top_k=-1), "top_k"), (dict(top_k=True), "top_k"),
    (dict(n=None), "n"), (dict(n=True), "n"), (dict(n=2.5), "n"),
    (dict(prompt=None), "prompt"), (dict(prompt=[1.5]), "prompt"), (dict(prompt=[[0, 1]]), "prompt"),
    (dict(stop="zz"), "stop"), (dict(stop=99), "stop"), (dict(model=None), "model"),
])
def test_absurd_arguments_are_refused_naming_them(kw, name):
    args = dict(model=language_model(CHARS, tokenizer="chars"), prompt="ab", n=3)
    args.update(kw)
    model, prompt, n = args.pop("model"), args.pop("prompt"), args.pop("n")
    with pytest.raises(LstmRtError, match=rf"\b{name} must be|\b{name} .*vocabulary"):
        generate(model, prompt, n, **args)


def test_top_k_past_the_vocabulary_means_every_token():
    """top_k >= V (10**12 here) samples among all tokens: the same draws as top_k=None."""
    m = language_model(CHARS, tokenizer="chars")
    every = generate(m, "abc", 25, temperature=1.2, seed=4)
    assert generate(m, "abc", 25, temperature=1.2, seed=4, top_k=10**12) == every
    assert generate(m, "abc", 25, temperature=1.2, seed=4, top_k=len(CHARS)) == every
    s = np.array([1.0, 0.2, -0.5, 2.0], np.float32)
    assert sample_next(s, np.random.default_rng(0), 1.0, 10**12) == sample_next(s, np.random.default_rng(0), 1.0)


def test_a_huge_n_is_an_upper_bound_not_an_allocation():
    """n = 10**12 with a stop token: nothing of size n is allocated; generation ends at stop."""
    import tracemalloc
    m = language_model(CHARS, tokenizer="chars")
    first = generate(m, [0, 1], 1, temperature=0)[0]
    tracemalloc.start()
    out = generate(m, [0, 1], 10**12, temperature=0, stop=first)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out == [first] and peak < 1 << 20
    tok = Tokenizer(CHARS, kind="chars")
    assert generate(m, [0, 1], 5, temperature=0, stop=tok.vocabulary[first]) == [first]   # a str stop with ids
