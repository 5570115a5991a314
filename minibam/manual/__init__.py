"""Whole modules by hand, in plain NumPy (cs231n style): no autograd, no minibam import.

``layers`` holds the building blocks (linear, convolution, batch norm, sigmoid) that both
modules reuse; ``bam`` holds BAM's forward and backward, ``cbam`` CBAM's. The names below are re-exported so that ``manual.bam_forward``,
``manual._bn_backward``, ``manual.BN_1``... keep working as they did when this was one file.
"""

from minibam.manual.bam import (
    BN_1,
    BN_BUFFERS,
    BN_C_FINAL,
    BN_REDUCE,
    BN_S_FINAL,
    CONV_FINAL,
    CONV_REDUCE,
    FC_0,
    FC_FINAL,
    bam_backward,
    bam_forward,
    bn_di,
    conv_di,
)
from minibam.manual.cbam import cbam_backward, cbam_forward
from minibam.manual.layers import (
    MOMENTUM,
    _bn_backward,
    _bn_forward,
    _bn_relu_backward,
    _bn_relu_forward,
    _col2im,
    _conv_backward,
    _conv_forward,
    _im2col,
    _linear_backward,
    _linear_forward,
    _sigmoid,
)

__all__ = [
    "BN_1", "BN_BUFFERS", "BN_C_FINAL", "BN_REDUCE", "BN_S_FINAL", "CONV_FINAL", "CONV_REDUCE",
    "FC_0", "FC_FINAL", "MOMENTUM", "_bn_backward", "_bn_forward", "_bn_relu_backward",
    "_bn_relu_forward", "_col2im", "_conv_backward", "_conv_forward", "_im2col",
    "_linear_backward", "_linear_forward", "_sigmoid", "bam_backward", "bam_forward", "bn_di",
    "cbam_backward", "cbam_forward", "conv_di",
]
