"""Modules: ``from minibam import nn``."""

from minibam.nn.bam import BAM, ChannelGate, SpatialGate
from minibam.nn.cbam import CBAM, CBAMChannelGate, CBAMSpatialGate, ChannelPool
from minibam.nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, ReLU, Sigmoid
from minibam.nn.module import IncompatibleKeys, Module, Parameter, Sequential, StateDictError
from minibam.nn.network import BAMNet
from minibam.nn.se import SqueezeExcitation

__all__ = [
    "BAM", "BAMNet", "BatchNorm1d", "BatchNorm2d", "CBAM", "CBAMChannelGate", "CBAMSpatialGate",
    "ChannelGate", "ChannelPool", "Conv2d", "Flatten", "IncompatibleKeys",
    "Linear", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "SpatialGate", "SqueezeExcitation",
    "StateDictError",
]
