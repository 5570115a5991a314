"""Cross-entropy over class scores, for training the small BAM network.

Derivation: docs/derivations/loss.md.
"""

from __future__ import annotations

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import require_tensor
from minibam.tensor import Tensor


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)  # exp never overflows
    with np.errstate(under="ignore"):  # exp(-2000) = 0 is the right value
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropy(Function):
    r"""$L = -\frac1N \sum_n \log \mathrm{softmax}(z_n)_{t_n}$ (mean over the batch);

    $\bar z = \bar L\, (\mathrm{softmax}(z) - \mathrm{onehot}(t)) / N$.
    """

    @staticmethod
    def forward(ctx: Context, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        log_p = _log_softmax(logits)
        n = logits.shape[0]
        ctx.save_for_backward(log_p, targets)
        # sum / n rather than mean(): an empty batch gives nan quietly, as in PyTorch
        # (np.mean would warn "Mean of empty slice", which no errstate silences).
        return np.asarray(-log_p[np.arange(n), targets].sum() / n, dtype=logits.dtype)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        log_p, targets = ctx.saved
        n = log_p.shape[0]
        with np.errstate(under="ignore"):
            dz = np.exp(log_p)
        dz[np.arange(n), targets] -= 1.0
        dz *= grad / n
        return (dz,)


def cross_entropy(logits: Tensor, targets: np.ndarray) -> Tensor:
    """Mean cross-entropy of ``logits`` (N, K) against integer class ``targets`` (N,)."""
    require_tensor(logits, "logits", "cross_entropy")
    if isinstance(targets, Tensor):
        targets = targets.data
    targets = np.asarray(targets)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be (N, K), got shape {logits.shape}")
    if logits.shape[1] == 0:
        raise ValueError(f"cross_entropy: logits must have at least one class (K >= 1), got shape {logits.shape}")
    if targets.dtype.kind not in "iuf":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got dtype {targets.dtype}")
    if targets.shape != (logits.shape[0],):
        raise ValueError(
            f"cross_entropy: targets must have shape ({logits.shape[0]},) to match logits of "
            f"shape {logits.shape}, got {targets.shape}"
        )
    finite = np.isfinite(targets)  # np.mod of inf or nan would warn; they are refused here instead
    whole = finite & (np.mod(np.where(finite, targets, 0), 1) == 0)
    bad = ~whole | (targets < 0) | (targets >= logits.shape[1])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"cross_entropy: targets must be class indices in [0, {logits.shape[1]}) for logits "
                         f"of shape {logits.shape}, got {targets[i].item()!r} at index {i}")
    return CrossEntropy.apply(logits, targets=targets.astype(np.int64))
