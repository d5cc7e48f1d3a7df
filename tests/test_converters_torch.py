"""converters.from_torch against the PyTorch modules themselves (fp32, max abs error <= 1e-5)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import converters  # noqa: E402
from converters import ConversionError, from_torch  # noqa: E402

ATOL = 1e-5


def t2n(t):
    return t.detach().numpy()


def seeded(fn):
    torch.manual_seed(0)
    return fn().eval()


RECURRENT = [
    ("LSTM", dict()),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(batch_first=True, num_layers=2)),
    ("LSTM", dict(proj_size=3, num_layers=2, bidirectional=True, batch_first=True)),
    ("LSTM", dict(bias=False, dropout=0.3, num_layers=2)),
    ("GRU", dict()),
    ("GRU", dict(num_layers=3, bidirectional=True, batch_first=True)),
    ("GRU", dict(bias=False)),
    ("RNN", dict(nonlinearity="relu", num_layers=2)),
    ("RNN", dict(nonlinearity="tanh", bidirectional=True, batch_first=True)),
]


@pytest.mark.parametrize("cls,kw", RECURRENT, ids=[f"{c}-{'-'.join(map(str, k.values()))}" for c, k in RECURRENT])
def test_recurrent_modules_match_pytorch(cls, kw):
    I, H = 5, 7
    mod = seeded(lambda: getattr(nn, cls)(I, H, **kw))
    m = from_torch(mod)
    rng = np.random.default_rng(1)
    T, B = 6, 3
    bf = kw.get("batch_first", False)
    x = rng.normal(size=(B, T, I) if bf else (T, B, I)).astype(np.float32)
    L = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    Hr = kw.get("proj_size") or H
    h0 = rng.normal(size=(L, B, Hr)).astype(np.float32)   # batch_first never applies to states
    c0 = rng.normal(size=(L, B, H)).astype(np.float32)
    with torch.no_grad():
        if cls == "LSTM":
            out, (hn, cn) = mod(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        else:
            out, hn = mod(torch.from_numpy(x), torch.from_numpy(h0))
    feeds = {"input": x, "h_0": h0}
    if cls == "LSTM":
        feeds["c_0"] = c0
    got = m.run(feeds)
    np.testing.assert_allclose(got["output"], t2n(out), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got["h_n"], t2n(hn), atol=ATOL, rtol=0)
    if cls == "LSTM":
        np.testing.assert_allclose(got["c_n"], t2n(cn), atol=ATOL, rtol=0)
    assert m.inputs[1].shape == (L, None, Hr)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_stepping_a_converted_module_equals_its_full_sequence(cls):
    mod = seeded(lambda: getattr(nn, cls)(4, 9, num_layers=2))
    m = from_torch(mod)
    x = np.random.default_rng(2).normal(size=(11, 2, 4)).astype(np.float32)
    with torch.no_grad():
        out = mod(torch.from_numpy(x))[0]
    s = m.stream(batch=2)
    steps = [s.step({"input": x[t]}) for t in range(11)]
    np.testing.assert_allclose(np.stack([o["output"] for o in steps]), t2n(out), atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells(cls):
    mod = seeded(lambda: getattr(nn, cls)(5, 6))
    m = from_torch(mod)
    rng = np.random.default_rng(3)
    x, h, c = (rng.normal(size=s).astype(np.float32) for s in ((4, 5), (4, 6), (4, 6)))
    with torch.no_grad():
        want = mod(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)) if cls == "LSTMCell"
                   else torch.from_numpy(h))
    feeds = {"input": x, "hx": h} | ({"cx": c} if cls == "LSTMCell" else {})
    got = m.run(feeds)
    if cls == "LSTMCell":
        np.testing.assert_allclose(got["h"], t2n(want[0]), atol=ATOL, rtol=0)
        np.testing.assert_allclose(got["c"], t2n(want[1]), atol=ATOL, rtol=0)
    else:
        np.testing.assert_allclose(got["h"], t2n(want), atol=ATOL, rtol=0)


class LanguageModel(nn.Module):
    def __init__(self, vocab=50, emb=8, hidden=12, cell="LSTM", batch_first=True):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.rnn = getattr(nn, cell)(emb, hidden, batch_first=batch_first, num_layers=2)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, state=None):
        y, state = self.rnn(self.embed(ids), state)
        return self.head(self.drop(y)), state


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_language_model_module(cell, batch_first):
    mod = seeded(lambda: LanguageModel(cell=cell, batch_first=batch_first))
    m = from_torch(mod)
    ids = np.random.default_rng(4).integers(0, 50, size=(3, 10) if batch_first else (10, 3))
    with torch.no_grad():
        want = t2n(mod(torch.from_numpy(ids))[0])
    np.testing.assert_allclose(m.run(ids), want, atol=ATOL, rtol=0)
    s = m.stream(batch=3)
    steps = [s.step(ids[:, t] if batch_first else ids[t]) for t in range(10)]
    np.testing.assert_allclose(np.stack(steps, axis=1 if batch_first else 0), want, atol=ATOL, rtol=0)


def test_state_dict_file(tmp_path):
    trained = seeded(lambda: LanguageModel())
    torch.save(trained.state_dict(), tmp_path / "lm.pt")
    torch.manual_seed(123)
    fresh = LanguageModel().eval()
    m = from_torch(fresh, state_dict=tmp_path / "lm.pt")
    ids = np.random.default_rng(5).integers(0, 50, size=(2, 7))
    with torch.no_grad():
        want = t2n(trained(torch.from_numpy(ids))[0])
    np.testing.assert_allclose(m.run(ids), want, atol=ATOL, rtol=0)
    with pytest.raises(ConversionError, match="from_torch"):
        converters.convert(tmp_path / "lm.pt")


def test_pickled_module_files_are_refused(tmp_path):
    torch.save(seeded(lambda: LanguageModel()), tmp_path / "whole.pt")  # a pickled module
    with pytest.raises(ConversionError, match="weights-only"):
        from_torch(LanguageModel(), state_dict=tmp_path / "whole.pt")


def test_sequential_feed_forward():
    mod = seeded(lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 3), nn.Softmax(dim=-1)))
    m = from_torch(mod)
    x = np.random.default_rng(6).normal(size=(5, 2, 4)).astype(np.float32)
    with torch.no_grad():
        want = t2n(mod(torch.from_numpy(x)))
    np.testing.assert_allclose(m.run(x), want, atol=ATOL, rtol=0)


def test_unsupported_modules_are_named():
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 3, 3)
            self.norm = nn.LayerNorm(3)

        def forward(self, x):
            return self.norm(self.conv(x))
    with pytest.raises(ConversionError, match="Conv1d.*LayerNorm"):
        from_torch(Weird())


def test_a_forward_that_computes_something_else_is_caught():
    """A subclass of nn.LSTM with its own forward() is read as an LSTM; the check run of
    the module against the conversion catches the difference."""
    class Doubled(nn.LSTM):
        def forward(self, x, hx=None):
            y, state = super().forward(x, hx)
            return 2 * y, state

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = Doubled(3, 4)

        def forward(self, x):
            return self.rnn(x)[0]
    with pytest.raises(ConversionError, match="computes something else"):
        from_torch(seeded(Model))
