"""Layer kinds (lstm_rt.layers): each kind's rules (specs, configs, packed form, storage),
the registry the generic code loops over, and the one activation table the kernels share."""
import numpy as np
import pytest

import lstm_rt
from lstm_rt import _core
from lstm_rt.activations import ACTIVATIONS, DENSE_ACTIVATIONS
from lstm_rt.errors import ModelFormatError, ShapeError
from lstm_rt.layers import (GRU, LAYER_KINDS, LSTM, RNN, Activation, Dense, Embedding, Join, LastState,
                            Layer, Mask, Merge, ReverseTime, SelectDirection, activation)
from util import random_layer

# ------------------------------------------------------------ the one activation table


def test_activation_codes_are_the_kernels_enums():
    """_core takes its codes from lstm_rt.activations; the C enums must say the same."""
    enums = _core._kernel_enums()
    c_acts = {k for k in enums if not k.startswith(("LRT_DENSE_", "LRT_CELL_", "LRT_JOIN_", "LRT_MERGE_"))}
    assert c_acts == {"LRT_" + name.upper() for name in ACTIVATIONS}
    for name, row in ACTIVATIONS.items():
        assert enums["LRT_" + name.upper()] == row[0] == _core._ACT_CODES[name], name
    assert {k for k in enums if k.startswith("LRT_DENSE_")} == {"LRT_DENSE_" + a.upper() for a in DENSE_ACTIVATIONS}
    for code, name in enumerate(DENSE_ACTIVATIONS):
        assert enums["LRT_DENSE_" + name.upper()] == code == _core._DENSE_CODES[name], name


def test_cell_and_mode_codes_are_the_kernels_enums():
    enums = _core._kernel_enums()
    for cls in (LSTM, GRU, RNN):
        assert cls.cell_code == enums["LRT_CELL_" + cls.kind], cls.kind
    for cls, prefix in ((Join, "LRT_JOIN_"), (Merge, "LRT_MERGE_")):
        assert {k for k in enums if k.startswith(prefix)} == {prefix + m.upper() for m in cls.MODES}
        for code, mode in enumerate(cls.MODES):
            assert enums[prefix + mode.upper()] == code


def test_layers_re_exports_the_activation_table():
    assert lstm_rt.layers.ACTIVATIONS is ACTIVATIONS
    assert lstm_rt.layers.DENSE_ACTIVATIONS is DENSE_ACTIVATIONS


# ------------------------------------------------------------ the registry


def test_every_kind_is_registered_and_owns_its_rules():
    assert set(LAYER_KINDS) == {"LSTM", "GRU", "RNN", "Embedding", "Dense", "Merge", "LastState", "Mask",
                                "ReverseTime", "SelectDirection", "Join"}
    for kind, cls in LAYER_KINDS.items():
        assert cls.kind == kind and issubclass(cls, Layer)
        for hook in ("from_config", "infer", "plan"):
            assert getattr(cls, hook).__func__ is not getattr(Layer, hook).__func__, (kind, hook)
        assert (cls.make_core.__func__ is Layer.make_core.__func__) == (not cls.weight_names), kind


def all_layers(rng):
    """One spec of every kind, in its variants that pack differently."""
    r = lambda kind, **kw: random_layer(kind, 6, 11, rng=rng, **kw)  # noqa: E731
    return [r("LSTM"), r("LSTM", proj=5, peepholes=True, direction="bidirectional"), r("LSTM", bias=False),
            r("GRU", linear_before_reset=True), r("GRU", linear_before_reset=False, direction="reverse"),
            r("RNN", direction="bidirectional"),
            Embedding("e", rng.normal(size=(13, 6))),
            Dense("d", rng.normal(size=(37, 6)), rng.normal(size=37), activation="tanh"),
            Dense("d0", rng.normal(size=(3, 6))),
            Merge("m", "ave", 4, 3), LastState("ls", 2, 5), Mask("mk", "value", 0.5, 4), Mask("mi", "nonzero_ids"),
            Join("j", "concat", [2, 3]), ReverseTime("rt", 4), SelectDirection("sd", 2, 1, 5)]


# ------------------------------------------------------------ configs and the packed form


