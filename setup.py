"""Build of the lstm_rt Cython extension.

The kernels are portable C compiled for baseline x86-64 / aarch64 (no CPU-specific -march
flag), so a built wheel runs on any machine; faster paths are chosen at run time (lrt_isa_name).
"""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

kernel_sources = sorted(glob.glob(os.path.join("lstm_rt", "kernels", "*.c")))
extra_compile_args = ["-O3", "-std=c99", "-fno-math-errno", "-Wall"] if os.name != "nt" else ["/O2"]

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
