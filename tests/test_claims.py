"""The quantitative side-claims of the derivation pages, computed.

Each test recomputes a number or a statement that docs/derivations/ (or a notebook)
makes in passing, so that the sentence cannot drift from the truth unnoticed. The page
and section are named in each docstring.
"""

from __future__ import annotations

import itertools
from decimal import Decimal, localcontext

import numpy as np
import pytest

import minibam as mb
from minibam import functional as F
from minibam.ops.activation import stable_sigmoid
from minibam.ops.conv import col2im, im2col

# ---------------------------------------------------------------------------------------
# conv.md, "Pixels no tap reads get zero" and "col2im is not the inverse"
# ---------------------------------------------------------------------------------------


def _reads_per_row(H: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """How many (output row, kernel tap) pairs read each input row: col2im(im2col(1)).

    A 1-D problem (a (k, 1) kernel on an (H, 1) image), so the count is per row.
    """
    ones = np.ones((1, 1, H, 1))
    geometry = dict(kernel_size=(k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1))
    return col2im(im2col(ones, **geometry), ones.shape, **geometry)[0, 0, :, 0]


def _reads_by_formula(H: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """The same count from equation (C): row h is read by tap i of output row h' iff h' s + i d = h + p."""
    H_out = (H + 2 * p - d * (k - 1) - 1) // s + 1
    return np.array([sum(ho * s + i * d == h + p for ho in range(H_out) for i in range(k))
                     for h in range(H)])


def test_unread_rows_are_not_decided_by_the_remainder() -> None:
    """conv.md: the remainder of (H + 2p - d(k-1) - 1) / s does not say which rows go unread."""
    # Remainder 1, yet every input row is read: the positions no window reaches are padding.
    assert (4 + 2 * 1 - 1 * (3 - 1) - 1) % 2 == 1
    assert np.all(_reads_per_row(H=4, k=3, s=2, p=1, d=1) > 0)
    # Remainder 0, yet rows 1 and 3 are never read: they fall between the dilated taps.
    assert (5 + 0 - 2 * (2 - 1) - 1) % 2 == 0
    reads = _reads_per_row(H=5, k=2, s=2, p=0, d=2)
    assert np.flatnonzero(reads == 0).tolist() == [1, 3]
    # The other gaps the page names: stride 1 on a map barely wider than the kernel's
    # extent, and a stride larger than the extent.
    assert np.flatnonzero(_reads_per_row(H=5, k=2, s=1, p=0, d=3) == 0).tolist() == [2]
    assert np.flatnonzero(_reads_per_row(H=7, k=2, s=3, p=0, d=1) == 0).tolist() == [2, 5, 6]


def test_unread_rows_get_exactly_zero_gradient() -> None:
    """conv.md: a row no tap reads gets gradient 0 (checked through conv2d's backward)."""
    rng = np.random.default_rng(0)
    x = mb.Tensor(rng.standard_normal((1, 2, 5, 4)), requires_grad=True)
    w = mb.Tensor(rng.standard_normal((3, 2, 2, 1)))
    y = F.conv2d(x, w, stride=(2, 1), dilation=(2, 1))
    y.backward(rng.standard_normal(y.shape))
    row_norms = np.abs(x.grad).sum(axis=(0, 1, 3))
    assert np.flatnonzero(row_norms == 0).tolist() == [1, 3]
    assert np.all(row_norms[[0, 2, 4]] > 0)


@pytest.mark.parametrize("H,k,s,p,d", list(itertools.product([4, 5, 7], [1, 2, 3], [1, 2, 3], [0, 1, 2], [1, 2, 3])))
def test_the_reading_rule_of_equation_c(H: int, k: int, s: int, p: int, d: int) -> None:
    """conv.md: "row h is read by tap i of output row h' exactly when h' s + i d = h + p"."""
    if H + 2 * p - d * (k - 1) < 1:
        return  # the kernel does not fit
    assert _reads_per_row(H, k, s, p, d).tolist() == _reads_by_formula(H, k, s, p, d).tolist()


def test_col2im_im2col_counts_taps_not_windows() -> None:
    """conv.md: col2im(im2col(x)) multiplies each pixel by the number of taps that read it.

    The page's 1-D example (6 pixels, k = 2, d = 2): windows span 3 pixels, so pixel 1
    lies inside two windows, but only one tap reads it.
    """
    reads = _reads_per_row(H=6, k=2, s=1, p=0, d=2)
    assert reads.tolist() == [1, 1, 2, 2, 1, 1]
    span = 2 * (2 - 1) + 1
    windows_containing = [sum(start <= h < start + span for start in range(4)) for h in range(6)]
    assert windows_containing == [1, 2, 3, 3, 2, 1]
    assert reads.tolist() != windows_containing


# ---------------------------------------------------------------------------------------
# conv.md, "Dilation": BAM's receptive field
# ---------------------------------------------------------------------------------------


def _centre_gradient(layers, shape=(2, 1, 25, 25)) -> np.ndarray:
    """d y[0, 0, centre] / d x for y = layers(x), x an all-ones-weight stack."""
    rng = np.random.default_rng(1)
    x = mb.Tensor(rng.standard_normal(shape), requires_grad=True)
    y = layers(x)
    upstream = np.zeros(y.shape)
    upstream[0, 0, shape[2] // 2, shape[3] // 2] = 1.0
    y.backward(upstream)
    return x.grad


def _dilated(x, d=4):
    return F.conv2d(x, mb.Tensor(np.ones((1, 1, 3, 3))), padding=d, dilation=d)


def test_two_dilation_4_convs_read_25_of_289_pixels() -> None:
    """conv.md: two 3x3 convs with dilation 4 span 17 x 17 pixels but read 25 of them."""
    grad = _centre_gradient(lambda x: _dilated(_dilated(x)))
    rows, cols = np.nonzero(grad[0, 0])
    assert len(rows) == 25
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (17, 17)
    assert set(np.diff(np.unique(rows))) == {4} and set(np.diff(np.unique(cols))) == {4}
    assert not grad[1].any()  # other samples: no influence


def test_training_mode_batch_norm_couples_every_pixel_of_the_batch() -> None:
    """conv.md / notebook 2: the 25-pixel field holds in eval mode; in training, BN sees everything."""
    def stack(training: bool):
        def layers(x):
            u = _dilated(x)
            u = F.batch_norm(u, np.zeros(1), np.ones(1), training=training)
            return _dilated(u)
        return layers

    eval_grad = _centre_gradient(stack(training=False))
    assert np.count_nonzero(eval_grad) == 25
    train_grad = _centre_gradient(stack(training=True))
    assert np.count_nonzero(train_grad) == train_grad.size  # every pixel of every sample


# ---------------------------------------------------------------------------------------
# activations.md, "A sigmoid that never overflows"
# ---------------------------------------------------------------------------------------

U = 2.0**-53  # the unit roundoff of float64


def _sigmoid_exact(x: float) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        return 1 / (1 + (-Decimal(x)).exp())


def _relative_errors(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    with localcontext() as ctx:
        ctx.prec = 60
        out = []
        for xi, vi in zip(x.tolist(), values.tolist()):
            exact = _sigmoid_exact(xi)
            out.append(float(abs((Decimal(vi) - exact) / exact)))
    return np.array(out)


def _sign_split(x: np.ndarray) -> np.ndarray:
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, z) / (1 + z)


def test_sigmoid_relative_error_stays_within_three_roundings() -> None:
    """activations.md: the plain formula is within 3u of sigma(x) wherever sigma(x) is normal.

    A modest sample of the whole range, plus the region x ~ -36.7 where 1 + e^{-x} is
    near 2^53 and the addition's rounding is largest.
    """
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-708, 708, 2000), rng.uniform(-37.5, -36.7, 3000)])
    errors = _relative_errors(x, stable_sigmoid(x))
    assert errors.max() <= 3 * U
    assert errors.max() > 2 * U  # the region is where the page says the large errors are


