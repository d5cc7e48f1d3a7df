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
    assert lstm_rt.cpu_isa() in ("avx2", "generic")
    if os.environ.get("LSTM_RT_FORCE_ISA") is None:
        assert lstm_rt.cpu_isa() == ("avx2" if _core.cpu_has_avx2() else "generic")


def test_force_isa_override():
    r = run_python("import lstm_rt; print(lstm_rt.cpu_isa())", LSTM_RT_FORCE_ISA="generic")
    assert r.stdout.strip() == "generic", r.stderr
    r = run_python("import lstm_rt", LSTM_RT_FORCE_ISA="sse9")
    assert r.returncode != 0 and "expected 'generic' or 'avx2'" in r.stderr


@pytest.mark.skipif(os.environ.get("LSTM_RT_FORCE_ISA") == "generic", reason="already the generic run")
def test_generic_kernels_pass_the_core_tests():
    e = dict(os.environ, LSTM_RT_FORCE_ISA="generic",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        os.path.join(HERE, "test_core.py"), os.path.join(HERE, "test_quantize.py")],
                       capture_output=True, text=True, env=e, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "lstm_rt kernels: generic" in r.stdout
