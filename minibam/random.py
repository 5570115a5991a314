"""The one random generator behind module initialisation; ``manual_seed`` resets it."""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Make every later initialisation reproducible, as ``torch.manual_seed``."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    return _generator
