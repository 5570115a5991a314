"""Speed kept apart: the fast kernels, the thread pool and the opt-in allocator setting.

``minibam/ops/`` holds each op's mathematics in plain NumPy, and that is what runs when
``minibam.backends.fast.enabled`` is False. When it is True (the default), `fast` swaps in,
op by op, a faster implementation of the same derivation; each cites the derivation it
implements and is tested against the plain op (tests/test_backends.py).

- `fast`: the switch (``enabled``, ``flags``) and the one dispatch the engine asks.
- `combine`: BAM's last step in cache-sized blocks on all cores.
- `conv`, `conv_flat`: convolutions without im2col's copies.
- `conv_regions`: convolutions that skip the products with padding zeros, one matrix
  product per region of pixels sharing their valid taps (docs/fast-kernels.md).
- `scratch`: the kernels' large temporaries, reused between steps instead of freed
  (fewer page faults without changing the process's allocator).
- `accumulate`: the backward walk's gradient sums, one pass over memory per tensor.
- `threads`: the small thread pool the kernels above share.
- `allocator`: glibc settings that keep freed memory for reuse; opt-in, never at import.

Importing this package starts no thread and changes nothing in the process.
"""

from minibam.backends import allocator, fast

__all__ = ["allocator", "fast"]
