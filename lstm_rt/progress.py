"""A dependency-free progress bar for long work (training, conversion, benchmarks).

    with Progress(total=n, desc="epoch 1") as bar:
        for ...:
            bar.update(1, loss=f"{loss:.3f}")

Draws on stderr, redrawing at most 10 times a second, only when stderr is a terminal
(or `enabled=True`), so logs and CI output stay clean.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", *, enabled: bool | None = None, file=None,
                 width: int = 24):
        self.total = max(int(total), 0)
        self.desc = desc
        self.file = file or sys.stderr
        self.enabled = self.file.isatty() if enabled is None else enabled
        self.width = width
        self.n = 0
        self.info = ""
        self.start = time.perf_counter()
        self._drawn = 0.0

    def update(self, n: int = 1, **info):
        self.n += n
        if info:
            self.info = " ".join(f"{k}={v}" for k, v in info.items())
        now = time.perf_counter()
        if self.enabled and (now - self._drawn >= 0.1 or self.n >= self.total):
            self._drawn = now
            self.file.write("\r" + self.line(now))
            self.file.flush()

    def line(self, now: float | None = None) -> str:
        """The bar as text: 'desc [#####-----]  50% 5/10 3.2s eta 3.2s info'."""
        elapsed = (now or time.perf_counter()) - self.start
        frac = min(self.n / self.total, 1.0) if self.total else 1.0
        full = int(frac * self.width)
        eta = f" eta {elapsed / frac - elapsed:.0f}s" if 0 < frac < 1 else ""
        return (f"{self.desc} [{'#' * full}{'-' * (self.width - full)}] {frac * 100:3.0f}% "
                f"{self.n}/{self.total} {elapsed:.1f}s{eta} {self.info}".rstrip())

    def close(self):
        if self.enabled:
            self.file.write("\r" + self.line() + "\n")
            self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