def test_sigmoid_worst_points_quoted_on_the_page() -> None:
    """activations.md: 2.89e-16 at x = -36.7532 (plain), 3.32e-16 at x = -6.9297 (sign split)."""
    plain = np.array([-36.753198496698936])
    split = np.array([-6.929687310962713])
    assert _relative_errors(plain, stable_sigmoid(plain))[0] == pytest.approx(2.89e-16, abs=0.01e-16)
    assert _relative_errors(split, _sign_split(split))[0] == pytest.approx(3.32e-16, abs=0.01e-16)


# The ends: -ln(2^1075) (below it sigma rounds to 0) and -ln(largest finite) (above it e^{-x} is finite).
@pytest.mark.parametrize("dtype,low,high", [(np.float64, -745.13, -709.79), (np.float32, -103.97, -88.73)])
def test_sigmoid_returns_zero_where_the_true_value_is_subnormal(dtype, low, high) -> None:
    """activations.md: in (-745.1, -709.8) (float64) and (-103.9, -88.7) (float32) the
    formula gives 0 although sigma(x) rounds to a non-zero subnormal."""
    tiny = np.finfo(dtype).smallest_normal
    x = np.linspace(low, high, 50).astype(dtype)
    exact = np.array([float(_sigmoid_exact(float(v))) for v in x]).astype(dtype)
    assert np.all(stable_sigmoid(x) == 0)
    assert np.all((exact > 0) & (exact < tiny))  # representable, subnormal
    assert float(_sigmoid_exact(-720.0)) == pytest.approx(2.03e-313, rel=1e-2)
    # Just outside the range: above it the formula is non-zero, below it 0 is right.
    above = np.array([high + 0.2], dtype=dtype)
    below = np.array([low - 0.02], dtype=dtype)
    assert stable_sigmoid(above)[0] > 0
    assert np.asarray(float(_sigmoid_exact(float(below[0])))).astype(dtype) == 0


