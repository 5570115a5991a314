"""Whole modules by hand, in plain NumPy (cs231n style): no autograd, no minibam import.

Read in this order: ``layers`` (linear, convolution, batch norm, sigmoid: each a forward
returning ``(out, cache)`` and a backward), then ``bam`` (BAM's forward and backward, one
or two screens of mathematics) and ``cbam``. ``layout`` holds the ``state_dict()`` names
and shapes that ``params`` uses; the argument checks live apart, in ``_validate``.
"""

from minibam.manual import layers, layout
from minibam.manual.bam import bam_backward, bam_forward
from minibam.manual.cbam import cbam_backward, cbam_forward
from minibam.manual.layers import (
    MOMENTUM,
    bn_backward,
    bn_forward,
    bn_relu_backward,
    bn_relu_forward,
    col2im,
    conv_backward,
    conv_forward,
    im2col,
    linear_backward,
    linear_forward,
    sigmoid,
)
from minibam.manual.layout import (
    BN_1,
    BN_BUFFERS,
    BN_C_FINAL,
    BN_REDUCE,
    BN_S_FINAL,
    CONV_FINAL,
    CONV_REDUCE,
    FC_0,
    FC_FINAL,
    bn_di,
    conv_di,
)

__all__ = [
    "BN_1", "BN_BUFFERS", "BN_C_FINAL", "BN_REDUCE", "BN_S_FINAL", "CONV_FINAL", "CONV_REDUCE",
    "FC_0", "FC_FINAL", "MOMENTUM", "bam_backward", "bam_forward", "bn_backward", "bn_di",
    "bn_forward", "bn_relu_backward", "bn_relu_forward", "cbam_backward", "cbam_forward",
    "col2im", "conv_backward", "conv_di", "conv_forward", "im2col", "layers", "layout",
    "linear_backward", "linear_forward", "sigmoid",
]
