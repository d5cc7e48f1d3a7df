"""Compiled plans (lstm_rt.plan) and their executor (_core.Executor): buffers and their
aliases, the operations each layer kind adds, time slots, and running a plan directly:
binding inputs, executing, stepping some rows, the kernels' own refusals."""
import numpy as np
import pytest

from lstm_rt import _core
from lstm_rt.errors import LstmRtError, ShapeError
from lstm_rt.layers import Dense, Embedding, Join, LastState, Mask
from lstm_rt.model import Model, Node, Port
from util import onnx_style_model, random_layer, sequence_model

ATOL = 1e-5


def buffer_of(prog, tensor):
    return next(i for i, b in enumerate(prog.buffers) if b.tensor == tensor)


def test_a_recurrent_layers_h_and_c_outputs_are_its_state_buffers():
    m = onnx_style_model(random_layer("LSTM", 3, 5, rng=np.random.default_rng(0), proj=2))
    prog = m._program
    kinds = [(b.tensor, b.kind, b.width, b.dirs, b.slot, b.input) for b in prog.buffers]
    assert kinds == [("X", "seq", 3, 1, 0, True), ("sequence_lens", "lens", 1, 1, -1, True),
                     ("initial_h", "state", 2, 1, -1, True), ("initial_c", "state", 5, 1, -1, True),
                     ("lstm/h", "state", 2, 1, -1, False), ("lstm/c", "state", 5, 1, -1, False),
                     ("Y", "seq", 2, 1, 0, False)]
    assert [op.kind for op in prog.ops] == ["copy_state", "copy_state", "recurrent"]
    assert prog.states == [("lstm/h", 4), ("lstm/c", 5)]
    outs = {o.name: o.buffers for o in prog.outputs}
    assert outs == {"Y": [6], "Y_h": [4], "Y_c": [5]}
    rec = prog.ops[2].fields
    assert (rec["x"], rec["y"], rec["lens"], rec["h"], rec["c"], rec["mask"]) == (0, 6, 1, 4, 5, -1)
    assert prog.ops[2].core is m._nodes[0].core
    assert prog.state_shapes(3) == {"lstm/h": (1, 3, 2), "lstm/c": (1, 3, 5)}
    assert prog.step_input == 0


def test_a_token_masks_pass_through_output_is_its_input_buffer():
    m = Model([Node(Embedding("e", np.ones((6, 3))), ["ids"], ["E"]),
               Node(Mask("mk", "nonzero_ids"), ["ids"], ["mask", "ids2"]),
               Node(random_layer("GRU", 3, 4, rng=np.random.default_rng(1)), ["E", None, None, None, "mask"],
                    ["Y"])],
              [Port("ids", "ids", "TB")], [Port("Y", "Y", "TBF")])
    prog = m._program
    assert [b.tensor for b in prog.buffers] == ["ids", "E", "mask", "gru/h", "Y"]
    assert prog.buffers[0].vocab == 6 and prog.buffers[2].kind == "mask"
    assert [op.kind for op in prog.ops] == ["embed", "mask_ids", "recurrent"]
    assert prog.ops[2].fields["mask"] == 2