@pytest.mark.parametrize("i", range(16))
def test_config_pack_unpack_round_trip_is_the_same_layer(i):
    """from_config(config(), unpack(pack())) rebuilds the spec (biases come back summed:
    an equivalent model, so the references agree)."""
    rng = np.random.default_rng(i)
    layer = all_layers(rng)[i]
    cls = type(layer)
    cls.check_config(layer.config())
    back = cls.from_config(layer.config(), cls.unpack(layer.config(), layer.pack()))
    assert back.config() == layer.config() and repr(back) == repr(layer)
    for name, w in layer.weights().items():
        if name != "b":
            np.testing.assert_array_equal(back.weights()[name], w)
    if layer.recurrent:
        x = rng.normal(size=(5, 2, 6))
        for a, b in zip(layer.reference(x), back.reference(x)):
            if a is not None:
                np.testing.assert_allclose(a, b, atol=1e-6)
    elif cls in (Dense, Embedding):
        x = rng.integers(0, 13, size=(3, 2)) if cls is Embedding else rng.normal(size=(3, 2, 6))
        np.testing.assert_allclose(back.reference(x), layer.reference(x), atol=1e-6)
    else:
        assert layer.pack() == {} and cls.packed_shapes(layer.config()) == {}


@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("i", range(9))
def test_stored_shapes_are_what_pack_and_convert_make(i, weights):
    """A file's arrays are checked against stored_shapes: it must be exactly what pack() and
    convert() produce, for every kind and storage; fp16/int8 touch the matrices only."""
    layer = all_layers(np.random.default_rng(i))[i]
    cls, cfg = type(layer), layer.config()
    packed = layer.pack()
    assert {k: a.shape for k, a in packed.items()} == {k: s for k, s in cls.packed_shapes(cfg).items() if k in packed}
    assert all(a.ctypes.data % 64 == 0 for a in packed.values())
    stored = cls.convert(cfg, packed, weights)
    want = cls.stored_shapes(cfg, weights)
    assert {k: (a.shape, str(a.dtype)) for k, a in stored.items()} == {k: v for k, v in want.items() if k in stored}
    assert set(want) - set(stored) <= {k for k in want if k.split(".", 1)[-1] in cls.optional_parts}
    cls.check_stored(cfg, stored, weights)
    changed = {k for k in stored if k not in packed or stored[k].dtype != packed[k].dtype}
    mats = set(cls.matrix_parts(cfg)) if cls is not Embedding else {"weight"}
    assert {k.split(".scale")[0] for k in changed} == (mats if weights != "fp32" else set())
    back = cls.unpack(cfg, stored)
    assert set(layer.weights()) <= set(back) <= set(cls.weight_names)


def test_matrix_parts_are_the_panel_matrices_with_their_k():
    g = random_layer("GRU", 6, 11, rng=np.random.default_rng(0), direction="bidirectional")
    assert GRU.matrix_parts(g.config()) == {"0.w": 6, "0.r": 11, "0.r_h": 11, "1.w": 6, "1.r": 11, "1.r_h": 11}
    p = random_layer("LSTM", 6, 11, rng=np.random.default_rng(0), proj=5)
    assert LSTM.matrix_parts(p.config()) == {"0.w": 6, "0.r": 5, "0.proj": 11}
    assert Dense.matrix_parts({"in_features": 7, "out_features": 40}) == {"weight": 7}
    assert Embedding.matrix_parts({"vocab_size": 3, "embedding_size": 2}) == {}


def test_check_stored_refuses_what_the_config_does_not_imply():
    layer = random_layer("LSTM", 3, 4, rng=np.random.default_rng(1), peepholes=True)
    cfg, packed = layer.config(), layer.pack()
    LSTM.check_stored(cfg, {k: v for k, v in packed.items() if k not in ("0.peep", "0.bias")}, "fp32")
    with pytest.raises(ModelFormatError, match="missing weights '0.r'"):
        LSTM.check_stored(cfg, {k: v for k, v in packed.items() if k != "0.r"}, "fp32")
    with pytest.raises(ModelFormatError, match="unexpected weights"):
        LSTM.check_stored(cfg, {**packed, "0.r_h": packed["0.r"]}, "fp32")
    with pytest.raises(ModelFormatError, match="expected"):
        LSTM.check_stored(cfg, packed, "int8")
    with pytest.raises(ModelFormatError, match="unknown weight type"):
        LSTM.check_stored(cfg, packed, "int4")
    with pytest.raises(ShapeError, match="activations"):
        LSTM.check_stored({**cfg, "activations": "Tanh"}, packed, "fp32")


