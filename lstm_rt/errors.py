"""Every error lstm_rt raises derives from LstmRtError."""


class LstmRtError(Exception):
    """Base class of every error lstm_rt raises."""


class ModelFormatError(LstmRtError, ValueError):
    """A .lrt file is malformed, truncated, tampered with, or from a newer version."""


class ShapeError(LstmRtError, ValueError):
    """An input has the wrong rank, shape or dtype."""


class UnsupportedError(LstmRtError, NotImplementedError):
    """A feature is not supported (the message names it)."""
