"""Encoder -> decoder handoff (Stream.take_state) on a small trained PyTorch seq2seq model:
lstm_rt's greedy decode equals PyTorch's token for token, logits within 1e-5 at every step."""
import numpy as np
import pytest

from lstm_rt.errors import ShapeError

torch = pytest.importorskip("torch")
nn = torch.nn
from converters import from_torch  # noqa: E402

V, E, H, L, BOS = 12, 16, 32, 6, 1   # tokens 2..11 are digits; the task: reverse the digits


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H)

    def forward(self, ids, state=None):
        return self.lstm(self.embedding(ids), state)[0]


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H)
        self.head = nn.Linear(H, V)

    def forward(self, ids, state=None):
        return self.head(self.lstm(self.embedding(ids), state)[0])


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    enc, dec = Encoder(), Decoder()
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)
    for _ in range(250):   # a few seconds: enough to learn most reversals
        src = torch.randint(2, V, (L, 64))
        tgt = src.flip(0)
        _, state = enc.lstm(enc.embedding(src))
        dec_in = torch.cat([torch.full((1, 64), BOS), tgt[:-1]])
        y, _ = dec.lstm(dec.embedding(dec_in), state)
        loss = nn.functional.cross_entropy(dec.head(y).reshape(-1, V), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval(), dec.eval()


def torch_greedy(enc, dec, src):
    with torch.no_grad():
        _, state = enc.lstm(enc.embedding(torch.from_numpy(src)[:, None]))
        tok, out, logits = BOS, [], []
        for _ in range(L):
            y, state = dec.lstm(dec.embedding(torch.tensor([[tok]])), state)
            s = dec.head(y)[0, 0].numpy()
            tok = int(s.argmax())
            out.append(tok)
            logits.append(s)
    return out, np.array(logits)


def test_greedy_decode_matches_pytorch_token_for_token(trained):
    enc_t, dec_t = trained
    enc, dec = from_torch(enc_t), from_torch(dec_t)
    rng = np.random.default_rng(0)
    correct = 0
    for _ in range(20):
        src = rng.integers(2, V, size=L)
        es = enc.stream()
        es.feed(src[:, None])
        ds = dec.stream()
        ds.take_state(es)
        tok, out, logits = BOS, [], []
        for _ in range(L):
            s = ds.step(np.array([tok]))[0]
            tok = int(s.argmax())
            out.append(tok)
            logits.append(s)
        want, want_logits = torch_greedy(enc_t, dec_t, src)
        assert out == want
        np.testing.assert_allclose(np.array(logits), want_logits, atol=1e-5, rtol=0)
        correct += out == src[::-1].tolist()
    assert correct >= 10   # the model really learned the task: a real decode, not noise


def test_take_state_rejects_mismatched_models(trained):
    enc, dec = from_torch(trained[0]), from_torch(trained[1])
    torch.manual_seed(1)
    other = from_torch(nn.Sequential(nn.Embedding(V, E), nn.GRU(E, H)))
    with pytest.raises(ShapeError, match="take_state: LSTM"):
        dec.stream().take_state(other.stream())
    with pytest.raises(ShapeError, match="recurrent layers"):
        dec.stream().take_state(from_torch(nn.Sequential(nn.Embedding(V, E), nn.LSTM(E, H, 2))).stream())
    with pytest.raises(ShapeError, match="needs a Stream"):
        dec.stream().take_state(enc)
