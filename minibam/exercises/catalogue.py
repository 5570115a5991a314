"""Every exercise, in teaching order: each builds on the ones before it.

Adding an exercise is one module that builds an [`Exercise`][minibam.exercises.Exercise]
and one line here.
"""

from __future__ import annotations

from minibam.exercises import bam, batchnorm, broadcasting, cbam, conv, matmul, reductions, sigmoid
from minibam.exercises.core import Exercise

EXERCISES: tuple[Exercise, ...] = (
    broadcasting.UNBROADCAST,
    broadcasting.DIV,
    matmul.MATMUL,
    sigmoid.SIGMOID,
    reductions.REDUCE,
    conv.IM2COL,
    conv.COL2IM,
    conv.CONV2D,
    batchnorm.BACKWARD,
    batchnorm.RUNNING,
    reductions.GAP,
    bam.COMBINE,
    bam.WHOLE,
    cbam.MAX_POOL,
    cbam.CHANNEL_GATE,
)
