"""lstm_rt: fast, exact step-by-step inference of trained LSTM/GRU/RNN networks on CPU.

    m = lstm_rt.load("model.lrt")      # mmap, no copy of the weights
    y = m.run(x)                       # whole sequences
    s = m.stream(batch=1)              # step by step, state carried
    y_t = s.step(x_t)
"""
from ._core import cpu_isa
from .errors import LstmRtError, ModelFormatError, ShapeError, UnsupportedError
from .model import Model, Node, Port, Stream, TensorSpec, load, load_bytes

__version__ = "0.1.0"

__all__ = ["load", "load_bytes", "Model", "Stream", "Node", "Port", "TensorSpec", "cpu_isa",
           "LstmRtError", "ModelFormatError", "ShapeError", "UnsupportedError", "__version__"]
