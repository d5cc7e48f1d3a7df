"""The C kernel check driver (tests/kernels/lrt_kernel_check.c), built and run natively: every
kernel of every level this CPU runs against the generic kernels (products of every weight
type, activations, fused cells, top-k; see the driver's header). The aarch64 levels run the
same driver under qemu-aarch64: `bash tests/kernels/run_checks.sh` (CI does)."""
import os
import re
import shutil
import subprocess

import pytest

from lstm_rt import _core

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "kernels", "run_checks.sh")


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None or shutil.which("bash") is None,
                    reason="no C compiler or bash to build the kernel check driver")
def test_native_kernel_check_driver_passes_on_every_level(tmp_path):
    r = subprocess.run(["bash", SCRIPT, "native"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OUT=str(tmp_path)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the driver's CPU probe agrees with the extension's, and every level was checked
    m = re.search(r"this CPU runs: (\S+)", r.stdout)
    assert m and tuple(m.group(1).split(",")) == _core.cpu_isas(), r.stdout
    for isa in _core.cpu_isas():
        assert re.search(rf"^level {isa} +\d+ checks, 0 failed", r.stdout, re.M), r.stdout
    assert re.search(r"^ok: \d+ checks, 0 failed", r.stdout, re.M), r.stdout
