"""NextWordPredictor against the model run on the whole text (the truth), and its
incremental bookkeeping: only new tokens are computed; edits rewind to checkpoints."""
import numpy as np
import pytest

from lstm_rt.errors import LstmRtError, ShapeError
from lstm_rt.nextword import NextWordPredictor, top_k
from lstm_rt.text import Tokenizer
from util import language_model

WORDS = ["<unk>", ".", ",", "?", "and", "the", "lord", "said", "let", "there", "be", "light",
         "lie", "life", "god", "saw", "was", "good", "day", "night"]


def truth(model, text):
    """log-probabilities after `text`'s complete tokens, from a whole-sequence run."""
    tok = Tokenizer.from_metadata(model.metadata)
    done, _ = tok.split_partial(text)
    ids = [tok.index["."]] + tok.encode(done)
    s = model.run(np.array(ids, np.int64)[:, None])[-1, 0].astype(np.float64)
    return s - (s.max() + np.log(np.exp(s - s.max()).sum())), tok


def check(p, model, k=5):
    logp, tok = truth(model, p.text)
    _, partial = tok.split_partial(p.text)
    cand = tok.words_with_prefix(partial) if partial else tok.word_ids
    want = sorted(((tok.vocabulary[i], np.exp(logp[i])) for i in cand), key=lambda t: -t[1])[:k]
    got = p.suggest(k)
    assert [w for w, _ in got] == [w for w, _ in want]
    np.testing.assert_allclose([q for _, q in got], [q for _, q in want], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_suggestions_match_a_whole_text_run(kind):
    m = language_model(WORDS, kind=kind)
    p = NextWordPredictor(m)
    check(p, m)
    for chunk in ["And God", " said, let", " there be ", "li", "g", "ht."]:
        p.type(chunk)
        check(p, m)
    assert p.tokens == ["and", "god", "said", ",", "let", "there", "be", "light", "."]


def test_only_new_tokens_are_computed_and_edits_rewind():
    m = language_model(WORDS)
    p = NextWordPredictor(m)
    assert p.set_text("and god said, let there be ") == 7
    assert p.type("light ") == 1            # one new token
    assert p.type("an") == 0                # a partial word computes nothing
    assert p.backspace(2) == 0
    assert p.backspace(6) == 1              # drops "light": one step re-scores "be"
    check(p, m)
    n = p.set_text("and god saw, let there be ")   # an edit in the middle
    assert n == 6                           # rewinds to "and", recomputes from "god"
    check(p, m)
    assert p.set_text("") == 1 and p.tokens == []
    check(p, m)


def test_checkpoint_thinning_still_rewinds_exactly():
    m = language_model(WORDS)
    p = NextWordPredictor(m, max_checkpoints=4)
    text = "and the lord said, let there be light and the day was good and the night was good "
    p.set_text(text)
    kept = sum(c is not None for c in p._checkpoints)
    assert kept <= 4 + 1 + len(p._checkpoints) // 64     # memory stays bounded for long texts
    p.set_text(text[:12])      # far back: before the kept checkpoints
    check(p, m)
    p.set_text(text)
    check(p, m)


def test_complete_probability_and_softmax_models():
    m = language_model(WORDS, softmax=True)
    p = NextWordPredictor(m)
    p.set_text("and god ")
    logp, tok = truth(language_model(WORDS, softmax=False), "and god ")
    got = p.complete("l", k=10)
    assert {w for w, _ in got} == {"lord", "let", "light", "lie", "life"}
    for w, q in got:
        np.testing.assert_allclose(q, np.exp(logp[tok.index[w]]), atol=1e-5)
    assert p.probability("nonexistent") == 0.0
    assert p.complete("zzz") == []


def test_log_softmax_heads_are_log_probabilities():
    """A log_softmax head (PyTorch's usual LM head) gives the same words and probabilities
    as the same model with a plain logits head."""
    text = "and the lord said, let "
    logits, logp = NextWordPredictor(language_model(WORDS)), NextWordPredictor(language_model(WORDS, head="log_softmax"))
    for p in (logits, logp):
        p.set_text(text)
    for (w1, q1), (w2, q2) in zip(logits.suggest(5), logp.suggest(5)):
        assert w1 == w2
        np.testing.assert_allclose(q2, q1, atol=1e-6)
    np.testing.assert_allclose(logp.probability("light"), logits.probability("light"), atol=1e-6)


def test_top_k_is_ordered_and_restricted():
    s = np.array([0.1, 3.0, -1.0, 2.0, 2.5], np.float32)
    assert top_k(s, 3).tolist() == [1, 4, 3]
    assert top_k(s, 2, np.array([0, 2, 3])).tolist() == [3, 0]
    assert top_k(s, 10).tolist() == [1, 4, 3, 0, 2]
    assert top_k(s, 0).tolist() == [] and top_k(s, 3, np.array([], np.int64)).tolist() == []


@pytest.mark.parametrize("n,k", [(1, 1), (10, 3), (10000, 3), (10000, 64), (257, 300)])
def test_top_k_equals_a_stable_full_sort(n, k):
    rng = np.random.default_rng(n + k)
    s = rng.integers(-20, 20, size=n).astype(np.float32)      # many ties
    want = np.argsort(-s, kind="stable")[:k]
    assert top_k(s, k).tolist() == want.tolist()
    ids = rng.permutation(n)[: n // 2 + 1]
    sub = ids[np.argsort(-s[ids], kind="stable")]
    got = top_k(s, k, ids)
    assert [s[i] for i in got] == [s[i] for i in sub[:k]]    # same scores, best first
    assert set(got) <= set(ids.tolist())


def test_top_k_skips_nan_and_checks_ids():
    s = np.array([np.nan, 1.0, np.nan, 3.0, -np.inf], np.float32)
    assert top_k(s, 5).tolist() == [3, 1, 4]
    # long enough for the 8-wide scan: NaN blocks, ties across blocks, a ragged tail
    rng = np.random.default_rng(5)
    long = rng.integers(-9, 9, size=1003).astype(np.float32)
    long[rng.integers(0, 1003, size=200)] = np.nan
    want = [i for i in np.argsort(-np.nan_to_num(long, nan=-np.inf), kind="stable") if not np.isnan(long[i])]
    assert top_k(long, 40).tolist() == want[:40]
    with pytest.raises(ShapeError, match="out of range"):
        top_k(s, 2, np.array([0, 5]))


def test_bad_models_and_inputs():
    from util import random_layer, sequence_model
    with pytest.raises(LstmRtError, match="token ids"):
        NextWordPredictor(sequence_model(random_layer("LSTM", 3, 4, rng=np.random.default_rng(0))),
                          Tokenizer(WORDS))
    m = language_model(WORDS)
    with pytest.raises(LstmRtError, match="scores"):
        NextWordPredictor(m, Tokenizer(WORDS[:-1]))
    p = NextWordPredictor(m)
    with pytest.raises(LstmRtError, match="must be a str"):
        p.set_text(3)
    with pytest.raises(LstmRtError, match="token ids"):
        p.feed_ids([0, 99])
    p.feed_ids([4, 5])
    assert p.tokens == ["and", "the"]
    check(p, m)


# ------------------------------------------------------------ absurd arguments

@pytest.mark.parametrize("k", [-1, None, 2.5, "3", True])
def test_a_k_that_is_no_count_is_refused_naming_k(k):
    p = NextWordPredictor(language_model(WORDS))
    p.set_text("and the ")
    with pytest.raises(LstmRtError, match=r"\bk must be"):
        p.suggest(k)
    with pytest.raises(LstmRtError, match=r"\bk must be"):
        p.complete("l", k)
    with pytest.raises(LstmRtError, match=r"\bk must be"):
        top_k(np.zeros(4, np.float32), k)


def test_a_huge_k_means_every_candidate():
    """k past the number of candidates (10**12 here) clamps: no overflow, no allocation."""
    p = NextWordPredictor(language_model(WORDS))
    p.set_text("and the ")
    every = p.suggest(len(WORDS))
    assert p.suggest(10**12) == every and len(every) == len(p.tokenizer.word_ids)
    assert p.complete("l", 10**12) == p.complete("l", len(WORDS)) and len(p.complete("l", 10**12)) == 5
    assert p.suggest(np.int64(2)) == every[:2] and p.suggest(0) == []
    s = np.array([0.1, 3.0, -1.0], np.float32)
    assert top_k(s, 10**12).tolist() == [1, 0, 2] and top_k(s, 2**64).tolist() == [1, 0, 2]


@pytest.mark.parametrize("value", [-1, None, 0, 2.5, "3", True])
def test_max_checkpoints_must_be_a_positive_count(value):
    with pytest.raises(LstmRtError, match="max_checkpoints must be"):
        NextWordPredictor(language_model(WORDS), max_checkpoints=value)
    assert NextWordPredictor(language_model(WORDS), max_checkpoints=10**12).suggest(1)   # allocates nothing up front


def test_text_arguments_of_the_wrong_kind_are_refused_naming_them():
    p = NextWordPredictor(language_model(WORDS))
    p.set_text("and the ")
    for call, match in [(lambda: p.type(None), "chars must be a str"),
                        (lambda: p.backspace(None), "n must be"),
                        (lambda: p.backspace(-1), "n must be"),
                        (lambda: p.backspace(1.5), "n must be"),
                        (lambda: p.complete(None), "prefix must be a str"),
                        (lambda: p.probability(None), "word must be a str"),
                        (lambda: p.feed_ids(["a"]), "token ids must be integers"),
                        (lambda: p.feed_ids([1.7]), "token ids must be integers"),
                        (lambda: p.feed_ids(None), "token ids must be integers")]:
        with pytest.raises(LstmRtError, match=match):
            call()
    assert p.text == "and the " and p.tokens == ["and", "the"]   # nothing changed on the way
    p.backspace(10**12)                                          # more than there is: all of it
    assert p.text == "" and p.tokens == []
