"""Old import path of `random_cbam`, kept only for `minibam.bench` (not this package's to
edit) until it imports `minibam.modules`; CBAM is described in `minibam.modules.cbam`."""

from minibam.modules.cbam import random_cbam

__all__ = ["random_cbam"]