@pytest.mark.parametrize("kind,config,match", [
    ("LSTM", {"name": 3}, "config must be a dict"),
    ("LSTM", {"name": "l", "input_size": 3, "hidden_size": 4, "direction": "forward", "clip": None,
              "activations": [["Sigmoid", 0, 0]] * 3, "proj_size": 0}, "proj_size"),
    ("GRU", {"name": "g", "input_size": 3, "hidden_size": 4, "direction": "forward", "clip": None,
             "activations": [["Sigmoid", 0, 0]] * 3}, "expected 2 activations"),
    ("RNN", {"name": "r", "input_size": 3, "hidden_size": 4, "direction": "forward", "clip": None,
             "activations": [["Tanh", 0, 0]], "zero_output_for_mask": 1}, "boolean"),
    ("Dense", {"name": "d", "in_features": 3, "out_features": 4, "activation": "gelu"}, "gelu"),
    ("Embedding", {"name": "e", "vocab_size": 0, "embedding_size": 4}, "vocab_size"),
    ("Join", {"name": "j", "mode": "sub", "features": [2, 2, 2]}, "exactly two"),
    ("SelectDirection", {"name": "s", "directions": 1, "direction": 1, "hidden_size": 2}, "direction"),
])
def test_check_config_applies_the_specs_rules(kind, config, match):
    with pytest.raises(lstm_rt.LstmRtError, match=match):
        LAYER_KINDS[kind].check_config(config)


@pytest.mark.parametrize("build,match", [
    (lambda: random_layer("LSTM", 3, 4, rng=np.random.default_rng(0), direction="sideways"), "direction"),
    (lambda: random_layer("LSTM", 3, 4, rng=np.random.default_rng(0), clip=-1.0), "clip"),
    (lambda: random_layer("GRU", 3, 4, rng=np.random.default_rng(0), activations=["Sigmoid"]), "activations"),
    (lambda: random_layer("RNN", 3, 4, rng=np.random.default_rng(0), activations=["Swish"]), "Swish"),
    (lambda: LSTM("l", np.zeros((1, 16, 3)), np.zeros((1, 16, 5))), r"\(1, 16, 4\)"),
    (lambda: RNN("r", np.full((1, 2, 3), np.nan), np.zeros((1, 2, 2))), "NaN"),
    (lambda: GRU("g", np.zeros((1, 6, 3), np.int32), np.zeros((1, 6, 2))), "floating"),
    (lambda: Dense("d", np.zeros((3, 2)), activation="gelu"), "gelu"),
])
def test_bad_layer_specs_raise(build, match):
    with pytest.raises(lstm_rt.LstmRtError, match=match):
        build()


def test_onnx_default_activation_parameters():
    assert activation("LeakyRelu") == Activation("LeakyRelu", 0.01, 0.0)
    assert activation("thresholdedrelu") == Activation("ThresholdedRelu", 1.0, 0.0)
    assert activation("HardSigmoid") == Activation("HardSigmoid", 0.2, 0.5)
    assert lstm_rt.layers.activations_from_onnx(["Sigmoid", "Affine", "LeakyRelu"], [2.0, 0.3], [1.0]) == [
        Activation("Sigmoid", 0.0, 0.0), Activation("Affine", 2.0, 1.0), Activation("LeakyRelu", 0.3, 0.0)]


def test_what_cannot_stream_says_why():
    fwd = random_layer("GRU", 3, 4, rng=np.random.default_rng(0))
    assert GRU.cannot_stream(fwd.config()) is None
    bi = random_layer("GRU", 3, 4, rng=np.random.default_rng(0), direction="bidirectional")
    assert "whole sequence" in GRU.cannot_stream(bi.config())
    assert "reorders the whole sequence" in ReverseTime.cannot_stream(ReverseTime("rt", 3).config())
    assert Dense.cannot_stream(Dense("d", np.ones((2, 2))).config()) is None