# ---------------------------------------------------------------------------------------
# batchnorm.md, "Two checks on the result" and notebook 4's N = 2 remark
# ---------------------------------------------------------------------------------------


def _bn_train_grad(x: np.ndarray, dy: np.ndarray, gamma: float, eps: float = 1e-5):
    xt = mb.Tensor(x, requires_grad=True)
    y = F.batch_norm(xt, np.zeros(1), np.ones(1), mb.Tensor(np.array([gamma])),
                     mb.Tensor(np.array([0.0])), training=True, eps=eps)
    y.backward(dy)
    v = x.var()
    lam = 1 / np.sqrt(v + eps)
    x_hat = (x - x.mean()) * lam
    return xt.grad, x_hat, v, lam


@pytest.mark.parametrize("std", [1.0, 0.01])
def test_batchnorm_gradient_sums(std: float) -> None:
    """batchnorm.md: sum_j xbar_j = 0, and sum_j xbar_j xhat_j = gamma lambda gammabar eps / (v + eps)."""
    rng = np.random.default_rng(2)
    m, gamma, eps = 64, 1.3, 1e-5
    x = rng.standard_normal((m, 1)) * std + 0.5
    dy = rng.standard_normal((m, 1))
    grad, x_hat, v, lam = _bn_train_grad(x, dy, gamma, eps)
    gamma_bar = float(np.sum(dy * x_hat))
    assert abs(grad.sum()) <= 1e-10 * np.abs(grad).sum()
    along_x_hat = float(np.sum(grad * x_hat))
    assert along_x_hat == pytest.approx(gamma * lam * gamma_bar * eps / (v + eps), rel=1e-6)
    # Compared with the variance path removed (the same sum would be gamma lambda gammabar),
    # what survives is the fraction eps / (v + eps): negligible only when v >> eps.
    fraction = along_x_hat / (gamma * lam * gamma_bar)
    if std == 1.0:
        assert fraction < 2e-5
    else:
        assert 0.05 < fraction < 0.15  # v = 1e-4, eps = 1e-5: about 9% survives


