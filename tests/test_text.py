"""lstm_rt.text: the tokenizer rules the apps document."""
import pytest

from lstm_rt.errors import LstmRtError
from lstm_rt.text import Tokenizer

VOCAB = ["<unk>", ".", ",", "?", "and", "the", "lord", "lord's", "light", "lie", "life", "7"]


def test_word_rules_lowercase_punctuation_unknown():
    tok = Tokenizer(VOCAB)
    assert tok.split("And THE Lord's light, (unseen)!  7?") == \
        ["and", "the", "lord's", "light", ",", "unseen", "!", "7", "?"]
    ids = tok.encode("And the darkness.")
    assert [tok.vocabulary[i] for i in ids] == ["and", "the", "<unk>", "."]
    assert tok.decode(tok.encode("and the lord, light.")) == "and the lord, light."


def test_partial_word_and_prefix_ranges():
    tok = Tokenizer(VOCAB)
    assert tok.split_partial("and the Li") == ("and the ", "li")
    assert tok.split_partial("and the ") == ("and the ", "")
    assert tok.split_partial("and the,") == ("and the,", "")
    got = sorted(tok.vocabulary[i] for i in tok.words_with_prefix("li"))
    assert got == ["lie", "life", "light"]
    assert sorted(tok.vocabulary[i] for i in tok.words_with_prefix("lord")) == ["lord", "lord's"]
    assert len(tok.words_with_prefix("zz")) == 0
    # suggestions never include punctuation or the unknown token
    words = {tok.vocabulary[i] for i in tok.words_with_prefix("")}
    assert not words & {"<unk>", ".", ",", "?"}


def test_metadata_round_trip_and_errors():
    tok = Tokenizer(VOCAB, start=".")
    back = Tokenizer.from_metadata(tok.to_metadata())
    assert back.vocabulary == tok.vocabulary and back.start == "." and back.unknown == "<unk>"
    with pytest.raises(LstmRtError, match="no vocabulary"):
        Tokenizer.from_metadata({})
    with pytest.raises(LstmRtError, match="duplicate"):
        Tokenizer(["a", "a"])
    chars = Tokenizer(list("ab "), kind="chars")
    assert chars.decode(chars.encode("ab ba")) == "ab ba"
    with pytest.raises(LstmRtError, match="not in the vocabulary"):
        chars.encode("abc")

