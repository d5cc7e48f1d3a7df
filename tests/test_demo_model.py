"""The bundled next-word model (lstm_rt/data/nextword_kjv.lrt, trained by
examples/train_nextword.py): small enough to ship, and really trained."""
import collections
import os

import numpy as np

import lstm_rt
from lstm_rt.cli import DEMO_MODEL
from lstm_rt.nextword import NextWordPredictor
from lstm_rt.text import Tokenizer

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "kjv_heldout_sample.txt")


def test_bundled_model_is_int8_with_its_vocabulary_and_under_8_mb():
    m = lstm_rt.load(DEMO_MODEL)
    assert m.weights == "int8" and os.path.getsize(DEMO_MODEL) <= 8 << 20
    tok = Tokenizer.from_metadata(m.metadata)
    assert 5000 <= len(tok) <= 10000 and m.outputs[0].shape[-1] == len(tok)
    held = m.metadata["heldout"]          # what the training script measured
    assert held["int8_vs_fp32"]["top1_agreement"] >= 0.99


def test_predicts_held_out_text_far_better_than_word_frequencies():
    """On held-out chapters (not trained on), top-3 accuracy is more than 1.6x that of
    always suggesting the sample's own three most frequent tokens."""
    m = lstm_rt.load(DEMO_MODEL)
    tok = Tokenizer.from_metadata(m.metadata)
    with open(SAMPLE, encoding="utf-8") as f:
        ids = [tok.index["."]] + tok.encode(f.read())
    logits = m.run(np.array(ids)[:, None])[:-1, 0]
    y = np.array(ids[1:])
    top3 = np.argsort(-logits, axis=1)[:, :3]
    acc3 = (top3 == y[:, None]).any(axis=1).mean()
    common = [i for i, _ in collections.Counter(y.tolist()).most_common(3)]
    baseline = np.isin(y, common).mean()
    assert acc3 >= 1.6 * baseline and acc3 >= 0.4, (acc3, baseline)


def test_predictor_on_the_bundled_model_agrees_with_a_whole_text_run():
    p = NextWordPredictor(DEMO_MODEL)
    p.set_text("In the beginning God created the heaven and the ")
    m = p.model
    ids = [p.tokenizer.index["."]] + p.tokenizer.encode(p.text)
    s = m.run(np.array(ids)[:, None])[-1, 0]
    best = [p.tokenizer.vocabulary[i] for i in np.argsort(-s) if i in set(p.tokenizer.word_ids.tolist())][:3]
    assert [w for w, _ in p.suggest(3)] == best
