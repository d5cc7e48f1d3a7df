"""Run-time kernel selection: the override works, and the portable kernels pass the same
core tests as the SIMD ones (one machine tests every path)."""
import os
import subprocess
import sys

import pytest

import lstm_rt
from lstm_rt import _core

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_python(code, **env):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)


def test_detected_isa_is_reported():
    assert lstm_rt.cpu_isa() in _core.cpu_isas()
    if os.environ.get("LSTM_RT_FORCE_ISA") is None:
        assert lstm_rt.cpu_isa() == _core.cpu_isas()[-1]


def test_force_isa_override():
    for isa in _core.cpu_isas():
        r = run_python("import lstm_rt; print(lstm_rt.cpu_isa())", LSTM_RT_FORCE_ISA=isa)
        assert r.stdout.strip() == isa, r.stderr
    r = run_python("import lstm_rt", LSTM_RT_FORCE_ISA="sse9")
    assert r.returncode != 0 and "expected one of " + ", ".join(map(repr, _core.ISAS)) in r.stderr
    # this build's levels: the x86-64 ones, or the aarch64 ones in an aarch64 build
    assert _core.ISAS in (("generic", "avx2", "avx512vnni"), ("generic", "neon", "neondot"))
    missing = [isa for isa in _core.ISAS if isa not in _core.cpu_isas()]
    if missing:
        r = run_python("import lstm_rt", LSTM_RT_FORCE_ISA=missing[0])
        assert r.returncode != 0 and "this CPU lacks it" in r.stderr


@pytest.mark.parametrize("isa", _core.cpu_isas())
def test_a_forced_level_runs_that_levels_kernel_table(isa):
    """LSTM_RT_FORCE_ISA picks the table once at import: the process's dispatched products
    are that level's (bit for bit what the hook computes here with isa=...), and the
    activations and cells follow the same table."""
    code = ("import numpy as np; from lstm_rt import _core; from lstm_rt.packing import pack_panels;"
            "from lstm_rt.quantize import quantize_int8;"
            "rng = np.random.default_rng(1); p = pack_panels(rng.normal(size=(4 * 21, 45)).astype(np.float32), 4);"
            "q, s = quantize_int8(p); a = rng.normal(size=(3, 45)).astype(np.float32);"
            "x = np.linspace(-9, 9, 101).astype(np.float32);"
            "print(_core._matmul(a, q, s, 4, 96, 'auto', True).tobytes().hex(),"
            "      _core._matmul(a, p, None, 4, 96).tobytes().hex(), _core._activate('Tanh', 0, 0, x).tobytes().hex())")
    r = run_python(code, LSTM_RT_FORCE_ISA=isa)
    assert r.returncode == 0, r.stderr
    i8, f32, tanh = r.stdout.split()
    import numpy as np
    from lstm_rt.packing import pack_panels
    from lstm_rt.quantize import quantize_int8
    rng = np.random.default_rng(1)
    p = pack_panels(rng.normal(size=(4 * 21, 45)).astype(np.float32), 4)
    q, s = quantize_int8(p)
    a = rng.normal(size=(3, 45)).astype(np.float32)
    assert i8 == _core._matmul(a, q, s, 4, 96, isa, True).tobytes().hex()
    assert f32 == _core._matmul(a, p, None, 4, 96, isa).tobytes().hex()
    x = np.linspace(-9, 9, 101).astype(np.float32)
    if (isa == "generic") == (lstm_rt.cpu_isa() == "generic"):  # libm's tanhf, or the AVX2 one
        assert tanh == _core._activate("Tanh", 0, 0, x).tobytes().hex()


@pytest.mark.parametrize("isa", _core.cpu_isas()[:-1])
def test_lower_kernel_levels_pass_the_core_tests(isa):
    """The levels below the detected one (generic C; avx2 on a VNNI CPU) run whole models too."""
    if os.environ.get("LSTM_RT_FORCE_ISA") == isa:
        pytest.skip(f"already the {isa} run")
    e = dict(os.environ, LSTM_RT_FORCE_ISA=isa,
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        os.path.join(HERE, "test_core.py"), os.path.join(HERE, "test_quantize.py")],
                       capture_output=True, text=True, env=e, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"lstm_rt kernels: {isa}" in r.stdout