def test_batch_of_two_normalises_to_plus_minus_sqrt_v_over_v_plus_eps() -> None:
    """batchnorm.md / notebook 4: with m = 2 the normalised values are +-sqrt(v/(v+eps)), not +-1."""
    x = np.array([[0.3], [0.32]])  # v = 1e-4, comparable with eps
    y = F.batch_norm(mb.Tensor(x), np.zeros(1), np.ones(1), training=True).data
    v = x.var()
    assert np.allclose(np.abs(y), np.sqrt(v / (v + 1e-5)), rtol=1e-12)
    assert abs(y[0, 0]) < 0.96  # visibly not 1


# ---------------------------------------------------------------------------------------
# linear.md, the shape check
# ---------------------------------------------------------------------------------------


def test_shapes_decide_the_matmul_gradient_only_when_sizes_differ() -> None:
    """linear.md: for distinct sizes only Ybar B^T has A's shape; for square ones, wrong products do too."""
    rng = np.random.default_rng(3)
    rows, inner, cols = 2, 3, 4  # n_1, n_2, n_3 of the page
    A, B, Y_bar = rng.standard_normal((rows, inner)), rng.standard_normal((inner, cols)), rng.standard_normal((rows, cols))
    operands = {"Y": Y_bar, "YT": Y_bar.T, "B": B, "BT": B.T}
    shaped = [(a, b) for a, b in itertools.product(operands, repeat=2)
              if {a[0], b[0]} == {"Y", "B"} and operands[a].shape[1] == operands[b].shape[0]
              and (operands[a] @ operands[b]).shape == A.shape]
    assert shaped == [("Y", "BT")]

    n = 3
    A, B, Y_bar = (rng.standard_normal((n, n)) for _ in range(3))
    a = mb.Tensor(A, requires_grad=True)
    (a @ mb.Tensor(B)).backward(Y_bar)
    assert np.allclose(a.grad, Y_bar @ B.T)
    for wrong in (B.T @ Y_bar, Y_bar @ B, B @ Y_bar):
        assert wrong.shape == A.shape and not np.allclose(wrong, a.grad)


# ---------------------------------------------------------------------------------------
# elementwise.md, "Power with a constant exponent"
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_and_float_exponents_give_the_same_values(dtype) -> None:
    """elementwise.md: NumPy already gives (-2.0) ** 2.0 == 4; only non-integer exponents give nan."""
    assert (-2.0) ** 2.0 == 4.0 and np.power(np.float64(-2.0), 3.0) == -8.0
    x = (np.random.default_rng(4).standard_normal(1000) * 5).astype(dtype)
    for e in (-3, -1, 2, 3, 5):
        assert np.array_equal(x**e, x ** float(e))
        t = mb.Tensor(x, requires_grad=True)
        (t ** float(e)).backward(np.ones_like(x))
        assert np.array_equal(t.grad, (e * x ** (e - 1)).astype(dtype))
    with np.errstate(invalid="ignore"):
        assert np.isnan(np.float64(-2.0) ** 0.5)


