"""One file per op family; each op is a Function with forward and backward side by side.

The lowercase function next to each Function class checks its arguments and is what
[`minibam.functional`][minibam.functional] and the Tensor methods call.
"""

# Ops import Tensor and Tensor's methods import the ops; entering through the tensor
# module first makes either import order work.
import minibam.tensor  # noqa: E402, F401
