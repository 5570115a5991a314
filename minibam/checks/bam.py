"""Old import path of `random_bam` and `buffer_arrays`, kept only for `minibam.verify` and
`minibam.bench` (not this package's to edit) until they import `minibam.modules`; BAM is
described in `minibam.modules.bam`."""

from minibam.modules import buffer_arrays
from minibam.modules.bam import random_bam

__all__ = ["buffer_arrays", "random_bam"]
