"""PyTorch modules written the way people write them (the forms converters must read),
shared by the from_torch and the torch.onnx.export tests. Small sizes: I = 3, H = 4.

Each module declares its children in an order that differs from the dataflow on purpose."""
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence   # pad_packed_sequence as nn.utils.rnn.*: both ways

I, H, V = 3, 4, 20


class Heads(nn.Module):
    """A stacked batch-first LSTM read three ways: a log_softmax tagger over y, a
    classifier on h_n[-1], and one on the last step y[:, -1, :]."""

    def __init__(self, cell="LSTM", batch_first=True):
        super().__init__()
        self.tag = nn.Linear(H, 5)          # declared before the recurrent layer
        self.cls = nn.Linear(H, 2)
        self.last = nn.Linear(H, 3)
        self.rnn = getattr(nn, cell)(I, H, num_layers=2, batch_first=batch_first)
        self.batch_first, self.lstm = batch_first, cell == "LSTM"

    def forward(self, x):
        y, state = self.rnn(x)
        h_n = state[0] if self.lstm else state
        last = y[:, -1, :] if self.batch_first else y[-1]
        return torch.log_softmax(self.tag(y), dim=-1), self.cls(h_n[-1]), self.last(last)


class EmbeddingClassifier(nn.Module):
    """Embedding(padding_idx=0) -> bidirectional GRU -> Linear on h_n[-1] and on the last
    layer's two directions concatenated; the Embedding is declared last."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(H, 3)
        self.both = nn.Linear(2 * H, 3)
        self.gru = nn.GRU(6, H, num_layers=2, bidirectional=True, batch_first=True)
        self.emb = nn.Embedding(V, 6, padding_idx=0)

    def forward(self, ids):
        _, h_n = self.gru(self.emb(ids))
        return self.fc(h_n[-1]), torch.softmax(self.both(torch.cat((h_n[-2], h_n[-1]), dim=1)), dim=-1)


class PackedTagger(nn.Module):
    """forward(x, lengths) through pack_padded_sequence / pad_packed_sequence: per-step
    scores and a classifier on the final states."""

    def __init__(self, enforce_sorted=True, cell="LSTM"):
        super().__init__()
        self.fc = nn.Linear(H, 2)
        self.rnn = getattr(nn, cell)(I, H, num_layers=2, batch_first=True)
        self.enforce_sorted, self.lstm = enforce_sorted, cell == "LSTM"

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=self.enforce_sorted)
        out, state = self.rnn(packed)
        h_n = state[0] if self.lstm else state
        y, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return self.fc(y), self.fc(h_n[-1])


class LanguageModel(nn.Module):
    """The usual LM: Embedding -> LSTM -> Linear -> log_softmax, returning its state too
    (declared head first)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(H, V)
        self.drop = nn.Dropout(0.3)
        self.lstm = nn.LSTM(6, H, batch_first=True)
        self.embed = nn.Embedding(V, 6)

    def forward(self, ids, state=None):
        y, state = self.lstm(self.drop(self.embed(ids)), state)
        return nn.functional.log_softmax(self.head(self.drop(y)), dim=-1), state


class TimeMajor(nn.Module):
    """A time-major LSTM with zero initial states built from x.size(1), read at the last
    step y[-1] and per step."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(I, H)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        zeros = torch.zeros(1, x.size(1), H, device=x.device)
        y, _ = self.lstm(x, (zeros, zeros))
        return self.fc(y), self.fc(y[-1])


class StartState(nn.Module):
    """forward(x, h0): a GRU started from a given state."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(I, H, num_layers=2)
        self.out = nn.Linear(H, 2)

    def forward(self, x, h0):
        y, h_n = self.gru(x, h0)
        return torch.tanh(self.out(y)), h_n


class Branches(nn.Module):
    """Two recurrent branches over one embedding, joined: + and * of sequences, torch.cat,
    F.linear with the embedding table as a tied output layer, h_n.squeeze(0)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, H)
        self.a = nn.GRU(H, H)
        self.b = nn.LSTM(H, H)
        self.mix = nn.Linear(2 * H, 5)

    def forward(self, ids):
        e = self.emb(ids)
        ya, ha = self.a(e)
        yb, (hb, _) = self.b(e)
        mixed = self.mix(torch.cat([ya + yb, ya * yb], dim=-1))
        tied = nn.functional.linear(ya, self.emb.weight)
        return mixed, tied, torch.cat((ha.squeeze(0), hb[-1]), dim=1)


def seeded(cls, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(*args, **kwargs).eval()