def test_copy_state_skips_initial_states_that_were_not_given():
    """A layer's initial state is copied in when the input is given; when it is not, the
    state buffer keeps what it had (a fresh executor: zeros; a stream: its state)."""
    rng = np.random.default_rng(2)
    layer = random_layer("GRU", 3, 4, rng=rng)
    m = onnx_style_model(layer)
    prog = m._program
    x = rng.normal(size=(2, 1, 3)).astype(np.float32)
    h0 = rng.normal(size=(1, 1, 4)).astype(np.float32)
    ex = _core.Executor(prog, [2], 1, m._life)
    ex.bind(prog.inputs["X"][0], x)
    ex.bind(prog.inputs["initial_h"][0], h0)
    y1, h1 = ex.execute([2], 1, True, False)
    want = layer.reference(x, None, h0)
    np.testing.assert_allclose(y1, want[0], atol=ATOL, rtol=0)
    ex.bind(prog.inputs["initial_h"][0], None)      # not given: carry on from h1
    y2, h2 = ex.execute([2], 1, True, False)
    np.testing.assert_allclose(y2, layer.reference(x, None, h1)[0], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(ex.state_array(prog.states[0][1]), h2)


def test_sequences_of_two_inputs_meet_in_a_join_only_with_one_length():
    rng = np.random.default_rng(3)
    m = Model([Node(random_layer("GRU", 3, 4, rng=rng, name="a"), ["X1"], ["A"]),
               Node(random_layer("RNN", 2, 4, rng=rng, name="b"), ["X2"], ["B"]),
               Node(Join("j", "sum", [4, 4]), ["A", "B"], ["J"])],
              [Port("X1", "X1", "TBF"), Port("X2", "X2", "TBF")], [Port("J", "J", "TBF")])
    prog = m._program
    assert prog.slots == ["X1", "X2"] and prog.join_slots == [("j", {0, 1})]
    assert [prog.buffers[buffer_of(prog, t)].slot for t in ("A", "B", "J")] == [0, 1, 0]
    assert prog.step_input == -1
    x1, x2 = rng.normal(size=(4, 2, 3)).astype(np.float32), rng.normal(size=(4, 2, 2)).astype(np.float32)
    a, b = m.layers[:2]
    np.testing.assert_allclose(m.run({"X1": x1, "X2": x2})["J"], a.reference(x1)[0][:, 0] + b.reference(x2)[0][:, 0],
                               atol=ATOL, rtol=0)
    with pytest.raises(ShapeError, match=r"Join 'j': its inputs differ in time steps"):
        m.run({"X1": x1, "X2": x2[:3]})


def test_last_outputs_have_no_time_slot():
    rng = np.random.default_rng(4)
    m = Model([Node(random_layer("LSTM", 3, 4, rng=rng), ["x"], [None, "h"]),
               Node(LastState("s", 1, 4), ["h"], ["S"]), Node(Dense("d", rng.normal(size=(2, 4))), ["S"], ["P"])],
              [Port("x", "x", "TBF")], [Port("P", "P", "BF")])
    prog = m._program
    assert [(b.tensor, b.kind, b.slot) for b in prog.buffers][-2:] == [("S", "static", -1), ("P", "static", -1)]
    assert [op.kind for op in prog.ops] == ["recurrent", "last_state", "dense"]
    assert prog.ops[0].fields["y"] == -1    # the sequence output nobody reads is not written


# ------------------------------------------------------------ the executor


def test_executor_binds_only_inputs_of_their_dtype():
    m = onnx_style_model(random_layer("RNN", 3, 4, rng=np.random.default_rng(5)))
    prog = m._program
    ex = _core.Executor(prog, [2], 2, m._life)
    with pytest.raises(LstmRtError, match="is not an input"):
        ex.bind(buffer_of(prog, "Y"), np.zeros((2, 2, 4), np.float32))
    with pytest.raises(LstmRtError, match="input buffer 'X' needs a C-contiguous"):
        ex.bind(prog.inputs["X"][0], np.zeros((2, 2, 3), np.float64))
    with pytest.raises(LstmRtError, match="input buffer 'sequence_lens' needs a C-contiguous"):
        ex.bind(prog.inputs["sequence_lens"][0], np.zeros(2, np.int64))
    with pytest.raises(LstmRtError, match="past the executor"):
        ex.bind(prog.inputs["X"][0], np.zeros((2, 3, 3), np.float32))
        ex.execute([2], 3, True, True)


def test_the_kernel_refuses_lengths_past_its_input():
    """The C code defends itself too: handed lengths past the T it was given (bypassing the
    Python checks), the recurrent kernel returns an error code instead of looping past the
    buffers, and the plan's run raises."""
    m = onnx_style_model(random_layer("GRU", 3, 4, rng=np.random.default_rng(6)))
    prog = m._program
    x = np.ones((2, 2, 3), np.float32)
    for lens in ([3, 1], [1, -1], [2**31 - 1, 0]):
        ex = _core.Executor(prog, [2], 2, m._life)
        ex.bind(prog.inputs["X"][0], x)
        ex.bind(prog.inputs["sequence_lens"][0], np.array(lens, np.int32))
        with pytest.raises(ShapeError, match="layer 'gru': sequence lengths outside .* refused"):
            ex.execute([2], 2, True, True)
    ex.bind(prog.inputs["sequence_lens"][0], np.array([2, 1], np.int32))
    ex.execute([2], 2, True, True)


def test_stepping_some_rows_equals_streams_of_those_rows_alone():
    rng = np.random.default_rng(7)
    m = sequence_model(random_layer("LSTM", 3, 5, rng=rng))
    x = rng.normal(size=(6, 4, 3)).astype(np.float32)
    s = m.stream(batch=4)
    alone = [m.stream() for _ in range(4)]
    for t in range(6):
        rows = [2, 0] if t % 2 else [1, 3, 2]
        got = s.step(x[t, rows], rows=np.array(rows))
        for i, r in enumerate(rows):
            np.testing.assert_array_equal(got[i], alone[r].step(x[t, r:r + 1])[0])
    for r in range(4):
        np.testing.assert_array_equal(s.get_state([r])["lstm/h"], alone[r].state["lstm/h"])
    for rows, match in (([4], "out of range"), ([1, 1], "given twice"), ([[0]], "1-d array")):
        with pytest.raises(ShapeError, match=match):
            s.step(x[0, :1], rows=np.array(rows))


@pytest.mark.parametrize("slay", ["DBH", "BDH", "BH"])
def test_stepping_some_rows_returns_those_rows_states(slay):
    """State outputs of a step of some rows are those rows' new states, in the rows' order
    (not the batch's first rows)."""
    rng = np.random.default_rng(8)
    ports = [Port("Y", "Y", "TBF"), Port("Y_h", "Y_h", slay), Port("Y_c", "Y_c", slay)]
    m = Model([Node(random_layer("LSTM", 3, 5, rng=rng), ["X"], ["Y", "Y_h", "Y_c"])], [Port("X", "X", "TBF")], ports)
    x = rng.normal(size=(5, 4, 3)).astype(np.float32)
    s = m.stream(batch=4)
    alone = [m.stream() for _ in range(4)]
    for t in range(5):
        rows = [2, 0] if t % 2 else [3, 1, 2]
        got = s.step(x[t, rows], rows=np.array(rows))
        for i, r in enumerate(rows):
            want = alone[r].step(x[t, r:r + 1])
            for k in ("Y", "Y_h", "Y_c"):
                batch = 1 if slay == "DBH" and k != "Y" else 0     # the output's batch axis
                np.testing.assert_array_equal(np.take(got[k], i, batch), np.take(want[k], 0, batch))


@pytest.mark.parametrize("layout", [("TBF", "TDBH", "DBH"), ("BTF", "BTDH", "BDH")])
def test_fast_step_lays_out_sequence_and_state_outputs_like_the_general_path(layout):
    rng = np.random.default_rng(13)
    seq, ylay, slay = layout
    m = Model([Node(random_layer("LSTM", 3, 5, rng=rng), ["X"], ["Y", "Y_h", "Y_c"])],
              [Port("X", "X", seq)], [Port("Y", "Y", ylay), Port("Y_h", "Y_h", slay), Port("Y_c", "Y_c", slay)])
    x = rng.normal(size=(6, 2, 3)).astype(np.float32)
    fast, general = m.stream(batch=2), m.stream(batch=2)
    for t in range(6):
        a = fast.step(x[t])                 # an array: laid out in C
        b = general.step({"X": x[t]})       # a dict: through the feed path
        assert list(a) == list(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
            assert a[k].shape == b[k].shape


def test_runs_reusing_an_executor_start_fresh_each_time():
    """run() reuses idle Executors of the same batch size: states start at zero again, an
    initial state given to one call is not carried into the next, longer sequences grow
    the buffers, and threads never share one."""
    import threading
    rng = np.random.default_rng(30)
    m = onnx_style_model(random_layer("LSTM", 3, 4, rng=rng))
    xs = [rng.normal(size=(T, 2, 3)).astype(np.float32) for T in (5, 9, 2)]
    h0 = rng.normal(size=(1, 2, 4)).astype(np.float32)
    want = [onnx_style_model(m.layers[0]).run({"X": x}) for x in xs]
    with_h0 = m.run({"X": xs[0], "initial_h": h0})
    for x, w in zip(xs + xs, want + want):
        got = m.run({"X": x})
        for k in w:
            np.testing.assert_array_equal(got[k], w[k])
    assert not np.array_equal(with_h0["Y"], want[0]["Y"])
    errors = []

    def worker(i):
        try:
            for _ in range(40):
                got = m.run({"X": xs[i % 3]})
                np.testing.assert_array_equal(got["Y"], want[i % 3]["Y"])
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_steps_outputs_are_recycled_only_once_nothing_can_see_them():
    """Stream.step hands an output array out again only after its caller dropped it: every
    output kept (in a list, as a view's base, reshaped or retyped in place, behind a weak
    reference) keeps the values it had, and so does a result dict kept, changed or not;
    the step results equal a stream that recycles nothing (its outputs all kept)."""
    import weakref
    rng = np.random.default_rng(31)
    m = onnx_style_model(random_layer("LSTM", 3, 4, rng=rng))
    xs = rng.normal(size=(40, 2, 3)).astype(np.float32)
    keep = m.stream(batch=2)
    want = [keep.step(x) for x in xs]       # all held: nothing can be recycled
    s = m.stream(batch=2)
    kept, snap = [], []
    weak, weak_values, weak_checks = None, None, 0
    for t, x in enumerate(xs):
        out = s.step(x)
        if weak is not None and weak() is not None:    # alive while a spare: never rewritten
            np.testing.assert_array_equal(weak(), weak_values)
            weak_checks += 1
        for k in out:
            np.testing.assert_array_equal(out[k], want[t][k])
        if t % 7 == 1:
            kept.append(out["Y_h"])                    # held
        elif t % 7 == 2:
            kept.append(out["Y"][0])                   # a view: its base held
        elif t % 7 == 3:
            a = out["Y_c"]
            a.shape = (a.size,)                        # reshaped in place, then dropped
            del a
        elif t % 7 == 4:
            out["Y_c"].dtype = np.int32                # retyped in place, then dropped
        elif t % 7 == 5 and weak is None:
            weak = weakref.ref(out["Y_h"])             # only a weak reference left
            weak_values = out["Y_h"].copy()
        elif t % 7 == 5:
            out["extra"] = 1                           # a key added, then dropped
        elif t % 7 == 6 and t % 2:
            out["Y_h"] = out.pop("Y")                  # keys reordered, then dropped
        elif t % 7 == 6:
            kept.append(out)                           # the dict held
        if t % 7 in (1, 2) or (t % 7 == 6 and t % 2 == 0):
            snap.append({k: v.copy() for k, v in kept[-1].items()} if isinstance(kept[-1], dict)
                        else kept[-1].copy())
        del out
    assert len(kept) == len(snap) == 15
    for a, b in zip(kept, snap):
        if isinstance(a, dict):
            assert list(a) == list(b) == ["Y", "Y_h", "Y_c"]
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
        else:
            np.testing.assert_array_equal(a, b)
    assert weak is not None     # (its array dies when its dict is reused: never rewritten)
    # and each result is kept as a spare to hand out again (the reuse itself cannot be seen
    # from Python: that is the point; bench/bench_converted.py measures it): a model of several
    # outputs keeps the result dict (one reference more than a plain dict; its arrays are the
    # dict's alone), a model of one output keeps the array
    import sys
    plain = {"a": np.zeros(3, np.float32)}
    for x in xs[:4]:
        out = s.step(x)
        assert sys.getrefcount(out) == sys.getrefcount(plain) + 1
        assert [sys.getrefcount(out[k]) for k in out] == [sys.getrefcount(plain["a"])] * len(out)
        del out
    one = sequence_model(random_layer("GRU", 3, 4, rng=rng)).stream(batch=2)
    for x in xs[:4]:
        y = one.step(x)
        assert sys.getrefcount(y) == sys.getrefcount(plain["a"])     # one holder besides y: the spares
        del y
    # an array only weakly referenced stays a spare for a while, never rewritten
    want = sequence_model(one.model.layers[0]).stream(batch=2)
    for x in xs[:4]:
        want.step(x)
    dropped = weakref.ref(one.step(xs[4]))
    dropped_values, checks = want.step(xs[4]), 0
    for x in xs[5:]:
        np.testing.assert_array_equal(one.step(x), want.step(x))
        if dropped() is not None:
            np.testing.assert_array_equal(dropped(), dropped_values)
            checks += 1
    assert checks >= 1