# ---------------------------------------------------------------------------------------
# derivations/bam.md, "Where the input's gradient comes from"
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("combine", ["sum", "product"])
def test_bam_scales_every_feature_by_a_factor_between_1_and_2(combine: str) -> None:
    """bam.md: y = F (1 + M) with 1 < 1 + M < 2, so |y| >= |F| with F's sign; y >= F fails for F < 0."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4, 5))
    mc, ms = rng.standard_normal((2, 3, 1, 1)), rng.standard_normal((2, 1, 4, 5))
    xt = mb.Tensor(x, requires_grad=True)
    y = F.bam_combine(xt, mb.Tensor(mc), mb.Tensor(ms), combine)
    factor = y.data / x
    assert np.all((factor > 1) & (factor < 2))
    assert np.all(np.abs(y.data) >= np.abs(x)) and np.all(np.sign(y.data) == np.sign(x))
    assert np.any(y.data < x)  # every negative feature moves further below zero
    # The direct path of the input gradient, ybar (1 + M): larger in magnitude, same sign.
    dy = rng.standard_normal(x.shape)
    direct = dy * factor
    assert np.all(np.abs(direct) >= np.abs(dy)) and np.any(direct < dy)


# ---------------------------------------------------------------------------------------
# derivations/cbam.md, "Log-sum-exp pooling" and "Ties"
# ---------------------------------------------------------------------------------------


def test_log_sum_exp_can_equal_the_maximum() -> None:
    """cbam.md: max <= lse, not <: equal on a 1x1 plane, and in floating point whenever
    the other terms fall below the maximum's rounding (lse([2, -50]) == 2 exactly)."""
    one_pixel = mb.Tensor(np.array([[[[1.5]]]]))
    assert F.global_lse_pool2d(one_pixel).data.item() == 1.5
    plane = mb.Tensor(np.array([[[[2.0, -50.0]]]]))
    assert F.global_lse_pool2d(plane).data.item() == 2.0
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 4, 5))
    y = F.global_lse_pool2d(mb.Tensor(x)).data.reshape(2, 3)
    top = x.max(axis=(2, 3))
    assert np.all(top <= y) and np.all(y <= top + np.log(20))


@pytest.mark.parametrize("ties", [2, 3, 4])
def test_central_difference_gives_half_to_every_tied_maximum(ties: int) -> None:
    """cbam.md: at a tie, the central difference gives ybar / 2 to each tied element,
    whatever the number of ties: the even split only for a two-way tie."""
    x = np.zeros((1, 1, 1, 6))
    x[..., :ties] = 1.0
    x[..., ties:] = -1.0
    delta = 1e-6

    def loss(values: np.ndarray) -> float:
        return F.global_max_pool2d(mb.Tensor(values)).data.sum()

    differences = []
    for i in range(ties):
        step = np.zeros_like(x)
        step[..., i] = delta
        differences.append((loss(x + step) - loss(x - step)) / (2 * delta))
    assert np.allclose(differences, 0.5, atol=1e-9)
    assert (sum(differences) == pytest.approx(1.0)) == (ties == 2)


# ---------------------------------------------------------------------------------------
# derivations/index.md and notebook 1: what limits a central difference
# ---------------------------------------------------------------------------------------


def test_round_off_not_truncation_dominates_at_the_usual_step() -> None:
    """index.md: the truncation error is of order Delta^2, but at Delta = 1e-6 in float64
    the round-off of the two evaluations, of order u |L| / Delta, is the larger one."""
    x, delta = 0.7, 1e-6
    exact = np.cos(x)
    error = abs((np.sin(x + delta) - np.sin(x - delta)) / (2 * delta) - exact)
    truncation = delta**2 / 6 * abs(np.cos(x))   # the Taylor term of the central difference
    round_off = 2.0**-53 * abs(np.sin(x)) / delta
    assert truncation < 1e-12 < round_off
    assert error > 10 * truncation       # what is left is round-off, not Delta^2
    assert error < 10 * round_off


# ---------------------------------------------------------------------------------------
# notebook 4, "Attention maps on real images": a batch of two through a batch norm
# ---------------------------------------------------------------------------------------


def test_batch_of_two_is_near_plus_minus_one_only_when_v_is_much_larger_than_eps() -> None:
    """notebook 4: with m = 2 the normalised values are +-sqrt(v/(v+eps)): close to 1 for
    v >> eps, far from it for v of the order of eps (not "close to -1 and +1 whatever")."""
    for spread, near_one in ((1.0, True), (3e-3, False)):
        x = np.array([[0.0], [spread]])
        y = F.batch_norm(mb.Tensor(x), np.zeros(1), np.ones(1), training=True).data
        assert (abs(abs(y[0, 0]) - 1) < 1e-4) == near_one
