"""Small synthetic data sets for experiments with attention, built from arrays you pass in.

``cluttered`` places small images (scikit-learn's 8x8 digits, say) at random positions
on a larger empty canvas, among fragments cut from other images of the same pool, and
returns where each one went. Because the position of the object is known, one can
measure whether an attention map looks at it (notebooks/06_cluttered_digits.ipynb).

    from sklearn.datasets import load_digits
    from minibam.datasets import cluttered

    d = load_digits()
    x, y, boxes = cluttered(d.images / 16, d.target, 100, rng=np.random.default_rng(0))
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cluttered"]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"cluttered: {name} must be a non-negative int, got {value!r}")
    return int(value)


def cluttered(images: np.ndarray, labels: np.ndarray, n: int, canvas: int = 32, fragments: int = 8,
              fragment_size: int = 4, align: int = 2,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` canvases, each with one object from ``images`` among clutter.

    For each canvas: ``fragments`` squares of ``fragment_size`` pixels, each cut at a
    random place from a random image of the pool, are dropped at random places; then one
    random image is drawn at a random top-left corner whose coordinates are multiples of
    ``align`` (so its box lines up with the cells of a map downsampled by ``align``).
    Overlaps keep the brighter pixel (``maximum``), so the object is never hidden.

    Arguments: ``images`` (K, h, w) with values >= 0, ``labels`` (K,).
    Returns ``x`` (n, 1, canvas, canvas) float64, ``y`` (n,) the labels of the placed
    objects, ``boxes`` (n, 4) int as (top, left, height, width) in canvas pixels.
    Nothing passed in is modified.
    """
    images = np.asarray(images, dtype=np.float64)
    labels = np.asarray(labels)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"cluttered: images must be a non-empty (K, h, w) array, got shape {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"cluttered: labels must have shape ({len(images)},), got {labels.shape}")
    n, canvas = _positive_int(n, "n"), _positive_int(canvas, "canvas")
    fragments = _positive_int(fragments, "fragments")
    fragment_size, align = _positive_int(fragment_size, "fragment_size"), _positive_int(align, "align")
    h, w = images.shape[1:]
    if canvas < max(h, w):
        raise ValueError(f"cluttered: canvas={canvas} is smaller than the images ({h} x {w})")
    if not 1 <= fragment_size <= min(h, w):
        raise ValueError(f"cluttered: fragment_size must be in 1..{min(h, w)}, got {fragment_size}")
    if align < 1:
        raise ValueError(f"cluttered: align must be at least 1, got {align}")
    rng = np.random.default_rng() if rng is None else rng

    x = np.zeros((n, 1, canvas, canvas))
    boxes = np.empty((n, 4), dtype=np.int64)
    chosen = rng.integers(len(images), size=n)
    f = fragment_size
    for i in range(n):
        for _ in range(fragments):
            source = images[rng.integers(len(images))]
            r, c = rng.integers(0, h - f + 1), rng.integers(0, w - f + 1)
            top, left = rng.integers(0, canvas - f + 1, size=2)
            window = x[i, 0, top:top + f, left:left + f]
            np.maximum(window, source[r:r + f, c:c + f], out=window)
        top = rng.integers(0, (canvas - h) // align + 1) * align
        left = rng.integers(0, (canvas - w) // align + 1) * align
        window = x[i, 0, top:top + h, left:left + w]
        np.maximum(window, images[chosen[i]], out=window)
        boxes[i] = (top, left, h, w)
    return x, labels[chosen].copy(), boxes
