"""minibam: the Bottleneck Attention Module from scratch in NumPy, every gradient by hand.

    import minibam as mb
    from minibam import nn, functional as F
"""

from minibam._malloc import keep_freed_memory

keep_freed_memory()  # before any array is made: see minibam/_malloc.py

from minibam import functional, io, nn, optim, viz  # noqa: E402
from minibam._config import is_grad_enabled, no_grad  # noqa: E402
from minibam.gradcheck import GradcheckError, gradcheck  # noqa: E402
from minibam.io import load, save  # noqa: E402
from minibam.random import manual_seed  # noqa: E402
from minibam.tensor import Tensor  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "GradcheckError", "Tensor", "functional", "gradcheck", "io", "is_grad_enabled", "load",
    "manual_seed", "nn", "no_grad", "optim", "save", "viz",
]
