"""minibam: the Bottleneck Attention Module from scratch in NumPy, every gradient by hand.

    import minibam as mb
    from minibam import nn, functional as F

Importing minibam changes nothing in the process: no allocator setting, no thread, no
umask, signal or environment change. Speed that needs any of that is opt-in
(``minibam.backends``).
"""

from minibam import backends, functional, io, nn, optim, viz
from minibam._config import is_grad_enabled, no_grad
from minibam.gradcheck import GradcheckError, gradcheck
from minibam.io import load, save
from minibam.random import manual_seed
from minibam.tensor import Tensor

__version__ = "0.1.0"

__all__ = [
    "GradcheckError", "Tensor", "backends", "functional", "gradcheck", "io", "is_grad_enabled", "load",
    "manual_seed", "nn", "no_grad", "optim", "save", "viz",
]
