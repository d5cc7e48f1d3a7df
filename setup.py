"""Build of the lstm_rt Cython extension.

The kernels are portable C compiled for baseline x86-64 / aarch64 (no CPU-specific -march
flag; the SIMD kernels use per-function target attributes), so a built wheel runs on any
machine of its architecture; faster paths are chosen at run time (lrt_isa_name).
"""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

kernel_sources = sorted(glob.glob(os.path.join("lstm_rt", "kernels", "*.c")))
# -ffp-contract=off: a multiply and an add stay two roundings unless the kernels ask for a
# fused multiply-add, so every compiler (GCC's ISO C mode already does this; Clang, and GCC
# for aarch64 in GNU mode, would fuse) gives the portable kernels the same bits on every
# CPU, and the SIMD levels' cell math stays bit-identical to the portable cell math.
# -fvisibility=hidden: the module exports only its init function (Python marks it
# visible), so calls between the kernels are direct, not through the PLT, and the compiler
# may inline within a file (a tiny step makes ~50 such calls).
extra_compile_args = (["-O3", "-std=c99", "-fno-math-errno", "-ffp-contract=off", "-Wall",
                       "-fvisibility=hidden"]
                      if os.name != "nt" else ["/O2"])

extensions = [
    Extension(
        "lstm_rt._core",
        sources=[os.path.join("lstm_rt", "_core.pyx")] + kernel_sources,
        include_dirs=[os.path.join("lstm_rt", "kernels"), np.get_include()],
        extra_compile_args=extra_compile_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
