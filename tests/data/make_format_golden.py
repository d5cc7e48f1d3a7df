"""Writes format_v1_small.lrt (run once per format version; the file is committed).

    python tests/data/make_format_golden.py
"""
import os

import numpy as np

from lstm_rt.fileformat import write_lrt

here = os.path.dirname(os.path.abspath(__file__))
write_lrt(os.path.join(here, "format_v1_small.lrt"), {"purpose": "golden file, format version 1"}, {
    "a": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8,
    "b": np.arange(-5, 5, dtype=np.int8),
    "c": (np.arange(6, dtype=np.float16) - 2.5).reshape(3, 2),
})
