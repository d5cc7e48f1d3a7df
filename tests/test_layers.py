"""Layer kinds (lstm_rt.layers) and the one activation table the kernels share."""
import lstm_rt
from lstm_rt import _core
from lstm_rt.activations import ACTIVATIONS, DENSE_ACTIVATIONS
from lstm_rt.layers import Join, Merge

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


def test_mode_codes_are_the_kernels_enums():
    enums = _core._kernel_enums()
    for cls, prefix in ((Join, "LRT_JOIN_"), (Merge, "LRT_MERGE_")):
        assert {k for k in enums if k.startswith(prefix)} == {prefix + m.upper() for m in cls.MODES}
        for code, mode in enumerate(cls.MODES):
            assert enums[prefix + mode.upper()] == code


def test_layers_re_exports_the_activation_table():
    assert lstm_rt.layers.ACTIVATIONS is ACTIVATIONS
    assert lstm_rt.layers.DENSE_ACTIVATIONS is DENSE_ACTIVATIONS
