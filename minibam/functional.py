"""What users call: ``from minibam import functional as F``.

Every function takes and returns Tensors, records its backward, and checks its
arguments before NumPy sees them. The ops themselves live in `minibam.ops`,
one file per family, forward and backward side by side.
"""

from minibam.ops.activation import relu, sigmoid
from minibam.ops.attention import bam_combine
from minibam.ops.conv import col2im, conv2d, im2col
from minibam.ops.elementwise import add, div, exp, log, mul, neg, pow, sub  # noqa: A004
from minibam.ops.gate import gate
from minibam.ops.linalg import linear, matmul
from minibam.ops.loss import cross_entropy
from minibam.ops.norm import batch_norm
from minibam.ops.pool import (
    channel_avg_pool,
    channel_max_pool,
    channel_pool,
    global_avg_pool2d,
    global_lp_pool2d,
    global_lse_pool2d,
    global_max_pool2d,
)
from minibam.ops.reduce import mean, sum  # noqa: A004
from minibam.ops.shape import expand, flatten, permute, reshape, transpose

__all__ = [
    "add", "bam_combine", "batch_norm", "channel_avg_pool", "channel_max_pool", "channel_pool", "col2im", "conv2d", "cross_entropy", "div", "exp", "expand", "flatten", "gate",
    "global_avg_pool2d", "global_lp_pool2d", "global_lse_pool2d", "global_max_pool2d", "im2col", "linear", "log", "matmul", "mean", "mul", "neg",
    "permute", "pow", "relu", "reshape", "sigmoid", "sub", "sum", "transpose",
]
