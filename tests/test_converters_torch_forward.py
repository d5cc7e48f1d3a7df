"""from_torch reads forward() (torch.fx), not the order of the children: each module of
torch_forms converts, matches PyTorch within 1e-5 on the same weights and inputs (at a
batch and length other than the check run's), and streams with step == run; the module is
left as it was; what cannot be converted is refused in one short message."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from converters import ConversionError, from_torch  # noqa: E402
from torch_forms import (H, I, V, Branches, EmbeddingClassifier, Heads, LanguageModel,  # noqa: E402
                         PackedTagger, StartState, TimeMajor, seeded)

ATOL = 1e-5
T, B = 7, 4


def outputs_of(module, *args):
    """PyTorch's outputs as a list, the returned states left out (as the conversion does)."""
    with torch.no_grad():
        out = module(*(torch.from_numpy(a) for a in args))
    out = list(out) if isinstance(out, tuple) else [out]
    return [o.numpy() for o in out if isinstance(o, torch.Tensor)]


def as_list(got):
    return list(got.values()) if isinstance(got, dict) else [got]


def assert_close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


def assert_steps_equal_runs(model, x, batch_first):
    """Stream.step at every t gives what Model.run gives: per-step outputs at step t, last
    outputs ([B, F], h_n[k] or y[:, -1]) those of the prefix up to t."""
    s = model.stream(batch=x.shape[0 if batch_first else 1])
    n = x.shape[1 if batch_first else 0]
    whole = as_list(model.run(x))
    for t in range(n):
        step = as_list(s.step(x[:, t] if batch_first else x[t]))
        prefix = as_list(model.run(x[:, :t + 1] if batch_first else x[:t + 1]))
        for spec, got, run_all, run_prefix in zip(model.outputs, step, whole, prefix):
            if len(spec.shape) == 3:   # a sequence: step t of the whole run
                want = run_all[:, t] if batch_first else run_all[t]
            else:
                want = run_prefix
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


# ----------------------------------------------------------------- the forms

@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_heads_on_y_h_n_and_the_last_step(cell):
    mod = seeded(Heads, cell)
    m = from_torch(mod)
    x = np.random.default_rng(0).normal(size=(B, T, I)).astype(np.float32)
    assert_close(as_list(m.run(x)), outputs_of(mod, x))
    assert [s.name for s in m.outputs] == ["output", "output_1", "output_2"]
    assert m.layers[-4].activation == "log_softmax" or any(
        getattr(layer, "activation", None) == "log_softmax" for layer in m.layers)
    assert_steps_equal_runs(m, x, batch_first=True)


def test_time_major_with_zero_states_and_the_last_step():
    mod = seeded(TimeMajor)
    m = from_torch(mod)
    x = np.random.default_rng(1).normal(size=(T, B, I)).astype(np.float32)
    assert_close(as_list(m.run(x)), outputs_of(mod, x))
    assert m.inputs[0].name == "x" and m.inputs[0].shape == (None, None, I)
    assert_steps_equal_runs(m, x, batch_first=False)


def test_embedding_declared_last_bidirectional_h_n_and_padding_idx():
    mod = seeded(EmbeddingClassifier)
    m = from_torch(mod)
    ids = np.random.default_rng(2).integers(0, V, size=(B, T))
    ids[:, -2:] = 0     # padding tokens: row 0 of the table is zero, as in PyTorch
    assert_close(as_list(m.run(ids)), outputs_of(mod, ids))
    with pytest.raises(Exception, match="bidirectional"):
        m.stream()     # the backward direction needs the whole sequence


def test_language_model_with_state_argument_and_log_softmax():
    mod = seeded(LanguageModel)
    m = from_torch(mod)
    ids = np.random.default_rng(3).integers(0, V, size=(B, T))
    want = outputs_of(mod, ids)[0]
    np.testing.assert_allclose(m.run(ids), want, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.exp(m.run(ids)).sum(-1), 1.0, atol=1e-5)   # log-probabilities
    assert [s.name for s in m.inputs] == ["ids"] and len(m.outputs) == 1   # state: the Stream's
    assert_steps_equal_runs(m, ids, batch_first=True)


def test_joined_branches_tied_weights_and_squeezed_states():
    mod = seeded(Branches)
    m = from_torch(mod)
    ids = np.random.default_rng(9).integers(0, V, size=(T, B))
    assert_close(as_list(m.run(ids)), outputs_of(mod, ids))
    assert_steps_equal_runs(m, ids, batch_first=False)


def test_a_given_initial_state_is_an_input():
    mod = seeded(StartState)
    m = from_torch(mod)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    h0 = rng.normal(size=(2, B, H)).astype(np.float32)
    assert [s.name for s in m.inputs] == ["x", "h0"] and m.inputs[1].shape == (2, None, H)
    np.testing.assert_allclose(m.run({"x": x, "h0": h0})["output"], outputs_of(mod, x, h0)[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_packed_sequences_take_a_lengths_input(enforce_sorted, cell):
    """forward(x, lengths) with pack_padded_sequence / pad_packed_sequence: a lengths input
    (layout B, any integer dtype) feeding every layer's sequence lengths; outputs past a
    length are zero and h_n is each sequence's state at its length, as PyTorch's."""
    mod = seeded(PackedTagger, enforce_sorted, cell)
    m = from_torch(mod)
    assert [(s.name, s.shape) for s in m.inputs] == [("x", (None, None, I)), ("lengths", (None,))]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    lengths = np.array([T, 5, 2, 1])
    if not enforce_sorted:
        lengths = lengths[[2, 0, 3, 1]]
    want = outputs_of(mod, x, lengths)
    for dtype in (np.int64, np.int32, np.uint8, np.int16):
        assert_close(as_list(m.run({"x": x, "lengths": lengths.astype(dtype)})), want)
    # full lengths: the same as no lengths at all, and stepping equals the run
    full = np.full(B, T)
    assert_close(as_list(m.run({"x": x})), outputs_of(mod, x, full))
    assert_steps_equal_runs(m, x, batch_first=True)


def test_sequential_still_converts():
    mod = seeded(lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 3),
                                       nn.LogSoftmax(dim=-1)))
    m = from_torch(mod)
    x = np.random.default_rng(6).normal(size=(5, 2, 4)).astype(np.float32)
    np.testing.assert_allclose(m.run(x), outputs_of(mod, x)[0], atol=ATOL, rtol=0)


# ---------------------------------------------------------- the module itself

def test_the_module_is_left_as_it_was():
    torch.manual_seed(0)
    mod = LanguageModel().train()
    mod.embed.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in mod.state_dict().items()}
    from_torch(mod)
    assert mod.training and all(m.training for m in mod.modules())
    assert not mod.embed.weight.requires_grad and mod.head.weight.requires_grad
    assert all(p.dtype == torch.float32 for p in mod.parameters())
    assert all(torch.equal(before[k], v) for k, v in mod.state_dict().items())


def test_float64_modules_convert_with_a_warning():
    mod = seeded(Heads).double()
    with pytest.warns(UserWarning, match="float64 weights are cast to float32"):
        m = from_torch(mod)
    assert all(p.dtype == torch.float64 for p in mod.parameters())
    x = np.random.default_rng(7).normal(size=(B, T, I))
    with torch.no_grad():
        want = [o.numpy() for o in mod(torch.from_numpy(x))]
    assert_close(as_list(m.run(x.astype(np.float32))), want)
    assert m.metadata["source_dtype"] == "float64"
    with pytest.raises(ConversionError, match=r"float16.*module.float\(\)"):
        from_torch(seeded(Heads).half())


def test_dataparallel_state_dicts_and_modules(tmp_path):
    trained = seeded(LanguageModel)
    torch.save(nn.DataParallel(trained).state_dict(), tmp_path / "dp.pt")   # keys "module.*"
    m = from_torch(seeded(LanguageModel, seed=5), state_dict=tmp_path / "dp.pt")
    ids = np.random.default_rng(8).integers(0, V, size=(2, 5))
    np.testing.assert_allclose(m.run(ids), outputs_of(trained, ids)[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(from_torch(nn.DataParallel(trained)).run(ids), outputs_of(trained, ids)[0],
                               atol=ATOL, rtol=0)


def test_a_state_dict_of_another_module_is_refused_briefly(tmp_path):
    torch.save(seeded(Heads).state_dict(), tmp_path / "heads.pt")
    with pytest.raises(ConversionError, match=r"does not fit LanguageModel: keys \d+ missing .*unexpected") as e:
        from_torch(seeded(LanguageModel), state_dict=tmp_path / "heads.pt")
    assert len(str(e.value)) < 300 + len(str(tmp_path)), str(e.value)


# ----------------------------------------------------------------- refusals

class _Indexing(nn.Module):
    def __init__(self, how, bidirectional=False):
        super().__init__()
        self.rnn = nn.LSTM(I, H, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(H * (2 if bidirectional else 1), 2)
        self.how = how

    def forward(self, x):
        y, _ = self.rnn(x)
        if self.how == "first":
            return self.fc(y[:, 0])
        if self.how == "dim1":
            return torch.softmax(self.fc(y), dim=1)
        if self.how == "conv":
            return nn.functional.conv1d(y, torch.ones(2, H, 1))
        return self.fc(y[:, -1])


def _scripted():
    return torch.jit.script(nn.Sequential(nn.Linear(3, 4), nn.Tanh()))


class _ControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(I, H)

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.rnn(x)[0]


class _Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 3, 3)
        self.norm = nn.LayerNorm(3)
        self.rnn = nn.LSTM(3, 4)

    def forward(self, x):
        return self.rnn(self.norm(self.conv(x)))[0]


REFUSALS = [
    (lambda: _Indexing("first"), r"y\[:, 0, :\].*last step"),
    (lambda: _Indexing("last", bidirectional=True), r"bidirectional.*h_n\[-2\] and h_n\[-1\]"),
    (lambda: _Indexing("dim1"), "dim 1.*dim=-1"),
    (lambda: _Indexing("conv"), "conv1d"),
    (_scripted, "script.*from_onnx"),
    (_ControlFlow, "traced.*control flow"),
    (_Unknown, "Conv1d.*LayerNorm"),
    (lambda: nn.LSTMCell(3, 4) and nn.Sequential(nn.LSTMCell(3, 4)), "loop over time"),
]


@pytest.mark.parametrize("make,match", REFUSALS, ids=[m for _, m in REFUSALS])
def test_refusals_are_one_short_message(make, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = make()
    with pytest.raises(ConversionError, match=match) as e:
        from_torch(mod)
    assert len(str(e.value)) < 300, str(e.value)
